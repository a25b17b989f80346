"""
Tests of chat.py: the transcript template and its trimming, stop strings held back while streaming,
the terminal REPL through piped stdin, the web server's protocol and limits, and the page itself in
a real headless Chromium driven by Playwright.

Expected replies come from a reference written here from the documented template: format the
transcript by hand, run model.generate greedily, decode with tiktoken, cut at the first stop string.
"""

import http.client
import io
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, nullcontext

import openai
import pytest
import torch
from test_sample import make_checkpoint

import chat
from common import get_tokenizer, load_checkpoint, model_from_checkpoint, save_checkpoint
from launch import (
    ROOT,
    forking_python,
    in_background,
    run_in_one_process,
    run_in_process,
    run_script,
)
from model import EOT_TOKEN, GPTConfig
from tokenizer import chat_template

HEADER = "A conversation between a user and a helpful assistant."
EOT_TEXT = "<|endoftext|>"
STOPS = ("\nUser:", "\nAssistant:", "\n\n")
MAX_NEW = 24  # tokens per reply in these tests
enc = get_tokenizer()


# the reply's first token is never one the reply's lstrip would leave nothing of,
# nor the end of text
BLANK = [EOT_TOKEN] + [i for i in range(enc.n_vocab)
                       if i != EOT_TOKEN and not enc.decode([i]).lstrip()]


def ref_transcript(history: list[tuple[str, str]], message: str, head: str = HEADER) -> str:
    text = head + "\n\n"
    for user, assistant in history:
        text += "User: " + user + "\nAssistant: " + assistant + "\n"
    return text + "User: " + message + "\nAssistant:"


def ref_reply(model, history: list[tuple[str, str]], message: str, generator=None,
              max_new: int = MAX_NEW, head: str = HEADER, **kwargs) -> str:
    """The reply as displayed: generated until EOT or until the decoded text, leading whitespace
    dropped, holds a stop string; then cut there. kwargs: sampling settings (default greedy)."""
    ids = enc.encode(ref_transcript(history, message, head))
    assert len(ids) <= model.config.block_size // 2, (
        "keep test chats short enough that no turn is trimmed")
    new: list[int] = []
    for token in model.generate_stream(torch.tensor([ids]), max_new, generator=generator,
                                       suppress_first=BLANK, **{"temperature": 0, **kwargs}):
        if token.item() == EOT_TOKEN:
            break
        new.append(token.item())
        if any(s in enc.decode(new).lstrip() for s in STOPS):
            break
    text = enc.decode(new).lstrip()
    return text[:min([i for i in (text.find(s) for s in STOPS) if i >= 0], default=len(text))]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A GPT with random weights: its replies never stop early, which the server tests need."""
    out = tmp_path_factory.mktemp("out-chat")
    make_checkpoint(out / "ckpt.pt", GPTConfig(n_layer=2, n_embd=64, n_head=2, block_size=128))
    return out


def load(out_dir):
    return model_from_checkpoint(load_checkpoint(str(out_dir))).eval()


# ---------------------------------------------------------------- template and trimming


def test_transcript_template():
    history = [("Hi", "Hello! How can I help?")]
    assert chat.transcript(history, "What is a GPT?") == (
        "A conversation between a user and a helpful assistant.\n\n"
        "User: Hi\nAssistant: Hello! How can I help?\n"
        "User: What is a GPT?\nAssistant:")
    assert chat.transcript([], "x") == ref_transcript([], "x")


def test_old_turns_are_trimmed_to_fit():
    history = [(f"question number {i}", f"answer number {i}, with a few more words")
               for i in range(5)]
    sizes = [len(enc.encode(ref_transcript(history[i:], "last one"))) for i in range(6)]
    budget = (sizes[2] + sizes[3]) // 2  # the last two turns fit, three do not
    assert sizes[3] <= budget < sizes[2]
    assert chat.prompt_ids(enc, history, "last one", budget) == enc.encode(
        ref_transcript(history[3:], "last one"))
    assert chat.prompt_ids(enc, history, "last one", 10_000) == enc.encode(
        ref_transcript(history, "last one"))
    # a message longer than the budget on its own: its end, next to the reply, is kept
    long_message = "word " * 200 + "the end"
    ids = chat.prompt_ids(enc, history, long_message, 50)
    assert ids == enc.encode(ref_transcript([], long_message))[-50:]
    assert enc.decode(ids).endswith("the end\nAssistant:")


class CountingEncoder:
    """The tokenizer, counting the characters it is given: the work a prompt costs."""

    def __init__(self):
        self.chars = self.calls = 0

    def encode_ordinary(self, text: str) -> list[int]:
        self.chars, self.calls = self.chars + len(text), self.calls + 1
        return enc.encode_ordinary(text)


def naive_prompt_ids(history, message, budget):
    """The reference: drop the oldest turn until the transcript fits
    (what chat.py did, once per turn)."""
    for start in range(len(history) + 1):
        if len(ids := enc.encode(ref_transcript(history[start:], message))) <= budget:
            return ids
    return enc.encode(ref_transcript([], message))[-budget:]


@pytest.mark.parametrize("turns", [1, 2, 7, 50, 301])
def test_trimming_keeps_what_dropping_one_turn_at_a_time_keeps(turns):
    history = [(f"q{i} " + "x" * (i % 7), f"a{i} " * (i % 5)) for i in range(turns)]
    full = len(enc.encode(ref_transcript(history, "now?")))
    for budget in (10, full // 3, full // 2, full - 1, full):
        assert chat.prompt_ids(enc, history, "now?", budget) == naive_prompt_ids(history, "now?",
                                                                                 budget)


def test_the_largest_request_the_server_accepts_costs_little_work():
    """The worst case MAX_REQUEST_BYTES allows: as many empty turns as fit, each dropped to fit the
    context. Dropping them one at a time encoded ~8,000 transcripts of up to 64 KiB (88 s for 6,500,
    every other request answered 429 meanwhile);
    now the tokenizer sees at most log2(turns) + 2 transcripts."""
    turn = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    pairs = (chat.MAX_REQUEST_BYTES - 100) // len(json.dumps(turn))
    body = json.dumps({"messages": turn * pairs + [{"role": "user", "content": "hi"}]}).encode()
    assert len(body) <= chat.MAX_REQUEST_BYTES
    _, history, message = chat.conversation_of(chat.request_of(body, "chat.completion")["messages"])
    counting = CountingEncoder()
    ids = chat.prompt_ids(counting, history, message, 64)
    transcript_chars = len(chat.transcript(history, message))
    assert (counting.calls <= pairs.bit_length() + 2
            and counting.chars <= (pairs.bit_length() + 2) * transcript_chars)
    assert len(ids) <= 64
    assert enc.decode(ids).endswith("User: x\nAssistant: y\nUser: hi\nAssistant:")
    # most turns were dropped
    assert len(enc.encode(ref_transcript(history[-len(history) // 2:], message))) > 64


def test_message_alone_when_no_turn_fits():
    """When not even the newest turn fits but the message does, the prompt is the header and the
    message alone, whole, not the end of a transcript cut in the middle of that turn."""
    history = [("tell me " * 40, "a long answer " * 40)]
    alone = enc.encode(ref_transcript([], "hi"))
    assert len(enc.encode(ref_transcript(history, "hi"))) > len(alone) + 10
    assert chat.prompt_ids(enc, history, "hi", len(alone) + 10) == alone


def test_typed_special_token_is_ordinary_text():
    """A message (or an old turn) that spells out <|endoftext|> is text to the model, encoded as the
    training data was (prepare.py's encode_ordinary), not the end-of-text token:
    it used to raise tiktoken's ValueError."""
    history = [("what is <|endoftext|>?", "It ends a document: <|endoftext|>")]
    message = "and <|endoftext|> again"
    ids = chat.prompt_ids(enc, history, message, 10_000)
    assert EOT_TOKEN not in ids and enc.decode(ids) == ref_transcript(history, message)


# ---------------------------------------------------------------- stop strings while streaming


def fake_stream(pieces: list[str], pulled: list[str]):
    def stream_text(model, enc, ids, dev, ctx, stop, **kwargs):
        assert stop == {EOT_TOKEN} and kwargs["suppress_first"] == BLANK
        for p in pieces:
            pulled.append(p)
            yield 0, p
        yield None, ""
    return stream_text


@pytest.mark.parametrize("pieces,expected", [
    ([" Hi", " there", "\n", "Us", "er: and more", " text"], ["Hi", " there"]),
    (["a\n", "Uncle", " Bob"], ["a", "\nUncle", " Bob"]),  # held "\n", then released
    (["\n", " ok", "\n\n", "x"], ["ok"]),  # leading whitespace dropped; a blank line ends the reply
    (["x\nAssist", "ant: y"], ["x"]),
    (["fine\nUs"], ["fine", "\nUs"]),  # generation ended while text was held: it is the reply's end
    (["one", " two", " three"], ["one", " two", " three"]),  # streamed piece by piece, not buffered
])
def test_reply_stream_holds_back_possible_stop_strings(monkeypatch, pieces, expected):
    pulled: list[str] = []
    monkeypatch.setattr(chat, "stream_text", fake_stream(pieces, pulled))
    out = []
    for piece in chat.reply_stream(None, enc, [], "cpu", None):
        assert not any(s in "".join(out) + piece for s in STOPS)
        out.append(piece)
    assert out == expected
    def has_stop(ps):
        return any(s in "".join(ps).lstrip() for s in STOPS)

    if has_stop(pieces):  # generation ended with the token that completed the stop string
        assert has_stop(pulled) and not has_stop(pulled[:-1])
    else:
        assert pulled == pieces


# ---------------------------------------------------------------- the terminal


SAMPLING = dict(temperature=0.9, top_k=50, top_p=0.95)
SAMPLING_ARGS = [f"--{k}={v}" for k, v in SAMPLING.items()] + ["--seed=1234",
                                                                f"--max_new_tokens={MAX_NEW}"]


REPL_LINES = ["/temp 0.9", "Hello!", "What is your name?", "/reset", "What is your name?", "/quit",
              "never read"]


def repl(smoke_ckpt, compile: bool) -> subprocess.CompletedProcess:
    """chat.py's terminal, greedy at first, with REPL_LINES piped to its stdin."""
    return run_script("chat.py", f"--out_dir={smoke_ckpt}", *SAMPLING_ARGS, "--temperature=0",
                      f"--compile={compile}", input="\n".join(REPL_LINES) + "\n", timeout=120)


def ref_repl(smoke_ckpt) -> tuple[str, bool]:
    """The REPL_LINES session's expected output, and whether its replies are sampled (three
    distinct replies, the first not the greedy one): /temp switches to sampling, from one generator
    seeded once per session."""
    model, g = load(smoke_ckpt), torch.Generator().manual_seed(1234)
    r1 = ref_reply(model, [], "Hello!", g, **SAMPLING)
    r2 = ref_reply(model, [("Hello!", r1.strip())], "What is your name?", g,
                   **SAMPLING)  # the first turn is in it
    r3 = ref_reply(model, [], "What is your name?", g, **SAMPLING)  # after /reset it is not
    sampled = len({r1, r2, r3}) == 3 and r1 != ref_reply(model, [], "Hello!")
    return ("User: /temp 0.9\n(temperature 0.9)\n"
            f"User: Hello!\nAssistant: {r1}\n"
            f"User: What is your name?\nAssistant: {r2}\n"
            "User: /reset\n(new conversation)\n"
            f"User: What is your name?\nAssistant: {r3}\n"
            "User: /quit\n"), sampled


def test_repl_through_piped_stdin(smoke_ckpt):
    expected, sampled = ref_repl(smoke_ckpt)
    assert sampled and repl(smoke_ckpt, compile=False).stdout == expected


def test_blank_ids_are_the_whitespace_tokens_and_eot():
    assert (chat.blank_ids(enc) == BLANK and {198, 628, 220, EOT_TOKEN} <= set(BLANK)
            and len(BLANK) == 24)


def test_greedy_replies_of_a_model_that_only_writes_newlines_are_not_empty(tmp_path):
    """The README's scripted example printed two empty replies: greedy, the smoke model answers
    "Assistant:" with newlines only. Here a model made to prefer "\n" after every token (blocks
    silenced, every embedding sharing one direction that the newline's holds three times over) must
    still say something: its best non-blank token, then the blank line that ends the reply."""
    config = GPTConfig(n_layer=1, n_embd=32, n_head=2, block_size=64)
    make_checkpoint(tmp_path / "ckpt.pt", config)
    checkpoint = load_checkpoint(str(tmp_path))
    state, g = checkpoint["model"], torch.Generator().manual_seed(0)
    u = torch.randn(32, generator=g)
    state["transformer.wte.weight"] = u + 0.1 * torch.randn(state["transformer.wte.weight"].shape,
                                                            generator=g)
    state["transformer.wte.weight"][198] = 3 * u
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: one matrix
    # attention and MLP outputs: the blocks add 0
    for name in [n for n in state if n.endswith("c_proj.weight")]:
        state[name] = torch.zeros_like(state[name])
    save_checkpoint(checkpoint, str(tmp_path / "ckpt.pt"))
    model = load(tmp_path)
    ids = torch.tensor([enc.encode(ref_transcript([], "Hello!"))])
    # the trap is set
    assert model.generate(ids, 5, temperature=0, stop=())[0, -5:].tolist() == [198] * 5
    # in this process, piped stdin and all
    # (test_repl_through_piped_stdin runs chat.py in a process of its own)
    result = run_in_process("chat.py", f"--out_dir={tmp_path}", "--temperature=0",
                            stdin="Hello!\nWhat is a GPT?\n")
    assert result.returncode == 0, result.stderr
    replies = [line.removeprefix("Assistant: ") for line in result.stdout.splitlines()
               if line.startswith("Assistant")]
    assert len(replies) == 2 and all(r.strip() for r in replies)
    assert replies[0] == ref_reply(model, [], "Hello!")


def test_repl_refuses_temperatures_it_cannot_use(tiny_dir):
    lines = ["/temp inf", "/temp nan", "/temp -1", "/temp 11", "/temp 2", "/quit"]
    result = run_in_process("chat.py", f"--out_dir={tiny_dir}", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    assert (result.stdout.count("(not a temperature") == 4
            and result.stdout.endswith("(temperature 2.0)\nUser: /quit\n"))


class FakeChat:
    """Records what repl() asks for: the history and message of each reply."""
    temperature = 0.7

    def __init__(self):
        self.asked = []

    def reply(self, history, message):
        self.asked.append((list(history), message))
        yield f" reply {len(self.asked)} "


def test_repl_keeps_history_until_reset(monkeypatch, capsys):
    """Each reply sees the turns before it (the reply stripped, as displayed);
    /reset starts over."""
    fake = FakeChat()
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n  Again  \n/reset\nThird\n/temp 0.2\n"))
    chat.repl(fake)
    assert fake.asked == [([], "Hello"), ([("Hello", "reply 1")], "Again"), ([], "Third")]
    assert fake.temperature == 0.2
    assert "(new conversation)" in capsys.readouterr().out


BAD_WEB_SETTINGS = [("--port=-5", "--port=-5"), ("--port=99999", "--port=99999"),
                    ("--top_k=-1", "--top_k"), ("--temperature=11", "--temperature"),
                    ("--PAGE=x", "unknown config key 'PAGE'")]
WEB_ONLY_SETTINGS = ["--port=9000", "--host=0.0.0.0"]


@pytest.fixture(scope="module")
def refusals(tiny_dir) -> dict:
    """chat.py on each bad setting below, one run after another in one new process (torch imported
    once, not once a setting): each must stop before the model loads. A setting let through would
    serve or chat instead, and the process would time out: a failure, not a hang."""
    runs = {f"--web {arg}": ["chat.py", f"--out_dir={tiny_dir}", "--web", arg]
            for arg, _ in BAD_WEB_SETTINGS}
    runs.update({arg: ["chat.py", f"--out_dir={tiny_dir}", arg] for arg in WEB_ONLY_SETTINGS})
    return run_in_one_process(runs, timeout=120)


@pytest.mark.parametrize("arg,words", BAD_WEB_SETTINGS)
def test_chat_py_refuses_bad_settings_in_one_line(refusals, arg, words):
    result = refusals[f"--web {arg}"]
    assert result.returncode == 1 and result.stderr.startswith("error: ") and words in result.stderr
    assert result.stderr.count("\n") == 1 and "serving" not in result.stdout


@pytest.mark.parametrize("arg", WEB_ONLY_SETTINGS)
def test_chat_py_refuses_web_settings_without_web(refusals, arg):
    """--port without --web would be ignored (the terminal REPL serves nothing):
    refused, before the model loads."""
    result = refusals[arg]
    assert (result.returncode == 1 and result.stderr.startswith("error: ")
            and result.stderr.count("\n") == 1)
    assert "add --web" in result.stderr


def test_chat_py_port_in_use_is_one_line_error(tiny_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([forking_python(), "chat.py", f"--out_dir={tiny_dir}", "--web",
                                 f"--port={port}"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "serving" not in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot serve on 127.0.0.1:{port}") and "--port" in last


# ---------------------------------------------------------------- the web server, in this process


@contextmanager
def serving(out_dir):
    """chat.py's server on a free port, in this process, replies of MAX_NEW tokens: (chat, port)."""
    saved = chat.max_new_tokens
    chat.max_new_tokens = MAX_NEW
    c = chat.Chat(str(out_dir))
    httpd = chat.make_server(c, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield c, httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        chat.max_new_tokens = saved


@pytest.fixture(scope="module")
def server(tiny_dir):
    with serving(tiny_dir) as s:
        yield s


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory):
    """A chat-tuned checkpoint (random weights, the template recorded): no stop strings."""
    out = tmp_path_factory.mktemp("out-chat-tuned")
    make_checkpoint(out / "ckpt.pt", GPTConfig(n_layer=2, n_embd=64, n_head=2, block_size=128),
                    chat_template=chat_template.NAME)
    return out


@pytest.fixture(scope="module")
def tuned_server(tuned_dir):
    with serving(tuned_dir) as s:
        yield s


def client(port: int, **kwargs) -> openai.OpenAI:
    """The official client, as a user points it at chat.py; no retries unless asked."""
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="any",
                         **{"max_retries": 0, **kwargs})


def post(port: int, body: bytes | dict, path: str = "/v1/chat/completions"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body if isinstance(body, bytes) else json.dumps(body).encode(),
                 {"Content-Type": "application/json"})
    return conn.getresponse()


def messages(history: list[tuple[str, str]], message: str, system: str | None = None) -> list[dict]:
    turns = [{"role": r, "content": c}
             for u, a in history for r, c in (("user", u), ("assistant", a))]
    head = [{"role": "system", "content": system}] if system is not None else []
    return head + turns + [{"role": "user", "content": message}]


def greedy_continuation(model, ids: list[int], n: int) -> tuple[str, int]:
    """A completion's reference: model.generate's greedy tokens, to EOT, decoded; and how many."""
    out = model.generate(torch.tensor([ids]), n, temperature=0)[0, len(ids):].tolist()
    new = out[:out.index(EOT_TOKEN)] if EOT_TOKEN in out else out
    return enc.decode(new), len(new)


def test_models_lists_the_checkpoint(server, tiny_dir):
    c, port = server
    models = client(port).models.list().data
    assert [m.id for m in models] == [tiny_dir.name] == [c.name]
    assert client(port).models.retrieve(c.name).id == c.name


def test_chat_completion_through_the_openai_client(server):
    c, port = server
    history = [("Hi", "Hello there.")]
    response = client(port).chat.completions.create(
        model="anything", messages=messages(history, "How are you?"), temperature=0,
        max_completion_tokens=12, user="u1", metadata={"a": "b"})  # max_tokens' newer name
    expected = ref_reply(c.model, history, "How are you?", max_new=12)
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected and expected
    prompt = len(enc.encode(ref_transcript(history, "How are you?")))
    assert response.usage.prompt_tokens == prompt and response.usage.total_tokens == prompt + 12
    # random weights never end a reply early unless a stop string cuts it
    assert choice.finish_reason == ("length" if response.usage.completion_tokens == 12 else "stop")
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")


def test_streamed_chat_completion_through_the_openai_client(server):
    c, port = server
    stream = client(port).chat.completions.create(
        model=c.name, messages=messages([], "Tell me a story"), temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [ch.choices[0].delta.content for ch in chunks[1:]
              if ch.choices and ch.choices[0].delta.content]
    assert "".join(pieces) == ref_reply(c.model, [], "Tell me a story")
    assert len(pieces) > 2  # streamed in pieces
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[:-1] == [None] * (len(finishes) - 1) and chunks[-1].choices == []  # usage last
    assert finishes[-1] == ("length" if chunks[-1].usage.completion_tokens == MAX_NEW else "stop")
    body = {"messages": messages([], "Hi"), "stream": True, "max_tokens": 3}
    raw = post(port, body).read().decode()
    assert raw.endswith("\n\ndata: [DONE]\n\n") and raw.startswith("data: {")


def test_system_message_replaces_the_header(server):
    c, port = server
    reply = client(port).chat.completions.create(
        model=c.name, messages=messages([], "Hi", system="Be brief."), temperature=0)
    reply = reply.choices[0].message.content
    assert reply == ref_reply(c.model, [], "Hi", head="Be brief.")


def test_tuned_model_is_served_through_its_chat_template(tuned_server):
    c, port = tuned_server
    history = [("Hi", "Hello!")]
    reply = client(port).chat.completions.create(
        model=c.name, messages=messages(history, "And now?"), temperature=0)
    reply = reply.choices[0].message.content
    text = f"{EOT_TEXT}{HEADER}\n\nUser: Hi\nAssistant: Hello!{EOT_TEXT}User: And now?\nAssistant:"
    ids = enc.encode(text, allowed_special={EOT_TEXT})
    steps = c.model.generate_stream(torch.tensor([ids]), MAX_NEW, temperature=0,
                                    suppress_first=BLANK)
    new = [t.item() for t in steps]
    new = new[:new.index(EOT_TOKEN)] if EOT_TOKEN in new else new
    assert reply == enc.decode(new).lstrip()  # no stop strings: "\n\n" and "User:" may be in it


@pytest.mark.parametrize("stream", [False, True])
def test_completion_through_the_openai_client(server, stream):
    c, port = server
    prompt = "The meaning of life is"
    expected, n = greedy_continuation(c.model, enc.encode(prompt), 10)
    ask = dict(model=c.name, prompt=prompt, max_tokens=10, temperature=0)
    response = client(port).completions.create(**ask, stream=stream)
    if stream:
        chunks = list(response)
        text = "".join(ch.choices[0].text for ch in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        text, finish = response.choices[0].text, response.choices[0].finish_reason
        assert response.usage.prompt_tokens == len(enc.encode(prompt))
        assert response.usage.completion_tokens == n
    assert text == expected and finish == ("length" if n == 10 else "stop")
    # a stop string: the text ends before it, finish_reason "stop"
    cut = expected[len(expected) // 2:][:4]
    stopped = client(port).completions.create(**ask, stop=[cut]).choices[0]
    assert stopped.text == expected[:expected.index(cut)] and stopped.finish_reason == "stop"


def test_a_seed_gives_the_same_sampled_reply(server):
    c, port = server
    ask = dict(model=c.name, prompt="Once upon a time", max_tokens=8, temperature=1.0, top_p=0.9)
    texts = [client(port).completions.create(**ask, seed=seed).choices[0].text
             for seed in (1, 1, 2)]
    assert texts[0] == texts[1] != texts[2]


@pytest.mark.parametrize("out_dir", ["tiny_dir", "tuned_dir"])
def test_greedy_replies_equal_the_terminals(out_dir, request):
    """The same conversation, greedy, through chat.py's terminal (a process of its own) and through
    the endpoint: the same replies (the terminal's history keeps each reply stripped)."""
    path = request.getfixturevalue(out_dir)
    result = run_in_process("chat.py", f"--out_dir={path}", "--temperature=0",
                            f"--max_new_tokens={MAX_NEW}", stdin="Hello!\nWhat is a GPT?\n")
    assert result.returncode == 0, result.stderr
    terminal = [line.removeprefix("Assistant: ") for line in result.stdout.splitlines()
                if line.startswith("Assistant:")]
    with serving(path) as (c, port):
        replies, history = [], []
        for message in ("Hello!", "What is a GPT?"):
            response = client(port).chat.completions.create(
                model=c.name, messages=messages(history, message), temperature=0)
            replies.append(response.choices[0].message.content)
            history.append((message, replies[-1].strip()))
    assert len(terminal) == 2 and terminal == replies


REFUSED = [(dict(n=2), "n"),
           (dict(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
           (dict(logprobs=True), "logprobs"),
           (dict(response_format={"type": "json_object"}), "response_format"),
           (dict(presence_penalty=0.5), "presence_penalty"),
           (dict(logit_bias={"50256": -100}), "logit_bias"),
           (dict(extra_body={"mirostat": 2}), "mirostat"),
           (dict(max_tokens=100_000), "max_tokens"), (dict(temperature=-1), "temperature"),
           (dict(top_p=0), "top_p"), (dict(stop=["a"] * 5), "stop")]


@pytest.mark.parametrize("args,param", REFUSED, ids=[p for _, p in REFUSED])
def test_what_cannot_be_honoured_is_refused_by_name(server, capsys, args, param):
    c, port = server
    with pytest.raises(openai.BadRequestError) as e:
        client(port).chat.completions.create(model=c.name, messages=messages([], "Hi"), **args)
    assert e.value.status_code == 400 and e.value.param == param and param in e.value.message
    log = [line for line in capsys.readouterr().err.splitlines()
           if "POST /v1/chat/completions" in line]
    assert len(log) == 1 and " 400 " in log[0] and e.value.body["message"] in log[0]


def test_informational_and_default_fields_are_accepted(server):
    c, port = server
    response = client(port).chat.completions.create(
        model=c.name, messages=messages([], "Hi"), max_tokens=2, n=1, presence_penalty=0,
        frequency_penalty=0.0, logprobs=False, user="me", metadata={"k": "v"}, store=False,
        response_format={"type": "text"}, seed=3)
    assert response.choices[0].message.content


@pytest.mark.parametrize("bad,words", [
    ([{"role": "tool", "content": "x"}], "role 'tool'"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
    (messages([("a", "b")], "c")[:2], "end with the user"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "image_url"),
    ("Hi", "'messages' must be a list")])
def test_bad_messages_are_400(server, bad, words):
    c, port = server
    with pytest.raises(openai.BadRequestError, match=words):
        client(port).chat.completions.create(model=c.name, messages=bad)


def test_content_parts_are_read_as_text(server):
    c, port = server
    parts = [{"type": "text", "text": "How are "}, {"type": "text", "text": "you?"}]
    reply = client(port).chat.completions.create(
        model=c.name, messages=[{"role": "user", "content": parts}], temperature=0)
    reply = reply.choices[0].message.content
    assert reply == ref_reply(c.model, [], "How are you?")


def test_errors_in_openais_shape(server):
    c, port = server
    with pytest.raises(openai.NotFoundError):
        client(port).embeddings.create(model=c.name, input="x")  # a route chat.py does not serve
    with pytest.raises(openai.APIStatusError) as e:
        client(port).chat.completions.create(model=c.name,
                                             messages=messages([], "x" * chat.MAX_REQUEST_BYTES))
    assert e.value.status_code == 413 and "larger than" in e.value.message
    for path, body, status in [("/v1/nothing", {}, 404), ("/chat", {"message": "hi"}, 404),
                               ("/v1/completions", b"not json", 400),
                               ("/v1/completions", {"prompt": 1}, 400)]:
        response = post(port, body, path)
        error = json.loads(response.read())["error"]
        assert response.status == status and set(error) == {"message", "type", "param", "code"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    page = conn.getresponse()
    assert page.status == 200 and 'id="message"' in page.read().decode()


def test_conversation_of():
    assert chat.conversation_of(messages([("a", "b")], "c", system="s")) == ("s", [("a", "b")], "c")
    developer = [{"role": "developer", "content": "s"}, {"role": "user", "content": "c"}]
    assert chat.conversation_of(developer) == ("s", [], "c")
    for bad in [[], [{"role": "user"}], [{"role": "user", "content": " "}],
                [{"role": "system", "content": "s"}],
                [{"role": "assistant", "content": "x", "tool_calls": [{}]}]]:
        with pytest.raises(chat.ApiError):
            chat.conversation_of(bad)


def test_prompt_leaves_room_for_the_reply(server, monkeypatch):
    """The prompt plus max_new_tokens fit the context, so the reply is generated with the whole
    prompt in view: old turns are left out for the room, the newest kept."""
    c, _ = server
    seen = []

    def capture(model, enc, ids, *args, **kwargs):
        seen.append(ids)
        yield "ok"

    monkeypatch.setattr(chat, "reply_stream", capture)
    history = [(f"question {i} about something", f"answer {i}, with a few more words")
               for i in range(12)]
    message = "last one"
    assert "".join(c.reply(history, message)) == "ok"
    block_size = c.model.config.block_size
    assert len(enc.encode(ref_transcript(history, message))) > block_size  # trimming is needed
    fits = [k for k in range(len(history) + 1)
            if len(enc.encode(ref_transcript(history[k:], message))) + MAX_NEW <= block_size]
    assert seen == [enc.encode(ref_transcript(history[fits[0]:], message))]


def test_requests_wait_in_a_bounded_queue_then_429_with_retry_after(server, monkeypatch):
    """While a reply is generated (the test holds the model's lock), 1 + queue_size requests are
    admitted to wait; one more gets 429 with Retry-After. Then they are served one at a time."""
    c, port = server
    monkeypatch.setattr(chat, "queue_size", 1)
    running, most = [0], [0]

    def counted(*args, original=chat.reply_stream, **kwargs):
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            yield from original(*args, **kwargs)
        finally:
            running[0] -= 1

    monkeypatch.setattr(chat, "reply_stream", counted)
    ask = dict(model=c.name, messages=messages([], "Hi"), temperature=0)
    replies = []
    with c.lock:
        def ask_once():
            replies.append(client(port).chat.completions.create(**ask))

        waiting = [threading.Thread(target=ask_once) for _ in range(2)]
        for t in waiting:
            t.start()
        deadline = time.time() + 30
        while c.admitted < 2 and time.time() < deadline:
            time.sleep(0.01)
        assert c.admitted == 2
        with pytest.raises(openai.RateLimitError) as e:
            client(port).chat.completions.create(**ask)
        assert int(e.value.response.headers["Retry-After"]) >= 1 and "busy" in e.value.message
    for t in waiting:
        t.join(60)
    assert len(replies) == 2
    assert {r.choices[0].message.content for r in replies} == {ref_reply(c.model, [], "Hi")}
    assert most[0] == 1 and c.admitted == 0  # never two generations at once


def test_a_reply_is_bounded_by_the_time_limit(server, monkeypatch):
    c, port = server
    monkeypatch.setattr(chat, "time_limit", 0.5)
    monkeypatch.setattr(chat, "STOP_STRINGS", ("\x00never",))

    def slow(h, original=c.model.logits):
        time.sleep(0.05)
        return original(h)

    monkeypatch.setattr(c.model, "logits", slow)
    t0 = time.time()
    response = client(port).completions.create(model=c.name, prompt="Go", max_tokens=1000,
                                               temperature=0)
    assert time.time() - t0 < 5 and response.choices[0].finish_reason == "length"
    assert 0 < response.usage.completion_tokens < 100


def test_web_reports_a_failed_reply_in_the_stream(server, monkeypatch, capsys):
    """A reply that fails after the 200 headers went out ends its stream with an error event (one
    line), as OpenAI's servers do; the client raises it, the traceback goes to the server's stderr,
    and the next request is served."""
    c, port = server

    def failing(*args, **kwargs):
        yield "Hel"
        raise RuntimeError("CUDA out of memory\nmore lines of detail")

    monkeypatch.setattr(c, "generate", failing)
    ask = dict(model=c.name, messages=messages([], "hi"))
    stream = client(port).chat.completions.create(**ask, stream=True)
    with pytest.raises(openai.APIError, match=r"reply failed \(RuntimeError: CUDA out of memory\)"):
        list(stream)
    assert "Traceback" in capsys.readouterr().err and not c.lock.locked()
    monkeypatch.undo()
    assert client(port).chat.completions.create(**ask).choices[0].message.content


def raw_post(port: int, headers: bytes, body: bytes = b"") -> socket.socket:
    """A POST written by hand, for requests http.client will not send; the socket, still open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\n" + headers + b"\r\n" + body)
    return sock


def status_of(sock: socket.socket) -> tuple[int, str]:
    """The status and the JSON error's message of the server's answer on sock."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())["error"]["message"]


BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.mark.parametrize("value", [b"-5", b"abc", b"1e3", b"+10", b"", b"\xb2"])
def test_web_refuses_a_content_length_that_is_not_a_size_with_400(server, value):
    """A negative or non-numeric Content-Length is a malformed request (400),
    not one too large (413)."""
    _, port = server
    status, error = status_of(raw_post(port, b"Content-Length: " + value + b"\r\n", BODY))
    assert status == 400 and "Content-Length" in error


def test_web_content_length_of_thousands_of_digits_is_413(server):
    _, port = server  # int() refuses strings of over 4300 digits: too large, not a crash
    status, error = status_of(raw_post(port, b"Content-Length: " + b"9" * 5000 + b"\r\n", BODY))
    assert status == 413 and "larger than" in error


def test_web_body_shorter_than_its_content_length(server, monkeypatch):
    """A body that stops short is answered once REQUEST_TIMEOUT_S has passed (408), or at once when
    the client closes its side (400): neither holds the connection's thread without end."""
    _, port = server
    monkeypatch.setattr(chat, "REQUEST_TIMEOUT_S", 1.0)
    t0 = time.time()
    status, error = status_of(raw_post(port, b"Content-Length: 100\r\n", b'{"messages":'))
    assert status == 408 and "did not arrive" in error and time.time() - t0 < 10
    sock = raw_post(port, b"Content-Length: 100\r\n", b'{"messages":')
    sock.shutdown(socket.SHUT_WR)
    status, error = status_of(sock)
    assert status == 400 and "ended before" in error


def test_web_body_trickled_in_is_bounded_in_all(server, monkeypatch):
    """A per-read timeout alone lets a client send a byte just inside each interval for ever:
    the whole body has REQUEST_TIMEOUT_S."""
    _, port = server
    monkeypatch.setattr(chat, "REQUEST_TIMEOUT_S", 1.0)
    sock = raw_post(port, b"Content-Length: %d\r\n" % len(BODY))
    t0 = time.time()
    for b in BODY:  # each wait far inside the timeout; the body's whole time past it
        if select.select([sock], [], [], 0.2)[0]:
            # the server has answered: stop sending, so its close is clean and the answer readable
            break
        sock.sendall(bytes([b]))
    status, error = status_of(sock)
    assert status == 408 and time.time() - t0 < 5


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_stops_its_generation_and_the_next_starts(server, monkeypatch, stream):
    """A reply that would run far longer than this test waits (no stop string, no EOT) is stopped
    as soon as its client closes the connection, streamed or not, and a queued request starts."""
    c, port = server
    monkeypatch.setattr(chat, "max_tokens_limit", 1_000_000)
    monkeypatch.setattr(chat, "STOP_STRINGS", ("\x00never",))
    steps, starts = [], []

    def logits(h, original=c.model.logits):
        steps.append(time.time())
        out = original(h)
        out[..., EOT_TOKEN] = float("-inf")
        return out

    def generate(*args, original=c.generate, **kwargs):
        starts.append(time.time())
        yield from original(*args, **kwargs)

    monkeypatch.setattr(c.model, "logits", logits)
    monkeypatch.setattr(c, "generate", generate)
    body = json.dumps({"messages": messages([], "Tell me a long story"), "max_tokens": 1_000_000,
                       "stream": stream}).encode()
    sock = raw_post(port, b"Content-Length: %d\r\n" % len(body), body)
    while len(steps) < 5:  # the reply is being generated
        time.sleep(0.01)
    queued = threading.Thread(target=lambda: client(port).completions.create(
        model=c.name, prompt="Hi", max_tokens=2))
    queued.start()
    while c.admitted < 2:
        time.sleep(0.01)
    left = time.time()
    sock.close()
    queued.join(30)
    assert len(starts) == 2, "the queued request never started: generation went on"
    print(f"the queued request started {starts[1] - left:.3f} s after the client left")
    assert starts[1] - left < 2
    n = len(steps)
    time.sleep(0.3)
    assert len(steps) == n < 1_000_000 and not c.lock.locked()  # nothing goes on in the background


# ---------------------------------------------------------------- the page, in a real browser


def non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        return None if address.startswith("127.") else address
    except OSError:
        return None


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.browser
def test_browser_chat(smoke_ckpt, tmp_path):
    from playwright.sync_api import sync_playwright  # requirements-dev.txt
    assert os.path.exists("/usr/bin/chromium"), (
        "the browser test needs Debian's chromium (.ci/run installs it)")
    proc = subprocess.Popen([forking_python(), "chat.py", "--web", "--port=0",
                             f"--out_dir={smoke_ckpt}", *SAMPLING_ARGS],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "serving on http://127.0.0.1:PORT/ ..."
        assert line.startswith("serving on http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[2]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        if address := non_loopback_address():  # bound to loopback only: unreachable from outside
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=5).close()

        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path="/usr/bin/chromium", headless=True,
                args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            first, second = "Hello! Who are you?", "What do you like?"
            page.fill("#message", first)
            page.press("#message", "Enter")
            page.wait_for_selector(".assistant[data-done='1']", timeout=60_000)
            page.fill("#message", second)
            page.click("#send")
            page.wait_for_selector(".assistant:nth-child(4)[data-done='1']", timeout=60_000)
            page.screenshot(path=str(tmp_path / "chat.png"))  # kept out of the repository

            messages = page.eval_on_selector_all(
                ".msg", "els => els.map(e => [e.classList[1], e.querySelector('span').textContent,"
                        " +(e.dataset.chunks || 0)])")
            model, g = load(smoke_ckpt), torch.Generator().manual_seed(1234)
            # the page sends the temperature field's value
            r1 = ref_reply(model, [], first, g, **SAMPLING)
            r2 = ref_reply(model, [(first, r1.strip())], second, g, **SAMPLING)
            assert [m[:2] for m in messages] == [["user", first], ["assistant", r1],
                                                 ["user", second], ["assistant", r2]]
            # the page got each piece as the server streamed it:
            # as many events as chat.py's stream yields
            g = torch.Generator().manual_seed(1234)
            pieces = [len(list(chat.reply_stream(model, enc, enc.encode(ref_transcript(h, m)),
                                                 "cpu", nullcontext(), max_new_tokens=MAX_NEW,
                                                 generator=g, **SAMPLING)))
                      for h, m in (([], first), ([(first, r1.strip())], second))]
            assert [messages[1][2], messages[3][2]] == pieces and max(pieces) > 1
            page.click("#reset")
            assert page.eval_on_selector_all(".msg", "els => els.length") == 0

            # a reply that fails midway: the page shows the server's error event on the reply,
            # in the error style
            page.route("**/v1/chat/completions", lambda route: route.fulfill(
                status=200, content_type="text/event-stream",
                body='data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
                     'data: {"error": {"message": "the reply failed (boom)"}}\n\n'))
            page.fill("#message", first)
            page.press("#message", "Enter")
            page.wait_for_selector(".assistant.error", timeout=30_000)
            assert page.text_content(".assistant span") == "Hel [the reply failed (boom)]"
            # not taken into the history
            assert page.get_attribute(".assistant", "data-done") is None
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------- the compiled terminal
# last in this file: its run is made on the background thread while the tests above run

@in_background
def compiled_repl(tmp_path_factory, need) -> subprocess.CompletedProcess:
    """The REPL with --compile=True, run on the background thread: a cold compilation takes the
    suite's tests half a minute."""
    return repl(need("smoke_ckpt"), compile=True)


@pytest.mark.slow
def test_compiled_repl_replies_as_the_eager_one(smoke_ckpt, compiled_repl):
    # the warm-up compilation at startup must not draw from the session's generator
    expected, sampled = ref_repl(smoke_ckpt)
    assert sampled and compiled_repl.stdout == expected
