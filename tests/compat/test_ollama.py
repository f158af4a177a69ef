"""The official `ollama` Python client against a live agent (Ollama-compatible routes under /api),
or against an external server such as the gateway (COMPAT_URL, conftest.py): the tests marked
`local_agent` need the suite's own agent and are skipped there."""

from __future__ import annotations

import json
import os

import ollama
import pytest
from ollama._types import ProgressResponse

MSGS = [{"role": "user", "content": "What is 2+2?"}]
LONG = [{"role": "user", "content": "Count from 1 to 100, one number per line."}]
OPTS = {"num_predict": 32, "temperature": 0}


def names(models) -> set[str]:
    return {m.model for m in models}


def is_model(name: str, model: str) -> bool:
    """Ollama spells names with a tag; `smollm2-135m-instruct` and `...:latest` are the same."""
    return name in (model, model + ":latest")


def assert_done_counts(r, num_predict: int):
    assert r.done is True
    assert r.done_reason in ("stop", "length"), r.done_reason
    assert r.prompt_eval_count and r.prompt_eval_count > 0
    assert r.eval_count and 0 < r.eval_count <= num_predict
    if r.done_reason == "length":
        assert r.eval_count == num_predict
    assert r.total_duration and r.total_duration > 0
    assert r.eval_duration and r.eval_duration > 0
    assert r.load_duration is None or r.load_duration >= 0


# --- list / show / ps / version -------------------------------------------------------------


def test_list(oll, model, model_file, engine, request):
    """The model is listed once (a server may list others: the gateway adds aliases and `meta`).
    Against the suite's own agent its file is known, so size and digest are checked exactly."""
    models = oll.list().models
    mine = [m for m in models if is_model(m.model, model)]
    assert len(mine) == 1, names(models)
    m = mine[0]
    if model_file is not None:
        assert m.size == os.path.getsize(model_file)
    else:
        assert m.size and m.size > 0, m
    assert m.modified_at is not None
    assert m.details is not None
    assert m.details.format == engine.format
    if engine.rkllm:
        # quantisation from the vendor's file-name convention; the simulated files have no
        # catalog entry, so no digest and no family
        assert m.details.quantization_level == "W8A8"
    else:
        if model_file is not None:
            model_sha256 = request.getfixturevalue("model_sha256")
            assert m.digest and model_sha256 in m.digest, m.digest
        assert m.details.family == "llama"
        assert m.details.quantization_level == "Q4_1"


def test_show(oll, model, engine):
    s = oll.show(model)
    assert s.details.format == engine.format
    assert s.modelinfo is not None, "model_info missing"
    assert s.capabilities is None or "completion" in s.capabilities
    if engine.rkllm:
        # a .rkllm file's metadata and chat template stay inside the runtime (no API reads them)
        assert s.modelinfo.get("general.architecture") == "rkllm", dict(s.modelinfo)
    else:
        assert s.details.family == "llama"
        assert s.modelinfo.get("general.architecture") == "llama", dict(s.modelinfo)
        assert s.template, "chat template missing"


def test_show_alias(oll, alias, engine):
    assert oll.show(alias).details.format == engine.format


def test_show_unknown_is_404(oll):
    with pytest.raises(ollama.ResponseError) as e:
        oll.show("no-such-model")
    assert e.value.status_code == 404


@pytest.mark.local_agent("/api/ps lists what one agent has loaded")
def test_ps_lists_loaded_model(oll, model):
    oll.generate(model=model, prompt="Hi", options={"num_predict": 1, "temperature": 0})
    running = oll.ps().models
    mine = [m for m in running if is_model(m.model or m.name or "", model)]
    assert mine, [m.model for m in running]
    assert mine[0].size and mine[0].size > 0
    assert mine[0].expires_at is not None


def test_version(hx):
    r = hx.get("/api/version")
    assert r.status_code == 200
    v = r.json()["version"]
    assert isinstance(v, str) and v


# --- chat -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_reference(oll, model):
    return oll.chat(model=model, messages=MSGS, options=OPTS)


def test_chat(chat_reference, model, rkllm):
    r = chat_reference
    assert is_model(r.model, model), r.model
    assert r.created_at
    assert r.message.role == "assistant"
    assert r.message.content.strip()
    if not rkllm:  # rkllm-sim answers with words, not arithmetic
        assert "4" in r.message.content
    assert_done_counts(r, 32)


def test_chat_num_predict_gives_length(oll, model):
    r = oll.chat(model=model, messages=LONG, options={"num_predict": 3, "temperature": 0})
    assert r.done_reason == "length"
    assert r.eval_count == 3


def test_chat_stream(oll, model, chat_reference):
    parts = list(oll.chat(model=model, messages=MSGS, options=OPTS, stream=True))
    assert len(parts) >= 2
    *body, last = parts
    for p in body:
        assert p.done is False
        assert p.message.role == "assistant"
        assert is_model(p.model, model)
    assert_done_counts(last, 32)
    text = "".join(p.message.content for p in parts)
    assert text == chat_reference.message.content
    assert last.prompt_eval_count == chat_reference.prompt_eval_count
    assert last.eval_count == chat_reference.eval_count
    assert last.done_reason == chat_reference.done_reason


def test_chat_format_json(oll, model):
    r = oll.chat(
        model=model,
        messages=[{"role": "user", "content": "What is 2+2? Answer in JSON."}],
        format={
            "type": "object",
            "properties": {"answer": {"type": "integer"}},
            "required": ["answer"],
        },
        options={"num_predict": 48, "temperature": 0},
    )
    assert r.done_reason == "stop", r
    assert isinstance(json.loads(r.message.content)["answer"], int)


def test_chat_unknown_model_is_404(oll):
    with pytest.raises(ollama.ResponseError) as e:
        oll.chat(model="no-such-model", messages=MSGS, options={"num_predict": 2})
    assert e.value.status_code == 404
    assert e.value.error


# --- generate -------------------------------------------------------------------------------


def test_generate(oll, model):
    opts = {"num_predict": 16, "temperature": 0}
    r = oll.generate(model=model, prompt="Once upon a time", options=opts)
    assert is_model(r.model, model)
    assert isinstance(r.response, str) and r.response
    assert_done_counts(r, 16)

    parts = list(oll.generate(model=model, prompt="Once upon a time", options=opts, stream=True))
    *body, last = parts
    assert all(p.done is False for p in body)
    assert_done_counts(last, 16)
    assert "".join(p.response for p in parts) == r.response
    assert last.prompt_eval_count == r.prompt_eval_count


def test_generate_raw_length(oll, model):
    r = oll.generate(
        model=model, prompt="1, 2, 3, 4, 5,", raw=True, options={"num_predict": 3, "temperature": 0}
    )
    assert r.done_reason == "length"
    assert r.eval_count == 3


def test_generate_empty_prompt_loads_model(oll, model):
    """Ollama semantics: an empty prompt only loads the model and returns done at once."""
    r = oll.generate(model=model, prompt="")
    assert r.done is True
    assert r.response == ""


# --- pull / delete --------------------------------------------------------------------------


def pull_url(oll, name: str, url: str, sha256: str, stream: bool):
    body = {"model": name, "url": url, "sha256": sha256, "stream": stream}
    # ollama's Client.pull() sends only the model name; the agent's URL form carries more fields,
    # so go through the client's own request/stream/error path with the full body.
    return oll._request(ProgressResponse, "POST", "/api/pull", json=body, stream=stream)


@pytest.mark.local_agent("pulls into and deletes from the agent's models dir")
def test_pull_by_url_then_delete(oll, model, model_origin, model_sha256, model_path, engine):
    model_size = os.path.getsize(model_path)
    name = "pulled-model:test"
    url = model_origin + "/origin-a" + model_path.suffix
    try:
        progress = list(pull_url(oll, name, url, model_sha256, stream=True))
        assert progress, "no progress lines"
        assert progress[-1].status == "success", [p.status for p in progress]
        totals = [p for p in progress if p.total]
        assert totals, "no download progress"
        assert totals[-1].completed == totals[-1].total == model_size

        listed = names(oll.list().models)
        assert name in listed, listed
        assert oll.show(name).details.format == engine.format
        r = oll.generate(model=name, prompt="Hi", options={"num_predict": 2, "temperature": 0})
        assert r.done and r.eval_count > 0

        # pulling the same thing again is idempotent, also without streaming
        assert pull_url(oll, name, url, model_sha256, stream=False).status == "success"

        oll.delete(name)
        listed = names(oll.list().models)
        assert name not in listed, listed
        # the default model (same bytes, other name) survives the delete
        assert any(is_model(n, model) for n in listed), listed
        with pytest.raises(ollama.ResponseError) as e:
            oll.delete(name)
        assert e.value.status_code == 404
    finally:
        for n in names(oll.list().models):
            if not is_model(n, model):  # leave the store as the other tests expect it
                try:
                    oll.delete(n)
                except ollama.ResponseError:
                    pass


@pytest.mark.local_agent("pulls into the agent's models dir from a loopback origin")
def test_pull_wrong_sha256_fails(oll, model, model_origin, model_path):
    name = "pulled-bad-sha:test"
    url = model_origin + "/origin-b" + model_path.suffix
    with pytest.raises(ollama.ResponseError):
        list(pull_url(oll, name, url, "0" * 64, stream=True))
    listed = names(oll.list().models)
    assert all(is_model(n, model) for n in listed), f"a failed pull left {listed}"


@pytest.mark.local_agent("pulls are an agent's (the cluster places models by ModelDeployment)")
def test_pull_unknown_catalog_name_fails(oll):
    with pytest.raises(ollama.ResponseError) as e:
        oll.pull("no-such-model-in-catalog")
    assert 400 <= e.value.status_code < 500


# --- plain HTTP as Ollama's own docs use it -------------------------------------------------


def test_post_like_curl_d(hx, model):
    """Ollama's API docs use `curl URL -d '{...}'`: a JSON body sent as form-urlencoded."""
    body = {"model": model, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}
    r = hx.post(
        "/api/generate",
        content=json.dumps(body),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["done"] is True


def test_embed(oll, model):
    r = oll.embed(model=model, input=["why is the sky blue?", "why is grass green?"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == len(r.embeddings[1]) > 0
    assert abs(sum(x * x for x in r.embeddings[0]) - 1.0) < 1e-3, "L2-normalised"
    assert r.prompt_eval_count > 0
