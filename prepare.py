"""
Prepare a text corpus for training: GPT-2 BPE tokens in flat uint16 files.

    python prepare.py                    # all of OpenWebText from the Hugging Face hub, or an error
    python prepare.py --num_docs=100000  # a seeded random 100K-document subset
    python prepare.py --input assets/demo/tinyshakespeare.txt  # offline, into data/tinyshakespeare

Writes DIR/train.bin and DIR/val.bin (np.uint16 token ids, each document followed by
the end-of-text token 50256) and DIR/meta.json. Every file is written under a .tmp
name and renamed when complete, meta.json last: a folder with meta.json is complete.
Asked for the whole corpus, it refuses a hub source that holds less than all of it
(docs/data.md: which hub revisions hold what, and why).

--input takes files and folders, read in the order given (folders searched recursively for .txt,
.jsonl and .parquet, in sorted path order), never shuffled: a .txt file is ONE document, a .jsonl
file one per line in its "text" field, a .parquet file one per row of its "text" column.

Split rule: documents are numbered 0, 1, 2, ... in output order; document i goes to val when
floor((i+1)*f) > floor(i*f), f = val_fraction: exactly floor(D*f) documents spread evenly (every
200th with the default f). When that gives no val document (fewer than 1/f documents, e.g. a single
.txt file) the token stream is split instead: the last 10% of the tokens go to val (the cut may fall
inside a document), like nanoGPT's shakespeare prepare.
"""

import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from fractions import Fraction
from itertools import groupby, islice
from multiprocessing import Pool
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import tiktoken
from tqdm import tqdm

import tokenizer
from configurator import configure, make_folder, named, shown

HUB_DATASET = "Skylion007/openwebtext"
# The hub revisions that can hold the whole corpus, in the order "auto" tries them (docs/data.md
# has the evidence). main, once it holds Parquet files: today it holds a loading script
# (openwebtext.py), which datasets >= 4 refuses to run (nanoGPT issue #633), and discussion #22 on
# the hub proposes to replace it. refs/convert/parquet, the dataset viewer's automatic conversion:
# complete for a dataset under 5 GB, otherwise only its first 5 GB, under partial-train/
# (OpenWebText is ~38 GB of text). refs/pr/18, the dataset owner's own pull request
# "convert-parquet-full" (93 Parquet shards), open and unmerged as far as we could see. Whatever the
# revision, its documents are counted from the files' footers before anything is downloaded, and
# only one that holds all of them is read for the whole corpus.
HUB_REVISIONS = ("main", "refs/convert/parquet", "refs/pr/18")
HUB_TRAIN_DOCS = 8_013_769  # OpenWebText's documents (Gokaslan & Cohen 2019), all in train
EOT = 50256  # <|endoftext|>, appended after every document
VOCAB_SIZE = 50257
FINAL = ("train.bin", "val.bin", "meta.json")  # written in this order, meta.json last
TOKEN_SPLIT_VAL = 0.1  # too few documents to hold some out: the last 10% of tokens go to val
SUFFIXES = (".txt", ".jsonl", ".parquet")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
OFFLINE_HINT = "to work offline, pass local files with --input"

# -----------------------------------------------------------------------------
input = []  # local files or folders instead of the hub: .txt, .jsonl or .parquet (see above)
data_dir = ""  # the folder to write; "": data/openwebtext for the hub, data/<first input's name>
overwrite = False  # replace the data already in data_dir
num_docs = 0  # use only N documents: the first N of input, or a seeded subset of the hub's; 0 = all
fraction = 0.0  # hub only: use this fraction of OpenWebText's 8,013,769 documents; 0 = all
revision = "auto"  # hub revision (branch, tag, commit); auto: first of HUB_REVISIONS to hold it
allow_partial = False  # hub only: accept a revision holding less than all of OpenWebText
val_fraction = 0.005  # share of documents held out for val (docs/data.md: why 0.5%)
seed = 2357  # seed of a hub subset's choice
num_proc = CORES  # worker processes that read and tokenize, one per core this process may use
# -----------------------------------------------------------------------------


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


# -----------------------------------------------------------------------------
# where the documents come from: each source yields one str per document

def find_files(paths: list[str]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        try:
            p.stat()
        except FileNotFoundError:
            raise SystemExit(f"error: input path not found: {named(p)}") from None
        except OSError as e:  # a name too long, a permission
            raise SystemExit(f"error: cannot read the input {named(p)} ({e.strerror})") from None
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES)
            if not found:
                raise SystemExit(f"error: no .txt, .jsonl or .parquet files in {p}")
            files += found
        elif p.is_file():
            if p.suffix not in SUFFIXES:
                raise SystemExit(f"error: {p}: unsupported file type "
                                 "(want .txt, .jsonl or .parquet)")
            files.append(p)
        else:
            raise SystemExit(f"error: input path not found: {named(p)}")
    return files


def local_docs(files: list[Path]) -> Iterator[str]:
    """The documents of .txt and .jsonl files, read here (a .parquet file's row groups are read by
    the workers)."""
    for path in files:
        try:
            if path.suffix == ".txt":
                yield path.read_text(encoding="utf-8")
            else:
                yield from jsonl_docs(path)
        except UnicodeDecodeError as e:
            raise SystemExit(f"error: {path} is not UTF-8 text "
                             f"(bad byte at offset {e.start})") from None


def jsonl_docs(path: Path) -> Iterator[str]:
    for n, row in tokenizer.json_lines(path):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise SystemExit(f'error: {path} line {n}: no "text" field holding a string')
        yield row["text"]


class SourceError(Exception):
    """A source that cannot be read, raised in a worker (where SystemExit would kill the worker, not
    the run) and turned into a one-line error by the main process."""


def hub_snapshot(repo: str, revision: str) -> tuple[str, dict[str, int], str] | None:
    """The commit that revision of the dataset repository points at, its files at that commit
    (path -> bytes), and the URL prefix that fsspec reads them with; None if there is no such
    revision. The only function that talks to the hub's API: the tests replace it with a local
    folder laid out as the hub is, and everything else runs as it does on the hub."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RevisionNotFoundError
    except ImportError:
        raise SystemExit("error: reading the hub needs the huggingface_hub package "
                         "(pip install huggingface_hub); " + OFFLINE_HINT) from None
    try:
        info = HfApi().dataset_info(repo, revision=revision, files_metadata=True)
    except RevisionNotFoundError:
        return None
    except Exception as e:
        raise SystemExit(f"error: cannot reach {repo} on the Hugging Face hub ({one_line(e)}); "
                         + OFFLINE_HINT) from None
    # reading by commit, not by branch, so that every file comes from the same snapshot
    return (info.sha, {f.rfilename: f.size or 0 for f in info.siblings or []},
            f"hf://datasets/{repo}@{info.sha}/")


def train_files(files: Iterable[str]) -> list[str]:
    """The train split's Parquet files, in the layouts of the hub: {config}/train/NNNN.parquet and
    {config}/partial-train/NNNN.parquet (refs/convert/parquet),
    {config}/train-NNNNN-of-NNNNN.parquet (datasets' convert_to_parquet) and
    data/train-NNNNN-of-NNNNN.parquet (push_to_hub)."""
    return sorted(f for f in files if f.endswith(".parquet")
                  and (Path(f).parent.name in ("train", "partial-train")
                       or Path(f).name.startswith("train-")))


def choose_hub_source(revision: str, num_docs: int | None, allow_partial: bool) -> dict:
    """The revision to read: of --revision, or of HUB_REVISIONS in order for auto, the first that
    holds the whole corpus (all 8,013,769 documents, counted from the Parquet files' footers before
    anything is downloaded); failing that, for a subset, the first that holds num_docs. Otherwise it
    refuses, in one line that says what each revision holds, unless --allow_partial takes the
    largest on purpose."""
    held, notes = [], []
    for rev in HUB_REVISIONS if revision == "auto" else (revision,):
        snapshot = hub_snapshot(HUB_DATASET, rev)
        if snapshot is None:
            notes.append(f"{rev}: no such revision")
            continue
        commit, files, root = snapshot
        train = train_files(files)
        if not train:
            script = ", only a loading script, which datasets >= 4 no longer runs" if any(
                f.endswith(".py") for f in files) else ""
            notes.append(f"{rev} (commit {commit[:12]}): no Parquet train files{script}")
            continue
        urls = [root + f for f in train]
        try:
            with ThreadPoolExecutor(16) as pool:  # one round trip per footer: overlap them
                footers = list(pool.map(parquet_footer, urls))
        except SourceError as e:
            raise SystemExit(f"error: {e}; nothing was written") from None
        source = {"repository": HUB_DATASET, "revision": rev, "commit": commit, "root": root,
                  "sizes": {f: files[f] for f in train},
                  "partial": any("partial-" in f for f in train),
                  "groups": [(url, i, n) for url, rows in zip(urls, footers, strict=True)
                             for i, n in enumerate(rows)]}
        source["documents_in_source"] = sum(n for _, _, n in source["groups"])
        if source["documents_in_source"] == HUB_TRAIN_DOCS:
            return source
        held.append(source)
        notes.append(f"{rev} (commit {commit[:12]}): {source['documents_in_source']:,} documents"
                     + (" under partial-train/, the hub having converted only the first 5 GB"
                        if source["partial"] else ""))
    if num_docs is not None:
        for source in held:
            if source["documents_in_source"] >= num_docs:
                return source
    most = max(held, key=lambda source: source["documents_in_source"], default=None)
    if num_docs is None and allow_partial and most is not None:
        print(f"warning: --allow_partial: preparing the {most['documents_in_source']:,} documents "
              f"of {HUB_DATASET}@{most['revision']}, not OpenWebText's {HUB_TRAIN_DOCS:,}; "
              "meta.json records complete: false", file=sys.stderr)
        return most
    asked = (f"OpenWebText's {HUB_TRAIN_DOCS:,} documents" if num_docs is None
             else f"the {num_docs:,} documents asked for (--num_docs or --fraction)")
    fix = "pass --revision=REV for a revision that holds them, or --input for a complete local copy"
    if most is not None:
        fix += (f", or --allow_partial to prepare the {most['documents_in_source']:,} of "
                f"{most['revision']} on purpose"
                if num_docs is None else f", or ask for at most {most['documents_in_source']:,}")
    raise SystemExit(f"error: no revision of {HUB_DATASET} holds {asked}: {'; '.join(notes)}. "
                     f"Nothing was written; {fix} (docs/data.md)")


def parquet_footer(url: str) -> list[int]:
    """Rows of each row group of a Parquet file, from its footer: a few KB, not the file."""
    import fsspec
    import pyarrow.parquet as pq
    try:
        with fsspec.open(url, "rb") as f:
            meta = pq.ParquetFile(f).metadata
            names = meta.schema.names
    except Exception as e:  # pyarrow's (ArrowInvalid: not Parquet, or cut short), or the network's
        raise SourceError(f"cannot read the Parquet file {url} ({one_line(e)})") from None
    if "text" not in names:
        raise SourceError(f'{url}: no "text" column (columns: {", ".join(names)})')
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def plan_hub(source: dict, num_docs: int | None, seed: int) -> list[tuple[str, int, int]]:
    """The row groups to read, (URL, row group, rows to take from it): all of them for the whole
    source; for a subset, whole row groups in a seeded random order (as datasets' streaming shuffle
    takes whole shards, so that it downloads only what it reads), the last one cut. Records the
    files they are in, and their bytes, in source."""
    groups = source.pop("groups")
    num_docs = source["documents_in_source"] if num_docs is None else num_docs
    order = range(len(groups))
    if num_docs < source["documents_in_source"]:
        order = np.random.default_rng(seed).permutation(len(groups))
    tasks, left = [], num_docs
    for g in order:
        url, i, n = groups[g]
        tasks.append((url, i, min(n, left)))
        left -= min(n, left)
        if left == 0:
            break
    # provenance: the files read, in the order first read, and their size
    source["files"] = [url[len(source["root"]):]
                       for url in dict.fromkeys(url for url, _, _ in tasks)]
    sizes = source.pop("sizes")
    source["file_bytes"] = sum(sizes[f] for f in source["files"])
    return tasks


def local_work(files: list[Path],
               num_docs: int | None) -> Iterator[list[str] | tuple[str, int, int]]:
    """The --input files as the workers' work, in order, up to num_docs documents: each row group of
    a .parquet file (the worker reads it), and batches of the documents of the .txt and .jsonl files
    between them (read here)."""
    left = num_docs  # None: all of them
    for is_parquet, run in groupby(files, key=lambda f: f.suffix == ".parquet"):
        if is_parquet:
            for path in run:
                for group, rows in enumerate(parquet_footer(str(path))):
                    rows = rows if left is None else min(rows, left)
                    yield str(path), group, rows
                    left = None if left is None else left - rows
                    if left == 0:
                        return
        else:
            for batch in batched(islice(local_docs(list(run)), left), 256):
                yield batch
                left = None if left is None else left - len(batch)
            if left == 0:
                return


# -----------------------------------------------------------------------------
# reading and tokenization, in worker processes. A chunk is (tokens, lengths, rows, read seconds,
# tokenize seconds): the documents' tokens back to back, each followed by EOT, and each one's
# length.

Chunk = tuple[np.ndarray, np.ndarray, int, float, float]


def init_worker() -> None:
    global enc
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    enc = tokenizer.gpt2()


def encode(texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    # encode_ordinary: text that spells "<|endoftext|>" is ordinary text, so 50256 marks only our
    # boundaries. An empty (or null) document would be a lone EOT: it is skipped.
    docs = [np.array(enc.encode_ordinary(t) + [EOT], dtype=np.uint16) for t in texts if t]
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    return (np.concatenate(docs) if docs else np.zeros(0, dtype=np.uint16)), lengths


def encode_texts(texts: list[str]) -> Chunk:
    t0 = time.perf_counter()
    return *encode(texts), len(texts), 0.0, time.perf_counter() - t0


def read_and_encode(task: tuple[str, int, int]) -> Chunk:
    """Reads the first `rows` documents of one row group of a Parquet file and tokenizes them: every
    worker downloads as well as tokenizes, so none waits on the main process. The row group is read
    in batches, so a worker holds the row group's Arrow column and one batch of Python strings."""
    import fsspec
    import pyarrow.parquet as pq
    url, group, rows = task
    chunks, done, read_s, tokenize_s = [], 0, 0.0, 0.0
    try:
        with fsspec.open(url, "rb") as f:
            t = time.perf_counter()
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024, row_groups=[group],
                                                        columns=["text"]):
                texts = batch.column(0)[:rows - done].to_pylist()
                read_s += time.perf_counter() - t
                t = time.perf_counter()
                chunks.append(encode(texts))
                done += len(texts)
                tokenize_s += time.perf_counter() - t
                if done == rows:
                    break
                t = time.perf_counter()
    except Exception as e:  # pyarrow's (a corrupt page) or the network's: one line, no traceback
        raise SourceError(f"cannot read row group {group} of the Parquet file {url} "
                          f"({one_line(e)})") from None
    tokens = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, dtype=np.uint16)
    lengths = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, dtype=np.int64)
    return tokens, lengths, done, read_s, tokenize_s


def work(item: list[str] | tuple[str, int, int]) -> Chunk:
    return read_and_encode(item) if isinstance(item, tuple) else encode_texts(item)


def batched(docs: Iterator[str], size: int) -> Iterator[list[str]]:
    batch = []
    for text in docs:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def in_order(pool, fn: Callable, args: Iterable, ahead: int) -> Iterator:
    """fn(arg) for each arg, on the pool's workers, the results in order. Only `ahead` calls are in
    flight at a time (Pool.imap would read every arg ahead), so memory stays flat."""
    pending = deque()
    for a in args:
        pending.append(pool.apply_async(fn, (a,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# -----------------------------------------------------------------------------

def check_settings(args: SimpleNamespace) -> None:
    for key, path in [("data_dir", args.data_dir)] + [("input", p) for p in args.input]:
        if not path.isprintable():  # a newline or a tab pasted with it
            raise SystemExit(f"error: --{key} {shown(path)} holds a control character (a pasted "
                             f"newline?): give the path alone")
    if not 0 < args.val_fraction < 1:
        raise SystemExit("error: --val_fraction must be between 0 and 1")
    if args.num_docs < 0:
        raise SystemExit("error: --num_docs must be at least 1 (or 0: all)")
    if args.num_docs and args.fraction:
        raise SystemExit("error: --fraction is not allowed with --num_docs: give one of them")
    if not 0 <= args.fraction <= 1:
        raise SystemExit("error: --fraction must be in (0, 1]")
    # seed is the default here: main() configures a copy of these globals
    if args.input and (args.fraction or args.revision != "auto" or args.allow_partial
                       or args.seed != seed):  # --input takes the first --num_docs: no seed
        raise SystemExit("error: --fraction, --revision, --allow_partial and --seed are for the "
                         "hub, and --input would ignore them; use --num_docs with --input")
    if args.num_proc < 1:
        raise SystemExit("error: --num_proc must be at least 1")


def plan_work(args: SimpleNamespace, out: Path) -> tuple[dict, int | None, Iterable]:
    """Everything checked that can be before the long part (inputs, output folder, tokenizer, the
    hub's counts): the source for meta.json, the documents to read (None: not known ahead) and the
    workers' work."""
    files = find_files(args.input) if args.input else []
    # os.path's checks, not Path's: a name too long is make_folder's one line below, not a traceback
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(f"error: --data_dir {out} is a file, not a folder")
    if not args.overwrite and any(os.path.exists(out / n) for n in FINAL):
        raise SystemExit(f"error: {out} already holds prepared data; "
                         "pass --overwrite to replace it")
    tokenizer.gpt2()
    if args.input:
        return {"files": [str(f) for f in files]}, None, local_work(files, args.num_docs or None)
    asked = args.num_docs or (round(args.fraction * HUB_TRAIN_DOCS) if args.fraction else None)
    source = choose_hub_source(args.revision, asked, args.allow_partial)
    todo = plan_hub(source, asked, args.seed)
    total = sum(rows for _, _, rows in todo)
    print(f"reading {total:,} of the {source['documents_in_source']:,} documents of {HUB_DATASET}@"
          f"{source['revision']} (commit {source['commit'][:12]}) from {len(source['files'])} "
          f"Parquet files ({source['file_bytes'] / 1e9:.2f} GB)", file=sys.stderr)
    return source, total, todo


def tokenize_into(tmp: dict[str, Path], todo: Iterable, total: int | None,
                  args: SimpleNamespace) -> tuple:
    """The workers' chunks split by the document rule into tmp's train.bin and val.bin. Returns the
    counts ({split: [tokens, documents]}), the rows read and the workers' seconds."""
    f = Fraction(str(args.val_fraction))  # exact, so the rule does not depend on float rounding
    p, q = f.numerator, f.denominator
    counts = {"train": [0, 0], "val": [0, 0]}  # [tokens, documents]
    rows_read, seconds = 0, {"read": 0.0, "tokenize": 0.0}
    with (open(tmp["train.bin"], "wb") as ftrain, open(tmp["val.bin"], "wb") as fval,
          Pool(args.num_proc, initializer=init_worker) as pool,
          tqdm(total=total, unit="docs", disable=None) as bar):
        chunks = in_order(pool, work, todo, 2 * args.num_proc)
        for tokens, lengths, rows, read_s, tokenize_s in chunks:
            # document i (numbered from 0 over the output) is val when floor((i+1)f) > floor(i f)
            i = counts["train"][1] + counts["val"][1] + np.arange(len(lengths), dtype=np.int64)
            is_val = (i + 1) * p // q > i * p // q
            token_is_val = np.repeat(is_val, lengths)
            fval.write(tokens[token_is_val].tobytes())
            ftrain.write(tokens[~token_is_val].tobytes())
            n_val = int(token_is_val.sum())
            counts["val"][0] += n_val
            counts["val"][1] += int(is_val.sum())
            counts["train"][0] += len(tokens) - n_val
            counts["train"][1] += len(lengths) - int(is_val.sum())
            rows_read += rows
            seconds["read"] += read_s
            seconds["tokenize"] += tokenize_s
            bar.update(rows)
    return counts, rows_read, seconds


def split_by_tokens(tmp: dict[str, Path], counts: dict) -> None:
    """Fewer than 1/f documents, so none went to val: move the last 10% of the token stream from
    train to val, and count the documents on each side again."""
    ndocs = counts["train"][1] + counts["val"][1]
    n = counts["train"][0]
    cut = int(n * (1 - TOKEN_SPLIT_VAL))
    data = np.memmap(tmp["train.bin"], dtype=np.uint16, mode="r")
    chunk = 1 << 24  # 32 MB at a time: a single .txt document can be large
    with open(tmp["val.bin"], "wb") as fval:
        for s in range(cut, n, chunk):
            fval.write(data[s:s + chunk].tobytes())
    train_eots = sum(int(np.count_nonzero(data[s:min(cut, s + chunk)] == EOT))
                     for s in range(0, cut, chunk))
    # a document with tokens on both sides of the cut counts in both (n >= 2, so cut >= 1)
    counts["train"] = [cut, train_eots + int(data[cut - 1] != EOT)]
    counts["val"] = [n - cut, ndocs - train_eots]
    del data
    os.truncate(tmp["train.bin"], 2 * cut)


def commit(tmp: dict[str, Path], final: dict[str, Path], meta: dict) -> None:
    """meta.json written, every file on disk, then the renames: meta.json goes first and comes back
    last, so while it is missing the folder is incomplete."""
    tmp["meta.json"].write_text(json.dumps(meta, indent=2) + "\n")
    for path in tmp.values():  # on disk before the renames: a power cut leaves no empty file
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
    final["meta.json"].unlink(missing_ok=True)
    for name in FINAL:
        os.replace(tmp[name], final[name])


@contextmanager
def writing(out: Path, tmp: dict) -> Iterator[None]:
    """The folder out (--data_dir) made, for a body that writes the tmp files into it. A failure is
    one line; then the tmp files left go, and so does out if this run made it and it is empty: a
    failed run leaves no trace. prepare_chat.py writes its folder through this too."""
    created = not os.path.exists(out)
    make_folder(str(out), "--data_dir")
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(f"error: interrupted; {out} holds no new data") from None
    except OSError as e:  # a full disk or a quota, hours into OpenWebText
        raise SystemExit(f"error: cannot write {out} ({e.strerror or e}): free space or give "
                         f"another --data_dir; {out} holds no new data") from None
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()


def prepare(args: SimpleNamespace) -> dict:
    t0 = time.time()
    check_settings(args)
    if not args.data_dir:
        name = Path(args.input[0]).resolve().stem if args.input else "openwebtext"
        args.data_dir = str(Path("data") / name)
    out = Path(args.data_dir)
    source, total, todo = plan_work(args, out)
    final = {name: out / name for name in FINAL}
    tmp = {name: p.with_name(p.name + ".tmp") for name, p in final.items()}
    with writing(out, tmp):
        try:
            counts, rows_read, seconds = tokenize_into(tmp, todo, total, args)
        except SourceError as e:
            raise SystemExit(f"error: {e}; nothing was written") from None
        ndocs = counts["train"][1] + counts["val"][1]
        if ndocs == 0:
            raise SystemExit("error: no text in the input "
                             f"({', '.join(args.input or [HUB_DATASET])})")
        if total is not None and rows_read != total:  # the footers promised more than the files had
            raise SystemExit(f"error: read {rows_read:,} documents of the {total:,} the files' "
                             "footers promised; nothing was written")
        method = "documents"
        if counts["val"][1] == 0:
            method = "tokens"
            split_by_tokens(tmp, counts)

        source.pop("root", None)
        source["documents"] = rows_read  # rows read, empty ones included
        source["tokens"] = counts["train"][0] + counts["val"][0]
        if not args.input:
            # the whole corpus, and nothing less, is what "complete" vouches for
            source["complete"] = rows_read == HUB_TRAIN_DOCS == source["documents_in_source"]
        meta = {
            "tokenizer": "gpt2", "vocab_size": VOCAB_SIZE, "eot_token": EOT, "dtype": "uint16",
            "source": source,
            "split": {"method": method,
                      "val_fraction": (args.val_fraction if method == "documents"
                                       else TOKEN_SPLIT_VAL)},
            "train": {"tokens": counts["train"][0], "documents": counts["train"][1]},
            "val": {"tokens": counts["val"][0], "documents": counts["val"][1]},
            "args": dict(vars(args)),
            "tiktoken": tiktoken.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.time() - t0, 1),
            # summed over the worker processes: what a machine with more cores divides
            "process_seconds": {k: round(v, 1) for k, v in seconds.items()},
        }
        commit(tmp, final, meta)
    return meta


def main(argv: list[str] | None = None) -> dict:
    # a copy of the module's globals, so the defaults stay for the next call (the tests call main)
    argv = sys.argv[1:] if argv is None else argv
    args = SimpleNamespace(**configure(dict(globals()), argv, verbose=False))
    meta = prepare(args)
    for split in ("train", "val"):
        counts = meta[split]
        print(f"{Path(args.data_dir) / (split + '.bin')}: {counts['tokens']:,} tokens, "
              f"{counts['documents']:,} documents")
    busy = meta["process_seconds"]
    print(f"split by {meta['split']['method']}, {meta['seconds']}s ({args.num_proc} workers, busy "
          f"for {busy['read']}s reading and {busy['tokenize']}s tokenizing in all)")
    if meta["val"]["tokens"] < 1025:
        print(f"warning: val.bin has {meta['val']['tokens']} tokens, fewer than one 1024-token "
              "block plus its target", file=sys.stderr)
    return meta


if __name__ == "__main__":
    main()
