"""Tests for bench.py and the speed work it measures: the FLOPs/MFU arithmetic, the chunked
lm_head + cross-entropy against the plain one, padded vocabulary ids never sampled, the micro-batch
finder, gradient accumulation as train.py does it, the reported loss and generation speeds, and
bench.py run end to end.
No timed assertions."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import bench
from configurator import expand_flags
from launch import run_in_process, run_script
from model import GPT, OPTIONS, ChunkedCrossEntropy, GPTConfig, flops_per_token, peak_flops


def tiny(option: str, **kw) -> GPTConfig:
    """An option's architecture at a test's size;
    vocab 1000 pads to 1024, so padding is exercised."""
    shape = dict(OPTIONS[option], n_layer=2, n_embd=64, n_head=2 if option != "b" else 4)
    return GPTConfig(**(shape | dict(block_size=32, vocab_size=1000) | kw))


# ---------------------------------------------------------------- FLOPs, MFU, projection

def test_flops_per_token_for_the_real_options():
    # by hand: 6N for the weight GEMMs (N at the real vocab, tied matrix once, learned positions
    # left out) + 12·L·d·T for attention scores and values (PaLM, Chowdhery et al. 2022, App. B)
    a = 6 * 35_763_840 + 12 * 16 * 320 * 1024
    c = 6 * (33_860_736 - 1024 * 384) + 12 * 8 * 384 * 1024
    rows = {r["option"]: r for r in bench.projection(0.3)}
    assert rows["A"]["flops_per_token"] == a == 277_497_600
    assert rows["C"]["flops_per_token"] == c == 238_553_856
    assert rows["B"]["params"] == 31_740_416
    # 8 GPUs × 125 TFLOP/s × 30% for 23 h, over OpenWebText's 9.0B train tokens
    tokens = 8 * 125e12 * 0.3 / a * 23 * 3600
    assert (rows["A"]["tokens"] == pytest.approx(tokens)
            and rows["A"]["tokens"] == pytest.approx(89.5e9, rel=1e-3))
    assert rows["A"]["epochs"] == pytest.approx(tokens / 9.0e9)


def test_peak_flops_lookup():
    assert peak_flops("NVIDIA H200", "bfloat16") == 989e12
    assert peak_flops("Tesla V100-SXM2-32GB", "float16") == 125e12
    assert peak_flops("Tesla V100-SXM2-32GB", "bfloat16") is None  # V100 has no bf16 tensor cores
    # the variant, not the family: PCIe and NVL cards run lower clocks than SXM ones
    assert peak_flops("Tesla V100-PCIE-16GB", "float16") == 112e12
    assert peak_flops("Tesla V100S-PCIE-32GB", "float16") == 130e12
    assert peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12
    assert peak_flops("NVIDIA H100 NVL", "bfloat16") == 835e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert peak_flops("NVIDIA A100-PCIE-40GB", "bfloat16") == 312e12
    assert peak_flops("cpu", "float32") is None


def test_estimate_mfu_by_hand():
    model = GPT(tiny("a"))
    fpt = flops_per_token(model.config, model.num_params())
    assert model.estimate_mfu(4096, 0.5, peak=1e12) == pytest.approx(fpt * 4096 / 0.5 / 1e12)
    assert model.estimate_mfu(4096, 0.5, "NVIDIA H200", "bfloat16") == pytest.approx(
        fpt * 4096 / 0.5 / 989e12)
    assert model.estimate_mfu(4096, 0.5, "cpu", "float32") is None


# ---------------------------------------------------------------- chunked lm_head + cross-entropy

def loss_and_grads(model: GPT, x, y, dtype=None):
    model.zero_grad(set_to_none=True)
    ctx = torch.autocast("cpu", dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
    with ctx:
        _, loss = model(x, y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def pair(option: str, chunk: int) -> tuple[GPT, GPT]:
    torch.manual_seed(0)
    chunked = GPT(tiny(option, loss_chunk=chunk))
    plain = GPT(tiny(option, loss_chunk=0))
    plain.load_state_dict(chunked.state_dict())
    return chunked, plain


def batch(vocab=1000, B=3, T=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (B, T), generator=g)
    y = torch.randint(0, vocab, (B, T), generator=g)
    y[0, :5] = -1  # ignored targets, as in train.py's masked batches
    y[2, -1] = -1
    return x, y


@pytest.mark.parametrize("option", ["a", "b", "c"])
@pytest.mark.parametrize("chunk", [7, 32, 4096])  # uneven, exact and larger than the tokens
def test_chunked_loss_equals_plain_fp32(option, chunk):
    chunked, plain = pair(option, chunk)
    x, y = batch()
    loss_c, grads_c = loss_and_grads(chunked, x, y)
    loss_p, grads_p = loss_and_grads(plain, x, y)
    # an independent reference for the loss: log-softmax over the real vocab, by hand
    with torch.no_grad():
        logits = chunked.hidden_states(x) @ chunked.lm_head.weight[:1000].t()
        nll = logits.logsumexp(-1) - logits.gather(-1, y.clamp(min=0)[..., None]).squeeze(-1)
        ref = nll[y != -1].mean()
    assert loss_c.item() == pytest.approx(ref.item(), rel=1e-6)
    assert loss_c.item() == pytest.approx(loss_p.item(), rel=1e-6)
    assert grads_c.keys() == grads_p.keys()
    for name in grads_p:
        torch.testing.assert_close(grads_c[name], grads_p[name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 5e-3)])
def test_chunked_loss_matches_plain_under_autocast(dtype, tol):
    chunked, plain = pair("a", 13)
    x, y = batch()
    loss_c, grads_c = loss_and_grads(chunked, x, y, dtype)
    loss_p, grads_p = loss_and_grads(plain, x, y, dtype)
    assert loss_c.dtype == torch.float32  # the loss is fp32 whatever the autocast dtype
    assert loss_c.item() == pytest.approx(loss_p.item(), rel=tol / 10)
    for name in grads_p:
        scale = grads_p[name].abs().max().clamp(min=1e-12)
        assert torch.isfinite(grads_c[name]).all(), name
        assert ((grads_c[name] - grads_p[name]).abs().max() / scale).item() < tol, name


def test_chunked_loss_fp16_small_activations_do_not_overflow():
    # small hidden states and weights with one valid target once pushed the fp16 gradient scale so
    # high that softmax - onehot itself overflowed to inf
    torch.manual_seed(0)
    x = (torch.randn(64, 32) * 0.01).requires_grad_()
    w = (torch.randn(128, 32) * 0.01).requires_grad_()
    t = torch.full((64,), -1)
    t[0] = 3
    with torch.autocast("cpu", dtype=torch.float16):
        loss = ChunkedCrossEntropy.apply(x, w, t, 100, 16)
    loss.backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    F.cross_entropy((x @ w.t())[:, :100], t, ignore_index=-1).backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-2, atol=1e-6)
    torch.testing.assert_close(gw, w.grad, rtol=1e-2, atol=1e-6)


def test_chunked_loss_skips_gradient_work_under_no_grad(monkeypatch):
    model = GPT(tiny("a", loss_chunk=16)).eval()
    x, y = batch()
    seen = []
    forward = ChunkedCrossEntropy.forward

    def spy(ctx, *args):
        seen.append(args[-1])  # grad_enabled
        return forward(ctx, *args)

    monkeypatch.setattr(ChunkedCrossEntropy, "forward", staticmethod(spy))
    with torch.no_grad():
        _, loss_eval = model(x, y)
    _, loss_train = model(x, y)
    assert seen == [False, True]
    assert loss_eval.item() == pytest.approx(loss_train.item(), rel=1e-6)


# ---------------------------------------------------------------- padded vocabulary

def test_padded_ids_are_never_sampled():
    torch.manual_seed(0)
    model = GPT(tiny("a")).eval()
    assert model.config.padded_vocab_size == 1024
    with torch.no_grad():
        # huge padding rows: were they not masked, they would win every draw
        model.transformer.wte.weight[1000:] = torch.randn(24, 64) * 100
        h = model.hidden_states(torch.randint(0, 1000, (4, 8)))
        assert (model.lm_head(h)[:, -1].argmax(-1) >= 1000).all()  # the test can fail
        assert model.logits(h).size(-1) == 1000
    prompt = torch.randint(0, 1000, (4, 3))
    for kw in (dict(), dict(temperature=2.0), dict(top_k=50), dict(top_p=0.99),
               dict(temperature=0)):
        for use_cache in (True, False):
            g = torch.Generator().manual_seed(1)
            out = model.generate(prompt, 20, stop=(), generator=g, use_cache=use_cache, **kw)
            assert out.shape == (4, 23) and out.max() < 1000, (kw, use_cache)


# ---------------------------------------------------------------- the micro-batch finder

@pytest.mark.parametrize("threshold", [0, 1, 5, 16, 37, 64, 1000])
@pytest.mark.parametrize("start", [1, 16, 100])
def test_largest_fitting(threshold, start):
    calls = []

    def fits(b):
        calls.append(b)
        return b <= threshold

    assert bench.largest_fitting(fits, start, 64) == min(threshold, 64)
    assert len(calls) <= 2 * math.log2(64) + 2  # doubling then bisection, not a scan


def small_settings(**kw) -> dict:
    s = {k: getattr(bench, k) for k in bench.BUILD_KEYS}
    return s | dict(n_layer=2, n_embd=64, n_head=2, block_size=16, vocab_size=1000, batch_size=2,
                    dtype="float32") | kw


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_step_fits_catches_out_of_memory(monkeypatch, dtype):
    monkeypatch.setattr(bench, "device", "cpu")
    run = bench.build("base", small_settings(dtype=dtype))
    clip = torch.nn.utils.clip_grad_norm_

    def oom_above_5(params, max_norm):  # runs after the GradScaler has unscaled: a step cut mid-way
        if run.s["batch_size"] > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return clip(params, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", oom_above_5)
    assert bench.largest_fitting(lambda b: bench.step_fits(run, b), 2, 64) == 5
    assert bench.step_fits(run, 4)  # still usable after the failures
    # freed after each try
    assert run.pool == [] and all(p.grad is None for p in run.model.parameters())


# ---------------------------------------------------------------- the step, as train.py takes it

@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gradient_accumulation_matches_one_big_batch(monkeypatch, dtype):
    """grad_accum micro-batches, each loss divided by grad_accum, give the gradient of one batch
    holding them all (fp16: after the GradScaler unscales)."""
    monkeypatch.setattr(bench, "device", "cpu")
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 1000, (4, 17), generator=g)
    x, y = tokens[:, :-1], tokens[:, 1:]
    runs = {accum: bench.build("", small_settings(grad_accum=accum, batch_size=B, grad_clip=0.0,
                                                  dtype=dtype))
            for accum, B in ((2, 2), (1, 4))}
    monkeypatch.setattr(bench, "next_batch", lambda r: next(r.feed))  # these batches, in this order
    grads = {}
    for accum, run in runs.items():
        B = run.s["batch_size"]
        run.feed = iter([(x[i:i + B], y[i:i + B]) for i in range(0, 4, B)])
        step = run.optimizers[0].step

        def capture(*a, run=run, step=step, accum=accum, **kw):
            grads[accum] = [p.grad.clone() for p in run.model.parameters()]
            return step(*a, **kw)

        run.optimizers[0].step = capture
        bench.step(run)
    for g2, g1 in zip(grads[2], grads[1], strict=True):
        torch.testing.assert_close(g2, g1, rtol=1e-3, atol=1e-6 if dtype == "float32" else 1e-4)


def test_step_reports_the_mean_loss_of_its_micro_batches(monkeypatch):
    """bench.step's loss is the mean over the grad_accum micro-batches (as train.py logs it), not
    their sum: recomputed from a copy of the weights before the step."""
    monkeypatch.setattr(bench, "device", "cpu")
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 1000, (4, 17), generator=g)
    batches = [(tokens[i:i + 2, :-1], tokens[i:i + 2, 1:]) for i in (0, 2)]
    run = bench.build("", small_settings(grad_accum=2, batch_size=2))
    reference = GPT(run.model.config)
    reference.load_state_dict(run.model.state_dict())
    with torch.no_grad():
        expected = sum(reference(x, y)[1].item() for x, y in batches) / 2
    feed = iter(batches)
    monkeypatch.setattr(bench, "next_batch", lambda r: next(feed))
    assert bench.step(run) == pytest.approx(expected, rel=1e-5)


def test_the_optimizers_preset_times_train_steps_with_muon(monkeypatch):
    """--compare=optimizers builds AdamW alone and Muon + AdamW (train.py's split); bench.step runs
    the Muon variant through the same train_step, so Muon's own work is inside the timed step: its
    momentum exists after a step."""
    monkeypatch.setattr(bench, "device", "cpu")
    (n1, s1), (n2, s2) = bench.parse_variants("optimizers", small_settings())
    assert (n1, s1["optimizer"], n2, s2["optimizer"]) == ("optimizer=adamw", "adamw",
                                                          "optimizer=muon", "muon")
    adamw, muon = bench.build(n1, s1), bench.build(n2, s2)
    assert [type(o) for o in adamw.optimizers] == [torch.optim.AdamW]
    assert [type(o) for o in muon.optimizers] == [torch.optim.Muon, torch.optim.AdamW]
    for run in (adamw, muon):
        bench.step(run)
    momenta = [muon.optimizers[0].state[p]["momentum_buffer"]
               for p in muon.optimizers[0].param_groups[0]["params"]]
    assert len(momenta) == 4 * s2["n_layer"] and all(m.abs().sum() > 0 for m in momenta)
    # resident memory counts both optimizers' state:
    # Muon keeps one buffer per matrix where AdamW keeps two
    block_matrix_bytes = sum(m.numel() * 4 for m in momenta)
    assert (bench.resident_bytes(adamw) - bench.resident_bytes(muon)
            == block_matrix_bytes + 4 * len(momenta))


def test_generation_row_arithmetic(monkeypatch):
    """tokens/s with and without the KV cache, each from its own timings: generate is replaced by
    one that takes 1 s per token with the cache and 4 s without, on a fake clock,
    so the figures are known exactly."""
    clock = [0.0]
    calls = []

    def fake_generate(self, idx, max_new_tokens, *args, use_cache=True, **kwargs):
        calls.append(use_cache)
        clock[0] += max_new_tokens * (1.0 if use_cache else 4.0)
        return torch.cat([idx, torch.zeros(idx.size(0), max_new_tokens, dtype=idx.dtype)], dim=1)

    monkeypatch.setattr(GPT, "generate", fake_generate)
    monkeypatch.setattr(bench, "time",
                        type("FakeTime", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    for key, value in dict(device="cpu", gen_tokens=8, gen_prompt=4, gen_repeats=2).items():
        monkeypatch.setattr(bench, key, value)
    row = bench.bench_generation(small_settings(compile=False))
    assert calls.count(True) == calls.count(False) == 3  # a warm-up and two timed runs each
    assert (row["kv_cache_tokens_per_s"] == pytest.approx(1.0)
            and row["no_cache_tokens_per_s"] == pytest.approx(0.25))
    assert row["speedup"] == pytest.approx(4.0) and row["new_tokens"] == 8 and row["prompt"] == 4


# ---------------------------------------------------------------- the command line

def test_expand_flags_and_variants():
    defaults = {"compare": "", "compile": None, "find_batch": False, "json": "", "batch_size": 16}
    assert expand_flags(["config/option_a.py", "--compare", "--compile", "--json", "x.json",
                         "--batch_size=8"], defaults, bench.BARE_FLAGS) == [
        "config/option_a.py", "--compare=options", "--compile=True", "--json=x.json",
        "--batch_size=8"]
    assert expand_flags(["--compare", "a,b", "--find_batch"], defaults, bench.BARE_FLAGS) == [
        "--compare=a,b", "--find_batch=True"]
    assert expand_flags(["--config", "config/option_b.py", "--config=config/smoke.py"], defaults,
                        {}) == ["config/option_b.py", "config/smoke.py"]
    base = small_settings()
    names = [n for n, _ in bench.parse_variants("options", base)]
    assert names == ["A", "B", "C"]
    (n1, s1), (n2, s2) = bench.parse_variants("base,c+batch_size=8+loss_chunk=0", base)
    assert (n1, s1) == ("base", base)
    assert n2 == "C+batch_size=8+loss_chunk=0" and s2["batch_size"] == 8 and s2["loss_chunk"] == 0
    assert s2["n_embd"] == 384 and s2["mlp"] == "gelu" and base["batch_size"] == 2
    with pytest.raises(SystemExit, match="not a preset"):
        bench.parse_variants("base,warp=9", base)
    with pytest.raises(SystemExit, match="expects int"):
        bench.parse_variants("batch_size=big", base)


def test_bench_end_to_end(owt_data, tmp_path):
    """The real script on a tiny model: the table, the rows, and JSON whose arithmetic adds up."""
    out = tmp_path / "bench.json"
    r = run_script("bench.py", "config/smoke.py", "--n_layer=1", "--block_size=32",
                   "--batch_size=2", "--grad_accum=2", "--compare",
                   "base,loss_chunk=0,vocab_multiple_of=1+ffn_multiple_of=64,dtype=float16",
                   "--iters=1", "--repeats=2", "--warmup=1", "--gen_tokens=6", "--gen_prompt=4",
                   "--loader_iters=3", f"--data={owt_data}", "--peak_tflops=2", "--threads=1",
                   f"--json={out}")
    assert ("tokens/s" in r.stdout and "faster with the cache" in r.stdout
            and "data loader" in r.stdout)
    assert "projection, not a measurement" in r.stdout
    report = json.loads(out.read_text())
    assert report["env"]["threads"] == 1 and report["env"]["torch"] == torch.__version__
    rows = {v["variant"]: v for v in report["variants"]}
    assert list(rows) == ["base", "loss_chunk=0", "vocab_multiple_of=1+ffn_multiple_of=64",
                          "dtype=float16"]
    for v in rows.values():
        assert len(v["ms_per_step_rounds"]) == 2 and v["tokens_per_step"] == 2 * 32 * 2
        assert v["tokens_per_s"] == pytest.approx(v["tokens_per_step"] / (v["ms_per_step"] / 1000))
        assert v["mfu"] == pytest.approx(v["flops_per_token"] * v["tokens_per_s"] / 2e12)
        assert v["flops_per_token"] == 6 * v["params"] + 12 * 1 * 64 * 32  # RoPE: no position table
        assert math.isfinite(v["last_loss"]) and v["peak_memory_bytes"] is None  # CPU
    # the smoke shape (d=64, SwiGLU 170, 1 layer) at the real vocab, by hand
    layer = 4 * 64 * 64 + 3 * 64 * 170 + 2 * 64
    assert rows["base"]["params"] == 50257 * 64 + layer + 64
    assert rows["base"]["padded_vocab"] == 50304 and rows["base"]["padding_params"] == 47 * 64
    assert rows["vocab_multiple_of=1+ffn_multiple_of=64"]["padded_vocab"] == 50257
    assert rows["vocab_multiple_of=1+ffn_multiple_of=64"]["ffn_hidden"] == 192
    # the same weights and batches: the chunked and the plain loss train identically
    assert rows["loss_chunk=0"]["last_loss"] == pytest.approx(rows["base"]["last_loss"], rel=1e-4)
    assert rows["dtype=float16"]["dtype"] == "float16"
    g = report["generation"]
    assert g["compiled"] is False  # compile=None means off on the CPU, for the generation row too
    assert g["kv_cache_tokens_per_s"] > 0 and g["speedup"] == pytest.approx(
        g["kv_cache_tokens_per_s"] / g["no_cache_tokens_per_s"])
    assert report["loader"]["ms_per_batch"] > 0
    assert [p["option"] for p in report["projection"]] == ["A", "B", "C"]


# a tiny run, so a setting that is not refused finishes quickly (and fails the test)
# instead of timing option A
TINY_RUN = ["--n_layer=1", "--n_embd=32", "--n_head=1", "--block_size=8", "--batch_size=1",
            "--iters=1", "--repeats=1", "--warmup=0", "--gen_tokens=2", "--gen_prompt=2",
            "--device=cpu"]


@pytest.mark.parametrize("bad, message", [
    ("--project_mfu=0", "--project_mfu is a fraction of the peak, in (0, 1]"),
    ("--project_mfu=1.5", "--project_mfu is a fraction of the peak, in (0, 1]"),
    ("--gen_tokens=-1", "--gen_tokens must be 0 or more, got -1"),
    ("--gen_repeats=0", "--gen_repeats must be at least 1, got 0"),
    ("--compare=base,batch_size=0", "batch_size and grad_accum must be at least 1"),
    ("--learning_rate=-1", "learning_rate must be positive, got -1.0"),
    ("--beta2=1", "muon_momentum, beta1 and beta2 must be in [0, 1), got 0.95, 0.9 and 1.0"),
    ("--weight_decay=-1", "--weight_decay must be 0 or more, got -1.0"),
    ("--compare=base,optimizer=sgd",
     "optimizer must be 'adamw' or 'muon', got 'sgd' in optimizer=sgd"),
    ("--json={tmp}/missing/bench.json", "folder '{tmp}/missing' does not exist"),
    ("--json=/sys/bench.json",
     "cannot write to '/sys' (Permission denied): choose another --json path"),
    # options a bench.py run would skip: refused
    ("--project --compare=options", "would ignore --compare"),
    ("--project --find_batch", "would ignore --find_batch"),
])
def test_bench_refuses_bad_settings(tmp_path, bad, message):
    r = run_in_process("bench.py", *TINY_RUN, *bad.format(tmp=tmp_path).split())
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: ")
    assert message.format(tmp=tmp_path) in lines[0]


def test_bench_errors_are_one_line(tmp_path):
    r = run_in_process("bench.py", "--find_batch", "--device=cpu")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: --find_batch")
    r = run_in_process("bench.py", f"--data={tmp_path}", "--device=cpu")
    assert r.returncode != 0 and "no prepared data" in r.stderr.strip().splitlines()[-1]
    r = run_in_process("bench.py", "--project", "--project_mfu=0.4")
    assert r.returncode == 0, r.stderr
    assert "ASSUMED MFU 40%" in r.stdout and "tokens in 23 h" in r.stdout


def test_a_run_stopped_while_timing_generation_keeps_the_training_rows(tmp_path):
    """bench_gpu.sh runs each step under `timeout`: the JSON holds the training rows as soon as they
    are measured, not only once the (compiled) generation row is done."""
    out = tmp_path / "bench.json"
    stopped = ("import sys, bench\n"
               "def generation(s): raise SystemExit('stopped while timing generation')\n"
               "bench.bench_generation = generation\n"
               "bench.main(sys.argv[1:])\n")
    r = run_script("-c", stopped, "config/smoke.py", "--n_layer=1", "--block_size=32",
                   "--batch_size=2", "--compare=base,loss_chunk=0", "--iters=1", "--repeats=1",
                   "--warmup=0", "--gen_tokens=4", "--threads=1", f"--json={out}", check=False)
    assert r.returncode == 1 and "stopped while timing generation" in r.stderr
    report = json.loads(out.read_text())
    assert ([v["variant"] for v in report["variants"]] == ["base", "loss_chunk=0"]
            and report["generation"] is None)
    assert all(v["ms_per_step"] > 0 for v in report["variants"])


def test_bench_refuses_damaged_data_before_timing(owt_data, tmp_path):
    """A train.bin with an id past the embedding was an IndexError inside the timed step: one line
    from common.check_data, the check train.py makes
    (test_train covers the other kinds of damage)."""
    (tmp_path / "train.bin").write_bytes(b"\x60\xea" * 64)  # id 60000
    (tmp_path / "meta.json").write_text((owt_data / "meta.json").read_text())
    r = run_in_process("bench.py", *TINY_RUN, f"--data={tmp_path}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "train.bin holds token id 60000 at token 0, outside the vocabulary of 50257" in lines[0]


# ------------------------------------------------------------ --plan: memory per GPU by micro-batch

@pytest.mark.parametrize("option", ["a", "b", "c"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_saved_activations_are_linear_in_the_micro_batch_and_match_the_formula(option, dtype):
    """The plan extrapolates from micro-batches 1 and 2 in a straight line and prints a formula
    beside the measurement: both must hold on the measured bytes
    (one real forward and backward each)."""
    cfg = tiny(option)
    torch.manual_seed(0)
    model = GPT(cfg)
    measured = {B: bench.saved_activation_bytes(model, B, 32, dtype) for B in (1, 2, 3, 4)}
    per_sample = measured[2] - measured[1]
    assert per_sample > 0
    for B in (3, 4):  # the straight line through 1 and 2 predicts 3 and 4 to within 0.1%
        assert measured[B] == pytest.approx(measured[1] + per_sample * (B - 1), rel=1e-3)
    for B, m in measured.items():  # the formula, by hand from model.py, within 1%
        assert bench.activation_formula(cfg, B, 32, dtype)["total"] == pytest.approx(m, rel=0.01), B
    f = bench.activation_formula(cfg, 1, 32, dtype)
    assert f["per_token"] * 32 == pytest.approx(per_sample, rel=0.01)
    # the backward ran and its gradients were let go
    assert all(p.grad is None for p in model.parameters())


def test_half_precision_saves_less_than_fp32():
    cfg = tiny("a")
    model = GPT(cfg)
    half, full = (bench.saved_activation_bytes(model, 2, 32, dt)
                  - bench.saved_activation_bytes(model, 1, 32, dt)
                  for dt in ("bfloat16", "float32"))
    # the norms' inputs, the loss's grad_x and the logsumexp stay fp32
    assert 0.5 < half / full < 0.75


def planned_total(r: dict, cfg: GPTConfig, opt: str, b: int) -> float:
    """By hand: (state + activations + the loss's transient) x 1.15, + the (patched) 1 MiB context
    and 0.5 MiB of NCCL buffers."""
    act = r["act_fixed"] + r["act_per_sample"] * b
    return ((r[f"state_{opt}"] + act + bench.logits_transient_bytes(cfg, b, 32, r["dtype"])) * 1.15
            + (3 << 19))


def test_the_planned_micro_batch_fits_and_one_more_does_not(monkeypatch):
    # capacities a tiny model can fill
    monkeypatch.setattr(bench, "V100_GIB", {0.02: 0.02, 0.05: 0.05})
    monkeypatch.setattr(bench, "CUDA_CONTEXT_BYTES", 1 << 20)
    monkeypatch.setattr(bench, "NCCL_BYTES", 1 << 19)
    rows = bench.memory_plan(["a", "c"], 32,
                             shape_kw=dict(n_layer=2, n_embd=64, n_head=2, vocab_size=1000))
    assert [(r["option"], r["dtype"]) for r in rows] == [("A", "bfloat16"), ("A", "float32"),
                                                         ("C", "bfloat16"), ("C", "float32")]
    for r in rows:
        assert r["ratio"] == pytest.approx(1.0, rel=0.01)
        cfg = GPTConfig(**(OPTIONS[r["option"].lower()] | dict(n_layer=2, n_embd=64, n_head=2,
                                                               vocab_size=1000, block_size=32)))
        for gib in bench.V100_GIB:
            for opt in ("adamw", "muon"):
                pow2, best = r[f"fit{gib}_{opt}"]
                assert best > 1 and pow2 & (pow2 - 1) == 0 and pow2 <= best < 2 * pow2
                fits, fails = (planned_total(r, cfg, opt, b) for b in (best, best + 1))
                assert fits <= gib * 2**30 < fails, (r["option"], r["dtype"], gib, opt)
        assert r["fit0.05_adamw"][1] > r["fit0.02_adamw"][1]
        # Muon keeps one moment for the matrices, not two
        assert r["fit0.02_muon"][1] >= r["fit0.02_adamw"][1]


def test_state_bytes_by_hand():
    s = bench.state_bytes(1000, "adamw")
    assert (s["weights"], s["grads"], s["optimizer"], s["ddp_buckets"],
            s["total"]) == (4000, 4000, 8000, 0, 16000)
    assert bench.state_bytes(1000, "muon", n_muon=600)["optimizer"] == 8 * 400 + 4 * 600


def test_logits_transient_is_capped_at_the_loss_chunk():
    cfg = GPTConfig(**OPTIONS["a"], loss_chunk=4096)
    one, four, sixteen = (bench.logits_transient_bytes(cfg, b, 1024, "float16") for b in (1, 4, 16))
    w = 8 * 50304 * 320  # two fp32 V×d temporaries
    assert one == 1024 * 50304 * 6 + w and four == sixteen == 4096 * 50304 * 6 + w
    assert bench.logits_transient_bytes(cfg, 1, 1024, "float32") == 1024 * 50304 * 4 + w


class LiveBytes(TorchDispatchMode):
    """The bytes of the live storages made by aten ops inside the mode, and their peak: each op's
    outputs are added once per storage, and storages no tensor holds any longer are dropped before
    the next op's."""

    def __init__(self):
        super().__init__()
        self.live, self.cur, self.peak = {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for k in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.cur -= self.live.pop(k)[1]
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.live:
                st = t.untyped_storage()
                self.live[st.data_ptr()] = (StorageWeakRef(st), st.nbytes())
                self.cur += st.nbytes()
        self.peak = max(self.peak, self.cur)
        return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("n_tokens", [32, 64, 256])  # under one chunk, one chunk, four chunks
def test_logits_transient_formula_against_the_live_bytes(dtype, n_tokens):
    cfg = tiny("a", loss_chunk=64)
    V, d = cfg.padded_vocab_size, cfg.n_embd
    x, w = torch.randn(n_tokens, d, requires_grad=True), torch.randn(V, d, requires_grad=True)
    t = torch.randint(0, cfg.vocab_size, (n_tokens,))
    ctx = torch.autocast("cpu", dtype=getattr(torch, dtype), enabled=dtype != "float32")
    mode = LiveBytes()
    with ctx, mode:
        ChunkedCrossEntropy.apply(x, w, t, cfg.vocab_size, cfg.loss_chunk, True)
    saved = 4 * n_tokens * d + 4 * V * d  # grad_x and grad_w: counted with the saved activations
    formula = bench.logits_transient_bytes(cfg, n_tokens, 1, dtype, cpu=True)
    # within 20%: on this tiny model the CPU's small temporaries (index, gather, the last chunk's
    # slices) weigh as much as a chunk's logits; measured 0-18% over the formula
    assert mode.peak - saved == pytest.approx(formula, rel=0.2)


def test_bench_plan_end_to_end():
    # block 8: the bf16 vocabulary GEMMs are slow on a CPU, and the plan runs the same at any block
    r = run_script("bench.py", "--plan", "--block_size=8", "--threads=1")
    assert "memory per GPU at block 8" in r.stdout and "largest micro-batch per GPU" in r.stdout
    for option in ("A", "B", "C"):
        assert any(line.startswith(f"{option} ") and "bfloat16" in line
                   for line in r.stdout.splitlines())
