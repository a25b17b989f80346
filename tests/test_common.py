"""Tests of common.py: batch windows, device and dtype resolution, checkpoint files, and the
training step (gradient accumulation, GradScaler unscaling before clipping, one DDP all-reduce per
step, non-finite updates skipped)."""

import contextlib
import gc
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import common
from launch import ROOT, file_size_limit, one_line_error
from model import GPT, GPTConfig


def make_data(tmp_path, n=5000):
    tokens = np.arange(n, dtype=np.uint16) % 50257
    tokens.tofile(tmp_path / "train.bin")
    return tokens


def test_get_batch_windows_are_shifted_by_one_and_reproducible(tmp_path):
    tokens = make_data(tmp_path)
    x, y = common.get_batch(str(tmp_path), "train", 6, 32, torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (6, 32) and x.dtype == torch.int64
    for row_x, row_y in zip(x.numpy(), y.numpy(), strict=True):
        start = int(row_x[0])  # the data is 0, 1, 2, ... so a window's first token is its offset
        np.testing.assert_array_equal(row_x, tokens[start:start + 32])
        np.testing.assert_array_equal(row_y, tokens[start + 1:start + 33])
    x2, _ = common.get_batch(str(tmp_path), "train", 6, 32, torch.Generator().manual_seed(3))
    x3, _ = common.get_batch(str(tmp_path), "train", 6, 32, torch.Generator().manual_seed(4))
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_get_batch_refuses_data_shorter_than_a_window(tmp_path):
    make_data(tmp_path, n=20)
    with pytest.raises(SystemExit, match="fewer than block_size"):
        common.get_batch(str(tmp_path), "train", 1, 32, torch.Generator())


def test_resolve_device_and_dtype():
    assert common.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert common.resolve_device("cpu") == "cpu"
    with pytest.raises(SystemExit, match="unknown device 'tpu'"):
        common.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            common.resolve_device("cuda:0")
    assert common.resolve_dtype("auto", "cpu") == "float32"
    assert common.resolve_dtype("float16", "cuda") == "float16"
    with pytest.raises(SystemExit, match="unknown dtype 'fp8'"):
        common.resolve_dtype("fp8", "cpu")


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100)
    model = GPT(config)
    path = tmp_path / "ckpt.pt"
    common.save_checkpoint({"model": model.state_dict(), "model_args": common.model_args(config)},
                           str(path))
    assert not (tmp_path / "ckpt.pt.tmp").exists()
    # a folder means its ckpt.pt
    loaded = common.model_from_checkpoint(common.load_checkpoint(str(tmp_path)))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied after loading

    with pytest.raises(SystemExit, match="no checkpoint at"):
        common.load_checkpoint(str(tmp_path / "missing.pt"))
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:1000])  # a file cut short
    with pytest.raises(SystemExit, match="corrupt"):
        common.load_checkpoint(str(tmp_path / "cut.pt"))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="not a checkpoint of this project"):
        common.load_checkpoint(str(tmp_path / "other.pt"))
    bad = {"model": model.state_dict(), "model_args": {**common.model_args(config), "mlp": "relu"}}
    with pytest.raises(SystemExit, match="unknown architecture"):
        common.model_from_checkpoint(bad)
    wrong = {"model": model.state_dict(), "model_args": {**common.model_args(config), "n_embd": 64}}
    with pytest.raises(SystemExit, match="do not match"):
        common.model_from_checkpoint(wrong)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_train_step_accumulates_to_the_full_batch_and_skips_non_finite_updates(optimizer):
    """Two micro-batches accumulated equal one step on both together; a NaN gradient skips the
    update of every optimizer (Muon's and AdamW's parameters alike)."""
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 100, (4, 16), generator=g), torch.randint(0, 100, (4, 16), generator=g)
    results = []
    for grad_accum, batches in ((1, [(x, y)]), (2, [(x[:2], y[:2]), (x[2:], y[2:])])):
        torch.manual_seed(0)
        model = GPT(config)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        optimizers = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu", optimizer)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        feed = iter(batches)
        loss_sum, norm, applied = common.train_step(model, optimizers, scaler,
                                                    lambda f=feed: next(f), grad_accum, 1.0,
                                                    common.autocast("cpu", "float32"))
        assert applied
        results.append((loss_sum.item() / grad_accum, norm.item(), model.state_dict()))
    (loss1, norm1, state1), (loss2, norm2, state2) = results
    assert abs(loss1 - loss2) < 1e-5 and abs(norm1 - norm2) < 1e-5
    orthogonalised = {name for name, p in model.named_parameters()
                      if optimizer == "muon"
                      and any(p is q for q in optimizers[0].param_groups[0]["params"])}
    for k in state1:
        if k in orthogonalised:
            # torch's Muon runs Newton-Schulz in bf16, so an fp32-noise difference between the two
            # gradients can round one element of the step differently: allow bf16's precision of the
            # step, nothing more (a micro-batch lost or counted twice turns the orthogonalised step
            # by far more than that)
            step = (state1[k] - start[k]).abs().max().item()
            torch.testing.assert_close(state1[k], state2[k], atol=step * 2**-7, rtol=0)
        else:  # Adam magnifies fp32 noise
            torch.testing.assert_close(state1[k], state2[k], atol=1e-5, rtol=1e-4)

    model = GPT(config)
    optimizers = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu", optimizer)
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, norm, applied = common.train_step(model, optimizers,
                                         torch.amp.GradScaler("cpu", enabled=False),
                                         lambda: (x, y), 1, 1.0, common.autocast("cpu", "float32"))
    assert not applied and not torch.isfinite(norm)
    for k, v in model.state_dict().items():
        assert torch.equal(v.nan_to_num(), before[k].nan_to_num()), k  # nothing was updated


def test_an_fp16_overflow_skips_both_optimizers_and_halves_the_scale_once():
    """Muon + AdamW under a GradScaler: an overflowing step unscales both optimizers' gradients,
    steps neither (no weight moves, no state is created) and halves the scale once, not once per
    optimizer; the next clean step updates the parameters of both."""
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100)
    x = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    model = GPT(config)
    muon, adamw = optimizers = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu", "muon")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    overflow = model.transformer.h[0].mlp.c_proj.weight.register_hook(
        lambda grad: grad * float("inf"))
    _, norm, applied = common.train_step(model, optimizers, scaler, lambda: (x, x), 1, 1.0,
                                         common.autocast("cpu", "float32"))
    overflow.remove()
    assert not applied and not torch.isfinite(norm) and scaler.get_scale() == 2.0**15
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not muon.state and not adamw.state
    _, _, applied = common.train_step(model, optimizers, scaler, lambda: (x, x), 1, 1.0,
                                      common.autocast("cpu", "float32"))
    assert applied and scaler.get_scale() == 2.0**15 and muon.state and adamw.state
    for name, p in model.named_parameters():  # every parameter moved, in either optimizer
        assert not torch.equal(p.detach(), before[name]), name


def test_get_batch_draws_every_full_window_and_only_those(tmp_path):
    """block_size + 2 tokens hold exactly two windows (starts 0 and 1): both are drawn, none runs
    off the end; one token fewer leaves one window; one fewer again is refused with the one-line
    error, not a traceback."""
    block = 8
    for n, starts in ((block + 2, {0, 1}), (block + 1, {0})):
        tokens = make_data(tmp_path, n=n)
        x, y = common.get_batch(str(tmp_path), "train", 200, block,
                                torch.Generator().manual_seed(0))
        assert x.shape == y.shape == (200, block)
        assert {int(s) for s in x[:, 0]} == starts
        for row_x, row_y in zip(x.numpy(), y.numpy(), strict=True):
            np.testing.assert_array_equal(row_y,
                                          tokens[int(row_x[0]) + 1:int(row_x[0]) + 1 + block])
    make_data(tmp_path, n=block)
    with pytest.raises(SystemExit, match="fewer than block_size"):
        common.get_batch(str(tmp_path), "train", 1, block, torch.Generator())


def test_train_step_clips_and_reports_the_unscaled_gradient_under_a_grad_scaler():
    """With a GradScaler (fp16 training), the norm returned, and the norm clipping acts on, is that
    of the true gradient: the gradients are unscaled before clipping. The reference is a plain
    backward without a scaler."""
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 100, (4, 16), generator=g), torch.randint(0, 100, (4, 16), generator=g)
    torch.manual_seed(0)
    reference = GPT(config)
    reference(x, y)[1].backward()
    true_norm = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in reference.parameters()])).item()
    assert true_norm > 0.1  # a clip at 0.1 acts, and a norm 2^16 times too large cannot pass for it
    torch.manual_seed(0)
    model = GPT(config)
    optimizers = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    _, norm, applied = common.train_step(model, optimizers, scaler, lambda: (x, y), 1, 0.1,
                                         common.autocast("cpu", "float32"))
    assert applied and norm.item() == pytest.approx(true_norm, rel=1e-4)


def test_train_step_all_reduces_the_gradients_once_per_step_under_ddp():
    """Under DDP the gradients are all-reduced on the last micro-step only: one reduction per
    optimizer step, whatever grad_accum (none would leave each rank with its own gradients; one per
    micro-step wastes bandwidth). Counted by a communication hook around the default all-reduce, on
    a one-process gloo group; the step itself still equals one on the whole batch without DDP."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel as DDP

    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 100, (6, 16), generator=g), torch.randint(0, 100, (6, 16), generator=g)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        reductions, states = {}, {}
        for grad_accum in (1, 3):
            torch.manual_seed(0)
            model = GPT(config)
            optimizers = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
            ddp = DDP(model)
            calls = []

            def counting_allreduce(state, bucket, calls=calls):
                calls.append(bucket.index())
                return allreduce_hook(state, bucket)

            ddp.register_comm_hook(None, counting_allreduce)
            B = 6 // grad_accum
            feed = iter([(x[i:i + B], y[i:i + B]) for i in range(0, 6, B)])
            scaler = torch.amp.GradScaler("cpu", enabled=False)
            _, _, applied = common.train_step(ddp, optimizers, scaler, lambda f=feed: next(f),
                                              grad_accum, 1.0, common.autocast("cpu", "float32"))
            assert applied
            reductions[grad_accum], states[grad_accum] = len(calls), model.state_dict()
            # Free DDP (its Reducer holds the process group) while the group is alive: freed after
            # destroy_process_group, the gloo group's destructor can hang joining its worker thread.
            del ddp
            gc.collect()  # and whatever reference cycle still holds it
    finally:
        dist.destroy_process_group()
    assert reductions[1] > 0 and reductions[3] == reductions[1]
    for k in states[1]:
        torch.testing.assert_close(states[3][k], states[1][k], atol=1e-5, rtol=1e-4)


def prepared(tmp_path, train: np.ndarray, val: np.ndarray | None = None, meta: str | None = None):
    train.astype(np.uint16).tofile(tmp_path / "train.bin")
    (val if val is not None else train).astype(np.uint16).tofile(tmp_path / "val.bin")
    (tmp_path / "meta.json").write_text(meta if meta is not None
                                        else '{"vocab_size": 50257, "tokenizer": "gpt2"}')
    return str(tmp_path)


def test_check_data_scans_a_large_file_in_evenly_spread_pieces(tmp_path, monkeypatch):
    """Past SCAN_TOKENS only SCAN_CHUNKS pieces are read (so a 9B-token file costs what 64M do): a
    bad id inside a piece is found with its position, one between pieces is left to get_batch."""
    monkeypatch.setattr(common, "SCAN_TOKENS", 1000)
    monkeypatch.setattr(common, "SCAN_CHUNKS", 10)  # pieces of 100 tokens, spread over 10,000
    ids = np.arange(10_000) % 50257
    starts = np.linspace(0, 10_000 - 100, 10, dtype=np.int64)
    assert common.bad_token(ids, 50257) is None
    inside, between = int(starts[4]) + 50, int(starts[4]) + 150
    assert common.bad_token(np.where(np.arange(10_000) == inside, 50257, ids),
                            50257) == (inside, 50257)
    assert common.bad_token(np.where(np.arange(10_000) == between, 50257, ids), 50257) is None
    assert common.bad_token(np.where(np.arange(900) == 899, 50300, ids[:900]),
                            50257) == (899, 50300)  # small: whole
    data = prepared(tmp_path, np.where(np.arange(10_000) == between, 50300, ids))
    common.check_data(data, ("train",), 32, 50257)  # the sample misses it...
    message = one_line_error(lambda: [common.get_batch(data, "train", 64, 32,
                                                       torch.Generator().manual_seed(s),
                                                       vocab_size=50257) for s in range(200)])
    assert (f"holds token id 50300 at token {between:,}, outside the vocabulary of 50257"
            in message)  # ...a batch not


def test_check_data_refuses_a_vocabulary_larger_than_the_model_and_accepts_good_data(tmp_path):
    data = prepared(tmp_path, np.arange(100))
    assert common.check_data(data, ("train", "val"), 32, 50257)["vocab_size"] == 50257
    assert "set vocab_size >= 50257" in one_line_error(common.check_data, data, ("train",), 32,
                                                       50000)
    assert "fewer than block_size+1=101" in one_line_error(common.check_data, data, ("train",),
                                                           100, 50257)
    # read as uint16: garbage ids
    (tmp_path / "meta.json").write_text('{"vocab_size": 50257, "dtype": "uint32"}')
    assert "says the tokens are uint32" in one_line_error(common.check_data, data, ("train",), 32,
                                                          50257)


@pytest.mark.parametrize("device", ["mps", "mps:0", "cpu:0", "cuda:x", "xla"])
def test_resolve_device_refuses_devices_no_script_supports(device):
    """Every script runs on CPUs and CUDA GPUs;
    mps was listed by sample.py's --help and failed in torch."""
    assert (f"unknown device '{device}': use auto, cpu, cuda or cuda:N"
            in one_line_error(common.resolve_device, device))


@pytest.mark.slow
def test_device_auto_without_a_gpu_under_torchrun_stops_in_one_line(monkeypatch):
    """torchrun's ranks finding no GPU would train on gloo in fp32 for the whole budget without a
    word; device=cpu, the rehearsal's, still means the CPU,
    and one process may still fall back to it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "8")
    message = one_line_error(common.resolve_device, "auto")
    assert message.startswith("error: torchrun started 8 processes, but torch sees no CUDA GPU")
    assert "--device=cpu" in message
    assert common.resolve_device("cpu") == "cpu"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert common.resolve_device("auto") == "cpu"


def test_resolve_device_refuses_a_gpu_index_that_is_not_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert common.resolve_device("cuda:1") == "cuda:1"
    assert "torch sees 2 CUDA GPU(s), cuda:0 to cuda:1" in one_line_error(common.resolve_device,
                                                                          "cuda:2")


@pytest.mark.parametrize("load, cores, env, expected", [
    (4.9, 2, None, 1),  # a 2-core machine running other jobs: one thread
    (0.0, 2, None, 2),  # idle: torch's default (2 here), never more
    (0.7, 8, None, 2),  # never more than torch's default either
    (30.0, 8, None, 1),  # at least one
    (4.9, 2, "2", 2),  # OMP_NUM_THREADS set: the user's choice stands
])
def test_use_idle_cores_follows_the_load_unless_told(monkeypatch, load, cores, env, expected):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(common.os, "getloadavg", lambda: (load, load, load))
        monkeypatch.setattr(common.os, "cpu_count", lambda: cores)
        if env is None:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", env)
        note = " (1 thread)" if expected == 1 else f" ({expected} threads)"
        assert common.use_idle_cores("cpu") == note and torch.get_num_threads() == expected
        torch.set_num_threads(2)
        assert (common.use_idle_cores("cuda:0") == ""
                and torch.get_num_threads() == 2)  # GPUs: left alone
    finally:
        torch.set_num_threads(before)


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_files(tmp_path, monkeypatch):
    """Hours into a run the disk fills: one line saying what was kept, no half-written .tmp beside
    it, and the previous checkpoint (or JSON) as it was; it used to be an OSError traceback with the
    .tmp left behind."""
    import errno
    path, report = tmp_path / "ckpt.pt", tmp_path / "r.json"
    common.save_checkpoint({"step": 1}, str(path))
    common.write_json(str(report), {"step": 1})
    before = path.read_bytes(), report.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(common.torch, "save", full)
    monkeypatch.setattr(common.json, "dump", full)
    message = one_line_error(common.save_checkpoint, {"step": 2}, str(path))
    assert "(No space left on device)" in message and "keeps the previous checkpoint" in message
    assert "no checkpoint was written" in one_line_error(common.save_checkpoint, {"step": 2},
                                                         str(tmp_path / "new.pt"))
    assert "cannot write" in one_line_error(common.write_json, str(report), {"step": 2})
    assert (path.read_bytes(), report.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "r.json"]


def test_torch_saves_own_failed_write_is_one_line_too(tmp_path, monkeypatch):
    """Not a mock: torch.save itself stopped by a file-size limit (a full disk or quota in
    miniature). Its zip writer raises RuntimeError('unexpected pos ...') with the OSError only as
    context, which used to escape as a traceback with the .tmp left behind."""
    path = tmp_path / "ckpt.pt"
    common.save_checkpoint({"w": torch.zeros(10)}, str(path))
    before = path.read_bytes()
    with file_size_limit(64 * 1024):
        message = one_line_error(common.save_checkpoint, {"w": torch.zeros(100_000)}, str(path))
    assert "(File too large)" in message and "keeps the previous checkpoint" in message
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]

    def bug(*args, **kwargs):
        raise RuntimeError("not a disk's doing")

    monkeypatch.setattr(common.torch, "save", bug)
    # no OSError behind it: a bug, and stays one
    with pytest.raises(RuntimeError, match="not a disk's doing"):
        common.save_checkpoint({"w": torch.zeros(10)}, str(path))
    assert path.read_bytes() == before


def test_make_folder_and_json_path_below_a_file_or_unmakeable(tmp_path):
    """An output path below a file (--out_dir=notes.txt/run), or where no folder can be made, is one
    line naming the file in the way and the setting to change,
    not a NotADirectoryError traceback."""
    (tmp_path / "notes.txt").write_text("x")
    message = one_line_error(common.make_folder, str(tmp_path / "notes.txt" / "run"), "--out_dir")
    assert f"'{tmp_path / 'notes.txt'}' is a file" in message and "--out_dir" in message
    assert "--out_dir" in one_line_error(common.make_folder, "/proc/no_such_folder", "--out_dir")
    common.make_folder(str(tmp_path / "a" / "b"), "--out_dir")  # parents made
    assert (tmp_path / "a" / "b").is_dir()
    message = one_line_error(common.check_json_path, str(tmp_path / "notes.txt" / "r.json"))
    assert f"'{tmp_path / 'notes.txt'}' is a file" in message


def test_ctrl_c_in_any_script_is_one_line_and_other_errors_keep_their_traceback():
    """common installs a sys.excepthook: SIGINT (a real Ctrl-C, not a raised exception) ends a
    script importing common with one line and Python's own SIGINT exit status; any other uncaught
    error still prints its traceback."""
    script = "import common, time; print('ready', flush=True); time.sleep(60)"
    # Ctrl-C's default disposition, as a terminal gives it: a shell's background job (pytest run
    # with &) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler at all
    p = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGINT and stderr == ("error: interrupted (Ctrl-C); "
                                                         "nothing half-written is left\n")
    other = subprocess.run([sys.executable, "-c", "import common; 1 / 0"], cwd=ROOT,
                           capture_output=True, text=True)
    assert (other.returncode == 1 and "Traceback" in other.stderr
            and "ZeroDivisionError" in other.stderr)


# ---------------------------------------------------------------- one setup, one home for ranges

def test_setup_resolves_device_dtype_autocast_and_threads():
    """The one setup the five scripts call: on the CPU, auto is fp32 with no autocast; bf16
    autocasts; threads=N sets torch's, "idle" says how many it took, 0 leaves torch's default."""
    before = torch.get_num_threads()
    try:
        s = common.setup("cpu")
        assert (s.device, s.device_type, s.dtype, s.threads) == ("cpu", "cpu", "float32", "")
        assert isinstance(s.autocast, contextlib.nullcontext) and torch.get_num_threads() == before
        s = common.setup("cpu", "bfloat16", threads=1)
        assert s.dtype == "bfloat16" and isinstance(s.autocast,
                                                    torch.autocast) and torch.get_num_threads() == 1
        assert "thread" in common.setup("cpu", threads="idle").threads
    finally:
        torch.set_num_threads(before)
    assert "unknown dtype" in one_line_error(common.setup, "cpu", "float8")
    assert "unknown device" in one_line_error(common.setup, "tpu")


def test_check_ranges_and_check_sampling_name_the_setting():
    common.check_ranges({"a": 1, "b": 0}, {"a": 1, "b": 0})
    assert one_line_error(common.check_ranges, {"a": 0},
                          {"a": 1}).startswith("error: --a must be at least 1, got 0")
    assert "--b must be 0 or more, got -2" in one_line_error(common.check_ranges, {"b": -2},
                                                             {"b": 0})
    common.check_sampling(0.0, 0, 1.0)
    assert "--temperature=-1" in one_line_error(common.check_sampling, -1, 0, 1.0)
    assert "up to 10" in one_line_error(common.check_sampling, 11, 0, 1.0, 10)
    assert "--top_k=-1" in one_line_error(common.check_sampling, 1.0, -1, 1.0)
    assert "--top_p=0" in one_line_error(common.check_sampling, 1.0, 0, 0)


def test_lr_schedule_and_seeded_generator_are_importable():
    """What tests need of train.py lives in common: the schedule and the seeded streams."""
    assert common.get_lr(0, 0.0, 1e-3, 1e-4, 0) == pytest.approx(1e-3)
    a, b = common.seeded_generator(1, 0, 0), common.seeded_generator(1, 0, 0)
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    assert not torch.equal(torch.rand(3, generator=common.seeded_generator(1, 1, 0)),
                           torch.rand(3, generator=common.seeded_generator(1, 0, 0)))


def test_ddp_syncs_no_buffers_and_keeps_one_gradient_copy():
    """common.wrap_ddp, train.py's and preflight.py's DDP: RoPE's tables (computed alike on every
    rank) are not broadcast each step, and the gradients are views into DDP's buckets."""
    import torch.distributed as dist

    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=256))
        assert any(True for _ in model.buffers())  # there are buffers it could have synced
        ddp = common.wrap_ddp(model, "cpu", 0)
        assert ddp.gradient_as_bucket_view and not ddp.will_sync_module_buffers()
    finally:
        dist.destroy_process_group()
