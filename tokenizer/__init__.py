"""GPT-2's BPE tokenizer from the files in this folder, through tiktoken: no download, no cache
folder, no environment variable. Free of torch, so prepare.py can use it too, and the JSON Lines
reader that prepare.py and chat_template.py share."""

import functools
import json
import os
from collections.abc import Iterator

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

HERE = os.path.dirname(os.path.abspath(__file__))
# (path, sha256): the hashes tiktoken hard-codes for OpenAI's copies (tiktoken_ext/
# openai_public.py), so a damaged or edited file is refused, not used to tokenize differently
FILES = {
    "vocab.bpe": (os.path.join(HERE, "vocab.bpe"),
                  "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
    "encoder.json": (os.path.join(HERE, "encoder.json"),
                     "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
}
# GPT-2's pre-tokenizer split, as tiktoken writes it for "gpt2" (r50k_pat_str)
PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
EOT = 50256  # <|endoftext|>


@functools.cache
def gpt2() -> tiktoken.Encoding:
    """tiktoken's Encoding for GPT-2, identical to tiktoken.get_encoding("gpt2")."""
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=FILES["vocab.bpe"][0], vocab_bpe_hash=FILES["vocab.bpe"][1],
            encoder_json_file=FILES["encoder.json"][0], encoder_json_hash=FILES["encoder.json"][1])
    except (OSError, ValueError) as e:  # a missing file, or tiktoken's hash mismatch
        raise SystemExit(f"error: GPT-2's tokenizer files in {HERE} are missing or damaged "
                         f"({type(e).__name__}); restore them with `git checkout -- tokenizer/`"
                         ) from None
    return tiktoken.Encoding(name="gpt2", pat_str=PAT_STR, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT}, explicit_n_vocab=50257)


def json_lines(path) -> Iterator[tuple[int, object]]:
    """(line number, value) of each line of a JSON Lines file, blank lines skipped; one that is not
    JSON is a one-line error naming the file and line. Bytes that are not UTF-8 raise
    UnicodeDecodeError, for the caller to name."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {path} line {n}: not valid JSON ({e.msg})") from None
            yield n, row
