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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SMALLGPT_SHARED") or ROOT.parent / "shared").resolve()
# the tasks' files, passed explicitly: a script's default downloads the official ones
HELLASWAG = str(SHARED / "data" / "hellaswag" / "hellaswag_val.jsonl")
LAMBADA = str(SHARED / "data" / "lambada" / "lambada_test.jsonl")



# A new Python process spends 4-5 s importing torch (and the torch._dynamo that an optimizer imports
# when it is first made), numpy, tiktoken and matplotlib: for a train.py that trains a few steps of
# a tiny model, most of its time, over 60 runs a suite. So a run is forked from a process that has
# imported them (a zygote; one for each set of the environment variables read at import). The
# child is a process of its own (its own pid, file descriptors, environment, signal handlers, exit
# status and interpreter exit), set up as `python ARGS...` would be, that runs the script as
# __main__; only those modules are already imported. run_script asks a zygote itself; what the
# tests do not start themselves (speedrun.sh's `python`, torchrun's workers) asks one through
# forking_python's stand-in. A run whose environment differs in what is read at import, or that
# needs a preexec_fn or an interpreter option other than -u, -c and -m, starts a new interpreter as
# a user's would, and so does every run under FRESH_INTERPRETERS=1 (to check that the zygotes hide
# nothing).
ZYGOTE = r"""
import json, os, select, signal, socket, sys
started_with = dict(os.environ)  # what the imports saw (inductor's sets TORCHINDUCTOR_CACHE_DIR)
parent = os.dup(0)  # a pipe from the tests' process: its end (even by SIGKILL) ends this one
devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(devnull, 0), os.dup2(devnull, 1)  # a run's stdin, stdout and stderr are its caller's
# the 4-5 s: torch._dynamo is what an optimizer's first construction imports (2.4 s of a tiny
# train.py run)
import matplotlib.figure, numpy, tiktoken, torch, torch._dynamo
import torch.distributed, torch.nn.parallel
import torch._inductor.compile_fx  # 1.3 s more, for the runs that compile
listener = socket.socket(fileno=int(sys.argv[1]))  # listening already: callers queue meanwhile
read_at_import, read_later = (tuple(prefixes) for prefixes in json.loads(sys.argv[2]))
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the watchers
while True:
    if parent in select.select([listener, parent], [], [])[0]:
        sys.exit(0)
    conn = listener.accept()[0]
    if os.fork() == 0:
        break
    conn.close()
# A watcher, one a run: it takes the request (its length, then JSON) with the caller's stdin,
# stdout and stderr, forks the run, and answers the run's pid, then its wait status. A caller that
# goes away (a killed stand-in, a test's timeout) takes its run with it.
listener.close(), os.close(parent)
signal.signal(signal.SIGCHLD, signal.SIG_DFL)
head, fds, _, _ = socket.recv_fds(conn, 10, 3)
data = b""
while len(data) < int(head):
    data += conn.recv(1 << 16)
r = json.loads(data)
pid = os.fork()  # torch has run nothing here, so no thread pool is forked half-way
if pid:
    conn.sendall(b"%d\n" % pid)
    if conn in select.select([conn, os.pidfd_open(pid)], [], [])[0]:  # readable: the caller left
        os.kill(pid, signal.SIGKILL)
    status = os.waitpid(pid, 0)[1]
    try:
        conn.sendall(b"%d\n" % status)
    finally:
        os._exit(0)
conn.close()
for fd, std in zip(fds, (0, 1, 2)):
    os.dup2(fd, std), os.close(fd)
os.chdir(r["cwd"])
unbuffered = r["argv"][:1] == ["-u"]  # as torchrun starts its workers
argv = r["argv"][1:] if unbuffered else r["argv"]
def imported_with(env):
    return {k: v for k, v in env.items() if k.startswith(read_at_import)
            and not k.startswith(read_later)}
if (r["fresh"] or imported_with(r["env"]) != imported_with(started_with)
        or (argv[0].startswith("-") and argv[0] not in ("-c", "-m"))):
    os.execve(sys.executable, [sys.executable, *r["argv"]], r["env"])
if unbuffered:
    sys.stdout.reconfigure(write_through=True), sys.stderr.reconfigure(write_through=True)
logs = os.environ.get("TORCH_LOGS")
os.environ.clear(), os.environ.update(r["env"])
# the one setting torch reads at import that it can read again
if os.environ.get("TORCH_LOGS") != logs:
    torch._logging._internal._init_logs()
import resource
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
    if argv[0] == "-c":
        sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
        exec(compile(argv[1], "<string>", "exec"),
             {"__name__": "__main__", "__builtins__": __builtins__})
    elif argv[0] == "-m":
        sys.argv, sys.path[0] = ["-m", *argv[2:]], os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv, sys.path[0] = argv, os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")
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
# `python` for what the tests do not start themselves: it hands its arguments, environment, working
# folder, stdin, stdout and stderr to a zygote, passes on the signals it is sent, and exits as the
# run did (by its signal, if a signal ended it)
STAND_IN = r"""#!{python} -S
import json, os, signal, socket, sys
conn = socket.socket(socket.AF_UNIX)
conn.connect({path!r})
request = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ),
                      "fresh": {fresh!r}, "file_size_limit": None, "memory_limit": None}}).encode()
socket.send_fds(conn, [b"%10d" % len(request)], [0, 1, 2])
conn.sendall(request)
replies = conn.makefile()
pid = int(replies.readline())
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
    signal.signal(sig, lambda sig, _: os.kill(pid, sig))
status = int(replies.readline())
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.waitstatus_to_exitcode(status))
"""
# what torch, OpenMP and CUDA read at import (a zygote's): a run with other values needs another
# zygote. torchrun's own variables for its workers (TORCHELASTIC_*, TORCH_NCCL_*, PYTHON_EXEC) and
# TORCH_LOGS (the zygote reads it again) are read later
_IMPORT_TIME_ENV = ("TORCH", "PYTORCH", "OMP_", "MKL_", "KMP_", "CUDA", "PYTHON")
_READ_LATER = ("TORCH_LOGS", "TORCHELASTIC_", "TORCH_NCCL_", "PYTHON_EXEC")
_zygotes: dict[str, tuple[subprocess.Popen, Path]] = {}


def _import_time_env(env: dict) -> dict:
    return {k: v for k, v in env.items()
            if k.startswith(_IMPORT_TIME_ENV) and not k.startswith(_READ_LATER)}


_zygotes_lock = threading.Lock()  # runs start from a background thread too (in_background)


def _zygote(env: dict) -> Path:
    """The socket of the zygote for env's import-time variables, started at its first run, with
    the stand-in `python` that asks it (forking_python) beside it."""
    key = json.dumps(_import_time_env(env), sort_keys=True)
    with _zygotes_lock:
        if key in _zygotes and _zygotes[key][0].poll() is None:
            return _zygotes[key][1]
        path = Path(tempfile.mkdtemp(prefix="zygote-")) / "socket"
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
            listener.listen(64)
            prefixes = json.dumps([_IMPORT_TIME_ENV, _READ_LATER])
            own = {k: v for k, v in os.environ.items() if k not in _import_time_env(os.environ)}
            zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(listener.fileno()),
                                       prefixes], cwd=ROOT, env={**own, **_import_time_env(env)},
                                      pass_fds=[listener.fileno()], stdin=subprocess.PIPE)
        fresh = os.environ.get("FRESH_INTERPRETERS") == "1"
        python = path.parent / "python"
        python.write_text(STAND_IN.format(python=sys.executable, path=str(path), fresh=fresh))
        python.chmod(0o755)
        _zygotes[key] = zygote, path
        return path


def environ() -> dict[str, str]:
    """A copy of os.environ; on the background thread, of os.environ as the session's tests began:
    a test's monkeypatch.setenv (WORLD_SIZE, LOCAL_RANK...) must not reach the runs made then."""
    if threading.current_thread() is threading.main_thread() or not _SESSION_ENV:
        return dict(os.environ)
    return dict(_SESSION_ENV)


def forking_python(env: dict | None = None) -> str:
    """The path of a stand-in for `python` that runs each command forked from the zygote for env
    (this process's by default): for speedrun.sh's PATH, or torchrun's PYTHON_EXEC."""
    return str(_zygote(env or environ()).parent / "python")


def _run_forked(args: tuple[str, ...], timeout: float, input: str | None,
                file_size_limit: int | None, memory_limit: int | None,
                env: dict) -> subprocess.CompletedProcess:
    request = json.dumps({"argv": list(args), "cwd": str(ROOT), "env": env, "fresh": False,
                          "file_size_limit": file_size_limit,
                          "memory_limit": memory_limit}).encode()
    with (tempfile.TemporaryFile("w+") as stdin, tempfile.TemporaryFile("w+") as stdout,
          tempfile.TemporaryFile("w+") as stderr, socket.socket(socket.AF_UNIX) as conn):
        stdin.write(input or "")
        stdin.flush(), stdin.seek(0)
        conn.connect(str(_zygote(env)))
        socket.send_fds(conn, [b"%10d" % len(request)], [stdin.fileno(), stdout.fileno(),
                                                         stderr.fileno()])
        conn.sendall(request)
        replies, timed_out = conn.makefile(), False
        conn.settimeout(timeout)
        try:
            replies.readline()  # the run's pid
            status = int(replies.readline())
        except TimeoutError:
            timed_out = True
            replies.close(), conn.close()  # the watcher kills the run
        stdout.seek(0), stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if timed_out:
        raise subprocess.TimeoutExpired([sys.executable, *args], timeout, out, err)
    return subprocess.CompletedProcess([sys.executable, *args], os.waitstatus_to_exitcode(status),
                                       out, err)


@atexit.register
def _stop_zygotes() -> None:
    for zygote, path in _zygotes.values():
        zygote.kill()
        zygote.wait(timeout=30)
        shutil.rmtree(path.parent, ignore_errors=True)


def torchrun_workers(env: dict, args) -> dict:
    """The environment torchrun gives its workers, as far as their imports go: OMP_NUM_THREADS=1
    where it starts more than one a node and none is set."""
    nproc = next((int(a.split("=")[1]) for a in args if a.startswith("--nproc_per_node=")), 1)
    return env if "OMP_NUM_THREADS" in env or nproc == 1 else {**env, "OMP_NUM_THREADS": "1"}


def run_script(*args: str, check: bool = True, timeout: float = 300, input: str | None = None,
               file_size_limit: int | None = None, memory_limit: int | None = None,
               **kwargs) -> subprocess.CompletedProcess:
    """Run one of the project's scripts the way a user does, from the repository root:
    `python ARGS...`, forked from a zygote (above) unless a preexec_fn needs a new interpreter.
    file_size_limit: writes past it fail as on a full disk (limit_file_size); memory_limit: the
    bytes of address space the process may map (RLIMIT_AS), past which an allocation fails as a
    GPU's does when it is full."""
    env = kwargs.pop("env", None) or environ()
    fresh = kwargs or os.environ.get("FRESH_INTERPRETERS") == "1"
    if args[:2] == ("-m", "torch.distributed.run") and "PYTHON_EXEC" not in env and not fresh:
        env = {**env, "PYTHON_EXEC": forking_python(torchrun_workers(env, args))}
    if fresh:
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


# ---------------------------------------------------------------- fixtures that train, meanwhile
# A few session fixtures train a model or run the whole pipeline, 15-20 s each, while most tests
# leave one of two cores idle. Made with in_background, each starts on a background thread as the
# session starts (in the order they are defined, if a selected test uses it), and its fixture
# waits for it.
_JOBS: dict[str, Callable] = {}
_SESSION_ENV: dict[str, str] = {}


def in_background(job: Callable) -> Callable:
    """A session fixture named as job, its value job(tmp_path_factory, need) computed on the
    background thread from the session's start; need(name) gives another such fixture's value."""
    _JOBS[job.__name__] = job

    @pytest.fixture(scope="session", name=job.__name__)
    def fixture(background):
        return background(job.__name__)

    fixture.__doc__ = job.__doc__
    return fixture


class Background:
    """The in_background fixtures' values, each computed once: on the background thread, or by the
    first test that needs it before the thread has got to it."""

    def __init__(self, tmp_path_factory):
        self.tmp_path_factory, self.values = tmp_path_factory, {}
        self.locks = {name: threading.Lock() for name in _JOBS}

    def __call__(self, name: str):
        with self.locks[name]:
            if name not in self.values:
                try:
                    self.values[name] = True, _JOBS[name](self.tmp_path_factory, self)
                except BaseException as e:  # raised to each test that needs it, as a fixture's
                    self.values[name] = False, e
        ok, value = self.values[name]
        if not ok:
            raise value
        return value

    def start(self, needed: list[str]) -> None:
        """Computes the jobs among needed (fixture names, in the order the tests need them) in that
        order, so that the thread keeps ahead of the tests."""
        _SESSION_ENV.update(os.environ)

        def run():
            for name in dict.fromkeys(name for name in needed if name in _JOBS):
                with contextlib.suppress(BaseException):
                    self(name)

        threading.Thread(target=run, daemon=True).start()
