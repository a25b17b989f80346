"""
Evaluate a checkpoint: perplexity on held-out text, HellaSwag and LAMBADA, zero-shot.

    python eval.py --out_dir=out-option-a                        # val, hellaswag, lambada
    python eval.py --out_dir=out-smoke --tasks=hellaswag --limit=200
    python eval.py --ckpt=out-option-a/ckpt.pt --files=a.txt,b.jsonl --tasks=val --json=results.json
    python eval.py --out_dir=out-sft-smoke --tasks=chat          # the fine-tuning data's val split

Every task reduces to one primitive, the log-likelihood of a continuation given a context (as in
EleutherAI's lm-evaluation-harness): run context + continuation through the model once and sum
log p(token) over the continuation's tokens, noting whether each was also the greedy choice.

- val: loss and perplexity on a prepared split (data_dir/val.bin) or on raw .txt / .jsonl files,
  with a sliding window for anything longer than the context.
- hellaswag (Zellers et al. 2019): pick the most likely of 4 endings, by the sum of its token
  log-probabilities (acc) and by their mean (acc_norm), as build-nanogpt scores it.
- lambada (Paperno et al. 2016; OpenAI's detokenised test set): the passage's last word must come
  out of greedy decoding token for token (acc); ppl is exp of the mean negative log-likelihood of
  the word, as lm-evaluation-harness reports it.
- chat: on held-out conversations in tokenizer/chat_template.py's form, the mean loss per assistant
  token (what fine-tuning trains and train.py logs as its val loss), and the share of replies to
  each conversation's first user turn that end by themselves (greedy, <|endoftext|> within
  max_new_tokens).

train.py imports load_hellaswag and hellaswag_accuracy to log HellaSwag beside the loss.
Results are deterministic: a fixed order, no sampling, the same batches on every run.
"""

import hashlib
import json as jsonlib  # 'json' is the name of a setting below
import math
import os
import sys
import time
import urllib.request

import numpy as np
import torch
from tqdm import tqdm

import common
from common import (
    check_data,
    check_json_path,
    die,
    load_meta,
    load_model,
    setup,
    write_json,
)
from tokenizer import chat_template

# ---------------------------------------------------------------- settings (--key=value)
out_dir = "out"  # the checkpoint is out_dir/ckpt.pt ...
ckpt = ""  # ... unless this names a checkpoint file
tasks = "val,hellaswag,lambada"
data_dir = ""  # val, chat: prepared data holding val.bin; "" = the data_dir the checkpoint was
               # trained on
files = ""  # val: comma-separated .txt (one document each) / .jsonl ("text" per line) files
            # instead of val.bin; chat: .jsonl files of {"messages": [...]} instead of the
            # fine-tuning data's val split
max_new_tokens = 64  # chat: a reply must end (<|endoftext|>) within this many tokens to count as
                     # ending by itself
stride = 0  # val: a sliding window advances this many tokens; 0 = block_size // 2
hellaswag_file = ""  # a local copy of HellaSwag's val set; "" = the official file, downloaded once
                     # into the cache
lambada_file = ""  # a local copy of LAMBADA (OpenAI's test set); "" = downloaded once to the cache
limit = 0  # at most this many examples per task (val: windows of val.bin, or documents of files;
           # chat: conversations); 0 = all
batch_size = 16  # sequences per forward pass
device = "auto"  # auto: the GPU when there is one, else the CPU; or cpu, cuda, cuda:N
dtype = "auto"  # auto | float32 | bfloat16 | float16 (the transformer; log-probabilities are
                # always fp32)
json = ""  # also write the results as JSON to this path ('-' = stdout)
# -----------------------------------------------------------------------------

# the settings only some tasks read: one set for none of the chosen tasks is refused, since a run
# that ignores what it was told (--files with --tasks=hellaswag) reports results nobody asked for
_READ_BY = {"data_dir": ("val", "chat"), "files": ("val", "chat"), "max_new_tokens": ("chat",),
            "stride": ("val",), "hellaswag_file": ("hellaswag",), "lambada_file": ("lambada",)}
_DEFAULTS = {k: globals()[k] for k in _READ_BY}

_LOGITS_CHUNK = 1024  # scored positions per lm_head call: 1024 x 50257 fp32 logits are 200 MB


# ---------------------------------------------------------------- the primitive

@torch.no_grad()
def loglikelihoods(model, requests: list[tuple], batch_size: int, device: str, ctx,
                   desc: str | None = None) -> list[tuple[float, int, bool]]:
    """For each request (tokens, n): the summed log-probability of the last n tokens of `tokens`
    given everything before them, n, and whether greedy decoding would have produced all n.

    `tokens` (a list or 1-D array) is at most block_size + 1 long. Requests are batched longest
    first, so a batch wastes little padding, and results come back in the order given. Padding goes
    on the right, where causal attention keeps it from touching the real positions, and is never
    scored. The transformer runs under `ctx` (autocast); the lm_head and log-softmax run in fp32,
    since bf16 logits carry ~3 significant digits, too coarse to rank endings whose log-likelihoods
    differ by a few hundredths.
    """
    was_training = model.training
    model.eval()
    order = sorted(range(len(requests)),
                   key=lambda i: -len(requests[i][0]))  # stable: deterministic
    results: list = [None] * len(requests)
    batches = range(0, len(order), batch_size)
    for b in tqdm(batches, desc=desc, disable=desc is None, leave=False, file=sys.stderr):
        rows = order[b:b + batch_size]
        T = max(len(requests[i][0]) for i in rows) - 1
        x = torch.zeros(len(rows), T, dtype=torch.long)
        y = torch.full((len(rows), T), -1, dtype=torch.long)  # -1: not scored
        for r, i in enumerate(rows):
            tokens, n = requests[i]
            tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
            L = len(tokens) - 1
            x[r, :L] = tokens[:-1]
            y[r, L - n:L] = tokens[L - n + 1:]
        x, y = x.to(device), y.to(device)
        with ctx:
            h = model.hidden_states(x)
        scored = y != -1
        h, targets = h[scored].float(), y[scored]  # (N, C), row by row
        logp, greedy = [], []
        for c in range(0, targets.numel(), _LOGITS_CHUNK):
            logits = model.logits(h[c:c + _LOGITS_CHUNK]).float()
            t = targets[c:c + _LOGITS_CHUNK]
            # log p = logit - logsumexp: no [N x vocab] log-softmax tensor is written
            logp.append((logits.gather(1, t[:, None]).squeeze(1)
                         - torch.logsumexp(logits, dim=-1)).double())
            greedy.append(logits.argmax(dim=-1) == t)
        counts = scored.sum(dim=1).tolist()
        for i, lp, g, n in zip(rows, torch.cat(logp).split(counts),
                               torch.cat(greedy).split(counts), counts, strict=True):
            results[i] = (lp.sum().item(), n, bool(g.all()))
    model.train(was_training)
    return results


def truncate(context: list[int], continuation: list[int], block_size: int) -> tuple[list[int], int]:
    """(tokens, n) for the primitive: context + continuation, cut from the left to block_size + 1
    tokens as lm-evaluation-harness does, so the continuation stays whole whenever it can."""
    tokens = (context + continuation)[-(block_size + 1):]
    return tokens, min(len(continuation), len(tokens) - 1)


# ---------------------------------------------------------------- perplexity

def sliding_windows(tokens, block_size: int, stride: int) -> list[tuple]:
    """Cover tokens[1:] with requests of at most block_size + 1 tokens, each token scored once.

    tokens[0] is context only (the EOT that precedes every document in training). The first window
    scores all of its tokens; each later one advances by `stride` and scores only its new tokens,
    which so see at least block_size - stride tokens of context (stride = block_size: disjoint
    windows, fastest, least context).
    """
    if len(tokens) < 2:
        return []  # nothing to score
    end = min(block_size + 1, len(tokens))
    windows = [(tokens[:end], end - 1)]
    while end < len(tokens):
        new_end = min(end + stride, len(tokens))
        windows.append((tokens[max(0, new_end - block_size - 1):new_end], new_end - end))
        end = new_end
    return windows


def perplexity(model, windows: list[tuple], batch_size: int, device: str, ctx,
               desc: str | None = None) -> dict:
    """Mean loss (nats per token) and perplexity over every token the windows score."""
    scores = loglikelihoods(model, windows, batch_size, device, ctx, desc)
    tokens = sum(n for _, n, _ in scores)
    loss = -sum(lp for lp, _, _ in scores) / max(tokens, 1)
    return {"loss": loss, "ppl": math.exp(loss), "tokens": tokens}


def read_documents(path: str) -> list[str]:
    """The documents of a file, as prepare.py reads them: a .txt file is one document, a .jsonl
    file one per line in its "text" field."""
    if not os.path.isfile(path):
        die(f"eval file '{path}' {'is a folder' if os.path.isdir(path) else 'not found'}: "
            f"give existing .txt or .jsonl files in --files")
    if not path.endswith((".txt", ".jsonl")):
        die(f"eval file '{path}' is neither .txt (one document) nor .jsonl "
            "(a \"text\" field per line)")
    if path.endswith(".jsonl"):
        return [row["text"] for row in read_jsonl(path, "eval", {"text": str})]
    return [read_text(path)]


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        die(f"{path} is not UTF-8 text (bad byte at offset {e.start})")


# ---------------------------------------------------------------- the tasks' files

# The canonical files (url, sha256, examples), fetched on first use into cache_dir(). LAMBADA's
# sha256 is the checksum older lm-evaluation-harness releases pinned for this file. HellaSwag's
# repository publishes none, and no byte-exact copy was at hand to compute one (docs/eval.md), so
# its download is checked by content instead: exactly the 10,042 validation examples, each one a
# HellaSwag example.
DOWNLOADS = {
    "hellaswag": (
        "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
        None, 10042),
    "lambada": ("https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",
                "4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226", 5153),
}


def cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                        "smallgpt")


def task_file(what: str, path: str) -> str:
    """`path` when given, else the canonical file for `what`, downloaded into the cache on first
    use: to a temporary name, checked, then renamed, so the cache never holds half a file."""
    if path:
        return path
    url, sha256, examples = DOWNLOADS[what]
    path = os.path.join(cache_dir(), os.path.basename(url))
    if os.path.isfile(path):
        return path
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f, \
                tqdm(total=int(r.headers.get("Content-Length") or 0) or None, unit="B",
                     unit_scale=True, desc=f"downloading {what}", leave=False) as bar:
            while chunk := r.read(1 << 16):
                bar.update(f.write(chunk))
    except OSError as e:  # no network (URLError), a timeout, a full disk
        if os.path.exists(tmp):
            os.remove(tmp)
        die(f"cannot download {what} from {url} ({getattr(e, 'reason', None) or e}); "
            f"offline, point --{what}_file at a local copy")
    with open(tmp, "rb") as f:
        data = f.read()
    got = hashlib.sha256(data).hexdigest()
    rows = sum(1 for line in data.split(b"\n") if line.strip())
    if (sha256 and got != sha256) or rows != examples:
        os.remove(tmp)
        die(f"the {what} file downloaded from {url} is not the expected one ({rows} examples, "
            f"sha256 {got}; expected {examples}{', ' + sha256 if sha256 else ''}); "
            f"point --{what}_file at a good copy")
    os.replace(tmp, path)
    return path


def read_jsonl(path: str, what: str, fields: dict) -> list[dict]:
    """Rows of a task's .jsonl file, each checked to have `fields` ({name: type}); one-line
    errors."""
    if not os.path.isfile(path):
        die(f"{what} file '{path}' {'is a folder' if os.path.isdir(path) else 'not found'}: "
            f"see docs/eval.md for where it comes from, or point --{what}_file at a copy")
    rows = []
    # not splitlines: JSON may hold a raw U+2028
    for n, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = jsonlib.loads(line)
        except jsonlib.JSONDecodeError as e:
            die(f"{path} line {n}: not valid JSON ({e.msg}); is this the {what} .jsonl file?")
        if not isinstance(row, dict) or not all(isinstance(row.get(k), t)
                                                for k, t in fields.items()):
            die(f"{path} line {n}: not a {what} example (needs fields {', '.join(fields)})")
        rows.append(row)
    if not rows:
        die(f"{what} file '{path}' holds no examples")
    return rows


# ---------------------------------------------------------------- HellaSwag

def load_hellaswag(path: str = "") -> list[dict]:
    """HellaSwag examples {ctx, endings (4 strings), label (0-3)} from `path` (a local copy) or the
    official hellaswag_val.jsonl (downloaded on first use), which has the same three fields."""
    path = task_file("hellaswag", path)
    rows = read_jsonl(path, "hellaswag", {"ctx": str, "endings": list, "label": int})
    for n, row in enumerate(rows, 1):
        if len(row["endings"]) != 4 or not 0 <= row["label"] < 4:
            die(f"{path} example {n}: a HellaSwag example has 4 endings and a label 0-3")
    return rows


def hellaswag_accuracy(model, enc, examples: list[dict], device: str, ctx,
                       limit: int | None = None, batch_size: int = 16,
                       progress: bool = False) -> dict:
    """Zero-shot HellaSwag on the first `limit` examples (None or 0: all).

    Completion style, as build-nanogpt does it: the context, then each ending with a leading space;
    the prediction is the ending with the highest summed log-probability (acc) or the highest mean
    per token (acc_norm, which does not penalise long endings). acc_norm_chars divides by the
    ending's length in characters instead, as lm-evaluation-harness's acc_norm does, so the two
    tools can be compared figure for figure (docs/eval.md). `model` is the bare GPT (not the DDP or
    torch.compile wrapper); its train/eval mode is restored on return. Chance is 0.25.
    """
    examples = examples[:limit] if limit else examples
    block_size = model.config.block_size
    requests = []
    for ex in examples:
        context = enc.encode_ordinary(ex["ctx"])
        requests += [truncate(context, enc.encode_ordinary(" " + e), block_size)
                     for e in ex["endings"]]
    scores = loglikelihoods(model, requests, batch_size, device, ctx,
                            "hellaswag" if progress else None)
    acc = acc_norm = acc_norm_chars = 0
    for k, ex in enumerate(examples):
        four = scores[4 * k:4 * k + 4]
        sums = [lp for lp, _, _ in four]
        means = [lp / n for lp, n, _ in four]
        per_char = [lp / max(len(e), 1)  # "" is no ending
                    for (lp, _, _), e in zip(four, ex["endings"], strict=True)]
        # first of equals wins: deterministic
        acc += max(range(4), key=sums.__getitem__) == ex["label"]
        acc_norm += max(range(4), key=means.__getitem__) == ex["label"]
        acc_norm_chars += max(range(4), key=per_char.__getitem__) == ex["label"]
    n = max(len(examples), 1)
    return {"acc": acc / n, "acc_norm": acc_norm / n, "acc_norm_chars": acc_norm_chars / n,
            "n": len(examples)}


# ---------------------------------------------------------------- LAMBADA

def load_lambada(path: str = "") -> list[dict]:
    """LAMBADA passages {text} from `path` or OpenAI's file (downloaded on first use); the target is
    the last space-separated word."""
    path = task_file("lambada", path)
    rows = read_jsonl(path, "lambada", {"text": str})
    for n, row in enumerate(rows, 1):
        context, _, word = row["text"].rpartition(" ")
        if not context or not word:
            die(f"{path} example {n}: a LAMBADA passage is a context, a space and a last word")
    return rows


def lambada_accuracy(model, enc, examples: list[dict], device: str, ctx, limit: int | None = None,
                     batch_size: int = 16, progress: bool = False) -> dict:
    """Last-word accuracy and perplexity on the first `limit` passages (None or 0: all), scored as
    lm-evaluation-harness's lambada_openai: context = the text before the last space, target =
    " " + the last word, every token of which greedy decoding must reproduce."""
    examples = examples[:limit] if limit else examples
    requests = []
    for ex in examples:
        context, _, word = ex["text"].rpartition(" ")
        requests.append(truncate(enc.encode_ordinary(context), enc.encode_ordinary(" " + word),
                                 model.config.block_size))
    scores = loglikelihoods(model, requests, batch_size, device, ctx,
                            "lambada" if progress else None)
    n = max(len(scores), 1)
    return {"acc": sum(g for _, _, g in scores) / n,
            "ppl": math.exp(-sum(lp for lp, _, _ in scores) / n),
            "n": len(scores)}


# ---------------------------------------------------------------- chat

def chat_conversations(data_dir: str, split: str = "val") -> list[tuple[np.ndarray, np.ndarray]]:
    """(tokens, loss mask) of each conversation of prepare_chat.py's split."""
    tokens = np.fromfile(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16).astype(np.int64)
    mask = np.fromfile(os.path.join(data_dir, f"{split}_mask.bin"), dtype=np.uint8)
    starts = (np.fromfile(os.path.join(data_dir, f"{split}_starts.bin"), dtype=np.int64).tolist()
              + [len(tokens)])
    return [(tokens[a:b], mask[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]


@torch.no_grad()
def chat_scores(model, conversations: list[tuple], device: str, ctx, batch_size: int = 16,
                max_new_tokens: int = 64, progress: bool = False) -> dict:
    """On conversations given as (tokens, loss mask) of at most block_size + 1 tokens
    (tokenizer/chat_template.py):

    - loss: the mean loss per assistant token, one conversation a row (model.py's loss on targets
      that are -1 outside the assistant's words and end-of-turn EOT, times the row's targets,
      summed);
    - ended: the share of greedy replies to the first user turn (the tokens before the first
      target, which end in "Assistant:") that end with EOT within max_new_tokens, as a chat-tuned
      model's turn ends.
    `model` is the bare GPT; its train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for b in tqdm(range(0, len(conversations), batch_size), desc="chat loss", disable=not progress,
                  leave=False, file=sys.stderr):
        x, y = (t.to(device) for t in common.chat_rows(conversations[b:b + batch_size],
                                                       model.config.block_size))
        with ctx:
            loss = model(x, y)[1].float()
        n = int((y != -1).sum())
        total, tokens = total + loss.item() * n, tokens + n
    ended = 0
    for ids, mask in tqdm(conversations, desc="chat replies", disable=not progress, leave=False,
                          file=sys.stderr):
        prompt = torch.tensor([list(ids[:int(np.argmax(mask))])], dtype=torch.long, device=device)
        with ctx:
            reply = model.generate(prompt, max_new_tokens, temperature=0, stop={chat_template.EOT})
        ended += chat_template.EOT in reply[0, prompt.size(1):].tolist()
    model.train(was_training)
    loss = total / max(tokens, 1)
    return {"loss": loss, "ppl": math.exp(loss), "tokens": tokens,
            "ended": ended / max(len(conversations), 1), "n": len(conversations)}


# ---------------------------------------------------------------- the script

def check_tasks(config: dict) -> list[str]:
    """The tasks asked for, and every setting checked against them, before the model is loaded."""
    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    if not task_list:  # else a run that evaluates nothing and exits 0
        die("--tasks is empty: give some of val, hellaswag, lambada, chat "
            "(e.g. --tasks=val,hellaswag)")
    for t in task_list:
        if t not in ("val", "hellaswag", "lambada", "chat"):
            die(f"unknown task '{t}': choose from val, hellaswag, lambada, chat "
                "(e.g. --tasks=val,hellaswag)")
    if files and "val" in task_list and "chat" in task_list:
        die("--files holds text for --tasks=val or conversations for --tasks=chat, not both: "
            "run the two apart")
    for key, readers in _READ_BY.items():
        if config[key] != _DEFAULTS[key] and not set(readers) & set(task_list):
            die(f"--{key} is read by --tasks={' or '.join(readers)} only, and "
                f"--tasks={','.join(task_list)} would ignore it: add {' or '.join(readers)} to "
                f"--tasks, or drop --{key}")
    if files and data_dir:
        die("--files and --data_dir both name what to score, and --files wins: give one of them")
    if max_new_tokens < 1:
        die(f"--max_new_tokens={max_new_tokens}: give at least 1")
    if stride < 0 or limit < 0 or batch_size < 1:
        die("stride and limit must be >= 0 and batch_size >= 1")
    if json and json != "-":
        check_json_path(json)
    return task_list


def val_of_files(model, enc, dev: str, ctx, win_stride: int) -> dict:
    """--tasks=val on --files: each file's loss and perplexity, and the token-weighted aggregate."""
    block_size = model.config.block_size
    windows_of = {}  # every file read and checked before the first is scored
    for path in [p.strip() for p in files.split(",") if p.strip()]:
        docs = read_documents(path)
        docs = docs[:limit] if limit else docs
        windows_of[path] = [w for d in docs if d for w in sliding_windows(
            [enc.eot_token] + enc.encode_ordinary(d), block_size, win_stride)]
        if not windows_of[path]:  # else a perplexity of 1 over 0 tokens
            die(f"no tokens to evaluate in '{path}': it holds no text; give files with text in "
                f"--files")
    per_file = {p: perplexity(model, windows, batch_size, dev, ctx, f"val {os.path.basename(p)}")
                for p, windows in windows_of.items()}
    # the aggregate is token-weighted over all files
    tokens = sum(r["tokens"] for r in per_file.values())
    loss = sum(r["loss"] * r["tokens"] for r in per_file.values()) / max(tokens, 1)
    return {"loss": loss, "ppl": math.exp(loss), "tokens": tokens, "files": per_file}


def val_of_data_dir(model, enc, checkpoint: dict, dev: str, ctx, win_stride: int) -> dict:
    """--tasks=val on a prepared folder's val.bin: --data_dir's, else the checkpoint's."""
    source = data_dir or checkpoint.get("config", {}).get("data_dir", "")
    if not source:
        die("no data for task val: give --data_dir (prepared by prepare.py) or --files")
    check_data(source, ("val",), 0, model.config.vocab_size)  # one-line errors for damaged data
    val = np.memmap(os.path.join(source, "val.bin"), dtype=np.uint16, mode="r")
    # val.bin is one stream of documents, each ending in EOT; an EOT in front gives its
    # first token the context every other document start gets.
    tokens = np.concatenate([np.array([enc.eot_token], dtype=np.uint16), val])
    windows = sliding_windows(tokens, model.config.block_size, win_stride)
    if not windows:
        die(f"no tokens to evaluate in {source}/val.bin: it is empty; prepare the data again "
            f"(prepare.py)")
    windows = windows[:limit] if limit else windows
    return {**perplexity(model, windows, batch_size, dev, ctx, "val"), "data_dir": source}


def chat_of(model, enc, checkpoint: dict, dev: str, ctx) -> dict:
    """--tasks=chat on --files of conversations, or on a folder made by prepare_chat.py."""
    block_size = model.config.block_size
    if files:
        conversations, dropped = [], 0
        for path in [p.strip() for p in files.split(",") if p.strip()]:
            for messages in chat_template.read_jsonl(path):
                # cut at a turn boundary, as prepare_chat.py cuts
                ids, mask, _ = chat_template.encode_fit(enc, messages, block_size + 1)
                conversations += [(np.array(ids), np.array(mask, dtype=np.uint8))] if ids else []
                dropped += not ids
        if not conversations:
            die(f"no conversation in --files={files} fits the model's context of {block_size} "
                f"tokens")
    else:
        source = data_dir or checkpoint.get("config", {}).get("data_dir", "")
        meta = load_meta(source) if source else {}
        if meta.get("kind") != "chat":
            die(f"--tasks=chat scores conversations, and {source or 'the checkpoint'} holds none "
                f"(a base model's pretraining text): give --files of held-out "
                f"{{\"messages\": ...}} JSON Lines, or --data_dir made by prepare_chat.py")
        if meta["block_size"] > block_size:
            die(f"{source} holds conversations of up to {meta['block_size'] + 1} tokens, more than "
                f"this model's context takes: give --files, or prepare_chat.py --block_size "
                f"{block_size}")
        conversations, dropped = chat_conversations(source), 0
    conversations = conversations[:limit] if limit else conversations
    results = chat_scores(model, conversations, dev, ctx, batch_size, max_new_tokens, progress=True)
    return {**results, "dropped": dropped}


METRICS = ("loss", "ppl", "acc", "acc_norm", "acc_norm_chars", "ended")  # what the table shows


def print_table(results: dict, seconds: float, log) -> None:
    print(f"\n{'task':<10} {'metric':<14} {'value':>10}  {'n':>9}", file=log)
    for task, r in results.items():
        for metric in [k for k in r if k in METRICS]:
            if metric == "ended":
                n, unit = r["n"], "replies"
            else:
                n, unit = r.get("tokens", r.get("n")), "tokens" if "tokens" in r else "examples"
            value = f"{r[metric]:.2f}" if metric == "ppl" else f"{r[metric]:.4f}"
            print(f"{task:<10} {metric:<14} {value:>10}  {n:>9,} {unit}", file=log)
        for path, fr in r.get("files", {}).items():
            print(f"  {path}: loss {fr['loss']:.4f}, ppl {fr['ppl']:.2f}, {fr['tokens']:,} tokens",
                  file=log)
    print(f"({seconds:.1f}s)", file=log)


def main() -> dict:
    from configurator import configure, summary

    config = configure(globals(), sys.argv[1:], verbose=False)
    log = sys.stderr if json == "-" else sys.stdout  # with --json=- stdout holds the JSON alone
    print(summary(config), file=log)
    task_list = check_tasks(config)
    dev, _, precision, ctx, _ = setup(device, dtype)

    model, enc, checkpoint = load_model(ckpt or out_dir, dev)
    block_size = model.config.block_size
    if stride > block_size:  # a window scores at most block_size new tokens
        die(f"--stride={stride} is larger than the model's block_size: give a stride in "
            f"[1, {block_size}] (or 0 for block_size // 2)")
    win_stride = stride or max(block_size // 2, 1)
    print(f"checkpoint {ckpt or out_dir}: iter {checkpoint.get('iter_num', '?')}, "
          f"{model.num_params():,} parameters, block_size {block_size}; {dev}, {precision}",
          file=log)

    results: dict = {}
    t0 = time.time()
    if "val" in task_list:
        results["val"] = (val_of_files(model, enc, dev, ctx, win_stride) if files
                          else val_of_data_dir(model, enc, checkpoint, dev, ctx, win_stride))
    if "chat" in task_list:
        results["chat"] = chat_of(model, enc, checkpoint, dev, ctx)
    if "hellaswag" in task_list:
        results["hellaswag"] = hellaswag_accuracy(model, enc, load_hellaswag(hellaswag_file), dev,
                                                  ctx, limit, batch_size, progress=True)
    if "lambada" in task_list:
        results["lambada"] = lambada_accuracy(model, enc, load_lambada(lambada_file), dev, ctx,
                                              limit, batch_size, progress=True)
    seconds = time.time() - t0
    print_table(results, seconds, log)

    report = {"checkpoint": ckpt or out_dir, "iter_num": checkpoint.get("iter_num"),
              "params": model.num_params(), "settings": config, "results": results,
              "seconds": round(seconds, 2)}
    if json == "-":
        print(jsonlib.dumps(report, indent=2))
    elif json:
        write_json(json, report)
        print(f"wrote {json}", file=log)
    return report


if __name__ == "__main__":
    main()
