"""export_gguf.py: the GGUF file, run by llama.cpp (through llama-cpp-python) on the CPU, must
compute the same function as model.py (fp32 logits within LOGIT_ATOL, identical greedy
generations) for all three options, its tokenizer must give tiktoken's ids, and bad input must be
a one-line error.

Tolerances (measured on these tiny models, weights scaled up so logits reach ~±7; docs/export.md):
llama.cpp computes in fp32 too, with its own kernels, but two of its defaults are not fp32: its KV
cache is fp16 (K and V rounded to 11 significant bits: ~1e-2 on the logits), and on the CPU its GELU
reads a table of the tanh GELU at fp16-rounded inputs (~3e-3 for GPT-2). With an fp32 KV cache llama
matches to ~3e-5 (LOGIT_ATOL 1e-4) and gpt2 to ~3e-3 (1e-2); with the default cache both stay under
5e-2 (DEFAULT_CACHE_ATOL). All far below what a mapping mistake gives: an unpermuted RoPE moves
logits by ~9."""

import os
import struct
from pathlib import Path

import gguf
import llama_cpp  # requirements-dev.txt: llama.cpp itself, built from PyPI's source
import numpy as np
import pytest
import torch

import common  # noqa: E402
import export_gguf  # noqa: E402
from launch import one_line_error, run_in_process, run_script  # noqa: E402
from model import apply_rotary_emb, precompute_rope  # noqa: E402
from test_export_hf import save_tiny_checkpoint, tiny_model  # noqa: E402
from tokenizer import chat_template  # noqa: E402

pytestmark = pytest.mark.llamacpp

LOGIT_ATOL = {"llama": 1e-4, "gpt2": 1e-2}  # fp32 weights, fp32 KV cache; see the module docstring
DEFAULT_CACHE_ATOL = 5e-2  # fp32 weights, llama.cpp's default fp16 KV cache
TEXT = ("Hello world!  The quick brown fox's 3.14 jumps\n\nover \t the lazy dog. Ünïcödé, 日本語, "
        "emoji 🙂 and   runs of spaces; ALL CAPS, don't, I'll, we've.")


def load(path, n_ctx=64, fp32_cache=True):
    cache = (dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32) if fp32_cache
             else {})
    return llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=n_ctx, n_batch=n_ctx,
                           n_threads=1, verbose=False, **cache)


def logits_of(llm, tokens) -> np.ndarray:
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[:len(tokens)], dtype=np.float32)


def file_logits(path, tokens, fp32_cache=True) -> np.ndarray:
    """llama.cpp's logits for tokens from the GGUF file at path (loaded, then closed)."""
    llm = load(path, fp32_cache=fp32_cache)
    try:
        return logits_of(llm, tokens)
    finally:
        llm.close()


# bytes of each GGUF scalar value type (the spec's numbering: 8 is a string, 9 an array)
VALUE_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def tensor_types(path) -> dict[str, str]:
    """{tensor name: its type}, read by the GGUF spec: the header, the key-value pairs stepped over,
    then each tensor's name, dimensions, type and offset. gguf's GGUFReader first makes a view of
    each of the vocabulary's 100,000 strings: seconds a file."""
    data, pos = Path(path).read_bytes(), 24
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)

    def read(fmt: str, skip_after: int = 0):
        """The value at pos; pos moves past it, and skip_after bytes per unit of it more."""
        nonlocal pos
        value = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt) + skip_after * value
        return value

    def skip(value_type: int) -> None:
        nonlocal pos
        if value_type == 8:  # a string: its length, then its bytes
            read("<Q", skip_after=1)
        elif value_type == 9:  # an array: its items' type, their count, then the items
            item_type, n = read("<I"), read("<Q")
            if item_type in VALUE_BYTES:
                pos += n * VALUE_BYTES[item_type]
            else:
                for _ in range(n):
                    skip(item_type)
        else:
            pos += VALUE_BYTES[value_type]

    for _ in range(n_kv):
        read("<Q", skip_after=1)  # the key
        skip(read("<I"))
    types = {}
    for _ in range(n_tensors):
        start = pos + 8
        name = data[start:start + read("<Q", skip_after=1)].decode()
        read("<I", skip_after=8)  # the dimensions, 8 bytes each
        types[name] = gguf.GGMLQuantizationType(read("<I")).name
        pos += 8  # the data's offset
    return types


@pytest.mark.parametrize("option, arch", [("a", "llama"), ("b", "llama"), ("c", "gpt2")])
def test_llama_cpp_matches_our_model(option, arch, tmp_path):
    model = tiny_model(option)
    path = tmp_path / "model.gguf"
    assert export_gguf.export(model, str(path)) == arch
    llm = load(path)
    try:
        assert llm.metadata["general.architecture"] == arch
        assert llm.n_vocab() == 50257  # the padding rows are not exported
        assert llm.metadata[f"{arch}.context_length"] == "64"
        x = torch.randint(0, 50257, (1, 64), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = model(x)[0][0].numpy()
        theirs = logits_of(llm, x[0].tolist())
        assert theirs.shape == ours.shape == (64, 50257)
        assert np.abs(ours).max() > 1.0  # the comparison means something
        diff = float(np.abs(theirs - ours).max())
        print(f"option {option}: max |logit difference| {diff:.2e}")
        assert diff < LOGIT_ATOL[arch]

        # greedy generation: the same tokens, ours with our KV cache, llama.cpp's with its own
        prompt = x[:, :8]
        ours_gen = model.generate(prompt, max_new_tokens=24, temperature=0.0,
                                  stop=())[0, 8:].tolist()
        llm.reset()
        theirs_gen = []
        for t in llm.generate(prompt[0].tolist(), temp=0.0, top_k=1, repeat_penalty=1.0):
            theirs_gen.append(t)
            if len(theirs_gen) == 24:
                break
        assert theirs_gen == ours_gen
    finally:
        llm.close()
    # as users run it
    diff = float(np.abs(file_logits(path, x[0].tolist(), fp32_cache=False) - ours).max())
    print(f"option {option}, default fp16 KV cache: max |logit difference| {diff:.2e}")
    assert diff < DEFAULT_CACHE_ATOL


def test_float16(tmp_path):
    """--dtype=float16: half the size; the matrices rounded to fp16 move the logits, a little."""
    model = tiny_model("a")
    export_gguf.export(model, str(tmp_path / "f32.gguf"))
    export_gguf.export(model, str(tmp_path / "f16.gguf"), "float16")
    assert os.path.getsize(tmp_path / "f16.gguf") < 0.6 * os.path.getsize(tmp_path / "f32.gguf")
    x = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x)[0][0].numpy()
    diff = float(np.abs(file_logits(tmp_path / "f16.gguf", x[0].tolist()) - ours).max())
    print(f"float16: max |logit difference| {diff:.2e}")
    assert diff < export_gguf.VERIFY_TOLERANCE["float16"]["llama"]


def test_tokenizer_matches_tiktoken(tmp_path):
    path = tmp_path / "model.gguf"
    export_gguf.export(tiny_model("c", n_layer=1), str(path))
    enc = common.get_tokenizer()
    llm = load(path)
    try:
        ids = llm.tokenize(TEXT.encode(), add_bos=False, special=False)
        assert ids == enc.encode_ordinary(TEXT)
        assert llm.detokenize(ids).decode() == TEXT
        assert llm.tokenize(b"<|endoftext|>", add_bos=False, special=True) == [50256]
        assert llm.token_bos() == llm.token_eos() == 50256
        # no bos is added by default: prompts are tokenized as tiktoken does
        assert llm.tokenize(b"Hello", add_bos=True) == enc.encode_ordinary("Hello")
    finally:
        llm.close()


def test_chat_template(tmp_path):
    """A chat-tuned export carries the Jinja template; rendered, it is
    chat_template.render's text."""
    path = tmp_path / "model.gguf"
    export_gguf.export(tiny_model("a", n_layer=1), str(path), chat=True)
    llm = load(path)
    try:
        assert llm.metadata["tokenizer.chat_template"] == chat_template.JINJA
        messages = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "Bye?"}]
        formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=llm.metadata["tokenizer.chat_template"], eos_token="<|endoftext|>",
            bos_token="<|endoftext|>")
        prompt = formatter(messages=messages).prompt
        assert prompt == chat_template.render(messages, add_generation_prompt=True)
    finally:
        llm.close()
    export_gguf.export(tiny_model("a", n_layer=1), str(tmp_path / "plain.gguf"))
    llm = load(tmp_path / "plain.gguf")
    try:
        assert "tokenizer.chat_template" not in llm.metadata
    finally:
        llm.close()


def test_script_end_to_end(tmp_path):
    """As a user runs it: a checkpoint in, a checked file out; then the same again, and bad input:
    one line."""
    save_tiny_checkpoint(tmp_path / "out" / "ckpt.pt")
    r = run_script("export_gguf.py", f"--out_dir={tmp_path / 'out'}")
    assert "logits match" in r.stdout and "'gpt2'" in r.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["ckpt.pt", "model-f32.gguf"]

    def error(*args):
        # refused before a file is written: in this process (the runs above and below have
        # their own)
        r = run_in_process("export_gguf.py", *args)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: ")
        return r.stderr

    assert "already exists" in error(f"--out_dir={tmp_path / 'out'}")
    assert "no checkpoint" in error(f"--out_dir={tmp_path / 'missing'}")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    assert "corrupt" in error(f"--ckpt={tmp_path / 'corrupt.pt'}")
    assert "unknown dtype" in error(f"--out_dir={tmp_path / 'out'}", "--dtype=int4")
    r = run_in_process("export_gguf.py", f"--out_dir={tmp_path / 'out'}", "--replace=True",
                       "--verify=False")
    assert r.returncode == 0, r.stderr
    assert "exported" in r.stdout


def test_bad_input(tmp_path):
    model = tiny_model("a", n_layer=1)
    # SwiGLU with learned positions: no llama.cpp twin
    odd = tiny_model("a", n_layer=1, pos_emb="learned")
    assert "no Hugging Face architecture" in one_line_error(export_gguf.export, odd,
                                                            str(tmp_path / "x.gguf"))
    assert os.listdir(tmp_path) == []
    assert "is a folder" in one_line_error(export_gguf.export, model, str(tmp_path))
    assert "cannot write '/proc/nope.gguf.tmp'" in one_line_error(export_gguf.export, model,
                                                                   "/proc/nope.gguf")

    # a failed check leaves no file and the previous one as it was
    good = tmp_path / "m.gguf"
    export_gguf.export(model, str(good))
    before = good.read_bytes()

    def bad(path):
        common.die("llama.cpp disagrees")

    assert "disagrees" in one_line_error(export_gguf.export, model, str(good), "float32", False,
                                         bad, True)
    assert good.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.gguf"]


def test_biases(tmp_path):
    """bias=True: llama.cpp's llama reads optional q/k/v/o and MLP biases (q and k permuted like
    their rows), and gpt2 the biases it always has."""
    for option in ("a", "c"):
        model = tiny_model(option, bias=True)
        export_gguf.export(model, str(tmp_path / f"{option}.gguf"))
        x = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ours = model(x)[0][0].numpy()
        diff = float(np.abs(file_logits(tmp_path / f"{option}.gguf", x[0].tolist()) - ours).max())
        print(f"option {option} with biases: max |logit difference| {diff:.2e}")
        assert diff < LOGIT_ATOL["llama" if option == "a" else "gpt2"]


def test_rope_permutation_is_needed(tmp_path, monkeypatch):
    """Without permuting W_q and W_k, llama.cpp rotates the wrong pairs: the logits are far off. (So
    the match above is the permutation's doing, and LOGIT_ATOL is far below a mapping mistake.)"""
    model = tiny_model("a")
    monkeypatch.setattr(export_gguf, "permute_rope", lambda w, n_head: w)
    export_gguf.export(model, str(tmp_path / "unpermuted.gguf"))
    x = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(x)[0][0].numpy()
    diff = float(np.abs(file_logits(tmp_path / "unpermuted.gguf", x[0].tolist()) - ours).max())
    print(f"unpermuted RoPE: max |logit difference| {diff:.2e}")
    assert diff > 0.5


def test_permutation_turns_rotate_half_into_adjacent_pairs():
    """The algebra llama.cpp relies on, without llama.cpp: rotating adjacent pairs (2j, 2j+1) of the
    permuted projection gives the permuted rotate-half result, so q·k per head is unchanged."""
    n_head, d, T = 3, 8, 5
    w = torch.randn(n_head * d, 16)
    x = torch.randn(T, 16)
    cos, sin = precompute_rope(d, T, 500.0)
    ours = apply_rotary_emb((x @ w.t()).view(T, n_head, d).transpose(0, 1), cos, sin)  # (H, T, d)
    y = (x @ export_gguf.permute_rope(w, n_head).t()).view(T, n_head, d).transpose(0, 1)
    even, odd = y[..., 0::2], y[..., 1::2]
    # llama.cpp's rotation
    theirs = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
    torch.testing.assert_close(theirs, export_gguf.permute_rope(
        ours.transpose(0, 1).reshape(T, -1).t(), n_head).t().reshape(T, n_head, d).transpose(0, 1))
    q, k = ours, apply_rotary_emb(torch.randn(n_head, T, d), cos, sin)
    torch.testing.assert_close(
        q @ k.transpose(-1, -2),
        torch.stack([export_gguf.permute_rope(q[h].t(), 1).t() for h in range(n_head)])
        @ torch.stack([export_gguf.permute_rope(k[h].t(), 1).t() for h in range(n_head)])
        .transpose(-1, -2))


@pytest.mark.parametrize("option", ["a", "c"])
def test_file_contents(option, tmp_path):
    """What llama.cpp reads, checked with gguf's own reader: hyperparameters, tokenizer, tensors."""
    model = tiny_model(option)
    path = tmp_path / "m.gguf"
    arch = export_gguf.export(model, str(path), chat=True)
    r = gguf.GGUFReader(str(path))

    def field(key):
        f = r.fields[key]
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            return ([f.contents(i) for i in range(len(f.data))] if key != "tokenizer.ggml.merges"
                    else f.contents())
        return f.contents()

    c = model.config
    assert field("general.architecture") == arch == ("llama" if option == "a" else "gpt2")
    assert field(f"{arch}.context_length") == 64 and field(f"{arch}.block_count") == c.n_layer
    assert (field(f"{arch}.embedding_length") == c.n_embd
            and field(f"{arch}.feed_forward_length") == c.ffn_hidden)
    assert (field(f"{arch}.attention.head_count") == field(f"{arch}.attention.head_count_kv")
            == c.n_head)
    if arch == "llama":
        assert (field("llama.rope.freq_base") == 500.0
                and field("llama.rope.dimension_count") == c.head_dim)
        assert abs(field("llama.attention.layer_norm_rms_epsilon") - 1e-3) < 1e-9
    else:
        assert abs(field("gpt2.attention.layer_norm_epsilon") - 1e-3) < 1e-9
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    assert field("tokenizer.ggml.bos_token_id") == field("tokenizer.ggml.eos_token_id") == 50256
    assert field("tokenizer.chat_template") == chat_template.JINJA
    tokens = r.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 50257 and len(r.fields["tokenizer.ggml.merges"].data) == 50000
    assert (tokens.contents(50256) == "<|endoftext|>"
            and tokens.contents(220) == "Ġ")  # byte-level ' '
    types = r.fields["tokenizer.ggml.token_type"]
    assert (types.contents(50256) == gguf.TokenType.CONTROL
            and types.contents(0) == gguf.TokenType.NORMAL)

    tensors = {t.name: t for t in r.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    # the quantized tests' reader reads what gguf's does
    assert tensor_types(path) == {name: t.tensor_type.name for name, t in tensors.items()}
    # GGUF lists dims innermost first
    assert list(tensors["token_embd.weight"].shape) == [c.n_embd, 50257]
    sd = model.state_dict()
    np.testing.assert_array_equal(np.asarray(tensors["token_embd.weight"].data),
                                  sd["transformer.wte.weight"][:50257].numpy())
    if arch == "llama":
        wq = sd["transformer.h.0.attn.c_attn.weight"][:c.n_embd]
        np.testing.assert_array_equal(np.asarray(tensors["blk.0.attn_q.weight"].data),
                                      export_gguf.permute_rope(wq, c.n_head).numpy())
    else:
        assert np.all(np.asarray(tensors["blk.0.attn_qkv.bias"].data) == 0)  # bias=False: zeros


# llama.cpp on a quantized file against model.py holding the same quantized weights
# (quantized_copy): its CPU kernels for q8_0 and q4_0 round each activation row to 8 bits as well,
# up to 0.33 on these scaled-up tiny models (docs/export.md)
QUANT_ATOL = 0.5
# llama.cpp on a quantized export of the trained smoke checkpoint against its fp32 export, on
# held-out text: what quantizing costs (measured 0.13 for q8_0 and 0.42 for q4_0 over 5,120 tokens:
# docs/export.md)
QUANT_FROM_FP32 = {"q8_0": 0.3, "q4_0": 1.0}


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
@pytest.mark.parametrize("option", ["a", "c"])
def test_quantized_file_computes_its_quantized_weights(option, dtype, tmp_path):
    """--dtype=q8_0 / q4_0: the layers' matrices in that type where their rows are whole 32-value
    blocks (option A's ffn_down has 170 inputs: fp16), the tied embedding q8_0, norms and biases
    fp32; llama.cpp's logits are those of our model with the file's weights."""
    model = tiny_model(option)
    path = tmp_path / "q.gguf"
    export_gguf.export(model, str(path), dtype)
    types = tensor_types(path)
    assert types["token_embd.weight"] == "Q8_0" and types["output_norm.weight"] == "F32"
    assert types["blk.0.attn_output.weight"] == dtype.upper()
    assert types["blk.0.ffn_down.weight"] == ("F16" if option == "a" else dtype.upper())
    x = torch.randint(0, 50257, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)[0][0].numpy()
        stored = export_gguf.quantized_copy(model, dtype)(x)[0][0].numpy()
    theirs = file_logits(path, x[0].tolist())
    diff = float(np.abs(theirs - stored).max())
    print(f"option {option}, {dtype}: max |logit difference| {diff:.2e} from model.py "
          f"with the file's weights, {np.abs(stored - ours).max():.2e} between those and fp32")
    assert diff < QUANT_ATOL
    if dtype == "q4_0":
        # 4 bits move these logits by whole units: the match is the quantized weights'
        assert np.abs(stored - ours).max() > 2 * QUANT_ATOL


def test_quantized_smoke_model_stays_close_to_fp32(smoke_ckpt, owt_data, tmp_path):
    """On a trained checkpoint and held-out text, llama.cpp's logits from the q8_0 and q4_0 files
    stay within QUANT_FROM_FP32 of the fp32 file's, the most likely next token is nearly always the
    same, and the files are smaller (the embedding, q8_0 in both, is most of this small model)."""
    model = common.model_from_checkpoint(common.load_checkpoint(str(smoke_ckpt))).eval()
    tokens = np.memmap(owt_data / "val.bin", dtype=np.uint16, mode="r")[:64].tolist()
    logits, sizes = {}, {}
    for dtype in ["float32", "q8_0", "q4_0"]:
        path = tmp_path / f"{dtype}.gguf"
        export_gguf.export(model, str(path), dtype)
        sizes[dtype] = os.path.getsize(path)
        logits[dtype] = file_logits(path, tokens)
    for dtype in ["q8_0", "q4_0"]:
        diff = float(np.abs(logits[dtype] - logits["float32"]).max())
        agree = float((logits[dtype].argmax(-1) == logits["float32"].argmax(-1)).mean())
        print(f"{dtype}: max |logit difference| from fp32 {diff:.3f}, top-1 agreement {agree:.3f}, "
              f"{sizes[dtype] / sizes['float32']:.2f} of the fp32 file")
        assert diff < QUANT_FROM_FP32[dtype] and agree >= 0.95
        assert sizes[dtype] < 0.4 * sizes["float32"]
    assert sizes["q4_0"] < sizes["q8_0"]


def test_script_quantized(tmp_path):
    """--dtype=q8_0 as a user runs it: model-q8_0.gguf, checked by llama.cpp against the weights it
    holds."""
    save_tiny_checkpoint(tmp_path / "out" / "ckpt.pt")
    r = run_in_process("export_gguf.py", f"--out_dir={tmp_path / 'out'}", "--dtype=q8_0")
    assert r.returncode == 0, r.stderr
    assert "logits match" in r.stdout and "(q8_0)" in r.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["ckpt.pt", "model-q8_0.gguf"]
