"""What the benches that run on a private test cluster share (gateway_bench.py, p9_cold_start.py):
`hack/testcluster.sh up --boards N` in its own directory as a context manager that always brings
it down (its logs kept next to it), a bounded `wait_until`, the `Stop` a signal handler raises to
unwind through it, and the machine facts each report records.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
import urllib.error
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 300


class Stop(Exception):
    """SIGTERM or SIGHUP: unwind through the finally blocks that stop the cluster."""


def wait_until(what: str, check, timeout: float, every: float = 0.3):
    """`check()` until it returns something true, for at most `timeout` seconds; the errors a
    cluster still coming up raises count as not yet."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError, KeyError, urllib.error.URLError, subprocess.SubprocessError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def environment() -> dict:
    """Date, commit, CPU, kernel and load when the run started (every report prints them)."""
    def sh(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, text=True, capture_output=True, timeout=10).stdout.strip()
        except OSError:
            return "unknown"

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": sh("git", "-C", str(ROOT), "describe", "--always", "--dirty"),
            "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(), "loadavg_before": os.getloadavg()[0]}


class TestCluster:
    """One `hack/testcluster.sh up --boards N` in `work/name`; `down` on exit, also on failure.
    After `with`: `gateway`, `origin`, `origin_dir`, `env` (with KUBECONFIG), `kubectl`, and
    `boards`, one `{"name", "endpoint", "pid"}` per board."""

    def __init__(self, work: Path, name: str, boards: int, env: dict[str, str], log: Callable[[str], None]):
        self.dir = work / name
        self.logs = work / f"{name}-logs"
        self.boards_n = boards
        self.log = log
        self.env = dict(os.environ, TESTCLUSTER_DIR=str(self.dir), **env)
        bins = subprocess.run([ROOT / "hack/k8s/bins.sh"], check=True, text=True, capture_output=True, timeout=600)
        self.kubectl = str(Path(bins.stdout.strip()) / "kubectl")
        self.gateway = self.origin = ""
        self.origin_dir = Path()
        self.boards: list[dict] = []

    def __enter__(self):
        extra = {k: v for k, v in self.env.items() if k.startswith(("TESTCLUSTER_", "RKLLM_SIM_", "ROCKCHIP_LLAMA_LOG"))
                 and k != "TESTCLUSTER_DIR"}
        self.log(f"cluster: {' '.join(f'{k}={v!r}' for k, v in sorted(extra.items()))} "
                 f"hack/testcluster.sh up --boards {self.boards_n}")
        try:
            out = subprocess.run([ROOT / "hack/testcluster.sh", "up", "--boards", str(self.boards_n)], env=self.env,
                                 check=True, text=True, stdout=subprocess.PIPE, timeout=UP_TIMEOUT_S).stdout
        except BaseException:
            self.down()
            raise
        kv = dict(re.findall(r"^([A-Z_]+)=(.*)$", out, re.M))
        self.env["KUBECONFIG"] = kv["KUBECONFIG"]
        self.gateway, self.origin, self.origin_dir = kv["GATEWAY"], kv["ORIGIN"], Path(kv["ORIGIN_DIR"])
        self.boards = [{"name": n, "endpoint": e, "pid": int(p)}
                       for n, e, p in re.findall(r"^BOARD (\S+) (\S+) (\d+)$", out, re.M)]
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def down(self) -> None:
        """Keeps the logs next to the cluster's directory (the bench's work directory), then stops it."""
        self.log(f"cluster down ({self.dir})")
        if (self.dir / "logs").is_dir():
            shutil.copytree(self.dir / "logs", self.logs, dirs_exist_ok=True)
        try:
            subprocess.run([ROOT / "hack/testcluster.sh", "down"], env=self.env, timeout=180, check=False,
                           stdout=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.log(f"hack/testcluster.sh down timed out; run: TESTCLUSTER_DIR={self.dir} hack/testcluster.sh down")
