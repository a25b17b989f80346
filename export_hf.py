"""
Export a checkpoint as a Hugging Face model folder, so transformers, lm-evaluation-harness, vLLM
and the rest of that ecosystem can run it:

    python export_hf.py --out_dir=out-option-a               # -> out-option-a/hf
    python export_hf.py --ckpt=path/ckpt.pt --hf_dir=my-model

Options A and B are LLaMA's block and become `LlamaForCausalLM`; option C is GPT-2's and becomes
`GPT2LMHeadModel`. The folder holds config.json, model.safetensors (fp32, the embedding cut to the
real 50,257-token vocabulary) and GPT-2's tokenizer files (vocab.json, merges.txt) from
tokenizer/. Needs `safetensors`; with `transformers` installed too, the export is loaded back
and its logits checked against this project's model before the script reports success.

No weight permutation is needed for LLaMA: model.py's RoPE already uses Hugging Face's rotate-half
layout. The weight-name mapping is the whole of the conversion:

    model.py (this project)     LlamaForCausalLM                       GPT2LMHeadModel
    transformer.wte             model.embed_tokens (= lm_head, tied)   transformer.wte (tied)
    transformer.wpe             -                                      transformer.wpe
    h.i.ln_1                    layers.i.input_layernorm               h.i.ln_1
    h.i.ln_2                    layers.i.post_attention_layernorm      h.i.ln_2
    h.i.attn.c_attn [q; k; v]   self_attn.q_proj, k_proj, v_proj       h.i.attn.c_attn (transposed)
    h.i.attn.c_proj             self_attn.o_proj                       h.i.attn.c_proj (transposed)
    h.i.mlp.c_fc [gate; up]     mlp.gate_proj, mlp.up_proj             h.i.mlp.c_fc (transposed)
    h.i.mlp.c_proj              mlp.down_proj                          h.i.mlp.c_proj (transposed)
    transformer.ln_f            model.norm                             transformer.ln_f
"""

import json
import os
import shutil
import sys

import torch

from common import die, file_in_the_way, load_checkpoint, model_from_checkpoint
from model import EOT_TOKEN as _EOT_TOKEN  # underscore: not a setting for configure()
from model import GPT
from tokenizer import FILES as _TOKENIZER_FILES  # underscore: not a setting (nor `tokenizer` below)
from tokenizer import chat_template

# -----------------------------------------------------------------------------
out_dir = "out"  # the checkpoint is out_dir/ckpt.pt ...
ckpt = ""  # ... unless this names a checkpoint file
hf_dir = ""  # where the Hugging Face folder goes; "" = <folder of the checkpoint>/hf
tokenizer = True  # write GPT-2's tokenizer files (from tokenizer/)
verify = True  # load the export with transformers (if installed) and compare logits with ours
# -----------------------------------------------------------------------------

# GPT-2's BPE files as they ship in tokenizer/ (path, sha256): Hugging Face's names for them
GPT2_FILES = {"vocab.json": _TOKENIZER_FILES["encoder.json"],
              "merges.txt": _TOKENIZER_FILES["vocab.bpe"]}


def hf_architecture(config) -> str:
    """'llama' (options A, B) or 'gpt2' (option C); any other mix has no Hugging Face twin."""
    shape = (config.mlp, config.norm, config.pos_emb)
    if shape == ("swiglu", "rmsnorm", "rope"):
        return "llama"
    if shape == ("gelu", "layernorm", "learned"):
        return "gpt2"
    die(f"no Hugging Face architecture for mlp={config.mlp}, norm={config.norm}, "
        f"pos_emb={config.pos_emb}: export supports swiglu+rmsnorm+rope (LlamaForCausalLM, "
        f"options A/B) and gelu+layernorm+learned (GPT2LMHeadModel, option C)")


def llama_config(config) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.ffn_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,  # plain multi-head attention, no grouped queries
        "head_dim": config.head_dim,  # explicit: B's heads of 32 are not hidden_size / 128
        "hidden_act": "silu",  # SwiGLU's gate
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        # transformers < 5 reads rope_theta, 5 and later rope_parameters: write both
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rope_scaling": None,
        "attention_bias": config.bias,
        "mlp_bias": config.bias,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": _EOT_TOKEN,  # GPT-2's single special token does every job
        "eos_token_id": _EOT_TOKEN,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def gpt2_config(config) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.ffn_hidden,
        # the tanh approximation, as model.py's F.gelu(approximate="tanh")
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.norm_eps,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,  # 1/sqrt(head_dim), as scaled_dot_product_attention
        "tie_word_embeddings": True,
        "bos_token_id": _EOT_TOKEN,
        "eos_token_id": _EOT_TOKEN,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def llama_weights(model: GPT) -> dict[str, torch.Tensor]:
    c = model.config
    sd = model.state_dict()
    # [:c.vocab_size]: drop the padding rows
    out = {"model.embed_tokens.weight": sd["transformer.wte.weight"][:c.vocab_size],
           "model.norm.weight": sd["transformer.ln_f.weight"]}
    for i in range(c.n_layer):
        p, q = f"transformer.h.{i}.", f"model.layers.{i}."
        out[q + "input_layernorm.weight"] = sd[p + "ln_1.weight"]
        out[q + "post_attention_layernorm.weight"] = sd[p + "ln_2.weight"]
        for kind in ["weight", "bias"] if c.bias else ["weight"]:
            # c_attn is q, k, v stacked along the output dimension; c_fc is gate, up
            wq, wk, wv = sd[p + f"attn.c_attn.{kind}"].split(c.n_embd, dim=0)
            gate, up = sd[p + f"mlp.c_fc.{kind}"].split(c.ffn_hidden, dim=0)
            out.update({q + f"self_attn.q_proj.{kind}": wq, q + f"self_attn.k_proj.{kind}": wk,
                        q + f"self_attn.v_proj.{kind}": wv,
                        q + f"self_attn.o_proj.{kind}": sd[p + f"attn.c_proj.{kind}"],
                        q + f"mlp.gate_proj.{kind}": gate, q + f"mlp.up_proj.{kind}": up,
                        q + f"mlp.down_proj.{kind}": sd[p + f"mlp.c_proj.{kind}"]})
    return out


def gpt2_weights(model: GPT) -> dict[str, torch.Tensor]:
    c = model.config
    sd = model.state_dict()
    out = {"transformer.wte.weight": sd["transformer.wte.weight"][:c.vocab_size],
           "transformer.wpe.weight": sd["transformer.wpe.weight"],
           "transformer.ln_f.weight": sd["transformer.ln_f.weight"],
           "transformer.ln_f.bias": sd["transformer.ln_f.bias"]}
    for i in range(c.n_layer):
        p = f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            out[p + f"{norm}.weight"], out[p + f"{norm}.bias"] = (sd[p + f"{norm}.weight"],
                                                                  sd[p + f"{norm}.bias"])
        for lin in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            w = sd[p + f"{lin}.weight"]
            # GPT-2's Conv1D stores weights as (in, out), the transpose of nn.Linear; it always has
            # a bias, so a model trained without biases gets zeros (the same function).
            out[p + f"{lin}.weight"] = w.t()
            out[p + f"{lin}.bias"] = sd[p + f"{lin}.bias"] if c.bias else torch.zeros(w.size(0))
    return out


def write_tokenizer(folder: str, block_size: int, chat: bool = False) -> bool:
    """GPT-2's vocab.json and merges.txt byte for byte, from tokenizer/ (hash checked), and a
    tokenizer_config.json, so AutoTokenizer.from_pretrained(folder) gives tiktoken's token ids. For
    a chat-tuned model it carries tokenizer/chat_template.py's template in Jinja:
    apply_chat_template(messages, add_generation_prompt=True) then gives the ids chat.py prompts
    with, and generate() stops at the reply's end, <|endoftext|>, the eos_token."""
    from tiktoken.load import read_file_cached

    for name, (url, sha256) in GPT2_FILES.items():
        try:
            data = read_file_cached(url, sha256)
        except Exception as e:  # offline with no cache: requests' ConnectionError and the like
            print(f"note: GPT-2 tokenizer files not available ({type(e).__name__}); exported "
                  f"without them. Restore tokenizer/ (git checkout -- tokenizer/) to include them")
            return False
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    eot = "<|endoftext|>"
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size,
                   "add_prefix_space": False, "bos_token": eot, "eos_token": eot, "unk_token": eot,
                   "clean_up_tokenization_spaces": False,
                   **({"chat_template": chat_template.JINJA} if chat else {})}, f, indent=2)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": eot, "eos_token": eot, "unk_token": eot}, f, indent=2)
    return True


def export(model: GPT, folder: str, with_tokenizer: bool = True, chat: bool = False,
           check=None) -> str:
    """Write the Hugging Face folder for `model` (written beside, then moved into place), with the
    chat template when chat; returns the architecture name. check(path), if given, runs on the
    finished folder before it moves into place: when it fails, the folder is removed and a previous
    export stays as it was."""
    from safetensors.torch import save_file

    arch = hf_architecture(model.config)
    folder = os.path.normpath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        die(f"'{folder}' is a file, not a folder: give --hf_dir a folder to create "
            "(or a previous export)")
    if (os.path.exists(folder) and not os.path.isfile(os.path.join(folder, "config.json"))
            and os.listdir(folder)):
        die(f"'{folder}' exists and does not look like an export (no config.json): "
            "choose another --hf_dir")
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
    except OSError as e:  # below a file (--hf_dir=notes.txt/hf), /proc, a read-only disk, no access
        blocker = file_in_the_way(tmp)
        why = f"'{blocker}' is a file, not a folder" if blocker else e.strerror
        die(f"cannot create '{tmp}' beside '{folder}' ({why}): "
            "give --hf_dir a path in a writable folder")
    model = model.float().cpu()
    hf_config = llama_config(model.config) if arch == "llama" else gpt2_config(model.config)
    weights = llama_weights(model) if arch == "llama" else gpt2_weights(model)
    try:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2)
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": _EOT_TOKEN, "eos_token_id": _EOT_TOKEN}, f, indent=2)
        # safetensors wants each tensor contiguous and in its own storage (the slices above share)
        weights_path = os.path.join(tmp, "model.safetensors")
        save_file({k: v.detach().contiguous().clone() for k, v in weights.items()}, weights_path,
                  metadata={"format": "pt"})
        # safetensors writes through a private temp file (mode 0600) and renames it; give the
        # weights the mode every other file here got from open() and the umask, so whoever may read
        # the folder may load it
        shutil.copymode(os.path.join(tmp, "config.json"), weights_path)
        if with_tokenizer:
            write_tokenizer(tmp, model.config.block_size, chat)
    except OSError as e:  # a full disk mid-write: no half-made folder left, the old export kept
        shutil.rmtree(tmp, ignore_errors=True)
        die(f"cannot write the export into '{tmp}' ({e.strerror or e}): free space, or give "
            f"--hf_dir another place ('{folder}' is as it was)")
    except BaseException:  # Ctrl-C
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if check is not None:
        try:
            check(tmp)
        except BaseException:  # die() too: a failed export never replaces a good one
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return arch


def max_logit_difference(model: GPT, folder: str, seed: int = 0) -> float:
    """Largest |logit difference| between our model and the export loaded by transformers, in fp32
    on the CPU, on two random sequences of block_size tokens."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model = model.float().cpu().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.config.vocab_size, (2, model.config.block_size), generator=g)
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
    return (ours - theirs).abs().max().item()


def main():
    from configurator import configure

    configure(globals(), sys.argv[1:])
    try:
        import safetensors  # noqa: F401
    except ImportError:
        die("export needs safetensors: pip install safetensors "
            "(and transformers to load the result)")
    source = ckpt or out_dir
    checkpoint = load_checkpoint(source)
    model = model_from_checkpoint(checkpoint)
    folder = hf_dir or os.path.join(os.path.dirname(ckpt) if ckpt else out_dir, "hf")
    # chat-tuned (train.py on prepare_chat.py's data)
    chat = checkpoint.get("chat_template") is not None
    if chat and checkpoint["chat_template"] != chat_template.NAME:
        die(f"{source} was tuned with chat template '{checkpoint['chat_template']}', not this "
            f"version's '{chat_template.NAME}': export it with the version that trained it")

    def check(path: str) -> None:  # transformers loads the export back, before it replaces anything
        try:
            import transformers
        except ImportError:
            print("transformers is not installed: skipped loading the export back to check it")
            return
        diff = max_logit_difference(model, path)
        if not diff <= 1e-4:
            die(f"the export's logits differ from this model's by up to {diff:.2e} (> 1e-4), so it "
                f"was not written: please report this with your transformers version "
                f"({transformers.__version__})")
        print(f"checked with transformers {transformers.__version__}: logits match, "
              f"max |difference| {diff:.1e}")

    arch = export(model, folder, tokenizer and checkpoint.get("tokenizer", "gpt2") == "gpt2", chat,
                  check if verify else None)
    name = "LlamaForCausalLM" if arch == "llama" else "GPT2LMHeadModel"
    kind = ", chat-tuned: with its chat_template" if chat else ""
    print(f"exported {source} ({model.num_params():,} parameters{kind}) to {folder} as {name}: "
          f"{', '.join(sorted(os.listdir(folder)))}")


if __name__ == "__main__":
    main()
