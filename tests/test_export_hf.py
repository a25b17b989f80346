"""export_hf.py: the exported folder, loaded by Hugging Face transformers on the CPU, must compute
the same function as model.py (logits within 1e-4 in fp32, identical greedy generations) for all
three options, and its tokenizer must give tiktoken's ids."""

import json
import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import common  # noqa: E402
import export_hf  # noqa: E402
from launch import one_line_error, run_in_process, run_script  # noqa: E402
from model import GPT, OPTIONS, GPTConfig  # noqa: E402

# Tiny versions of the three options that keep what the export must get right: B's heads of 32,
# SwiGLU's odd width, C's GELU and LayerNorm with bias, and a theta and eps that are not the
# library defaults (a config that forgot them would still load, and be wrong).
TINY = {
    "a": dict(n_layer=2, n_head=2, n_embd=64, rope_theta=500.0, norm_eps=1e-3),
    "b": dict(n_layer=3, n_head=4, n_embd=64, rope_theta=20000.0, norm_eps=1e-4),
    "c": dict(n_layer=2, n_head=2, n_embd=64, norm_eps=1e-3),
}


def tiny_model(option: str, **overrides) -> GPT:
    torch.manual_seed(1)
    model = GPT(GPTConfig(**{**OPTIONS[option], **TINY[option], "block_size": 64, **overrides}))
    # Freshly initialised weights give logits of ~1e-2, where any mistake hides under a 1e-4
    # tolerance. Scale every parameter up and randomise the norms' gains and biases so a wrong
    # eps, a missing bias or a swapped gate/up shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)
    return model.eval()


def load_hf(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.mark.parametrize("option, arch", [("a", "LlamaForCausalLM"), ("b", "LlamaForCausalLM"),
                                          ("c", "GPT2LMHeadModel")])
def test_export_matches_hugging_face(option, arch, tmp_path):
    model = tiny_model(option)
    export_hf.export(model, str(tmp_path / "hf"), with_tokenizer=False)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == [arch]
    hf = load_hf(tmp_path / "hf")
    assert type(hf).__name__ == arch
    assert sum(p.numel() for p in hf.parameters()) >= model.num_params()  # GPT-2 adds zero biases

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50257, (3, 64), generator=g)
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
    assert theirs.shape == ours.shape == (3, 64, 50257)  # the 47 padding rows are not exported
    assert ours.abs().max() > 1.0  # the comparison means something
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)

    # greedy generation: the same tokens, ours with the KV cache, theirs with its own
    prompt = x[:2, :8]
    ours_gen = model.generate(prompt, max_new_tokens=24, temperature=0.0, stop=())
    theirs_gen = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=24,
                             min_new_tokens=24, do_sample=False, pad_token_id=0)
    assert torch.equal(theirs_gen, ours_gen)


def test_export_with_biases(tmp_path):
    """bias=True maps onto Llama's attention_bias / mlp_bias and GPT-2's own biases."""
    for option in ("a", "c"):
        model = tiny_model(option, bias=True)
        folder = tmp_path / option
        export_hf.export(model, str(folder), with_tokenizer=False)
        x = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            torch.testing.assert_close(load_hf(folder)(x).logits, model(x)[0], atol=1e-4, rtol=0)


def test_tokenizer_files_match_tiktoken(tmp_path):
    export_hf.export(tiny_model("a"), str(tmp_path / "hf"))
    names = set(os.listdir(tmp_path / "hf"))
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", "config.json",
            "model.safetensors"} <= names
    enc = common.get_tokenizer()
    text = ("Hello world!  The quick brown fox's 3.14 jumps\n\nover \t the lazy dog. Ünïcödé, "
            "日本語, emoji 🙂 and   runs of spaces; ALL CAPS, don't, I'll, we've.")
    for cls in (transformers.AutoTokenizer, transformers.GPT2Tokenizer):
        tok = cls.from_pretrained(tmp_path / "hf")
        ids = tok(text)["input_ids"]
        assert ids == enc.encode_ordinary(text)
        assert tok.decode(ids) == text
        assert tok.eos_token_id == 50256


@pytest.mark.parametrize("option", ["a", "c"])
def test_config_fields_other_tools_read(option, tmp_path):
    """What the logits comparison cannot see: the context length (lm-evaluation-harness and vLLM
    take their maximum length from it; RoPE would run past it), rope_theta under the key
    transformers < 5 reads, the end-of-text id generate() stops at, and the tokenizer's
    model_max_length."""
    model = tiny_model(option)
    folder = tmp_path / "hf"
    export_hf.export(model, str(folder))
    config = json.loads((folder / "config.json").read_text())
    assert config["max_position_embeddings" if option == "a" else "n_positions"] == 64
    if option == "a":
        assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 500.0
    assert config["bos_token_id"] == config["eos_token_id"] == 50256
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["bos_token_id"] == generation["eos_token_id"] == 50256
    assert load_hf(folder).generation_config.eos_token_id == 50256
    assert transformers.AutoTokenizer.from_pretrained(folder).model_max_length == 64


def run_main(monkeypatch, *argv: str) -> None:
    """export_hf.main() in this process, its settings restored afterwards."""
    for name in ("out_dir", "ckpt", "hf_dir", "tokenizer", "verify"):
        monkeypatch.setattr(export_hf, name, getattr(export_hf, name))
    monkeypatch.setattr(sys, "argv", ["export_hf.py", *argv])
    export_hf.main()


def save_tiny_checkpoint(path, **overrides) -> GPT:
    """A checkpoint in train.py's format holding a tiny option-C model."""
    model = tiny_model("c", **overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    common.save_checkpoint({"model": model.state_dict(),
                            "model_args": common.model_args(model.config),
                            "tokenizer": "gpt2", "config": {}, "iter_num": 1}, str(path))
    return model


def test_default_folder_is_beside_the_checkpoint_file(tmp_path, monkeypatch):
    """--ckpt=DIR/file.pt with no --hf_dir exports to DIR/hf, not to the default out_dir's."""
    monkeypatch.chdir(tmp_path)
    save_tiny_checkpoint(tmp_path / "elsewhere" / "model.pt", n_layer=1)
    run_main(monkeypatch, f"--ckpt={tmp_path / 'elsewhere' / 'model.pt'}", "--verify=False",
             "--tokenizer=False")
    assert (tmp_path / "elsewhere" / "hf" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]


def test_verification_refuses_an_export_that_computes_another_function(tmp_path, monkeypatch,
                                                                          capsys):
    """The check main() runs after exporting: an export whose logits differ (here GPT-2 with ReLU
    for the tanh GELU) is reported as an error, not as a success."""
    save_tiny_checkpoint(tmp_path / "ckpt.pt", n_layer=1)
    real = export_hf.gpt2_config
    monkeypatch.setattr(export_hf, "gpt2_config",
                        lambda config: {**real(config), "activation_function": "relu"})
    good = tmp_path / "hf"  # a previous, good export: a failed one must not replace it
    export_hf.export(tiny_model("c", n_layer=1), str(good), with_tokenizer=False)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    with pytest.raises(SystemExit) as e:
        run_main(monkeypatch, f"--ckpt={tmp_path / 'ckpt.pt'}", "--tokenizer=False")
    assert (str(e.value).startswith("error: the export's logits differ")
            and "not written" in str(e.value))
    assert "logits match" not in capsys.readouterr().out
    assert ({p.name: p.read_bytes() for p in good.iterdir()} == before
            and not (tmp_path / "hf.tmp").exists())


def test_a_full_disk_while_exporting_leaves_the_previous_export(tmp_path, monkeypatch):
    """The weights fail to write (the disk is full): one line, no half-made hf.tmp, the old export
    as it was."""
    import errno

    import safetensors.torch
    good = tmp_path / "hf"
    export_hf.export(tiny_model("c", n_layer=1), str(good), with_tokenizer=False)
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    message = one_line_error(export_hf.export, tiny_model("a", n_layer=1), str(good), False)
    assert "(No space left on device)" in message and "is as it was" in message
    assert ({p.name: p.read_bytes() for p in good.iterdir()} == before
            and sorted(os.listdir(tmp_path)) == ["hf"])


def test_script_end_to_end(tmp_path):
    """As a user runs it: a checkpoint in, a verified folder out; and a bad one,
    a one-line error."""
    ckpt_dir = tmp_path / "out"
    save_tiny_checkpoint(ckpt_dir / "ckpt.pt")
    r = run_script("export_hf.py", f"--out_dir={ckpt_dir}",
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert "GPT2LMHeadModel" in r.stdout and "logits match" in r.stdout
    assert ((ckpt_dir / "hf" / "model.safetensors").is_file()
            and (ckpt_dir / "hf" / "vocab.json").is_file())

    unknown = tmp_path / "unknown.pt"  # model_args no GPTConfig accepts
    common.save_checkpoint({"model": {}, "model_args": {"n_layer": 2, "attention": "linear"}},
                           str(unknown))
    # refused before any work: in this process
    r = run_in_process("export_hf.py", f"--ckpt={unknown}")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: checkpoint holds an unknown architecture")
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_input(tmp_path):
    # an architecture with no Hugging Face equivalent: SwiGLU with learned positions
    odd = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, mlp="swiglu",
                        pos_emb="learned"))
    assert "no Hugging Face architecture" in one_line_error(export_hf.export, odd,
                                                            str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    assert "no checkpoint" in one_line_error(common.load_checkpoint, str(tmp_path / "missing"))

    # a folder that is not a previous export is never replaced; a previous export is
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    model = tiny_model("a")
    assert "does not look like an export" in one_line_error(export_hf.export, model, str(mine),
                                                            False)
    assert (mine / "notes.txt").read_text() == "keep me"
    export_hf.export(model, str(tmp_path / "hf"), False)
    (tmp_path / "hf" / "stale.bin").write_text("from an older export")
    export_hf.export(model, str(tmp_path / "hf"), False)
    assert (sorted(os.listdir(tmp_path / "hf"))
            == ["config.json", "generation_config.json", "model.safetensors"])

    # --hf_dir where no folder can be made, or naming a file
    assert "cannot create '/proc/nope.tmp'" in one_line_error(export_hf.export, model,
                                                              "/proc/nope", False)
    (tmp_path / "a_file").write_text("not a folder")
    assert "is a file, not a folder" in one_line_error(export_hf.export, model,
                                                        str(tmp_path / "a_file"), False)
    assert (tmp_path / "a_file").read_text() == "not a folder"
    # below a file
    message = one_line_error(export_hf.export, model, str(tmp_path / "a_file" / "hf"), False)
    assert f"'{tmp_path / 'a_file'}' is a file, not a folder" in message and "--hf_dir" in message


def test_exported_files_share_one_mode(tmp_path):
    """The weights are as readable as config.json (umask-respecting), not 0600 from
    safetensors' temp file."""
    export_hf.export(tiny_model("c", n_layer=1), str(tmp_path / "hf"), False)
    modes = {name: (tmp_path / "hf" / name).stat().st_mode & 0o777
             for name in os.listdir(tmp_path / "hf")}
    assert (modes["model.safetensors"] == modes["config.json"]
            == modes["generation_config.json"]), modes


def test_export_without_tokenizer_files(tmp_path, monkeypatch, capsys):
    """tokenizer/'s files unreadable (a checkout without them): the model is exported alone,
    with a note."""
    import tiktoken.load

    def missing(path, expected_hash=None):
        raise FileNotFoundError(path)

    monkeypatch.setattr(tiktoken.load, "read_file_cached", missing)
    export_hf.export(tiny_model("c"), str(tmp_path / "hf"))
    assert (sorted(os.listdir(tmp_path / "hf"))
            == ["config.json", "generation_config.json", "model.safetensors"])
    assert "exported without them" in capsys.readouterr().out
