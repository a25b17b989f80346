"""EleutherAI's lm-evaluation-harness (lm-eval) on this project's Hugging Face export: the local
tasks in lm_eval_tasks/ must score the same examples as eval.py, the same way, so that the two
tools' figures agree.

On the first 16 HellaSwag items and 16 LAMBADA passages, conftest's smoke checkpoint exported by
export_hf.py and run through lm-eval's `hf` model (transformers), against eval.py on our own
model.py: the same contexts and continuations, every log-likelihood within 1e-4 nats (two fp32
implementations of one function; measured on 1,000 examples of each task: at most 7.5e-5), the same
greedy flags, and the figures equal to the digits eval.py prints. A model this small gets no real
LAMBADA word right, so 4 of the passages end in the word it does predict, and acc is 0.25 in both
tools.

lm-eval runs in-process (lm_eval.simple_evaluate, what its CLI calls) with only our two tasks
indexed: its ~10,000 built-in task files cost ~40 s to index on this project's CPU.
"""

import json
import math
import os

# transformers reaches for the hub only if asked (the export is a local folder; the tasks' data come
# from disk, not through datasets' hub loader); say offline anyway, as test_export_hf.py does, so
# nothing waits on a network
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lm_eval  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import common  # noqa: E402
import eval as ev  # noqa: E402
import export_hf  # noqa: E402
from launch import HELLASWAG, LAMBADA, ROOT, one_line_error  # noqa: E402
from tokenizer import chat_template  # noqa: E402

pytestmark = pytest.mark.lmeval

N = 16  # examples of each task
TOLERANCE = 1e-4  # nats, on each log-likelihood
CPU_FP32 = common.autocast("cpu", "float32")


def lm_eval_run(folder, limit: int, metadata: dict | None = None, **kwargs) -> dict:
    """lm-eval's results and per-example samples for both local tasks on the export in `folder`;
    metadata is the CLI's --metadata (utils.py reads hellaswag_file and lambada_file from it; the
    shared copies unless it names others)."""
    metadata = {"hellaswag_file": HELLASWAG, "lambada_file": LAMBADA, **(metadata or {})}
    return lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(folder), "dtype": "float32"},
        tasks=["hellaswag_local", "lambada_openai_local"],
        task_manager=TaskManager(include_path=str(ROOT / "assets" / "lm_eval_tasks"),
                                 include_defaults=False, metadata=metadata),
        limit=limit, device="cpu", batch_size=16, log_samples=True, bootstrap_iters=0, **kwargs)


def lambada_with_hits(model, enc, path, real: int = 12, hits: int = 4) -> list[dict]:
    """Write a LAMBADA file of the first `real` passages and `hits` more that end in the word the
    model predicts: a later passage's context, then the model's greedy next token where it is a
    space and a word."""
    rows = ev.load_lambada(LAMBADA)
    out = rows[:real]
    for row in rows[real:]:
        if len(out) == real + hits:
            break
        context = row["text"].rpartition(" ")[0]
        ids = torch.tensor([enc.encode_ordinary(context)[-model.config.block_size:]])
        token = model.generate(ids, 1, temperature=0)[0, -1].item()
        word = enc.decode([token])
        if word[:1] == " " and word[1:].isalpha() and enc.encode_ordinary(word) == [token]:
            out.append({"text": context + word})
    path.write_text("".join(json.dumps(row) + "\n" for row in out))
    return out


def samples(out: dict, task: str) -> list[dict]:
    return sorted(out["samples"][task], key=lambda s: s["doc_id"])


def scores(model, enc, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, int, bool]]:
    """eval.py's primitive on (context ids, continuation ids), cut to the context
    as eval.py cuts it."""
    requests = [ev.truncate(c, t, model.config.block_size) for c, t in pairs]
    return ev.loglikelihoods(model, requests, 16, "cpu", CPU_FP32)


@pytest.fixture(scope="module")
def smoke(smoke_ckpt):
    model, enc, _ = common.load_model(str(smoke_ckpt), "cpu")
    return model, enc


def test_lm_eval_agrees_with_eval_py(smoke, tmp_path):
    model, enc = smoke
    # a base checkpoint's export, as export_hf.py writes it
    export_hf.export(model, str(tmp_path / "hf"))
    lambada = lambada_with_hits(model, enc, tmp_path / "lambada.jsonl")
    out = lm_eval_run(tmp_path / "hf", N,
                      metadata={"lambada_file": str(tmp_path / "lambada.jsonl")})
    hellaswag = ev.load_hellaswag(HELLASWAG)[:N]

    # HellaSwag: the same context and four " " + ending continuations, then the same log-likelihoods
    got = samples(out, "hellaswag_local")
    assert [s["doc_id"] for s in got] == list(range(N))
    pairs, theirs = [], []
    for s, ex in zip(got, hellaswag, strict=True):
        assert (s["arguments"] == [(ex["ctx"], " " + e) for e in ex["endings"]]
                and s["target"] == ex["label"])
        pairs += [(enc.encode_ordinary(ex["ctx"]), enc.encode_ordinary(" " + e))
                  for e in ex["endings"]]
        theirs += [r[0] for r in s["resps"]]
    ours = scores(model, enc, pairs)
    assert max(abs(lp - t[0]) for (lp, _, _), t in zip(ours, theirs, strict=True)) < TOLERANCE
    assert [g for _, _, g in ours] == [t[1] for t in theirs]
    # the figures: acc is eval.py's acc; lm-eval's acc_norm (per character) is
    # eval.py's acc_norm_chars
    r = ev.hellaswag_accuracy(model, enc, hellaswag, "cpu", CPU_FP32)
    res = out["results"]["hellaswag_local"]
    assert f"{res['acc,none']:.4f}" == f"{r['acc']:.4f}"
    assert f"{res['acc_norm,none']:.4f}" == f"{r['acc_norm_chars']:.4f}"

    # LAMBADA: context up to the last space, target " " + the last word
    got = samples(out, "lambada_openai_local")
    pairs, theirs = [], []
    for s, ex in zip(got, lambada, strict=True):
        context, _, word = ex["text"].rpartition(" ")
        assert s["arguments"] == [(context, " " + word)]
        pairs.append((enc.encode_ordinary(context), enc.encode_ordinary(" " + word)))
        theirs.append(s["resps"][0][0])
    ours = scores(model, enc, pairs)
    assert max(abs(lp - t[0]) for (lp, _, _), t in zip(ours, theirs, strict=True)) < TOLERANCE
    assert [g for _, _, g in ours] == [t[1] for t in theirs]
    r = ev.lambada_accuracy(model, enc, lambada, "cpu", CPU_FP32)
    res = out["results"]["lambada_openai_local"]
    assert r["acc"] == 0.25 and f"{res['acc,none']:.4f}" == f"{r['acc']:.4f}"
    # ppl = exp(mean NLL): within TOLERANCE nats of NLL it agrees to a relative 1e-4, which is
    # eval.py's two decimals for any ppl below 100; the smoke model's is ~1e5, so the test holds the
    # relative bound (docs/eval.md)
    assert abs(math.log(res["perplexity,none"] / r["ppl"])) < TOLERANCE


def test_chat_tuned_export_with_its_template(smoke, tmp_path):
    """A chat-tuned checkpoint's export differs from a base one only by the chat template in
    tokenizer_config.json (export_hf.write_tokenizer), so the weights here are the smoke model's.
    Scored as plain text (docs/eval.md's choice) lm-eval never reads the template and the test above
    holds as it is. With apply_chat_template (the CLI's --apply_chat_template) lm-eval renders each
    context as a user turn through the export's template: the text chat_template.render gives,
    scored as our model scores that prompt's tokens. Under a template lm-eval 0.4.13 drops the space
    before a multiple-choice continuation (target_delimiter ""), so HellaSwag's endings follow
    "Assistant:" directly, while LAMBADA's target keeps its own leading space."""
    model, enc = smoke
    export_hf.export(model, str(tmp_path / "hf"), chat=True)
    out = lm_eval_run(tmp_path / "hf", 2, apply_chat_template=True)
    pairs, theirs = [], []
    for task in ("hellaswag_local", "lambada_openai_local"):
        for s in samples(out, task):
            for (context, continuation), resp in zip(s["arguments"], s["resps"], strict=True):
                text = (s["doc"]["ctx"] if task == "hellaswag_local"
                        else s["doc"]["text"].rpartition(" ")[0])
                messages = [{"role": "user", "content": text}]
                assert context == chat_template.render(messages, add_generation_prompt=True)
                assert continuation.startswith(" ") == (task == "lambada_openai_local")
                pairs.append((chat_template.prompt(enc, messages),
                              enc.encode_ordinary(continuation)))
                theirs.append(resp[0])
    assert len(pairs) == 2 * 4 + 2
    ours = scores(model, enc, pairs)
    assert max(abs(lp - t[0]) for (lp, _, _), t in zip(ours, theirs, strict=True)) < TOLERANCE


def test_task_data_errors_are_one_line(tmp_path):
    """The tasks' data come through eval.py's loaders (lm_eval_tasks/utils.py), with their one-line
    errors; lm-eval's --metadata is how a user names another file."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("lm_eval_task_utils",
                                                  ROOT / "assets" / "lm_eval_tasks" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    # lm-eval passes its metadata too
    assert len(utils.hellaswag(HELLASWAG, version=1.0)["validation"]) == 10042
    assert len(utils.lambada(LAMBADA)["test"]) == 5153
    missing = str(tmp_path / "nope.jsonl")
    assert one_line_error(utils.hellaswag, missing).endswith(
        "not found: see docs/eval.md for where it comes from, or point --hellaswag_file at a copy "
        "(lm_eval: --metadata '{\"hellaswag_file\": \"PATH\"}')")
    (tmp_path / "bad.jsonl").write_text('{"text": "one"}\n')
    assert "a context, a space and a last word" in one_line_error(utils.lambada,
                                                                  str(tmp_path / "bad.jsonl"))
