"""One live agent for the whole session, plus the official clients pointed at it.

Inputs (all optional; hack/test-compat.sh sets the first three):
  AGENT_BIN   the agent binary (default $CARGO_TARGET_DIR/release/rockchip-llama-agent)
  MODEL_PATH  the SmolLM2 GGUF (default: first line of `hack/fetch-models.sh smollm2`)
  COMPAT_ENGINE  llama (default) | rkllm-1.2 | rkllm-1.3: the engine under test; the RKLLM ones
              serve the simulated Qwen3 0.6B through rkllm-sim (engines.engine_setup)
  COMPAT_KEEP_TMP=1  keep the agent's temp dir (models dir, log) after the run

Generations stay short (max_tokens/num_predict <= 48, temperature 0): CI has 2 cores. That is what
bounds a test; its time limits (CLIENT_TIMEOUT here, the per-test `timeout` in pytest.ini, the
agent's readiness wait in hack/py/agentproc.py) are generous backstops, so a machine that is slow
because other work shares its cores does not fail the suite.

The agent is started by hack/py/agentproc.py, the launcher shared with the fuzz smoke and the bench
(pytest.ini puts hack/py on sys.path).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from agentproc import Agent, default_agent_bin
from engines import EngineSetup, engine_setup

# Per-request client timeout, s: a backstop for a hung request, not the bound (max_tokens is). Below
# the per-test backstop (pytest.ini `timeout`, COMPAT_TIMEOUT) so a hang names the request.
CLIENT_TIMEOUT = 300

_agent: Agent | None = None


@pytest.fixture(scope="session")
def engine() -> EngineSetup:
    return engine_setup()


@pytest.fixture(scope="session")
def rkllm(engine: EngineSetup) -> bool:
    """The suite runs on the NPU engine (rkllm-sim): its answers are deterministic word lists."""
    return engine.rkllm


@pytest.fixture(scope="session")
def model_path(engine: EngineSetup) -> Path:
    return engine.model_path.resolve()


@pytest.fixture(scope="session")
def agent(engine: EngineSetup, model_path: Path):
    global _agent
    workdir = Path(tempfile.mkdtemp(prefix="rl-compat-"))
    a = Agent.in_workdir(
        default_agent_bin(),
        model_path,
        workdir,
        extra_args=engine.args,
        default_model=engine.model,
        env=engine.env,
    )
    _agent = a
    try:
        a.start()
        yield a
    finally:
        code = a.stop()
        if code not in (None, 0, -15):
            print(f"\nagent exit code {code} (expected 0 after SIGTERM); log tail:\n{a.log_tail()}")
        if os.environ.get("COMPAT_KEEP_TMP") != "1":
            # keep the log for pytest_terminal_summary; the models dir only holds symlinks
            # and whatever the pull test stored
            shutil.rmtree(a.models_dir, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _agent is None:
        return
    failed = terminalreporter.stats.get("failed", []) + terminalreporter.stats.get("error", [])
    if failed:
        terminalreporter.section("agent log (tail)")
        terminalreporter.write_line(_agent.log_tail(80))
        terminalreporter.write_line(f"(full log: {_agent.log_path})")
    elif os.environ.get("COMPAT_KEEP_TMP") != "1":
        shutil.rmtree(_agent.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def model(engine: EngineSetup) -> str:
    return engine.model


@pytest.fixture(scope="session")
def alias(engine: EngineSetup) -> str:
    return engine.alias


@pytest.fixture(scope="session")
def base_url(agent: Agent) -> str:
    return agent.base_url


@pytest.fixture(scope="session")
def oai(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=base_url + "/v1", api_key="sk-local", max_retries=0, timeout=CLIENT_TIMEOUT
    )


@pytest.fixture(scope="session")
def oll(base_url: str) -> ollama.Client:
    return ollama.Client(host=base_url, timeout=CLIENT_TIMEOUT)


@pytest.fixture(scope="session")
def hx(base_url: str):
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT) as c:
        yield c


@pytest.fixture(scope="session")
def model_sha256(model_path: Path) -> str:
    h = hashlib.sha256()
    with open(model_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="session")
def model_origin(model_path: Path, tmp_path_factory):
    """A loopback HTTP origin serving the model file; yields its base URL.

    The file is published under names of its own (symlinks: origin-a.gguf, origin-b.gguf, or
    .rkllm), so a pull must download it rather than find a same-named file already in the models
    dir, and the stored name has to come from the request's `model`, not from the URL.
    """
    root = tmp_path_factory.mktemp("origin")
    for name in ("origin-a", "origin-b"):
        (root / (name + model_path.suffix)).symlink_to(model_path)
    handler = functools.partial(_QuietHandler, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
