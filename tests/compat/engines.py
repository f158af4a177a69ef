"""Which engine the compat suite runs the agent on, and what it may expect of that engine's model.

The agent itself is started by the launcher shared with the fuzz smoke and the bench,
hack/py/agentproc.py (on sys.path through `pythonpath` in pytest.ini).

COMPAT_ENGINE picks the engine under test (`engine_setup()`): `llama` (default, SmolLM2 on
llama.cpp) or `rkllm-1.2` / `rkllm-1.3` (the simulated Qwen3 0.6B on rkllm-sim built for that
runtime ABI; paths from `make rkllm-sim`, or $ROCKCHIP_LLAMA_TEST_RKLLM as the Rust tests take them).

Against an external server (COMPAT_URL, conftest.py) no file is needed: `external_setup()` names
the model and says which of these models it is, so the checks that depend on the model apply.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from agentproc import DEFAULT_MODEL, ROOT, default_model_path

ENGINES = ("llama", "rkllm-1.2", "rkllm-1.3")

# The name and alias the suite's own agent serves each engine's model under.
LLAMA_MODEL, LLAMA_ALIAS = DEFAULT_MODEL, "smollm2:135m"
RKLLM_MODEL = "qwen3-0.6b-sim"  # its alias is the file name without the extension


class EngineError(RuntimeError):
    pass


@dataclass(frozen=True)
class EngineSetup:
    """How to run the agent on one engine, and what the suites may expect of its model."""

    engine: str  # a value of ENGINES
    model_path: Path | None  # None: the model is on an external server (COMPAT_URL)
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


def engine_name(engine: str | None = None) -> str:
    """`engine`, else $COMPAT_ENGINE, else llama; checked against ENGINES."""
    engine = engine or os.environ.get("COMPAT_ENGINE") or "llama"
    if engine not in ENGINES:
        raise EngineError(f"COMPAT_ENGINE={engine}: expected one of {', '.join(ENGINES)}")
    return engine


def engine_setup(engine: str | None = None) -> EngineSetup:
    """The setup for `engine` (default $COMPAT_ENGINE, else llama)."""
    engine = engine_name(engine)
    if engine == "llama":
        return EngineSetup(engine, default_model_path(), LLAMA_MODEL, LLAMA_ALIAS)
    paths = rkllm_sim_paths()
    lib = paths[0] if engine == "rkllm-1.2" else paths[1]
    model = next(p for p in paths[2:] if p.name.startswith("Qwen3-0.6B-sim_w8a8_rk3588"))
    return EngineSetup(
        engine,
        model,
        RKLLM_MODEL,
        model.stem,  # a model also answers to its file name without the extension
        ["--engine", "rkllm", "--rkllm-lib", str(lib)],
        {"RKLLM_SIM_SPEEDUP": "20"},  # the simulator at 20x the vendor's speed
    )


def external_setup(
    model: str | None = None, alias: str | None = None, engine: str | None = None
) -> EngineSetup:
    """An external server's model (COMPAT_URL): no file, no flags. `engine` says which model it is
    (llama: SmolLM2 135M Instruct Q4_1, as `hack/fetch-models.sh smollm2` fetches it; rkllm-*: the
    simulated Qwen3 0.6B). `model` defaults to the name the suite's own agent uses for it; `alias`
    to that agent's alias when `model` is that name (llama only: rkllm-sim's alias is its file name),
    else to `model` itself: an unknown alias is not guessed."""
    engine = engine_name(engine)
    own_model, own_alias = (LLAMA_MODEL, LLAMA_ALIAS) if engine == "llama" else (RKLLM_MODEL, None)
    model = model or own_model
    if not alias:
        alias = own_alias if (own_alias and model == own_model) else model
    return EngineSetup(engine, None, model, alias)
