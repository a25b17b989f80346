"""eval.py: the batched log-likelihood primitive against a naive one-sequence-at-a-time reference,
the sliding window against the model's own loss, HellaSwag and LAMBADA against independent
scorers (build-nanogpt's loop; greedy generation), and the script end to end on a trained model."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import common
import eval as ev
from launch import HELLASWAG, LAMBADA, one_line_error, run_in_process, run_script
from model import GPT, OPTIONS, GPTConfig

NO_AUTOCAST = common.autocast("cpu", "float32")


def tiny_model(option: str) -> GPT:
    """A tiny random model with weights scaled up, so its predictions are confident and varied."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(**{**OPTIONS[option], "n_layer": 2, "n_head": 2, "n_embd": 64,
                         "block_size": 64}))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(5.0)
    return m.eval()


@pytest.fixture(scope="module", params=["a", "c"])
def model(request) -> GPT:
    """RoPE and learned positions: padding and windows must be right for both."""
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def model_a() -> GPT:
    """The tasks' plumbing does not depend on the architecture: one model is enough."""
    return tiny_model("a")


@pytest.fixture(scope="module")
def enc():
    return common.get_tokenizer()


def naive_loglikelihood(model: GPT, tokens: list[int], n: int) -> tuple[float, bool]:
    """One sequence, full logits, no batching, padding or chunking."""
    with torch.no_grad():
        logits, _ = model(torch.tensor(tokens[:-1])[None])
    logp = F.log_softmax(logits[0].double(), dim=-1)
    targets = torch.tensor(tokens[1:])
    pos = torch.arange(len(tokens) - 1 - n, len(tokens) - 1)
    return (logp[pos, targets[pos]].sum().item(),
            bool((logits[0, pos].argmax(-1) == targets[pos]).all()))


def test_loglikelihoods_match_naive_reference(model):
    g = torch.Generator().manual_seed(0)
    requests = []
    for length in [2, 65, 30, 7, 65, 12, 40, 3, 64]:  # ragged, up to block_size + 1
        tokens = torch.randint(0, 50257, (length,), generator=g).tolist()
        n = int(torch.randint(1, length, (1,), generator=g))
        requests.append((tokens, n))
    # and requests whose continuation is the model's own greedy choice,
    # so the greedy flag is tested both ways
    for length, n in [(10, 3), (40, 1), (20, 6)]:
        prompt = torch.randint(0, 50257, (1, length - n), generator=g)
        tokens = model.generate(prompt, n, temperature=0.0, stop=())[0].tolist()
        requests.append((tokens, n))
    reference = [naive_loglikelihood(model, t, n) for t, n in requests]
    assert [r[1] for r in reference].count(True) >= 3
    for batch_size in (1, 4, 16):
        got = ev.loglikelihoods(model, requests, batch_size, "cpu", NO_AUTOCAST)
        for (lp, n, greedy), (ref_lp, ref_greedy), (_, want_n) in zip(got, reference, requests,
                                                                      strict=True):
            assert n == want_n and greedy == ref_greedy
            assert lp == pytest.approx(ref_lp, rel=1e-5, abs=1e-4)


def test_greedy_flag_needs_every_token(model_a):
    """LAMBADA's acc: a continuation is the greedy one only when every token of it is the argmax;
    one token that is not (first, middle or last of three) makes the flag False."""
    prompt = torch.randint(0, 50257, (1, 10), generator=torch.Generator().manual_seed(5))
    tokens = model_a.generate(prompt, 3, temperature=0.0, stop=())[0].tolist()
    requests = [(tokens, 3)]
    for pos in (10, 11, 12):
        wrong = list(tokens)
        wrong[pos] = (wrong[pos] + 1) % 50257  # not the argmax, which tokens[pos] is
        requests.append((wrong, 3))
    got = ev.loglikelihoods(model_a, requests, 4, "cpu", NO_AUTOCAST)
    assert [g for _, _, g in got] == [True, False, False, False]
    assert [naive_loglikelihood(model_a, t, n)[1]
            for t, n in requests] == [True, False, False, False]


def test_continuation_longer_than_the_context(model_a):
    """truncate keeps the last block_size + 1 tokens; a continuation longer than that is scored on
    all of them but the first, which has no context. A short one is scored whole, its context cut
    from the left."""
    T = model_a.config.block_size
    context, long = list(range(1000, 1010)), list(range(2000, 2000 + T + 30))
    tokens, n = ev.truncate(context, long, T)
    assert tokens == long[-(T + 1):] and n == T
    [(lp, got_n, _)] = ev.loglikelihoods(model_a, [(tokens, n)], 1, "cpu", NO_AUTOCAST)
    assert got_n == T and lp == pytest.approx(naive_loglikelihood(model_a, long[-(T + 1):], T)[0],
                                              rel=1e-5)
    tokens, n = ev.truncate(list(range(3000, 3000 + T)), [7, 8, 9], T)
    # T + 1 tokens in all
    assert tokens == list(range(3000 + T - (T + 1 - 3), 3000 + T)) + [7, 8, 9] and n == 3


def test_sliding_windows_score_every_token_once():
    for length, block_size, stride in [(1, 8, 4), (2, 8, 4), (9, 8, 4), (10, 8, 4), (100, 8, 3),
                                       (100, 8, 8), (100, 16, 1), (33, 16, 16)]:
        tokens = list(range(length))
        scored = []
        for i, (window, n) in enumerate(ev.sliding_windows(tokens, block_size, stride)):
            assert 1 <= len(window) <= block_size + 1 and 0 <= n <= len(window) - 1
            scored += list(window[len(window) - n:])
            if i > 0:  # every later token sees at least block_size - stride tokens of context
                assert len(window) - n >= min(block_size - stride + 1, window[0] + len(window) - n)
        assert scored == tokens[1:]


def test_perplexity_equals_the_models_own_loss(model):
    """Disjoint windows (stride = block_size) score exactly what forward(idx, targets) does on
    consecutive blocks, through the model's separate chunked cross-entropy."""
    T = model.config.block_size
    tokens = torch.randint(0, 50257, (4 * T + 1,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, loss = model(tokens[:-1].view(4, T), tokens[1:].view(4, T))
    r = ev.perplexity(model, ev.sliding_windows(tokens.numpy(), T, T), 3, "cpu", NO_AUTOCAST)
    assert r["tokens"] == 4 * T
    assert r["loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert r["ppl"] == pytest.approx(math.exp(loss.item()), rel=1e-5)
    # overlapping windows: more context per token, the same tokens scored, and a different loss
    r2 = ev.perplexity(model, ev.sliding_windows(tokens.numpy(), T, T // 4), 5, "cpu", NO_AUTOCAST)
    assert r2["tokens"] == 4 * T and r2["loss"] != pytest.approx(r["loss"], rel=1e-6)


def naive_hellaswag(model, enc, ex) -> tuple[int, int]:
    """build-nanogpt's render_example + loss loop: predictions by summed and by mean loss."""
    ctx = enc.encode_ordinary(ex["ctx"])
    sums, means = [], []
    for ending in ex["endings"]:
        end = enc.encode_ordinary(" " + ending)
        x = torch.tensor(ctx + end)[None]
        with torch.no_grad():
            logits, _ = model(x)
        losses = F.cross_entropy(logits[0, :-1].float(), x[0, 1:], reduction="none")[-len(end):]
        sums.append(losses.sum().item())
        means.append(losses.mean().item())
    return int(np.argmin(sums)), int(np.argmin(means))


def test_hellaswag_agrees_with_naive_scorer(model_a, enc):
    model = model_a
    examples = ev.load_hellaswag(HELLASWAG)[:8]
    preds = [naive_hellaswag(model, enc, ex) for ex in examples]
    assert any(s != m for s, m in preds), "want examples where acc and acc_norm disagree"
    # relabel with the reference's choices: our scorer must then be right on every one
    by_sum = [{**ex, "label": s} for ex, (s, _) in zip(examples, preds, strict=True)]
    by_mean = [{**ex, "label": m} for ex, (_, m) in zip(examples, preds, strict=True)]
    model.train()
    r = ev.hellaswag_accuracy(model, enc, by_sum, "cpu", NO_AUTOCAST, batch_size=5)
    assert model.training  # the caller's mode is restored (train.py calls this mid-training)
    model.eval()
    assert r["acc"] == 1.0 and r["n"] == 8
    assert r["acc_norm"] == sum(s == m for s, m in preds) / 8
    r = ev.hellaswag_accuracy(model, enc, by_mean, "cpu", NO_AUTOCAST, limit=6)
    assert r["acc_norm"] == 1.0 and r["n"] == 6
    assert ev.hellaswag_accuracy(model, enc, examples, "cpu", NO_AUTOCAST) == \
        ev.hellaswag_accuracy(model, enc, examples, "cpu", NO_AUTOCAST), "deterministic"


def test_lambada_agrees_with_greedy_generation(model_a, enc):
    model = model_a
    real = ev.load_lambada(LAMBADA)[:6]
    # passages whose last word is the model's greedy continuation, built from real contexts
    made = []
    for row in ev.load_lambada(LAMBADA)[6:60]:
        context = row["text"].rpartition(" ")[0]
        ids = enc.encode_ordinary(context)[-40:]
        context = enc.decode(ids)
        if enc.encode_ordinary(context) != ids:
            continue
        nxt = model.generate(torch.tensor(ids)[None], 1, temperature=0.0, stop=())[0, -1].item()
        word = enc.decode([nxt])
        if word.startswith(" ") and word[1:].isalpha() and enc.encode_ordinary(word) == [nxt]:
            made.append({"text": context + word})
        if len(made) == 4:
            break
    assert len(made) == 4
    examples = real + made
    acc, nll = 0, 0.0
    # reference: greedy generation must spell the word; loss from forward(targets)
    for ex in examples:
        context, _, word = ex["text"].rpartition(" ")
        c, w = enc.encode_ordinary(context), enc.encode_ordinary(" " + word)
        c = c[-(model.config.block_size + 1 - len(w)):]
        out = model.generate(torch.tensor(c)[None], len(w), temperature=0.0,
                             stop=())[0, len(c):].tolist()
        acc += out == w
        x = torch.tensor(c + w)
        y = torch.cat([torch.full((len(c) - 1,), -1), x[len(c):]])
        with torch.no_grad():
            _, loss = model(x[None, :-1], y[None])
        nll += loss.item() * len(w)
    r = ev.lambada_accuracy(model, enc, examples, "cpu", NO_AUTOCAST, batch_size=3)
    assert r["n"] == 10 and r["acc"] == acc / 10 and acc >= 4
    assert r["ppl"] == pytest.approx(math.exp(nll / 10), rel=1e-4)


def test_val_loss_agrees_with_training(smoke_ckpt, owt_data):
    """The whole val split in disjoint windows estimates what train.py's sampled eval does."""
    checkpoint = common.load_checkpoint(str(smoke_ckpt))
    model = common.model_from_checkpoint(checkpoint).eval()
    T = model.config.block_size
    val = np.fromfile(owt_data / "val.bin", dtype=np.uint16)
    r = ev.perplexity(model, ev.sliding_windows(np.concatenate([[50256], val]), T, T), 16, "cpu",
                      NO_AUTOCAST)
    assert r["tokens"] == len(val)
    assert r["loss"] == pytest.approx(checkpoint["val_loss"], abs=0.15)
    assert r["loss"] < 10.0  # trained: well below uniform's ln(50257) = 10.8


def test_script_end_to_end(smoke_ckpt, owt_data, tmp_path):
    out = tmp_path / "results.json"
    r = run_script("eval.py", f"--out_dir={smoke_ckpt}", f"--data_dir={owt_data}", "--limit=6",
                   "--batch_size=5", f"--json={out}", f"--hellaswag_file={HELLASWAG}",
                   f"--lambada_file={LAMBADA}")
    report = json.loads(out.read_text())
    res = report["results"]
    assert set(res) == {"val", "hellaswag", "lambada"} and report["iter_num"] == 40
    assert res["val"]["tokens"] == 6 * 64 + 64 and res["val"]["ppl"] == pytest.approx(
        math.exp(res["val"]["loss"]))
    assert res["hellaswag"]["n"] == 6 and res["lambada"]["n"] == 6
    assert 0 <= res["hellaswag"]["acc"] <= 1 and res["lambada"]["ppl"] > 1
    for row in ("val        loss", "hellaswag  acc_norm", "lambada    acc"):
        assert row in r.stdout

    # raw files instead of val.bin: a .txt is one document, a .jsonl one per line
    txt, jsonl = tmp_path / "a.txt", tmp_path / "b.jsonl"
    txt.write_text("The cat sat on the mat. " * 30)
    jsonl.write_text('{"text": "Hello world."}\n\n'
                     '{"text": "A second, longer document about the weather."}\n')
    # the run above had a process of its own
    r = run_in_process("eval.py", f"--ckpt={smoke_ckpt / 'ckpt.pt'}", "--tasks=val",
                       f"--files={txt},{jsonl}", "--json=-")
    assert r.returncode == 0, r.stderr
    # stdout is the JSON alone; the config line and the table went to stderr
    report = json.loads(r.stdout)
    assert "val        loss" in r.stderr and "config: " in r.stderr
    files = report["results"]["val"]["files"]
    enc = common.get_tokenizer()
    assert files[str(txt)]["tokens"] == len(enc.encode_ordinary(txt.read_text()))
    assert files[str(jsonl)]["tokens"] == len(enc.encode_ordinary("Hello world.")) + \
        len(enc.encode_ordinary("A second, longer document about the weather."))
    total = report["results"]["val"]
    assert total["tokens"] == sum(f["tokens"] for f in files.values())
    assert total["loss"] == pytest.approx(sum(f["loss"] * f["tokens"] for f in files.values())
                                          / total["tokens"])


def test_script_scores_every_token_of_val_bin(smoke_ckpt, tmp_path):
    """--data_dir: every token of val.bin is scored, the first too (after the EOT put in front, as
    each document starts in training); --stride=block_size (disjoint windows) is allowed and gives
    the model's own loss on consecutive blocks."""
    model = common.model_from_checkpoint(common.load_checkpoint(str(smoke_ckpt))).eval()
    T = model.config.block_size
    enc = common.get_tokenizer()
    val = enc.encode_ordinary(" ".join(ev.load_lambada(LAMBADA)[0]["text"]
                                       for _ in range(4)))[:2 * T - 1] + [50256]
    assert len(val) == 2 * T
    data = tmp_path / "data"
    data.mkdir()
    np.array(val, dtype=np.uint16).tofile(data / "val.bin")
    # what check_data needs of prepare.py's meta.json
    (data / "meta.json").write_text('{"vocab_size": 50257}')
    out = tmp_path / "r.json"
    assert run_in_process("eval.py", f"--out_dir={smoke_ckpt}", "--tasks=val", f"--data_dir={data}",
                          f"--stride={T}", f"--json={out}").returncode == 0
    res = json.loads(out.read_text())["results"]["val"]
    x = torch.tensor([50256] + val)
    with torch.no_grad():
        _, loss = model(x[:-1].view(2, T), x[1:].view(2, T))
    assert res["tokens"] == 2 * T
    assert res["loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_script_limit_counts_documents_of_files(smoke_ckpt, tmp_path):
    """--limit with --files: the first N documents of each file, as the setting says."""
    docs = ["Hello world.", "A second document, about the weather.", "A third one."]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    r = run_in_process("eval.py", f"--out_dir={smoke_ckpt}", "--tasks=val", f"--files={jsonl}",
                       "--limit=2", "--json=-")
    assert r.returncode == 0, r.stderr
    enc = common.get_tokenizer()
    assert json.loads(r.stdout)["results"]["val"]["tokens"] == sum(len(enc.encode_ordinary(d))
                                                                   for d in docs[:2])


def test_bad_input(tmp_path, shared):
    assert "not found" in one_line_error(ev.read_documents, str(tmp_path / "missing.txt"))
    (tmp_path / "x.csv").write_text("a,b")
    assert "neither .txt" in one_line_error(ev.read_documents, str(tmp_path / "x.csv"))
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    assert "line 2" in one_line_error(ev.read_documents, str(tmp_path / "bad.jsonl"))
    lambada = str(shared / "data" / "lambada" / "lambada_test.jsonl")
    assert "not a hellaswag example" in one_line_error(ev.load_hellaswag, lambada)
    assert "not valid JSON" in one_line_error(
        ev.load_lambada, str(shared / "data" / "tinyshakespeare" / "input.txt"))
    assert "not found" in one_line_error(ev.load_lambada, str(tmp_path / "nope.jsonl"))
    # a folder where a file goes is a folder, not "not found"
    assert f"file '{tmp_path}' is a folder" in one_line_error(ev.load_lambada, str(tmp_path))
    assert f"file '{tmp_path}' is a folder" in one_line_error(ev.read_documents, str(tmp_path))
    r = run_in_process("eval.py", "--tasks=val,winogrande")
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        "error: unknown task 'winogrande': choose from val, hellaswag, lambada, chat "
        "(e.g. --tasks=val,hellaswag)"]
    r = run_in_process("eval.py", "--tasks=")  # evaluated nothing and exited 0
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith(
        "error: --tasks is empty")


def test_bad_hellaswag_examples(tmp_path):
    """An example must have 4 endings and a label that names one of them (0-3); anything else would
    be scored wrong in silence (a label of 4 is never right), so the file is refused."""
    for endings, label in ((["a", "b", "c"], 0), (["a", "b", "c", "d"], 4),
                           (["a", "b", "c", "d"], -1)):
        path = tmp_path / "h.jsonl"
        path.write_text(json.dumps({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 1})
                        + "\n" + json.dumps({"ctx": "y", "endings": endings, "label": label})
                        + "\n")
        message = one_line_error(ev.load_hellaswag, str(path))
        assert "example 2" in message and "4 endings and a label 0-3" in message


@pytest.mark.parametrize("args, message", [
    (["--tasks=val", "--files={tmp}/a.txt", "--stride=129"],
     "--stride=129 is larger than the model's block_size"),
    (["--tasks=val", "--files={tmp}/empty.txt"], "no tokens to evaluate in '{tmp}/empty.txt'"),
    (["--tasks=val", "--files={tmp}/a.txt", "--json={tmp}/missing/r.json"],
     "folder '{tmp}/missing' does not exist"),
    # /sys refuses new files even to root, where a chmod-ed folder would not
    (["--tasks=val", "--files={tmp}/a.txt", "--json=/sys/r.json"],
     "cannot write to '/sys' (Permission denied)"),
])
def test_script_refuses_bad_settings(smoke_ckpt, tmp_path, args, message):
    """Refused with one line before the work (block_size is 128): not a traceback, a perplexity of
    nothing, or a results file that cannot be written once the run is over."""
    (tmp_path / "a.txt").write_text("The cat sat on the mat. " * 60)  # ~420 tokens: several windows
    (tmp_path / "empty.txt").write_text("")
    r = run_in_process("eval.py", f"--out_dir={smoke_ckpt}",
                       *[a.format(tmp=tmp_path) for a in args])
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in r.stderr and message.format(tmp=tmp_path) in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--tasks=hellaswag", "--files=a.txt"], "--files is read by --tasks=val or chat only"),
    (["--tasks=lambada", "--data_dir=data"], "--data_dir is read by --tasks=val or chat only"),
    (["--tasks=val,hellaswag", "--max_new_tokens=8"],
     "--max_new_tokens is read by --tasks=chat only"),
    (["--tasks=chat", "--stride=16"], "--stride is read by --tasks=val only"),
    (["--tasks=val", "--hellaswag_file=h.jsonl"],
     "--hellaswag_file is read by --tasks=hellaswag only"),
    (["--tasks=hellaswag", "--lambada_file=l.jsonl"],
     "--lambada_file is read by --tasks=lambada only"),
    (["--tasks=val", "--files=a.txt", "--data_dir=data"],
     "--files and --data_dir both name what to score"),
])
def test_script_refuses_options_its_tasks_ignore(tmp_path, args, message):
    """An option none of the chosen tasks reads is refused before the checkpoint is loaded (there is
    none at --out_dir here), not ignored:
    results for something else than was asked are worse than an error."""
    r = run_in_process("eval.py", f"--out_dir={tmp_path / 'none'}", *args)
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: ") and message in r.stderr


def test_script_refuses_damaged_val_data(smoke_ckpt, owt_data, tmp_path):
    """val.bin with an id past the embedding was an IndexError mid-scoring: one line, from the same
    check train.py and bench.py make
    (common.check_data; test_train covers the other kinds of damage)."""
    (tmp_path / "val.bin").write_bytes(b"\x60\xea" * 300)  # id 60000
    (tmp_path / "meta.json").write_text((owt_data / "meta.json").read_text())
    r = run_in_process("eval.py", f"--out_dir={smoke_ckpt}", "--tasks=val",
                       f"--data_dir={tmp_path}")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in r.stderr and "val.bin holds token id 60000 at token 0" in r.stderr


def test_autocast_path(model_a):
    """The GPU path (transformer under bf16/fp16 autocast, lm_head in fp32), run on the CPU: close
    to fp32, and the same answer every time."""
    g = torch.Generator().manual_seed(3)
    requests = [(torch.randint(0, 50257, (n,), generator=g).tolist(), n // 2)
                for n in (20, 33, 65, 9)]
    fp32 = ev.loglikelihoods(model_a, requests, 2, "cpu", NO_AUTOCAST)
    for dtype in ("bfloat16", "float16"):
        half = ev.loglikelihoods(model_a, requests, 2, "cpu", common.autocast("cpu", dtype))
        assert half == ev.loglikelihoods(model_a, requests, 2, "cpu", common.autocast("cpu", dtype))
        for (lp, n, _), (ref, _, _) in zip(half, fp32, strict=True):
            # nats per token: reduced precision, not a different model
            assert abs(lp - ref) / n < 0.05
            assert lp != ref


def test_train_logs_hellaswag(smoke_ckpt):
    """train.py's opt-in hook: HellaSwag on the first N examples at each eval, in metrics.jsonl,
    equal to scoring the saved checkpoint here (fp32 on the CPU: deterministic). conftest's smoke
    run has it on (--hellaswag_every_eval=8)."""
    evals = [json.loads(line) for line in (smoke_ckpt / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if "val_loss" in r]
    assert ([r["iter"] for r in evals] == [0, 20, 40]
            and all("hellaswag_acc_norm" in r for r in evals))
    model = common.model_from_checkpoint(common.load_checkpoint(str(smoke_ckpt)))
    r = ev.hellaswag_accuracy(model, common.get_tokenizer(), ev.load_hellaswag(HELLASWAG), "cpu",
                              NO_AUTOCAST, limit=8, batch_size=8)
    assert (evals[-1]["hellaswag_acc"],
            evals[-1]["hellaswag_acc_norm"]) == (r["acc"], r["acc_norm"])


# -----------------------------------------------------------------------------
# the tasks' files by default: downloaded once into the cache,
# from a local server standing in for the network

@pytest.fixture
def server(tmp_path):
    """An HTTP server on localhost serving tmp_path/www; yields its base URL."""
    import functools
    import http.server
    import threading

    (tmp_path / "www").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(tmp_path / "www"))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_checked_and_cached(server, tmp_path, monkeypatch):
    """OpenAI's LAMBADA file (the shared copy, byte for byte) is fetched into the cache and then
    read from there; a file with the wrong checksum is refused and leaves nothing in the cache."""
    import shutil

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shutil.copy(LAMBADA, tmp_path / "www" / "lambada_test.jsonl")
    url, sha256, n = ev.DOWNLOADS["lambada"]
    monkeypatch.setitem(ev.DOWNLOADS, "lambada", (f"{server}/lambada_test.jsonl", sha256, n))
    assert ev.load_lambada() == ev.load_lambada(LAMBADA)
    cached = tmp_path / "cache" / "smallgpt" / "lambada_test.jsonl"
    assert (cached.read_bytes() == Path(LAMBADA).read_bytes()
            and os.listdir(cached.parent) == [cached.name])
    (tmp_path / "www" / "lambada_test.jsonl").unlink()
    assert len(ev.load_lambada()) == 5153  # the cached copy: no second download

    cached.unlink()
    (tmp_path / "www" / "lambada_test.jsonl").write_text('{"text": "a changed passage"}\n' * 5153)
    msg = one_line_error(ev.load_lambada)
    assert "not the expected one" in msg and sha256 in msg and "--lambada_file" in msg
    assert os.listdir(cached.parent) == []


def test_download_offline_is_one_line(server, tmp_path, monkeypatch):
    """No network (here: nothing served at the URL, and a port nobody listens on):
    one line naming the flag."""
    import socket

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(ev.DOWNLOADS, "hellaswag", (f"{server}/missing.jsonl", None, 10042))
    msg = one_line_error(ev.load_hellaswag)
    assert msg.startswith("error: cannot download hellaswag") and "--hellaswag_file" in msg
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: a refused connection
    monkeypatch.setitem(ev.DOWNLOADS, "lambada",
                        (f"http://127.0.0.1:{port}/lambada_test.jsonl", None, 5153))
    msg = one_line_error(ev.load_lambada)
    assert msg.startswith("error: cannot download lambada") and "--lambada_file" in msg
    assert os.listdir(tmp_path / "cache" / "smallgpt") == []
