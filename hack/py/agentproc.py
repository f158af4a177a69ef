"""The one launcher of `rockchip-llama-agent serve` (and of other local HTTP servers) for every
Python harness of the project:

    tests/compat/conftest.py   the compat suite's session agent       Agent.in_workdir(...)
    tests/fuzz/run.py          the schemathesis smoke's agent         Agent.in_workdir(...)
    hack/bench/servers.py      `make bench`: the agent, and llama.cpp's llama-server through the
                               same ServerProc (only its argv and readiness path differ)
    hack/bench/npu_measure.py  `make bench-npu`: the agent over rkllm-sim

Why it lives in hack/py/ and how it is imported: it belongs to neither the test tree nor the
bench, so it sits beside both; it is stdlib only, because the bench runs on the system python3 and
the suites in the test venv (hack/pyenv.sh). It is not an installed package (a fresh clone needs no
install step); each user puts this directory on sys.path from its own location: tests/compat with
`pythonpath` in its pytest.ini, tests/fuzz/run.py and hack/bench/servers.py with one
`sys.path.insert` computed from `__file__`.

What ServerProc.start() does:
  * picks a free loopback port (binds 127.0.0.1:0 and reads the number back) and builds the argv
    for it. Another process can take the port before the child binds it; when the child then exits
    before it is ready and its log says "in use" or the port is now taken, the start is retried on
    a new port, at most START_ATTEMPTS times in all;
  * starts the child in its own session (so its own process group: stop() signals the group) with
    PR_SET_PDEATHSIG = SIGTERM, so a harness killed outright (timeout -s KILL, CI teardown) does not
    leave a server behind holding a port and a core;
  * sends stdout and stderr to the log file (truncated by each start(), a `$ argv` line before each
    attempt); log_tail() returns its last lines for error messages;
  * polls GET ready_path until it answers 200 (the agent: /readyz), the child exits, or
    READY_TIMEOUT seconds pass, printing a progress line every PROGRESS_EVERY seconds of waiting.

READY_TIMEOUT is a backstop, not the bound: what bounds a start is the work it does (load one small
model), and a start only hits the backstop when the child hangs. It is generous (300 s) because
a start on a 2-core machine shared with a compiler can take many times its quiet duration, and a
slow machine must not fail a test. stop() sends SIGTERM to the group, SIGKILL after a grace period
(also a backstop), and returns the exit code (-15 = died of the SIGTERM, 0 = graceful shutdown).
"""

from __future__ import annotations

import ctypes
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "smollm2-135m-instruct"

READY_TIMEOUT = 300.0  # s; a backstop for a hung child, not the bound (see the module docstring)
STOP_GRACE = 15.0  # s between SIGTERM and SIGKILL; a backstop for a child that ignores SIGTERM
START_ATTEMPTS = 3  # starts per start() call when the port was lost to another process
PROGRESS_EVERY = 30.0  # s between "still waiting" lines while a start is slow
POLL_INTERVAL = 0.05  # s between readiness probes (also the resolution of load_s)

# Every ServerProc between start() and stop(), in start order: stop_all() stops them, and the bench
# counts their CPU time as its own (hack/bench/servers.py, CpuMeter).
RUNNING: list["ServerProc"] = []


class LaunchError(RuntimeError):
    """A server did not start: missing binary or model, exited early, or never became ready."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


try:  # resolved here, not in the child: after fork only async-signal-safe work is wise
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
except (OSError, AttributeError):  # not Linux
    _prctl = None
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """GET http://127.0.0.1:port/path: the status, or None when nothing answered. http.client, not
    urllib: urllib would route through $http_proxy unless $no_proxy names 127.0.0.1."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()
    except (OSError, http.client.HTTPException):
        return None


def safe_name(label: str) -> str:
    """A label as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def stop_all() -> None:
    for p in reversed(list(RUNNING)):
        p.stop()


class ServerProc:
    """One child process that serves HTTP on a loopback port it is told on its command line.

    `argv_fn(port)` returns the command line for a port; `ready_path` answers 200 once the child
    is ready. `env` is added to the inherited environment. `say` prints progress lines."""

    def __init__(
        self,
        name: str,
        argv_fn: Callable[[int], list[str]],
        ready_path: str,
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        say: Callable[[str], None] = _say,
    ):
        self.name = name
        self.argv_fn = argv_fn
        self.ready_path = ready_path
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self.cwd = cwd
        self.say = say
        self.port = 0
        self.argv: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.load_s: float | None = None  # Popen of the successful attempt -> first 200

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = READY_TIMEOUT) -> "ServerProc":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")
        why = ""
        for attempt in range(1, START_ATTEMPTS + 1):
            why = self._start_once(ready_timeout)
            if not why:
                return self
            if why != "port lost" or attempt == START_ATTEMPTS:
                break
            self.say(f"{self.name}: lost port {self.port} to another process; retrying on a new one")
        code = self.proc.returncode if self.proc else None
        raise LaunchError(
            f"{self.name} did not become ready on {self.base_url}: {why} (exit code {code}); "
            f"log {self.log_path}, tail:\n{self.log_tail()}"
        )

    def _start_once(self, ready_timeout: float) -> str:
        """'' when ready, else why not ('port lost' means: worth another attempt)."""
        self.port = free_port()
        self.argv = [str(a) for a in self.argv_fn(self.port)]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            offset = log.tell()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                start_new_session=True,  # its own process group, signalled as one by stop()
                preexec_fn=_die_with_parent(os.getpid()),
            )
        RUNNING.append(self)
        # Bounded by the deadline (READY_TIMEOUT, a backstop) and by the child exiting.
        deadline = t0 + ready_timeout
        next_note = t0 + PROGRESS_EVERY
        while True:
            if self.proc.poll() is not None:
                self.stop()
                if "in use" in self._log_since(offset).lower() or port_taken(self.port):
                    return "port lost"
                return "exited"
            if http_status(self.port, self.ready_path) == 200:
                self.load_s = time.monotonic() - t0
                return ""
            now = time.monotonic()
            if now >= deadline:
                self.stop()
                return f"not ready after {ready_timeout:.0f} s (a backstop; the child hung?)"
            if now >= next_note:
                self.say(
                    f"{self.name}: waiting for {self.base_url}{self.ready_path}: {now - t0:.0f} s "
                    f"so far (backstop {ready_timeout:.0f} s)"
                )
                next_note = now + PROGRESS_EVERY
            time.sleep(POLL_INTERVAL)

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read(1 << 20).decode(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM to the process group (graceful shutdown), SIGKILL after `grace` seconds.
        Returns the exit code (None if never started)."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                try:
                    p.wait(30)  # a backstop: SIGKILL cannot be ignored, only delayed by the kernel
                except subprocess.TimeoutExpired:
                    pass
        if self in RUNNING:
            RUNNING.remove(self)
        return p.returncode

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # pgid == pid: start_new_session
        except ProcessLookupError:
            pass
        except PermissionError:  # not our group after all: the process alone
            self.proc.send_signal(sig)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    def rss_peak_mb(self) -> float | None:
        """VmHWM of the running child, in MiB."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except (OSError, AttributeError):
            pass
        return None

    def __enter__(self) -> "ServerProc":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------
# The agent
# ----------------------------------------------------------------------------------------------


def default_agent_bin() -> Path:
    """$AGENT_BIN, else $CARGO_TARGET_DIR (default ~/.cache/rockchip-llama/target)/release/..."""
    if os.environ.get("AGENT_BIN"):
        return Path(os.environ["AGENT_BIN"])
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser(
        "~/.cache/rockchip-llama/target"
    )
    return Path(target) / "release" / "rockchip-llama-agent"


def default_model_path() -> Path:
    """$MODEL_PATH, else the first line of `hack/fetch-models.sh smollm2` (cached, sha256-checked)."""
    if os.environ.get("MODEL_PATH"):
        return Path(os.environ["MODEL_PATH"])
    out = subprocess.run(
        [str(ROOT / "hack" / "fetch-models.sh"), "smollm2"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return Path(out.splitlines()[0])


def link_model(model_path: Path, models_dir: Path) -> Path:
    """Puts a symlink to `model_path` into `models_dir` (never a copy); returns the link."""
    models_dir.mkdir(parents=True, exist_ok=True)
    link = models_dir / Path(model_path).name
    if not link.exists():
        link.symlink_to(Path(model_path).resolve())
    return link


class Agent(ServerProc):
    """`BINARY serve --listen 127.0.0.1:PORT ARGS...`, ready when GET /readyz answers 200.

    `args` are the flags after --listen, in order (--models-dir, --default-model, engine flags,
    --threads, --parallel, --config, ...); `env` is added to the inherited environment (e.g. the
    rkllm-sim variables). If `model_path` is given, start() first links it into `models_dir`."""

    def __init__(
        self,
        binary: Path | str,
        args: list[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        name: str = "rockchip-llama-agent",
        model_path: Path | None = None,
        models_dir: Path | None = None,
        say: Callable[[str], None] = _say,
    ):
        self.binary = Path(binary)
        self.args = [str(a) for a in args]
        self.model_path = Path(model_path).resolve() if model_path else None
        self.models_dir = Path(models_dir) if models_dir else None
        self.workdir = Path(cwd) if cwd else None
        super().__init__(
            name,
            lambda port: [str(self.binary), "serve", "--listen", f"127.0.0.1:{port}", *self.args],
            "/readyz",
            log_path,
            env=env,
            cwd=cwd,
            say=say,
        )

    @classmethod
    def in_workdir(
        cls,
        binary: Path | str,
        model_path: Path,
        workdir: Path,
        *,
        default_model: str = DEFAULT_MODEL,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> "Agent":
        """The Python suites' layout: WORKDIR/models holds a symlink to the model, the agent runs
        in WORKDIR and logs to WORKDIR/agent.log, with RUST_BACKTRACE=1:

            BINARY serve --listen 127.0.0.1:PORT --models-dir WORKDIR/models --default-model NAME EXTRA...
        """
        workdir = Path(workdir)
        return cls(
            binary,
            ["--models-dir", str(workdir / "models"), "--default-model", default_model,
             *(extra_args or [])],
            workdir / "agent.log",
            env={"RUST_BACKTRACE": "1", **(env or {})},
            cwd=workdir,
            model_path=model_path,
            models_dir=workdir / "models",
        )

    def start(self, ready_timeout: float = READY_TIMEOUT) -> "Agent":
        if not os.access(self.binary, os.X_OK):
            raise LaunchError(
                f"agent binary {self.binary} is missing or not executable "
                "(build it: cargo build --release -p rockchip-llama-agent, or set AGENT_BIN)"
            )
        if self.model_path is not None:
            if not self.model_path.is_file():
                raise LaunchError(
                    f"model {self.model_path} not found (hack/fetch-models.sh smollm2, make rkllm-sim)"
                )
            link_model(self.model_path, self.models_dir)
        super().start(ready_timeout)
        return self

