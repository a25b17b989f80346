"""Shared test fixtures. Tests read real data from ../shared beside the checkout (never copied in)."""

import contextlib
import os
import resource
import signal
import subprocess
import sys
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
    """out_dir of a short run of config/smoke.py: a real checkpoint for sample/eval/export tests."""
    out = tmp_path_factory.mktemp("out-smoke")
    run_script("train.py", "config/smoke.py", f"--data_dir={owt_data}", f"--out_dir={out}", "--max_iters=40",
               "--eval_interval=20")
    return out
