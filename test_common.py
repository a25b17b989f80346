"""Tests of common.py: batch windows, device and dtype resolution, and checkpoint files."""

import numpy as np
import pytest
import torch

import common
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
    common.save_checkpoint({"model": model.state_dict(), "model_args": common.model_args(config)}, str(path))
    assert not (tmp_path / "ckpt.pt.tmp").exists()
    loaded = common.model_from_checkpoint(common.load_checkpoint(str(tmp_path)))  # a folder means its ckpt.pt
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
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


def test_train_step_accumulates_to_the_full_batch_and_skips_non_finite_updates():
    """Two micro-batches accumulated equal one step on both together; a NaN gradient skips the update."""
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 100, (4, 16), generator=g), torch.randint(0, 100, (4, 16), generator=g)
    results = []
    for grad_accum, batches in ((1, [(x, y)]), (2, [(x[:2], y[:2]), (x[2:], y[2:])])):
        torch.manual_seed(0)
        model = GPT(config)
        optimizer = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        feed = iter(batches)
        loss_sum, norm, applied = common.train_step(model, optimizer, scaler, lambda f=feed: next(f), grad_accum,
                                                    1.0, common.autocast("cpu", "float32"))
        assert applied
        results.append((loss_sum.item() / grad_accum, norm.item(), model.state_dict()))
    (loss1, norm1, state1), (loss2, norm2, state2) = results
    assert abs(loss1 - loss2) < 1e-5 and abs(norm1 - norm2) < 1e-5
    for k in state1:
        torch.testing.assert_close(state1[k], state2[k], atol=1e-5, rtol=1e-4)  # Adam magnifies fp32 noise

    model = GPT(config)
    optimizer = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, norm, applied = common.train_step(model, optimizer, torch.amp.GradScaler("cpu", enabled=False),
                                         lambda: (x, y), 1, 1.0, common.autocast("cpu", "float32"))
    assert not applied and not torch.isfinite(norm)
    for k, v in model.state_dict().items():
        assert torch.equal(v.nan_to_num(), before[k].nan_to_num()), k  # nothing was updated
