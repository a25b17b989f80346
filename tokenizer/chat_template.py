"""
The chat template: the one definition of how a conversation becomes tokens, used by prepare_chat.py
(the fine-tuning data), train.py (the checkpoint records it), chat.py, eval.py (--tasks=chat) and
export_hf.py (the same template in Jinja, for transformers' apply_chat_template).

A conversation in the `messages` format of Hugging Face chat datasets,

    [{"role": "system", "content": "Be brief."},          # optional, first only
     {"role": "user", "content": "Hello!"},
     {"role": "assistant", "content": "Hi! How can I help?"}, ...]

is written as chat.py's transcript, with GPT-2's one special token, <|endoftext|> (EOT), at both
ends:

    <|endoftext|>Be brief.                                   <- the system message, or HEADER
    <blank line>
    User: Hello!
    Assistant: Hi! How can I help?<|endoftext|>User: ...

- The leading EOT starts the conversation the way every document starts in pretraining (prepare.py
  puts EOT between documents), and marks where one conversation ends and the next begins when
  training packs several into one window.
- EOT after a reply ends the assistant's turn: a clear marker already in the 50,257-token vocabulary
  (no new embedding rows), the token chat.py stops at and transformers' generate() stops at (the
  export's eos_token).
- A system message, allowed only first, replaces the header line; without one the header is HEADER.
- The loss covers the assistant's tokens (from the space after "Assistant:") and its EOT; the EOT at
  the start, the header, the user turns and each "Assistant:" are context (target -1), as in
  InstructGPT's and nanochat's fine-tuning.

Token ids are exactly those of tokenizing the whole rendered string as transformers does (special
tokens split out, BPE on the text between them): the pieces below are cut only around EOT and
between "Assistant:" and the space that starts a reply, where GPT-2's pre-tokenizer always splits
anyway (':' and ' x' never share a pre-token). Text a user types that spells "<|endoftext|>" is
ordinary text here (encode_ordinary), as in prepare.py; transformers' tokenizer would read it as the
token.
"""

import os
import sys
from collections.abc import Iterable, Iterator

from tokenizer import json_lines

NAME = "smallgpt-chat-v1"  # in checkpoints and meta.json: the template a model was tuned with
HEADER = "A conversation between a user and a helpful assistant."
EOT = 50256  # <|endoftext|>
EOT_TEXT = "<|endoftext|>"
ROLES = ("system", "user", "assistant")

# The same template for transformers (tokenizer_config.json's chat_template). transformers renders
# it with trim_blocks and lstrip_blocks, which eat newlines after tags, so every literal is a
# {{ '...' }} string.
JINJA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% else %}{{ '" + HEADER + "' }}{% endif %}"
    "{{ '\\n\\n' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def check(messages, partial: bool = False) -> str | None:
    """What is wrong with a conversation, or None. A complete one (for training and eval) is an
    optional system message, then user and assistant turns alternating, ending with the assistant;
    partial=True (a prompt) ends with the user instead."""
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            return f"message {i + 1} must be an object with 'role' and 'content' (a string)"
        if m["role"] not in ROLES:
            return f"message {i + 1} has role {m['role']!r}: use user, assistant or system"
        if not m["content"].strip():
            return f"message {i + 1} ({m['role']}) has empty content"
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            n = i + 1 + (len(messages) - len(turns))
            rule = "a system message may only come first" if m["role"] == "system" else \
                "user and assistant turns alternate, user first"
            return f"message {n} is {m['role']}, expected {want}: {rule}"
    if not turns:
        return "a system message alone is not a conversation: add user and assistant turns"
    if turns[-1]["role"] != ("user" if partial else "assistant"):
        return "the conversation must end with the user's turn" if partial else \
            "the conversation must end with the assistant's turn"
    return None


def render(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as text, EOT written as <|endoftext|>: what JINJA renders."""
    head = messages[0]["content"] if messages[0]["role"] == "system" else HEADER
    text = EOT_TEXT + head + "\n\n"
    for m in messages:
        if m["role"] == "user":
            text += f"User: {m['content']}\n"
        elif m["role"] == "assistant":
            text += f"Assistant: {m['content']}{EOT_TEXT}"
    return text + ("Assistant:" if add_generation_prompt else "")


def pieces(messages: list[dict],
           add_generation_prompt: bool = False) -> Iterable[tuple[str | None, bool]]:
    """(text, in the loss) pieces of render(); None is EOT. Cut only where tokenization splits
    anyway."""
    head = messages[0]["content"] if messages[0]["role"] == "system" else HEADER
    yield None, False
    context = head + "\n\n"
    for m in messages:
        if m["role"] == "user":
            context += f"User: {m['content']}\nAssistant:"
        elif m["role"] == "assistant":
            yield context, False
            yield " " + m["content"], True
            yield None, True  # the end of the turn is the model's to predict
            context = ""
    if add_generation_prompt and context:
        yield context, False
    elif context:  # ending with the user, without the prompt: the "Assistant:" is not written
        yield context.removesuffix("Assistant:"), False


def encode(enc, messages: list[dict],
           add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
    """Token ids of the conversation and, for each, whether it is a target of the loss (assistant
    text and its end-of-turn EOT). enc is tiktoken's GPT-2 encoding."""
    ids, mask = [], []
    for text, target in pieces(messages, add_generation_prompt):
        new = [EOT] if text is None else enc.encode_ordinary(text)
        ids += new
        mask += [target] * len(new)
    return ids, mask


def encode_fit(enc, messages: list[dict], max_tokens: int) -> tuple[list[int], list[bool], int]:
    """encode() of the longest beginning of the conversation that ends with an assistant turn and
    fits in max_tokens: a long conversation is cut at a turn boundary, never mid-turn. Returns ids,
    mask and the number of user+assistant exchanges left out; ids is empty when not even the first
    exchange fits."""
    first = 1 if messages[0]["role"] == "system" else 0
    for drop in range(0, (len(messages) - first) // 2 + 1):
        kept = messages[:len(messages) - 2 * drop]
        if len(kept) <= first:
            break
        ids, mask = encode(enc, kept)
        if len(ids) <= max_tokens:
            return ids, mask, drop
    return [], [], (len(messages) - first) // 2


def prompt(enc, messages: list[dict]) -> list[int]:
    """Token ids of a conversation that ends with the user, followed by "Assistant:": what the model
    continues, with a reply that ends at EOT. Equal to transformers' apply_chat_template(messages,
    add_generation_prompt=True) on the export."""
    return encode(enc, messages, add_generation_prompt=True)[0]


def read_jsonl(path: str) -> Iterator[list[dict]]:
    """The conversations of a JSON Lines file of {"messages": [...]} (prepare_chat.py's input,
    eval.py's --files), each checked by check(); anything wrong is a one-line error naming the file
    and line."""
    if not os.path.isfile(path) or not path.endswith(".jsonl"):
        sys.exit(f"error: {path}: not a .jsonl file; "
                 "give files of one {\"messages\": [...]} object a line")
    try:
        for n, row in json_lines(path):
            if not isinstance(row, dict) or "messages" not in row:
                sys.exit(f"error: {path} line {n}: no 'messages' field: each line must be "
                         f"{{\"messages\": [{{\"role\": ..., \"content\": ...}}, ...]}}")
            if problem := check(row["messages"]):
                sys.exit(f"error: {path} line {n}: {problem}")
            yield row["messages"]
    except UnicodeDecodeError as e:
        sys.exit(f"error: {path} is not UTF-8 text (bad byte at offset {e.start})")
