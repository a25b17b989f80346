"""Shared test fixtures: real data prepared and a real checkpoint trained once a session, on a
background thread from the session's start (in_background). Running scripts and the data's paths
are launch.py's."""

import os
from pathlib import Path

import pytest

from launch import HELLASWAG, SHARED, Background, forking_python, in_background, run_script

JOBS = pytest.StashKey[Background]()


def pytest_sessionstart(session):
    """The zygotes (launch.py) import torch while pytest collects the tests, on the other core: the
    one for the tests' own runs, and the one for torchrun's workers and speedrun.sh's runs."""
    forking_python(), forking_python({**os.environ, "OMP_NUM_THREADS": "1"})


def pytest_collection_finish(session):
    """Starts the in_background fixtures that the selected tests use, as soon as the tests are
    known: before test_model.py's, which this folder's fixtures do not reach. The jobs make their
    folders with the session's own tmp_path_factory (pytest's tmpdir plugin keeps it on config)."""
    session.config.stash[JOBS] = jobs = Background(session.config._tmp_path_factory)
    if not session.config.option.collectonly:
        jobs.start([name for item in session.items for name in item.fixturenames])


@pytest.fixture(scope="session")
def background(request) -> Background:
    return request.config.stash[JOBS]


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED


@in_background
def owt_data(tmp_path_factory, need) -> Path:
    """The real OpenWebText sample, prepared once for the whole session (about 114K tokens)."""
    out = tmp_path_factory.mktemp("data") / "owt_sample"
    run_script("prepare.py", "--input", str(SHARED / "data" / "openwebtext_sample"),
               f"--data_dir={out}")
    return out


@in_background
def smoke_ckpt(tmp_path_factory, need) -> Path:
    """out_dir of a short run of config/smoke.py: a real checkpoint for sample/eval/export tests. It
    scores HellaSwag's first 8 examples at each eval too, for test_eval's check of that hook (a run
    of its own cost a train.py)."""
    out = tmp_path_factory.mktemp("out-smoke")
    run_script("train.py", "config/smoke.py", f"--data_dir={need('owt_data')}", f"--out_dir={out}",
               "--max_iters=40", "--batch_tokens=512", "--eval_interval=20",
               "--hellaswag_every_eval=8", f"--hellaswag_file={HELLASWAG}")
    return out
