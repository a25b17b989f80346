"""
Sample from a trained model, streaming text to stdout as it is generated (nanoGPT's interface):

    python sample.py --out_dir=out-smoke --start="Hello" --num_samples=3 --max_new_tokens=100
    python sample.py --ckpt=out/ckpt.pt --start=FILE:prompt.txt --temperature=0   # greedy

Only the samples go to stdout (one line of '---------------' between them); what was loaded goes
to stderr, so `python sample.py ... > out.txt` keeps just the text. Generation itself (KV cache,
top-k/top-p, stop tokens) lives in model.py; chat.py reuses StreamDecoder below.
"""

import codecs
import sys
import time

import torch

from common import check_sampling, die, load_model, setup
from configurator import configure
from model import EOT_TOKEN, GPT

# -----------------------------------------------------------------------------
out_dir = "out"  # folder holding ckpt.pt, as train.py writes it
ckpt = ""  # or the path of a checkpoint file; wins over out_dir
start = "\n"  # the prompt; "FILE:prompt.txt" reads it from a file;
              # "" starts a fresh document (from EOT)
num_samples = 1
max_new_tokens = 500
temperature = 0.8  # 0 = greedy; <1 sharper, >1 more random
top_k = 200  # keep only the k most likely tokens; 0 = off
top_p = 1.0  # nucleus sampling (Holtzman et al. 2019): the smallest set with this mass; 1.0 = off
stop_at_eot = True  # end a sample at <|endoftext|>,
                    # the document boundary prepare.py puts after every text
seed = 1337
device = "auto"  # auto: cuda if available, else cpu; or cpu, cuda, cuda:1
dtype = "auto"  # auto: bf16 on GPUs that have it, fp16 on older ones, fp32 on the CPU
compile = False  # torch.compile the one-token decoding step: faster after a wait (docs/sample.md)
# -----------------------------------------------------------------------------


class StreamDecoder:
    """Token ids in, text out as soon as it is complete.

    A GPT-2 BPE token is a run of bytes, and one UTF-8 character can be split across two tokens
    (an emoji often is), so decoding token by token would print replacement characters. The bytes
    go through an incremental UTF-8 decoder that holds a partial character until it is complete.
    """

    def __init__(self, enc):
        self.enc = enc
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self.utf8.decode(self.enc.decode_single_token_bytes(token))

    def flush(self) -> str:
        """Whatever is held at the end (an unfinished character becomes U+FFFD)."""
        return self.utf8.decode(b"", final=True)


def read_prompt(start: str) -> str:
    if start.startswith("FILE:"):
        path = start[len("FILE:"):]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            die(f"cannot read the prompt file '{path}' ({type(e).__name__}): give "
                f"--start=FILE:path of a UTF-8 text")
        if not text:  # surely a mistake; a fresh document is asked for by --start=""
            die(f"the prompt file '{path}' is empty: write the prompt in it, or give --start=\"\" "
                f"to start a fresh document")
        return text
    return start


def encode_prompt(enc, text: str, block_size: int) -> list[int]:
    """Prompt token ids; an empty one starts a new document, as after <|endoftext|> in training."""
    ids = enc.encode(text, allowed_special={"<|endoftext|>"}) or [EOT_TOKEN]
    if len(ids) > block_size:
        print(f"note: the prompt has {len(ids)} tokens; the model sees only the last {block_size}",
              file=sys.stderr)
    return ids


def stream_text(model: GPT, enc, ids: list[int], device: str, ctx, stop: set[int], **kwargs):
    """Yield (token, text) for each generated token, text being what became printable with it (""
    while a character is incomplete), then (None, text held at the end). Stops before any token in
    stop, which is not part of the text; kwargs go to model.generate_stream."""
    decoder = StreamDecoder(enc)
    steps = model.generate_stream(torch.tensor([ids], dtype=torch.long, device=device), stop=stop,
                                  **kwargs)
    try:
        while True:
            # the autocast context is entered around each step only, never held across a yield,
            # where it would leak into the caller's code
            with ctx:
                token = next(steps, None)
            if token is None or (t := token.item()) in stop:
                break
            yield t, decoder.push(t)
    finally:
        steps.close()  # frees the KV cache now, also when the caller stops early
    yield None, decoder.flush()


def main():
    defaults = {"top_k": top_k, "top_p": top_p}
    configure(globals(), sys.argv[1:], verbose=False)
    # greedy decoding takes the most likely token: top-k and top-p never see a draw
    if temperature == 0:
        for key, value in (("top_k", top_k), ("top_p", top_p)):
            if value != defaults[key]:
                die(f"--{key}={value} shapes sampling, and --temperature=0 is greedy, so it would "
                    f"be ignored: drop --{key}, or give a temperature above 0")
    if num_samples < 1 or max_new_tokens < 0:
        die("--num_samples must be at least 1 and --max_new_tokens at least 0")
    check_sampling(temperature, top_k, top_p)
    dev, _, dt, ctx, threads = setup(device, dtype, threads="idle")
    torch.manual_seed(seed)
    # one stream: samples differ, runs repeat
    generator = torch.Generator(device=dev).manual_seed(seed)
    prompt = read_prompt(start)
    model, enc, checkpoint = load_model(ckpt or out_dir, dev)
    val_loss = checkpoint.get("val_loss")
    print(f"loaded {ckpt or out_dir}: {model.num_params() / 1e6:.1f}M parameters, "
          f"iter {checkpoint.get('iter_num')}, "
          f"val loss {'?' if val_loss is None else f'{val_loss:.4f}'}; {dev}{threads}, {dt}",
          file=sys.stderr)
    if compile:
        print("compiling the decoding step: the first token waits for it", file=sys.stderr)
        model.compile_generation()
    ids = encode_prompt(enc, prompt, model.config.block_size)
    n_tokens, t0 = 0, time.time()
    try:
        for i in range(num_samples):
            if i > 0:
                sys.stdout.write("\n---------------\n")
            sys.stdout.write(prompt)
            stop = {EOT_TOKEN} if stop_at_eot else set()
            for token, text in stream_text(model, enc, ids, dev, ctx, stop,
                                           max_new_tokens=max_new_tokens, temperature=temperature,
                                           top_k=top_k or None, top_p=top_p, generator=generator):
                n_tokens += token is not None
                sys.stdout.write(text)
                sys.stdout.flush()
    except KeyboardInterrupt:
        print(file=sys.stderr)
        sys.exit(130)
    sys.stdout.write("\n")
    dt_s = time.time() - t0
    print(f"{n_tokens} tokens in {dt_s:.1f}s ({n_tokens / max(dt_s, 1e-9):.1f} tokens/s)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
