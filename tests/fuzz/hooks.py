"""Schemathesis hooks for hack/fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

Fuzzing an LLM server is only cheap while every generation is short, so right before each request
the token budget is clamped: OpenAI `max_tokens` / `max_completion_tokens` and Ollama
`options.num_predict` are set to TOKEN_CAP when they are absent, null or a larger integer
(or, for num_predict, negative: Ollama's "unbounded"), and `n` to 1.
Values of the wrong type or sign are left alone: rejecting them (4xx, not 5xx, not a hang) is
part of what is being tested.

Random model names would make nearly every generation request a cheap 404, so a string `model`
(body field or path parameter) is replaced by FUZZ_MODEL in 7 cases out of 8 (chosen by a hash of
the generated name, so a seed still reproduces a run); unknown names stay covered by the rest.

This runs in `before_call`, so it applies in every phase (examples, coverage, fuzzing), whatever
bounds the agent's own OpenAPI document declares.
"""

from __future__ import annotations

import os
import zlib

import schemathesis

TOKEN_CAP = int(os.environ.get("FUZZ_TOKEN_CAP", "8"))
# Prompt text is capped too: a generated 10k-character message costs seconds of prefill on 2 cores
# and tests nothing a 256-character one does not (the prompt-too-long path has its own Rust test).
TEXT_CAP = int(os.environ.get("FUZZ_TEXT_CAP", "256"))
MODEL = os.environ.get("FUZZ_MODEL", "smollm2-135m-instruct")

OPENAI_GENERATE = ("/v1/chat/completions", "/v1/completions")
OLLAMA_GENERATE = ("/api/chat", "/api/generate")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _cap(obj: dict, key: str, add_missing: bool) -> None:
    v = obj.get(key)
    if v is None:  # absent or null: the server default may be "until the context is full"
        if add_missing or key in obj:
            obj[key] = TOKEN_CAP
    elif _is_int(v) and v > TOKEN_CAP:
        obj[key] = TOKEN_CAP


def _real_model(name: str) -> str:
    # crc32("") is 0, so "" (which the coverage phase sends a lot) maps to the real model
    return name if zlib.crc32(name.encode("utf-8", "surrogatepass")) % 8 == 1 else MODEL


def _shorten(v):
    """Truncates every string in a JSON value to TEXT_CAP characters."""
    if isinstance(v, str):
        return v[:TEXT_CAP]
    if isinstance(v, list):
        return [_shorten(x) for x in v]
    if isinstance(v, dict):
        return {k: _shorten(x) for k, x in v.items()}
    return v


@schemathesis.hook
def before_call(context, case, kwargs):
    params = case.path_parameters
    if isinstance(params, dict) and isinstance(params.get("model"), str):
        params["model"] = _real_model(params["model"])
    body = case.body
    if not isinstance(body, dict):
        return
    if isinstance(body.get("model"), str):
        body["model"] = _real_model(body["model"])
    path = case.operation.path
    if path in OPENAI_GENERATE or path in OLLAMA_GENERATE:
        for key in ("messages", "prompt", "system"):
            if key in body:
                body[key] = _shorten(body[key])
    if path in OPENAI_GENERATE:
        has_completion_cap = body.get("max_completion_tokens") is not None
        _cap(body, "max_tokens", add_missing=not has_completion_cap)
        _cap(body, "max_completion_tokens", add_missing=False)
        if _is_int(body.get("n")) and body["n"] > 1:
            body["n"] = 1
    elif path in OLLAMA_GENERATE:
        opts = body.get("options")
        if opts is None:
            body["options"] = {"num_predict": TOKEN_CAP}
        elif isinstance(opts, dict):
            v = opts.get("num_predict")
            # Ollama: -1 = unbounded, -2 = fill the context; both would let one case run for minutes
            if v is None or (_is_int(v) and (v > TOKEN_CAP or v < 0)):
                opts["num_predict"] = TOKEN_CAP


STATS = os.environ.get("FUZZ_STATS")


@schemathesis.hook
def after_call(context, case, response):
    """Appends `METHOD PATH STATUS` per request to $FUZZ_STATS, for run.py's summary."""
    if STATS:
        with open(STATS, "a") as f:
            f.write(f"{case.method.upper()} {case.operation.path} {response.status_code}\n")
