"""The tokenizer that ships in tokenizer/ against tiktoken's own "gpt2" encoding, built from
OpenAI's copies of the same files (the shared cache stands in for tiktoken's download)."""

import tiktoken
import tiktoken.registry

import tokenizer
from launch import SHARED

TEXTS = [SHARED / "data" / "openwebtext_sample" / "openwebtext_sample.txt",
         SHARED / "data" / "c4_sample" / "c4_en_train_first1000.jsonl",
         SHARED / "data" / "chat" / "chitchat.jsonl"]


def reference(monkeypatch) -> tiktoken.Encoding:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # built here, not reused
    return tiktoken.get_encoding("gpt2")


def test_encodes_as_tiktoken_gpt2(monkeypatch):
    ours, theirs = tokenizer.gpt2(), reference(monkeypatch)
    assert ours.n_vocab == theirs.n_vocab and ours.eot_token == theirs.eot_token
    assert ours.special_tokens_set == theirs.special_tokens_set
    assert ours._mergeable_ranks == theirs._mergeable_ranks and ours._pat_str == theirs._pat_str
    mixed = "Héllo wörld 你好 <|endoftext|> it's   12345\n\n\tend "
    texts = [p.read_text(encoding="utf-8") for p in TEXTS] + [mixed]
    for text in texts:
        ids = ours.encode_ordinary(text)
        assert ids == theirs.encode_ordinary(text) and ours.decode(ids) == text
    assert ours.encode(mixed, allowed_special="all") == theirs.encode(mixed, allowed_special="all")
    assert ours.encode("Hello world") == [15496, 995]


def test_scripts_share_one_tokenizer():
    import common

    assert common.get_tokenizer() is tokenizer.gpt2()
