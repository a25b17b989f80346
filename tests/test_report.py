"""report.py's command line: what it is given is checked before the page is written, each fault one
line (the page itself is test_speedrun's)."""

import pytest

from launch import run_in_process

LONG = "x" * 300  # past the 255 bytes a file name may have


@pytest.mark.parametrize("args, message", [
    (["--out="], "--out is empty: give a file path"),
    (["--out={tmp}"], "--out={tmp} is a folder: give a file path, e.g. --out={tmp}/report.md"),
    (["--out={tmp}/" + LONG], "cannot write '{tmp}/" + LONG[:20]),
    (["--out={tmp}/r.md", "--evals", "{tmp}/notes.txt"],
     "'{tmp}/notes.txt' is not a file eval.py --json wrote: give those files to --evals"),
    (["--out={tmp}/r.md", "--runs", "{tmp}/none"],
     "{tmp}/none/report.md not found: run the stage that writes it first"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("not JSON\n")
    r = run_in_process("report.py", *(a.format(tmp=tmp_path) for a in args))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert message.format(tmp=tmp_path) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no page, no .tmp
