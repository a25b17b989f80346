"""Running the project's scripts from the tests as a user would, fast: each run is forked from one
process that has imported torch (the zygote below), or started in a new interpreter. And the paths
of the real data the tests read: ../shared beside the checkout, or the folder SMALLGPT_SHARED names
(the one environment variable the tests read, and no script does)."""

import atexit
import contextlib
import io
import json
import os
import resource
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SMALLGPT_SHARED") or ROOT.parent / "shared").resolve()
# the tasks' files, passed explicitly: a script's default downloads the official ones
HELLASWAG = str(SHARED / "data" / "hellaswag" / "hellaswag_val.jsonl")
LAMBADA = str(SHARED / "data" / "lambada" / "lambada_test.jsonl")



# A new Python process spends 4-5 s importing torch (and the torch._dynamo that an optimizer imports
# when it is first made), numpy, tiktoken and matplotlib: for a train.py that trains a few steps of
# a tiny model, most of its time, over 40 runs a suite. So run_script asks one process that has
# imported them (the zygote, started at the first run) to fork: the child is a process of its own
# (its own pid, file descriptors, environment, signal handlers, exit status and interpreter exit),
# set up as `python ARGS...` would be, that runs the script as __main__; only those modules are
# already imported. Runs whose environment differs in what torch reads at import (but TORCH_LOGS),
# or that need a preexec_fn, start a new interpreter as a user's would, and so does every run under
# FRESH_INTERPRETERS=1 (to check that the zygote hides nothing). torchrun's launcher is forked too;
# the workers it starts are new interpreters.
ZYGOTE = r"""
import json, os, sys
devnull = os.open(os.devnull, os.O_RDWR)
requests, replies = os.fdopen(os.dup(0)), os.fdopen(os.dup(1), "w")
# sys.stdin is never read here: a child's starts empty of buffered bytes
os.dup2(devnull, 0), os.dup2(devnull, 1)
# the 4-5 s: torch._dynamo is what an optimizer's first construction imports (2.4 s of a tiny
# train.py run)
import matplotlib.figure, numpy, tiktoken, torch, torch._dynamo
import torch.distributed, torch.nn.parallel
import torch._inductor.compile_fx  # 1.3 s more, for the runs that compile
for line in requests:
    r = json.loads(line)
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()  # torch has run nothing here, so no thread pool is forked half-way
    if pid == 0:
        break
    with open(r["pid"], "w") as f:
        f.write(str(pid))
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), file=replies, flush=True)
else:
    sys.exit(0)
requests.close(), replies.close()
os.chdir(r["cwd"])
logs = os.environ.get("TORCH_LOGS")
os.environ.clear(), os.environ.update(r["env"])
# the one setting torch reads at import that it can read again
if os.environ.get("TORCH_LOGS") != logs:
    torch._logging._internal._init_logs()
for fd, path in enumerate((r["stdin"], r["stdout"], r["stderr"])):
    os.dup2(os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY), fd)
import resource, signal
if r["file_size_limit"] is not None:  # as limit_file_size below
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE,
                       (r["file_size_limit"], resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
if r["memory_limit"] is not None:
    resource.setrlimit(resource.RLIMIT_AS,
                       (r["memory_limit"], resource.getrlimit(resource.RLIMIT_AS)[1]))
import atexit, runpy, threading
status, interrupted = 0, False
try:
    if r["argv"][0] == "-c":
        sys.argv, sys.path[0] = ["-c", *r["argv"][2:]], ""
        exec(compile(r["argv"][1], "<string>", "exec"),
             {"__name__": "__main__", "__builtins__": __builtins__})
    elif r["argv"][0] == "-m":
        # torchrun: the launcher is forked; its workers are new interpreters, as for a user
        sys.argv, sys.path[0] = ["-m", *r["argv"][2:]], os.getcwd()
        runpy.run_module(r["argv"][1], run_name="__main__", alter_sys=True)
    else:
        sys.argv, sys.path[0] = r["argv"], os.path.dirname(os.path.abspath(r["argv"][0]))
        runpy.run_path(r["argv"][0], run_name="__main__")
except SystemExit as e:
    # as Py_Exit takes it: None is 0, an int the status, anything else printed and 1
    status = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    if not isinstance(e.code, int) and e.code is not None:
        print(e.code, file=sys.stderr)
except BaseException as e:
    sys.excepthook(type(e), e, e.__traceback__)
    status, interrupted = 1, isinstance(e, KeyboardInterrupt)
# the interpreter's exit as a script sees it: threads joined, atexit run, output flushed. What is
# skipped, tearing down every module torch and inductor brought, takes 1.3 s a run; it could only
# add a warning printed at teardown, which FRESH_INTERPRETERS=1 (the real exit) would show
threading._shutdown()
atexit._run_exitfuncs()
sys.stdout.flush(), sys.stderr.flush()
if interrupted:  # Python exits by SIGINT after a KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
os._exit(status)
"""
_zygote: subprocess.Popen | None = None
# what torch, OpenMP and CUDA read at import (the zygote's): a run with other values needs a new
# interpreter
_IMPORT_TIME_ENV = ("TORCH", "PYTORCH", "OMP_", "MKL_", "KMP_", "CUDA", "PYTHON")


def _import_time_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME_ENV) and k != "TORCH_LOGS"}


def _run_forked(args: tuple[str, ...], timeout: float, input: str | None,
                file_size_limit: int | None, memory_limit: int | None,
                env: dict) -> subprocess.CompletedProcess:
    global _zygote
    if _zygote is None or _zygote.poll() is not None:
        _zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=ROOT, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        _zygote.env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: Path(tmp) / name for name in ("stdin", "stdout", "stderr", "pid")}
        files["stdin"].write_text(input or "")
        files["stdout"].touch(), files["stderr"].touch()
        request = {"argv": list(args), "cwd": str(ROOT), "env": env,
                   "file_size_limit": file_size_limit, "memory_limit": memory_limit,
                   **{k: str(v) for k, v in files.items()}}
        _zygote.stdin.write(json.dumps(request) + "\n")
        _zygote.stdin.flush()
        # wait for its one line: the exit status
        timed_out = not select.select([_zygote.stdout], [], [], timeout)[0]
        if timed_out:
            os.kill(int(files["pid"].read_text()), signal.SIGKILL)
        returncode = int(_zygote.stdout.readline())
        stdout, stderr = files["stdout"].read_text(), files["stderr"].read_text()
    if timed_out:
        raise subprocess.TimeoutExpired([sys.executable, *args], timeout, stdout, stderr)
    return subprocess.CompletedProcess([sys.executable, *args], returncode, stdout, stderr)


@atexit.register
def _stop_zygote() -> None:
    if _zygote is not None:
        _zygote.stdin.close()
        _zygote.wait(timeout=30)


def run_script(*args: str, check: bool = True, timeout: float = 300, input: str | None = None,
               file_size_limit: int | None = None, memory_limit: int | None = None,
               **kwargs) -> subprocess.CompletedProcess:
    """Run one of the project's scripts the way a user does, from the repository root:
    `python ARGS...`, forked from the zygote above unless env or preexec_fn needs a new interpreter.
    file_size_limit: writes past it fail as on a full disk (limit_file_size); memory_limit: the
    bytes of address space the process may map (RLIMIT_AS), past which an allocation fails as a
    GPU's does when it is full."""
    env = kwargs.pop("env", None) or dict(os.environ)
    # the environment the zygote's imports saw
    zygote_env = _zygote.env if _zygote is not None and _zygote.poll() is None else os.environ
    if (kwargs or os.environ.get("FRESH_INTERPRETERS") == "1"
            or _import_time_env(zygote_env) != _import_time_env(env)):
        def limits() -> None:  # as the zygote's child sets them
            if file_size_limit is not None:
                limit_file_size(file_size_limit)
            if memory_limit is not None:
                resource.setrlimit(resource.RLIMIT_AS,
                                   (memory_limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        if file_size_limit is not None or memory_limit is not None:
            kwargs["preexec_fn"] = limits
        result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                                timeout=timeout, input=input, env=env, **kwargs)
    else:
        result = _run_forked(args, timeout, input, file_size_limit, memory_limit, env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def run_in_process(*argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS...` as run_script runs it, but in this process: the script runs afresh
    (runpy, as __main__, from the repository root) with its own sys.argv, stdin, stdout and stderr,
    and its SystemExit or exception becomes the exit status and stderr the interpreter would give;
    what it set of torch's (the number of threads, the global random state) is put back. A new
    process spends 2-4 s importing torch, for a script that stops at a bad setting or samples a few
    tokens most of its time. What this cannot see: output written to the file descriptors below
    Python (a C++ warning), and what a fresh interpreter does at start-up and exit; so each script
    keeps tests that run it in a process of its own. Signal handlers are put back too. Not for runs
    that train or serve: those get a process of their own (run_script, run_in_one_process)."""
    import torch

    out, err, returncode = io.StringIO(), io.StringIO(), 0
    saved, cwd = (sys.argv, sys.stdin), os.getcwd()
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    # train.py notes SIGTERM from its first line: left here, this process's forked children (a
    # Pool's workers) would ignore the SIGTERM that ends them, and the Pool would wait forever
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    sys.argv, sys.stdin = list(argv), io.StringIO(stdin)
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(ROOT / argv[0]), run_name="__main__")
            except SystemExit as e:
                # what Py_FinalizeEx does with it: None is 0, an int the status, else printed
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
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return subprocess.CompletedProcess([sys.executable, *argv], returncode, out.getvalue(),
                                       err.getvalue())


def run_in_one_process(runs: dict[str, list[str]],
                       **kwargs) -> dict[str, subprocess.CompletedProcess]:
    """{name: [SCRIPT, ARGS...]} run one after another by run_in_process in one new Python process
    (torch imported once, not once a run): {name: what each run gave}. For scripts that must not run
    inside pytest's own process (train.py installs signal handlers and may start torch.distributed)
    and stop early, at a bad setting."""
    driver = ("import json, sys\n"
              f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
              "from launch import run_in_process\n"
              "runs = {name: run_in_process(*argv)"
              " for name, argv in json.loads(sys.argv[1]).items()}\n"
              "print('RESULTS ' + json.dumps({k: [r.returncode, r.stdout, r.stderr]"
              " for k, r in runs.items()}))\n")
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
    """From now on in this process (and its children), a write past nbytes fails with EFBIG, as on a
    full disk or a quota; SIGXFSZ is ignored so the write returns the error rather than killing the
    process. Also a preexec_fn."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE,
                       (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """limit_file_size for the block's duration, in this process."""
    soft, handler = resource.getrlimit(resource.RLIMIT_FSIZE)[0], signal.getsignal(signal.SIGXFSZ)
    limit_file_size(nbytes)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (soft, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        signal.signal(signal.SIGXFSZ, handler)
