r"""
Prepare conversations for supervised fine-tuning (SFT): the chat template's tokens plus a loss mask.

    python prepare_chat.py --input assets/demo/chat.jsonl --data_dir=data/demo_chat \
        --block_size=128                                    # offline
    python prepare_chat.py --hub=smoltalk                   # HuggingFaceTB/smoltalk, everyday chats
    python prepare_chat.py --hub=smoltalk --hub_subset=all  # the whole of smoltalk
    python prepare_chat.py --hub=hh-rlhf                    # Anthropic/hh-rlhf, the 'chosen' side

Input is the `messages` format of Hugging Face chat datasets, one JSON object a line:
{"messages": [{"role": "user" | "assistant" | "system", "content": "..."}, ...]}. Each conversation
becomes tokens through tokenizer/chat_template.py, the one definition chat.py, eval.py and
export_hf.py use.

Writes DIR/{train,val}.bin (uint16 token ids, conversations back to back), {train,val}_mask.bin
(uint8: 1 where the token is a target of the loss, the assistant's words and end-of-turn EOT),
{train,val}_starts.bin (int64: where each conversation starts) and meta.json ("kind": "chat", the
template's name), each under a .tmp name renamed when complete, meta.json last, as prepare.py does.
Conversation i goes to val when floor((i+1)·f) > floor(i·f): whole conversations, spread evenly. A
conversation longer than block_size + 1 tokens is cut at a turn boundary (the last exchanges left
out), never mid-turn; one whose first exchange alone is too long is dropped; both are counted in
meta.json.
"""

import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from fractions import Fraction
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import tiktoken

import tokenizer
from configurator import configure, shown
from prepare import one_line, writing
from tokenizer import chat_template

# the hub datasets it reads; the subset (a config of the dataset) is chosen with --hub_subset
HUB = {"smoltalk": ("HuggingFaceTB/smoltalk", "everyday-conversations"),
       "hh-rlhf": ("Anthropic/hh-rlhf", None)}
OFFLINE_HINT = "to work offline, pass local .jsonl files with --input (e.g. assets/demo/chat.jsonl)"
SPLITS = ("train", "val")
FILES = ("{}.bin", "{}_mask.bin", "{}_starts.bin")

# -----------------------------------------------------------------------------
input = []  # local .jsonl files of {"messages": [...]}, read in the order given
hub = ""  # or download from the Hugging Face hub instead (needs datasets): smoltalk or hh-rlhf
hub_subset = ""  # "": the default (smoltalk: everyday-conversations); all; hh-rlhf: helpful-base
data_dir = ""  # the folder to write; "": data/<hub name> or data/chat
overwrite = False  # replace the data already in data_dir
block_size = 1024  # the model's context: a conversation must fit in block_size + 1 tokens
val_fraction = 0.05  # share of conversations held out for val
num_conversations = 0  # use only the first N conversations; 0 = all
# -----------------------------------------------------------------------------


def hh_messages(text: str) -> list[dict]:
    """An HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as messages."""
    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + text.lstrip("\n"))[1:]
    return [{"role": "user" if role == "Human" else "assistant", "content": content.strip()}
            for role, content in zip(parts[::2], parts[1::2], strict=True)]


def hub_conversations(name: str, subset: str | None, skipped: list[int]) -> Iterator[list[dict]]:
    """Stream a hub dataset's train split as messages. Rows that break the template's rules (HH-RLHF
    has a few that do not alternate) are skipped and counted: they are the dataset's, not the user's
    to fix."""
    try:
        from datasets import load_dataset
    except ImportError:
        sys.exit("error: reading the hub needs the datasets package (pip install datasets); "
                 f"{OFFLINE_HINT}")
    path, default = HUB[name]
    subset = subset or default
    try:
        # smoltalk's subsets are configs, HH-RLHF's data folders (helpful-base, harmless-base, ...)
        rows = iter(load_dataset(path, subset, split="train", streaming=True)
                    if name == "smoltalk" else
                    load_dataset(path, split="train", streaming=True,
                                 **({"data_dir": subset} if subset else {})))
    except Exception as e:
        sys.exit(f"error: cannot reach {path} on the Hugging Face hub ({one_line(e)}); "
                 f"{OFFLINE_HINT}")
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as e:  # a connection can also drop mid-stream
            sys.exit(f"error: lost {path} while streaming it ({one_line(e)}); {OFFLINE_HINT}")
        messages = row["messages"] if name == "smoltalk" else hh_messages(row["chosen"])
        if chat_template.check(messages) is None:
            yield messages
        else:
            skipped[0] += 1


def check_settings(args: SimpleNamespace) -> None:
    for key, path in [("data_dir", args.data_dir)] + [("input", p) for p in args.input]:
        if not path.isprintable():  # a newline or a tab pasted with it
            sys.exit(f"error: --{key} {shown(path)} holds a control character (a pasted newline?): "
                     f"give the path alone")
    if not (args.input or args.hub):
        sys.exit("error: give --input FILE.jsonl ... (offline) or --hub=smoltalk|hh-rlhf")
    if args.input and args.hub:
        sys.exit("error: --hub is not allowed with --input: give one of them")
    if args.hub and args.hub not in HUB:
        sys.exit(f"error: --hub={args.hub!r} is not one of {', '.join(sorted(HUB))}")
    if args.input and args.hub_subset:  # else ignored: the files are read as they are
        sys.exit("error: --hub_subset chooses a subset of a --hub dataset, and --input would "
                 "ignore it: drop it")
    if not 0 < args.val_fraction < 1:
        sys.exit("error: --val_fraction must be between 0 and 1")
    if args.block_size < 8:
        sys.exit("error: --block_size must be at least 8")
    if args.num_conversations < 0:
        sys.exit("error: --num_conversations must be at least 1 (or 0: all)")


def tokenize_into(paths: dict[str, list[Path]], conversations, enc, args: SimpleNamespace) -> dict:
    """Each conversation through the chat template into its split's token, mask and start files
    (paths[split], in FILES' order), on disk when this returns. Conversation i goes to val when
    floor((i+1)f) > floor(i f). Returns each split's counts."""
    f = Fraction(str(args.val_fraction))
    counts = {s: dict.fromkeys(("conversations", "tokens", "target_tokens", "cut", "dropped"), 0)
              for s in SPLITS}
    with ExitStack() as files:
        handles = {s: [files.enter_context(open(p, "wb")) for p in paths[s]] for s in SPLITS}
        for i, messages in enumerate(conversations):
            split = "val" if math.floor((i + 1) * f) > math.floor(i * f) else "train"
            c = counts[split]
            ids, mask, left_out = chat_template.encode_fit(enc, messages, args.block_size + 1)
            if not ids:
                c["dropped"] += 1
                continue
            c["cut"] += left_out > 0
            tokens, target, starts = handles[split]
            starts.write(np.array([c["tokens"]], dtype=np.int64).tobytes())
            tokens.write(np.array(ids, dtype=np.uint16).tobytes())
            target.write(np.array(mask, dtype=np.uint8).tobytes())
            c["conversations"] += 1
            c["tokens"] += len(ids)
            c["target_tokens"] += sum(mask)
        for fh in (h for hs in handles.values() for h in hs):  # on disk before the renames
            fh.flush()
            os.fsync(fh.fileno())
    return counts


def prepare(args: SimpleNamespace) -> dict:
    t0 = time.time()
    check_settings(args)
    out = Path(args.data_dir or Path("data") / (args.hub or "chat"))
    final = [out / f.format(s) for s in SPLITS for f in FILES] + [out / "meta.json"]
    if os.path.exists(out) and not os.path.isdir(out):  # os.path's: a long name is no traceback
        sys.exit(f"error: --data_dir {out} is a file, not a folder")
    if not args.overwrite and any(os.path.exists(p) for p in final):
        sys.exit(f"error: {out} already holds prepared data; pass --overwrite to replace it")
    enc = tokenizer.gpt2()
    skipped = [0]
    conversations = ((m for path in args.input for m in chat_template.read_jsonl(path))
                     if args.input else
                     hub_conversations(args.hub, args.hub_subset or None, skipped))
    conversations = islice(conversations, args.num_conversations or None)
    source = args.input or [f"hf://datasets/{HUB[args.hub][0]}/"
                            f"{args.hub_subset or HUB[args.hub][1] or ''}"]

    tmp = {p: p.with_name(p.name + ".tmp") for p in final}
    with writing(out, tmp):
        counts = tokenize_into({s: [tmp[out / name.format(s)] for name in FILES] for s in SPLITS},
                               conversations, enc, args)
        for s in SPLITS:
            if counts[s]["conversations"] == 0:
                sys.exit(f"error: the {s} split holds no conversation ({counts[s]['dropped']} "
                         f"too long for {args.block_size + 1} tokens): give more conversations, "
                         f"another --val_fraction or a larger --block_size")
        meta = {
            "kind": "chat", "chat_template": chat_template.NAME, "tokenizer": "gpt2",
            "vocab_size": enc.n_vocab, "eot_token": chat_template.EOT, "dtype": "uint16",
            "block_size": args.block_size, "source": source,
            "split": {"method": "conversations", "val_fraction": args.val_fraction}, **counts,
            "skipped": skipped[0], "args": dict(vars(args)),
            "tiktoken": tiktoken.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.time() - t0, 1),
        }
        tmp[out / "meta.json"].write_text(json.dumps(meta, indent=2) + "\n")
        (out / "meta.json").unlink(missing_ok=True)  # while it is missing the folder is incomplete
        for p in final:  # meta.json last
            os.replace(tmp[p], p)
    return meta


def main(argv: list[str] | None = None) -> dict:
    # a copy of the module's globals, so the defaults stay for the next call (the tests call main)
    argv = sys.argv[1:] if argv is None else argv
    args = SimpleNamespace(**configure(dict(globals()), argv, verbose=False))
    meta = prepare(args)
    out = args.data_dir or Path("data") / (args.hub or "chat")
    for s in SPLITS:
        c = meta[s]
        print(f"{out}/{s}.bin: {c['conversations']:,} conversations, {c['tokens']:,} tokens "
              f"({c['target_tokens']:,} in the loss); {c['cut']:,} cut at a turn boundary, "
              f"{c['dropped']:,} dropped "
              f"(first exchange over {args.block_size + 1} tokens)")
    if meta["skipped"]:
        print(f"skipped {meta['skipped']:,} hub rows that break the template's rules")
    print(f"{meta['seconds']}s")
    return meta


if __name__ == "__main__":
    main()
