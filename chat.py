"""
A demo chat with a trained model, for one user, in the terminal or in the browser:

    python chat.py --out_dir=out-smoke                 # terminal; /reset, /temp 0.5, /quit
    python chat.py --out_dir=out-smoke --web           # http://127.0.0.1:8000
    printf 'Hello\\n' | python chat.py --out_dir=out-smoke --temperature=0   # scripted

A base model has never seen a chat, but it has seen transcripts. The conversation is written as one:

    A conversation between a user and a helpful assistant.
    <blank line>
    User: Hello
    Assistant: Hi! How can I help?
    User: What is a GPT?
    Assistant:

and the model continues it. The reply ends at <|endoftext|>, after max_new_tokens, or at the first
stop string (STOP_STRINGS: the start of a next "User:" or "Assistant:" line, or a blank line), so
the model does not write the user's next turn; its first token is never blank (blank_ids) and its
leading whitespace is dropped. When the transcript no longer fits the context, the oldest turns are
left out (the first line stays; a single message too long on its own keeps only its end).

A chat-tuned checkpoint (train.py on prepare_chat.py's conversations, e.g. config/sft_smoke.py) was
trained on tokenizer/chat_template.py's form of the same transcript, where <|endoftext|> starts the
conversation and ends each reply: it gets that template, and its reply ends at <|endoftext|> (or
max_new_tokens) alone. --mode forces one or the other; the terminal and the page say which kind of
model is loaded.

--web serves OpenAI's protocol from the standard library's http.server (GET /v1/models, POST
/v1/chat/completions, POST /v1/completions; docs/chat.md), and a page that chats through it. One
reply is generated at a time: a request made meanwhile waits in a short queue, or gets 429 when it
is full.
"""

import contextlib
import json
import math
import os
import select
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from common import autocast, check_sampling, die, load_model, setup
from configurator import configure
from model import EOT_TOKEN
from sample import stream_text
from tokenizer import chat_template

# -----------------------------------------------------------------------------
out_dir = "out"  # folder holding ckpt.pt
ckpt = ""  # or the path of a checkpoint file; wins over out_dir
header = chat_template.HEADER  # the transcript's first line (for a chat-tuned model: the system
                               # message)
mode = "auto"  # 'auto': the chat template for a chat-tuned checkpoint, the transcript for a base
               # one | 'base' | 'chat'
max_new_tokens = 128  # per reply
temperature = 0.7  # 0 = greedy; /temp changes it in the terminal, a field on the web page
top_k = 50  # 0 = off
top_p = 0.95  # 1.0 = off
seed = 1337
device = "auto"  # auto: cuda if available, else cpu
dtype = "auto"  # auto: bf16 on GPUs that have it, fp16 on older ones, fp32 on the CPU
compile = False  # torch.compile the one-token decoding step at startup (~20 s on a CPU), then
                 # faster replies
web = False  # serve the browser page instead of the terminal REPL (`--web` alone works too)
host = "127.0.0.1"  # loopback: only this machine can reach the page
port = 8000  # 0 = any free port (the one chosen is printed)
queue_size = 2  # web requests that may wait while one reply is generated; one more is answered 429
max_tokens_limit = 1024  # the most tokens a web request may ask for (its max_tokens)
time_limit = 60.0  # seconds a web reply may spend generating; then it ends, finish_reason "length"
model_name = ""  # the model's id in GET /v1/models; "" = the checkpoint's folder name
# -----------------------------------------------------------------------------

STOP_STRINGS = ("\nUser:", "\nAssistant:", "\n\n")
MAX_REQUEST_BYTES = 64 * 1024  # a web request (message + history) larger than this is refused
# a client has this long to send a request's body (in all, however it trickles in), and each wait on
# a slow or stalled connection (its headers, a reply it stops reading) ends after this long: its
# thread, and the model a stalled reply holds, are not held without end
REQUEST_TIMEOUT_S = 30.0


def transcript(history: list[tuple[str, str]], message: str, head: str | None = None) -> str:
    """The conversation in the documented template, ending where the assistant's reply starts;
    head: its first line (default: --header)."""
    turns = "".join(f"User: {u}\nAssistant: {a}\n" for u, a in history)
    return f"{header if head is None else head}\n\n{turns}User: {message}\nAssistant:"


def messages_of(history: list[tuple[str, str]], message: str,
                head: str | None = None) -> list[dict]:
    """The conversation in the messages format, the header as its system message
    (tokenizer/chat_template.py)."""
    turns = [{"role": r, "content": c}
             for u, a in history for r, c in (("user", u), ("assistant", a))]
    system = header if head is None else head
    return [{"role": "system", "content": system}, *turns, {"role": "user", "content": message}]


def prompt_ids(enc, history: list[tuple[str, str]], message: str, budget: int, tuned: bool = False,
               head: str | None = None) -> list[int]:
    """Token ids of the transcript (tuned: of the chat template), leaving out the oldest turns until
    it fits in budget tokens. A single message too long for the budget keeps only its end (the part
    nearest the reply).

    Each turn dropped shortens the transcript, so a binary search finds the first turn to keep in
    log2(turns) encodings: the work is linear in the request's size (times ~13 for 64 KiB), where
    dropping one turn at a time re-encoded it once per turn (6,500 short turns: 88 s, the server
    held).
    """
    def encode(start: int) -> list[int]:
        # encode_ordinary: a user who types "<|endoftext|>" means the text, not the token
        # (tiktoken's encode would refuse it), as prepare.py treats the training text;
        # tokenizer/chat_template.py encodes so too
        return (chat_template.prompt(enc, messages_of(history[start:], message, head)) if tuned else
                enc.encode_ordinary(transcript(history[start:], message, head)))

    # the answer lies in [lo, hi]; the transcript from hi on fits, or nothing does
    lo, hi = 0, len(history)
    best = encode(hi)
    if len(best) > budget:
        return best[-budget:]
    while lo < hi:
        mid = (lo + hi) // 2
        ids = encode(mid)
        if len(ids) <= budget:
            hi, best = mid, ids
        else:
            lo = mid + 1
    return best


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of text that could still grow into a stop string."""
    for n in range(min(len(text), max(map(len, stops), default=1) - 1), 0, -1):
        if any(s.startswith(text[-n:]) for s in stops):
            return n
    return 0


def blank_ids(enc) -> list[int]:
    """The tokens a reply may not open with: <|endoftext|> and those that are whitespace alone (23
    in GPT-2's vocabulary: newlines, spaces, no-break spaces...), which the reply's lstrip would
    drop. A base model often continues "Assistant:" with a newline; greedy, a small one then writes
    nothing but newlines, and every reply came out empty."""
    if enc.name not in BLANK_IDS:
        BLANK_IDS[enc.name] = [EOT_TOKEN] + [i for i in range(enc.n_vocab)
                                             if i != EOT_TOKEN and enc.decode([i]).isspace()]
    return BLANK_IDS[enc.name]


BLANK_IDS: dict[str, list[int]] = {}  # per tokenizer: computed once (30 ms)


def reply_stream(model, enc, ids: list[int], dev: str, ctx, stops: tuple[str, ...] = STOP_STRINGS,
                 opening: bool = True, stats: dict | None = None, deadline: float | None = None,
                 **kwargs):
    """Yield the reply's text as it is generated, cut before the first stop string. Text that might
    be the start of a stop string is held until it is clearly not; kwargs go to generate_stream.
    opening: a turn of a conversation, whose first token is never blank (blank_ids) and whose
    leading whitespace is dropped; a plain completion keeps what the model writes. stats, if given,
    gets the number of tokens generated ('tokens') and why the text ended ('finish_reason': 'stop'
    at EOT or a stop string, 'length' at max_new_tokens or at deadline, a time.monotonic() time)."""
    stats = {} if stats is None else stats
    stats.update(tokens=0, finish_reason="stop")
    pending, started = "", not opening
    suppress = blank_ids(enc) if opening else ()
    steps = stream_text(model, enc, ids, dev, ctx, {EOT_TOKEN}, suppress_first=suppress, **kwargs)
    with contextlib.closing(steps):
        for token, text in steps:
            stats["tokens"] += token is not None
            pending += text
            if not started:
                pending = pending.lstrip()  # the space after "Assistant:", or a stray newline
                started = bool(pending)
            cuts = [i for i in (pending.find(s) for s in stops) if i >= 0]
            if cuts:
                if piece := pending[:min(cuts)]:
                    yield piece
                return
            keep = held_back(pending, stops)
            if piece := pending[:len(pending) - keep]:
                yield piece
            pending = pending[len(pending) - keep:]
            if deadline is not None and time.monotonic() > deadline:
                stats["finish_reason"] = "length"
                break
    if stats["tokens"] >= kwargs.get("max_new_tokens", math.inf):
        stats["finish_reason"] = "length"
    if pending:
        yield pending  # generation ended (max_new_tokens, EOT) while text was held back


class Chat:
    """The model of a chat and its settings (the globals above); lock: held while a reply
    is made."""

    def __init__(self, path: str):
        self.dev, self.device_type, self.dtype, _, threads = setup(device, dtype, threads="idle")
        self.model, self.enc, checkpoint = load_model(path, self.dev)
        template = checkpoint.get("chat_template")
        if template not in (None, chat_template.NAME):
            die(f"{path} was tuned with chat template '{template}', which this chat.py does not "
                f"know (it knows '{chat_template.NAME}'): use the chat.py of the version that "
                "trained it")
        if mode not in ("auto", "base", "chat"):
            die(f"--mode={mode}: use auto (what the checkpoint is), base or chat")
        if mode == "chat" and template is None:
            die(f"--mode=chat needs a chat-tuned checkpoint, and {path} is a base model: "
                f"fine-tune it first (python train.py config/sft_smoke.py --init_from={path}), "
                "or use --mode=auto")
        self.tuned = mode == "chat" or mode == "auto" and template is not None
        self.kind = "chat-tuned model" if self.tuned else "base model"
        self.generator = torch.Generator(device=self.dev).manual_seed(seed)
        self.temperature = temperature
        block_size = self.model.config.block_size
        # room kept free for the reply; a longer reply still works (generate slides its window)
        self.budget = block_size - min(max_new_tokens, block_size // 2)
        self.lock = threading.Lock()  # one generation at a time
        self.admitted, self.admitting = 0, threading.Lock()  # web requests generating or queued
        self.last_seconds = 1.0  # how long the last web reply held the model: the 429's Retry-After
        folder = os.path.dirname(path) if os.path.isfile(path) else path
        self.name = model_name or os.path.basename(os.path.normpath(os.path.abspath(folder)))
        self.created = int(time.time())
        if compile:
            print("compiling the decoding step...", file=sys.stderr)
            self.model.compile_generation()
            # two tokens: the prompt pass, then one compiled step
            with autocast(self.device_type, self.dtype):
                self.model.generate(torch.tensor([[EOT_TOKEN]], device=self.dev), 2, temperature=0)
        how = f"template {template}" if self.tuned else "continues a transcript"
        print(f"loaded {path}: a {self.kind} ({how}), {self.model.num_params() / 1e6:.1f}M "
              f"parameters, iter {checkpoint.get('iter_num')}; {self.dev}{threads}, {self.dtype}",
              file=sys.stderr)

    @property
    def stops(self) -> tuple[str, ...]:
        # a chat-tuned model ends its turn with <|endoftext|> itself; a base one is stopped at the
        # next turn's start
        return () if self.tuned else STOP_STRINGS

    def settings(self, seed: int | None = None, **given) -> dict:
        """generate_stream's sampling settings: chat.py's own, where given ones are None."""
        s = dict(max_new_tokens=max_new_tokens, temperature=self.temperature, top_k=top_k,
                 top_p=top_p)
        s.update({k: v for k, v in given.items() if v is not None})
        s["top_k"] = s["top_k"] or None
        s["generator"] = (self.generator if seed is None else
                          torch.Generator(device=self.dev).manual_seed(seed))
        return s

    def generate(self, ids: list[int], stops: tuple[str, ...], opening: bool = True,
                 stats: dict | None = None, deadline: float | None = None, **settings):
        """Yield the text generated after ids (reply_stream); settings from self.settings()."""
        ctx = autocast(self.device_type, self.dtype)
        yield from reply_stream(self.model, self.enc, ids, self.dev, ctx, stops, opening, stats,
                                deadline, **settings)

    def reply(self, history: list[tuple[str, str]], message: str, temperature: float | None = None):
        """Yield the reply to message, after history, as text pieces."""
        ids = prompt_ids(self.enc, history, message, self.budget, self.tuned)
        yield from self.generate(ids, self.stops, **self.settings(temperature=temperature))

    @contextlib.contextmanager
    def turn(self, gone):
        """Hold the model for one web reply: wait for it in a queue of queue_size (ApiError 429
        when that is full). Yields False when gone() (the client left) while waiting."""
        with self.admitting:
            if self.admitted > queue_size:
                wait = math.ceil(self.last_seconds * self.admitted)
                raise ApiError(429, f"busy: one reply is being generated and {queue_size} more "
                                    f"are waiting; try again in {wait} s",
                               code="rate_limit_exceeded", headers={"Retry-After": str(wait)})
            self.admitted += 1
        got, start = False, time.monotonic()
        try:
            while not (got := self.lock.acquire(timeout=0.05)) and not gone():
                pass
            start = time.monotonic()
            yield got
        finally:
            if got:
                self.last_seconds = time.monotonic() - start
                self.lock.release()
            with self.admitting:
                self.admitted -= 1


# ---------------------------------------------------------------- terminal

HELP = "commands: /reset (new conversation), /temp [T] (show or set the temperature), /quit"


def repl(chat: Chat):
    """Read messages line by line; with stdin piped, each is echoed so stdout reads as the
    transcript."""
    interactive = sys.stdin.isatty()
    history: list[tuple[str, str]] = []
    if interactive:
        print(f"chatting with a {chat.kind}; {HELP}; Ctrl-D quits", file=sys.stderr)
    while True:
        try:
            line = input("User: ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not interactive and not line:
            break  # end of the piped input
        message = line.strip()
        if not message:
            continue
        if not interactive:
            print(f"User: {message}")
        if message.startswith("/"):
            command, _, arg = message.partition(" ")
            if command in ("/quit", "/exit"):
                break
            elif command == "/reset":
                history.clear()
                print("(new conversation)")
            elif command == "/temp":
                try:
                    if arg:
                        if not 0 <= float(arg) <= 10:  # also refuses nan and inf
                            raise ValueError
                        chat.temperature = float(arg)
                    print(f"(temperature {chat.temperature})")
                except ValueError:
                    print(f"(not a temperature: {arg!r}; give 0 for greedy or a number up to 10)")
            else:
                print(f"(unknown command {command}; {HELP})")
            continue
        print("Assistant: ", end="", flush=True)
        reply = ""
        try:
            for piece in chat.reply(history, message):
                print(piece, end="", flush=True)
                reply += piece
        except KeyboardInterrupt:
            print(" [interrupted]", end="")  # Ctrl-C stops the reply, not the chat
        print()
        history.append((message, reply.strip()))


# ---------------------------------------------------------------- browser

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chat</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 0 auto; padding: 1rem; }
  #transcript { min-height: 50vh; }
  .msg { white-space: pre-wrap; margin: .5rem 0; padding: .5rem .75rem; border-radius: .5rem; }
  .user { background: #e8f0fe; } .assistant { background: #f1f3f4; } .error { color: #b00020; }
  .msg b { display: block; font-size: .8rem; color: #555; }
  form { display: flex; gap: .5rem; align-items: flex-end; }
  textarea { flex: 1; font: inherit; padding: .5rem; }
  input[type=number] { width: 4.5rem; }
</style></head>
<body>
<h1>Chat with a __KIND__</h1>
<p id="about">__ABOUT__ Replies stream as they are made.</p>
<div id="transcript"></div>
<form id="form">
  <textarea id="message" rows="2"
            placeholder="Say something (Enter sends, Shift+Enter for a new line)"></textarea>
  <label>temperature <input id="temperature" type="number" min="0" step="0.1"
                            value="__TEMPERATURE__"></label>
  <button id="send" type="submit">Send</button>
  <button id="reset" type="button">New chat</button>
</form>
<script>
const history = [];  // the conversation's messages; the server keeps no state
const $ = (id) => document.getElementById(id);
let busy = false;

function add(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  div.innerHTML = '<b></b><span></span>';
  div.querySelector('b').textContent = role === 'user' ? 'You' : 'Model';
  div.querySelector('span').textContent = text;
  $('transcript').appendChild(div);
  return div;
}

async function send(message) {
  const user = add('user', message), bot = add('assistant', ''), out = bot.querySelector('span');
  busy = true; $('send').disabled = true; bot.dataset.chunks = 0;
  try {
    // the last 20 turns at most: the server keeps only what fits the context anyway
    const messages = [...history.slice(-40), {role: 'user', content: message}];
    const response = await fetch('/v1/chat/completions', {method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({messages, stream: true,
                            temperature: parseFloat($('temperature').value)})});
    if (!response.ok) {
      const err = await response.json().catch(() => ({error: {message: response.statusText}}));
      bot.classList.add('error'); out.textContent = err.error.message; user.remove();
      $('message').value = message;  // nothing was sent: give the message back
      return;
    }
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf('\\n\\n')) >= 0) {  // one server-sent event per blank line
        const data = buffer.slice(0, end).replace(/^data: /, ''); buffer = buffer.slice(end + 2);
        if (data === '[DONE]') {
          const reply = out.textContent.trim();
          history.push({role: 'user', content: message}, {role: 'assistant', content: reply});
          bot.dataset.done = '1';
          continue;
        }
        const chunk = JSON.parse(data);
        if (chunk.error) {
          bot.classList.add('error'); out.textContent += ' [' + chunk.error.message + ']';
          continue;
        }
        const text = chunk.choices[0].delta.content;
        if (text) {
          out.textContent += text; bot.dataset.chunks = +bot.dataset.chunks + 1;
          bot.scrollIntoView(false);
        }
      }
    }
  } catch (e) {
    bot.classList.add('error'); out.textContent += ' [connection lost]';
  } finally {
    busy = false; $('send').disabled = false; $('message').focus();
  }
}

$('form').addEventListener('submit', (e) => {
  e.preventDefault();
  const message = $('message').value.trim();
  if (!message || busy) return;
  $('message').value = '';
  send(message);
});
$('message').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('form').requestSubmit(); }
});
$('reset').addEventListener('click', () => {
  history.length = 0; $('transcript').replaceChildren();
});
</script>
</body></html>
"""


# ---------------------------------------------------------------- OpenAI's protocol

class ApiError(Exception):
    """A request refused, with its HTTP status and the fields of OpenAI's error object."""
    TYPES = {400: "invalid_request_error", 404: "not_found_error", 408: "timeout_error",
             411: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
             500: "server_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.code, self.headers = status, param, code, headers or {}

    def body(self) -> dict:
        kind = self.TYPES.get(self.status, "invalid_request_error")
        return {"error": {"message": str(self), "type": kind, "param": self.param,
                          "code": self.code}}


# The request fields each endpoint honours; those front ends send that change nothing here
# (accepted); and those that would change the reply in a way chat.py cannot, with the values that
# change nothing: any other value is refused by name, never ignored. Other fields are refused, as
# OpenAI's API refuses them.
SAMPLING_FIELDS = ("model", "stream", "stream_options", "temperature", "top_p", "top_k",
                   "max_tokens", "stop", "seed")
FIELDS = {"chat.completion": (*SAMPLING_FIELDS, "messages", "max_completion_tokens"),
          "text_completion": (*SAMPLING_FIELDS, "prompt")}
INFORMATIONAL = ("user", "metadata", "store", "service_tier", "prompt_cache_key",
                 "prompt_cache_retention", "prompt_cache_options", "safety_identifier",
                 "parallel_tool_calls")
UNSUPPORTED = {"n": [1], "best_of": [1], "presence_penalty": [0], "frequency_penalty": [0],
               "repetition_penalty": [1], "logprobs": [False], "top_logprobs": [0],
               "logit_bias": [{}], "tools": [[]], "tool_choice": ["none"], "functions": [[]],
               "function_call": ["none"], "response_format": [{"type": "text"}],
               "modalities": [["text"]], "audio": [], "prediction": [], "reasoning_effort": [],
               "web_search_options": [], "echo": [False], "suffix": [""], "min_p": [0],
               "verbosity": []}


def harmless(value, accepted: list) -> bool:
    """value changes nothing: null, or one of accepted (JSON's true is not 1, nor false 0)."""
    return value is None or any(value == a and isinstance(value, bool) == isinstance(a, bool)
                                for a in accepted)


def request_of(body: bytes, kind: str) -> dict:
    """The JSON object of a request to endpoint kind, each field known and honoured, or ApiError."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(request, dict):
        raise ApiError(400, "the body must be a JSON object")
    for key, value in request.items():
        if key in FIELDS[kind] or key in INFORMATIONAL:
            continue
        if key not in UNSUPPORTED:
            raise ApiError(400, f"unrecognized request argument supplied: {key}", key)
        if not harmless(value, UNSUPPORTED[key]):
            raise ApiError(400, f"'{key}' is not supported by this server (it would change the "
                                f"reply, and chat.py cannot do it): leave it out", key,
                           "unsupported_parameter")
    return request


def number(request: dict, key: str, lo: float, hi: float, integer: bool = False,
           low_open: bool = False):
    """request[key] if a number in [lo, hi] ((lo, hi] if low_open), None if absent; or ApiError."""
    value = request.get(key)
    if value is None:
        return None
    above = lo < value if low_open else lo <= value
    if not isinstance(value, int if integer else (int, float)) or isinstance(value, bool) or \
            not (above and value <= hi):
        what = "a whole number" if integer else "a number"
        raise ApiError(400, f"'{key}' must be {what} in {'(' if low_open else '['}{lo:g}, {hi:g}]",
                       key)
    return value


def sampling_of(request: dict) -> dict:
    """How the request asks for its reply: Chat.settings' keys, and stop, stream and usage."""
    length = "max_completion_tokens" if request.get("max_completion_tokens") is not None else \
        "max_tokens"
    stop = request.get("stop")
    stop = [stop] if isinstance(stop, str) else [] if stop is None else stop
    if not (isinstance(stop, list) and len(stop) <= 4 and
            all(isinstance(s, str) and s for s in stop)):
        raise ApiError(400, "'stop' must be a non-empty string or a list of up to 4", "stop")
    options = request.get("stream_options") or {}
    if not isinstance(request.get("stream", False), bool) or not isinstance(options, dict):
        raise ApiError(400, "'stream' must be true or false, 'stream_options' an object", "stream")
    return dict(temperature=number(request, "temperature", 0, 10),
                top_p=number(request, "top_p", 0, 1, low_open=True),
                top_k=number(request, "top_k", 0, 1 << 31, integer=True),
                max_new_tokens=number(request, length, 1, max_tokens_limit, integer=True),
                seed=number(request, "seed", -(1 << 63), (1 << 64) - 1, integer=True),
                stop=tuple(stop), stream=bool(request.get("stream")),
                usage=bool(options.get("include_usage")))


def text_of(i: int, content) -> str:
    """A message's content: a string, or a list of text parts (OpenAI's content parts) joined."""
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if kinds := {p.get("type") for p in content} - {"text"}:
            raise ApiError(400, f"message {i + 1} has a content part of type {kinds.pop()!r}: "
                                f"this model reads text only", "messages")
        return "".join(str(p.get("text", "")) for p in content)
    return content


def conversation_of(messages) -> tuple[str | None, list[tuple[str, str]], str]:
    """(system message or None, [(user, assistant), ...], the last user message) of a chat
    request's messages; ApiError says what is wrong. OpenAI's newer "developer" role is the
    system message."""
    if not isinstance(messages, list):
        raise ApiError(400, "'messages' must be a list of {role, content} objects", "messages")
    plain = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ApiError(400, f"message {i + 1} must be an object with 'role' and 'content'",
                           "messages")
        if m.get("tool_calls") or m.get("function_call"):
            raise ApiError(400, f"message {i + 1} has tool calls: this model has no tools",
                           "messages")
        role = "system" if m.get("role") == "developer" else m.get("role")
        plain.append({"role": role, "content": text_of(i, m.get("content"))})
    if problem := chat_template.check(plain, partial=True):
        raise ApiError(400, problem, "messages")
    system = plain[0]["content"] if plain[0]["role"] == "system" else None
    turns = [m["content"] for m in plain if m["role"] != "system"]
    return system, list(zip(turns[:-1:2], turns[1::2], strict=True)), turns[-1]


def prompt_of(enc, prompt, budget: int) -> list[int]:
    """Token ids of a completion request's prompt (a string, or a list of one), its end when
    longer than budget; an empty prompt starts a new document (<|endoftext|>), as in training."""
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be a string (one prompt: this server makes one reply "
                            "at a time)", "prompt")
    return (enc.encode_ordinary(prompt) or [EOT_TOKEN])[-budget:]


def chunk_of(kind: str, meta: dict, text: str | None = None, finish: str | None = None,
             role: bool = False) -> dict:
    """One server-sent event of a streamed reply (OpenAI's chunk objects)."""
    if kind == "chat.completion":
        delta = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**meta, "object": "chat.completion.chunk", "choices": [choice]}
    choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
    return {**meta, "object": "text_completion", "choices": [choice]}


def whole_of(kind: str, meta: dict, text: str, finish: str, usage: dict) -> dict:
    """A reply sent whole (stream false)."""
    choice = {"index": 0, "logprobs": None, "finish_reason": finish}
    if kind == "chat.completion":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {**meta, "object": kind, "choices": [choice], "usage": usage}


def usage_of(stats: dict, n_prompt: int) -> dict:
    return {"prompt_tokens": n_prompt, "completion_tokens": stats["tokens"],
            "total_tokens": n_prompt + stats["tokens"]}


# ---------------------------------------------------------------- the web server

class Handler(BaseHTTPRequestHandler):
    """The routes of chat.py --web; make_handler gives a subclass its chat and page. HTTP/1.0: a
    streamed reply ends when the connection closes, so no length or chunking is needed."""
    server_version = "chat.py"
    chat: Chat
    page: bytes
    error = ""  # this request's error, for its log line

    def setup(self):
        self.timeout = REQUEST_TIMEOUT_S  # read here, per connection, so a test can shorten it
        super().setup()

    def log_request(self, code="-", size="-"):
        if self.error:  # one line per refusal, saying why
            self.log_message('"%s" %s %s', self.requestline, code, self.error)
        else:
            super().log_request(code, size)

    def do_GET(self):
        if self.path.split("?")[0] == "/":
            return self.send_body(200, self.page, "text/html; charset=utf-8")
        self.route({"/v1/models": self.get_models, f"/v1/models/{self.chat.name}": self.get_model},
                   "GET")

    def do_POST(self):
        self.route({"/v1/chat/completions": lambda: self.post("chat.completion"),
                    "/v1/completions": lambda: self.post("text_completion")}, "POST")

    def route(self, routes: dict, method: str):
        """Run the path's function; its ApiError, or a failure before a reply began, is answered."""
        path = self.path.split("?")[0].rstrip("/")
        try:
            if path not in routes:
                raise ApiError(404, f"nothing to {method} at {path or '/'}: the chat is at /, the "
                                    f"API at /v1/models, /v1/chat/completions and /v1/completions")
            routes[path]()
        except ApiError as e:
            self.send_json(e.status, e.body(), e.headers, error=str(e))
        except Exception as e:
            traceback.print_exc()
            error = f"the request failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
            self.send_json(500, ApiError(500, error).body(), error=error)

    def send_body(self, code: int, body: bytes, content_type: str, headers: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, code: int, body: dict, headers: dict | None = None, error: str = ""):
        self.error = error
        with contextlib.suppress(OSError):  # a client gone before its answer
            self.send_body(code, json.dumps(body).encode(), "application/json", headers)

    def get_models(self):
        self.send_json(200, {"object": "list", "data": [self.model_card()]})

    def get_model(self):
        self.send_json(200, self.model_card())

    def model_card(self) -> dict:
        return {"id": self.chat.name, "object": "model", "created": self.chat.created,
                "owned_by": "smallgpt"}

    def read_body(self) -> bytes:
        """The request's body, at most MAX_REQUEST_BYTES, within REQUEST_TIMEOUT_S in all (a
        per-read timeout alone lets a client trickle one byte per interval); else ApiError."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise ApiError(411, "a Content-Length header is required")
        raw = raw.strip()
        if not (raw.isascii() and raw.isdigit()):  # int() takes '-5', '+5', '1_0'; '²' it refuses
            raise ApiError(400, f"Content-Length must be the body's size in bytes, a whole number "
                                f"from 0 to {MAX_REQUEST_BYTES}, not {raw[:20]!r}")
        if len(raw) > 12 or int(raw) > MAX_REQUEST_BYTES:  # int() refuses over 4300 digits
            raise ApiError(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes: start a "
                                f"new chat or send a shorter message", code="request_too_large")
        length, deadline, body = int(raw), time.monotonic() + REQUEST_TIMEOUT_S, b""
        try:
            while len(body) < length:
                if (left := deadline - time.monotonic()) <= 0:
                    self.close_connection = True
                    raise ApiError(408, f"the request's body did not arrive within "
                                        f"{REQUEST_TIMEOUT_S:g} seconds: send it whole, as "
                                        f"Content-Length says")
                self.connection.settimeout(left)
                with contextlib.suppress(TimeoutError):
                    if not (chunk := self.rfile.read1(length - len(body))):
                        raise ApiError(400, f"the body ended before the {length} bytes "
                                            f"Content-Length gives")
                    body += chunk
        finally:
            self.connection.settimeout(self.timeout)
        return body

    def post(self, kind: str):
        """A chat completion (messages through the template), or a completion (a prompt)."""
        request = request_of(self.read_body(), kind)
        s = sampling_of(request)
        stop, stream, usage = s.pop("stop"), s.pop("stream"), s.pop("usage")
        block_size = self.chat.model.config.block_size
        budget = block_size - min(s["max_new_tokens"] or max_new_tokens, block_size // 2)
        chat = kind == "chat.completion"
        if chat:
            system, history, message = conversation_of(request.get("messages"))
            ids = prompt_ids(self.chat.enc, history, message, budget, self.chat.tuned, system)
            stop = self.chat.stops + stop
        else:
            ids = prompt_of(self.chat.enc, request.get("prompt"), budget)
        with self.chat.turn(self.client_gone) as ours:
            if not ours:
                return self.log_message('"%s" client left while queued', self.requestline)
            meta = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                    "created": int(time.time()), "model": self.chat.name}
            stats, deadline = {}, time.monotonic() + time_limit
            pieces = self.chat.generate(ids, stop, chat, stats, deadline, **self.chat.settings(**s))
            with contextlib.closing(pieces):  # stops generating on the way out, however it ends
                send = self.send_stream if stream else self.send_whole
                send(kind, meta, pieces, stats, len(ids), usage)

    def client_gone(self) -> bool:
        """Whether the client has closed its connection: readable, with nothing to read (the test
        llama.cpp's server makes between tokens)."""
        try:
            if not select.select([self.connection], [], [], 0)[0]:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def send_whole(self, kind: str, meta: dict, pieces, stats: dict, n_prompt: int, _usage: bool):
        text = ""
        for piece in pieces:
            text += piece
            if self.client_gone():
                return self.log_message('"%s" client left: generation stopped', self.requestline)
        usage = usage_of(stats, n_prompt)
        self.send_json(200, whole_of(kind, meta, text, stats["finish_reason"], usage))

    def send_stream(self, kind: str, meta: dict, pieces, stats: dict, n_prompt: int, usage: bool):
        """Server-sent events: a chunk a piece, one with the finish reason, usage if asked, then
        [DONE]."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            if kind == "chat.completion":
                self.send_event(chunk_of(kind, meta, "", role=True))
            for piece in pieces:
                self.send_event(chunk_of(kind, meta, piece))
                if self.client_gone():
                    raise BrokenPipeError
            self.send_event(chunk_of(kind, meta, finish=stats["finish_reason"]))
            if usage:
                self.send_event({**meta, "object": chunk_of(kind, meta)["object"], "choices": [],
                                 "usage": usage_of(stats, n_prompt)})
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            # the client went away, or stopped reading for REQUEST_TIMEOUT_S
            self.log_message('"%s" client left: generation stopped', self.requestline)
        except Exception as e:  # after the 200 headers: say so in the stream, as OpenAI's does
            traceback.print_exc()
            first = (str(e).splitlines() or [""])[0]
            error = ApiError(500, f"the reply failed ({type(e).__name__}: {first})")
            self.log_message('"%s" %s', self.requestline, error)
            with contextlib.suppress(OSError):
                self.send_event(error.body())

    def send_event(self, data: dict):
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())


def make_handler(chat: Chat) -> type[Handler]:
    about = ("It was fine-tuned on conversations: it answers in turns and ends its reply itself."
             if chat.tuned else
             "It was trained on web text, not on conversations: it continues a transcript.")
    page = (PAGE.replace("__TEMPERATURE__", str(chat.temperature)).replace("__KIND__", chat.kind)
            .replace("__ABOUT__", about).encode())
    return type("ChatHandler", (Handler,), {"chat": chat, "page": page})


def make_server(chat: Chat, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(chat))
    server.daemon_threads = True  # a page left open does not keep the process alive
    return server


def serve(chat: Chat):
    try:
        server = make_server(chat, host, port)
    except OSError as e:
        die(f"cannot serve on {host}:{port} ({e.strerror or e}): choose another --host "
            f"(127.0.0.1 is this machine) or --port (0 = any free one)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this port can use the model",
              file=sys.stderr)
    print(f"serving on http://{host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    defaults = {"host": host, "port": port}
    configure(globals(), ["--web=True" if a == "--web" else a for a in sys.argv[1:]], verbose=False)
    for key, value in (("host", host), ("port", port)):
        # the terminal REPL serves nothing: a --port there is a mistake
        if not web and value != defaults[key]:
            die(f"--{key}={value} is where the web page is served, and without --web chat.py runs "
                f"in the terminal: add --web, or drop --{key}")
    if max_new_tokens < 1:
        die(f"--max_new_tokens={max_new_tokens}: give at least 1")
    check_sampling(temperature, top_k, top_p, max_temperature=10)  # the web page's bound too
    if queue_size < 0 or max_tokens_limit < 1 or not time_limit > 0:
        die("--queue_size must be at least 0, --max_tokens_limit at least 1 and --time_limit "
            "above 0 seconds")
    if not 0 <= port <= 65535:
        die(f"--port={port}: use a port number from 1 to 65535, or 0 for any free one")
    torch.manual_seed(seed)
    chat = Chat(ckpt or out_dir)
    if web:
        serve(chat)
    else:
        repl(chat)
