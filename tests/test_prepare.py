"""Tests for prepare.py. Expected outputs come from a naive reference inside each test:
tiktoken on each document, EOT after it, and the split rule written out by hand."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import prepare
import tokenizer
from launch import SHARED, file_size_limit, one_line_error, run_script

enc = tokenizer.gpt2()  # tiktoken's own "gpt2", token for token: test_tokenizer.py
EOT = 50256
OWT_SAMPLE = SHARED / "data" / "openwebtext_sample"
WEBTEXT = SHARED / "data" / "webtext_snippets" / "webtext.valid.jsonl"


def run(*args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs prepare.py the way a user does."""
    return run_script("prepare.py", *map(str, args), env={**os.environ, **(env or {})},
                      check=False, timeout=120)


def load(out: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    meta = json.loads((out / "meta.json").read_text())
    train = np.memmap(out / "train.bin", dtype=np.uint16, mode="r")
    val = np.memmap(out / "val.bin", dtype=np.uint16, mode="r")
    return np.asarray(train), np.asarray(val), meta


def check_counts(out: Path, train: np.ndarray, val: np.ndarray, meta: dict) -> None:
    for name, data in (("train", train), ("val", val)):
        assert meta[name]["tokens"] == len(data) > 0
        assert (out / f"{name}.bin").stat().st_size == 2 * len(data)
    assert (meta["tokenizer"], meta["vocab_size"], meta["eot_token"],
            meta["dtype"]) == ("gpt2", 50257, EOT, "uint16")


def tokens_of(docs: list[str]) -> list[int]:
    return [t for d in docs for t in enc.encode_ordinary(d) + [EOT]]


def webtext_rows(n: int, start: int = 0) -> list[str]:
    with open(WEBTEXT, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f][start:start + n]


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


def assert_one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


# -----------------------------------------------------------------------------
# round trips

def test_owt_sample_single_document_splits_tokens(tmp_path):
    # the sample is one .txt file, so one document: too few for a document split,
    # so the last 10% of the token stream is val (nanoGPT's shakespeare rule)
    out = tmp_path / "owt"
    r = run("--input", OWT_SAMPLE, f"--data_dir={out}")
    assert r.returncode == 0, r.stderr
    train, val, meta = load(out)
    check_counts(out, train, val, meta)
    text = (OWT_SAMPLE / "openwebtext_sample.txt").read_text(encoding="utf-8")
    expected = enc.encode_ordinary(text) + [EOT]
    assert len(expected) == 113_571  # 113,570 per the sample's README, plus EOT
    cut = int(len(expected) * 0.9)
    assert train.tolist() == expected[:cut] and val.tolist() == expected[cut:]
    assert enc.decode(train.tolist() + val.tolist()) == text + "<|endoftext|>"
    assert meta["split"]["method"] == "tokens"
    assert meta["train"]["documents"] == meta["val"]["documents"] == 1  # the document is cut in two
    assert meta["source"] == {"files": [str(OWT_SAMPLE / "openwebtext_sample.txt")], "documents": 1,
                              "tokens": len(expected)}
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "folder"])
def test_documents_round_trip(tmp_path, kind):
    rows = webtext_rows(450)
    src = tmp_path / "src"
    src.mkdir()
    if kind == "jsonl":
        write_jsonl(src / "a.jsonl", rows[:200])
        with open(src / "a.jsonl", "a") as f:
            f.write("\n")  # a blank line is not a document
        with open(src / "a.jsonl", "a") as f:
            f.write("".join(json.dumps({"text": d, "id": i}) + "\n"
                            for i, d in enumerate(rows[200:])))
        inputs, docs = [src / "a.jsonl"], rows
    elif kind == "parquet":
        # an empty or null text is skipped (it would be a lone EOT)
        pq.write_table(pa.table({"text": rows[:100] + ["", None] + rows[100:],
                                 "n": list(range(452))}), src / "b.parquet")
        inputs, docs = [src / "b.parquet"], rows
    else:
        # read in sorted path order, recursively; other suffixes ignored
        (src / "sub").mkdir()
        pq.write_table(pa.table({"text": rows[300:]}), src / "sub" / "b.parquet")
        write_jsonl(src / "a.jsonl", rows[:300])
        (src / "sub" / "c.txt").write_text("One whole file.\n\nIs one document.\n",
                                           encoding="utf-8")
        (src / "README.md").write_text("not data")
        inputs, docs = [src], rows + ["One whole file.\n\nIs one document.\n"]

    out = tmp_path / "out"
    r = run("--input", *inputs, f"--data_dir={out}")
    assert r.returncode == 0, r.stderr
    train, val, meta = load(out)
    check_counts(out, train, val, meta)
    # default --val_fraction 0.005: every 200th document is val
    val_idx = set(range(199, len(docs), 200))
    train_docs = [d for i, d in enumerate(docs) if i not in val_idx]
    val_docs = [d for i, d in enumerate(docs) if i in val_idx]
    assert train.tolist() == tokens_of(train_docs)
    assert val.tolist() == tokens_of(val_docs)
    assert enc.decode(val.tolist()).split("<|endoftext|>") == val_docs + [""]
    assert enc.decode(train.tolist()).split("<|endoftext|>") == train_docs + [""]
    assert meta["split"]["method"] == "documents"
    assert meta["train"]["documents"] == len(train_docs) == int((train == EOT).sum())
    assert meta["val"]["documents"] == len(val_docs) == 2


def test_num_docs_and_val_fraction(tmp_path):
    docs = webtext_rows(40)
    out = tmp_path / "out"
    r = run("--input", write_jsonl(tmp_path / "a.jsonl", docs), f"--data_dir={out}",
            "--num_docs", "30", "--val_fraction", "0.1")
    assert r.returncode == 0, r.stderr
    train, val, meta = load(out)
    assert val.tolist() == tokens_of([docs[9], docs[19], docs[29]])
    assert train.tolist() == tokens_of([d for i, d in enumerate(docs[:30]) if i % 10 != 9])
    assert (meta["train"]["documents"], meta["val"]["documents"]) == (27, 3)


@pytest.mark.parametrize("num_docs", [30, 120, 170, 260, 301])
def test_num_docs_across_parquet_row_groups(tmp_path, num_docs):
    """--num_docs cuts a .parquet file inside a row group, or stops in the .jsonl file after it;
    what lies beyond the limit is not read at all (here: a file that is not Parquet)."""
    rows = webtext_rows(300)
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"text": rows[:120]}), src / "a.parquet", row_group_size=50)
    pq.write_table(pa.table({"text": rows[120:240]}), src / "b.parquet", row_group_size=50)
    write_jsonl(src / "c.jsonl", rows[240:])
    (src / "d.parquet").write_bytes(b"not Parquet, and never opened")
    out = tmp_path / "out"
    args = ["--input", str(src), f"--data_dir={out}", "--num_proc=1", "--val_fraction", "0.1"]
    if num_docs == 301:  # past the .jsonl file: d.parquet is read, and refused
        assert "d.parquet" in one_line_error(prepare.main, args + ["--num_docs", str(num_docs)])
        return
    prepare.main(args + ["--num_docs", str(num_docs)])
    train, val, meta = load(out)
    docs = rows[:num_docs]
    assert val.tolist() == tokens_of(docs[9::10])
    assert train.tolist() == tokens_of([d for i, d in enumerate(docs) if i % 10 != 9])
    assert meta["source"]["documents"] == num_docs


@pytest.mark.parametrize("ndocs", [5, 10])  # 10 x 64 tokens: cut exactly on a document boundary
def test_few_documents_split_tokens(tmp_path, ndocs):
    docs = webtext_rows(ndocs)
    out = tmp_path / "out"
    assert run("--input", write_jsonl(tmp_path / "a.jsonl", docs),
               f"--data_dir={out}").returncode == 0
    train, val, meta = load(out)
    check_counts(out, train, val, meta)
    stream = tokens_of(docs)
    cut = int(len(stream) * 0.9)
    assert train.tolist() == stream[:cut] and val.tolist() == stream[cut:]
    ends = np.cumsum([len(enc.encode_ordinary(d)) + 1 for d in docs])
    starts = np.concatenate([[0], ends[:-1]])
    assert meta["train"]["documents"] == int((starts < cut).sum())
    assert meta["val"]["documents"] == int((ends > cut).sum())
    assert meta["train"]["documents"] + meta["val"]["documents"] == ndocs + (ndocs == 5)


def test_text_spelling_endoftext_is_ordinary_text(tmp_path):
    """A document that spells "<|endoftext|>" keeps it as ordinary text: token 50256 marks only the
    boundaries prepare.py puts after each document, so every EOT in the output is one document."""
    docs = ["Text before <|endoftext|> and after.", "A second document."]
    out = tmp_path / "out"
    prepare.main(["--input", str(write_jsonl(tmp_path / "a.jsonl", docs)), f"--data_dir={out}",
                  "--num_proc=1"])
    train, val, meta = load(out)
    stream = train.tolist() + val.tolist()
    assert stream == tokens_of(docs)
    assert stream.count(EOT) == len(docs)


def test_val_fraction_rule_is_exact(tmp_path):
    """The documented rule, floor((i+1)*f) > floor(i*f), in exact arithmetic: 0.3 of 10 documents is
    exactly 3 of them, 3, 6 and 9 (in binary floating point 10 * 0.3 is just under 3, which would
    drop document 9). 0.7 is 7 of them, spread evenly."""
    docs = webtext_rows(10)
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    for fraction, val_idx in (("0.3", [3, 6, 9]), ("0.7", [1, 2, 4, 5, 7, 8, 9])):
        out = tmp_path / fraction
        prepare.main(["--input", str(src), f"--data_dir={out}", "--num_proc=1",
                      f"--val_fraction={fraction}"])
        train, val, meta = load(out)
        assert val.tolist() == tokens_of([docs[i] for i in val_idx])
        assert train.tolist() == tokens_of([d for i, d in enumerate(docs) if i not in val_idx])
        assert meta["val"]["documents"] == len(val_idx)


def test_folder_is_read_in_sorted_path_order(tmp_path):
    """Files of a folder are documents in sorted path order, whatever order the file system lists
    them in (here: created in a shuffled order), so the same folder always gives the same files."""
    src = tmp_path / "src"
    (src / "m").mkdir(parents=True)
    names = [f"{i:02d}.txt" for i in range(8)] + [f"m/{i:02d}.txt" for i in range(4)]
    for name in np.random.default_rng(0).permutation(names):
        (src / name).write_text(f"Document {name}.", encoding="utf-8")
    out = tmp_path / "out"
    prepare.main(["--input", str(src), f"--data_dir={out}", "--num_proc=1"])
    train, val, _ = load(out)
    assert train.tolist() + val.tolist() == tokens_of([f"Document {name}."
                                                       for name in sorted(names)])


# -----------------------------------------------------------------------------
# errors: one line on stderr, and nothing left in --data_dir

def make_case(tmp_path: Path, case: str) -> tuple[list, list[str]]:
    if case == "missing":
        return [tmp_path / "nope.txt"], ["not found", "nope.txt"]
    if case == "empty_file":
        (tmp_path / "empty.txt").write_text("")
        return [tmp_path / "empty.txt"], ["no text"]
    if case == "empty_folder":
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "notes.md").write_text("hello")
        return [tmp_path / "d"], ["no .txt, .jsonl or .parquet files", "d"]
    if case == "no_text_field":
        (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"title": "no text here"}\n')
        return [tmp_path / "bad.jsonl"], ["bad.jsonl line 2", '"text"']
    if case == "bad_json":
        (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n\n{"text": oops}\n')
        return [tmp_path / "bad.jsonl"], ["bad.jsonl line 3", "JSON"]
    if case == "not_utf8":
        (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1"))
        return [tmp_path / "latin1.txt"], ["latin1.txt", "UTF-8"]
    if case == "not_utf8_jsonl":
        (tmp_path / "l.jsonl").write_bytes('{"text": "café"}\n'.encode("latin-1"))
        return [tmp_path / "l.jsonl"], ["l.jsonl", "UTF-8"]
    if case == "parquet_no_text":
        pq.write_table(pa.table({"body": ["x"]}), tmp_path / "t.parquet")
        return [tmp_path / "t.parquet"], ["t.parquet", '"text" column']
    if case == "parquet_not_parquet":
        (tmp_path / "junk.parquet").write_bytes(b"this is not a Parquet file\n" * 10)
        return [tmp_path / "junk.parquet"], ["cannot read the Parquet file", "junk.parquet",
                                             "ArrowInvalid"]
    if case == "parquet_truncated":
        # a download cut short: the footer, which holds the schema, is missing
        pq.write_table(pa.table({"text": webtext_rows(50)}), tmp_path / "whole.parquet")
        data = (tmp_path / "whole.parquet").read_bytes()
        (tmp_path / "cut.parquet").write_bytes(data[:len(data) // 2])
        return [tmp_path / "cut.parquet"], ["cannot read the Parquet file", "cut.parquet"]
    if case == "parquet_corrupt_page":
        # the footer is fine but a data page is garbage: pyarrow fails reading it, not opening it
        rng = np.random.default_rng(0)
        docs = [" ".join(f"w{i}" for i in rng.integers(0, 10**6, 200)) for _ in range(2000)]
        pq.write_table(pa.table({"text": docs}), tmp_path / "whole.parquet", row_group_size=500)
        data = bytearray((tmp_path / "whole.parquet").read_bytes())
        data[len(data) // 3:len(data) // 3 + 5000] = rng.integers(0, 256, 5000,
                                                                  dtype=np.uint8).tobytes()
        (tmp_path / "bad.parquet").write_bytes(bytes(data))
        return [tmp_path / "bad.parquet"], ["cannot read row group", "bad.parquet", "OSError"]
    if case == "wrong_suffix":
        (tmp_path / "a.csv").write_text("text\nhello\n")
        return [tmp_path / "a.csv"], ["a.csv", "unsupported"]
    raise ValueError(case)


@pytest.mark.parametrize("case", ["missing", "empty_file", "empty_folder", "no_text_field",
                                  "bad_json", "not_utf8", "not_utf8_jsonl", "parquet_no_text",
                                  "parquet_not_parquet", "parquet_truncated",
                                  "parquet_corrupt_page", "wrong_suffix"])
def test_input_errors(tmp_path, case):
    inputs, words = make_case(tmp_path, case)
    out = tmp_path / "out"
    r = run("--input", *inputs, f"--data_dir={out}", "--num_proc=1")
    assert_one_line_error(r, *words)
    assert not out.exists()  # no half-written file, not even an empty folder


@pytest.mark.parametrize("args,words", [
    (["--bogus"], ["unknown config key 'bogus'"]),
    (["--num_docs=x"], ["'num_docs'", "expects int", "'x'"]),
    (["--num_docs="], ["'num_docs'", "expects int", "''"]),  # an empty value
    (["--num_docs=-1"], ["--num_docs must be at least 1"]),
    (["--num_docs=3", "--fraction=0.1"], ["--fraction", "not allowed"]),
    (["--val_fraction=" + "a pasted paragraph " * 300], ["'val_fraction'",
                                                         "characters)"]),  # very long
    (["--seed=1\n2"], ["'seed'", "'1\\n2'"]),  # a newline, kept on the one line
    (["--num_proc=\u00e9\"'"], ["'num_proc'", "expects int"]),  # unicode and quotes
    (["--input"], ["--input=VALUE"]),  # a list setting with no value
    (["-n", "3"], ["'-n' is not a setting", "--key=value"]),
    (["--input", "a\nb.txt"], ["--input 'a\\nb.txt'", "control character"]),  # a pasted newline
    (["--input=a.txt", "--data_dir=out\tx"], ["--data_dir", "control character"]),
    (["--input=" + "a pasted paragraph " * 300], ["cannot read the input", "characters)"]),
    ([f"--input={OWT_SAMPLE}", "--data_dir=" + "a pasted paragraph " * 300],
     ["cannot make the folder", "characters)"]),
])
def test_argument_errors_are_one_line(args, words):
    r = run(*args)
    assert r.returncode == 1  # our one-line SystemExit, never a usage block or a traceback
    assert_one_line_error(r, *words)


@pytest.mark.parametrize("flag", ["--seed=1", "--revision=main", "--allow_partial"])
def test_hub_options_with_input_are_refused_not_ignored(tmp_path, flag):
    """--input takes its first --num_docs documents:
    a hub-only option beside it would be ignored."""
    a = write_jsonl(tmp_path / "a.jsonl", ["first"])
    assert_one_line_error(run("--input", a, f"--data_dir={tmp_path / 'out'}", flag),
                          "are for the hub", "would ignore")
    assert not (tmp_path / "out").exists()


def test_out_that_cannot_be_made_is_one_line(tmp_path):
    """--data_dir below a file, or where no folder can be made, is refused in one line (was a
    NotADirectoryError traceback), before a byte is tokenized."""
    a = write_jsonl(tmp_path / "a.jsonl", ["first"])
    (tmp_path / "notes.txt").write_text("x")
    assert_one_line_error(run("--input", a, f"--data_dir={tmp_path / 'notes.txt' / 'sub'}"),
                          f"'{tmp_path / 'notes.txt'}' is a file, not a folder", "--data_dir")
    assert (tmp_path / "notes.txt").read_text() == "x"  # the file in the way is left as it was
    assert_one_line_error(run("--input", a, "--data_dir=/proc/no_such_folder"), "cannot make",
                          "--data_dir")
    assert not os.path.exists("/proc/no_such_folder")


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    a = write_jsonl(tmp_path / "a.jsonl", ["first"])
    b = write_jsonl(tmp_path / "b.jsonl", ["second"])
    assert run("--input", a, f"--data_dir={out}").returncode == 0
    before = (out / "train.bin").read_bytes()
    assert_one_line_error(run("--input", b, f"--data_dir={out}"), str(out), "--overwrite")
    assert (out / "train.bin").read_bytes() == before
    r = run("--input", b, f"--data_dir={out}", "--overwrite")
    assert r.returncode == 0, r.stderr
    train, val, _ = load(out)
    assert train.tolist() + val.tolist() == tokens_of(["second"])


def test_failure_midway_leaves_no_bin(tmp_path):
    # a.jsonl is tokenized and partly written before b.txt turns out not to be UTF-8
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", webtext_rows(1000))
    (src / "b.txt").write_bytes(b"\xff\xfe\x00broken")
    out = tmp_path / "out"
    assert_one_line_error(run("--input", src, f"--data_dir={out}", "--num_proc=1"), "b.txt",
                          "UTF-8")
    assert not out.exists()


def test_interrupt_keeps_previous_data(tmp_path, monkeypatch):
    # an --overwrite run interrupted midway must leave the old, complete folder as it was
    docs = webtext_rows(2000)
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    out = tmp_path / "out"
    prepare.main(["--input", str(src), f"--data_dir={out}", "--num_proc=1", "--num_docs", "500"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    seen_tmp = []
    real_local_docs = prepare.local_docs

    def interrupted(files):
        for i, d in enumerate(real_local_docs(files)):
            if i == 1500:
                seen_tmp.append(sorted(p.name for p in out.iterdir()))
                raise KeyboardInterrupt
            yield d

    monkeypatch.setattr(prepare, "local_docs", interrupted)
    with pytest.raises(SystemExit) as e:
        prepare.main(["--input", str(src), f"--data_dir={out}", "--num_proc=1", "--overwrite"])
    assert str(e.value.code).startswith("error: interrupted")
    assert "train.bin.tmp" in seen_tmp[0]  # it was interrupted midway through writing
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_crash_between_renames_leaves_no_meta(tmp_path, monkeypatch):
    # meta.json marks a complete folder: an --overwrite run that dies while renaming
    # its files must not leave the old meta.json vouching for a mix of old and new
    out = tmp_path / "out"
    prepare.main(["--input", str(write_jsonl(tmp_path / "a.jsonl", ["old"])), f"--data_dir={out}"])
    real_replace = os.replace

    def crash_on_val(src, dst):
        if Path(dst).name == "val.bin":
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(prepare.os, "replace", crash_on_val)
    new = write_jsonl(tmp_path / "b.jsonl", ["new"])
    message = one_line_error(prepare.main, ["--input", str(new), f"--data_dir={out}",
                                            "--overwrite"])
    assert "(disk gone)" in message and "holds no new data" in message
    assert not (out / "meta.json").exists() and not list(out.glob("*.tmp"))


def test_a_full_disk_midway_is_one_line_and_keeps_the_previous_data(tmp_path):
    """The disk fills (here a file-size limit: writes fail with EFBIG as they would with ENOSPC)
    while train.bin is written: one line (it was an OSError traceback), no .tmp left, the old
    complete folder as it was, and a new folder that never got its data is not left behind
    either."""
    small, large = (write_jsonl(tmp_path / "a.jsonl", ["old"]),
                    write_jsonl(tmp_path / "b.jsonl", webtext_rows(400)))
    out = tmp_path / "out"
    prepare.main(["--input", str(small), f"--data_dir={out}", "--num_proc=1"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with file_size_limit(32 * 1024):
        message = one_line_error(prepare.main, ["--input", str(large), f"--data_dir={out}",
                                                "--num_proc=1",
                                                "--overwrite"])
        assert "(File too large)" in message and "free space or give another --data_dir" in message
        one_line_error(prepare.main, ["--input", str(large), f"--data_dir={tmp_path / 'new'}",
                                      "--num_proc=1"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "new").exists()


def test_val_fraction_must_leave_train_data(tmp_path):
    """--val_fraction 1 would put every document in val and leave train.bin empty:
    refused, like 0."""
    src = write_jsonl(tmp_path / "a.jsonl", webtext_rows(3))
    for fraction in ("1", "0", "1.5"):
        message = one_line_error(prepare.main, ["--input", str(src),
                                                f"--data_dir={tmp_path / 'out'}", "--num_proc=1",
                                                f"--val_fraction={fraction}"])
        assert message.startswith("error: --val_fraction")
    assert not (tmp_path / "out").exists()


def test_partial_output_needs_overwrite(tmp_path):
    """Any one of train.bin, val.bin, meta.json in --data_dir (e.g. left by a crash between
    renames) is data that only --overwrite may replace."""
    src = write_jsonl(tmp_path / "a.jsonl", ["new"])
    for name in ("train.bin", "val.bin", "meta.json"):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        (out / name).write_bytes(b"keep me")
        message = one_line_error(prepare.main, ["--input", str(src), f"--data_dir={out}",
                                                "--num_proc=1"])
        assert "--overwrite" in message
        assert (sorted(p.name for p in out.iterdir()) == [name]
                and (out / name).read_bytes() == b"keep me")


def test_failure_keeps_an_existing_empty_out_folder(tmp_path):
    """A failed run removes only a folder it created itself: an empty --data_dir the user made
    stays."""
    out = tmp_path / "mine"
    out.mkdir()
    (tmp_path / "empty.txt").write_text("")
    assert_one_line_error(run("--input", tmp_path / "empty.txt", f"--data_dir={out}",
                              "--num_proc=1"), "no text")
    assert out.is_dir() and not list(out.iterdir())


# -----------------------------------------------------------------------------
# what cannot be reached from here: the hub and the tokenizer download

def test_tokenizer_damaged(tmp_path, monkeypatch):
    """The tokenizer ships in tokenizer/: a damaged copy is refused in one line
    before anything is written."""
    import tokenizer

    bad = tmp_path / "vocab.bpe"
    bad.write_bytes(Path(tokenizer.FILES["vocab.bpe"][0]).read_bytes().replace(b"h e", b"e h", 1))
    monkeypatch.setitem(tokenizer.FILES, "vocab.bpe", (str(bad), tokenizer.FILES["vocab.bpe"][1]))
    monkeypatch.setattr(tokenizer, "gpt2", tokenizer.gpt2.__wrapped__)  # not the cached Encoding
    src = write_jsonl(tmp_path / "a.jsonl", ["hello"])
    msg = one_line_error(prepare.main, ["--input", str(src), f"--data_dir={tmp_path / 'out'}"])
    assert ("GPT-2's tokenizer files" in msg and "damaged" in msg
            and "git checkout -- tokenizer/" in msg)
    assert not (tmp_path / "out").exists()


# -----------------------------------------------------------------------------
# the hub, through a stand-in: a local folder per revision, laid out as the hub lays out
# OpenWebText's files. Only prepare.hub_snapshot (the hub's API: commit and file list) is replaced;
# the choice of revision, the footers' counts, the refusals, the workers' reads and meta.json run as
# they do on the hub.

HUB_DOCS = 600  # the stand-in's "whole OpenWebText"


def write_parquet(path: Path, docs: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": docs}), path, row_group_size=50)  # 50-document row groups


def make_hub(root: Path, main: str, convert: str, pr18: bool = False) -> list[str]:
    """main: "script" (today's main: a loading script and tar archives) or "parquet" (main once the
    script is replaced: datasets' convert_to_parquet layout). convert: "full" or "partial" (the
    dataset viewer's conversion, cut at 5 GB, here at 250 documents). pr18: whether refs/pr/18
    exists, with the whole corpus in push_to_hub's layout. Returns the whole corpus's documents."""
    docs = webtext_rows(HUB_DOCS)
    if pr18:
        for k in range(2):
            write_parquet(root / "refs" / "pr" / "18" / "data" / f"train-{k:05d}-of-00002.parquet",
                          docs[300 * k:300 * (k + 1)])
    if main == "script":
        (root / "main" / "subsets").mkdir(parents=True)
        (root / "main" / "openwebtext.py").write_text("import datasets\n")
        (root / "main" / "subsets" / "urlsf_subset00.tar").write_bytes(b"tar")
    else:
        for k in range(3):
            write_parquet(root / "main" / "plain_text" / f"train-{k:05d}-of-00003.parquet",
                          docs[200 * k:200 * (k + 1)])
    (root / "main" / "README.md").write_text("# OpenWebText\n")
    split = (root / "refs" / "convert" / "parquet" / "plain_text"
             / ("train" if convert == "full" else "partial-train"))
    held = docs if convert == "full" else docs[:250]
    for k in range(0, len(held), 200):
        write_parquet(split / f"{k // 200:04d}.parquet", held[k:k + 200])
    return docs


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """Builds the stand-in hub (call it with main=..., convert=...) and points prepare.py at it."""
    root = tmp_path / "hub"
    calls = []

    def commit(revision: str) -> str:  # a stand-in commit hash, a different one per revision
        return hashlib.sha1(revision.encode()).hexdigest()

    def snapshot(repo, revision):
        calls.append((repo, revision))
        folder = root / revision
        if not folder.is_dir():
            return None  # no such revision
        files = {str(p.relative_to(folder)): p.stat().st_size
                 for p in sorted(folder.rglob("*")) if p.is_file()}
        return commit(revision), files, f"{folder}/"

    monkeypatch.setattr(prepare, "hub_snapshot", snapshot)
    monkeypatch.setattr(prepare, "HUB_TRAIN_DOCS", HUB_DOCS)

    def build(main: str, convert: str, pr18: bool = False) -> list[str]:
        return make_hub(root, main, convert, pr18)
    build.calls = calls
    build.commit = commit
    return build


def hub_run(out: Path, *args: str) -> dict:
    return prepare.main([f"--data_dir={out}", "--num_proc=1", *args])


@pytest.mark.parametrize("main,convert,pr18,revision,files", [
    # today: main holds a loading script, so the dataset viewer's conversion is read if complete
    ("script", "full", False, "refs/convert/parquet",
     [f"plain_text/train/{k:04d}.parquet" for k in range(3)]),
    # ... and when it is not, the owner's refs/pr/18 if it holds everything
    ("script", "partial", True, "refs/pr/18",
     [f"data/train-{k:05d}-of-00002.parquet" for k in range(2)]),
    # once main holds Parquet files it comes first
    ("parquet", "partial", True, "main",
     [f"plain_text/train-{k:05d}-of-00003.parquet" for k in range(3)]),
])
def test_hub_source_choice_and_provenance(tmp_path, hub, main, convert, pr18, revision, files):
    docs = hub(main, convert, pr18)
    hub_run(tmp_path / "out")
    train, val, meta = load(tmp_path / "out")
    check_counts(tmp_path / "out", train, val, meta)
    # the whole corpus in file order, every 200th document in val
    val_docs = [d for i, d in enumerate(docs) if i % 200 == 199]
    assert val.tolist() == tokens_of(val_docs)
    assert train.tolist() == tokens_of([d for i, d in enumerate(docs) if i % 200 != 199])
    assert meta["source"] == {
        "repository": "Skylion007/openwebtext", "revision": revision,
        "commit": hub.commit(revision), "files": files,
        "file_bytes": sum((tmp_path / "hub" / revision / f).stat().st_size for f in files),
        "partial": False, "documents_in_source": HUB_DOCS, "documents": HUB_DOCS,
        "tokens": len(train) + len(val), "complete": True}
    tried = ["main", "refs/convert/parquet", "refs/pr/18"]
    assert hub.calls == [("Skylion007/openwebtext", rev)
                         for rev in tried[:tried.index(revision) + 1]]


def test_hub_many_workers_keep_the_order(tmp_path, hub):
    """Three workers read the twelve row groups at once; the output is still the corpus in file
    order, byte for byte what one worker writes."""
    docs = hub("script", "full")
    hub_run(tmp_path / "one")
    prepare.main([f"--data_dir={tmp_path / 'three'}", "--num_proc", "3"])
    train, val, _ = load(tmp_path / "three")
    assert val.tolist() == tokens_of(docs[199::200])
    assert train.tolist() == tokens_of([d for i, d in enumerate(docs) if i % 200 != 199])
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "three" / name).read_bytes()


def test_hub_partial_conversion_refused(tmp_path, hub):
    """Asked for the whole corpus when no revision holds it (today's main, the 5 GB partial-train
    conversion, no refs/pr/18), prepare.py refuses before reading a document, in one line that says
    what each revision holds and what to do; --allow_partial takes the largest on purpose, and
    meta.json says it is not complete."""
    docs = hub("script", "partial")
    out = tmp_path / "out"
    msg = one_line_error(hub_run, out)
    for words in ("no revision of Skylion007/openwebtext holds OpenWebText's 600 documents",
                  f"main (commit {hub.commit('main')[:12]}): no Parquet train files, "
                  "only a loading script",
                  f"refs/convert/parquet (commit {hub.commit('refs/convert/parquet')[:12]}): "
                  "250 documents under partial-train/",
                  "refs/pr/18: no such revision", "Nothing was written", "--revision=REV",
                  "--input", "--allow_partial to prepare the 250 of refs/convert/parquet"):
        assert words in msg, (words, msg)
    assert not out.exists()

    meta = hub_run(out, "--allow_partial")
    train, val, _ = load(out)
    assert val.tolist() == tokens_of([docs[199]])
    assert train.tolist() == tokens_of([d for i, d in enumerate(docs[:250]) if i != 199])
    assert meta["source"]["files"] == ["plain_text/partial-train/0000.parquet",
                                       "plain_text/partial-train/0001.parquet"]
    assert (meta["source"]["partial"], meta["source"]["complete"]) == (True, False)
    assert meta["source"]["documents"] == meta["source"]["documents_in_source"] == 250


def test_hub_explicit_revision(tmp_path, hub):
    """--revision reads that revision alone:
    a partial one is still refused, whatever the others hold."""
    hub("parquet", "partial", pr18=True)
    msg = one_line_error(hub_run, tmp_path / "out", "--revision", "refs/convert/parquet")
    assert "refs/convert/parquet (commit" in msg and "250 documents" in msg and "main" not in msg
    assert hub.calls == [("Skylion007/openwebtext", "refs/convert/parquet")]
    assert "refs/pr/21: no such revision" in one_line_error(hub_run, tmp_path / "out",
                                                            "--revision", "refs/pr/21")


def test_hub_without_train_files(tmp_path, hub):
    hub("script", "full")
    msg = one_line_error(hub_run, tmp_path / "out", "--revision", "main")
    assert ("main (commit" in msg and "no Parquet train files, only a loading script" in msg
            and "--input" in msg)


def test_hub_subset_from_a_partial_revision(tmp_path, hub):
    """A subset the partial conversion holds is taken from it
    (no revision holds the whole corpus)."""
    docs = hub("script", "partial")
    meta = hub_run(tmp_path / "out", "--num_docs", "200")
    assert (meta["source"]["revision"] == "refs/convert/parquet"
            and meta["source"]["complete"] is False)
    train, val, _ = load(tmp_path / "out")
    got = enc.decode(train.tolist() + val.tolist()).split("<|endoftext|>")[:-1]
    assert len(set(got)) == 200 and set(got) <= set(docs[:250])


@pytest.mark.parametrize("args", [["--num_docs", "251"],
                                  ["--fraction", "0.5"]])  # 0.5 of 600 is 300
def test_hub_subset_larger_than_source_refused(tmp_path, hub, args):
    hub("script", "partial")
    msg = one_line_error(hub_run, tmp_path / "out", *args)
    asked = "251" if args[0] == "--num_docs" else "300"
    assert f"holds the {asked} documents asked for" in msg and "refs/convert/parquet (commit" in msg
    assert "250 documents" in msg and "Nothing was written" in msg and "ask for at most 250" in msg
    assert not (tmp_path / "out").exists()


def test_hub_subset(tmp_path, hub):
    """A subset is whole row groups in a seeded random order, the last one cut: the same seed gives
    the same files, another seed others; only the files read are recorded;
    it is never "complete"."""
    docs = hub("script", "full")
    metas = {name: hub_run(tmp_path / name, "--num_docs", "120", *seed)
             for name, seed in (("a", []), ("b", []), ("c", ["--seed", "1"]))}
    train, val, meta = load(tmp_path / "a")
    got = enc.decode(train.tolist() + val.tolist()).split("<|endoftext|>")[:-1]
    assert len(got) == len(set(got)) == 120 and set(got) <= set(docs)
    # 50-document row groups: two whole ones and 20 documents of a third, each a run of the corpus
    runs = [got[:50], got[50:100], got[100:]]
    for run_ in runs:
        start = docs.index(run_[0])
        assert run_ == docs[start:start + len(run_)] and start % 50 == 0
    assert got != docs[:120]
    assert meta["source"]["documents"] == 120 and meta["source"]["complete"] is False
    read = {docs.index(r[0]) // 200 for r in runs}
    assert meta["source"]["files"] == [f"plain_text/train/{k:04d}.parquet" for k in dict.fromkeys(
        docs.index(r[0]) // 200 for r in runs)] and len(read) == len(meta["source"]["files"])
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert ((tmp_path / "a" / "train.bin").read_bytes()
            != (tmp_path / "c" / "train.bin").read_bytes())
    assert metas["a"]["args"]["seed"] == 2357


def test_hub_unreadable_row_group(tmp_path, hub):
    """A row group that cannot be read (a dropped connection, a corrupt page) stops the run with one
    line naming the file, and leaves nothing: the footers were fine, so this fails inside
    a worker."""
    hub("script", "full")
    bad = (tmp_path / "hub" / "refs" / "convert" / "parquet" / "plain_text" / "train"
           / "0001.parquet")
    data = bytearray(bad.read_bytes())
    n = len(data)
    data[n // 4:n // 2] = np.random.default_rng(0).integers(0, 256, n // 2 - n // 4,
                                                            dtype=np.uint8).tobytes()
    bad.write_bytes(bytes(data))
    pq.ParquetFile(bad)  # the footer still reads ...
    with pytest.raises((pa.ArrowException, OSError)):
        pq.read_table(bad)  # ... a page does not
    msg = one_line_error(hub_run, tmp_path / "out")
    assert "cannot read row group" in msg and "0001.parquet" in msg and "nothing was written" in msg
    assert not (tmp_path / "out").exists()


def test_hub_snapshot_reads_by_commit(monkeypatch):
    """The one function that talks to the hub: it resolves the revision to a commit, and the files
    are read at that commit (so all of them come from one snapshot),
    through fsspec's hf:// protocol."""
    from types import SimpleNamespace

    import huggingface_hub
    calls = []

    def dataset_info(self, repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return SimpleNamespace(sha="a" * 40, siblings=[
            SimpleNamespace(rfilename="plain_text/train/0000.parquet", size=123),
            SimpleNamespace(rfilename="README.md", size=None)])

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    commit, files, root = prepare.hub_snapshot("Skylion007/openwebtext", "refs/convert/parquet")
    assert calls == [("Skylion007/openwebtext", {"revision": "refs/convert/parquet",
                                                 "files_metadata": True})]
    assert (commit, files) == ("a" * 40, {"plain_text/train/0000.parquet": 123, "README.md": 0})
    assert root == f"hf://datasets/Skylion007/openwebtext@{'a' * 40}/"


def test_train_files_layouts():
    files = ["README.md", "openwebtext.py", "subsets/urlsf_subset00.tar",
             "plain_text/train/0001.parquet", "plain_text/train/0000.parquet",
             "plain_text/partial-train/0000.parquet", "data/train-00000-of-00080.parquet",
             "plain_text/train-00001-of-00002.parquet", "plain_text/validation/0000.parquet",
             "other/test-0.parquet"]
    assert prepare.train_files(files) == [
        "data/train-00000-of-00080.parquet", "plain_text/partial-train/0000.parquet",
        "plain_text/train-00001-of-00002.parquet", "plain_text/train/0000.parquet",
        "plain_text/train/0001.parquet"]


def test_hub_unreachable_message(tmp_path, monkeypatch):
    import huggingface_hub

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("Couldn't reach 'Skylion007/openwebtext' on the Hub "
                              "(LocalEntryNotFoundError)")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", unreachable)
    msg = one_line_error(prepare.main, [f"--data_dir={tmp_path / 'out'}", "--num_docs", "10"])
    assert msg.startswith("error: cannot reach Skylion007/openwebtext")
    assert "--input" in msg
    assert not (tmp_path / "out").exists()


def test_hub_without_huggingface_hub_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    msg = one_line_error(prepare.main, [f"--data_dir={tmp_path / 'out'}"])
    assert "pip install huggingface_hub" in msg and "--input" in msg


def test_hub_offline_subprocess(tmp_path):
    out = tmp_path / "out"
    r = run(f"--data_dir={out}", "--num_docs", "10", env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(r, "cannot reach Skylion007/openwebtext", "--input")
    assert not out.exists()
