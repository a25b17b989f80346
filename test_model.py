"""
Core tests of model.py, each against something independent of the code under test: the exact
parameter counts of options A, B and C; causality; RoPE against a complex-number reference; the
SDPA attention and the whole forward pass against a naive implementation written here from the
papers' formulas; tied weights; GPT-2 init; the loss at init; overfitting one batch; the optimizer's
parameter groups; and the refusal of bad configs and over-long inputs.

Full-size models only where the size is the point (counts, init, loss at init); everything else
runs on tiny models with the options' choices of MLP, norm and positions.
"""

import math

import pytest
import torch
from torch import nn

from model import (
    GPT,
    OPTIONS,
    ChunkedCrossEntropy,
    GPTConfig,
    apply_rotary_emb,
    fp16_grad_scale,
    precompute_rope,
)

OPTION_NAMES = sorted(OPTIONS)  # ["a", "b", "c"]
EXPECTED_PARAMS = {"a": 35_763_840, "b": 31_740_416, "c": 33_860_736}
VOCAB = 50257
TINY_VOCAB = 1000  # padded to 1024, so the padding rows are exercised here too


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these matrices are small, and on a busy 2-core machine OpenMP's spinning
    threads made the tiny models ~20x slower (measured) than one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def full_model():
    """The real options at full size (block_size 1024, vocab 50257), built once per option."""
    cache: dict[str, GPT] = {}

    def get(option: str) -> GPT:
        if option not in cache:
            torch.manual_seed(0)
            cache[option] = GPT(GPTConfig(**OPTIONS[option]))
        return cache[option]

    return get


# Each option's head size (A 64, B 32, C 64) with a few heads, two layers and a short context.
TINY_SHAPES = {"a": dict(n_embd=128, n_head=2), "b": dict(n_embd=96, n_head=3),
               "c": dict(n_embd=128, n_head=2)}


def tiny_config(option: str, **overrides) -> GPTConfig:
    """An option's MLP, norm and positions at a size that runs in milliseconds on a CPU."""
    args = {**OPTIONS[option], **TINY_SHAPES[option], "n_layer": 2, "block_size": 32,
            "vocab_size": TINY_VOCAB}
    return GPTConfig(**{**args, **overrides})


def randomize_(model: GPT, seed: int = 0) -> GPT:
    """Weights far from init: attention peaked, norm gains and biases non-trivial, so that a wrong
    mask, rotation or norm shows up as a large difference instead of hiding in near-uniform
    attention."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 1.5 / math.sqrt(p.size(-1)))
            else:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g) if p.abs().sum() > 0
                        else 0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


# ---------------------------------------------------------------- independent references

def ref_rope(x: torch.Tensor, theta: float, positions: torch.Tensor) -> torch.Tensor:
    """RoPE as complex multiplication (Su et al. 2021), rotate-half layout: dimension j pairs with
    j + d/2 as z_j = x_j + i·x_{j+d/2}, rotated by exp(i·m·θ_j), θ_j = theta^(-2j/d). float64."""
    d = x.size(-1)
    z = torch.complex(x[..., :d // 2].double(), x[..., d // 2:].double())
    freqs = theta ** (-2 * torch.arange(d // 2, dtype=torch.float64) / d)
    angles = positions.double()[:, None] * freqs[None, :]  # (T, d/2)
    z = z * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.imag], dim=-1)


def ref_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    y = x @ layer.weight.t()
    return y if layer.bias is None else y + layer.bias


def ref_norm(x: torch.Tensor, norm: nn.Module, config: GPTConfig) -> torch.Tensor:
    eps = config.norm_eps
    if config.norm == "rmsnorm":  # Zhang & Sennrich 2019: x / RMS(x) · g
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight
    mu = x.mean(-1, keepdim=True)  # Ba et al. 2016, biased variance
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * norm.weight + norm.bias


def ref_attention(attn: nn.Module, x: torch.Tensor, config: GPTConfig) -> torch.Tensor:
    """Multi-head causal attention with an explicit mask and softmax (Vaswani et al. 2017)."""
    B, T, C = x.shape
    H, d = config.n_head, C // config.n_head
    q, k, v = ref_linear(x, attn.c_attn).split(C, dim=-1)
    q, k, v = (t.reshape(B, T, H, d).transpose(1, 2) for t in (q, k, v))
    if config.pos_emb == "rope":
        pos = torch.arange(T)
        q, k = (ref_rope(q, config.rope_theta, pos).float(),
                ref_rope(k, config.rope_theta, pos).float())
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v
    return ref_linear(y.transpose(1, 2).reshape(B, T, C), attn.c_proj)


def ref_mlp(mlp: nn.Module, x: torch.Tensor, config: GPTConfig) -> torch.Tensor:
    h = ref_linear(x, mlp.c_fc)
    if config.mlp == "swiglu":  # Shazeer 2020: Swish(x W_gate) * (x W_up)
        gate, up = h[..., :config.ffn_hidden], h[..., config.ffn_hidden:]
        h = gate * torch.sigmoid(gate) * up
    else:  # GPT-2's tanh approximation of GELU (Hendrycks & Gimpel 2016)
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    return ref_linear(h, mlp.c_proj)


def ref_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The whole forward pass, pre-norm residual blocks, written out by hand."""
    c, tr = model.config, model.transformer
    x = tr.wte.weight[idx]
    if c.pos_emb == "learned":
        x = x + tr.wpe.weight[:idx.size(1)]
    for block in tr.h:
        x = x + ref_attention(block.attn, ref_norm(x, block.ln_1, c), c)
        x = x + ref_mlp(block.mlp, ref_norm(x, block.ln_2, c), c)
    return ref_norm(x, tr.ln_f, c) @ tr.wte.weight[:c.vocab_size].t()


# ---------------------------------------------------------------- sizes

@pytest.mark.parametrize("option", OPTION_NAMES)
def test_exact_parameter_count(full_model, option):
    assert full_model(option).num_params() == EXPECTED_PARAMS[option]


def test_ffn_hidden_derivation():
    assert GPTConfig(**OPTIONS["a"]).ffn_hidden == 854  # 8/3·320 = 853.3, rounded to even
    assert GPTConfig(**OPTIONS["b"]).ffn_hidden == 682  # 8/3·256 = 682.7
    assert GPTConfig(**OPTIONS["c"]).ffn_hidden == 1536  # GELU: 4·384
    assert GPTConfig(**OPTIONS["a"], ffn_hidden=1000).ffn_hidden == 1000  # an explicit width stays


@pytest.mark.parametrize("option", OPTION_NAMES)
def test_padded_embedding_not_counted(full_model, option):
    model = full_model(option)
    c = model.config
    assert c.padded_vocab_size == 50304 and c.padded_vocab_size % 64 == 0
    assert model.transformer.wte.weight.shape == (50304, c.n_embd)
    total = sum(p.numel() for p in model.parameters())
    assert total - model.num_params() == (50304 - VOCAB) * c.n_embd


# ---------------------------------------------------------------- forward pass

@pytest.mark.parametrize("option", OPTION_NAMES)
def test_forward_matches_naive_reference(option):
    torch.manual_seed(0)
    model = randomize_(GPT(tiny_config(option)))
    idx = torch.randint(TINY_VOCAB, (2, 32))
    with torch.no_grad():
        logits, loss = model(idx)
        ref = ref_logits(model, idx)
    assert loss is None
    assert logits.shape == (2, 32, TINY_VOCAB)  # sliced to the real vocab
    torch.testing.assert_close(logits, ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("option", OPTION_NAMES)
def test_sdpa_attention_matches_masked_softmax(option):
    """The SDPA path of one attention layer against an explicit causal mask and softmax, in fp32."""
    config = tiny_config(option, n_layer=1)
    model = randomize_(GPT(config))
    attn = model.transformer.h[0].attn
    x = torch.randn(3, 32, config.n_embd)
    rope = (model.rope_cos, model.rope_sin) if config.pos_emb == "rope" else None
    with torch.no_grad():
        out = attn(x, rope)
        ref = ref_attention(attn, x, config)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("option", OPTION_NAMES)
def test_causal(option):
    """Changing the tokens after position t leaves the logits at positions <= t unchanged."""
    torch.manual_seed(0)
    model = randomize_(GPT(tiny_config(option)))
    idx = torch.randint(TINY_VOCAB, (2, 32))
    with torch.no_grad():
        logits = model(idx)[0]
        for t in (0, 9, 30):
            changed = idx.clone()
            changed[:, t + 1:] = (idx[:, t + 1:] + 1 + torch.randint(
                TINY_VOCAB - 1, idx[:, t + 1:].shape)) % TINY_VOCAB
            new = model(changed)[0]
            torch.testing.assert_close(new[:, :t + 1], logits[:, :t + 1], atol=1e-5, rtol=0)
            # the future did change
            assert not torch.allclose(new[:, t + 1], logits[:, t + 1], atol=1e-3)


@pytest.mark.parametrize("option", OPTION_NAMES)
def test_dropout_only_in_training_mode(option):
    """A model trained with dropout computes, in eval mode, exactly what the same weights without
    dropout do (attention, residual and embedding dropout all off); in training mode
    dropout does act."""
    torch.manual_seed(0)
    with_dropout = randomize_(GPT(tiny_config(option, dropout=0.5)))
    without = GPT(tiny_config(option, dropout=0.0))
    without.load_state_dict(with_dropout.state_dict())
    without.eval()
    idx = torch.randint(TINY_VOCAB, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(with_dropout(idx)[0], without(idx)[0], atol=1e-5, rtol=0)
        with_dropout.train()
        assert not torch.allclose(with_dropout(idx)[0], without(idx)[0], atol=1e-3)


def test_forward_refuses_sequences_longer_than_block_size():
    model = GPT(tiny_config("a"))
    model(torch.zeros(1, 32, dtype=torch.long))  # exactly block_size is fine
    too_long = torch.zeros(1, 33, dtype=torch.long)
    with pytest.raises(ValueError, match="block_size"):
        model(too_long)
    with pytest.raises(ValueError, match="block_size"):
        model(too_long, too_long)


# ---------------------------------------------------------------- RoPE

@pytest.mark.parametrize("head_dim,theta", [(64, 10000.0), (32, 10000.0), (16, 500000.0)])
def test_rope_matches_complex_reference(head_dim, theta):
    T = 1024
    x = torch.randn(2, 3, T, head_dim)
    out = apply_rotary_emb(x, *precompute_rope(head_dim, T, theta))
    ref = ref_rope(x, theta, torch.arange(T))
    # the angles m·θ_j are fp32 (as in HF Llama): ~1e-4 rad off at position 1023
    torch.testing.assert_close(out.double(), ref, atol=1e-3, rtol=0)
    torch.testing.assert_close(out[:, :, :64].double(), ref[:, :, :64], atol=1e-5, rtol=0)


def test_model_rope_buffers_match_reference():
    model = GPT(tiny_config("a", block_size=256))
    d = model.config.head_dim
    angles = (torch.arange(256, dtype=torch.float64)[:, None]
              * 10000.0 ** (-2 * torch.arange(d // 2) / d))
    torch.testing.assert_close(model.rope_cos.double(), angles.cos(), atol=1e-4, rtol=0)
    torch.testing.assert_close(model.rope_sin.double(), angles.sin(), atol=1e-4, rtol=0)


def test_rope_scores_depend_only_on_relative_offset():
    d, T = 64, 1024
    cos, sin = precompute_rope(d, T)
    q, k = torch.randn(d), torch.randn(d)

    def rot(v, pos):
        return apply_rotary_emb(v.view(1, 1, 1, d), cos[pos:pos + 1], sin[pos:pos + 1]).view(d)

    def score(m, n):
        return torch.dot(rot(q, m), rot(k, n)).item()

    for m, n in [(0, 0), (5, 2), (100, 37), (40, 300)]:
        for s in (1, 17, 500):
            assert score(m + s, n + s) == pytest.approx(score(m, n), abs=1e-3)
    # and the score does depend on the offset (an identity "rotation" would pass the above)
    assert abs(score(10, 3) - score(10, 4)) > 1e-2


# ---------------------------------------------------------------- weights and init

@pytest.mark.parametrize("option", OPTION_NAMES)
def test_tied_weights_are_one_tensor(option):
    model = GPT(tiny_config(option))
    wte = model.transformer.wte.weight
    assert model.lm_head.weight is wte
    assert model.lm_head.weight.data_ptr() == wte.data_ptr()
    assert sum(p is wte for p in model.parameters()) == 1
    # after an optimizer step and a state_dict round trip they are still one tensor
    [opt] = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    idx = torch.randint(TINY_VOCAB, (2, 16))
    model(idx, idx)[1].backward()
    opt.step()
    fresh = GPT(tiny_config(option))
    fresh.load_state_dict(model.state_dict())
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    torch.testing.assert_close(fresh.lm_head.weight, model.lm_head.weight, rtol=0, atol=0)
    with torch.no_grad():
        fresh.transformer.wte.weight[5, 0] = 123.0
    assert fresh.lm_head.weight[5, 0].item() == 123.0


@pytest.mark.parametrize("option", OPTION_NAMES)
def test_gpt2_init(full_model, option):
    model = full_model(option)
    c = model.config
    residual = torch.cat([p.flatten() for n, p in model.named_parameters()
                          if n.endswith("c_proj.weight")])
    other = [p.flatten() for n, p in model.named_parameters()
             if n.endswith("c_attn.weight") or n.endswith("c_fc.weight")
             or n.endswith("wpe.weight")]
    other = torch.cat(other + [model.transformer.wte.weight[:c.vocab_size].flatten()])
    with torch.no_grad():
        assert residual.std().item() == pytest.approx(0.02 / math.sqrt(2 * c.n_layer), rel=0.02)
        assert residual.mean().abs().item() < 1e-4
        assert other.std().item() == pytest.approx(0.02, rel=0.02)
        assert other.mean().abs().item() < 1e-4
        assert (model.transformer.wte.weight[c.vocab_size:] == 0).all()  # padding rows
    for name, p in model.named_parameters():
        if p.dim() == 1:  # norm gains 1, LayerNorm biases 0
            assert (p == (0.0 if name.endswith("bias") else 1.0)).all(), name


@pytest.mark.parametrize("loss_chunk", [0, 7, 4096])
def test_padding_rows_get_zero_gradient(loss_chunk):
    model = GPT(tiny_config("c", loss_chunk=loss_chunk))
    wte = model.transformer.wte.weight
    assert wte.size(0) == 1024
    idx = torch.randint(TINY_VOCAB, (2, 32))
    targets = torch.randint(TINY_VOCAB, (2, 32))
    targets[0, :5] = -1  # ignored positions too
    model(idx, targets)[1].backward()
    assert (wte.grad[TINY_VOCAB:] == 0).all()
    assert wte.grad[:TINY_VOCAB].abs().sum() > 0
    # so AdamW (with weight decay) leaves them at zero
    [opt] = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    opt.step()
    assert (wte[TINY_VOCAB:] == 0).all()


# ---------------------------------------------------------------- loss and learning

@pytest.mark.parametrize("option", OPTION_NAMES)
def test_initial_loss_is_log_vocab(full_model, option):
    """At init the prediction is near uniform: loss ≈ ln(50257) = 10.825 (plus ~σ²/2 for the small
    random logits, 0.04-0.08 here). 1024 random targets make the sampling noise ~0.01, well below
    the 0.1 tolerance."""
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(VOCAB, (8, 128), generator=g)
    targets = torch.randint(VOCAB, (8, 128), generator=g)
    with torch.no_grad():
        _, loss = full_model(option)(idx, targets)
    assert abs(loss.item() - math.log(VOCAB)) < 0.1


@pytest.mark.parametrize("option", OPTION_NAMES)
def test_overfits_one_batch(option):
    torch.manual_seed(0)
    model = GPT(tiny_config(option))
    idx = torch.randint(TINY_VOCAB, (4, 32))
    targets = torch.randint(TINY_VOCAB, (4, 32))
    [opt] = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), "cpu")
    first = None
    for _ in range(60):
        _, loss = model(idx, targets)
        first = first if first is not None else loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert first == pytest.approx(math.log(TINY_VOCAB), abs=0.1)
    assert loss.item() < 0.05  # it memorises the 128 random targets


# ---------------------------------------------------------------- optimizer groups

@pytest.mark.parametrize("option,bias", [("a", False), ("b", False), ("c", False), ("c", True)])
def test_optimizer_groups(option, bias):
    model = GPT(tiny_config(option, bias=bias))
    [opt] = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay_group, other_group = opt.param_groups
    assert decay_group["weight_decay"] == 0.1 and other_group["weight_decay"] == 0.0
    # expected from the module types: Linear and Embedding weights decay; norm gains/biases and
    # Linear biases do not
    expected_decay, expected_other = set(), set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            expected_decay.add(id(module.weight))
            if getattr(module, "bias", None) is not None:
                expected_other.add(id(module.bias))
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            expected_other.update(id(p) for p in module.parameters())
    decayed = [id(p) for p in decay_group["params"]]
    others = [id(p) for p in other_group["params"]]
    assert set(decayed) == expected_decay and set(others) == expected_other
    # each parameter exactly once, the tied matrix included
    everything = decayed + others
    assert len(everything) == len(set(everything)) == len(list(model.parameters()))
    if option == "c":
        assert any(isinstance(m, nn.LayerNorm) and id(m.bias) in set(others)
                   for m in model.modules())


@pytest.mark.parametrize("option,bias", [("a", False), ("b", False), ("c", False), ("c", True)])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(option, bias):
    """optimizer='muon': every 2-D weight inside a block (attention and MLP) in Muon; the tied
    embedding / lm_head, learned positions, norms' gains and biases in AdamW (matrices decayed, the
    rest not); each parameter once."""
    model = GPT(tiny_config(option, bias=bias))
    muon, adamw = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", "muon", 0.05, 0.9, 0.01)
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    [group] = muon.param_groups
    assert ((group["lr"], group["momentum"], group["weight_decay"], group["nesterov"])
            == (0.05, 0.9, 0.01, True))
    expected_muon = {id(m.weight) for block in model.transformer.h for m in block.modules()
                     if isinstance(m, nn.Linear)}
    # c_attn, attn c_proj, c_fc, mlp c_proj
    assert len(expected_muon) == 4 * len(model.transformer.h)
    assert {id(p) for p in group["params"]} == expected_muon
    decay_group, other_group = adamw.param_groups
    decayed, others = {id(p) for p in decay_group["params"]}, {id(p) for p in other_group["params"]}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    assert decayed == embeddings and id(model.lm_head.weight) in decayed  # tied: one tensor
    assert (others == {id(p) for p in model.parameters() if p.dim() < 2}
            and decay_group["weight_decay"] == 0.1)
    everything = [id(p) for opt in (muon, adamw) for g in opt.param_groups for p in g["params"]]
    assert len(everything) == len(set(everything)) == len(list(model.parameters()))
    assert len(model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")) == 1  # adamw: AdamW alone


def reference_muon_update(grads: list[torch.Tensor], shape: tuple[int, int], lr: float,
                          momentum: float) -> torch.Tensor:
    """Muon by hand (Jordan et al. 2024, torch's documented form): the momentum buffer
    B = mu B + (1 - mu) g, the Nesterov step g + mu (B - g), five quintic Newton-Schulz iterations
    on the wide orientation, normalised by the Frobenius norm, and the step scaled by
    sqrt(max(1, rows / cols)). Returns the summed update over the steps."""
    a, b, c = 3.4445, -4.7750, 2.0315
    buf, total = torch.zeros(shape), torch.zeros(shape)
    for g in grads:
        buf = momentum * buf + (1 - momentum) * g
        x = (g + momentum * (buf - g)).double()
        x = x.T if shape[0] > shape[1] else x
        x = x / x.norm()
        for _ in range(5):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        x = x.T if shape[0] > shape[1] else x
        total += lr * max(1, shape[0] / shape[1]) ** 0.5 * x.float()
    return total


def test_muon_step_matches_a_hand_written_reference():
    """Three steps of configure_optimizers' Muon on a tall matrix (rows > cols: the transpose and
    the sqrt(3) LR adjustment both matter) against the reference in float64; torch iterates in bf16,
    so within bf16's precision."""
    model = GPT(tiny_config("a"))
    muon, _ = model.configure_optimizers(0.0, 1e-3, (0.9, 0.95), "cpu", "muon", 0.02, 0.9, 0.0)
    weight = model.transformer.h[0].attn.c_attn.weight  # (3 * 32, 32) in the tiny shape
    assert weight.shape[0] == 3 * weight.shape[1]
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(weight.shape, generator=g) for _ in range(3)]
    before = weight.detach().clone()
    for grad in grads:
        for p in model.parameters():
            p.grad = grad.clone() if p is weight else None
        muon.step()
    expected = reference_muon_update(grads, tuple(weight.shape), 0.02, 0.9)
    update = before - weight.detach()
    torch.testing.assert_close(update, expected, rtol=0, atol=0.02 * expected.abs().max().item())
    # the tolerance tells the variants apart: without the LR adjustment, or with another momentum
    for lr, momentum in ((0.02 / 3**0.5, 0.9), (0.02, 0.5)):
        other = reference_muon_update(grads, tuple(weight.shape), lr, momentum)
        assert (other - update).abs().max() > 0.1 * expected.abs().max()


# ---------------------------------------------------------------- bad configs

@pytest.mark.parametrize("bad", [
    dict(mlp="relu"), dict(norm="batchnorm"), dict(pos_emb="alibi"),
    dict(n_embd=320, n_head=6),  # 320 is not divisible by 6
    dict(n_embd=30, n_head=2),  # RoPE needs an even head size (15 is odd)
    dict(n_head=0), dict(n_layer=0), dict(block_size=-1), dict(dropout=1.0),
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        GPTConfig(**{**OPTIONS["a"], **bad})


def fp16_cases():
    """(x, w, targets) that push the fp16 gradient scale to its edges: tiny activations (a large
    scale, g itself near the limit), large ones with every token one target (the weight gradient's
    column sums at their largest), a peaked softmax, and a chunk of mostly ignored tokens."""
    g = torch.Generator().manual_seed(0)
    N, V, C = 64, 128, 32
    t_mixed = torch.randint(0, 100, (N,), generator=g)
    one_valid = torch.full((N,), -1)
    one_valid[0] = 3
    return {
        "tiny": (torch.randn(N, C, generator=g) * 0.01, torch.randn(V, C, generator=g) * 0.01,
                 one_valid),
        "large_one_target": (torch.randn(N, C, generator=g) * 40, torch.randn(V, C, generator=g),
                             torch.full((N,), 7)),
        "peaked": (torch.randn(N, C, generator=g) * 8, torch.randn(V, C, generator=g) * 4, t_mixed),
        "mostly_ignored": (torch.randn(N, C, generator=g), torch.randn(V, C, generator=g) * 0.02,
                           torch.where(torch.arange(N) % 8 == 0, t_mixed, -1)),
    }


@pytest.mark.parametrize("case", list(fp16_cases()))
def test_fp16_gradient_scale_bounds_both_products_and_the_gradients_match_fp64(case):
    """fp16_grad_scale's bound, from x and w alone, holds against g and both products computed
    naively in fp64 from the softmax (each at most 2^14 once scaled, far from fp16's 65504), and the
    fp16 chunked loss's gradients are finite and match that fp64 reference (from the same fp16
    inputs and logits)."""
    x, w, t = fp16_cases()[case]
    V = 100
    xh, wh = x.half(), w.half()
    # the fp16 GEMM's logits, as the loss reads them
    logits = (xh.float() @ wh.float().t()).half().double()
    logits[:, V:] = float("-inf")
    g = torch.softmax(logits, dim=-1)
    valid = t != -1
    g[valid.nonzero().squeeze(1), t[valid]] -= 1.0
    g *= valid[:, None]
    scale = fp16_grad_scale(xh, valid.sum(), wh.abs().max().float()).item()
    grad_x, grad_w = g @ wh.double(), g.t() @ xh.double()
    for product in (g, grad_x, grad_w):
        assert scale * product.abs().max().item() <= 2.0**14
    bound = max(1.0, 2 * wh.abs().max().item(),
                valid.sum().item() ** 0.5 * xh.double().norm(dim=0).max().item())
    assert 2.0**13 < scale * bound <= 2.0**14  # the largest power of two the bound allows
    x, w = xh.float().requires_grad_(), wh.float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        ChunkedCrossEntropy.apply(x, w, t, V, 16).backward()
    for ours, ref in ((x.grad, grad_x), (w.grad, grad_w)):
        ref = ref.float() / valid.sum()
        assert torch.isfinite(ours).all()
        assert (ours - ref).abs().max() <= 1e-2 * ref.abs().max()
