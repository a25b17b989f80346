"""
The whole GPT in one file: configuration, the three architectures (options A, B, C), the fused
lm_head + cross-entropy used in training, KV-cache generation and the FLOPs/MFU arithmetic.

Options A and B are the modern block (LLaMA, Touvron et al. 2023): RMSNorm pre-norm, RoPE, SwiGLU,
no biases. Option C is the classic GPT-2 block: LayerNorm pre-norm, learned absolute positions,
GELU. All three tie the input embedding to the output projection (Press & Wolf 2017).

References:
1) nanoGPT, the shape of this file: https://github.com/karpathy/nanoGPT/blob/master/model.py
2) LLaMA reference model.py, for RMSNorm / SwiGLU / RoPE naming
3) gpt-fast, for the preallocated KV cache written by index
"""

import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn import functional as F

EOT_TOKEN = 50256  # GPT-2's <|endoftext|>, appended after every document by prepare.py


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50257  # the logical vocabulary: GPT-2 BPE
    n_layer: int = 16
    n_head: int = 5
    n_embd: int = 320
    mlp: str = "swiglu"  # 'swiglu' (Shazeer 2020) | 'gelu' (GPT-2)
    ffn_hidden: int | None = None  # None: derived below
    ffn_multiple_of: int = 2  # SwiGLU width rounded to this (8 or 64 suit tensor cores)
    norm: str = "rmsnorm"  # 'rmsnorm' (Zhang & Sennrich 2019) | 'layernorm'
    norm_eps: float = 1e-5
    pos_emb: str = "rope"  # 'rope' (Su et al. 2021) | 'learned'
    rope_theta: float = 10000.0
    bias: bool = False  # bias in the Linear layers; LayerNorm always keeps its own bias
    dropout: float = 0.0
    # Embedding rows padded to a multiple of 64 so the lm_head GEMM hits fast kernels (nanoGPT
    # measured ~25%). Padded ids are never targets and are masked out of every softmax.
    vocab_multiple_of: int = 64
    # Tokens per chunk of the fused lm_head + cross-entropy; 0 = plain, full [tokens x vocab] logits
    loss_chunk: int = 4096
    padded_vocab_size: int = field(init=False)

    def __post_init__(self):
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError(f"mlp must be 'swiglu' or 'gelu', got {self.mlp!r}")
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', got {self.norm!r}")
        if self.pos_emb not in ("rope", "learned"):
            raise ValueError(f"pos_emb must be 'rope' or 'learned', got {self.pos_emb!r}")
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2 != 0:
            raise ValueError("RoPE needs an even head size: choose n_embd/n_head even")
        if self.ffn_hidden is None:
            if self.mlp == "swiglu":
                # 8/3·d keeps SwiGLU's three matrices at the parameter cost of a 4·d GELU MLP
                # (Shazeer 2020); rounded to ffn_multiple_of: 854 at d=320, 682 at d=256.
                m = self.ffn_multiple_of
                self.ffn_hidden = m * round(8 * self.n_embd / 3 / m)
            else:
                self.ffn_hidden = 4 * self.n_embd
        m = self.vocab_multiple_of
        self.padded_vocab_size = m * math.ceil(self.vocab_size / m) if m > 0 else self.vocab_size

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


# The three designs; training settings live in config/option_*.py.
OPTIONS = {
    "a": dict(n_embd=320, n_layer=16, n_head=5, mlp="swiglu", norm="rmsnorm", pos_emb="rope"),
    "b": dict(n_embd=256, n_layer=24, n_head=8, mlp="swiglu", norm="rmsnorm", pos_emb="rope"),
    "c": dict(n_embd=384, n_layer=8, n_head=6, mlp="gelu", norm="layernorm", pos_emb="learned"),
}


def precompute_rope(head_dim: int, seq_len: int,
                    theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of m·θ_j for positions m < seq_len and frequencies
    θ_j = theta^(-2j/head_dim)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (T, head_dim/2)
    return angles.cos(), angles.sin()


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_j, x_{j+d/2}) of x (B, H, T, d) by the angles in cos/sin (T, d/2).

    This is the "rotate-half" layout of Hugging Face's Llama, not the interleaved pairs of the
    LLaMA reference code, so a checkpoint maps onto LlamaForCausalLM without permuting weights.
    Computed in fp32, then cast back, so fp16 training loses no precision in the angles.
    """
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        # q, k, v in one GEMM
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        # (k, v), each (B, H, block_size, d)
        self.kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                start_pos: int | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        is_causal, mask = True, None
        if start_pos is not None:
            # Generation: write this step's keys/values into the cache by index, attend to all of it
            if start_pos == 0 or self.kv_cache is None or self.kv_cache[0].size(0) != B:
                shape = (B, self.n_head, self.kv_cache_len, self.head_dim)
                self.kv_cache = (k.new_zeros(shape), v.new_zeros(shape))
            k_cache, v_cache = self.kv_cache
            k_cache[:, :, start_pos:start_pos + T] = k
            v_cache[:, :, start_pos:start_pos + T] = v
            k, v = k_cache[:, :, :start_pos + T], v_cache[:, :, :start_pos + T]
            if start_pos > 0:
                # query i sits at position start_pos + i and may see keys up to it
                is_causal = False
                mask = None if T == 1 else torch.ones(T, start_pos + T, dtype=torch.bool,
                                                      device=x.device).tril(diagonal=start_pos)
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                           is_causal=is_causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """SwiGLU(x) = (Swish(x W_gate) * x W_up) W_down (Shazeer 2020), or GPT-2's GELU MLP.

    For SwiGLU, c_fc holds W_gate and W_up stacked ([gate; up], one GEMM instead of two).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        n_out = 2 * config.ffn_hidden if self.swiglu else config.ffn_hidden
        self.c_fc = nn.Linear(config.n_embd, n_out, bias=config.bias)
        self.c_proj = nn.Linear(config.ffn_hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.c_fc(x).chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(self.c_fc(x), approximate="tanh")  # GPT-2's GELU ("gelu_new" in HF)
        return self.dropout(self.c_proj(h))


def make_norm(config: GPTConfig) -> nn.Module:
    # Both run in fp32 under autocast: the residual stream they read is fp32, and LayerNorm is
    # on autocast's fp32 list, so fp16 training never normalises in half precision.
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=True)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, start_pos=None):
        x = x + self.attn(self.ln_1(x), rope, start_pos)
        return x + self.mlp(self.ln_2(x))


def fp16_grad_scale(xc: torch.Tensor, n: torch.Tensor, w_max: torch.Tensor) -> torch.Tensor:
    """The power of two ChunkedCrossEntropy multiplies a chunk's g = softmax - onehot by before its
    two fp16 GEMMs (exact to undo). fp16 (V100) has 5 exponent bits: softmax gradients near 1e-6
    flush to zero unless scaled up, and a product past 65504 overflows; so the largest scale that
    keeps g and both products under 2^14, bounded from x and w alone (a pass over g's tokens x vocab
    elements costs as much as the loss itself; x and w are a vocab-th and a chunk-th of its size):
      |g_tv| <= 1, and a row of g sums to 2(1 - p_target) <= 2 in absolute value,
      so |g @ w| <= 2·max|w|;
      |(g.T @ x)_vc| = |sum_t g_tv x_tc| <= ||g_:v|| ||x_:c|| (Cauchy-Schwarz)
                     <= sqrt(n)·max_c ||x_:c||,
      as sum_t g_tv^2 <= n, the chunk's valid tokens (rows of ignored tokens are 0).
    xc: the chunk's hidden states in fp16; n: its valid tokens; w_max: max|w| of the fp16 weight."""
    col = n.float().sqrt() * xc.float().norm(dim=0).max()
    bound = torch.maximum(torch.maximum(col, 2 * w_max), torch.ones_like(col))
    return torch.exp2(torch.floor(torch.log2(2.0**14 / bound))).clamp(min=2.0**-24)


class ChunkedCrossEntropy(torch.autograd.Function):
    """lm_head + cross-entropy without ever holding the [tokens x vocab] logits.

    The logits of a 16x1024-token micro-batch at vocab 50304 take 3.3 GB in fp32, several times
    the rest of the activations of a 36M model. Here they exist one chunk of tokens at a time:
    the forward pass computes each chunk's loss and, since d(loss)/d(logits) = softmax - onehot is
    known right then, also its gradients, which backward only scales. Nothing is recomputed.
    The loss and softmax are fp32 whatever the autocast dtype (fp16 logits would overflow).
    """

    @staticmethod
    def forward(ctx, x, weight, targets, vocab_size: int, chunk: int, grad_enabled: bool = True):
        # x (N, C) final hidden states, weight (V_padded, C), targets (N,) with -1 = ignore.
        # grad_enabled: the caller's torch.is_grad_enabled() (grad mode is always off in here, and
        # needs_input_grad stays True under no_grad because the weight requires grad): evaluation
        # must not pay for the two gradient GEMMs.
        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        w = weight.to(dtype)
        needs_grad = grad_enabled and (ctx.needs_input_grad[0] or ctx.needs_input_grad[1])
        n_valid = (targets != -1).sum().clamp(min=1)
        # once, not per chunk
        w_max = w.abs().max().float() if needs_grad and dtype == torch.float16 else None
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x, dtype=torch.float32) if needs_grad else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if needs_grad else None
        for i in range(0, x.size(0), chunk):
            logits = g = None  # let go of the previous chunk's logits before this one's exist
            xc, tc = x[i:i + chunk].to(dtype), targets[i:i + chunk]
            valid, tgt = tc != -1, tc.clamp(min=0)
            logits = (xc @ w.t()).float()
            logits[:, vocab_size:] = float("-inf")  # padded ids: zero probability, zero gradient
            # log-sum-exp by hand, in place: torch.logsumexp allocates a shifted copy and its exp is
            # thrown away, while the softmax below needs exactly that exp (a faster CPU step:
            # BENCHMARKS.md, "Recipe")
            target_logit = logits.gather(1, tgt[:, None]).squeeze(1)
            m = logits.amax(dim=-1, keepdim=True)
            g = logits.sub_(m).exp_()  # unnormalised softmax: one fp32 chunk alive, not three
            s = g.sum(dim=-1, keepdim=True)
            lse = (m + s.log()).squeeze(1)
            loss += ((lse - target_logit) * valid).sum()
            if not needs_grad:
                continue
            g.div_(s)
            g[torch.arange(g.size(0), device=g.device), tgt] -= 1.0
            g *= valid[:, None]
            scale = 1.0
            if dtype == torch.float16:
                scale = fp16_grad_scale(xc, valid.sum(), w_max)
                g.mul_(scale)
            g = g.to(dtype)
            grad_x[i:i + chunk] = (g @ w).float() / scale
            grad_w += (g.t() @ xc).float() / scale
        ctx.save_for_backward(grad_x, grad_w, n_valid)
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_x, grad_w, n_valid = ctx.saved_tensors
        s = grad_out / n_valid
        return grad_x * s, grad_w * s, None, None, None, None


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        if config.pos_emb == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        else:
            cos, sin = precompute_rope(config.head_dim, config.block_size, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one tensor (Press & Wolf 2017)
        for block in self.transformer.h:
            # One slot more than the longest sequence: the keys attended to are then always a strict
            # slice of the cache, never all of it, which torch.compile would treat as a second case
            # (a contiguous tensor) and compile a second graph for at the last position.
            block.attn.kv_cache_len = config.block_size + 1
        self.compiled_step = None  # see compile_generation

        # GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2·n_layer) so the residual
        # stream's variance does not grow with depth (Radford et al. 2019).
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        with torch.no_grad():
            self.transformer.wte.weight[config.vocab_size:].zero_()  # padding rows: never used

    def _init_weights(self, module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters at the logical vocab: the tied matrix once, embedding padding rows excluded.

        non_embedding=True also leaves out the token (and position) embeddings, as Kaplan et al.
        (2020) count N. Note the tied matrix still does the lm_head GEMM; flops_per_token counts it.
        """
        n = sum(p.numel() for p in self.parameters())
        n -= (self.config.padded_vocab_size - self.config.vocab_size) * self.config.n_embd
        if non_embedding:
            n -= self.config.vocab_size * self.config.n_embd
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
        return n

    def hidden_states(self, idx: torch.Tensor, start_pos: int | None = None) -> torch.Tensor:
        """Final normed hidden states (B, T, C). start_pos: generation with the KV cache."""
        B, T = idx.size()
        p0 = start_pos or 0
        if p0 + T > self.config.block_size:
            raise ValueError(f"sequence of length {p0 + T} is longer than "
                             f"block_size={self.config.block_size}")
        x = self.transformer.wte(idx)
        rope = None
        if self.config.pos_emb == "learned":
            x = x + self.transformer.wpe(torch.arange(p0, p0 + T, device=idx.device))
        else:
            rope = (self.rope_cos[p0:p0 + T], self.rope_sin[p0:p0 + T])
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, rope, start_pos)
        return self.transformer.ln_f(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """lm_head on hidden states, sliced to the logical vocab: padded ids are never sampled."""
        return self.lm_head(h)[..., :self.config.vocab_size]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Returns (logits, loss). With targets (-1 = ignore), logits is None and loss the mean
        cross-entropy, computed in chunks (loss_chunk) so the full logits never exist."""
        h = self.hidden_states(idx)
        if targets is None:
            return self.logits(h), None
        h, targets = h.view(-1, h.size(-1)), targets.reshape(-1)
        if self.config.loss_chunk > 0:
            loss = ChunkedCrossEntropy.apply(h, self.lm_head.weight, targets,
                                             self.config.vocab_size, self.config.loss_chunk,
                                             torch.is_grad_enabled())
        else:
            loss = F.cross_entropy(self.logits(h).float(), targets, ignore_index=-1)
        return None, loss

    def configure_optimizers(self, weight_decay: float, learning_rate: float,
                             betas: tuple[float, float], device_type: str,
                             optimizer: str = "adamw", muon_lr: float = 0.02,
                             muon_momentum: float = 0.95,
                             muon_weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
        """The optimizers train.py steps together: [AdamW], or [Muon, AdamW] with optimizer='muon'.

        Muon (Jordan et al. 2024) orthogonalises the momentum of a weight matrix by Newton-Schulz,
        so it is for the hidden layers' 2-D weights only: those inside the blocks (attention and
        MLP). The tied embedding / lm_head, the norms' gains and any biases stay with AdamW, the
        split of modded-nanogpt and nanochat. Fused matrices (q, k, v in c_attn; SwiGLU's gate and
        up in c_fc) are orthogonalised whole, as one matrix."""
        # the tied matrix once
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        muon = [p for name, p in params.items() if optimizer == "muon" and p.dim() == 2
                and name.startswith("transformer.h.")]
        rest = [p for p in params.values() if all(p is not q for q in muon)]
        # AdamW decays only matrices (embeddings, linear weights), not norms' gains or biases.
        groups = [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ]
        # The fused kernel does the whole update in one launch; CUDA only.
        use_fused = (device_type == "cuda"
                     and "fused" in inspect.signature(torch.optim.AdamW).parameters)
        extra = dict(fused=True) if use_fused else dict()
        optimizers = [torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)]
        if muon:
            # torch's Muon: Nesterov momentum, 5 Newton-Schulz steps (in bf16), the update scaled by
            # sqrt(max(1, rows/cols)) as in Keller Jordan's code, decoupled weight decay lr * wd.
            optimizers.insert(0, torch.optim.Muon(muon, lr=muon_lr, momentum=muon_momentum,
                                                  weight_decay=muon_weight_decay))
        return optimizers

    def estimate_mfu(self, tokens_per_iter: int, dt: float, device_name: str = "",
                     dtype: str = "bfloat16", peak: float | None = None) -> float | None:
        """Model FLOPs utilisation: achieved FLOP/s over the GPU's peak (from PEAK_FLOPS by name, or
        given). None when the peak is unknown, e.g. on a CPU."""
        peak = peak or peak_flops(device_name, dtype)
        if not peak:
            return None
        return flops_per_token(self.config, self.num_params()) * tokens_per_iter / dt / peak

    # ---------------------------------------------------------------- generation

    def compile_generation(self) -> None:
        """torch.compile the forward pass that generation repeats, one token at a time (the main
        trick of gpt-fast). A cached step reads every weight once, but in eager mode it also runs
        ~40 small ops per layer, each paying Python and dispatch overhead: on a CPU that overhead is
        a third of the step, and compiling fuses it away. dynamic=True: one graph serves every
        position. The first step pays for the compilation (~20 s on a 2-core CPU); the prompt's
        single pass stays eager."""
        self.compiled_step = torch.compile(self.hidden_states, dynamic=True)

    # like no_grad, and skips autograd's version counting: faster decoding (BENCHMARKS.md)
    @torch.inference_mode()
    def generate_stream(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None, stop=None,
                        generator: torch.Generator | None = None, use_cache: bool = True,
                        suppress_first: Sequence[int] = ()) -> Iterator[torch.Tensor]:
        """Yield the next token (B,) one step at a time, for idx (B, T) of prompt token ids.

        With the KV cache the prompt is processed once, then one position per new token. When the
        sequence outgrows block_size, the most recent block_size tokens are re-run to rebuild the
        cache (the same result as re-running the cropped sequence, at the cost of a full pass).
        stop: token ids that end a row (default: EOT; pass () to never stop). Generation ends when
        every row has stopped; a stopped row keeps emitting its stop token. suppress_first: token
        ids the first new token may not be (Whisper's suppress_blank, Radford et al. 2022: a reply
        that would open with a blank or end at once starts with its next most likely token instead).
        """
        if idx.numel() == 0 or idx.dim() != 2:
            raise ValueError("generate needs a non-empty (batch, time) tensor of prompt token ids")
        stop_ids = torch.tensor(sorted({EOT_TOKEN} if stop is None else set(stop)),
                                dtype=torch.long, device=idx.device)
        T = self.config.block_size
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        # clone: an inference tensor like every later one, so compiled code sees one kind of input
        tokens, cached = idx.clone(), 0  # cached: positions held in the KV cache
        # The newest token as its own (B, 1) tensor, not a slice of tokens, whose stride would carry
        # the sequence length: compiled code guards on strides.
        newest = None
        step = self.compiled_step or self.hidden_states
        try:
            for _ in range(max_new_tokens):
                if not use_cache:
                    h = step(tokens[:, -T:])
                elif cached == 0 or tokens.size(1) > T:
                    window = tokens[:, -T:]
                    h, cached = self.hidden_states(window, start_pos=0), window.size(1)
                else:
                    h = step(newest, start_pos=cached)
                    cached += 1
                logits = self.logits(h[:, -1])
                if suppress_first and tokens.size(1) == idx.size(1):  # the first new token
                    logits[:, list(suppress_first)] = float("-inf")
                nxt = sample_logits(logits, temperature, top_k, top_p, generator)
                nxt = torch.where(done, tokens[:, -1], nxt)
                done |= torch.isin(nxt, stop_ids)
                newest = nxt[:, None]
                tokens = torch.cat([tokens, newest], dim=1)
                yield nxt
                if done.all():
                    break
        finally:
            self.clear_kv_cache()

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, stop=None,
                 generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
        """Prompt plus generated tokens, (B, T + n). See generate_stream."""
        new = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, stop,
                                        generator, use_cache))
        return torch.cat([idx] + [t[:, None] for t in new], dim=1)

    def clear_kv_cache(self):
        for block in self.transformer.h:
            block.attn.kv_cache = None


def top_k_top_p_filter(logits: torch.Tensor, top_k: int | None = None,
                       top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top k and outside the nucleus of mass top_p
    (Holtzman et al. 2019); the two compose. The most likely token always survives."""
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits.float(), dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V). temperature 0 means greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = top_k_top_p_filter(logits.float() / temperature, top_k, top_p)
    # Inverse-CDF sampling: the first token whose cumulative probability passes a uniform draw.
    # Same distribution as torch.multinomial, which on a CPU spends ~1 ms drawing 50K exponentials
    # per token, a tenth of a KV-cached decoding step of option A.
    cdf = F.softmax(logits, dim=-1).cumsum(dim=-1)
    u = torch.rand(cdf.size(0), 1, device=cdf.device, generator=generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=logits.size(-1) - 1)


# ---------------------------------------------------------------- FLOPs and MFU

# Dense peak FLOP/s per GPU for the training dtype (tensor cores, no sparsity), from NVIDIA's data
# sheets, by the variant torch.cuda.get_device_name() names: PCIe and NVL cards run lower clocks
# than SXM ones (10-25%).
# The first entry whose name is in the GPU's name wins, so each variant comes before its family.
PEAK_FLOPS = {
    ("V100S", "float16"): 130e12,  # 'Tesla V100S-PCIE-32GB'
    ("V100-PCIE", "float16"): 112e12,  # 'Tesla V100-PCIE-16GB'
    ("V100", "float16"): 125e12,  # SXM2/SXM3: 'Tesla V100-SXM2-32GB'
    ("A100", "bfloat16"): 312e12, ("A100", "float16"): 312e12,  # SXM4 and PCIe alike
    ("H100 PCIE", "bfloat16"): 756e12, ("H100 PCIE", "float16"): 756e12,  # 'NVIDIA H100 PCIe'
    ("H100 NVL", "bfloat16"): 835e12, ("H100 NVL", "float16"): 835e12,
    ("H100", "bfloat16"): 989e12, ("H100", "float16"): 989e12,  # SXM: 'NVIDIA H100 80GB HBM3'
    ("H200 NVL", "bfloat16"): 835e12, ("H200 NVL", "float16"): 835e12,
    ("H200", "bfloat16"): 989e12, ("H200", "float16"): 989e12,
}


def peak_flops(device_name: str, dtype: str) -> float | None:
    """Peak FLOP/s for a GPU name such as 'Tesla V100-SXM2-32GB', or None when unknown."""
    for (gpu, dt), flops in PEAK_FLOPS.items():
        if gpu in device_name.upper() and dt == dtype:
            return flops
    return None


def flops_per_token(config: GPTConfig, n_params: int) -> float:
    """Training FLOPs per token, forward + backward, as PaLM (Chowdhery et al. 2022, App. B) counts:
    6N for the weight GEMMs plus 12·L·d·T for attention scores and values. N here counts the
    lm_head GEMM (the tied matrix) but not learned position embeddings, which are a lookup."""
    n = n_params - (config.block_size * config.n_embd if config.pos_emb == "learned" else 0)
    return 6 * n + 12 * config.n_layer * config.n_embd * config.block_size
