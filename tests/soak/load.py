"""Closed-loop background load for the soak: `clients` threads, each sending one request at a time
until stopped, streams and whole answers alternating, every outcome recorded.

A client that gets anything but 200 (429 above all) waits a little before its next request (a random 0.2-0.5 s, below the
gateway's Retry-After of 1 s): real clients back off, and a client that retried at once would turn
the overload phase into a measurement of how fast the gateway can say 429.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

from lib import Resp, answer_ok, call, chat_body


@dataclass
class Outcome:
    t_start: float  # monotonic
    t_end: float
    status: int
    ok: bool  # 200 and complete
    started: bool  # the status line had arrived (the gateway sends it with the board's first byte)
    stream: bool
    board: str
    retry_after: str  # the Retry-After header of a 429
    detail: str


class Load:
    """`clients` threads POSTing chat completions to `url` until `stop()`."""

    def __init__(self, url: str, model: str, clients: int, max_tokens: int, key: str | None = None,
                 seed: int = 1, label: str = "load", max_requests: int = 1_000_000):
        self.url, self.model, self.key = url, model, key
        self.max_tokens, self.label = max_tokens, label
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._left = max_requests  # a bound on the whole run, whatever the clock says
        self._threads = [threading.Thread(target=self._client, args=(random.Random(seed * 1000 + i), i), daemon=True)
                         for i in range(clients)]

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 180) -> list[Outcome]:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            return list(self.outcomes)

    def _take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def _client(self, rng: random.Random, i: int) -> None:
        n = 0
        while not self._stop.is_set() and self._take():
            stream = (n + i) % 2 == 0
            body = chat_body(self.model, f"{self.label} client {i} request {n}: tell me about harbours.",
                             self.max_tokens, stream=stream)
            t0 = time.monotonic()
            r: Resp = call("POST", f"{self.url}/v1/chat/completions", body, key=self.key, timeout=300)
            ok = answer_ok(r, stream)
            detail = "" if ok else r.body[:160].decode(errors="replace")
            with self._lock:
                self.outcomes.append(Outcome(t0, time.monotonic(), r.status, ok, r.started, stream,
                                             r.headers.get("x-rockchip-llama-board", ""),
                                             r.headers.get("retry-after", ""), detail))
            n += 1
            if r.status != 200:
                self._stop.wait(rng.uniform(0.2, 0.5))


def summary(outs: list[Outcome]) -> dict:
    codes = Counter(o.status for o in outs)
    examples: dict[str, str] = {}
    for o in outs:
        if not o.ok and o.status != 429:
            examples.setdefault(str(o.status), o.detail)
    out = {"requests": len(outs), "ok": sum(o.ok for o in outs),
           "status": {str(k): v for k, v in sorted(codes.items())},
           "incomplete_200": sum(1 for o in outs if o.status == 200 and not o.ok)}
    if examples:
        out["failure_examples"] = examples
    return out
