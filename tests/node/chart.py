"""The client side of the node tier's chart phase (hack/node/chart-phase.sh): the official
`openai` Python client, run on the host, against the gateway Service's ClusterIP (so through
kube-proxy's rules into an operator pod, and from there to the agent pod on the node).

    python tests/node/chart.py --base-url http://<ClusterIP>:<port>/v1 \
        --model smollm2-135m-instruct=smollm2 --model qwen3-0.6b-sim

For every --model NAME[=ALIAS,...]: /v1/models lists the name and each alias; a chat completion
(non-streamed, temperature 0, at most 16 tokens) through the alias (or the name) answers with
text, for that model, with usage counted; a streamed one yields text in deltas and ends with a
finish reason. Any failure exits 1 saying what. Runs in hack/pyenv.sh's venv (the pinned
`openai` the compat suite uses). Bounded: every request times out after --timeout seconds and is
never retried (a retry would hide a failure).
"""

from __future__ import annotations

import argparse
import sys
import time

import httpx
from openai import OpenAI

PROMPT = [{"role": "user", "content": "What is 2+2? Answer in one short sentence."}]


def log(msg: str) -> None:
    print(f"[chart-client {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg: str) -> None:
    log(f"FAIL - {msg}")
    sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True, help="the gateway's OpenAI base URL (…/v1)")
    ap.add_argument("--model", action="append", required=True, metavar="NAME[=ALIAS,...]")
    ap.add_argument("--timeout", type=float, default=120.0, help="per request, seconds (default 120)")
    args = ap.parse_args()

    # trust_env=False: no proxy from the environment may sit between the host and the ClusterIP.
    client = OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=args.timeout,
                    http_client=httpx.Client(trust_env=False, timeout=args.timeout))

    listed = {m.id for m in client.models.list().data}
    for spec in args.model:
        name, _, aliases = spec.partition("=")
        names = [name, *filter(None, aliases.split(","))]
        missing = [n for n in names if n not in listed]
        if missing:
            fail(f"/v1/models lacks {missing}; it lists {sorted(listed)}")
        ask = names[-1]  # the alias when there is one: the gateway must resolve it

        t0 = time.monotonic()
        r = client.chat.completions.create(model=ask, messages=PROMPT, max_tokens=16, temperature=0)
        text = (r.choices[0].message.content or "").strip() if r.choices else ""
        if not text:
            fail(f"{ask}: empty answer: {r}")
        if r.model != name:
            fail(f"{ask}: answered by model {r.model!r}, want {name!r}")
        if not r.usage or r.usage.completion_tokens < 1 or r.usage.prompt_tokens < 1:
            fail(f"{ask}: usage {r.usage}")
        log(f"ok - {ask}: {text!r} ({r.usage.completion_tokens} tokens, "
            f"{time.monotonic() - t0:.1f} s, finish {r.choices[0].finish_reason})")

        t0 = time.monotonic()
        parts: list[str] = []
        finish = None
        with client.chat.completions.create(model=ask, messages=PROMPT, max_tokens=16, temperature=0,
                                            stream=True) as stream:
            for chunk in stream:
                for c in chunk.choices:
                    parts.append(c.delta.content or "")
                    finish = c.finish_reason or finish
        streamed = "".join(parts).strip()
        if not streamed or sum(1 for p in parts if p) < 2 or finish not in ("stop", "length"):
            fail(f"{ask}: streamed {len(parts)} deltas, text {streamed!r}, finish {finish!r}")
        log(f"ok - {ask} streamed: {sum(1 for p in parts if p)} text deltas, finish {finish} "
            f"({time.monotonic() - t0:.1f} s)")


if __name__ == "__main__":
    main()
