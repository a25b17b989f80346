"""
Output folders and files, for every script, torch-free (prepare.py and prepare_chat.py never import
torch): a folder or a --json path is checked before the work, not after it, and a JSON file is
written whole or not at all. Each refusal is one line naming the setting to change.
"""

import contextlib
import json
import os

from configurator import die, named


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


def check_json_path(path: str) -> None:
    """Refuse a --json path that cannot be written now, before the work, not after it."""
    if os.path.isdir(path):
        die(f"--json={path} is a folder: give a file path, "
            f"e.g. --json={os.path.join(path, 'results.json')}")
    folder = os.path.dirname(os.path.abspath(path))
    blocker = file_in_the_way(folder)
    if blocker:
        die(f"--json={path}: '{blocker}' is a file, not a folder: give a path in an existing "
            f"folder")
    if not os.path.isdir(folder):
        die(f"--json={path}: folder '{os.path.dirname(path)}' does not exist: create it, or give "
            f"a path in an existing folder")
    check_writable(folder, f"--json path (--json={path})")


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
