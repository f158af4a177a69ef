"""`make bench` servers: llama-server and the agent on free loopback ports, started and stopped by
the launcher the Python test suites use too (hack/py/agentproc.py), and the CPU-contention monitor
that tells quiet rounds from disturbed ones."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))  # the shared launcher

from agentproc import RUNNING, Agent, ServerProc, link_model, safe_name, stop_all  # noqa: E402, F401

from common import CACHE, MODELS, fmt, log  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Servers
# ----------------------------------------------------------------------------------------------

# Every server between start() and stop() (the launcher's registry): CpuMeter counts their CPU
# time as ours, stop_all() (the launcher's) stops them.
LIVE = RUNNING

# Startup waits are backstops, not bounds: a start loads one small model, and only a hung server
# reaches this. Generous, so a start on a machine shared with a compiler does not fail the bench.
START_TIMEOUT = 300.0


class _Bench:
    """What the bench adds to a launcher process: a label, a log file named after it under
    `logdir` (one start per label and run), progress lines in the bench's log format."""

    kind = ""

    @property
    def label(self) -> str:
        return self.name

    @property
    def logpath(self) -> Path:
        return self.log_path

    def start(self, timeout: float = START_TIMEOUT):
        log(f"start {self.label}")
        super().start(timeout)
        log(f"  {self.label} ready on 127.0.0.1:{self.port} ({fmt(self.load_s, 2)} s)")
        return self


class Server(_Bench, ServerProc):
    """A server that is not the agent (llama-server): `argv_fn(port)` is its command line."""

    def __init__(self, label: str, kind: str, argv_fn, ready_path: str, logdir: Path):
        super().__init__(label, argv_fn, ready_path, logdir / f"{safe_name(label)}.log", say=log)
        self.kind = kind


class AgentServer(_Bench, Agent):
    """rockchip-llama-agent: `agent serve --listen 127.0.0.1:PORT ARGS...`."""

    kind = "agent"

    def __init__(self, label: str, binary: str, args: list[str], logdir: Path,
                 env: dict[str, str] | None = None):
        super().__init__(binary, args, logdir / f"{safe_name(label)}.log", env=env, name=label, say=log)


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


def make_llama_server(args, model_key: str, model_path: str, label: str, logdir: Path,
                      parallel: int = 1) -> Server:
    m = MODELS[model_key]

    def argv(port):
        return [args.llama_server, "-m", model_path, "--host", "127.0.0.1", "--port", str(port),
                "-t", str(args.threads), "-tb", str(args.threads), "-c", str(4096 * parallel),
                "-np", str(parallel), "--alias", m["name"]] + m["llama_server_args"]
    return Server(label, "llama-server", argv, "/health", logdir)


def make_agent(args, model_key: str, model_path: str, label: str, logdir: Path,
               extra: list[str] | None = None) -> AgentServer:
    m = MODELS[model_key]
    mdir = CACHE / "bench" / f"models-{model_key}"
    link_model(Path(model_path), mdir)
    return AgentServer(label, args.agent, ["--models-dir", str(mdir), "--default-model", m["name"],
                                           "--threads", str(args.threads)] + (extra or []), logdir)
