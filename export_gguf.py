"""
Export a checkpoint as one GGUF file, so llama.cpp (llama-cli, llama-server, llama-cpp-python,
Ollama, LM Studio...) runs it:

    python export_gguf.py --out_dir=out-option-a                 # -> out-option-a/model-f32.gguf
    python export_gguf.py --ckpt=path/ckpt.pt --gguf_file=my.gguf --dtype=float16
    python export_gguf.py --out_dir=out-option-a --dtype=q8_0     # -> model-q8_0.gguf (or q4_0)

Options A and B are LLaMA's block and become llama.cpp's "llama" architecture; option C is GPT-2's
and becomes "gpt2". The file holds the weights (fp32, or fp16 for the matrices with --dtype=float16;
the norms stay fp32 as llama.cpp's own converter keeps them; or quantized, --dtype=q8_0 or q4_0, see
stored()), the hyperparameters, and GPT-2's BPE tokenizer (tokens and merges from the same
vocab.json / vocab.bpe tiktoken caches, pre-tokenizer "gpt-2", <|endoftext|> = 50256 as bos and eos,
no bos added). A chat-tuned checkpoint gets its chat template (chat_template.JINJA) as
tokenizer.chat_template. Needs `pip install gguf`; with llama-cpp-python installed too, the file is
loaded back and its logits checked against this project's model before it replaces anything.

RoPE: model.py rotates the pairs (x_j, x_{j+d/2}) ("rotate-half", Hugging Face's layout), while
llama.cpp's "llama" architecture rotates adjacent pairs (x_{2j}, x_{2j+1}) (the LLaMA reference
code's layout). So the rows of each head of W_q and W_k are permuted, row j -> 2j and row j+d/2 ->
2j+1, exactly as llama.cpp's convert_hf_to_gguf.py does for a Hugging Face Llama: q·k is unchanged
(the same permutation on both sides), and each rotated pair lands where llama.cpp rotates it.

    model.py (this project)     llama (options A, B)                      gpt2 (option C)
    transformer.wte             token_embd (tied: no output.weight)       token_embd (tied)
    transformer.wpe             -                                         position_embd
    h.i.ln_1                    blk.i.attn_norm                           blk.i.attn_norm (+bias)
    h.i.ln_2                    blk.i.ffn_norm                            blk.i.ffn_norm (+bias)
    h.i.attn.c_attn [q; k; v]   blk.i.attn_q, attn_k (permuted), attn_v   blk.i.attn_qkv
    h.i.attn.c_proj             blk.i.attn_output                         blk.i.attn_output
    h.i.mlp.c_fc [gate; up]     blk.i.ffn_gate, ffn_up                    blk.i.ffn_up
    h.i.mlp.c_proj              blk.i.ffn_down                            blk.i.ffn_down
    transformer.ln_f            output_norm                               output_norm (+bias)
"""

import json
import os
import sys

import numpy as np
import torch

from common import die, load_checkpoint, model_from_checkpoint
from export_hf import GPT2_FILES, gpt2_weights, hf_architecture, llama_weights
from model import EOT_TOKEN as _EOT_TOKEN  # underscore: not a setting for configure()
from model import GPT
from tokenizer import chat_template

# -----------------------------------------------------------------------------
out_dir = "out"  # the checkpoint is out_dir/ckpt.pt ...
ckpt = ""  # ... unless this names a checkpoint file
gguf_file = ""  # where the file goes; "" = <checkpoint folder>/model-f32.gguf (or -f16, -q8_0)
dtype = "float32"  # float32 | float16 | q8_0 | q4_0: the matrices' type (norms, biases stay fp32)
verify = True  # load the file with llama-cpp-python (if installed) and compare logits with ours
replace = False  # overwrite an existing --gguf_file
# -----------------------------------------------------------------------------

# The check's bound on max |logit difference| against llama.cpp (run with an fp32 KV cache), by
# dtype and architecture, above what docs/export.md measured: looser for gpt2, whose GELU
# llama.cpp's CPU code reads from a table at fp16-rounded inputs, and looser still with fp16
# weights.
# A quantized file is compared with the function it stores (this model with its weights quantized
# and restored: quantized_copy()); llama.cpp's CPU kernels for these types also round each
# activation row to 8 bits, which the bound allows for.
VERIFY_TOLERANCE = {"float32": {"llama": 1e-3, "gpt2": 2e-2},
                    "float16": {"llama": 0.25, "gpt2": 0.25},
                    "q8_0": {"llama": 0.5, "gpt2": 0.5}, "q4_0": {"llama": 0.5, "gpt2": 0.5}}
QUANTIZED = {"q8_0": "Q8_0", "q4_0": "Q4_0"}  # --dtype: gguf's quantization type
FILE_TYPES = {"float32": "ALL_F32", "float16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0",
              "q4_0": "MOSTLY_Q4_0"}


def permute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of each head from rotate-half order (j, j+d/2) to llama.cpp's adjacent pairs (2j, 2j+1):
    convert_hf_to_gguf.py's LlamaModel.permute. Works for a weight (out, in) and a bias (out,)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2)
            .reshape(w.shape))


# export_hf.py's names -> llama.cpp's, as convert_hf_to_gguf.py maps them; gguf_name() replaces
# each piece of a name in turn
GGUF_NAMES = {
    # LlamaForCausalLM
    "model.embed_tokens.": "token_embd.", "model.norm.": "output_norm.", "model.layers.": "blk.",
    ".input_layernorm.": ".attn_norm.", ".post_attention_layernorm.": ".ffn_norm.",
    ".self_attn.q_proj.": ".attn_q.", ".self_attn.k_proj.": ".attn_k.",
    ".self_attn.v_proj.": ".attn_v.", ".self_attn.o_proj.": ".attn_output.",
    ".mlp.gate_proj.": ".ffn_gate.", ".mlp.up_proj.": ".ffn_up.", ".mlp.down_proj.": ".ffn_down.",
    # GPT2LMHeadModel
    "transformer.wte.": "token_embd.", "transformer.wpe.": "position_embd.",
    "transformer.ln_f.": "output_norm.", "transformer.h.": "blk.",
    ".ln_1.": ".attn_norm.", ".ln_2.": ".ffn_norm.", ".attn.c_attn.": ".attn_qkv.",
    ".attn.c_proj.": ".attn_output.", ".mlp.c_fc.": ".ffn_up.", ".mlp.c_proj.": ".ffn_down.",
}


def gguf_name(name: str) -> str:
    for hf, gguf in GGUF_NAMES.items():
        name = name.replace(hf, gguf)
    return name


def llama_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """export_hf.py's weights for LlamaForCausalLM under llama.cpp's names, with the rows of W_q and
    W_k (and their biases) permuted for llama.cpp's RoPE (see above)."""
    out = {}
    for name, w in llama_weights(model).items():
        if ".q_proj." in name or ".k_proj." in name:
            w = permute_rope(w, model.config.n_head)
        out[gguf_name(name)] = w
    return out


def gpt2_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """export_hf.py's weights for GPT2LMHeadModel under llama.cpp's names. They have every bias,
    which llama.cpp's gpt2 requires too (zeros for a model trained without them)."""
    out = {}
    for name, w in gpt2_weights(model).items():
        if name.startswith("transformer.h.") and w.ndim == 2:
            w = w.t()  # Conv1D's (in, out) back to nn.Linear's (out, in), GGUF's layout
        out[gguf_name(name)] = w
    return out


def stored(key: str, a: np.ndarray, dtype: str):
    """(data, gguf quantization type or None) of one tensor as the file holds it. Norms and biases
    stay fp32. Matrices and embeddings take dtype, except where llama.cpp's own quantizer
    (llama-quantize) does otherwise: a quantized type packs each row in blocks of 32 values, so a
    matrix whose rows are not whole blocks (SwiGLU's ffn_down, 854 inputs at d=320) falls back to
    fp16, as llama-quantize falls back; the embedding, tied and so the output layer too, is q8_0
    (llama-quantize keeps the output layer at 6 or 8 bits); GPT-2's position embedding is fp16, as
    llama-quantize never quantizes it."""
    import gguf

    if a.ndim == 1 or dtype == "float32":
        return a, None
    name = QUANTIZED.get(dtype) and ("Q8_0" if key == "token_embd.weight" else QUANTIZED[dtype])
    qtype = name and gguf.GGMLQuantizationType[name]
    block = gguf.GGML_QUANT_SIZES[qtype][0] if qtype else 1
    if qtype is None or key == "position_embd.weight" or a.shape[-1] % block:
        return a.astype(np.float16), None
    return gguf.quants.quantize(a, qtype), qtype


def quantized_copy(model: GPT, dtype: str) -> GPT:
    """A copy of model whose matrices hold what the file stores for dtype, restored to fp32
    (stored(), then gguf's dequantize): the function llama.cpp computes from that file, up to its
    own rounding. RoPE's permutation and the split of q, k, v do not matter here: quantizing works
    on each row alone."""
    import copy

    import gguf

    model = copy.deepcopy(model).float().cpu()
    gguf_names = {"transformer.wte.weight": "token_embd.weight",
                  "transformer.wpe.weight": "position_embd.weight"}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() != 2:
                continue
            key = gguf_names.get(name, "blk.matrix")  # any other matrix takes dtype's type
            data, qtype = stored(key, p.numpy(), dtype)
            restored = (data.astype(np.float32) if qtype is None else
                        gguf.quants.dequantize(data, qtype))
            p.copy_(torch.from_numpy(restored.reshape(p.shape)))
    return model


def gpt2_vocab() -> tuple[list[str], list[str]]:
    """GPT-2's tokens (byte-level strings, by id) and merges, from the files tiktoken builds its
    ranks from (tokenizer/, as export_hf.py reads them, hash checked)."""
    from tiktoken.load import read_file_cached

    try:
        encoder = json.loads(read_file_cached(*GPT2_FILES["vocab.json"]))
        bpe = read_file_cached(*GPT2_FILES["merges.txt"]).decode("utf-8")
    except Exception as e:  # offline with no cache: requests' ConnectionError and the like
        die(f"GPT-2's tokenizer files are not available ({type(e).__name__}), and a GGUF file "
            f"needs them: restore tokenizer/ (git checkout -- tokenizer/)")
    tokens = [t for t, _ in sorted(encoder.items(), key=lambda kv: kv[1])]
    merges = [line for line in bpe.split("\n")[1:] if line]  # the first line is a '#version' header
    return tokens, merges


def write_gguf(model: GPT, path: str, dtype: str = "float32", chat: bool = False,
               name: str = "smallgpt") -> str:
    """Write `model` to path; returns llama.cpp's architecture name. The caller renames into
    place."""
    import gguf

    if dtype not in VERIFY_TOLERANCE:
        die(f"unknown dtype '{dtype}': use float32, float16, q8_0 or q4_0")
    arch = hf_architecture(model.config)
    c = model.config
    model = model.float().cpu()
    tensors = llama_tensors(model) if arch == "llama" else gpt2_tensors(model)
    tokens, merges = gpt2_vocab()
    if len(tokens) != c.vocab_size:
        die(f"the checkpoint has a vocabulary of {c.vocab_size} tokens, GPT-2's BPE {len(tokens)}: "
            f"only GPT-2-vocabulary checkpoints export to GGUF")

    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType[FILE_TYPES[dtype]])
    w.add_context_length(c.block_size)
    w.add_embedding_length(c.n_embd)
    w.add_block_count(c.n_layer)
    w.add_feed_forward_length(c.ffn_hidden)
    w.add_head_count(c.n_head)
    w.add_head_count_kv(c.n_head)  # plain multi-head attention
    w.add_vocab_size(c.vocab_size)
    if arch == "llama":
        w.add_layer_norm_rms_eps(c.norm_eps)
        w.add_rope_freq_base(c.rope_theta)
        w.add_rope_dimension_count(c.head_dim)  # rotate the whole head
        w.add_key_length(c.head_dim)
        w.add_value_length(c.head_dim)
    else:
        w.add_layer_norm_eps(c.norm_eps)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i == _EOT_TOKEN else gguf.TokenType.NORMAL
                       for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(_EOT_TOKEN)
    w.add_eos_token_id(_EOT_TOKEN)
    # prompts are as tiktoken encodes them; the chat template writes its own EOT
    w.add_add_bos_token(False)
    if chat:
        w.add_chat_template(chat_template.JINJA)

    for key, t in tensors.items():
        data, qtype = stored(key, t.detach().float().contiguous().numpy(), dtype)
        w.add_tensor(key, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return arch


def export(model: GPT, path: str, dtype: str = "float32", chat: bool = False, check=None,
           replace=False) -> str:
    """Write the GGUF file to path (written beside as path.tmp, then renamed); returns the
    architecture. An existing file is refused unless replace. check(tmp_path), if given, runs on the
    finished file before the rename: when it fails, the file is removed and nothing at path
    changes."""
    path = os.path.normpath(path)
    if os.path.isdir(path):
        die(f"'{path}' is a folder: give --gguf_file a file name, "
            f"e.g. {os.path.join(path, 'model.gguf')}")
    if os.path.exists(path) and not replace:
        die(f"'{path}' already exists: remove it, give another --gguf_file, or pass --replace=True")
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        arch = write_gguf(model, tmp, dtype, chat)
    except OSError as e:  # a full disk, no permission, a missing folder: no half-written file left
        if os.path.exists(tmp):
            os.remove(tmp)
        die(f"cannot write '{tmp}' ({e.strerror or e}): free space, or give --gguf_file a "
            "writable place")
    except BaseException:  # Ctrl-C, die()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if check is not None:
        try:
            check(tmp)
        except BaseException:
            os.remove(tmp)
            raise
    os.replace(tmp, path)
    return arch


def llama_cpp_logits(path: str, tokens: list[int], n_threads: int | None = None) -> np.ndarray:
    """llama.cpp's logits (len(tokens), vocab) for one sequence, through llama-cpp-python, with an
    fp32 KV cache (llama.cpp's default fp16 cache alone moves the logits by ~1e-2:
    docs/export.md)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=len(tokens), n_batch=len(tokens),
                          n_threads=n_threads, type_k=llama_cpp.GGML_TYPE_F32,
                          type_v=llama_cpp.GGML_TYPE_F32, verbose=False)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[:len(tokens)], dtype=np.float32)
    finally:
        llm.close()


def max_logit_difference(model: GPT, path: str, n: int = 128, seed: int = 0) -> float:
    """Largest |logit difference| between our model (fp32, CPU) and llama.cpp on n random tokens."""
    model = model.float().cpu().eval()
    n = min(n, model.config.block_size)
    x = torch.randint(0, model.config.vocab_size, (1, n),
                      generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours = model(x)[0][0].numpy()
    return float(np.abs(ours - llama_cpp_logits(path, x[0].tolist())).max())


def main():
    from configurator import configure

    configure(globals(), sys.argv[1:])
    try:
        import gguf  # noqa: F401
    except ImportError:
        die("export_gguf.py needs the gguf package: pip install gguf "
            "(and llama-cpp-python to check the result)")
    if dtype not in VERIFY_TOLERANCE:
        die(f"unknown dtype '{dtype}': use float32, float16, q8_0 or q4_0")
    source = ckpt or out_dir
    checkpoint = load_checkpoint(source)
    if checkpoint.get("tokenizer", "gpt2") != "gpt2":
        die(f"checkpoint was trained with tokenizer '{checkpoint['tokenizer']}'; "
            "GGUF export carries GPT-2's only")
    model = model_from_checkpoint(checkpoint)
    suffix = {"float32": "f32", "float16": "f16"}.get(dtype, dtype)
    folder = os.path.dirname(ckpt) if ckpt else out_dir
    path = gguf_file or os.path.join(folder, f"model-{suffix}.gguf")
    chat = checkpoint.get("chat_template") is not None
    if chat and checkpoint["chat_template"] != chat_template.NAME:
        die(f"{source} was tuned with chat template '{checkpoint['chat_template']}', not this "
            f"version's '{chat_template.NAME}': export it with the version that trained it")

    def check(tmp: str) -> None:
        try:
            import llama_cpp
        except ImportError:
            print("llama-cpp-python is not installed: skipped loading the file back to check it")
            return
        reference = quantized_copy(model, dtype) if dtype in QUANTIZED else model
        diff = max_logit_difference(reference, tmp)
        bound = VERIFY_TOLERANCE[dtype][hf_architecture(model.config)]
        if not diff <= bound:
            die(f"llama.cpp's logits differ from this model's by up to {diff:.2e} (> {bound:g}), "
                f"so '{path}' was not written: please report this with your llama-cpp-python "
                f"version ({llama_cpp.__version__})")
        print(f"checked with llama-cpp-python {llama_cpp.__version__}: logits match, "
              f"max |difference| {diff:.1e}")

    arch = export(model, path, dtype, chat, check if verify else None, replace)
    kind = ", chat-tuned: with its chat template" if chat else ""
    print(f"exported {source} ({model.num_params():,} parameters{kind}) to {path} as GGUF "
          f"'{arch}' ({dtype}), {os.path.getsize(path) / 1e6:.1f} MB")

if __name__ == "__main__":
    main()
