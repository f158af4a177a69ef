"""Starts and stops one live `rockchip-llama-agent serve` for the Python suites.

Used by tests/compat/conftest.py (a session fixture) and tests/fuzz/run.py (the schemathesis
smoke), so both run the binary the same way:

    AGENT_BIN serve --listen 127.0.0.1:PORT --models-dir TMP/models --default-model NAME

TMP/models holds a symlink to the SmolLM2 GGUF (never a copy: 98 MB). The port is picked free on
loopback; if the agent still loses the race for it, it is restarted on another one. Output goes to
TMP/agent.log, whose tail is what a failing run prints.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "smollm2-135m-instruct"


class AgentError(RuntimeError):
    pass


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # PR_SET_PDEATHSIG: if the test runner is killed outright (timeout -s KILL, CI teardown), the
    # agent gets SIGTERM instead of living on as an orphan that holds a port and a core.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort (non-Linux)
        pass


def default_agent_bin() -> Path:
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    def __init__(
        self,
        binary: Path,
        model_path: Path,
        workdir: Path,
        extra_args: list[str] | None = None,
        default_model: str = DEFAULT_MODEL,
    ):
        self.binary = Path(binary)
        self.model_path = Path(model_path).resolve()
        self.workdir = Path(workdir)
        self.extra_args = list(extra_args or [])
        self.default_model = default_model
        self.models_dir = self.workdir / "models"
        self.log_path = self.workdir / "agent.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 120.0) -> "Agent":
        if not os.access(self.binary, os.X_OK):
            raise AgentError(
                f"agent binary {self.binary} is missing or not executable "
                "(build it: cargo build --release -p rockchip-llama-agent, or set AGENT_BIN)"
            )
        if not self.model_path.is_file():
            raise AgentError(f"model {self.model_path} not found (hack/fetch-models.sh smollm2)")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        link = self.models_dir / self.model_path.name
        if not link.exists():
            link.symlink_to(self.model_path)
        for attempt in range(3):
            if self._start_once(ready_timeout):
                return self
            if "in use" not in self.log_tail(20).lower():
                break
        raise AgentError(
            f"agent did not become ready on {self.base_url} (exit code "
            f"{self.proc.returncode if self.proc else '?'}); log tail:\n{self.log_tail()}"
        )

    def _start_once(self, ready_timeout: float) -> bool:
        self.port = free_port()
        cmd = [
            str(self.binary),
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--models-dir",
            str(self.models_dir),
            "--default-model",
            self.default_model,
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                env={**os.environ, "RUST_BACKTRACE": "1"},
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL after `grace` seconds. Returns the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no agent log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "Agent":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
