"""Tests for supervised fine-tuning on conversations, end to end: the chat template
(tokenizer/chat_template.py), the data (prepare_chat.py), the mask in the loss, train.py's init_from
and conversation batches (resume, DDP, the time budget), eval.py --tasks=chat, chat.py on a
chat-tuned checkpoint and the Hugging Face export's chat_template.
The real conversations come from ../shared/data/chat; the base model is conftest's smoke
checkpoint."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import common
import prepare_chat
from launch import (
    SHARED,
    file_size_limit,
    in_background,
    one_line_error,
    run_in_one_process,
    run_in_process,
    run_script,
)
from model import GPT, GPTConfig
from tokenizer import chat_template

CHAT = SHARED / "data" / "chat"
TRAIN_FILES = [CHAT / "hh_helpful_base_test.jsonl", CHAT / "chitchat.jsonl"]
# never trained on here: the measurement's conversations
HELD_OUT = CHAT / "hh_helpful_online_test.jsonl"
enc = common.get_tokenizer()
EOT = chat_template.EOT


def conversations(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n"
                            for row in rows))
    return path


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------- the template

def test_template_tokens_are_the_whole_rendered_string_and_the_mask_is_the_assistant_text():
    """On every shared conversation: encode() gives exactly the ids of tokenizing render()'s text
    with <|endoftext|> as the special token (what transformers does), decodes back to that text,
    and its mask selects exactly each reply (from the space after 'Assistant:') and the EOT that
    ends it."""
    rows = [m for path in (*TRAIN_FILES, HELD_OUT) for m in conversations(path)]
    assert len(rows) == 2344 + 9886 + 1136
    for messages in rows:
        ids, mask = chat_template.encode(enc, messages)
        text = chat_template.render(messages)
        assert (ids == enc.encode(text, allowed_special={"<|endoftext|>"})
                and enc.decode(ids) == text)
        assert enc.decode([t for t, m in zip(ids, mask, strict=True) if m]) == "".join(
            f" {m['content']}<|endoftext|>" for m in messages if m["role"] == "assistant")
    messages = [{"role": "system", "content": "Be brief."}, user("Hi!"), assistant("Hello."),
                user("Who are you?"), assistant("A model.")]
    assert chat_template.render(messages) == (
        "<|endoftext|>Be brief.\n\nUser: Hi!\nAssistant: Hello.<|endoftext|>"
        "User: Who are you?\nAssistant: A model.<|endoftext|>")
    # without a system message the header is the first line; the prompt is a prefix of the full
    # conversation's ids
    ids, _ = chat_template.encode(enc, messages[1:])
    prompt = chat_template.prompt(enc, messages[1:4])
    assert enc.decode(prompt) == f"<|endoftext|>{chat_template.HEADER}\n\nUser: Hi!\n" \
                                 "Assistant: Hello.<|endoftext|>User: Who are you?\nAssistant:"
    assert ids[:len(prompt)] == prompt


def test_typed_endoftext_is_text_not_the_token():
    ids, mask = chat_template.encode(enc, [user("say <|endoftext|>"), assistant("<|endoftext|>")])
    assert ids.count(EOT) == 2  # the start and the end of the reply; typed ones are ordinary text
    assert enc.decode(ids).count("<|endoftext|>") == 4


def test_a_long_conversation_is_cut_at_a_turn_boundary():
    long = [user("a " * 20), assistant("b " * 20), user("c " * 20), assistant("d " * 30),
            user("e"), assistant("f")]
    whole = len(chat_template.encode(enc, long)[0])
    two = len(chat_template.encode(enc, long[:4])[0])
    ids, mask, left_out = chat_template.encode_fit(enc, long, whole - 1)
    assert left_out == 1 and (ids, mask) == chat_template.encode(enc, long[:4]) and len(ids) == two
    assert chat_template.encode_fit(enc, long, whole)[2] == 0
    # not even the first exchange fits
    assert chat_template.encode_fit(enc, long, 20) == ([], [], 3)


def test_the_mask_is_exact_in_the_loss():
    """model(x, y) on chat_rows' targets equals a hand-computed mean of -log p over the assistant's
    tokens (and their EOT) only: changing a user token's target changes nothing, changing an
    assistant token's does."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, loss_chunk=7)).eval()
    messages = [user("What is two and two?"), assistant("Four."), user("And three?"),
                assistant("Five, or six.")]
    ids, mask = chat_template.encode(enc, messages)
    tokens, mask = np.array(ids), np.array(mask, dtype=np.uint8)
    x, y = common.chat_rows([(tokens, mask)], 64)
    with torch.no_grad():
        logp = F.log_softmax(model.logits(model.hidden_states(x))[0].float(), dim=-1)
        loss = model(x, y)[1].item()
    # by hand: position i predicts token i + 1, which counts when it belongs to a reply or ends one
    terms = [-logp[i, tokens[i + 1]].item() for i in range(len(tokens) - 1) if mask[i + 1]]
    assert (len(terms) == int(mask.sum()) > 0
            and loss == pytest.approx(sum(terms) / len(terms), rel=1e-5))
    first_user = ids.index(enc.encode_ordinary(" What")[0])
    first_reply = int(np.argmax(mask))
    for position, changes in ((first_user, False), (first_reply, True),
                              (len(ids) - 1, True)):  # the last: EOT
        other = tokens.copy()
        other[position] = 123
        _, y2 = common.chat_rows([(other, mask)], 64)
        with torch.no_grad():
            assert (model(x, y2)[1].item() != loss) == changes


# ---------------------------------------------------------------- the data

@in_background
def chat_data(tmp_path_factory, need) -> Path:
    """The HH-RLHF helpful-base test conversations and Chitchat, for config/sft_smoke.py's 128-token
    context."""
    out = tmp_path_factory.mktemp("chat") / "chat_smoke"
    run_script("prepare_chat.py", "--input", *map(str, TRAIN_FILES), f"--data_dir={out}",
               "--block_size=128")
    return out


def test_prepare_chat_writes_whole_conversations_tokens_mask_and_counts(chat_data):
    meta = json.loads((chat_data / "meta.json").read_text())
    assert ((meta["kind"], meta["chat_template"], meta["block_size"])
            == ("chat", chat_template.NAME, 128))
    rows = [m for path in TRAIN_FILES for m in conversations(path)]
    for split in ("train", "val"):
        tokens = np.fromfile(chat_data / f"{split}.bin", dtype=np.uint16)
        mask = np.fromfile(chat_data / f"{split}_mask.bin", dtype=np.uint8)
        starts = np.fromfile(chat_data / f"{split}_starts.bin", dtype=np.int64)
        c = meta[split]
        assert len(tokens) == len(mask) == c["tokens"] and len(starts) == c["conversations"]
        assert int(mask.sum()) == c["target_tokens"] and np.all(tokens[starts] == EOT)
        lengths = np.diff(np.append(starts, len(tokens)))
        assert lengths.max() <= 129  # every conversation fits the context with its last target
        assert (np.all(tokens[starts + lengths - 1] == EOT)
                and np.all(mask[starts + lengths - 1] == 1))  # ends a reply
    # every 20th conversation is val; with the dropped ones counted, all are accounted for
    n_val = sum(meta["val"][k] for k in ("conversations", "dropped"))
    assert (n_val == len(rows) // 20
            and n_val + sum(meta["train"][k] for k in ("conversations", "dropped")) == len(rows))
    # the val split's first conversation is input conversation 19 (the first i with
    # floor((i+1)/20) > floor(i/20)), cut at a turn boundary if need be
    val = np.fromfile(chat_data / "val.bin", dtype=np.uint16)
    starts = np.fromfile(chat_data / "val_starts.bin", dtype=np.int64)
    ids, _, _ = chat_template.encode_fit(enc, rows[19], 129)
    assert val[starts[0]:starts[1]].tolist() == ids
    assert meta["train"]["cut"] > 0 and meta["train"]["dropped"] > 0


@pytest.mark.parametrize("line, expected", [
    ("not json", "line 2: not valid JSON"),
    ('{"text": "hi"}', "line 2: no 'messages' field"),
    ('{"messages": []}', "line 2: 'messages' must be a non-empty list"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "line 2: message 1 has role 'bot'"),
    ('{"messages": [{"role": "user", "content": "hi"}]}',
     "line 2: the conversation must end with the assistant's"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}',
     "line 2: message 2 is user, expected assistant"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}',
     "line 2: message 2 is system, expected assistant: a system message may only come first"),
    ('{"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "b"}]}',
     "line 2: message 1 (user) has empty content"),
])
def test_prepare_chat_bad_input_is_a_one_line_error_naming_file_and_line(tmp_path, line, expected):
    good = json.dumps({"messages": [user("Hi"), assistant("Hello")]})
    path = write_jsonl(tmp_path / "bad.jsonl", [good, line, good])
    message = one_line_error(prepare_chat.main, ["--input", str(path),
                                                 f"--data_dir={tmp_path / 'out'}"])
    assert f"{path} {expected}" in message
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_prepare_chat_out_below_a_file_is_one_line(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl",
                       [json.dumps({"messages": [user("Hi"), assistant("Hello")]})])
    (tmp_path / "notes.txt").write_text("x")
    message = one_line_error(prepare_chat.main, ["--input", str(path),
                                                 f"--data_dir={tmp_path / 'notes.txt' / 'sub'}"])
    assert "is a file, not a folder" in message and "--data_dir" in message


def test_prepare_chat_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """Writes failing midway (a file-size limit standing in for a full disk): one line, no .tmp, no
    folder."""
    with file_size_limit(16 * 1024):
        message = one_line_error(prepare_chat.main, ["--input", *map(str, TRAIN_FILES),
                                                     f"--data_dir={tmp_path / 'out'}",
                                                     "--block_size=128"])
    assert "(File too large)" in message and "free space or give another --data_dir" in message
    assert list(tmp_path.iterdir()) == []


def test_prepare_chat_hub_subset_with_input_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl",
                       [json.dumps({"messages": [user("Hi"), assistant("Hello")]})])
    message = one_line_error(prepare_chat.main, ["--input", str(path), "--hub_subset", "all",
                                                 f"--data_dir={tmp_path / 'out'}"])
    assert ("--hub_subset" in message and "would ignore" in message
            and not (tmp_path / "out").exists())


@pytest.mark.parametrize("args,words", [
    (["--hub=nope"], ["--hub='nope'", "hh-rlhf, smoltalk"]),
    (["--hub=smoltalk", "--input", "a.jsonl"], ["--hub", "not allowed with --input"]),
    (["--block_size=big"], ["'block_size'", "expects int"]),
    (["--input=a.jsonl", "--num_conversations=-2"], ["--num_conversations must be at least 1"]),
    (["--data_dri=x"], ["did you mean 'data_dir'"]),
    ([], ["give --input"]),
])
def test_prepare_chat_bad_settings_are_one_line(args, words):
    message = one_line_error(prepare_chat.main, args)
    assert all(w in message for w in words), message


def test_prepare_chat_keeps_earlier_data_when_it_fails(chat_data, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"messages": []}'])
    before = {p.name: p.read_bytes() for p in chat_data.iterdir()}
    message = one_line_error(prepare_chat.main, ["--input", str(bad), f"--data_dir={chat_data}",
                                                 "--overwrite"])
    assert "must be a non-empty list" in message
    assert {p.name: p.read_bytes() for p in chat_data.iterdir()} == before


class FakeDatasets:
    def __init__(self, loader):
        self.load_dataset = loader


def test_hub_smoltalk_and_hh_rlhf_through_the_datasets_streaming_api(tmp_path, monkeypatch):
    import datasets
    smol = [{"messages": m} for m in conversations(CHAT / "chitchat.jsonl")[:60]]
    smol[3]["messages"] = [{"role": "system", "content": "You are kind."}] + smol[3]["messages"]
    hh = [{"chosen": "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: "
                             f"{m['content']}" for m in messages), "rejected": ""}
          for messages in conversations(HELD_OUT)[:60]]
    # does not alternate: skipped, counted
    hh[5]["chosen"] = "\n\nHuman: one\n\nHuman: two\n\nAssistant: three"
    calls = []

    def load_dataset(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        rows = smol if path == "HuggingFaceTB/smoltalk" else hh
        return datasets.Dataset.from_list(rows).to_iterable_dataset(num_shards=2)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    meta = prepare_chat.main(["--hub", "smoltalk", f"--data_dir={tmp_path / 'smol'}"])
    assert calls[0] == ("HuggingFaceTB/smoltalk", ("everyday-conversations",),
                        {"split": "train", "streaming": True})
    assert (meta["train"]["conversations"] + meta["val"]["conversations"] == 60
            and meta["skipped"] == 0)
    train = np.fromfile(tmp_path / "smol" / "train.bin", dtype=np.uint16)
    # the system message is the header
    assert "<|endoftext|>You are kind.\n\nUser:" in enc.decode(train.tolist())
    prepare_chat.main(["--hub", "smoltalk", "--hub_subset", "all",
                       f"--data_dir={tmp_path / 'all'}"])
    assert calls[1][1] == ("all",)
    meta = prepare_chat.main(["--hub", "hh-rlhf", f"--data_dir={tmp_path / 'hh'}"])
    assert calls[2] == ("Anthropic/hh-rlhf", (), {"split": "train", "streaming": True})
    prepare_chat.main(["--hub", "hh-rlhf", "--hub_subset", "helpful-base",
                       f"--data_dir={tmp_path / 'hb'}"])
    assert calls[3] == ("Anthropic/hh-rlhf", (),
                        {"split": "train", "streaming": True, "data_dir": "helpful-base"})
    kept_or_dropped = sum(meta[s][k] for s in ("train", "val")
                          for k in ("conversations", "dropped"))
    assert meta["skipped"] == 1 and kept_or_dropped == 59
    # the transcripts came back as the messages they were made from
    held = conversations(HELD_OUT)
    starts = np.fromfile(tmp_path / "hh" / "train_starts.bin", dtype=np.int64)
    tokens = np.fromfile(tmp_path / "hh" / "train.bin", dtype=np.uint16)
    assert tokens[starts[0]:starts[1]].tolist() == chat_template.encode_fit(enc, held[0], 1025)[0]


def test_hub_unreachable_is_a_one_line_error(tmp_path, monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'HuggingFaceTB/smoltalk' on the Hub")

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets(unreachable))
    message = one_line_error(prepare_chat.main, ["--hub", "smoltalk",
                                                 f"--data_dir={tmp_path / 'out'}"])
    assert "cannot reach HuggingFaceTB/smoltalk" in message and "--input" in message
    assert not (tmp_path / "out").exists()


def test_hub_offline_subprocess(tmp_path):
    """The real datasets package with the hub out of reach (HF_HUB_OFFLINE): a one-line error, no
    folder left."""
    # installed: the error must come from the real package finding no hub
    import datasets  # noqa: F401
    out = tmp_path / "out"
    result = run_script("prepare_chat.py", "--hub", "smoltalk", f"--data_dir={out}", check=False,
                        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0 and result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert (result.stderr.startswith("error: cannot reach HuggingFaceTB/smoltalk")
            and "--input" in result.stderr)
    assert not out.exists()


def test_training_batches_start_at_conversations_and_mask_all_but_replies(chat_data):
    """Packed training rows start at a conversation (EOT, the header) and carry on into whole next
    ones, each beginning with EOT and the header the model sees; targets are -1 except on reply
    tokens."""
    header = enc.encode_ordinary(chat_template.HEADER)
    tokens = np.fromfile(chat_data / "train.bin", dtype=np.uint16).astype(np.int64)
    mask = np.fromfile(chat_data / "train_mask.bin", dtype=np.uint8)
    starts = np.fromfile(chat_data / "train_starts.bin", dtype=np.int64)
    x, y = common.get_chat_batch(str(chat_data), "train", 64, 128, torch.Generator().manual_seed(0))
    # the same draw
    picked = torch.randint(len(starts), (64,), generator=torch.Generator().manual_seed(0))
    for row_x, row_y, s in zip(x.numpy(), y.numpy(), starts[picked.numpy()], strict=True):
        assert (row_x.tolist() == tokens[s:s + 128].tolist()
                and row_x[1:1 + len(header)].tolist() == header)
        # the conversations packed after it
        later = [t - s for t in starts[(starts > s) & (starts < s + 128)]]
        assert all(row_x[t] == EOT
                   and row_x[t + 1:t + 1 + len(header)].tolist() == header[:128 - t - 1]
                   for t in later)
        want = np.where(mask[s + 1:s + 129] == 1, tokens[s + 1:s + 129], -1)
        assert row_y[:len(want)].tolist() == want.tolist()
    # val batches: conversations in order, one a row, padding never a target
    x, y = common.get_chat_batch(str(chat_data), "val", 4, 128, None, index=1)
    val = np.fromfile(chat_data / "val.bin", dtype=np.uint16)
    vstarts = np.fromfile(chat_data / "val_starts.bin", dtype=np.int64)
    n = vstarts[5] - vstarts[4]
    assert (x[0, :n - 1].tolist() == val[vstarts[4]:vstarts[5] - 1].tolist()
            and (y[0, n - 1:] == -1).all())
    assert common.get_chat_batch(str(chat_data), "val", 4, 128, None, index=10_000) is None


# ---------------------------------------------------- train.py: init_from, resume, DDP, time budget

# test_train.py's 1-layer, 16-wide model on 32-token windows, tuned on Chitchat's short exchanges
TINY = ["--n_layer=1", "--n_embd=16", "--block_size=32", "--batch_size=4", "--batch_tokens=128",
        "--eval_iters=2", "--log_interval=1", "--warmup_iters=2", "--loss_chunk=512"]


@in_background
def tiny_base(tmp_path_factory, need) -> Path:
    out = tmp_path_factory.mktemp("tiny-base")
    run_script("train.py", "config/smoke.py", *TINY, f"--data_dir={need('owt_data')}",
               f"--out_dir={out}", "--max_iters=2")
    return out


@in_background
def tiny_chat(tmp_path_factory, need) -> Path:
    out = tmp_path_factory.mktemp("tiny-chat") / "chat"
    run_script("prepare_chat.py", "--input", str(CHAT / "chitchat.jsonl"), f"--data_dir={out}",
               "--block_size=32")
    return out


def sft(base: Path, data: Path, out: Path, *args: str, check: bool = True, launcher=()):
    return run_script(*launcher, "train.py", "config/sft_smoke.py", *TINY, f"--init_from={base}",
                      f"--data_dir={data}", f"--out_dir={out}", *args, check=check)


def records(out: Path) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r], [r for r in rows if "val_loss" in r]


@in_background
def sft_resume_runs(tmp_path_factory, need) -> Path:
    """6 steps in one go (one/) and 3 steps + a resume to 6 (two/), on the background thread."""
    out, base, data = tmp_path_factory.mktemp("sft-resume"), need("tiny_base"), need("tiny_chat")
    args = ["--eval_interval=3", "--lr_decay_iters=6"]
    sft(base, data, out / "one", *args, "--max_iters=6")
    sft(base, data, out / "two", *args, "--max_iters=3")
    sft(base, data, out / "two", *args, "--max_iters=6", "--init_from=resume")
    return out


def test_fine_tuning_resumes_exactly(tiny_base, tiny_chat, sft_resume_runs):
    """3 steps + resume + 3 steps == 6 steps from the base weights, float for float; the base
    model's weights start the run, its optimizer and step count do not."""
    out = sft_resume_runs
    (a_train, a_eval), (b_train, b_eval) = records(out / "one"), records(out / "two")
    assert [r["iter"] for r in a_train] == list(range(6))
    assert [(r["loss"], r["lr"]) for r in a_train] == [(r["loss"], r["lr"]) for r in b_train]
    assert [r["val_loss"] for r in a_eval] == [r["val_loss"] for r in b_eval]
    a, b = (common.load_checkpoint(str(out / "one")),
            common.load_checkpoint(str(out / "two")))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["chat_template"] == chat_template.NAME and a["iter_num"] == 6
    # the first eval, before any step, scores the base model's own weights on the val conversations
    base = common.model_from_checkpoint(common.load_checkpoint(str(tiny_base)))
    from eval import chat_conversations, chat_scores
    want = chat_scores(base, chat_conversations(str(tiny_chat))[:2 * 4], "cpu",
                       common.autocast("cpu", "float32"), max_new_tokens=1)["loss"]
    assert a_eval[0]["val_loss"] == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
def test_fine_tuning_under_ddp_and_a_time_budget(tiny_base, tiny_chat, tmp_path):
    """Two gloo ranks split the val conversations and the batch; the logged val loss is still the
    mean over the first eval_iters * batch_size val conversations' assistant tokens. Then a time
    budget ends a resumed run."""
    out = tmp_path / "ddp"
    result = sft(tiny_base, tiny_chat, out, "--batch_size=2", "--eval_iters=3", "--max_iters=4",
                 "--eval_interval=4",
                 launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    assert "2 x cpu" in result.stdout and "stopped (max_iters) at step 4" in result.stdout
    assert f"starting from {tiny_base}'s weights, with a fresh optimizer" in result.stdout
    checkpoint = common.load_checkpoint(str(out))
    _, evals = records(out)
    from eval import chat_conversations, chat_scores
    model = common.model_from_checkpoint(checkpoint)
    want = chat_scores(model, chat_conversations(str(tiny_chat))[:3 * 2], "cpu",
                       common.autocast("cpu", "float32"), max_new_tokens=1)["loss"]
    assert evals[-1]["iter"] == 4 and evals[-1]["val_loss"] == pytest.approx(want, rel=1e-5)
    budget = checkpoint["elapsed"] + 5.0  # room for a few steps (of ~0.1 s) on busy cores
    result = sft(tiny_base, tiny_chat, out, "--init_from=resume", "--batch_size=2",
                 "--eval_iters=3", "--max_iters=0", f"--time_budget_hours={budget / 3600}",
                 "--eval_interval=1000",
                 launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"))
    assert "stopped (time budget)" in result.stdout
    last = common.load_checkpoint(str(out))
    assert last["iter_num"] > 4 and checkpoint["elapsed"] < last["elapsed"] <= budget


BAD_INIT_FROM = [
    ("missing", "is not 'scratch', 'resume' or an existing checkpoint"),
    ("not a checkpoint", "is corrupt or not a checkpoint"),
    ("another architecture", "is another architecture (n_embd=16"),
    ("conversations too long",
     "holds conversations of up to 129 tokens, longer than block_size=32 allows"),
]


@pytest.fixture(scope="module")
def bad_init_from(tiny_base, tiny_chat, chat_data, tmp_path_factory) -> dict:
    """sft() on each case below, one run after another in one new process (torch imported once, not
    once a case): {case: (what the run gave, its out_dir)}."""
    tmp, runs = tmp_path_factory.mktemp("bad-init-from"), {}
    for case, _ in BAD_INIT_FROM:
        path = {"missing": tmp / "nothing",
                "not a checkpoint": write_jsonl(tmp / "x.pt", ["hello"])}.get(case, tiny_base)
        args = ["--n_embd=32"] if case == "another architecture" else []
        data = (chat_data if case == "conversations too long"  # prepared for a 128-token context
                else tiny_chat)
        runs[case] = ["train.py", "config/sft_smoke.py", *TINY, f"--init_from={path}",
                      f"--data_dir={data}", f"--out_dir={tmp / case.replace(' ', '_')}", *args]
    return {case: (result, tmp / case.replace(" ", "_"))
            for case, result in run_in_one_process(runs).items()}


@pytest.mark.parametrize("case, expected", BAD_INIT_FROM)
def test_init_from_must_be_a_checkpoint_of_this_project_and_shape(bad_init_from, case, expected):
    result, out = bad_init_from[case]
    assert result.returncode != 0 and result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert not (out / "ckpt.pt").exists()


# -------------------------------------------------- the chat-tuned model: eval, chat.py, the export

@in_background
def tuned(tmp_path_factory, need) -> Path:
    """config/sft_smoke.py on conftest's smoke checkpoint (40 pretraining steps), made cheaper for
    CI: 60 steps of 512 tokens at smoke's pretraining learning rate (40 steps of 1,024 at
    sft_smoke's left every reply unfinished)."""
    out = tmp_path_factory.mktemp("sft-smoke")
    run_script("train.py", "config/sft_smoke.py", f"--init_from={need('smoke_ckpt')}",
               f"--data_dir={need('chat_data')}", f"--out_dir={out}", "--max_iters=60",
               "--batch_size=4",
               "--batch_tokens=512", "--learning_rate=3e-3", "--min_lr=3e-4", "--warmup_iters=5",
               "--eval_interval=30", "--eval_iters=2")
    return out


def held_out(n: int, block_size: int = 128) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first n HH-RLHF helpful-online conversations that fit the context (none of them trained
    on here)."""
    rows = []
    for messages in conversations(HELD_OUT):
        ids, mask, _ = chat_template.encode_fit(enc, messages, block_size + 1)
        rows += [(np.array(ids), np.array(mask, dtype=np.uint8))] if ids else []
    return rows[:n]


def test_fine_tuning_beats_the_base_model_on_held_out_conversations(smoke_ckpt, tuned):
    """The measurement, shortened for CI: the base model (40 steps of pretraining) against itself
    fine-tuned (the tuned fixture), on the first 40 held-out conversations that fit. Measured once
    on 2 busy CPU cores (docs/sft.md has the longer run): loss per assistant token 8.8952 -> 8.2146,
    replies that end by themselves (greedy, within 32 tokens) 0% -> 100% (100 tuning steps gave
    7.9732 and 97.5%). The margins leave room for noise."""
    from eval import chat_scores
    ctx = common.autocast("cpu", "float32")
    rows = held_out(40)
    base = chat_scores(common.load_model(str(smoke_ckpt))[0], rows, "cpu", ctx, max_new_tokens=32)
    fine = chat_scores(common.load_model(str(tuned))[0], rows, "cpu", ctx, max_new_tokens=32)
    assert base["tokens"] == fine["tokens"] > 1000 and base["n"] == fine["n"] == 40
    assert fine["loss"] < base["loss"] - 0.4
    assert fine["ended"] >= base["ended"] + 0.6


def test_the_checkpoint_is_chat_tuned_and_eval_py_scores_its_val_split_as_training_did(smoke_ckpt,
                                                                                       tuned):
    checkpoint = common.load_checkpoint(str(tuned))
    assert (checkpoint["chat_template"] == chat_template.NAME
            and checkpoint["config"]["init_from"] == str(smoke_ckpt))
    assert common.load_checkpoint(str(smoke_ckpt)).get("chat_template") is None  # the base is not
    _, evals = records(tuned)
    assert ([r["iter"] for r in evals] == [0, 30, 60]
            and evals[-1]["val_loss"] < evals[0]["val_loss"])
    # eval.py on the first 2 x 4 val conversations (the fine-tuning data's val split by default)
    # logs the same loss (eval.py runs in this process: test_eval runs it in one of its own)
    result = run_in_process("eval.py", f"--out_dir={tuned}", "--tasks=chat", "--limit=8",
                            "--batch_size=3", "--max_new_tokens=4", "--json=-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["results"]["chat"]["n"] == 8
    assert report["results"]["chat"]["loss"] == pytest.approx(evals[-1]["val_loss"], rel=1e-5)
    # --files: held-out messages JSON Lines, cut to the context as prepare_chat.py cuts them
    result = run_in_process("eval.py", f"--out_dir={tuned}", "--tasks=chat", f"--files={HELD_OUT}",
                            "--limit=4", "--max_new_tokens=4", "--json=-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["results"]["chat"]
    from eval import chat_scores
    want = chat_scores(common.load_model(str(tuned))[0], held_out(4), "cpu",
                       common.autocast("cpu", "float32"), max_new_tokens=4)
    assert (report["n"] == 4 and report["dropped"] > 0
            and report["loss"] == pytest.approx(want["loss"], rel=1e-5))
    # on a base model there is no fine-tuning data to default to: say so, and what to give instead
    result = run_in_process("eval.py", f"--out_dir={smoke_ckpt}", "--tasks=chat")
    assert (result.returncode != 0
            and result.stderr.startswith("error: --tasks=chat scores conversations"))
    assert "--files" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_chat_py_uses_the_template_on_a_tuned_checkpoint_and_stops_at_the_end_of_turn(tuned):
    messages = ["Hello! Who are you?", "What do you do for fun?"]
    # in this process, piped stdin and all (test_chat runs chat.py's REPL in a process of its own)
    result = run_in_process("chat.py", f"--out_dir={tuned}", "--temperature=0",
                            "--max_new_tokens=24", stdin="\n".join(messages) + "\n")
    assert result.returncode == 0, result.stderr
    assert "a chat-tuned model (template smallgpt-chat-v1)" in result.stderr
    # the reference, by hand: the template's prompt, greedy decoding to EOT, the text before it
    model = common.load_model(str(tuned))[0]
    history, expected, ended = [], "", 0
    for message in messages:
        ids = chat_template.prompt(enc, [*history, user(message)])
        new = model.generate(torch.tensor([ids]), 24, temperature=0)[0, len(ids):].tolist()
        ended += EOT in new
        reply = enc.decode(new[:new.index(EOT)] if EOT in new else new)
        expected += f"User: {message}\nAssistant: {reply.lstrip()}\n"
        history += [user(message), assistant(reply.strip())]
    # at least one reply ended by itself, not at max_new_tokens
    assert result.stdout == expected and ended > 0


def test_the_page_and_terminal_say_which_kind_of_model_is_loaded(smoke_ckpt, tuned, monkeypatch):
    import threading
    import urllib.request

    import chat
    for path, kind in ((tuned, "chat-tuned model"), (smoke_ckpt, "base model")):
        c = chat.Chat(str(path))
        assert c.kind == kind and c.tuned == (kind != "base model")
        httpd = chat.make_server(c, "127.0.0.1", 0)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            page = urllib.request.urlopen(f"http://127.0.0.1:{httpd.server_address[1]}/",
                                          timeout=30).read().decode()
        finally:
            httpd.shutdown()
            httpd.server_close()
        assert f"<h1>Chat with a {kind}</h1>" in page
    monkeypatch.setattr(chat, "mode", "chat")  # a chat-only option on a base checkpoint
    message = one_line_error(chat.Chat, str(smoke_ckpt))
    assert "--mode=chat needs a chat-tuned checkpoint" in message and "sft_smoke.py" in message


def test_the_export_gives_transformers_the_same_prompt_ids_and_greedy_reply(tuned, tmp_path,
                                                                            monkeypatch):
    """tokenizer_config.json's chat_template:
    apply_chat_template(messages, add_generation_prompt=True) gives the ids chat.py prompts with,
    and model.generate the same greedy reply, token for token, ending at the same EOT."""
    transformers = pytest.importorskip("transformers")
    import chat
    hf_dir = tmp_path / "hf"
    # its own process, as in test_export_hf
    result = run_in_process("export_hf.py", f"--out_dir={tuned}", f"--hf_dir={hf_dir}")
    assert result.returncode == 0, result.stderr
    assert "chat-tuned" in result.stdout
    assert (json.loads((hf_dir / "tokenizer_config.json").read_text())["chat_template"]
            == chat_template.JINJA)
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    monkeypatch.setattr(chat, "max_new_tokens", 24)
    monkeypatch.setattr(chat, "temperature", 0.0)
    c = chat.Chat(str(tuned))
    turns = [(messages[0]["content"], []) for messages in conversations(HELD_OUT)[:3]]
    turns.append(("And then?", [("Who are you?", "I am a bot."), ("Nice!", "Thanks.")]))
    ended = 0
    for message, history in turns:
        # without the header as a system message: HF's default
        messages = chat.messages_of(history, message)[1:]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True,
                                      return_dict=True)["input_ids"]
        assert (ids == chat_template.prompt(enc, messages)
                == chat.prompt_ids(enc, history, message, c.budget, True))
        with torch.no_grad():
            theirs = hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                                 pad_token_id=EOT)[0, len(ids):].tolist()
        ours = c.model.generate(torch.tensor([ids]), 24, temperature=0)[0, len(ids):].tolist()
        assert theirs == ours and (theirs[-1] == EOT or len(theirs) == 24)
        ended += EOT in theirs
        reply = "".join(c.reply(history, message))
        assert reply.strip() == tok.decode(theirs, skip_special_tokens=True).strip()
    assert ended > 0
