"""
Tests of configurator.configure: config files and --key=value overrides, the refusal of unknown
keys and wrong types with one-line messages, and the real config/option_*.py files resolving to
the three architectures with their exact parameter counts.
"""

import sys
from dataclasses import fields
from pathlib import Path

import pytest

from configurator import configure
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent  # the repository
EXPECTED = {  # option: (n_layer, n_head, n_embd, mlp, norm, pos_emb, parameters)
    "a": (16, 5, 320, "swiglu", "rmsnorm", "rope", 35_763_840),
    "b": (24, 8, 256, "swiglu", "rmsnorm", "rope", 31_740_416),
    "c": (8, 6, 384, "gelu", "layernorm", "learned", 33_860_736),
}


def script_globals() -> dict:
    """What a script's globals() holds when it calls configure: settings plus
    modules and dunders."""
    return {
        "__name__": "__main__", "sys": sys, "Path": Path, "_private": 1,
        "n_layer": 12, "learning_rate": 6e-4, "compile": True, "out_dir": "out",
        "seed_text": "hello", "init_from": None,
        "EOT_TOKEN": 50256, "PAGE": "<html>",  # constants, not settings
    }


def write(tmp_path: Path, text: str, name: str = "cfg.py") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refused(ns: dict, argv: list[str], **kwargs) -> str:
    """The message of the SystemExit configure raises; checks it is the project's one-line error."""
    with pytest.raises(SystemExit) as info:
        configure(ns, argv, verbose=False, **kwargs)
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


# ---------------------------------------------------------------- values

def test_config_file_sets_values(tmp_path, capsys):
    ns = script_globals()
    path = write(tmp_path, "import math\nn_layer = 4\nlearning_rate = 3e-4\n_helper = 5\n"
                           "def f():\n    return 1\nout_dir = 'out-' + str(math.floor(2.5))\n")
    config = configure(ns, [path])
    assert config == {"n_layer": 4, "learning_rate": 3e-4, "compile": True, "out_dir": "out-2",
                      "seed_text": "hello", "init_from": None}
    assert ns["n_layer"] == 4 and ns["out_dir"] == "out-2"  # written back into the script's globals
    assert ns["sys"] is sys and ns["_private"] == 1  # non-settings untouched
    assert f"read config file {path}" in capsys.readouterr().out


def test_overrides_win_and_later_arguments_win(tmp_path):
    path = write(tmp_path, "n_layer = 4\nout_dir = 'from-file'\n")
    config = configure(script_globals(), [path, "--n_layer=8"], verbose=False)
    assert config["n_layer"] == 8 and config["out_dir"] == "from-file"
    config = configure(script_globals(), ["--n_layer=8", path], verbose=False)
    assert config["n_layer"] == 4  # the file came later
    config = configure(script_globals(), ["--n_layer=8", "--n_layer=9", "--compile=False"],
                       verbose=False)
    assert config["n_layer"] == 9 and config["compile"] is False


def test_int_may_set_float(tmp_path):
    config = configure(script_globals(), ["--learning_rate=1"], verbose=False)
    assert config["learning_rate"] == 1.0 and type(config["learning_rate"]) is float
    config = configure(script_globals(), [write(tmp_path, "learning_rate = 2\n")], verbose=False)
    assert config["learning_rate"] == 2.0 and type(config["learning_rate"]) is float
    assert (configure(script_globals(), ["--learning_rate=6e-4"], verbose=False)["learning_rate"]
            == 6e-4)


@pytest.mark.parametrize("typed,expected", [
    ("123", "123"), ("1e3", "1e3"), ("out-a", "out-a"), ("float16", "float16"), ("None", "None"),
    ("True", "True"), ("'quoted'", "quoted"), ("a=b", "a=b"), ("", ""),
])
def test_string_setting_keeps_what_was_typed(typed, expected):
    config = configure(script_globals(), [f"--seed_text={typed}"], verbose=False)
    assert config["seed_text"] == expected


def test_none_default_takes_any_value():
    assert configure(script_globals(), ["--init_from=5"], verbose=False)["init_from"] == 5
    assert (configure(script_globals(), ["--init_from=resume"], verbose=False)["init_from"]
            == "resume")


# ---------------------------------------------------------------- refusals

def test_unknown_key_on_command_line():
    message = refused(script_globals(), ["--n_layers=4"])
    assert "n_layers" in message and "did you mean 'n_layer'" in message
    message = refused(script_globals(), ["--zzzzzz=1"])  # nothing close: list what there is
    assert "known keys" in message and "learning_rate" in message


def test_constants_are_not_settings():
    config = configure(script_globals(), [], verbose=False)
    assert "EOT_TOKEN" not in config and "PAGE" not in config and "_private" not in config
    message = refused(script_globals(), ["--EOT_TOKEN=3"])
    assert "unknown config key 'EOT_TOKEN'" in message and "PAGE" not in message


def test_unknown_key_in_config_file(tmp_path):
    path = write(tmp_path, "n_layer = 4\nlearning_rat = 1e-3\n")
    message = refused(script_globals(), [path])
    assert ("learning_rat" in message and path in message
            and "did you mean 'learning_rate'" in message)


def test_unknown_file_keys_skipped_when_not_strict(tmp_path):
    path = write(tmp_path, "n_layer = 4\nbatch_tokens = 1024\n")
    config = configure(script_globals(), [path], verbose=False, strict_files=False)
    assert config["n_layer"] == 4 and "batch_tokens" not in config
    # CLI stays strict
    assert "did you mean" in refused(script_globals(), ["--n_layers=4"], strict_files=False)


@pytest.mark.parametrize("arg,expected_type", [
    ("--n_layer=abc", "int"), ("--n_layer=1.5", "int"), ("--n_layer=True", "int"),
    ("--compile=1", "bool"), ("--compile=true", "bool"), ("--compile=0", "bool"),
    ("--learning_rate=abc", "float"), ("--learning_rate=True", "float"),
])
def test_wrong_type_on_command_line(arg, expected_type):
    message = refused(script_globals(), [arg])
    key = arg[2:].split("=")[0]
    assert f"'{key}'" in message and f"expects {expected_type}" in message


@pytest.mark.parametrize("line,expected_type", [
    ("n_layer = '12'", "int"), ("n_layer = 2.5", "int"), ("compile = 1", "bool"),
    ("out_dir = 5", "str"),
])
def test_wrong_type_in_config_file(tmp_path, line, expected_type):
    message = refused(script_globals(), [write(tmp_path, line + "\n")])
    assert f"expects {expected_type}" in message


@pytest.mark.parametrize("text", ['learning_rate = float("nan")\n',
                                  'learning_rate = float("inf")\n',
                                  'learning_rate = -float("inf")\n', 'learning_rate = 1e999\n'])
def test_nan_or_inf_float_in_config_file(tmp_path, text):
    """NaN slips through a script's range checks (nan <= 0 is False) into one that blames another
    setting (train.py's min_lr check did): the setting itself is refused."""
    message = refused(script_globals(), [write(tmp_path, text)])
    assert "'learning_rate'" in message and "finite" in message


@pytest.mark.parametrize("arg", ["--learning_rate=1e999", "--learning_rate=-1e999"])
def test_inf_float_on_command_line(arg):
    message = refused(script_globals(), [arg])  # literal_eval("1e999") is inf
    assert "'learning_rate'" in message and "finite" in message


def test_config_file_with_a_nul_byte(tmp_path):
    """compile() refuses a NUL byte with a SyntaxError that has no line ('line None'): name the
    file, the line and what is wrong."""
    path = tmp_path / "cfg.py"
    path.write_bytes(b"n_layer = 3\nlearning_rate = 1e-3\x00\n")
    message = refused(script_globals(), [str(path)])
    assert (str(path) in message and "NUL byte" in message and "line 2" in message
            and "None" not in message)


def test_missing_config_file():
    message = refused(script_globals(), ["config/no_such_option.py"])
    assert "config/no_such_option.py" in message and "not found" in message


def test_override_without_value():
    message = refused(script_globals(), ["--out_dir"])  # not a boolean, and no value follows
    assert "--out_dir=VALUE" in message


def test_shorthands():
    ns = script_globals()
    config = configure(ns, ["--out_dir", "out-x", "--compile", "--config",
                            str(ROOT / "config" / "smoke.py")], verbose=False, strict_files=False)
    assert config["out_dir"] == "out-smoke"  # the config file came later and wins
    assert config["compile"] is False  # smoke.py sets compile = False after the bare --compile
    config = configure(script_globals(), ["--compile=False", "--compile", "--n_layer", "3"],
                       verbose=False)
    assert config["compile"] is True and config["n_layer"] == 3


def test_bare_flag_before_a_config_file(tmp_path):
    """A config file after a bare --flag is read as a file, not taken as the flag's value
    (bench.py's `--compare config/option_a.py`): the flag gets its bare meaning, or is asked for a
    value."""
    path = write(tmp_path, "n_layer = 4\n")
    config = configure(script_globals(), ["--out_dir", path], verbose=False,
                       bare={"out_dir": "out-bare"})
    assert config["out_dir"] == "out-bare" and config["n_layer"] == 4
    assert "--out_dir=VALUE" in refused(script_globals(), ["--out_dir", path])


@pytest.mark.parametrize("text,line,kind", [
    ("n_layer = 3\nlearning_rate = foo\n", 2, "NameError"),
    ("n_layer = (3\n", 1, "SyntaxError"),
])
def test_broken_config_file_names_file_and_line(tmp_path, text, line, kind):
    path = write(tmp_path, text)
    message = refused(script_globals(), [path])
    assert path in message and f"line {line}" in message and kind in message


# ---------------------------------------------------------------- the real config files

MODEL_FIELDS = [f for f in fields(GPTConfig) if f.init]


@pytest.mark.parametrize("option", sorted(EXPECTED))
def test_option_config_builds_the_exact_model(option, monkeypatch):
    """config/option_X.py (B and C exec option_A and change the shape) resolves to the right
    architecture and training settings, and builds a GPT of the exact parameter count."""
    monkeypatch.chdir(ROOT)  # given as a user types it, relative to the repository root
    ns = {f.name: f.default for f in MODEL_FIELDS}  # what bench.py / eval.py declare
    ns.update(out_dir="out", learning_rate=6e-4, time_budget_hours=0.0)
    config = configure(ns, [f"config/option_{option}.py"], verbose=False, strict_files=False)
    n_layer, n_head, n_embd, mlp, norm, pos_emb, n_params = EXPECTED[option]
    assert (config["n_layer"], config["n_head"], config["n_embd"]) == (n_layer, n_head, n_embd)
    assert (config["mlp"], config["norm"], config["pos_emb"]) == (mlp, norm, pos_emb)
    assert (config["block_size"] == 1024 and config["vocab_size"] == 50257
            and config["bias"] is False)
    assert config["out_dir"] == f"out-option-{option}"
    # A's recipe, inherited
    assert config["learning_rate"] == 1e-3 and config["time_budget_hours"] == 23.0
    model = GPT(GPTConfig(**{f.name: config[f.name] for f in MODEL_FIELDS}))
    assert model.num_params() == n_params


def test_help_lists_the_settings_with_their_comments(tmp_path, capsys):
    script = tmp_path / "script.py"
    script.write_text('"""Does a thing."""\nn_layer = 12  # depth\n              # of the stack\n'
                      '# not help\nlearning_rate = 6e-4\n'
                      'if True:\n    # not help either\n    pass\n'
                      'config = configure(globals(), [])\ndevice = pick(device)  # a reuse\n')
    ns = {"__doc__": "Does a thing.", "__file__": str(script), "n_layer": 12, "learning_rate": 6e-4,
          "device": "auto"}
    with pytest.raises(SystemExit) as info:
        configure(ns, ["--n_layer=3", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Does a thing.")
    assert ("  n_layer = 12  # depth\n                # of the stack\n  learning_rate = 6e-4\n"
            in out)
    # only an indented comment right under a setting continues it; only lines above configure()
    assert "not help" not in out and "reuse" not in out and "  device = 'auto'\n" in out
    assert ns["n_layer"] == 12  # --help changes nothing


def test_checkpoint_or_folder_given_as_a_config_file(tmp_path):
    """A checkpoint typed where a config goes (python sample.py out/ckpt.pt) is binary, not a
    traceback from the decoder: the message says how this script takes a checkpoint; a folder is a
    folder, not 'not found'."""
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"PK\x03\x04\x80\x02\xff\xfe binary")  # a torch.save zip starts like this
    ns = {**script_globals(), "ckpt": "", "out_dir": "out"}
    message = refused(ns, [str(ckpt)])
    assert ("not a config file" in message and f"--ckpt={ckpt}" in message
            and f"--out_dir={tmp_path}" in message)
    message = refused(ns, [str(tmp_path)])
    assert ("is a folder" in message and f"--out_dir={tmp_path}" in message
            and "not found" not in message)
    # a script without --ckpt does not offer it
    assert "--ckpt" not in refused(script_globals(), [str(ckpt)])


@pytest.mark.slow
def test_errors_are_printed_by_the_first_rank_of_a_node_only(monkeypatch):
    """Under torchrun every rank parses the same arguments and fails alike: local rank 0 says why,
    the others exit with status 1 and nothing to print, so the message is read once (common.die's
    rule)."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(SystemExit) as e:
        configure(script_globals(), ["--n_layr=3"], verbose=False)
    assert e.value.code == 1
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert "did you mean 'n_layer'" in refused(script_globals(), ["--n_layr=3"])


# ---------------------------------------------------------------- lists, and what a user may type

def test_list_setting_takes_the_values_that_follow(tmp_path):
    """A list setting (prepare.py's input, compare.py's runs) takes every value up to the next
    --key or config file, as a shell glob gives them; --key=A, a config file's list and --key=
    (none) too."""
    path = write(tmp_path, "n_layer = 4\n")
    ns = {**script_globals(), "input": []}
    config = configure(dict(ns), ["--input", "a.txt", "b c.jsonl", "--n_layer=3", "--input=d", "e",
                                  path], verbose=False)
    # later ones win; the file is a file
    assert config["input"] == ["d", "e"] and config["n_layer"] == 4
    assert configure(dict(ns), ["--input=a.txt"], verbose=False)["input"] == ["a.txt"]
    # a path, not a number
    assert configure(dict(ns), ["--input=123"], verbose=False)["input"] == ["123"]
    assert configure(dict(ns), ["--input="], verbose=False)["input"] == []
    listed = write(tmp_path, "input = ['x.txt', 'y.txt']\n", "list.py")
    assert configure(dict(ns), [listed], verbose=False)["input"] == ["x.txt", "y.txt"]
    assert "expects a list of strings" in refused(dict(ns),
                                                  [write(tmp_path, "input = 'x.txt'\n", "s.py")])
    assert "--input=VALUE" in refused(dict(ns), ["--input"])


LONG = "Once upon a time, " * 500  # a prompt pasted where a number goes


@pytest.mark.parametrize("arg,words", [
    ("--n_layer=", ["'n_layer'", "expects int", "got str ''"]),
    ("--n_layer=twelve", ["'n_layer'", "expects int", "'twelve'"]),
    ("--n_layer=" + LONG, ["'n_layer'", "expects int", f"({len(repr(LONG))} characters)"]),
    # too deep for the parser: a string
    ("--n_layer=" + "[" * 100_000, ["'n_layer'", "expects int"]),
    ("--n_layer=3\n4", ["'n_layer'", "'3\\n4'"]),  # a newline stays on the one line
    ("--learning_rate=\u00e9\"'", ["'learning_rate'", "expects float"]),  # unicode and quotes
    ("--learning_rate=1e999", ["'learning_rate'", "finite"]),
    ("--compile=yes", ["'compile'", "expects bool"]),
    ("--n_lay\ner=3", ["unknown config key 'n_lay\\ner'"]),
    ("--" + LONG + "=1", ["unknown config key", "characters)"]),
    ("-n", ["'-n' is not a setting", "--key=value"]),
])
def test_what_a_user_may_type_is_one_line_naming_the_setting(arg, words):
    message = refused(script_globals(), [arg])
    assert len(message) < 400 and all(w in message for w in words), message


def test_odd_characters_and_long_values_are_kept_as_typed():
    """A string setting takes what was typed, whatever the characters; nothing is cut."""
    for value in (LONG, "caf\u00e9 \u2603 \U0001f600", "a 'quoted' \"word\"", "two\nlines", ""):
        assert (configure(script_globals(), [f"--seed_text={value}"], verbose=False)["seed_text"]
                == value)


def test_die_needs_no_torch():
    """configurator.py (and die) import nothing outside the standard library: prepare.py runs
    without torch."""
    import subprocess
    code = (f"import sys; sys.modules['torch'] = None; sys.path.insert(0, {str(ROOT)!r}); "
            "import configurator, prepare; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "ok", r.stderr


# ---------------------------------------------------------------- every script, as a user types it

SCRIPTS = {  # script: an int setting it takes (None: it has none)
    "prepare.py": "num_proc", "prepare_chat.py": "block_size", "compare.py": None,
    "studies/study_curve.py": None, "train.py": "n_layer", "sample.py": "num_samples",
    "chat.py": "max_new_tokens", "eval.py": "batch_size", "bench.py": "iters", "export_hf.py": None,
    "export_gguf.py": None, "report.py": None,
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_takes_the_same_command_line(script):
    """One command-line system: --help lists each script's settings with their comments, and an
    unknown key, a wrong type or a pasted paragraph is one line naming the setting."""
    from launch import run_in_process

    helped = run_in_process(script, "--help")
    out = helped.stdout
    assert helped.returncode == 0 and "settings (change with a config file or --key=value):" in out
    assert any(line.startswith("  ") and " = " in line and "#" in line for line in out.splitlines())
    cases = [("--no_such_setting=1", "unknown config key 'no_such_setting'")]
    if SCRIPTS[script]:
        key = SCRIPTS[script]
        cases += [(f"--{key}=", f"'{key}'"), (f"--{key}=three", f"'{key}'"),
                  (f"--{key}={LONG}", "characters)")]
    for arg, words in cases:
        r = run_in_process(script, arg)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1, (arg[:80], r.stderr[-500:])
        assert lines[0].startswith("error: ") and words in lines[0], lines[0]
        assert len(lines[0]) < 400 or arg == cases[0][0]  # values cut short; keys may all be listed


def test_die_keeps_any_message_on_one_line():
    """A newline or tab in a path a script names (--out_dir=$'out\\nx') is written \\n, not a second
    line."""
    from configurator import die
    with pytest.raises(SystemExit) as info:
        die("no checkpoint at 'out\nx\t'")
    assert info.value.code == "error: no checkpoint at 'out\\nx\\t'"

