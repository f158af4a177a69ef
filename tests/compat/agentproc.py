"""Starts and stops one live `rockchip-llama-agent serve` for the Python suites.

Used by tests/compat/conftest.py (a session fixture) and tests/fuzz/run.py (the schemathesis
smoke), so both run the binary the same way:

    AGENT_BIN serve --listen 127.0.0.1:PORT --models-dir TMP/models --default-model NAME

TMP/models holds a symlink to the SmolLM2 GGUF (never a copy: 98 MB). The port is picked free on
loopback; if the agent still loses the race for it, it is restarted on another one. Output goes to
TMP/agent.log, whose tail is what a failing run prints.

COMPAT_ENGINE picks the engine under test (`engine_setup()`): `llama` (default, SmolLM2 on
llama.cpp) or `rkllm-1.2` / `rkllm-1.3` (the simulated Qwen3 0.6B on rkllm-sim built for that
runtime ABI; paths from `make rkllm-sim`, or $ROCKCHIP_LLAMA_TEST_RKLLM as the Rust tests take them).
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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "smollm2-135m-instruct"
ENGINES = ("llama", "rkllm-1.2", "rkllm-1.3")


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


@dataclass(frozen=True)
class EngineSetup:
    """How to run the agent on one engine, and what the suites may expect of its model."""

    engine: str  # a value of ENGINES
    model_path: Path
    model: str  # the friendly name
    alias: str  # another name the model answers to
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def rkllm(self) -> bool:
        return self.engine != "llama"

    @property
    def format(self) -> str:
        return "rkllm" if self.rkllm else "gguf"


def rkllm_sim_paths() -> list[Path]:
    """`make rkllm-sim`'s output: the ABI 1.2 library, the ABI 1.3 library, then the models."""
    v = os.environ.get("ROCKCHIP_LLAMA_TEST_RKLLM")
    if not v:
        v = subprocess.run(
            ["make", "-s", "--no-print-directory", "-C", str(ROOT), "rkllm-sim"],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ).stdout.replace("\n", ":")
    return [Path(p) for p in v.split(":") if p]


def engine_setup(engine: str | None = None) -> EngineSetup:
    """The setup for `engine` (default $COMPAT_ENGINE, else llama)."""
    engine = engine or os.environ.get("COMPAT_ENGINE") or "llama"
    if engine not in ENGINES:
        raise AgentError(f"COMPAT_ENGINE={engine}: expected one of {', '.join(ENGINES)}")
    if engine == "llama":
        return EngineSetup(engine, default_model_path(), DEFAULT_MODEL, "smollm2:135m")
    paths = rkllm_sim_paths()
    lib = paths[0] if engine == "rkllm-1.2" else paths[1]
    model = next(p for p in paths[2:] if p.name.startswith("Qwen3-0.6B-sim_w8a8_rk3588"))
    return EngineSetup(
        engine,
        model,
        "qwen3-0.6b-sim",
        model.stem,  # a model also answers to its file name without the extension
        ["--engine", "rkllm", "--rkllm-lib", str(lib)],
        {"RKLLM_SIM_SPEEDUP": "20"},  # the simulator at 20x the vendor's speed
    )


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
        env: dict[str, str] | None = None,
    ):
        self.binary = Path(binary)
        self.model_path = Path(model_path).resolve()
        self.workdir = Path(workdir)
        self.extra_args = list(extra_args or [])
        self.default_model = default_model
        self.env = dict(env or {})
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
            raise AgentError(
                f"model {self.model_path} not found (hack/fetch-models.sh smollm2, make rkllm-sim)"
            )
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
                env={**os.environ, "RUST_BACKTRACE": "1", **self.env},
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
