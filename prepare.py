"""
Prepare a text corpus for training: GPT-2 BPE tokens in flat uint16 files.

    python prepare.py                              # OpenWebText from the Hugging Face hub
    python prepare.py --num_docs 100000            # a seeded, shuffled 100K-document subset
    TIKTOKEN_CACHE_DIR=../shared/tiktoken_cache \
        python prepare.py --input ../shared/data/openwebtext_sample --out data/owt_sample

Writes DIR/train.bin and DIR/val.bin (np.uint16 token ids, each document followed by
the end-of-text token 50256) and DIR/meta.json. Every file is written under a .tmp
name and renamed when complete, meta.json last: a folder with meta.json is complete.
"""

import argparse
import json
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from itertools import islice
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import tiktoken
from tqdm import tqdm

HUB_DATASET = "Skylion007/openwebtext"
# datasets >= 4 refuses script-based datasets (nanoGPT issue #633), so we read the
# Parquet conversion the hub keeps of every dataset; streaming it means a subset
# downloads only the shards (and parts of shards) it reads.
HUB_REVISION = "refs/convert/parquet"
HUB_TRAIN_DOCS = 8_013_769  # rows of OpenWebText's train split (nanoGPT: 8,009,762 train + 4,007 val)
EOT = 50256  # <|endoftext|>, appended after every document
VOCAB_SIZE = 50257
TOKEN_SPLIT_VAL = 0.1  # too few documents to hold some out: the last 10% of tokens go to val
SUFFIXES = (".txt", ".jsonl", ".parquet")
OFFLINE_HINT = ("to work offline, pass local files with --input and set "
                "TIKTOKEN_CACHE_DIR=../shared/tiktoken_cache")

parser = argparse.ArgumentParser(
    description="Tokenize text with GPT-2 BPE (tiktoken) into train.bin / val.bin (uint16) and meta.json.",
    epilog="Split rule: documents are numbered 0, 1, 2, ... in output order; document i goes to val "
           "when floor((i+1)*f) > floor(i*f), f = --val_fraction, i.e. exactly floor(D*f) documents spread "
           "evenly (every 200th with the default f). When that gives no val document (fewer than 1/f "
           "documents, e.g. a single .txt file) the token stream is split instead: the last 10% of the "
           "tokens go to val (the cut may fall inside a document), like nanoGPT's shakespeare prepare.",
)
parser.add_argument("--input", nargs="+", metavar="PATH",
                    help="local files or folders instead of the hub: a .txt file is ONE document (the whole "
                         "file); a .jsonl file has one document per line in its \"text\" field; a .parquet "
                         "file has one per row of its \"text\" column. Folders are searched recursively for "
                         "those suffixes (other files are ignored). Read in the order given, folders in "
                         "sorted path order; not shuffled")
parser.add_argument("--out", type=Path,
                    help="output folder (default: data/openwebtext for the hub, data/<name of the first "
                         "--input> otherwise)")
parser.add_argument("--overwrite", action="store_true", help="replace the data already in --out")
subset = parser.add_mutually_exclusive_group()
subset.add_argument("--num_docs", type=int, help="use only the first N documents (of the shuffled hub stream, "
                                                 "or of --input); default all")
subset.add_argument("--fraction", type=float, help="hub only: use this fraction of the train split's documents")
parser.add_argument("--val_fraction", type=float, default=0.005,
                    help="fraction of documents held out for val. 0.5%% keeps ~45M val tokens on the full "
                         "split (plenty: nanoGPT's 0.05%% gives ~4M) and still ~50 documents for a "
                         "10K-document subset, where 0.05%% would leave 5 (default %(default)s)")
parser.add_argument("--seed", type=int, default=2357, help="seed of the hub stream's shuffle (default %(default)s)")
parser.add_argument("--shuffle_buffer", type=int, default=10_000,
                    help="documents in the hub stream's shuffle buffer; the shard order is shuffled too "
                         "(default %(default)s)")
parser.add_argument("--num_proc", type=int, default=min(8, os.cpu_count() or 1),
                    help="tokenizer worker processes (default %(default)s)")


def one_line_error(message: str):
    # argparse's own error() prints the whole usage block first; like the other scripts, say it in one line
    raise SystemExit(f"error: {message} (python prepare.py --help lists the options)")


parser.error = one_line_error


def load_tokenizer() -> tiktoken.Encoding:
    # tiktoken downloads the GPT-2 BPE files once, then reads them from its cache
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:
        raise SystemExit(f"error: cannot load the GPT-2 tokenizer ({one_line(e)}); {OFFLINE_HINT}") from None


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


# -----------------------------------------------------------------------------
# where the documents come from: each source yields one str per document

def find_files(paths: list[str]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES)
            if not found:
                raise SystemExit(f"error: no .txt, .jsonl or .parquet files in {p}")
            files += found
        elif p.is_file():
            if p.suffix not in SUFFIXES:
                raise SystemExit(f"error: {p}: unsupported file type (want .txt, .jsonl or .parquet)")
            files.append(p)
        else:
            raise SystemExit(f"error: input path not found: {p}")
    return files


def local_docs(files: list[Path]) -> Iterator[str]:
    for path in files:
        try:
            if path.suffix == ".txt":
                yield path.read_text(encoding="utf-8")
            elif path.suffix == ".jsonl":
                yield from jsonl_docs(path)
            else:
                yield from parquet_docs(path)
        except UnicodeDecodeError as e:
            raise SystemExit(f"error: {path} is not UTF-8 text (bad byte at offset {e.start})") from None


def jsonl_docs(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {path} line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise SystemExit(f'error: {path} line {n}: no "text" field holding a string')
            yield row["text"]


def parquet_docs(path: Path) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise SystemExit(f'error: {path}: no "text" column (columns: {", ".join(pf.schema_arrow.names)})')
        for batch in pf.iter_batches(columns=["text"], batch_size=1024):
            yield from (t or "" for t in batch.column(0).to_pylist())  # a null is an empty document
    except (pa.ArrowException, OSError) as e:
        # a truncated download or a file that is not Parquet: pyarrow raises ArrowInvalid for a bad
        # footer, OSError for a corrupt page ("Corrupt snappy compressed data")
        raise SystemExit(f"error: {path} is not a readable Parquet file ({one_line(e)}); "
                         f"download it again or leave it out") from None


def hub_docs(num_docs: int, seed: int, buffer_size: int) -> Iterator[str]:
    """Opens the stream now (so an unreachable hub fails before any file is made) and
    returns an iterator over its documents."""
    # imported here so that --input works without datasets installed
    try:
        from datasets import load_dataset
    except ImportError:
        raise SystemExit("error: reading the hub needs the datasets package (pip install datasets); "
                         + OFFLINE_HINT) from None
    try:
        ds = load_dataset(HUB_DATASET, revision=HUB_REVISION, split="train", streaming=True)
        rows = iter(ds.shuffle(seed=seed, buffer_size=buffer_size).take(num_docs))
    except Exception as e:
        raise SystemExit(f"error: cannot reach {HUB_DATASET} on the Hugging Face hub ({one_line(e)}); "
                         + OFFLINE_HINT) from None

    def texts() -> Iterator[str]:
        while True:
            # a connection can also drop in the middle of the stream
            try:
                row = next(rows)
            except StopIteration:
                return
            except Exception as e:
                raise SystemExit(f"error: lost {HUB_DATASET} while streaming it ({one_line(e)}); "
                                 + OFFLINE_HINT) from None
            yield row["text"]
    return texts()


# -----------------------------------------------------------------------------
# tokenization, in worker processes

def init_worker() -> None:
    global enc
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    enc = tiktoken.get_encoding("gpt2")  # from the cache the main process filled


def encode_batch(texts: list[str]) -> list[np.ndarray]:
    # encode_ordinary: text that spells "<|endoftext|>" is ordinary text, so 50256 marks only our boundaries
    return [np.array(enc.encode_ordinary(t) + [EOT], dtype=np.uint16) for t in texts]


def batched(docs: Iterator[str], size: int) -> Iterator[list[str]]:
    batch = []
    for text in docs:
        if text:  # an empty document would be a lone EOT: skip it
            batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize(docs: Iterator[str], num_proc: int, total: int | None) -> Iterator[np.ndarray]:
    """Yields each document's tokens (EOT included) in input order. Only a few batches are
    in flight at a time (Pool.imap would read the whole input ahead), so memory stays flat."""
    with Pool(num_proc, initializer=init_worker) as pool, tqdm(total=total, unit="docs", disable=None) as bar:
        pending = deque()
        for batch in batched(docs, 64):
            pending.append(pool.apply_async(encode_batch, (batch,)))
            if len(pending) >= 4 * num_proc:
                done = pending.popleft().get()
                bar.update(len(done))
                yield from done
        while pending:
            done = pending.popleft().get()
            bar.update(len(done))
            yield from done


# -----------------------------------------------------------------------------

def prepare(args: argparse.Namespace) -> dict:
    t0 = time.time()
    if not 0 < args.val_fraction < 1:
        raise SystemExit("error: --val_fraction must be between 0 and 1")
    if args.num_docs is not None and args.num_docs < 1:
        raise SystemExit("error: --num_docs must be at least 1")
    if args.fraction is not None and not 0 < args.fraction <= 1:
        raise SystemExit("error: --fraction must be in (0, 1]")
    if args.input and args.fraction is not None:
        raise SystemExit("error: --fraction is for the hub; use --num_docs with --input")
    if args.num_proc < 1:
        raise SystemExit("error: --num_proc must be at least 1")

    # check everything we can before the long part: inputs, output folder, tokenizer
    files = find_files(args.input) if args.input else []
    if args.out is None:
        args.out = Path("data") / (Path(args.input[0]).resolve().stem if args.input else "openwebtext")
    out = args.out
    final = {name: out / name for name in ("train.bin", "val.bin", "meta.json")}
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file, not a folder")
    if not args.overwrite and any(p.exists() for p in final.values()):
        raise SystemExit(f"error: {out} already holds prepared data; pass --overwrite to replace it")
    load_tokenizer()

    if args.input:
        source = [str(f) for f in files]
        docs = local_docs(files)
        total = None
        if args.num_docs is not None:
            docs = islice(docs, args.num_docs)
    else:
        source = [f"hf://datasets/{HUB_DATASET}@{HUB_REVISION}"]
        total = args.num_docs or round((args.fraction or 1.0) * HUB_TRAIN_DOCS)
        docs = hub_docs(total, args.seed, args.shuffle_buffer)

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = {name: p.with_name(p.name + ".tmp") for name, p in final.items()}
    f = Fraction(str(args.val_fraction))  # exact, so the rule does not depend on float rounding
    counts = {"train": [0, 0], "val": [0, 0]}  # [tokens, documents]
    try:
        with open(tmp["train.bin"], "wb") as ftrain, open(tmp["val.bin"], "wb") as fval:
            for i, tokens in enumerate(tokenize(docs, args.num_proc, total)):
                split = "val" if math.floor((i + 1) * f) > math.floor(i * f) else "train"
                (fval if split == "val" else ftrain).write(tokens.tobytes())
                counts[split][0] += len(tokens)
                counts[split][1] += 1
        ndocs = counts["train"][1] + counts["val"][1]
        if ndocs == 0:
            raise SystemExit(f"error: no text in the input ({', '.join(args.input or [HUB_DATASET])})")
        if not args.input and ndocs < total:
            # e.g. if the hub's Parquet conversion of a large dataset is only partial
            print(f"warning: the hub stream ended after {ndocs:,} of the {total:,} documents asked for",
                  file=sys.stderr)
        method = "documents"
        if counts["val"][1] == 0:
            # fewer than 1/f documents: move the last 10% of the token stream from train to val
            method = "tokens"
            n = counts["train"][0]
            cut = int(n * (1 - TOKEN_SPLIT_VAL))
            data = np.memmap(tmp["train.bin"], dtype=np.uint16, mode="r")
            chunk = 1 << 24  # 32 MB at a time: a single .txt document can be large
            with open(tmp["val.bin"], "wb") as fval:
                for s in range(cut, n, chunk):
                    fval.write(data[s:s + chunk].tobytes())
            train_eots = sum(int(np.count_nonzero(data[s:min(cut, s + chunk)] == EOT)) for s in range(0, cut, chunk))
            # a document with tokens on both sides of the cut counts in both (n >= 2, so cut >= 1)
            counts["train"] = [cut, train_eots + int(data[cut - 1] != EOT)]
            counts["val"] = [n - cut, ndocs - train_eots]
            del data
            os.truncate(tmp["train.bin"], 2 * cut)

        meta = {
            "tokenizer": "gpt2", "vocab_size": VOCAB_SIZE, "eot_token": EOT, "dtype": "uint16",
            "source": source,
            "split": {"method": method,
                      "val_fraction": args.val_fraction if method == "documents" else TOKEN_SPLIT_VAL},
            "train": {"tokens": counts["train"][0], "documents": counts["train"][1]},
            "val": {"tokens": counts["val"][0], "documents": counts["val"][1]},
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "tiktoken": tiktoken.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.time() - t0, 1),
        }
        tmp["meta.json"].write_text(json.dumps(meta, indent=2) + "\n")
        for p in tmp.values():  # on disk before the renames: a power cut must not leave a renamed, empty file
            with open(p, "rb+") as fh:
                os.fsync(fh.fileno())
        # meta.json goes first and comes back last: while it is missing the folder is incomplete
        final["meta.json"].unlink(missing_ok=True)
        for name in ("train.bin", "val.bin", "meta.json"):
            os.replace(tmp[name], final[name])
    except KeyboardInterrupt:
        raise SystemExit(f"error: interrupted; {out} holds no new data") from None
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()  # a failed run leaves no trace
    return meta


def main(argv: list[str] | None = None) -> dict:
    args = parser.parse_args(argv)
    meta = prepare(args)
    for split in ("train", "val"):
        counts = meta[split]
        print(f"{args.out / (split + '.bin')}: {counts['tokens']:,} tokens, {counts['documents']:,} documents")
    print(f"split by {meta['split']['method']}, {meta['seconds']}s")
    if meta["val"]["tokens"] < 1025:
        print(f"warning: val.bin has {meta['val']['tokens']} tokens, fewer than one 1024-token block plus its target",
              file=sys.stderr)
    return meta


if __name__ == "__main__":
    main()
