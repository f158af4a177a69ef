"""`make bench` servers: starting/stopping llama-server and the agent on free loopback ports, and
the CPU-contention monitor that tells quiet rounds from disturbed ones."""
from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from common import CACHE, MODELS, log

# ----------------------------------------------------------------------------------------------
# Servers
# ----------------------------------------------------------------------------------------------

LIVE: list["Server"] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# Contention monitor: this 2-core VM is shared; llama.cpp's spinning thread barriers collapse
# (10-100x slower) when another process takes a core. We measure the CPU time used by everything
# that is *not* us (this script + the servers we started) and retry rounds that were disturbed.
# ----------------------------------------------------------------------------------------------

CLK = os.sysconf("SC_CLK_TCK")
FOREIGN_MAX = float(os.environ.get("BENCH_FOREIGN_MAX", "0.15"))  # cores used by others: "quiet"
QUIET_STEP = float(os.environ.get("BENCH_QUIET_STEP", "60"))      # max wait before each test / retry


def _proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # utime + stime (all threads)
    except (OSError, IndexError, ValueError):
        return 0


class CpuMeter:
    """Cores used by other processes between start() and stop()."""

    def __init__(self):
        self.pids = []

    def _snap(self):
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq (guest is in user)
        ours = sum(_proc_ticks(p) for p in self.pids)
        return time.monotonic(), busy, ours, v[7] if len(v) > 7 else 0

    def start(self) -> "CpuMeter":
        self.pids = [os.getpid()] + [s.proc.pid for s in LIVE if s.proc and s.proc.poll() is None]
        self.t0 = self._snap()
        return self

    def stop(self) -> dict:
        t1 = self._snap()
        dt_ = max(t1[0] - self.t0[0], 1e-3)
        foreign = max(0.0, ((t1[1] - self.t0[1]) - (t1[2] - self.t0[2])) / CLK / dt_)
        return {"foreign_cores": round(foreign, 3), "steal_cores": round((t1[3] - self.t0[3]) / CLK / dt_, 3),
                "measured_s": round(dt_, 2)}


def wait_quiet(max_s: float, why: str = "") -> dict:
    """Waits (bounded) until other processes use < FOREIGN_MAX cores for 3 s in a row."""
    t0 = time.monotonic()
    quiet = 0
    last = None
    said = False
    while time.monotonic() - t0 < max_s:
        m = CpuMeter().start()
        time.sleep(1.0)
        last = m.stop()
        quiet = quiet + 1 if last["foreign_cores"] < FOREIGN_MAX else 0
        if quiet >= 3:
            break
        if not said and time.monotonic() - t0 > 3:
            log(f"  waiting for other processes to leave the CPU{(' (' + why + ')') if why else ''}: "
                f"{last['foreign_cores']:.2f} cores busy (max wait {max_s:.0f} s)")
            said = True
    return {"waited_s": round(time.monotonic() - t0, 1), "quiet": quiet >= 3,
            "foreign_cores": last and last["foreign_cores"]}


class Server:
    def __init__(self, label: str, kind: str, argv_fn, ready_path: str, logdir: Path):
        self.label, self.kind, self.ready_path = label, kind, ready_path
        self.port = free_port()
        self.argv = argv_fn(self.port)
        self.logpath = logdir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.log"
        self.proc: subprocess.Popen | None = None
        self.load_s: float | None = None

    def start(self, timeout: float = 180.0) -> "Server":
        log(f"start {self.label} on 127.0.0.1:{self.port}")
        logf = open(self.logpath, "wb")  # one start per label and run
        logf.write(("$ " + " ".join(self.argv) + "\n").encode())
        logf.flush()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        LIVE.append(self)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; see {self.logpath}:\n"
                                   + tail(self.logpath))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", self.ready_path)
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    self.load_s = time.monotonic() - t0
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} not ready after {timeout:.0f} s; see {self.logpath}:\n" + tail(self.logpath))

    def rss_peak_mb(self) -> float | None:
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, AttributeError):
            pass
        return None

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            if self in LIVE:
                LIVE.remove(self)
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)  # the process group we created (start_new_session)
            p.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self in LIVE:
            LIVE.remove(self)


def tail(path: Path, n: int = 20) -> str:
    try:
        return "".join(open(path, errors="replace").readlines()[-n:])
    except OSError:
        return ""


def stop_all() -> None:
    for s in list(LIVE):
        s.stop()


def make_llama_server(args, model_key: str, model_path: str, label: str, logdir: Path,
                      parallel: int = 1) -> Server:
    m = MODELS[model_key]

    def argv(port):
        return [args.llama_server, "-m", model_path, "--host", "127.0.0.1", "--port", str(port),
                "-t", str(args.threads), "-tb", str(args.threads), "-c", str(4096 * parallel),
                "-np", str(parallel), "--alias", m["name"]] + m["llama_server_args"]
    return Server(label, "llama-server", argv, "/health", logdir)


def make_agent(args, model_key: str, model_path: str, label: str, logdir: Path,
               extra: list[str] | None = None) -> Server:
    m = MODELS[model_key]
    mdir = CACHE / "bench" / f"models-{model_key}"
    mdir.mkdir(parents=True, exist_ok=True)
    link = mdir / Path(model_path).name
    if not link.exists():
        link.symlink_to(model_path)

    def argv(port):
        return [args.agent, "serve", "--listen", f"127.0.0.1:{port}", "--models-dir", str(mdir),
                "--default-model", m["name"], "--threads", str(args.threads)] + (extra or [])
    return Server(label, "agent", argv, "/readyz", logdir)
