#!/usr/bin/env python3
"""P9: scale from zero (`make bench-cold-start`): time from the first request to the first token
for an autoscaled ModelDeployment with no replica, the model file cached on a board vs not.

    hack/bench/p9_cold_start.py [--samples 5] [--engines cpu,npu] [--out docs/bench]
    hack/bench/p9_cold_start.py --render docs/bench/cold-start.json      (report and plot again)

One private cluster (`hack/testcluster.sh up --boards 2`: kube-apiserver, the operator with its
gateway, an origin serving the test models over loopback, 2 simulated boards) in a temporary
directory, stopped on exit, also on failure, Ctrl-C or SIGTERM. Per engine (cpu: SmolLM2-135M
GGUF on llama.cpp; npu: the Qwen3-0.6B sim .rkllm on rkllm-sim at vendor speed, loading at
VENDOR_LOAD_MB_S), one ModelDeployment with
`autoscaling: {minReplicas: 0, maxReplicas: 1, scaleDownDelay: 2s}` and one streamed chat request
through the gateway per sample (TTFT = first delta with text; total = `[DONE]`):

  warm        a replica is Ready: the baseline.
  cached      scaled to zero (status.autoscaling.desiredReplicas 0, readyReplicas 0, the board's
              entry Cached and the gateway routing to no board); the board keeps the file.
  not cached  the deployment deleted and created again with `replicas: 0`. The boards run with
              `--store-budget 0`, so the agent deletes every blob no entry refers to as soon as
              the entry goes: the file is in no store (checked on disk) and the request pays the
              download from the origin and the load. The origin's request log proves which
              samples downloaded.

Where the time goes, per sample (wall clock on this machine): `kubectl get --watch` on the
deployment (autoscaler decision: desiredReplicas ≥ 1) and the Boards (placement: the entry
`desired: Loaded`; later its status Ready), the agents' JSON logs (`loading`, `loaded`), the
gateway's model view (a Ready replica listed), and the client's first token.

Stdlib only while measuring; the plot uses hack/bench/plots.py (matplotlib from hack/pyenv.sh's
venv). Needs the release agent and operator and `make rkllm-sim` (bench.mk builds them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import testcluster  # noqa: E402
from testcluster import Stop, TestCluster, environment  # noqa: E402

# Assumption, not a measurement: the vendor publishes no load time for .rkllm files. Loading reads
# the whole file into NPU-visible memory, so the board's storage bounds it; 250 MB/s is the
# sequential read class of the eMMC 5.1 modules RK3588 boards ship with (HS400; NVMe is faster,
# SD cards slower). rkllm-sim's init sleeps memory_mb / this (RKLLM_SIM_LOAD_MB_S).
VENDOR_LOAD_MB_S = 250.0
SCALE_DOWN_DELAY = "2s"
NS = "default"
BOARDS = 2
WAIT_S = 120
REQUEST_TIMEOUT_S = 180
PROMPT = "Say hello in five words."
MAX_TOKENS = 8

ENGINES = {
    "cpu": {"title": "SmolLM2-135M GGUF, CPU engine (llama.cpp)", "name": "smollm2", "format": "gguf",
            "file": ".gguf", "spec": {"runtime": {"maxContextLen": 1024}}},
    "npu": {"title": "Qwen3-0.6B sim .rkllm, NPU engine on rkllm-sim at vendor speed", "name": "qwen3-sim", "format": "rkllm",
            "file": "Qwen3-0.6B-sim_w8a8_rk3588.rkllm", "spec": {"socs": ["rk3588"]}},
}
SCENARIOS = ["warm", "cached", "not cached"]
# Phases of a cold start, in order; each ends at the named event.
PHASES = [
    ("autoscaler", "request → desiredReplicas ≥ 1"),
    ("placement", "→ Board entry Loaded"),
    ("download", "→ agent starts loading (fetch + verify when not cached)"),
    ("load", "→ engine loaded"),
    ("reported", "→ the Board's status says Ready"),
    ("routed", "→ the gateway lists the replica as Ready"),
    ("first token", "→ first token at the client (request sent to the board, prefill)"),
]


def log(msg: str) -> None:
    print(f"[cold-start {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_until(what: str, check, timeout: float = WAIT_S, every: float = 0.1):
    return testcluster.wait_until(what, check, timeout, every)


def http_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


# === the cluster ===


class Cluster(TestCluster):
    """The bench's private test cluster (testcluster.py), at the vendor's figures."""

    def __init__(self, work: Path, env: dict[str, str]):
        super().__init__(work, "cluster", BOARDS, env, log)
        for k in ("RKLLM_SIM_PREFILL_MS_PER_TOKEN", "RKLLM_SIM_DECODE_TOK_S", "RKLLM_SIM_BATCH_FACTOR"):
            self.env.pop(k, None)  # vendor figures, not a developer's overrides

    def kubectl_run(self, *args: str, stdin: str | None = None) -> str:
        p = subprocess.run([self.kubectl, *args], input=stdin, env=self.env, text=True, capture_output=True, timeout=60)
        if p.returncode != 0:
            raise subprocess.SubprocessError(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl_run("get", *args, "-o", "json"))

    def source(self, file: str) -> tuple[str, dict]:
        """(file name, ModelDeployment source) of the origin file whose name ends with `file`."""
        sums = dict(line.split()[::-1] for line in (self.origin_dir / "SHA256SUMS").read_text().splitlines())
        name = next(n for n in sums if n.endswith(file))
        return name, {"url": f"{self.origin}/{name}", "sha256": sums[name]}

    def origin_bytes(self, name: str) -> int:
        """Bytes the origin has sent of `name` so far (its request log)."""
        path = self.dir / "logs" / "origin-requests.jsonl"
        total = 0
        for line in path.read_text().splitlines() if path.exists() else []:
            r = json.loads(line)
            if r.get("path") == name:
                total += r.get("sent") or 0
        return total

    def stored_on(self, sha256: str) -> list[str]:
        """Boards whose store holds the blob (complete or partial), looked up on disk."""
        return sorted({p.relative_to(self.dir / "boards").parts[0]
                       for p in (self.dir / "boards").glob(f"*/**/sha256-{sha256}*")})

    def agent_log_lines(self) -> list[dict]:
        """Every JSON line the agents have logged, with the board's name."""
        out = []
        for b in (board["name"] for board in self.boards):
            path = self.dir / "logs" / f"{b}.log"
            for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
                if line.startswith("{"):
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    rec["board"] = b
                    out.append(rec)
        return out


class Watch:
    """`kubectl get <args> --watch -o json` in a thread: every object with the time it arrived."""

    def __init__(self, cluster: Cluster, *args: str):
        self.proc = subprocess.Popen([cluster.kubectl, "get", *args, "--watch", "-o", "json"], env=cluster.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events: list[tuple[float, dict]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        dec = json.JSONDecoder()
        buf = ""
        for chunk in iter(lambda: self.proc.stdout.readline(), ""):
            buf += chunk
            while True:
                buf = buf.lstrip()
                try:
                    obj, end = dec.raw_decode(buf)
                except ValueError:
                    break
                buf = buf[end:]
                with self.lock:
                    self.events.append((time.time(), obj))

    def since(self, t: float) -> list[tuple[float, dict]]:
        with self.lock:
            return [(ts, o) for ts, o in self.events if ts >= t]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# === one request ===


def stream_request(gateway: str, model: str) -> dict:
    """One streamed chat completion through the gateway; times in seconds from sending it."""
    u = urllib.parse.urlsplit(gateway)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=REQUEST_TIMEOUT_S)
    body = json.dumps({"model": model, "stream": True, "max_tokens": MAX_TOKENS, "temperature": 0,
                       "messages": [{"role": "user", "content": PROMPT}]})
    start_wall, t0 = time.time(), time.monotonic()
    out = {"start": start_wall, "status": None, "ttft_s": None, "total_s": None, "keepalives": 0, "error": None,
           "text": ""}
    try:
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        r = conn.getresponse()
        out["status"] = r.status
        out["headers_s"] = time.monotonic() - t0
        if r.status != 200:
            out["error"] = r.read()[:300].decode(errors="replace")
            return out
        while line := r.readline():
            line = line.decode(errors="replace").strip()
            if line.startswith(":"):
                out["keepalives"] += 1
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                out["total_s"] = time.monotonic() - t0
                break
            ev = json.loads(data)
            if "error" in ev:
                out["error"] = json.dumps(ev["error"])[:300]
                break
            for c in ev.get("choices") or []:
                delta = c.get("delta") or {}
                text = (delta.get("content") or "") + (delta.get("reasoning_content") or "")
                if text and out["ttft_s"] is None:
                    out["ttft_s"] = time.monotonic() - t0
                out["text"] += text
    except (OSError, http.client.HTTPException, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    return out


# === the scenarios ===


class Bench:
    def __init__(self, cluster: Cluster, engine: str):
        self.c = cluster
        self.engine = engine
        e = ENGINES[engine]
        self.name = e["name"]
        self.key = f"{NS}/{self.name}"
        self.file, self.source = cluster.source(e["file"])
        self.e = e

    def apply(self, replicas: int, min_replicas: int = 0) -> None:
        spec = {"model": self.name, "format": self.e["format"], "replicas": replicas, "source": self.source,
                "autoscaling": {"minReplicas": min_replicas, "maxReplicas": 1, "scaleDownDelay": SCALE_DOWN_DELAY},
                **self.e["spec"]}
        doc = {"apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
               "metadata": {"name": self.name, "namespace": NS}, "spec": spec}
        self.c.kubectl_run("apply", "-f", "-", stdin=json.dumps(doc))

    def md(self) -> dict:
        return self.c.get("md", self.name, "-n", NS)

    def entries(self) -> dict[str, tuple[str, str | None]]:
        """board → (desired, reported phase) of this deployment's entry."""
        out = {}
        for b in self.c.get("boards")["items"]:
            spec = next((m for m in b["spec"].get("models", []) if m["key"] == self.key), None)
            st = next((m for m in (b.get("status") or {}).get("models", []) if m["key"] == self.key), None)
            if spec or st:
                out[b["metadata"]["name"]] = ((spec or {}).get("desired", "Loaded") if spec else "-",
                                              (st or {}).get("phase"))
        return out

    def gateway_ready(self) -> int | None:
        """Replicas the gateway routes to, None when it does not know the model."""
        try:
            return http_json(f"{self.c.gateway}/v1/models/{self.name}")["meta"]["ready_replicas"]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def wait_ready(self) -> None:
        wait_until(f"{self.name} Ready and routed", lambda: (self.md().get("status") or {}).get("readyReplicas") == 1
                   and self.gateway_ready() == 1)

    def wait_zero(self) -> None:
        """Scaled to zero everywhere: the autoscaler, the status, the board (unloaded, file kept), the gateway."""
        def zero():
            st = self.md().get("status") or {}
            ents = self.entries()
            return ((st.get("autoscaling") or {}).get("desiredReplicas") == 0 and not st.get("readyReplicas")
                    and ents and all(e == ("Cached", "Cached") for e in ents.values())
                    and self.gateway_ready() == 0 and ents)
        wait_until(f"{self.name} scaled to zero", zero, timeout=WAIT_S, every=0.2)

    def reset_uncached(self) -> None:
        """Delete the deployment, wait until no store holds the file, create it again at zero."""
        self.c.kubectl_run("delete", "md", self.name, "-n", NS, "--ignore-not-found", "--wait=true", "--timeout=60s")
        sha = self.source["sha256"]
        wait_until(f"{self.file} evicted from every board", lambda: not self.c.stored_on(sha) and not self.entries())
        self.apply(replicas=0)
        wait_until(f"{self.name} created at zero", lambda: ((self.md().get("status") or {}).get("autoscaling") or {})
                   .get("desiredReplicas") == 0 and self.gateway_ready() == 0, every=0.2)

    def sample(self, scenario: str, md_watch: Watch, board_watch: Watch) -> dict:
        before = self.c.origin_bytes(self.file)
        stored = self.c.stored_on(self.source["sha256"])
        routed: list[float] = []
        done = threading.Event()

        def watch_gateway():
            # When the gateway's model view first lists a Ready replica (polled every 20 ms).
            while not done.is_set() and not routed:
                try:
                    if self.gateway_ready():
                        routed.append(time.time())
                except (OSError, ValueError, KeyError):
                    pass
                done.wait(0.02)

        poller = threading.Thread(target=watch_gateway, daemon=True)
        if scenario != "warm":
            poller.start()
        r = stream_request(self.c.gateway, self.name)
        done.set()
        r["routed_at"] = routed[0] if routed else None
        if r["status"] != 200 or r["error"] or r["ttft_s"] is None or r["total_s"] is None:
            raise RuntimeError(f"{self.engine} {scenario}: request failed: {r}")
        r["downloaded_bytes"] = self.c.origin_bytes(self.file) - before
        r["stored_before"] = stored
        if scenario != "warm":
            # The agent logs 'loaded' just before it reports Ready; wait for its line.
            time.sleep(0.3)
            r["phases"] = self.phases(r, md_watch, board_watch)
        r.pop("text", None)
        return r

    def phases(self, r: dict, md_watch: Watch, board_watch: Watch) -> dict | None:
        """Seconds per phase of one cold start (PHASES), or None if an event was not seen."""
        t0 = r["start"]
        decided = next((ts for ts, o in md_watch.since(t0) if o["metadata"]["name"] == self.name
                        and ((o.get("status") or {}).get("autoscaling") or {}).get("desiredReplicas", 0) >= 1), None)
        placed = next((ts for ts, o in board_watch.since(t0) for m in o["spec"].get("models", [])
                       if m["key"] == self.key and m.get("desired", "Loaded") == "Loaded"), None)
        reported = next((ts for ts, o in board_watch.since(t0) for m in (o.get("status") or {}).get("models", [])
                         if m["key"] == self.key and m.get("phase") == "Ready" and m.get("loaded")), None)
        loading = loaded = None
        for rec in self.c.agent_log_lines():
            f = rec.get("fields") or {}
            if f.get("model") != self.name:
                continue
            ts = dt.datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
            if ts < t0:
                continue
            if f.get("message") == "loading" and loading is None:
                loading = ts
            if f.get("message") == "loaded" and loaded is None:
                loaded = ts
        first = t0 + r["ttft_s"]
        marks = [t0, decided, placed, loading, loaded, reported, r["routed_at"], first]
        if any(m is None for m in marks):
            log(f"  phases incomplete (decided {decided}, placed {placed}, loading {loading}, loaded {loaded}, "
                f"reported {reported}, routed {r['routed_at']})")
            return None
        return {p: round(max(0.0, b - a), 4) for (p, _), a, b in zip(PHASES, marks, marks[1:])}

    def run(self, samples: int) -> dict:
        log(f"{self.engine}: {self.e['title']}, file {self.file}")
        out: dict = {"title": self.e["title"], "model": self.name, "file": self.file,
                     "file_bytes": (self.c.origin_dir / self.file).stat().st_size, "samples": {s: [] for s in SCENARIOS}}
        md_watch = Watch(self.c, "md", "-n", NS)
        board_watch = Watch(self.c, "boards")
        try:
            self.c.kubectl_run("delete", "md", self.name, "-n", NS, "--ignore-not-found", "--wait=true", "--timeout=60s")
            # Warm: minReplicas 1 holds the replica however long the load takes (with minReplicas 0 a
            # load longer than scaleDownDelay would be scaled away before it is Ready); then 0.
            self.apply(replicas=1, min_replicas=1)
            self.wait_ready()
            # Not counted: the first request after a load pays the engine's first evaluation (llama.cpp:
            # ~0.5 s here), which belongs to a cold start, not to a warm replica.
            out["first_after_load"] = stream_request(self.c.gateway, self.name)
            out["first_after_load"].pop("text", None)
            for i in range(samples):
                r = self.sample("warm", md_watch, board_watch)
                out["samples"]["warm"].append(r)
                log(f"  warm {i + 1}/{samples}: TTFT {r['ttft_s']:.3f} s, total {r['total_s']:.3f} s")
            self.apply(replicas=1, min_replicas=0)
            for i in range(samples):
                self.wait_zero()
                r = self.sample("cached", md_watch, board_watch)
                if r["downloaded_bytes"]:
                    raise RuntimeError(f"{self.engine} cached: the origin sent {r['downloaded_bytes']} bytes")
                out["samples"]["cached"].append(r)
                log(f"  cached {i + 1}/{samples}: TTFT {r['ttft_s']:.2f} s, total {r['total_s']:.2f} s, "
                    f"phases {r['phases']}")
            for i in range(samples):
                self.reset_uncached()
                r = self.sample("not cached", md_watch, board_watch)
                if r["stored_before"] or r["downloaded_bytes"] < out["file_bytes"]:
                    raise RuntimeError(f"{self.engine} not cached: file on {r['stored_before']} before, "
                                       f"origin sent {r['downloaded_bytes']} of {out['file_bytes']} bytes")
                out["samples"]["not cached"].append(r)
                log(f"  not cached {i + 1}/{samples}: TTFT {r['ttft_s']:.2f} s, total {r['total_s']:.2f} s, "
                    f"downloaded {r['downloaded_bytes']} B, phases {r['phases']}")
            self.c.kubectl_run("delete", "md", self.name, "-n", NS, "--ignore-not-found", "--wait=true", "--timeout=60s")
        finally:
            md_watch.close()
            board_watch.close()
        return out


# === the report ===


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summary(result: dict) -> dict:
    """Per engine and scenario: n, TTFT/total median, min, max; ratio to warm; median phases."""
    out = {}
    for eng, e in result["engines"].items():
        rows = {}
        warm = median([s["ttft_s"] for s in e["samples"]["warm"]])
        for sc in SCENARIOS:
            ss = e["samples"][sc]
            ttft = [s["ttft_s"] for s in ss]
            row = {"n": len(ss), "ttft_p50": median(ttft), "ttft_min": min(ttft, default=None),
                   "ttft_max": max(ttft, default=None), "total_p50": median([s["total_s"] for s in ss]),
                   "downloaded_p50": median([s["downloaded_bytes"] for s in ss])}
            row["ratio"] = row["ttft_p50"] / warm if warm and row["ttft_p50"] is not None else None
            ph = [s["phases"] for s in ss if s.get("phases")]
            row["phases"] = {p: median([x.get(p) for x in ph]) for p, _ in PHASES} if ph else None
            row["phases_n"] = len(ph)
            rows[sc] = row
        out[eng] = rows
    return out


def fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n:.0f} B"


def render(result: dict, out: Path) -> None:
    sm = summary(result)
    env, cfg = result["environment"], result["config"]
    plot_note = draw(result, sm, out / "cold-start.png")
    L = ["# P9: scale from zero — first request to first token, blob cached vs not", "",
         "How long a request waits when its model has been scaled to zero (docs/autoscaling.md): the gateway holds it, "
         "the autoscaler asks for a replica, the controller places it (on the board that kept the file when one did), "
         "the agent downloads (if needed) and loads it, and the request is sent. Measured on a private test cluster "
         f"({cfg['boards']} simulated boards, one streamed chat request at a time through the gateway, "
         f"`max_tokens` {cfg['max_tokens']}); warm = a replica already Ready.", ""]
    if plot_note:
        L += [f"_No plot: {plot_note}_", ""]
    else:
        L += ["![TTFT per scenario and where a cold start's time goes](cold-start.png)", ""]
    for eng, rows in sm.items():
        w, c, n = rows["warm"], rows["cached"], rows["not cached"]
        if c["ttft_p50"] is None or n["ttft_p50"] is None:
            continue
        line = (f"* **{eng}**, {result['engines'][eng]['title']}: from zero the first token comes after "
                f"{fmt_s(c['ttft_p50'])} with the file cached ({c['ratio']:.0f}× a warm replica's {fmt_s(w['ttft_p50'])}) "
                f"and after {fmt_s(n['ttft_p50'])} when it is downloaded first")
        if c["phases"]:
            ph = c["phases"]
            line += (f"; of a cached cold start, the load takes {fmt_s(ph['load'])}, the autoscaler's decision "
                     f"{fmt_s(ph['autoscaler'])} (it reads demand every second), and from the engine loaded to the gateway "
                     f"routing to the replica {fmt_s((ph['reported'] or 0) + (ph['routed'] or 0))}")
        L.append(line + ".")
    L += ["", "| engine | scenario | n | TTFT median | min – max | × warm | total median | downloaded |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    for eng, rows in sm.items():
        for sc, r in rows.items():
            ratio = f"{r['ratio']:.0f}×" if r["ratio"] and r["ratio"] >= 10 else f"{r['ratio']:.1f}×" if r["ratio"] else "–"
            dl = fmt_bytes(r["downloaded_p50"]) if r["downloaded_p50"] else "–"
            L.append(f"| {eng} | {sc} | {r['n']} | {fmt_s(r['ttft_p50'])} | {fmt_s(r['ttft_min'])} – "
                     f"{fmt_s(r['ttft_max'])} | {ratio} | {fmt_s(r['total_p50'])} | {dl} |")
    L += ["", "Where a cold start's time goes (medians per phase; the phases of one sample add up to its TTFT):", "",
          "| engine | scenario | " + " | ".join(p for p, _ in PHASES) + " |", "|---|---|" + "---:|" * len(PHASES)]
    for eng, rows in sm.items():
        for sc in SCENARIOS[1:]:
            ph = rows[sc]["phases"]
            L.append(f"| {eng} | {sc} | " + " | ".join(fmt_s(ph[p]) if ph else "–" for p, _ in PHASES) + " |")
    L += ["", "Phases: " + "; ".join(f"**{p}** {d}" for p, d in PHASES) + ". Decision and placement come from "
          "`kubectl get --watch` on the ModelDeployment and the Boards, loading/loaded from the agents' JSON logs, "
          "routed from polling the gateway's `GET /v1/models/<model>` every 20 ms during the request, all on this "
          "machine's clock.", "",
          "Reading the phases:", "",
          "* **autoscaler**: the leader reads the gateways' demand and decides once a second (docs/autoscaling.md), "
          "so up to about a second, plus the status write.",
          "* **reported**: the agent writes its Board status at most once a second (`MIN_INTERVAL` in "
          "agent/src/cluster/board.rs) and had just written `Loading`, so a load shorter than that second waits for "
          "the next write; a longer load is reported at once. After a download the last write is usually more than "
          "a second old and Ready goes out at once: the download replaces that wait rather than adding to it. The gateway routes "
          "on that status (its Board reflector), hence the short **routed**.",
          "* **first token**: the request goes to the board and the engine evaluates the prompt. The first request "
          "after a load is slower than a warm one on llama.cpp (first evaluation: "
          + ", ".join(f"{k} {fmt_s((e.get('first_after_load') or {}).get('ttft_s'))}" for k, e in result["engines"].items())
          + " for the uncounted first request after the warm baseline's load).",
          "* **download** without the file: fetch from the origin and sha256 verification into the store.", "",
          "## Setup", "",
          "* Engines: " + "; ".join(f"**{k}** {v['title']}, `{v['file']}` ({fmt_bytes(v['file_bytes'])})"
                                    for k, v in result["engines"].items()) + ".",
          "* **warm**: the replica Ready (minReplicas 1 while these run); one request first, not counted, since the "
          "first request after a load pays the engine's first evaluation, which is part of a cold start.",
          f"* ModelDeployment `autoscaling: {{minReplicas: 0, maxReplicas: 1, scaleDownDelay: {cfg['scale_down_delay']}}}`; "
          "the autoscaler decides every second (docs/autoscaling.md).",
          "* **cached**: after each sample the deployment idles back to zero (desiredReplicas 0, readyReplicas 0, the "
          "board's entry `Cached`, the gateway routing to no board); the board keeps the file and the origin sends 0 bytes "
          "(checked per sample).",
          "* **not cached**: the boards run with `--store-budget 0` (`TESTCLUSTER_STORE_BUDGET=0`), so an agent deletes "
          "every blob no entry refers to as soon as an entry goes. Per sample the deployment is deleted, the file is "
          "checked absent from every board's store on disk, and the deployment is created again with `replicas: 0` "
          "(docs/autoscaling.md: no download until the first request). The origin's request log shows each sample "
          "downloading the whole file.",
          f"* **Load speed of the NPU engine is an assumption**: the vendor publishes no load time for `.rkllm` files. "
          f"rkllm-sim reads a model at `RKLLM_SIM_LOAD_MB_S` = {cfg['load_mb_s']:.0f} MB/s, the sequential read class "
          f"of the eMMC 5.1 storage RK3588 boards ship with (NVMe would be faster, an SD card slower), so the 791 MB "
          f"Qwen3-0.6B takes {791.11 / cfg['load_mb_s']:.1f} s; prefill and decode at the vendor's benchmark figures "
          "(`RKLLM_SIM_SPEEDUP=1`). The CPU engine's load is real llama.cpp on this machine.",
          "* **Download over loopback**: the origin is a local HTTP server, so 'not cached' measures the fetch, "
          "verification and store path, not a network. The sim's .rkllm is a ~200-byte stand-in for a 791 MB file; "
          "on a board the download adds size ÷ link speed (791 MB at 100 Mbit/s ≈ 63 s; docs/bench/distribution.md "
          "measures transfers over shaped links).",
          f"* Machine: {env['cpu']} ({env['cpus']} CPUs), kernel {env['kernel']}; load average {env['loadavg_before']:.1f} "
          f"before, {env.get('loadavg_after', 0):.1f} after; commit {env['commit']}, {env['date']}, "
          f"{env.get('minutes', '?')} min.", "",
          "## Command", "", "```", result["command"], "```", "",
          "`make bench-cold-start` runs it (also part of `make bench`). Redraw this page and the plot from the JSON "
          "without measuring: `$(hack/pyenv.sh) hack/bench/p9_cold_start.py --render docs/bench/cold-start.json`.", ""]
    (out / "cold-start.md").write_text("\n".join(L))


def draw(result: dict, sm: dict, path: Path) -> str | None:
    """cold-start.png: TTFT per scenario (every sample), and the cold starts' median phases."""
    sys.path.insert(0, str(HERE))
    import plots

    if (why := plots.missing()) is not None:
        return why
    engines = list(result["engines"])
    fig, ax = plots.figure(1, 2, width=11, title="Scale from zero: first request → first token")
    plots.strip(ax[0], engines, {sc: [[s["ttft_s"] for s in result["engines"][e]["samples"][sc]] for e in engines]
                                 for sc in SCENARIOS}, unit="TTFT, s", log=True, xlabel="engine", median_fmt="{:.2f}")
    groups = [f"{e}\n{sc}" for e in engines for sc in SCENARIOS[1:]]
    parts = {p: [((sm[e][sc]["phases"] or {}).get(p) or 0) for e in engines for sc in SCENARIOS[1:]] for p, _ in PHASES}
    plots.stacked_bars(ax[1], groups, parts, ylabel="seconds (median per phase)", title="where a cold start's time goes",
                       total_fmt="{:.2f}")
    top = max((sum(v[g] for v in parts.values()) for g in range(len(groups))), default=0)
    if top > 0:  # room above the bars for the legend
        ax[1].set_ylim(0, top * 1.45)
        ax[1].legend(loc="upper left", ncol=3)
    plots.save(fig, path)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5, help="requests per engine and scenario (default 5)")
    ap.add_argument("--engines", default="cpu,npu", help="comma-separated subset of: " + ", ".join(ENGINES))
    ap.add_argument("--load-mb-s", type=float, default=VENDOR_LOAD_MB_S,
                    help=f"rkllm-sim's load speed, MB/s (default {VENDOR_LOAD_MB_S:.0f}: the assumption above)")
    ap.add_argument("--out", default=str(ROOT / "docs/bench"), help="where cold-start.{md,json,png} go")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the report and plot from a cold-start.json")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy the cluster's logs here")
    args = ap.parse_args()

    if args.render:
        render(json.loads(Path(args.render).read_text()), Path(args.render).parent)
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if unknown := [e for e in engines if e not in ENGINES]:
        ap.error(f"unknown engine(s) {unknown}; known: {list(ENGINES)}")

    def on_signal(signum, _frame):
        raise Stop(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    cmd = " ".join(["hack/bench/p9_cold_start.py", *sys.argv[1:]])
    result = {"environment": environment(), "command": cmd,
              "config": {"boards": BOARDS, "samples": args.samples, "load_mb_s": args.load_mb_s,
                         "scale_down_delay": SCALE_DOWN_DELAY, "max_tokens": MAX_TOKENS, "prompt": PROMPT},
              "engines": {}}
    work = Path(tempfile.mkdtemp(prefix="cold-start-bench-"))
    env = {"TESTCLUSTER_STORE_BUDGET": "0", "RKLLM_SIM_LOAD_MB_S": str(args.load_mb_s), "RKLLM_SIM_SPEEDUP": "1",
           "ROCKCHIP_LLAMA_LOG_FORMAT": "json"}
    t0 = time.monotonic()
    ok = False
    try:
        with Cluster(work, env) as cluster:
            for eng in engines:
                result["engines"][eng] = Bench(cluster, eng).run(args.samples)
        ok = True
    except (Stop, KeyboardInterrupt) as e:
        log(f"interrupted ({e or 'Ctrl-C'})")
        return 130
    finally:
        if args.keep_logs and (work / "cluster-logs").is_dir():
            shutil.copytree(work / "cluster-logs", Path(args.keep_logs), dirs_exist_ok=True)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work} for a look")
    result["environment"]["minutes"] = round((time.monotonic() - t0) / 60, 1)
    result["environment"]["loadavg_after"] = os.getloadavg()[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cold-start.json").write_text(json.dumps(result, indent=1) + "\n")
    render(result, out)
    log(f"done in {result['environment']['minutes']} min; wrote {out}/cold-start.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
