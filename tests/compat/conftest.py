"""One live agent for the whole session, plus the official clients pointed at it; or, with
COMPAT_URL, the clients pointed at a server that is already running (the cluster gateway, or an
agent started by hand), and no agent of the suite's own.

Inputs (all optional; hack/test-compat.sh sets the first three):
  AGENT_BIN   the agent binary (default $CARGO_TARGET_DIR/release/rockchip-llama-agent)
  MODEL_PATH  the SmolLM2 GGUF (default: first line of `hack/fetch-models.sh smollm2`)
  COMPAT_ENGINE  llama (default) | rkllm-1.2 | rkllm-1.3: the engine under test; the RKLLM ones
              serve the simulated Qwen3 0.6B through rkllm-sim (engines.engine_setup). With
              COMPAT_URL it says which model the server has, for the checks that depend on it
              (llama: SmolLM2 135M Instruct Q4_1; rkllm-*: the simulated Qwen3)
  COMPAT_KEEP_TMP=1  keep the agent's temp dir (models dir, log) after the run
  COMPAT_API_KEY  bearer key sent by the openai and ollama clients and by httpx (default: none;
              the openai client then sends its placeholder `sk-local`, which a keyless agent ignores)

External mode (hack/test-compat-external.sh URL MODEL [API_KEY] sets these):
  COMPAT_URL    base URL of a running server, e.g. http://127.0.0.1:8080 (no /v1). The suite starts
              no agent, and skips the tests marked `local_agent` (pytest.ini): those need the
              suite's own agent — its model file, models dir, pulls and deletes, its loaded models.
              Every test of the client APIs runs: models, tags, show, version, chat (streamed and
              not), completions/generate, embeddings, tools, structured output, errors.
  COMPAT_MODEL  the model name to use (default: the one the suite's agent serves for
              COMPAT_ENGINE, smollm2-135m-instruct for llama)
  COMPAT_ALIAS  another name the server answers to for that model (default: the suite's alias,
              smollm2:135m, when COMPAT_MODEL is the default llama model, else COMPAT_MODEL itself,
              so the alias tests then check only the rest)
  COMPAT_MODEL and COMPAT_ALIAS without COMPAT_URL are a usage error: the suite's own agent serves
  its model under its own names.

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
from engines import EngineSetup, engine_setup, external_setup

# Per-request client timeout, s: a backstop for a hung request, not the bound (max_tokens is). Below
# the per-test backstop (pytest.ini `timeout`, COMPAT_TIMEOUT) so a hang names the request.
CLIENT_TIMEOUT = 300

# External mode: the server under test, without a trailing slash; None: the suite starts its agent.
EXTERNAL_URL = os.environ.get("COMPAT_URL", "").strip().rstrip("/") or None
API_KEY = os.environ.get("COMPAT_API_KEY") or None

_agent: Agent | None = None


def pytest_configure(config):
    if EXTERNAL_URL is None:
        for var in ("COMPAT_MODEL", "COMPAT_ALIAS"):
            if os.environ.get(var):
                raise pytest.UsageError(
                    f"{var} is read only with COMPAT_URL (an external server); the suite's own "
                    "agent serves its model under its own names"
                )


def pytest_report_header(config):
    if EXTERNAL_URL is not None:
        e = _engine()
        return (
            f"compat: external server {EXTERNAL_URL}, model {e.model} (alias {e.alias}, "
            f"engine {e.engine}), API key {'set' if API_KEY else 'none'}; "
            "tests marked local_agent are skipped"
        )
    return None


def pytest_collection_modifyitems(config, items):
    """External mode: the tests that need the suite's own agent are skipped, each with its reason."""
    if EXTERNAL_URL is None:
        return
    for item in items:
        mark = item.get_closest_marker("local_agent")
        if mark is not None:
            why = mark.args[0] if mark.args else "needs the suite's own agent"
            item.add_marker(pytest.mark.skip(reason=f"local_agent: {why} (COMPAT_URL is set)"))


@functools.cache
def _engine() -> EngineSetup:
    if EXTERNAL_URL is None:
        return engine_setup()
    return external_setup(os.environ.get("COMPAT_MODEL"), os.environ.get("COMPAT_ALIAS"))


def _not_external(what: str) -> None:
    """A test that reaches the suite's own agent or its model file must be marked local_agent."""
    if EXTERNAL_URL is not None:
        pytest.fail(
            f"{what} exists only when the suite starts its own agent; mark this test "
            "@pytest.mark.local_agent(...) so COMPAT_URL skips it",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def engine() -> EngineSetup:
    return _engine()


@pytest.fixture(scope="session")
def rkllm(engine: EngineSetup) -> bool:
    """The suite runs on the NPU engine (rkllm-sim): its answers are deterministic word lists."""
    return engine.rkllm


@pytest.fixture(scope="session")
def model_file(engine: EngineSetup) -> Path | None:
    """The file the suite's agent serves; None against an external server (its files are its own)."""
    return engine.model_path.resolve() if engine.model_path is not None else None


@pytest.fixture(scope="session")
def model_path(model_file: Path | None) -> Path:
    _not_external("the model file")
    return model_file


@pytest.fixture(scope="session")
def agent(engine: EngineSetup, model_path: Path):
    global _agent
    _not_external("the agent process")
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
def base_url(request) -> str:
    if EXTERNAL_URL is None:
        return request.getfixturevalue("agent").base_url
    # One probe, so an unreachable server or a refused key reads as that, not as N client errors.
    try:
        r = httpx.get(EXTERNAL_URL + "/v1/models", headers=_auth_headers(), timeout=30)
    except httpx.HTTPError as e:
        pytest.fail(f"COMPAT_URL {EXTERNAL_URL} does not answer: {e!r}", pytrace=False)
    if r.status_code in (401, 403):
        pytest.fail(
            f"COMPAT_URL {EXTERNAL_URL} refused the suite's key ({r.status_code}; COMPAT_API_KEY "
            f"is {'set' if API_KEY else 'unset'}): {r.text[:200]}",
            pytrace=False,
        )
    return EXTERNAL_URL


def _auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}


@pytest.fixture(scope="session")
def oai(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=base_url + "/v1",
        api_key=API_KEY or "sk-local",
        max_retries=0,
        timeout=CLIENT_TIMEOUT,
    )


@pytest.fixture(scope="session")
def oll(base_url: str) -> ollama.Client:
    return ollama.Client(host=base_url, timeout=CLIENT_TIMEOUT, headers=_auth_headers() or None)


@pytest.fixture(scope="session")
def hx(base_url: str):
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT, headers=_auth_headers()) as c:
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
