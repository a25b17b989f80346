"""Datasets for lm-evaluation-harness's local tasks (the YAML files beside this one): the examples
eval.py scores, read by eval.py's own loaders, so both tools see the same examples in the same
order, with the same checks and one-line errors. lm-eval calls these through `custom_dataset` (its
documented hook for data that is not on the hub); its `--metadata` JSON reaches them as keyword
arguments, which is how another copy of a file is chosen:

    lm_eval ... --include_path assets/lm_eval_tasks --tasks hellaswag_local \
        --metadata '{"hellaswag_file": "/data/hellaswag_val.jsonl"}'

Without it the files are eval.py's defaults: the official files, downloaded once into eval.py's
cache (~/.cache/smallgpt), with their checks.
"""

import os
import sys

import datasets

# the repository root, for eval.py: lm-eval imports this file by its path, not as part of a package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import eval as ev  # noqa: E402


def load(loader, path: str, what: str) -> datasets.Dataset:
    """loader(path) as a Dataset; its one-line error also says how lm-eval names another file
    (eval.py's says --{what}_file, a flag lm-eval does not have)."""
    try:
        return datasets.Dataset.from_list(loader(path))
    except SystemExit as e:
        raise SystemExit(f"{e} (lm_eval: --metadata '{{\"{what}_file\": \"PATH\"}}')") from None


def hellaswag(hellaswag_file: str = "", **metadata) -> dict:
    """{"validation": the HellaSwag examples}, each with eval.py's fields (ctx, endings, label); the
    other keyword arguments are lm-eval's metadata (the task's version, the model's arguments), not
    ours."""
    return {"validation": load(ev.load_hellaswag, hellaswag_file, "hellaswag")}


def lambada(lambada_file: str = "", **metadata) -> dict:
    """{"test": the LAMBADA passages} ({"text"}), as lm-eval's lambada_openai reads them from the
    hub."""
    return {"test": load(ev.load_lambada, lambada_file, "lambada")}
