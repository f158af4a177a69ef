#!/usr/bin/env python3
"""P8: the controller at scale, against a real kube-apiserver (`make bench-controller`).

A load generator plays N boards (300 by default) the way their agents would look to the
controller — a Board with its status written by server-side apply as `rockchip-llama-agent`, and
a Lease renewed every 10 s — but runs no agent. It starts `rockchip-llama-operator run` on a
private control plane (`hack/testcluster.sh up`, control plane only), creates M ModelDeployments
(1000 by default) as fast as it can and measures:

  convergence  seconds from the first create until every ModelDeployment has
               status.observedGeneration == metadata.generation and status.replicas ==
               spec.replicas (every replica has a Board entry; seen by polling list calls)
  reconciles/s the operator's rockchip_llama_operator_reconciles_total delta over that time
  peak RSS     the operator's VmHWM (sampled with VmRSS every 0.5 s)

then checks the placement (entries per board, spread over zones) and idles past one resync
period to count rewrites. Agents acting on their entries (download, load, Ready) are not
simulated, so readyReplicas stays 0: this measures the controller, not the fleet.

  hack/bench/p8_controller_scale.py                       full run, writes docs/bench/controller-scale.*
  hack/bench/p8_controller_scale.py --boards 30 --deployments 100 --out /tmp/p8   a quick one
  hack/bench/p8_controller_scale.py --replot docs/bench/controller-scale.json     redraw PNG + report

Stdlib only, plus matplotlib for the plot (the project venv, `hack/pyenv.sh`, has it); without it
the plot is skipped with a note in the report. Everything started here is stopped in a `finally`
(operator, then the control plane), also on failure, Ctrl-C and SIGTERM; every wait is bounded.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUP = "rockchipllama.io/v1alpha1"
# Namespace of the boards' Leases and the leader Lease (the operator's --namespace).
NS = "rockchip-llama"
# Namespace of the ModelDeployments.
MD_NS = "p8-bench"
AGENT_MANAGER = "rockchip-llama-agent"
ZONE_LABEL = "topology.kubernetes.io/zone"
# What agents use: leaseDurationSeconds 40, renewed every 10 s.
LEASE_SECONDS = 40
LEASE_RENEW_S = 10.0
# The operator requeues every deployment at the latest every 30 s; idling a bit longer than that
# shows whether a resync rewrites anything.
RESYNC_S = 30
MODEL_BYTES = 100 << 20
TARGET_CONVERGE_S = 60.0
TARGET_RSS_MB = 150.0
# Parallel API writers: enough to keep the API server busy, few enough for a 2-core machine.
WORKERS = 8
RSS_SAMPLE_S = 0.5
# `hack/testcluster.sh up`: seconds when the binaries are cached; a cold build takes far longer
# (run `hack/k8s/bins.sh` first).
UP_TIMEOUT_S = 600

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[p8 +{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class Stop(Exception):
    """SIGTERM/SIGHUP: unwinds to the `finally` that stops everything."""


# === API access ===


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: bytes):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:400].decode(errors='replace')}")
        self.status = status


class Api:
    """A tiny client for the API server: the admin certificate from the kubeconfig, one
    keep-alive HTTPS connection per thread."""

    def __init__(self, kubeconfig: Path, certdir: Path):
        text = kubeconfig.read_text()

        def field(name: str) -> str:
            m = re.search(rf"^\s*{name}:\s*(\S+)\s*$", text, re.M)
            if not m:
                raise RuntimeError(f"{kubeconfig}: no {name}")
            return m.group(1)

        server = field("server")
        m = re.match(r"https://([^:/]+):(\d+)", server)
        if not m:
            raise RuntimeError(f"unexpected server {server}")
        self.host, self.port = m.group(1), int(m.group(2))
        certdir.mkdir(mode=0o700, exist_ok=True)
        files = {}
        for key, name in [("certificate-authority-data", "ca.crt"), ("client-certificate-data", "admin.crt"),
                          ("client-key-data", "admin.key")]:
            p = certdir / name
            p.write_bytes(base64.b64decode(field(key)))
            p.chmod(0o600)
            files[name] = p
        self.ctx = ssl.create_default_context(cafile=str(files["ca.crt"]))
        self.ctx.load_cert_chain(str(files["admin.crt"]), str(files["admin.key"]))
        self.local = threading.local()

    def request(self, method: str, path: str, body=None, ctype: str = "application/json"):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = ctype
        for attempt in range(4):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
                self.local.conn = conn
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 3:
                    raise
                time.sleep(0.2 * (attempt + 1))
                continue
            # Throttled or briefly unavailable: retry; anything else is the caller's answer.
            if resp.status in (429, 500, 503, 504) and attempt < 3:
                time.sleep(0.5 * (attempt + 1))
                continue
            if resp.status >= 300:
                raise ApiError(method, path, resp.status, raw)
            return json.loads(raw) if raw else None
        raise AssertionError("unreachable")

    def list_all(self, path: str) -> tuple[list[dict], str]:
        """Every item, in pages of 500, and the resourceVersion of the list."""
        items, cont, rv = [], "", ""
        while True:
            q = f"{path}?limit=500" + (f"&continue={cont}" if cont else "")
            page = self.request("GET", q)
            items += page.get("items", [])
            rv = rv or page.get("metadata", {}).get("resourceVersion", "")
            cont = page.get("metadata", {}).get("continue", "")
            if not cont:
                return items, rv

    def connect(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)


def parallel(fn, items, workers: int = WORKERS) -> None:
    """Runs fn over items on a few threads; the first error is raised."""
    with cf.ThreadPoolExecutor(workers) as ex:
        for f in cf.as_completed([ex.submit(fn, i) for i in items]):
            f.result()


def micro_time(offset_s: float = 0) -> str:
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# === the simulated boards ===


def board_name(i: int) -> str:
    return f"board-{i:03d}"


def zone(i: int, zones: int) -> str:
    return f"zone-{chr(ord('a') + i % zones)}"


def create_board(api: Api, i: int, zones: int) -> None:
    """What an agent does at start: the Board, its status (forced apply), its Lease."""
    name = board_name(i)
    api.request("POST", f"/apis/{GROUP}/boards", {
        "apiVersion": GROUP, "kind": "Board",
        "metadata": {"name": name, "labels": {"rockchipllama.io/soc": "rk3588", ZONE_LABEL: zone(i, zones)}},
        "spec": {},
    })
    status = {
        "apiVersion": GROUP, "kind": "Board",
        "status": {
            "soc": "rk3588",
            "endpoint": f"http://{name}.boards.p8.invalid:8080",
            "memory": {"totalBytes": 16 << 30, "availableBytes": 15 << 30},
            "store": {"totalBytes": 256 << 30, "freeBytes": 250 << 30},
            "models": [],
            "loadedModels": 0,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Heartbeating", "message": "",
                            "lastTransitionTime": rfc3339()}],
        },
    }
    api.request("PATCH", f"/apis/{GROUP}/boards/{name}/status?fieldManager={AGENT_MANAGER}&force=true",
                status, "application/apply-patch+yaml")
    api.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
                 "acquireTime": micro_time(), "renewTime": micro_time()},
    })


class LeaseRenewer(threading.Thread):
    """Renews every board's Lease every 10 s, as the agents would."""

    def __init__(self, api: Api, names: list[str]):
        super().__init__(daemon=True, name="lease-renewer")
        self.api, self.names = api, names
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.renewed = self.failed = 0

    def renew(self, name: str) -> None:
        try:
            self.api.request("PATCH", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{name}",
                             {"spec": {"renewTime": micro_time()}}, "application/merge-patch+json")
            with self.lock:
                self.renewed += 1
        except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
            with self.lock:
                self.failed += 1
                first = self.failed <= 5
            if first:
                log(f"renewing lease {name}: {e}")

    def run(self) -> None:
        with cf.ThreadPoolExecutor(4) as ex:
            while not self.stop.wait(LEASE_RENEW_S):
                list(ex.map(self.renew, self.names))


# === the operator ===


class RssSampler(threading.Thread):
    """VmRSS and VmHWM of one process every 0.5 s, as (monotonic t, rss MB, hwm MB)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, float]] = []

    def read(self) -> tuple[float, float] | None:
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        kb = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M))
        return int(kb.get("VmRSS", 0)) / 1024, int(kb.get("VmHWM", 0)) / 1024

    def run(self) -> None:
        while not self.stop.is_set():
            v = self.read()
            if v:
                self.samples.append((time.monotonic(), round(v[0], 1), round(v[1], 1)))
            self.stop.wait(RSS_SAMPLE_S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """The operator's counters: reconciles (total and by result), writes by kind, leader."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {"reconciles": 0.0}
    for m in re.finditer(r"^rockchip_llama_operator_(\w+?)(?:\{(\w+)=\"([^\"]*)\"\})? ([0-9.e+-]+)$", text, re.M):
        metric, _label, value, num = m.groups()
        if metric == "reconciles_total":
            out["reconciles"] += float(num)
            out[f"reconciles.{value}"] = float(num)
        elif metric == "writes_total":
            out[f"writes.{value}"] = float(num)
        elif metric == "leader":
            out["leader"] = float(num)
    return out


def wait_until(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = check()
        except (OSError, http.client.HTTPException, ApiError):
            v = None
        if v:
            return v
        time.sleep(every)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s")


def delta(after: dict, before: dict, key: str) -> int:
    return int(after.get(key, 0) - before.get(key, 0))


# === the deployments ===


def md_body(j: int, replicas: int) -> dict:
    name = f"md-{j:04d}"
    return {
        "apiVersion": GROUP, "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": MD_NS},
        "spec": {
            "format": "gguf", "replicas": replicas,
            # A distinct file per deployment, so no board is preferred for already holding it.
            "source": {"url": f"http://origin.p8.invalid/{name}.gguf",
                       "sha256": hashlib.sha256(name.encode()).hexdigest(), "sizeBytes": MODEL_BYTES},
            "placement": {"spreadBy": ZONE_LABEL},
        },
    }


def converged(md: dict) -> bool:
    st = md.get("status") or {}
    return (st.get("observedGeneration") == md["metadata"].get("generation")
            and st.get("replicas") == md["spec"]["replicas"])


class MdWatcher(threading.Thread):
    """Follows the ModelDeployments with one watch (not repeated lists: on 2 cores those would
    compete with the operator) and notes when the last of them converged."""

    def __init__(self, api: Api, total: int):
        super().__init__(daemon=True, name="md-watcher")
        self.api, self.total = api, total
        self.lock = threading.Lock()
        self.state: dict[str, bool] = {}
        self.converged = 0
        self.events = 0
        self.all_at: float | None = None  # time.monotonic() of the event that made it total
        self.error: str | None = None
        self.watching = threading.Event()

    def apply(self, name: str, ok: bool | None) -> None:
        with self.lock:
            if ok is None:
                self.state.pop(name, None)
            else:
                self.state[name] = ok
            self.converged = sum(self.state.values())
            if self.converged == self.total and self.all_at is None:
                self.all_at = time.monotonic()

    def relist(self) -> str:
        items, rv = self.api.list_all(f"/apis/{GROUP}/namespaces/{MD_NS}/modeldeployments")
        with self.lock:
            self.state = {}
        for md in items:
            self.apply(md["metadata"]["name"], converged(md))
        return rv

    def run(self) -> None:
        path = f"/apis/{GROUP}/namespaces/{MD_NS}/modeldeployments"
        try:
            rv = self.relist()
            while True:
                conn = self.api.connect(120)
                try:
                    conn.request("GET", f"{path}?watch=1&allowWatchBookmarks=true&timeoutSeconds=900"
                                        f"&resourceVersion={rv}", headers={"Accept": "application/json"})
                    resp = conn.getresponse()
                    if resp.status != 200:
                        raise ApiError("GET", path + "?watch=1", resp.status, resp.read())
                    self.watching.set()
                    while line := resp.readline():
                        ev = json.loads(line)
                        obj = ev.get("object", {})
                        if ev.get("type") == "ERROR":  # e.g. 410 Gone: start again from a list
                            rv = self.relist()
                            break
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if ev.get("type") == "BOOKMARK":
                            continue
                        self.events += 1
                        name = obj["metadata"]["name"]
                        self.apply(name, None if ev["type"] == "DELETED" else converged(obj))
                except (OSError, http.client.HTTPException):
                    time.sleep(0.5)  # the watch ended or stalled: resume from the last version
                finally:
                    conn.close()
        except Exception as e:  # noqa: BLE001 - the main loop reports it
            self.error = f"{type(e).__name__}: {e}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control_plane_pids(cluster_dir: Path) -> dict[str, int]:
    """etcd's and kube-apiserver's PIDs from the list `hack/testcluster.sh up` keeps."""
    pids = {}
    for line in (cluster_dir / "pids").read_text().splitlines():
        pid, _, binary = line.partition(" ")
        if Path(binary).name in ("etcd", "kube-apiserver"):
            pids[Path(binary).name] = int(pid)
    return pids


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process, and of this load generator."""
    out = {name: cpu_seconds(pid) for name, pid in pids.items()}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["load generator"] = ru.ru_utime + ru.ru_stime
    return out


def check_placement(api: Api, replicas: int) -> dict:
    """Entries per board and how replicas spread over zones, from the Boards' spec."""
    boards, _ = api.list_all(f"/apis/{GROUP}/boards")
    zone_of = {b["metadata"]["name"]: b["metadata"].get("labels", {}).get(ZONE_LABEL, "") for b in boards}
    per_board = [len(b.get("spec", {}).get("models") or []) for b in boards]
    by_md: dict[str, list[str]] = {}
    for b in boards:
        for e in b.get("spec", {}).get("models") or []:
            by_md.setdefault(e["key"], []).append(b["metadata"]["name"])
    zones = len(set(zone_of.values()))
    # With replicas <= zones no two replicas of one deployment should share a zone.
    same_zone = sum(1 for bs in by_md.values() if len({zone_of[b] for b in bs}) < min(len(bs), zones))
    return {
        "entries": sum(per_board),
        "entries_per_board": {"min": min(per_board), "max": max(per_board),
                              "mean": round(sum(per_board) / len(per_board), 2)},
        "deployments_with_entries": len(by_md),
        "deployments_with_wrong_replica_count": sum(1 for bs in by_md.values() if len(bs) != replicas),
        "deployments_not_spread_over_zones": same_zone,
    }


# === the run ===


def run(args) -> dict:
    operator = Path(args.operator)
    if not os.access(operator, os.X_OK):
        raise SystemExit(f"{operator} missing: cargo build --release -p rockchip-llama-operator")
    kubectl = Path(subprocess.run([ROOT / "hack/k8s/bins.sh", "--print"], check=True, text=True,
                                  capture_output=True, timeout=30).stdout.strip()) / "kubectl"
    work = Path(tempfile.mkdtemp(prefix="p8-controller-"))
    cluster_dir = work / "cluster"
    env = dict(os.environ, TESTCLUSTER_DIR=str(cluster_dir))
    op_proc = renewer = sampler = pool = None
    op_log = work / "operator.log"
    result: dict = {}
    ok = False
    try:
        log(f"control plane: TESTCLUSTER_DIR={cluster_dir} hack/testcluster.sh up")
        out = subprocess.run([ROOT / "hack/testcluster.sh", "up"], env=env, check=True, text=True,
                             stdout=subprocess.PIPE, timeout=UP_TIMEOUT_S).stdout
        kubeconfig = Path(re.search(r"^KUBECONFIG=(.*)$", out, re.M).group(1))
        env["KUBECONFIG"] = str(kubeconfig)
        api = Api(kubeconfig, work / "certs")
        version = api.request("GET", "/version")["gitVersion"]

        log("CRDs (kubectl apply -f crds/yaml/), namespaces")
        subprocess.run([kubectl, "apply", "-f", ROOT / "crds/yaml/"], env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=120)
        subprocess.run([kubectl, "wait", "--for=condition=Established", "--timeout=60s",
                        "crd/modeldeployments.rockchipllama.io", "crd/boards.rockchipllama.io"],
                       env=env, check=True, stdout=subprocess.DEVNULL, timeout=90)
        for ns in (NS, MD_NS):
            api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": ns}})

        log(f"{args.boards} boards: Board, status (SSA as {AGENT_MANAGER}), Lease; {WORKERS} writers")
        t = time.monotonic()
        parallel(lambda i: create_board(api, i, args.zones), range(1, args.boards + 1))
        boards_s = time.monotonic() - t
        log(f"boards written in {boards_s:.1f} s")
        renewer = LeaseRenewer(api, [board_name(i) for i in range(1, args.boards + 1)])
        renewer.start()

        port = free_port()
        cmd = [str(operator), "run", "--no-gateway", "--namespace", NS, "--metrics-listen", f"127.0.0.1:{port}",
               "--identity", "p8-bench"]
        log("operator: " + " ".join(cmd[1:]))
        with open(op_log, "wb") as f:
            op_proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        sampler = RssSampler(op_proc.pid)
        sampler.start()

        def leading():
            if op_proc.poll() is not None:
                raise RuntimeError(f"operator exited with {op_proc.returncode} (log: {op_log})")
            return scrape(port).get("leader") == 1

        wait_until("operator leading", leading, 120)
        # Both reflectors list before the Controller starts; give them a moment on a busy machine.
        time.sleep(2)
        before = scrape(port)
        log(f"operator leading, RSS {sampler.read()[0]:.1f} MB; creating {args.deployments} deployments")

        created = [0]
        created_lock = threading.Lock()

        def create(j: int) -> None:
            api.request("POST", f"/apis/{GROUP}/namespaces/{MD_NS}/modeldeployments", md_body(j, args.replicas))
            with created_lock:
                created[0] += 1

        watcher = MdWatcher(api, args.deployments)
        watcher.start()
        wait_until("the ModelDeployment watch", lambda: watcher.watching.is_set() or watcher.error, 30)
        if watcher.error:
            raise RuntimeError(f"watching the ModelDeployments: {watcher.error}")
        load_before = os.getloadavg()
        procs = {"operator": op_proc.pid, **control_plane_pids(cluster_dir)}
        cpu_before = cpu_now(procs)
        tc = time.monotonic()
        pool = cf.ThreadPoolExecutor(WORKERS)
        futures = [pool.submit(create, j) for j in range(1, args.deployments + 1)]
        pool.shutdown(wait=False)
        creates_done_s = None
        polls: list[list[float]] = []
        last_log = 0.0

        def sample() -> dict:
            m = scrape(port)
            polls.append([round(time.monotonic() - tc, 2), created[0], watcher.converged,
                          delta(m, before, "reconciles")])
            return m

        deadline = tc + args.timeout
        while watcher.all_at is None and time.monotonic() < deadline:
            if op_proc.poll() is not None:
                raise RuntimeError(f"operator exited with {op_proc.returncode} (log: {op_log})")
            if watcher.error:
                raise RuntimeError(f"watching the ModelDeployments: {watcher.error}")
            if creates_done_s is None and all(f.done() for f in futures):
                create_errors = [str(f.exception()) for f in futures if f.exception()]
                if create_errors:
                    raise RuntimeError(f"{len(create_errors)} creates failed, first: {create_errors[0]}")
                creates_done_s = time.monotonic() - tc
                log(f"all {args.deployments} created after {creates_done_s:.1f} s")
            m = sample()
            if polls[-1][0] - last_log >= 3:
                last_log = polls[-1][0]
                rss = sampler.samples[-1] if sampler.samples else (0.0, 0.0, 0.0)
                log(f"created {created[0]}/{args.deployments}, converged {watcher.converged}/{args.deployments}, "
                    f"reconciles {delta(m, before, 'reconciles')}, RSS {rss[1]:.0f} MB (peak {rss[2]:.0f})")
            time.sleep(args.poll)
        if watcher.all_at is None:
            raise TimeoutError(f"{watcher.converged}/{args.deployments} deployments converged after "
                               f"{args.timeout:.0f} s")
        converge_s = watcher.all_at - tc
        if creates_done_s is None:
            creates_done_s = converge_s
        at_converge = sample()
        cpu_converge = {k: round(v - cpu_before[k], 1) for k, v in cpu_now(procs).items()}
        load_converge = os.getloadavg()
        log(f"every deployment converged after {converge_s:.1f} s ({watcher.events} watch events); "
            f"CPU seconds {cpu_converge}")
        placement = check_placement(api, args.replicas)
        log(f"placement: {json.dumps(placement)}")

        log(f"idling {args.settle:.0f} s (a {RESYNC_S} s resync of every deployment falls in it) to count rewrites")
        settle_end = time.monotonic() + args.settle
        while time.monotonic() < settle_end:
            time.sleep(min(1.0, max(0.0, settle_end - time.monotonic())))
            sample()
        after_settle = scrape(port)
        mds, _ = api.list_all(f"/apis/{GROUP}/namespaces/{MD_NS}/modeldeployments")
        still = sum(1 for md in mds if converged(md))
        log(f"after idling: {still}/{args.deployments} converged, "
            f"{delta(after_settle, at_converge, 'reconciles')} reconciles, writes "
            f"{ {k: delta(after_settle, at_converge, k) for k in after_settle if k.startswith('writes.')} }")

        sampler.stop.set()
        sampler.join(2)
        # Seconds since the first create: samples before it are negative.
        rss = [(round(t - tc, 2), r, h) for t, r, h in sampler.samples]
        conv_rss = [s for s in rss if s[0] <= converge_s]
        write_kinds = sorted({k for k in at_converge if k.startswith("writes.")} |
                             {k for k in before if k.startswith("writes.")})
        result = {
            "boards": args.boards, "deployments": args.deployments, "replicas": args.replicas,
            "zones": args.zones,
            "boards_setup_s": round(boards_s, 1),
            "creates_done_s": round(creates_done_s, 2),
            "converge_s": round(converge_s, 2),
            "sample_interval_s": args.poll,
            "watch_events": watcher.events,
            "cpu_s_until_converged": cpu_converge,
            "loadavg_1m": {"before": round(load_before[0], 2), "at_converge": round(load_converge[0], 2)},
            "reconciles": delta(at_converge, before, "reconciles"),
            "reconcile_errors": delta(at_converge, before, "reconciles") - delta(at_converge, before,
                                                                                  "reconciles.ok"),
            "reconciles_per_s": round(delta(at_converge, before, "reconciles") / converge_s, 1),
            "writes": {k.split(".", 1)[1]: delta(at_converge, before, k) for k in write_kinds},
            "peak_rss_mb": max((s[2] for s in rss), default=0.0),
            "peak_rss_at_converge_mb": max((s[2] for s in conv_rss), default=0.0),
            "rss_before_first_create_mb": max((s[1] for s in rss if s[0] < 0), default=0.0),
            "placement": placement,
            "settle": {
                "seconds": args.settle,
                "reconciles": delta(after_settle, at_converge, "reconciles"),
                "writes": {k.split(".", 1)[1]: delta(after_settle, at_converge, k) for k in write_kinds},
                "still_converged": still,
            },
            "lease_renewals": renewer.renewed, "lease_renewal_failures": renewer.failed,
            "targets": {"converge_s": TARGET_CONVERGE_S, "peak_rss_mb": TARGET_RSS_MB},
            "series": {"polls": polls, "rss": rss},
            "environment": {
                "apiserver": version, "cpus": os.cpu_count(), "machine": platform.machine(),
                "kernel": platform.release(), "commit": git_describe(),
                "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            },
            "command": args.command,
        }
        ok = True
        return result
    finally:
        for th in (renewer, sampler):
            if th is not None:
                th.stop.set()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if op_proc is not None and op_proc.poll() is None:
            log(f"stopping the operator ({op_proc.pid})")
            op_proc.terminate()
            try:
                op_proc.wait(20)
            except subprocess.TimeoutExpired:
                op_proc.kill()
                op_proc.wait(10)
        if not ok and op_log.exists():
            log(f"last operator log lines ({op_log}):")
            sys.stderr.write("".join(op_log.read_text(errors="replace").splitlines(True)[-30:]))
        log("control plane down")
        try:
            subprocess.run([ROOT / "hack/testcluster.sh", "down"], env=env, timeout=180, check=False)
        except subprocess.TimeoutExpired:
            log(f"hack/testcluster.sh down timed out; TESTCLUSTER_DIR={cluster_dir} hack/testcluster.sh down")
        if args.keep_logs:
            Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
            if op_log.exists():
                shutil.copy(op_log, Path(args.keep_logs) / "operator.log")
        if cluster_dir.exists():
            log(f"{cluster_dir} still there; kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def git_describe() -> str:
    try:
        return subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], text=True,
                              capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


# === report ===


def plot(r: dict, png: Path) -> str | None:
    """Converged deployments and operator RSS over time; None when matplotlib is missing."""
    import plots

    if plots.missing():
        return "matplotlib is not installed, so no plot was drawn"
    plt = plots.pyplot()
    polls, rss = r["series"]["polls"], r["series"]["rss"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    top.plot([p[0] for p in polls], [p[1] for p in polls], label="created", color="tab:gray", ls="--")
    top.plot([p[0] for p in polls], [p[2] for p in polls], label="converged", color="tab:blue", lw=2)
    top.axvline(r["converge_s"], color="tab:blue", lw=0.8, ls=":")
    top.axvline(r["targets"]["converge_s"], color="tab:red", lw=1, label=f"target {r['targets']['converge_s']:.0f} s")
    top.set_ylabel("ModelDeployments")
    top.set_title(f"P8: {r['boards']} Boards × {r['deployments']} ModelDeployments "
                  f"({r['replicas']} replicas) — converged in {r['converge_s']:.1f} s")
    ax2 = top.twinx()
    ax2.plot([p[0] for p in polls], [p[3] for p in polls], color="tab:green", lw=1, label="reconciles")
    ax2.set_ylabel("reconciles (cumulative)", color="tab:green")
    lines = top.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    top.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right")
    top.grid(alpha=0.3)
    shown = [s for s in rss if s[0] >= -5]
    bottom.plot([s[0] for s in shown], [s[1] for s in shown], label="VmRSS", color="tab:purple")
    bottom.plot([s[0] for s in shown], [s[2] for s in shown], label="VmHWM (peak)", color="tab:orange", ls="--")
    bottom.axhline(r["targets"]["peak_rss_mb"], color="tab:red", lw=1, label=f"target {r['targets']['peak_rss_mb']:.0f} MB")
    bottom.set_ylim(0, max(r["targets"]["peak_rss_mb"] * 1.1, r["peak_rss_mb"] * 1.2))
    bottom.set_ylabel("operator memory (MB)")
    bottom.set_xlabel("seconds since the first ModelDeployment was created (after convergence: idle past a resync)")
    bottom.legend(loc="center right")
    bottom.grid(alpha=0.3)
    plots.save(fig, png)
    return None


def yes(ok: bool) -> str:
    return "met" if ok else "**missed**"


def markdown(r: dict, png_note: str | None) -> str:
    t = r["targets"]
    w, s, p = r["writes"], r["settle"], r["placement"]
    writes = ", ".join(f"{k} {v}" for k, v in w.items()) or "none"
    settle_writes = sum(s["writes"].values())
    env = r["environment"]
    cpus = r["cpu_s_until_converged"]
    cpu = ", ".join(f"{k} {v:.1f} s" for k, v in cpus.items())
    busy = max(cpus, key=cpus.get)
    resync = f" (past the {RESYNC_S} s resync)" if s["seconds"] > RESYNC_S else ""
    plot_md = (f"_No plot: {png_note}; redraw with `hack/bench/p8_controller_scale.py --replot "
               f"docs/bench/controller-scale.json` where matplotlib is installed._"
               if png_note else "![converged deployments and operator RSS over time](controller-scale.png)\n\n"
               "The plot is drawn from `controller-scale.json` with `hack/bench/plots.py`; redraw it and this page "
               "without measuring: `$(hack/pyenv.sh) hack/bench/p8_controller_scale.py --replot "
               "docs/bench/controller-scale.json`.")
    return f"""# Controller at scale (P8)

{r['boards']} Boards, whose status a load generator writes the way agents do (no agents run), and
{r['deployments']} ModelDeployments of {r['replicas']} replicas each, spread over {r['zones']} zones, against a real
kube-apiserver ({env['apiserver']}) and etcd on loopback. Measured {env['date']} at `{env['commit']}` on a
shared {env['cpus']}-core {env['machine']} machine (Linux {env['kernel']}).

| | measured | target | |
|---|---|---|---|
| Boards × ModelDeployments | {r['boards']} × {r['deployments']} | 300 × 1000 | |
| convergence (first create → every status converged) | {r['converge_s']:.1f} s | ≤ {t['converge_s']:.0f} s | {yes(r['converge_s'] <= t['converge_s'])} |
| reconciles | {r['reconciles']} ({r['reconciles_per_s']:.1f}/s, {r['reconcile_errors']} errors) | | |
| CPU time until converged | {cpu} | | |
| operator peak RSS (VmHWM, whole run) | {r['peak_rss_mb']:.1f} MB | ≤ {t['peak_rss_mb']:.0f} MB | {yes(r['peak_rss_mb'] <= t['peak_rss_mb'])} |
| operator writes until converged | {writes} | | |
| creates done after | {r['creates_done_s']:.1f} s | | |
| entries per board | {p['entries_per_board']['min']}–{p['entries_per_board']['max']} (mean {p['entries_per_board']['mean']}, {p['entries']} in all) | | |
| deployments with two replicas in one zone | {p['deployments_not_spread_over_zones']} | 0 | |
| idle {s['seconds']:.0f} s afterwards{resync} | {s['reconciles']} reconciles, {settle_writes} writes, {s['still_converged']}/{r['deployments']} still converged | 0 writes | |

{plot_md}

Command (from the repository root; builds the operator, then runs the script):

```sh
make bench-controller          # = {r['command']}
```

`make bench-controller BENCH_CONTROLLER_ARGS="--boards 30 --deployments 100 --out /tmp/p8"` is a quick
run; `--help` lists the options. The raw numbers and time series are in
[controller-scale.json](controller-scale.json).

## What was measured

- **Setup**, not timed: a private control plane (`hack/testcluster.sh up`, control plane only), the
  CRDs, then per board a Board with labels `rockchipllama.io/soc` and `{ZONE_LABEL}`,
  its status (SoC, endpoint, 16 GiB memory, 256 GiB store, Ready) by server-side apply as
  `{AGENT_MANAGER}`, and a Lease (holderIdentity = board, {LEASE_SECONDS} s) that a background thread
  renews every {LEASE_RENEW_S:.0f} s for the whole run ({r['lease_renewals']} renewals, {r['lease_renewal_failures']} failed). Then
  `rockchip-llama-operator run --namespace {NS} --metrics-listen 127.0.0.1:PORT`, defaults
  otherwise.
- **Load**: {r['deployments']} ModelDeployments (gguf, an `http://` source with sha256 and sizeBytes
  100 MiB — a different file each, `spreadBy: {ZONE_LABEL}`) created by {WORKERS} parallel
  writers as fast as the API server takes them.
- **Converged** means, for every ModelDeployment, `status.observedGeneration == metadata.generation`
  and `status.replicas == spec.replicas`: the controller has seen the spec, written an entry on
  {r['replicas']} Boards and reported it. It is observed through one watch on the ModelDeployments
  ({r['watch_events']} events): the time is when the event that made the last one converge arrived.
  Agents acting on their entries (download, load, report Ready) are not simulated, so
  `readyReplicas` stays 0; that part is the agents' and the network's time, not the controller's.
- **Reconciles/s**: the delta of `rockchip_llama_operator_reconciles_total` over the convergence time
  (a reconcile per create, per finalizer update and per Board event that concerns a deployment).
  **Writes**: `rockchip_llama_operator_writes_total` by kind; the finalizer patch and Events are
  not counted there.
- **RSS**: `/proc/<pid>/status` VmRSS and VmHWM of the operator every {RSS_SAMPLE_S} s. Before the
  first create it held the {r['boards']} Boards and Leases: {r['rss_before_first_create_mb']:.1f} MB.

Absolute times on this machine are noise: the API server, etcd, the operator, and this Python load
generator (creates, lease renewals, the watch) share {env['cpus']} cores with whatever else runs there
(1-minute load average {r['loadavg_1m']['before']} before the first create, {r['loadavg_1m']['at_converge']} at convergence).
The CPU times (user + system, from `/proc`) and the shape of the result say more. Until
convergence the busiest process was {busy} ({cpus[busy]:.1f} CPU-seconds in {r['converge_s']:.1f} s), the
operator used {cpus['operator']:.1f}; the controller wrote one Board entry per replica, about one status
per deployment, and nothing at the resync.
"""


def to_json(result: dict) -> str:
    """Indented JSON with each time-series sample on one line."""
    text = json.dumps(result, indent=1)
    one_line = lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"  # noqa: E731
    return re.sub(r"\[\s+([-0-9.e,\s]+?)\s+\]", one_line, text) + "\n"


def main() -> int:
    cache = Path(os.environ.get("ROCKCHIP_LLAMA_CACHE", Path.home() / ".cache/rockchip-llama"))
    target = Path(os.environ.get("CARGO_TARGET_DIR", cache / "target"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boards", type=int, default=300)
    ap.add_argument("--deployments", type=int, default=1000)
    ap.add_argument("--replicas", type=int, default=2, help="replicas of each ModelDeployment (default 2)")
    ap.add_argument("--zones", type=int, default=3, help="zone label values the boards are spread over")
    ap.add_argument("--timeout", type=float, default=300, help="bound on convergence, seconds (default 300)")
    ap.add_argument("--poll", type=float, default=0.5,
                    help="seconds between samples of progress and metrics (default 0.5)")
    ap.add_argument("--settle", type=float, default=RESYNC_S + 5,
                    help=f"idle seconds after convergence to count rewrites (default {RESYNC_S + 5})")
    ap.add_argument("--operator", default=str(target / "release/rockchip-llama-operator"))
    ap.add_argument("--out", default=str(ROOT / "docs/bench"), help="where controller-scale.{md,json,png} go")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy the operator's log here")
    ap.add_argument("--replot", metavar="JSON", help="only redraw the PNG and the report from a JSON result")
    args = ap.parse_args()
    args.command = " ".join(["hack/bench/p8_controller_scale.py", *sys.argv[1:]])

    def on_signal(signum, _frame):
        raise Stop(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    out = Path(args.out)
    if args.replot:
        result = json.loads(Path(args.replot).read_text())
        out = Path(args.replot).parent
    else:
        try:
            result = run(args)
        except (Stop, KeyboardInterrupt) as e:
            log(f"interrupted ({e or 'Ctrl-C'})")
            return 130
        out.mkdir(parents=True, exist_ok=True)
        (out / "controller-scale.json").write_text(to_json(result))
    written = ["md"] if args.replot else ["md", "json"]
    note = plot(result, out / "controller-scale.png")
    written += [] if note else ["png"]
    if note:
        log(f"plot skipped: {note}")
    (out / "controller-scale.md").write_text(markdown(result, note))
    log(f"converged in {result['converge_s']:.1f} s (target {TARGET_CONVERGE_S:.0f}), "
        f"{result['reconciles_per_s']:.1f} reconciles/s, peak RSS {result['peak_rss_mb']:.1f} MB "
        f"(target {TARGET_RSS_MB:.0f}); wrote {out}/controller-scale.{{{','.join(written)}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
