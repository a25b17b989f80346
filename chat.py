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
stop string (STOP_STRINGS: the start of a next "User:" or "Assistant:" line, or a blank line), so the
model does not write the user's next turn; its first token is never blank (blank_ids) and its leading
whitespace is dropped. When the transcript no longer fits the context, the oldest turns are left out
(the first line stays; a single message too long on its own keeps only its end).

A chat-tuned checkpoint (train.py on prepare_chat.py's conversations, e.g. config/sft_smoke.py) was
trained on chat_template.py's form of the same transcript, where <|endoftext|> starts the conversation
and ends each reply: it gets that template, and its reply ends at <|endoftext|> (or max_new_tokens)
alone. --mode forces one or the other; the terminal and the page say which kind of model is loaded.

The web page streams the reply as server-sent events from the standard library's http.server;
it serves one generation at a time and answers a second request made meanwhile with 429.
"""

import contextlib
import json
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

import chat_template
from common import autocast, check_sampling, die, load_model, setup
from configurator import configure
from model import EOT_TOKEN
from sample import stream_text

# -----------------------------------------------------------------------------
out_dir = "out"  # folder holding ckpt.pt
ckpt = ""  # or the path of a checkpoint file; wins over out_dir
header = chat_template.HEADER  # the transcript's first line (for a chat-tuned model: the system message)
mode = "auto"  # 'auto': the chat template for a chat-tuned checkpoint, the transcript for a base one | 'base' | 'chat'
max_new_tokens = 128  # per reply
temperature = 0.7  # 0 = greedy; /temp changes it in the terminal, a field on the page in the browser
top_k = 50  # 0 = off
top_p = 0.95  # 1.0 = off
seed = 1337
device = "auto"  # auto: cuda if available, else cpu
dtype = "auto"  # auto: bf16 on GPUs that have it, fp16 on older ones, fp32 on the CPU
compile = False  # torch.compile the one-token decoding step at startup (~20 s on a CPU), then faster replies
web = False  # serve the browser page instead of the terminal REPL (`--web` alone works too)
host = "127.0.0.1"  # loopback: only this machine can reach the page
port = 8000  # 0 = any free port (the one chosen is printed)
# -----------------------------------------------------------------------------

STOP_STRINGS = ("\nUser:", "\nAssistant:", "\n\n")
MAX_REQUEST_BYTES = 64 * 1024  # a web request (message + history) larger than this is refused
# a client has this long to send a request's body (in all, however it trickles in), and each wait on a slow or
# stalled connection (its headers, a reply it stops reading) ends after this long: its thread, and the model a
# stalled reply holds, are not held without end
REQUEST_TIMEOUT_S = 30.0


def transcript(history: list[tuple[str, str]], message: str) -> str:
    """The conversation in the documented template, ending where the assistant's reply starts."""
    turns = "".join(f"User: {u}\nAssistant: {a}\n" for u, a in history)
    return f"{header}\n\n{turns}User: {message}\nAssistant:"


def messages_of(history: list[tuple[str, str]], message: str) -> list[dict]:
    """The conversation in the messages format, the header as its system message (chat_template.py)."""
    turns = [{"role": r, "content": c} for u, a in history for r, c in (("user", u), ("assistant", a))]
    return [{"role": "system", "content": header}, *turns, {"role": "user", "content": message}]


def prompt_ids(enc, history: list[tuple[str, str]], message: str, budget: int, tuned: bool = False) -> list[int]:
    """Token ids of the transcript (tuned: of the chat template), leaving out the oldest turns until it fits in
    budget tokens. A single message too long for the budget keeps only its end (the part nearest the reply).

    Each turn dropped shortens the transcript, so a binary search finds the first turn to keep in
    log2(turns) encodings: the work is linear in the request's size (times ~13 for 64 KiB), where
    dropping one turn at a time re-encoded it once per turn (6,500 short turns: 88 s, the server held).
    """
    def encode(start: int) -> list[int]:
        # encode_ordinary: a user who types "<|endoftext|>" means the text, not the token (tiktoken's encode
        # would refuse it), as prepare.py treats the training text; chat_template.py encodes so too
        return (chat_template.prompt(enc, messages_of(history[start:], message)) if tuned else
                enc.encode_ordinary(transcript(history[start:], message)))

    lo, hi = 0, len(history)  # the answer lies in [lo, hi]; the transcript from hi on fits, or nothing does
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
    """The tokens a reply may not open with: <|endoftext|> and those that are whitespace alone (23 in
    GPT-2's vocabulary: newlines, spaces, no-break spaces...), which the reply's lstrip would drop. A base
    model often continues "Assistant:" with a newline; greedy, a small one then writes nothing but
    newlines, and every reply came out empty."""
    if enc.name not in BLANK_IDS:
        BLANK_IDS[enc.name] = [EOT_TOKEN] + [i for i in range(enc.n_vocab)
                                             if i != EOT_TOKEN and enc.decode([i]).isspace()]
    return BLANK_IDS[enc.name]


BLANK_IDS: dict[str, list[int]] = {}  # per tokenizer: computed once (30 ms)


def reply_stream(model, enc, ids: list[int], dev: str, ctx, stops: tuple[str, ...] = STOP_STRINGS, **kwargs):
    """Yield the reply's text as it is generated, cut before the first stop string. Text that might
    be the start of a stop string is held until it is clearly not; kwargs go to generate_stream.
    The first token is never blank (blank_ids), so the reply has something to show."""
    pending, started = "", False
    for _, text in stream_text(model, enc, ids, dev, ctx, {EOT_TOKEN}, suppress_first=blank_ids(enc), **kwargs):
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
    if pending:
        yield pending  # generation ended (max_new_tokens, EOT) while text was held back


class Chat:
    """The model of a chat and its settings (the globals above); lock: held while a reply is made."""

    def __init__(self, path: str):
        self.dev, self.device_type, self.dtype, _, threads = setup(device, dtype, threads="idle")
        self.model, self.enc, checkpoint = load_model(path, self.dev)
        template = checkpoint.get("chat_template")
        if template not in (None, chat_template.NAME):
            die(f"{path} was tuned with chat template '{template}', which this chat.py does not know "
                f"(it knows '{chat_template.NAME}'): use the chat.py of the version that trained it")
        if mode not in ("auto", "base", "chat"):
            die(f"--mode={mode}: use auto (what the checkpoint is), base or chat")
        if mode == "chat" and template is None:
            die(f"--mode=chat needs a chat-tuned checkpoint, and {path} is a base model: fine-tune it first "
                f"(python train.py config/sft_smoke.py --init_from={path}), or use --mode=auto")
        self.tuned = mode == "chat" or mode == "auto" and template is not None
        self.kind = "chat-tuned model" if self.tuned else "base model"
        self.generator = torch.Generator(device=self.dev).manual_seed(seed)
        self.temperature = temperature
        block_size = self.model.config.block_size
        # room kept free for the reply; a longer reply still works (generate slides its window)
        self.budget = block_size - min(max_new_tokens, block_size // 2)
        self.lock = threading.Lock()
        if compile:
            print("compiling the decoding step...", file=sys.stderr)
            self.model.compile_generation()
            with autocast(self.device_type, self.dtype):  # two tokens: the prompt pass, then one compiled step
                self.model.generate(torch.tensor([[EOT_TOKEN]], device=self.dev), 2, temperature=0)
        how = f"template {template}" if self.tuned else "continues a transcript"
        print(f"loaded {path}: a {self.kind} ({how}), {self.model.num_params() / 1e6:.1f}M parameters, "
              f"iter {checkpoint.get('iter_num')}; {self.dev}{threads}, {self.dtype}", file=sys.stderr)

    def reply(self, history: list[tuple[str, str]], message: str, temperature: float | None = None):
        """Yield the reply to message, after history, as text pieces."""
        ids = prompt_ids(self.enc, history, message, self.budget, self.tuned)
        t = self.temperature if temperature is None else temperature
        # a chat-tuned model ends its turn with <|endoftext|> itself; a base one is stopped at the next turn's start
        yield from reply_stream(self.model, self.enc, ids, self.dev, autocast(self.device_type, self.dtype),
                                () if self.tuned else STOP_STRINGS, max_new_tokens=max_new_tokens, temperature=t,
                                top_k=top_k or None, top_p=top_p, generator=self.generator)


# ---------------------------------------------------------------- terminal

HELP = "commands: /reset (new conversation), /temp [T] (show or set the temperature), /quit"


def repl(chat: Chat):
    """Read messages line by line; with stdin piped, each is echoed so stdout reads as the transcript."""
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
  <textarea id="message" rows="2" placeholder="Say something (Enter sends, Shift+Enter for a new line)"></textarea>
  <label>temperature <input id="temperature" type="number" min="0" step="0.1" value="__TEMPERATURE__"></label>
  <button id="send" type="submit">Send</button>
  <button id="reset" type="button">New chat</button>
</form>
<script>
const history = [];  // [user, assistant] pairs; the server keeps no state
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
    const response = await fetch('/chat', {method: 'POST', headers: {'Content-Type': 'application/json'},
      // the last 20 turns at most: the server keeps only what fits the context anyway
      body: JSON.stringify({message, history: history.slice(-20), temperature: parseFloat($('temperature').value)})});
    if (!response.ok) {
      const err = await response.json().catch(() => ({error: response.statusText}));
      bot.classList.add('error'); out.textContent = err.error; user.remove();
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
        const event = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        const name = (event.match(/^event: (.*)$/m) || [])[1] || 'message';
        const data = JSON.parse((event.match(/^data: (.*)$/m) || [])[1] || '{}');
        if (name === 'done') { history.push([message, data.reply]); bot.dataset.done = '1'; }
        else if (name === 'error') { bot.classList.add('error'); out.textContent += ' [' + data.error + ']'; }
        else { out.textContent += data.text; bot.dataset.chunks = +bot.dataset.chunks + 1; bot.scrollIntoView(false); }
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
$('reset').addEventListener('click', () => { history.length = 0; $('transcript').replaceChildren(); });
</script>
</body></html>
"""


def parse_request(body: bytes) -> tuple[list[tuple[str, str]], str, float | None]:
    """(history, message, temperature) of a POST /chat body; ValueError says what is wrong."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(request, dict):
        raise ValueError("the body must be a JSON object")
    message, history, t = request.get("message"), request.get("history", []), request.get("temperature")
    if not isinstance(message, str) or not message.strip():
        raise ValueError("'message' must be a non-empty string")
    if not isinstance(history, list) or not all(
            isinstance(turn, list) and len(turn) == 2 and all(isinstance(x, str) for x in turn) for turn in history):
        raise ValueError("'history' must be a list of [user, assistant] pairs of strings")
    if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 10):
        raise ValueError("'temperature' must be a number from 0 to 10")
    return [(u, a) for u, a in history], message.strip(), t


def make_handler(chat: Chat):
    about = ("It was fine-tuned on conversations: it answers in turns and ends its reply itself." if chat.tuned else
             "It was trained on web text, not on conversations: it continues a transcript.")
    page = (PAGE.replace("__TEMPERATURE__", str(chat.temperature)).replace("__KIND__", chat.kind)
            .replace("__ABOUT__", about).encode())

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: a streamed reply ends when the connection closes, so no length or chunking is needed
        server_version = "chat.py"

        def setup(self):
            self.timeout = REQUEST_TIMEOUT_S  # read here, per connection, so a test can shorten it
            super().setup()

        def read_body(self, length: int) -> bytes | None:
            """The request's body, within REQUEST_TIMEOUT_S in all (a per-read timeout alone lets a client
            trickle one byte per interval); None when the client closed before sending length bytes."""
            deadline, body = time.monotonic() + REQUEST_TIMEOUT_S, b""
            try:
                while len(body) < length:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    self.connection.settimeout(left)
                    chunk = self.rfile.read1(length - len(body))
                    if not chunk:
                        return None
                    body += chunk
            finally:
                self.connection.settimeout(self.timeout)
            return body

        def send_body(self, code: int, body: bytes, content_type: str, headers: dict | None = None):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def send_error_json(self, code: int, message: str, headers: dict | None = None):
            self.send_body(code, json.dumps({"error": message}).encode(), "application/json", headers)

        def do_GET(self):
            if self.path == "/":
                self.send_body(200, page, "text/html; charset=utf-8")
            else:
                self.send_error_json(404, f"no page at {self.path}: the chat is at /")

        def do_POST(self):
            if self.path != "/chat":
                return self.send_error_json(404, f"nothing to POST at {self.path}: use /chat")
            raw = self.headers.get("Content-Length")
            if raw is None:
                return self.send_error_json(411, "a Content-Length header is required")
            raw = raw.strip()
            if not (raw.isascii() and raw.isdigit()):  # int() takes '-5', '+5', '1_0'; '²' is a digit int() refuses
                return self.send_error_json(400, f"Content-Length must be the body's size in bytes, a whole number "
                                                 f"from 0 to {MAX_REQUEST_BYTES}, not {raw[:20]!r}")
            if len(raw) > 12 or int(raw) > MAX_REQUEST_BYTES:  # int() refuses over 4300 digits: never given those
                return self.send_error_json(413, f"the request is larger than {MAX_REQUEST_BYTES} bytes: "
                                                 f"start a new chat or send a shorter message")
            length = int(raw)
            try:
                body = self.read_body(length)
            except TimeoutError:
                self.close_connection = True
                return self.send_error_json(408, f"the request's body did not arrive within {REQUEST_TIMEOUT_S:g} "
                                                 f"seconds: send it whole, as Content-Length says")
            if body is None:
                return self.send_error_json(400, f"the body ended before the {length} bytes Content-Length gives")
            try:
                history, message, t = parse_request(body)
            except ValueError as e:
                return self.send_error_json(400, str(e))
            if not chat.lock.acquire(blocking=False):
                return self.send_error_json(429, "busy with another reply: one at a time, please try again "
                                                 "when it has finished", {"Retry-After": "2"})
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                reply = ""
                for piece in chat.reply(history, message, t):
                    reply += piece
                    self.wfile.write(f"data: {json.dumps({'text': piece})}\n\n".encode())
                self.wfile.write(f"event: done\ndata: {json.dumps({'reply': reply.strip()})}\n\n".encode())
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                # the page went away, or stopped reading for REQUEST_TIMEOUT_S: stop generating (the generator is
                # closed on the way out) and free the model for the next request
                pass
            except Exception as e:  # after the 200 headers: say so in the stream, or the page waits for 'done'
                traceback.print_exc()
                error = f"the reply failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
                with contextlib.suppress(OSError):
                    self.wfile.write(f"event: error\ndata: {json.dumps({'error': error})}\n\n".encode())
            finally:
                chat.lock.release()

    return Handler


def make_server(chat: Chat, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(chat))
    server.daemon_threads = True  # a page left open does not keep the process alive
    return server


def serve(chat: Chat):
    try:
        server = make_server(chat, host, port)
    except OSError as e:
        die(f"cannot serve on {host}:{port} ({e.strerror or e}): choose another --host (127.0.0.1 is this machine) "
            f"or --port (0 = any free one)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this port can use the model", file=sys.stderr)
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
        if not web and value != defaults[key]:  # the terminal REPL serves nothing: a --port there is a mistake
            die(f"--{key}={value} is where the web page is served, and without --web chat.py runs in the terminal: "
                f"add --web, or drop --{key}")
    if max_new_tokens < 1:
        die(f"--max_new_tokens={max_new_tokens}: give at least 1")
    check_sampling(temperature, top_k, top_p, max_temperature=10)  # the web page's bound too
    if not 0 <= port <= 65535:
        die(f"--port={port}: use a port number from 1 to 65535, or 0 for any free one")
    torch.manual_seed(seed)
    chat = Chat(ckpt or out_dir)
    if web:
        serve(chat)
    else:
        repl(chat)
