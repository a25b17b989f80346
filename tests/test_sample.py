"""
Tests of generation (model.generate / generate_stream, sample_logits, top_k_top_p_filter) and of
sample.py. References are independent of the code under test: nanoGPT's generation loop, which
re-runs the whole (cropped) sequence for every token; the full forward pass for the KV cache's
hidden states; top-k/top-p masks worked out by hand; tiktoken's decode for the streamed text.

Generation runs on tiny models that keep each option's kind (RoPE + SwiGLU + RMSNorm for A and B,
learned positions + GELU + LayerNorm for C); sample.py runs end to end on the smoke checkpoint.
"""

import math
import os
import pickle
import subprocess

import pytest
import torch
from torch.nn import functional as F

from common import (
    die,
    get_tokenizer,
    load_checkpoint,
    load_model,
    model_args,
    model_from_checkpoint,
    save_checkpoint,
)
from launch import in_background, one_line_error, run_in_process, run_script
from model import EOT_TOKEN, GPT, OPTIONS, GPTConfig, sample_logits, top_k_top_p_filter
from sample import StreamDecoder, encode_prompt, read_prompt

BLOCK = 64
VOCAB = 1000  # padded to 1024: padded ids must never be generated


def tiny_model(option: str, seed: int = 0, **overrides) -> GPT:
    """An option's kind at a size that runs in milliseconds, with weights far from init: peaked
    attention and spread-out logits, so a wrong position or mask changes the tokens."""
    config = GPTConfig(**{**OPTIONS[option], "n_layer": 2, "n_embd": 64, "n_head": 4,
                          "block_size": BLOCK, "vocab_size": VOCAB, **overrides})
    torch.manual_seed(seed)
    model = GPT(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 1.5 / math.sqrt(p.size(-1)))
    return model.eval()


def ref_greedy(model: GPT, idx: torch.Tensor, n: int) -> torch.Tensor:
    """nanoGPT's generate at temperature 0: the whole sequence, cropped to block_size,
    every step."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def make_checkpoint(path, config: GPTConfig, **extra) -> str:
    """A checkpoint in train.py's format (common.save_checkpoint) holding a fresh GPT."""
    torch.manual_seed(0)
    model = GPT(config)
    checkpoint = dict(model=model.state_dict(), model_args=model_args(config), tokenizer="gpt2",
                      config={}, iter_num=0, elapsed=0.0, tokens_seen=0, best_val_loss=None,
                      val_loss=None, optimizer={}, scaler=None, rng={})
    save_checkpoint({**checkpoint, **extra}, str(path))
    return str(path)


# ---------------------------------------------------------------- the KV cache


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("prompt_len,n_new", [(5, 40), (BLOCK - 4, 20), (BLOCK + 16, 6)],
                         ids=["short", "near-block", "longer-than-block"])
def test_kv_cache_greedy_matches_full_rerun(option, prompt_len, n_new):
    # near-block crosses block_size after 4 tokens, so the window slides and the cache is rebuilt
    model = tiny_model(option)
    idx = torch.randint(0, VOCAB, (2, prompt_len), generator=torch.Generator().manual_seed(1))
    expected = ref_greedy(model, idx, n_new)
    cached = model.generate(idx, n_new, temperature=0, stop=())
    uncached = model.generate(idx, n_new, temperature=0, stop=(), use_cache=False)
    assert torch.equal(cached, expected)
    assert torch.equal(uncached, expected)
    assert len(set(expected[0, prompt_len:].tolist())) > 1  # not a degenerate one-token loop
    # the batch rows are independent: each equals its own batch-of-one generation
    assert torch.equal(model.generate(idx[1:], n_new, temperature=0, stop=()), expected[1:])


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_kv_cache_hidden_states_match_full_forward(option):
    # prefill, then one position at a time, then a chunk of 5 at an offset (the masked path)
    model = tiny_model(option)
    idx = torch.randint(0, VOCAB, (1, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model.hidden_states(idx)
        parts = [model.hidden_states(idx[:, :20], start_pos=0)]
        parts += [model.hidden_states(idx[:, i:i + 1], start_pos=i) for i in range(20, 25)]
        parts.append(model.hidden_states(idx[:, 25:30], start_pos=25))
    model.clear_kv_cache()
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("use_cache", [True, False])
def test_suppress_first_bans_tokens_from_the_first_new_token_only(use_cache):
    """suppress_first (chat.py's blank opening): the first token is the best one outside the set, by
    the full forward pass's logits; every later token is plain greedy again, the banned ones
    included."""
    model = tiny_model("a")
    idx = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(idx)[0][:, -1]
    banned = logits.topk(3, dim=-1).indices.flatten().tolist()  # each row's three favourites
    out = model.generate(idx, 1, temperature=0, stop=())
    assert set(out[:, -1].tolist()) <= set(banned)  # the control: unbanned, a favourite comes first
    first = next(model.generate_stream(idx, 1, temperature=0, stop=(), suppress_first=banned,
                                       use_cache=use_cache))
    expected = logits.masked_fill(torch.isin(torch.arange(VOCAB), torch.tensor(banned)),
                                  float("-inf")).argmax(-1)
    assert torch.equal(first, expected)
    steps = list(model.generate_stream(idx, 12, temperature=0, stop=(), suppress_first=banned,
                                       use_cache=use_cache))
    assert torch.equal(torch.cat([idx] + [s[:, None] for s in steps], dim=1),
                       ref_greedy(model, torch.cat([idx, expected[:, None]], dim=1), 11))


def test_cache_processes_prompt_once_then_one_position_per_token():
    model = tiny_model("a")
    seen = []
    original = model.hidden_states

    def counting(idx, start_pos=None):
        seen.append((idx.size(1), start_pos))
        return original(idx, start_pos)

    model.hidden_states = counting
    list(model.generate_stream(torch.zeros(1, BLOCK - 2, dtype=torch.long), 5, temperature=0,
                               stop=()))
    # 62 prompt tokens once, then positions 62 and 63; past block_size the last 64 are re-run
    assert seen == [(BLOCK - 2, 0), (1, BLOCK - 2), (1, BLOCK - 1), (BLOCK, 0), (BLOCK, 0)]
    assert all(block.attn.kv_cache is None for block in model.transformer.h)  # freed when done


def check_compiled_generation() -> None:
    # n_head=2 and a first call of 2 tokens from 1 (chat.py's warm-up) once made a recompile: the
    # decoded token was a slice of the sequence, whose stride (2) the graph had fixed
    model = tiny_model("a", n_head=2)
    idx = torch.randint(0, VOCAB, (1, 8), generator=torch.Generator().manual_seed(3))
    # slides past block_size at the end
    expected = model.generate(idx, BLOCK, temperature=0, stop=())
    idx2 = torch.randint(0, VOCAB, (1, 13), generator=torch.Generator().manual_seed(4))
    expected2 = model.generate(idx2, 20, temperature=0, stop=())
    model.compile_generation()
    model.generate(idx[:, :1], 2, temperature=0)  # compiles here
    assert torch.equal(model.generate(idx, 12, temperature=0, stop=(), use_cache=False),
                       expected[:, :20])
    # one graph serves every position, prompt length and later call: a recompile would raise
    with torch.compiler.set_stance("fail_on_recompile"):
        assert torch.equal(model.generate(idx, BLOCK, temperature=0, stop=()), expected)
        assert torch.equal(model.generate(idx2, 20, temperature=0, stop=()), expected2)
        assert torch.equal(model.generate(idx, 30, temperature=0, stop=(), use_cache=False),
                           expected[:, :38])
    print("compiled generation matches eager")


@in_background
def compiled_generation(tmp_path_factory, need) -> subprocess.CompletedProcess:
    """check_compiled_generation in a process of its own, on the background thread: a cold
    compilation takes the suite's tests 20 s."""
    return run_script("-c", "import sys; sys.path.insert(0, 'tests'); import test_sample; "
                      "test_sample.check_compiled_generation()", check=False)


@pytest.mark.slow
def test_compiled_generation_matches_eager_without_recompiling(compiled_generation):
    assert (compiled_generation.returncode == 0 and compiled_generation.stdout
            == "compiled generation matches eager\n"), compiled_generation.stderr


# ---------------------------------------------------------------- stopping


def test_stops_at_eot_unless_told_otherwise():
    model = tiny_model("a", vocab_size=50257)
    eot_late = torch.full((1, 50257), -5.0)
    eot_late[0, 7] = 5.0  # token 7 wins until step 3, then EOT
    steps = []

    def logits(h):
        steps.append(1)
        out = eot_late.clone()
        if len(steps) >= 3:
            out[0, EOT_TOKEN] = 10.0
        return out

    model.logits = logits
    idx = torch.zeros(1, 4, dtype=torch.long)
    assert model.generate(idx, 10, temperature=0)[0, 4:].tolist() == [7, 7, EOT_TOKEN]
    steps.clear()
    assert (model.generate(idx, 10, temperature=0, stop=())[0, 4:].tolist()
            == [7, 7] + [EOT_TOKEN] * 8)
    steps.clear()
    assert model.generate(idx, 10, temperature=0, stop={7})[0, 4:].tolist() == [7]


def test_stopped_row_repeats_its_stop_token_while_others_continue():
    model = tiny_model("c")
    idx = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    free = model.generate(idx, 12, temperature=0, stop=())
    row0, row1 = free[0, 6:].tolist(), free[1, 6:].tolist()
    # only row 0 makes it, mid-way
    stop_tok = next(t for t in row0[2:] if t not in row1 and t != row0[-1])
    out = model.generate(idx, 12, temperature=0, stop={stop_tok})
    first = row0.index(stop_tok)
    assert out[0, 6:6 + first + 1].tolist() == row0[:first + 1]
    assert out[0, 6 + first:].eq(stop_tok).all() and first < 11
    assert torch.equal(out[1], free[1])  # row 1 never stopped: it ran all 12 steps


# ---------------------------------------------------------------- top-k, top-p, temperature, seeds

# probabilities 0.5, 0.2, 0.15, 0.1, 0.05 in a shuffled order
PROBS = torch.tensor([0.1, 0.5, 0.05, 0.2, 0.15])
LOGITS = PROBS.log()[None]


def kept(logits: torch.Tensor) -> set[int]:
    return set(torch.isfinite(logits[0]).nonzero().flatten().tolist())


@pytest.mark.parametrize("top_k,top_p,expected", [
    (None, None, {0, 1, 2, 3, 4}),
    (1, None, {1}),
    (3, None, {1, 3, 4}),
    (10, None, {0, 1, 2, 3, 4}),  # k larger than the vocabulary keeps everything
    (None, 0.3, {1}),  # the top token alone holds 0.5
    (None, 0.6, {1, 3}),  # 0.5 < 0.6, 0.7 >= 0.6
    (None, 0.8, {1, 3, 4}),  # 0.5, 0.7 < 0.8, 0.85 >= 0.8
    (None, 0.9, {0, 1, 3, 4}),
    (None, 1.0, {0, 1, 2, 3, 4}),
    # composed: top_p acts on the renormalised top 3 (0.588, 0.235, 0.176):
    # 0.588, 0.824 >= 0.8 -> 2; either filter alone would keep 3
    (3, 0.8, {1, 3}),
])
def test_top_k_top_p_masks(top_k, top_p, expected):
    filtered = top_k_top_p_filter(LOGITS, top_k, top_p)
    assert kept(filtered) == expected
    # survivors untouched
    assert torch.equal(filtered[0, sorted(expected)], LOGITS[0, sorted(expected)])


def test_filters_act_per_row():
    rows = torch.stack([PROBS.log(), PROBS.flip(0).log()])
    filtered = top_k_top_p_filter(rows, None, 0.6)
    assert ([set(torch.isfinite(r).nonzero().flatten().tolist()) for r in filtered]
            == [{1, 3}, {3, 1}])
    filtered = top_k_top_p_filter(rows, 2, None)
    assert ([set(torch.isfinite(r).nonzero().flatten().tolist()) for r in filtered]
            == [{1, 3}, {3, 1}])


def frequencies(logits: torch.Tensor, n: int, **kwargs) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    draws = sample_logits(logits.expand(n, -1), generator=g, **kwargs)
    return torch.bincount(draws, minlength=logits.size(-1)).float() / n


def test_sampling_follows_temperature_and_filters():
    n = 40_000  # the standard error of each frequency is below 0.0025
    assert sample_logits(LOGITS.expand(3, -1), temperature=0).tolist() == [1, 1, 1]
    torch.testing.assert_close(frequencies(LOGITS, n), PROBS, atol=0.01, rtol=0)
    # temperature T samples softmax(logits / T)
    torch.testing.assert_close(frequencies(LOGITS, n, temperature=2.0),
                               F.softmax(LOGITS[0] / 2, -1), atol=0.01, rtol=0)
    # top_p 0.8 keeps 0.5, 0.2, 0.15 and renormalises them
    expected = torch.tensor([0, 0.5, 0, 0.2, 0.15]) / 0.85
    torch.testing.assert_close(frequencies(LOGITS, n, top_p=0.8), expected, atol=0.01, rtol=0)


def test_seed_makes_sampling_reproducible():
    model = tiny_model("b")
    idx = torch.randint(0, VOCAB, (1, 8), generator=torch.Generator().manual_seed(4))

    def sample(seed):
        return model.generate(idx, 30, temperature=1.0, top_k=20, top_p=0.95, stop=(),
                              generator=torch.Generator().manual_seed(seed))

    a, b, c = sample(1), sample(1), sample(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a[0, 8:].max() < VOCAB  # padded ids are never sampled


# ---------------------------------------------------------------- streaming text


def test_stream_decoder_holds_split_characters():
    enc = get_tokenizer()
    text = "Café ☕ and a smile 😀😀, 日本語 too."
    ids = enc.encode(text)
    assert any(not _utf8_complete(enc.decode_single_token_bytes(t))
               for t in ids), "needs a split character"
    decoder = StreamDecoder(enc)
    pieces = [decoder.push(t) for t in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # at least one token held back its partial character


def test_prompt_encoding(capsys):
    """An empty prompt starts a new document (the EOT every document follows in training), a
    "<|endoftext|>" typed in the prompt is that token, and a prompt longer than the context is
    reported on stderr (the model sees only its end)."""
    enc = get_tokenizer()
    assert encode_prompt(enc, "", 16) == [EOT_TOKEN]
    assert encode_prompt(enc, "One.<|endoftext|>Two", 16) == \
        enc.encode_ordinary("One.") + [EOT_TOKEN] + enc.encode_ordinary("Two")
    assert capsys.readouterr().err == ""
    long = " word" * 20
    assert encode_prompt(enc, long, 16) == enc.encode_ordinary(long)
    assert "the prompt has 20 tokens; the model sees only the last 16" in capsys.readouterr().err


def test_prompt_file_errors_are_one_line(tmp_path):
    """--start=FILE:path reads the file as UTF-8; a missing, non-UTF-8 or empty file is a
    one-line error."""
    (tmp_path / "p.txt").write_text("Grüße\n", encoding="utf-8")
    assert read_prompt(f"FILE:{tmp_path / 'p.txt'}") == "Grüße\n"
    assert read_prompt("plain text") == "plain text"
    (tmp_path / "latin1.txt").write_bytes("Grüße".encode("latin-1"))
    for name in ("latin1.txt", "missing.txt"):
        message = one_line_error(read_prompt, f"FILE:{tmp_path / name}")
        assert message.startswith("error: cannot read the prompt file") and name in message
    (tmp_path / "empty.txt").write_text("")
    message = one_line_error(read_prompt, f"FILE:{tmp_path / 'empty.txt'}")
    assert "empty.txt' is empty" in message and '--start=""' in message


def _utf8_complete(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ---------------------------------------------------------------- loading checkpoints


def test_load_model_refuses_other_tokenizers_and_corrupt_files(tmp_path):
    tiny = dict(n_layer=1, n_embd=32, n_head=2, block_size=16)
    good = make_checkpoint(tmp_path / "good.pt", GPTConfig(**tiny))
    model, enc, _ = load_model(good, "cpu")
    assert not model.training and enc.n_vocab == 50257

    with pytest.raises(SystemExit, match="tokenizer 'llama'"):
        load_model(make_checkpoint(tmp_path / "llama.pt", GPTConfig(**tiny), tokenizer="llama"),
                   "cpu")
    with pytest.raises(SystemExit, match="vocab_size=32000"):
        load_model(make_checkpoint(tmp_path / "v.pt", GPTConfig(**tiny, vocab_size=32000)), "cpu")
    truncated = tmp_path / "truncated.pt"
    with open(good, "rb") as f:
        truncated.write_bytes(f.read()[:5000])
    with pytest.raises(SystemExit, match="corrupt"):
        load_model(str(truncated), "cpu")
    with pytest.raises(SystemExit, match="no checkpoint"):
        load_model(str(tmp_path / "missing"), "cpu")


class _Exploit:
    def __reduce__(self):
        return (die, ("code from the checkpoint ran",))


def test_checkpoint_cannot_run_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_args": {}, "x": _Exploit()}, path)
    with pytest.raises(SystemExit, match="corrupt or not a checkpoint"):
        load_model(str(path), "cpu")
    with pytest.raises(SystemExit, match="code from the checkpoint ran"):
        pickle.loads(pickle.dumps(_Exploit()))  # the control: unpickling it does run code


# ---------------------------------------------------------------- sample.py end to end


def expected_text(model: GPT, enc, prompt: str, n: int, **kwargs) -> str:
    """What sample.py should print for one sample: model.generate, cut at EOT, tiktoken's decode."""
    ids = enc.encode(prompt, allowed_special={"<|endoftext|>"})
    out = model.generate(torch.tensor([ids]), n, **kwargs)[0, len(ids):].tolist()
    return prompt + enc.decode(out[:out.index(EOT_TOKEN)] if EOT_TOKEN in out else out)


def test_sample_py_greedy_from_file_prompt(smoke_ckpt, tmp_path):
    prompt = "The meaning of life is"
    (tmp_path / "prompt.txt").write_text(prompt, encoding="utf-8")
    result = run_script("sample.py", f"--out_dir={smoke_ckpt}",
                        f"--start=FILE:{tmp_path / 'prompt.txt'}", "--temperature=0",
                        "--max_new_tokens=40", "--device=cpu")
    model = model_from_checkpoint(load_checkpoint(str(smoke_ckpt))).eval()
    assert result.stdout == expected_text(model, get_tokenizer(), prompt, 40, temperature=0) + "\n"
    assert "tokens/s" in result.stderr


def test_sample_py_seeded_samples(smoke_ckpt):
    args = ["sample.py", f"--ckpt={smoke_ckpt / 'ckpt.pt'}", "--start=Once upon a time",
            "--num_samples=2", "--max_new_tokens=30", "--temperature=1.0", "--top_k=50",
            "--top_p=0.9", "--seed=7"]
    result = run_in_process(*args)  # a process of its own: test_sample_py_greedy_from_file_prompt
    assert result.returncode == 0, result.stderr
    model = model_from_checkpoint(load_checkpoint(str(smoke_ckpt))).eval()
    g = torch.Generator().manual_seed(7)  # one generator for all samples, as sample.py does
    samples = [expected_text(model, get_tokenizer(), "Once upon a time", 30, temperature=1.0,
                             top_k=50, top_p=0.9, generator=g) for _ in range(2)]
    assert samples[0] != samples[1]
    assert result.stdout == "\n---------------\n".join(samples) + "\n"


def test_sample_py_ends_a_sample_at_eot(tmp_path):
    """A model that always predicts <|endoftext|> after the prompt: sample.py prints the prompt
    alone (EOT ends the sample and is not text), and with --stop_at_eot=False the EOT tokens come
    out as text."""
    enc = get_tokenizer()
    prompt = "Hello"
    config = GPTConfig(n_layer=1, n_embd=32, n_head=2, block_size=16)
    model = GPT(config)
    with torch.no_grad():
        # blocks add nothing; the last prompt token's embedding points at EOT's, which is longer
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight"):
                p.zero_()
        v = torch.randn(config.n_embd, generator=torch.Generator().manual_seed(0))
        model.transformer.wte.weight.zero_()
        model.transformer.wte.weight[enc.encode(prompt)[-1]] = v
        model.transformer.wte.weight[EOT_TOKEN] = 2 * v
    path = tmp_path / "eot.pt"
    save_checkpoint(dict(model=model.state_dict(), model_args=model_args(config), tokenizer="gpt2",
                         iter_num=0, val_loss=None), str(path))
    args = ["sample.py", f"--ckpt={path}", f"--start={prompt}", "--temperature=0",
            "--max_new_tokens=3", "--device=cpu"]
    assert run_in_process(*args).stdout == prompt + "\n"
    assert (run_in_process(*args, "--stop_at_eot=False").stdout
            == prompt + "<|endoftext|>" * 3 + "\n")


def test_sample_py_missing_checkpoint_is_one_line_error(tmp_path):
    result = run_script("sample.py", f"--out_dir={tmp_path}", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no checkpoint at") and result.stderr.count("\n") == 1
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("arg,words", [
    ("--top_k=-5", "--top_k=-5"), ("--temperature=-1", "--temperature=-1"),
    ("--top_p=0", "--top_p=0"), ("--EOT_TOKEN=3", "unknown config key"),
    ("--num_samples=0", "--num_samples"),
    ("--device=mps", "unknown device 'mps'"),  # --help used to offer it
    # greedy decoding would ignore them
    ("--temperature=0 --top_k=5", "--top_k=5 shapes sampling"),
    ("--temperature=0 --top_p=0.5", "--top_p=0.5 shapes sampling"),
])
def test_sample_py_refuses_bad_settings_in_one_line(tmp_path, arg, words):
    """Refused before the checkpoint is looked for: in this process (the missing checkpoint above
    runs the script in one of its own, for what a real process prints)."""
    result = run_in_process("sample.py", f"--out_dir={tmp_path}", *arg.split())
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and words in result.stderr
