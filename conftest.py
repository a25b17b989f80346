"""Shared test fixtures. Tests read real data from ../shared beside the checkout (never copied in)."""

import contextlib
import io
import json
import os
import resource
import runpy
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared"

# No network in CI: tiktoken reads GPT-2's BPE files from the shared cache.
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")


def pytest_configure(config: pytest.Config) -> None:
    # torch.compile's own code calls torch.jit.script_method (deprecated in torch 2.13); ours never does
    config.addinivalue_line("filterwarnings", r"ignore:`torch\.jit\.script_method` is deprecated:DeprecationWarning")


def run_script(*args: str, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run one of the project's scripts the way a user does, from the repository root."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_in_process(*argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS...` as run_script runs it, but in this process: the script runs afresh (runpy, as
    __main__, from the repository root) with its own sys.argv, stdin, stdout and stderr, and its SystemExit or
    exception becomes the exit status and stderr the interpreter would give; what it set of torch's (the number of
    threads, the global random state) is put back. A new process spends 2-4 s importing torch, for a script that
    stops at a bad setting or samples a few tokens most of its time. What this cannot see: output written to the
    file descriptors below Python (a C++ warning), and what a fresh interpreter does at start-up and exit; so each
    script keeps tests that run it in a process of its own. Not for runs that train, serve or install signal
    handlers: those get a process of their own (run_script, run_in_one_process)."""
    import torch

    out, err, returncode = io.StringIO(), io.StringIO(), 0
    saved, cwd = (sys.argv, sys.stdin), os.getcwd()
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    sys.argv, sys.stdin = list(argv), io.StringIO(stdin)
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(ROOT / argv[0]), run_name="__main__")
            except SystemExit as e:  # what Py_FinalizeEx does with it: None is 0, an int the status, else printed
                returncode = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if not isinstance(e.code, int) and e.code is not None:
                    print(e.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                returncode = 1
    finally:
        sys.argv, sys.stdin = saved
        os.chdir(cwd)
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
    return subprocess.CompletedProcess([sys.executable, *argv], returncode, out.getvalue(), err.getvalue())


def run_in_one_process(runs: dict[str, list[str]], **kwargs) -> dict[str, subprocess.CompletedProcess]:
    """{name: [SCRIPT, ARGS...]} run one after another by run_in_process in one new Python process (torch imported
    once, not once a run): {name: what each run gave}. For scripts that must not run inside pytest's own process
    (train.py installs signal handlers and may start torch.distributed) and stop early, at a bad setting."""
    driver = ("import json, sys\n"
              "from conftest import run_in_process\n"
              "runs = {name: run_in_process(*argv) for name, argv in json.loads(sys.argv[1]).items()}\n"
              "print('RESULTS ' + json.dumps({k: [r.returncode, r.stdout, r.stderr] for k, r in runs.items()}))\n")
    result = run_script("-c", driver, json.dumps(runs), **kwargs)
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULTS "))
    return {name: subprocess.CompletedProcess([sys.executable, *runs[name]], *values)
            for name, values in json.loads(line[len("RESULTS "):]).items()}


def one_line_error(fn, *args) -> str:
    """fn(*args) must stop with a one-line 'error: ...' (common.die); the message."""
    with pytest.raises(SystemExit) as e:
        fn(*args)
    message = str(e.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


def limit_file_size(nbytes: int) -> None:
    """From now on in this process (and its children), a write past nbytes fails with EFBIG, as on a full disk or
    a quota; SIGXFSZ is ignored so the write returns the error rather than killing the process. Also a preexec_fn."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """limit_file_size for the block's duration, in this process."""
    soft, handler = resource.getrlimit(resource.RLIMIT_FSIZE)[0], signal.getsignal(signal.SIGXFSZ)
    limit_file_size(nbytes)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def owt_data(tmp_path_factory) -> Path:
    """The real OpenWebText sample, prepared once for the whole session (about 114K tokens)."""
    out = tmp_path_factory.mktemp("data") / "owt_sample"
    run_script("prepare.py", "--input", str(SHARED / "data" / "openwebtext_sample"), "--out", str(out))
    return out


@pytest.fixture(scope="session")
def smoke_ckpt(owt_data, tmp_path_factory) -> Path:
    """out_dir of a short run of config/smoke.py: a real checkpoint for sample/eval/export tests. It scores HellaSwag's
    first 8 examples at each eval too, for test_eval's check of that hook (a run of its own cost a train.py)."""
    out = tmp_path_factory.mktemp("out-smoke")
    run_script("train.py", "config/smoke.py", f"--data_dir={owt_data}", f"--out_dir={out}", "--max_iters=40",
               "--eval_interval=20", "--hellaswag_every_eval=8")
    return out
