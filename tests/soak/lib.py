"""Helpers of the soak (tests/soak/run.py): the cluster's addresses, plain HTTP (whole answers,
streams, and connections cut on purpose), the API server over its own client certificate,
Prometheus text, and /proc samples. Stdlib only, every call bounded by a timeout.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
NS = "default"  # the ModelDeployments' namespace
LEASE_NS = "rockchip-llama"  # the boards' and the operator's Leases
GROUP = "/apis/rockchipllama.io/v1alpha1"


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Failed(Exception):
    """A check failed; run.py prints it with the cluster's state and exits 1."""


def wait_for(what: str, cond: Callable[[], Any], timeout: float, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(every)
    raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")


# === the cluster =================================================================================

@dataclass
class Cluster:
    """What `hack/testcluster.sh up --boards N` printed, plus its directory's files."""
    dir: Path
    gateway: str
    origin: str
    origin_dir: Path
    token: str
    boards: dict[str, str]  # name -> base URL
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_up(cls, path: str) -> "Cluster":
        lines = Path(path).read_text().splitlines()
        env = dict(ln.split("=", 1) for ln in lines if "=" in ln)
        d = Path(env["KUBECONFIG"]).parent
        cenv = dict(ln.split("=", 1) for ln in (d / "env").read_text().splitlines() if "=" in ln)
        return cls(dir=d, gateway=env["GATEWAY"], origin=env["ORIGIN"], origin_dir=Path(env["ORIGIN_DIR"]),
                   token=Path(env["CLUSTER_TOKEN_FILE"]).read_text().strip(),
                   boards={ln.split()[1]: ln.split()[2] for ln in lines if ln.startswith("BOARD ")}, env=cenv)

    def testcluster(self, *args: str, timeout: float = 180) -> None:
        subprocess.run([str(ROOT / "hack" / "testcluster.sh"), *args], check=True, timeout=timeout,
                       env={**os.environ, "TESTCLUSTER_DIR": str(self.dir)}, stdout=subprocess.DEVNULL)

    def board_pid(self, name: str) -> int:
        return int((self.dir / "boards" / name / "pid").read_text())

    def pid_of(self, binary_suffix: str) -> int:
        """The newest PID testcluster.sh (or apiserver_restart) recorded for a binary."""
        pid = 0
        for ln in (self.dir / "pids").read_text().splitlines():
            p, b = ln.split(" ", 1)
            if b.endswith(binary_suffix):
                pid = int(p)
        return pid

    # --- the API server, with the admin client certificate testcluster.sh generated ---
    def kube(self, path: str, method: str = "GET", body: Any = None, timeout: float = 10) -> Any:
        ctx = ssl.create_default_context(cafile=str(self.dir / "pki" / "serving-ca.crt"))
        ctx.load_cert_chain(str(self.dir / "pki" / "admin.crt"), str(self.dir / "pki" / "admin.key"))
        conn = http.client.HTTPSConnection(self.env.get("APISERVER_HOST", "127.0.0.1"),
                                           int(self.env["APISERVER_PORT"]), context=ctx, timeout=timeout)
        try:
            headers = {"accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["content-type"] = ("application/merge-patch+json" if method == "PATCH"
                                           else "application/json")
            conn.request(method, path, data, headers)
            r = conn.getresponse()
            raw = r.read()
            if r.status >= 300:
                raise OSError(f"{method} {path}: {r.status} {raw[:200]!r}")
            return json.loads(raw)
        finally:
            conn.close()

    def try_kube(self, path: str) -> Any:
        try:
            return self.kube(path)
        except (OSError, ValueError):
            return None

    def md(self, name: str) -> dict:
        return self.try_kube(f"{GROUP}/namespaces/{NS}/modeldeployments/{name}") or {}

    def placements(self, md: str) -> dict[str, dict]:
        return {p["board"]: p for p in (self.md(md).get("status") or {}).get("placements") or []}

    def boards_obj(self) -> list[dict]:
        return (self.try_kube(f"{GROUP}/boards") or {}).get("items", [])

    def leases(self) -> list[dict]:
        return (self.try_kube(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases") or {}).get("items", [])

    def apply_md(self, name: str, spec: dict) -> None:
        doc = {"apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
               "metadata": {"name": name, "namespace": NS}, "spec": spec}
        subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(doc), text=True, check=True,
                       capture_output=True, timeout=60, env={**os.environ, "KUBECONFIG": str(self.dir / "kubeconfig")})

    def ready_replicas(self, md: str) -> int:
        o = self.md(md)
        st = o.get("status") or {}
        if st.get("observedGeneration") != (o.get("metadata") or {}).get("generation"):
            return -1
        return st.get("readyReplicas") or 0

    # --- the boards' own view ---
    def load(self, board: str) -> dict[str, dict] | None:
        """`/internal/v1/load`: running, waiting and slots per resident model; None if unreachable."""
        r = call("GET", f"{self.boards[board]}/internal/v1/load", key=self.token, timeout=5)
        return {m["name"]: m for m in (r.json() or {}).get("models", [])} if r.status == 200 else None


# === HTTP ========================================================================================

class Resp:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, started: bool = False):
        self.status, self.headers, self.body = status, headers, body
        # Whether the answer had begun reaching the client (status line received) when it ended.
        self.started = started

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def _conn(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout), u.path or "/"


def call(method: str, url: str, body: Any = None, key: str | None = None, timeout: float = 120,
         headers: dict | None = None) -> Resp:
    """One request on a fresh connection, the whole answer read. Status 0 = the connection failed
    (the message is the body)."""
    conn, path = _conn(url, timeout)
    started = False
    try:
        h = {"content-type": "application/json", **(headers or {})}
        if key:
            h["authorization"] = f"Bearer {key}"
        conn.request(method, path, json.dumps(body).encode() if body is not None else None, h)
        r = conn.getresponse()
        started = True
        raw = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, raw, started)
    except (OSError, http.client.HTTPException) as e:
        return Resp(0, {}, f"{type(e).__name__}: {e}".encode(), started)
    finally:
        conn.close()


def chat_body(model: str, text: str, max_tokens: int, stream: bool = False) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "temperature": 0, "seed": 1126, "stream": stream}


def stream_text(body: bytes) -> tuple[str, bool]:
    """The content of an OpenAI SSE answer and whether it ended with [DONE]."""
    out, done = [], False
    for ln in body.decode(errors="replace").splitlines():
        if not ln.startswith("data: "):
            continue
        data = ln[6:].strip()
        if data == "[DONE]":
            done = True
            continue
        try:
            delta = json.loads(data)["choices"][0].get("delta") or {}
        except (ValueError, KeyError, IndexError):
            continue
        out.append(delta.get("content") or "")
    return "".join(out), done


def answer_ok(r: Resp, stream: bool) -> bool:
    """200 and a complete answer: `[DONE]` for a stream, a choice for a whole answer."""
    if r.status != 200:
        return False
    if stream:
        return stream_text(r.body)[1]
    return bool(((r.json() or {}).get("choices") or [None])[0])


def disconnect(url: str, body: dict, key: str | None, rng: random.Random, timeout: float = 30) -> str:
    """Sends a request and goes away at a random point; returns where. Half the time the socket
    is reset (SO_LINGER 0: RST) rather than closed (FIN).

      sent-part   headers and part of the body, then gone (the server is still reading it)
      queued      the whole request, gone after 0-300 ms (waiting for a slot, or in prefill)
      mid-stream  a stream, gone after 1-12 of its chunks
      waiting     a whole (non-stream) answer, gone after 0.1-1.5 s of generation
    """
    u = urllib.parse.urlsplit(url)
    raw = json.dumps({**body, "stream": True}).encode()
    how = rng.choice(["sent-part", "queued", "mid-stream", "mid-stream", "waiting"])
    if how == "waiting":
        raw = json.dumps({**body, "stream": False}).encode()
    head = (f"POST {u.path} HTTP/1.1\r\nhost: {u.hostname}:{u.port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(raw)}\r\n" + (f"authorization: Bearer {key}\r\n" if key else "") + "\r\n").encode()
    s = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        if how == "sent-part":
            s.sendall(head + raw[: rng.randrange(0, max(1, len(raw) - 1))])
            time.sleep(rng.uniform(0, 0.2))
        else:
            s.sendall(head + raw)
            if how == "queued":
                time.sleep(rng.uniform(0, 0.3))
            elif how == "waiting":
                time.sleep(rng.uniform(0.1, 1.5))
            else:
                want, seen, buf = rng.randint(1, 12), 0, b""
                while seen < want:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                    seen = buf.count(b"data: ")
        if rng.random() < 0.5:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # the server may refuse (429) or close first: still a client gone
    finally:
        s.close()
    return how


# === metrics and /proc ===========================================================================

def prom(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    want = [f'{k}="{v}"' for k, v in (labels or {}).items()]
    total = 0.0
    for ln in text.splitlines():
        if ln.startswith(name + "{") or ln.startswith(name + " "):
            if all(w in ln for w in want):
                total += float(ln.rsplit(" ", 1)[1])
    return total


def metrics(url: str, key: str | None = None) -> str:
    r = call("GET", f"{url}/metrics", key=key, timeout=5)
    return r.body.decode(errors="replace") if r.status == 200 else ""


def proc_sample(pid: int) -> dict[str, int] | None:
    """VmRSS (and its anonymous and file-backed parts, KiB), Threads and open file descriptors of a
    process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    out = {"fds": fds}
    for ln in status.splitlines():
        k, _, v = ln.partition(":")
        if k == "VmRSS":
            out["rss_kib"] = int(v.split()[0])
        elif k == "RssAnon":  # heap and stacks: where a leak shows
            out["anon_kib"] = int(v.split()[0])
        elif k == "RssFile":  # mapped files (the binary, an mmap'd GGUF): move with the page cache
            out["file_kib"] = int(v.split()[0])
        elif k == "Threads":
            out["threads"] = int(v)
    return out


class Sampler(threading.Thread):
    """Samples named processes every `every` seconds until stopped: [(t, {name: sample})]."""

    def __init__(self, pids: dict[str, int], every: float):
        super().__init__(daemon=True)
        self.pids, self.every = pids, every
        self.samples: list[tuple[float, dict[str, dict]]] = []
        self._stop_ev = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self._stop_ev.is_set():
            t = time.monotonic() - self.t0
            self.samples.append((t, {n: proc_sample(p) for n, p in self.pids.items()}))
            self._stop_ev.wait(self.every)

    def stop(self) -> None:
        self._stop_ev.set()
        self.join(timeout=10)


def in_threads(fns: list[Callable[[], Any]], timeout: float) -> list[Any]:
    """Runs each function on its own thread; results in order (None if one did not finish)."""
    out: list[Any] = [None] * len(fns)

    def run(i: int) -> None:
        out[i] = fns[i]()

    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(fns))]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for t in ts:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    return out


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
