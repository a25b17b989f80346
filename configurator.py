"""
nanoGPT's configuration scheme, with its gaps closed. A script declares its settings as plain
globals, then calls

    config = configure(globals(), sys.argv[1:])

Each argument is either a config file (plain Python assignments, e.g. config/option_a.py, also
written --config PATH) or an override --key=value (also --key value; a bare --flag sets a boolean
setting to True); later ones win. A list setting (default []) takes every value that follows it,
up to the next --key or config file: --input a.txt b.txt, or --runs out-recipe/* from a shell glob.
An unknown key is refused with a did-you-mean suggestion, and a value of the wrong type with a
message that says the type expected (an int may set a float; a setting whose default is None takes
any value). The resolved settings are written back into the script's globals and returned as a
dict, ready for logging and for checkpoints. It imports nothing outside the standard library, so
the scripts that never import torch (prepare.py, prepare_chat.py) use it too.
"""

import contextlib
import difflib
import json
import math
import os
import re
import sys
import traceback
from ast import literal_eval
from typing import NoReturn

SETTING_TYPES = (int, float, bool, str, list, type(None))


def die(message: str) -> NoReturn:
    """Stop with a one-line error (no traceback): what is wrong and how to fix it.

    Under torchrun, until the ranks have a process group, every rank runs the same checks on the
    same settings and fails alike: only each node's first rank (LOCAL_RANK 0) prints the line, so
    it is read once, not once per GPU; the others exit with status 1 in silence. Here, not in
    common.py, so that the scripts that never import torch (prepare.py, prepare_chat.py) stop the
    same way."""
    torch = sys.modules.get("torch")  # a process group exists only where torch was imported
    dist = torch.distributed if torch is not None else None
    grouped = dist is not None and dist.is_available() and dist.is_initialized()
    if os.environ.get("LOCAL_RANK", "0") != "0" and not grouped:
        raise SystemExit(1)
    # one line whatever a path or value in it holds: a newline pasted into --out_dir reads as \n
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    raise SystemExit(f"error: {line}")


def shown(value, limit: int = 60) -> str:
    """A value as an error message quotes it: repr (a newline stays on the line), cut short, so a
    prompt pasted where a number goes does not fill the screen."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def named(path) -> str:
    """A path as a message names it, in quotes: as typed, unless it is long or holds a control
    character (a paragraph or a newline pasted where a path goes), then cut short as shown does."""
    path = str(path)
    return f"'{path}'" if path.isprintable() and len(path) <= 200 else shown(path, 200)


def settings_of(namespace: dict) -> dict:
    """The settings a script declares: its public lowercase globals of plain types. UPPER_CASE names
    are constants (EOT_TOKEN, a page template), never settings."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and not k.isupper() and isinstance(v, SETTING_TYPES)}


def print_help(namespace: dict, config: dict) -> None:
    """The script's docstring, then each setting as its source declares it: default and comment,
    with the indented comment lines that continue it (a comment too long for one line)."""
    doc = (namespace.get("__doc__") or "").strip()
    print(doc + "\n\nsettings (change with a config file or --key=value):")
    lines, key = {}, None
    if namespace.get("__file__"):
        with open(namespace["__file__"]) as f:
            for line in f:
                if re.match(r"(\w+ = )?configure\(", line):
                    break  # settings are declared above the call; what follows reuses their names
                if key and line[0].isspace() and line.lstrip().startswith("#"):
                    lines[key] += "\n  " + line.rstrip()
                    continue
                key = line.split("=", 1)[0].strip()
                if "=" in line and not line[0].isspace() and key in config and key not in lines:
                    lines[key] = line.rstrip()
                else:
                    key = None
    for key, value in config.items():
        print("  " + lines.get(key, f"{key} = {value!r}"))


def _unknown(key: str, known: dict, where: str) -> NoReturn:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(known))}"
    die(f"unknown config key {shown(key)} {where}{hint}")


def _check_type(key: str, value, default, where: str):
    if default is None:
        return value
    if isinstance(default, list):
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        die(f"config key '{key}' {where} expects a list of strings (like ['a.txt', 'b.txt']), got "
            f"{type(value).__name__} {shown(value)}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # NaN passes every range check a script makes (nan <= 0 is False), then fails a later
            # one that names another setting; no float setting here means anything at NaN or inf
            if not math.isfinite(value):
                die(f"config key '{key}' {where} must be a finite number (like {default!r}), "
                    f"got {value!r}")
            return float(value)  # an int may set a float
    elif isinstance(value, type(default)) and not isinstance(value, bool):
        return value
    die(f"config key '{key}' {where} expects {type(default).__name__} "
        f"(like {shown(default)}), got {type(value).__name__} {shown(value)}")


def expand_flags(argv: list[str], config: dict, bare: dict) -> list[str]:
    """The shorthands, rewritten into the two plain forms: --config PATH -> PATH; a bare --flag ->
    --flag=True for a boolean setting (or --flag=bare[flag]); --key value -> --key=value; a list
    setting's values, --key A B or --key=A B, -> --key=['A', 'B']."""
    out, args = [], list(argv)
    while args:
        arg = args.pop(0)
        key = arg[2:]
        if arg == "--config" and args:
            arg = args.pop(0)
        elif arg.startswith("--config="):
            arg = arg.removeprefix("--config=")
        elif arg.startswith("--") and isinstance(config.get(key.partition("=")[0]), list):
            key, eq, first = key.partition("=")
            values = [first] if eq and first else []
            while args and not args[0].startswith("--") and not args[0].endswith(".py"):
                values.append(args.pop(0))
            if eq or values:
                arg = f"--{key}={values!r}"
        elif arg.startswith("--") and "=" not in arg and key in config:
            if isinstance(config[key], bool):
                arg = f"--{key}=True"
            elif args and not args[0].startswith("--") and not args[0].endswith(".py"):
                arg = f"--{key}={args.pop(0)}"
            elif key in bare:
                arg = f"--{key}={bare[key]}"
        out.append(arg)
    return out


def read_config_file(path: str, config: dict) -> str:
    """The text of a config file; a folder, a missing file or one that is not UTF-8 text (a
    checkpoint typed where a config goes, say) is a one-line error saying what to give instead."""
    if os.path.isdir(path):  # an out_dir or a data folder, typed without its --key=
        keys = ("out_dir", "data_dir", "runs")
        instead = " or ".join(f"--{k}={path}" for k in keys if k in config)
        die(f"'{path}' is a folder, not a config file: give a path like config/option_a.py"
                         + (f", or write {instead}" if instead else ""))
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        die(f"config file '{path}' not found (give a path like config/option_a.py, "
                         f"or --key=value)")
    except UnicodeDecodeError:  # a checkpoint, most likely: say how this script takes one
        folder = os.path.dirname(path) or "."
        instead = " or ".join(f"--{k}={v}" for k, v in (("ckpt", path), ("out_dir", folder))
                              if k in config)
        die(f"'{path}' is not a config file (configs are Python text; this file is not UTF-8)"
                         + (f": for a checkpoint write {instead}" if instead else ""))
    except OSError as e:
        die(f"cannot read config file '{path}' ({e.strerror})")
    # UTF-8, yet not text: compile() refuses it with no line number (a SyntaxError at "line None")
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        die(f"config file '{path}' line {line} holds a NUL byte, so it is not a Python text file "
            f"(a binary file, or one saved as UTF-16?): save it as plain UTF-8 text, like "
            f"config/option_a.py")
    return text


def configure(namespace: dict, argv: list[str], verbose: bool = True, strict_files: bool = True,
              bare: dict | None = None) -> dict:
    """strict_files=False: keys a config file sets that this script does not declare are skipped
    (bench.py and eval.py read the training configs for the model settings alone).
    bare: what a bare --key means for settings that are not booleans, e.g.
    {"compare": "options"}."""
    config = settings_of(namespace)
    if "-h" in argv or "--help" in argv:
        print_help(namespace, config)
        raise SystemExit(0)
    for arg in expand_flags(argv, config, bare or {}):
        if arg.startswith("-") and not arg.startswith("--"):  # -n 3, or a word after a single dash
            die(f"{shown(arg)} is not a setting: write --key=value (--help lists the settings)")
        if not arg.startswith("--"):
            # a config file: run it in a namespace of its own and take what it assigns
            source = read_config_file(arg, config)
            file_vars: dict = {"__file__": os.path.abspath(arg)}  # lets a config include another
            try:
                exec(compile(source, arg, "exec"), file_vars)
            except Exception as e:  # a typo in a config file: say where, without a traceback
                line = (e.lineno if isinstance(e, SyntaxError)
                        else traceback.extract_tb(e.__traceback__)[-1].lineno)
                at = f" line {line}" if line else ""  # compile's own refusals may carry no line
                die(f"config file '{arg}'{at}: {type(e).__name__}: {e}")
            for key, value in file_vars.items():
                if key.startswith("_") or not isinstance(value, SETTING_TYPES):
                    continue  # imports, helpers
                if key not in config:
                    if not strict_files:
                        continue
                    _unknown(key, config, f"in {arg}")
                config[key] = _check_type(key, value, config[key], f"in {arg}")
            if verbose:
                print(f"read config file {arg}")
        else:
            key, eq, raw = arg[2:].partition("=")
            if key not in config:
                _unknown(key, config, "on the command line")
            if not eq:
                die(f"override {shown(arg)} needs a value: write --{key}=VALUE")
            try:
                value = literal_eval(raw)
            except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
                value = raw  # a bare string, e.g. --out_dir=out-a (or one nested too deep to parse)
            if isinstance(config[key], str) and not isinstance(value, str):
                # a string setting keeps what was typed, e.g. --dtype=float16 or --seed_text=123
                value = raw
            if isinstance(config[key], list) and not isinstance(value, list):
                value = [raw] if raw else []  # one value, e.g. --input=a.txt; --input= is none
            config[key] = _check_type(key, value, namespace.get(key), "on the command line")
    namespace.update(config)
    if verbose:
        print(summary(config))
    return config


def summary(config: dict) -> str:
    """The one line a script prints of its resolved settings."""
    return "config: " + ", ".join(f"{k}={v!r}" for k, v in config.items())


# ---------------------------------------------------------------- output paths
# Output folders and files, for every script: a folder or a --json path is checked before the work,
# not after it, and a JSON file is written whole or not at all. Each refusal is one line naming the
# setting to change.
def check_writable(folder: str, what: str) -> None:
    """Write and remove a file in folder now, so a place that cannot be written is refused before
    the work, not after it (a read-only or full disk, no permission). what names the setting to
    change."""
    try:
        # per process: ranks probe side by side
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        die(f"cannot write to {named(folder)} ({e.strerror}): choose another {what}")


def file_in_the_way(path: str) -> str | None:
    """The part of path that exists as a file, so no folder can be made there
    (--out_dir=notes.txt/run), or None."""
    path = os.path.abspath(path)
    while path != os.path.dirname(path):
        if os.path.lexists(path) and not os.path.isdir(path):
            return path
        path = os.path.dirname(path)
    return None


def make_folder(folder: str, what: str) -> None:
    """Create folder (and its parents) and check it can be written, now, before the work: a path
    below a file, a read-only disk or no permission is one line naming the setting to change
    (what), not a traceback."""
    blocker = file_in_the_way(folder)
    if blocker:
        die(f"cannot make the folder {named(folder)}: {named(blocker)} is a file, not a folder; "
            f"choose another {what}")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        die(f"cannot make the folder {named(folder)} ({e.strerror or e}): choose another {what}")
    check_writable(folder, what)


def check_json_path(path: str, key: str = "json", example: str = "results.json") -> None:
    """Refuse a file path (--json, or another key) that cannot be written now, before the work,
    not after it."""
    if not path:
        die(f"--{key} is empty: give a file path")
    if os.path.isdir(path):
        die(f"--{key}={path} is a folder: give a file path, "
            f"e.g. --{key}={os.path.join(path, example)}")
    folder = os.path.dirname(os.path.abspath(path))
    blocker = file_in_the_way(folder)
    if blocker:
        die(f"--{key}={path}: '{blocker}' is a file, not a folder: give a path in an existing "
            f"folder")
    if not os.path.isdir(folder):
        die(f"--{key}={path}: folder '{os.path.dirname(path)}' does not exist: create it, or give "
            f"a path in an existing folder")
    check_writable(folder, f"--{key} path (--{key}={path})")


def write_json(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"  # written whole, then renamed: never a half-written file
    try:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, path)
    except OSError as e:  # the folder was checked up front (check_json_path); the disk can fill
        with contextlib.suppress(OSError):
            os.remove(tmp)
        die(f"cannot write {path} ({e.strerror or e}): free space, or give --json another path")
