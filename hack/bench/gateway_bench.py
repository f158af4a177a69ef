"""Gateway benchmarks of issue 10 (`make bench-gateway`): P5, what the gateway's proxying costs next
to talking to a board directly and next to nginx; P6, how the routing policies compare.

    hack/bench/gateway_bench.py [--only p5|p6] [--out docs/bench]       (make bench-gateway)
    hack/bench/gateway_bench.py --render docs/bench/gateway.json        (report and plots again)

Each part starts its own private cluster with `hack/testcluster.sh up --boards N` (kube-apiserver,
etcd, the operator with its gateway, an origin with the test models, N simulated boards: agents on
rkllm-sim) in a temporary directory, and stops it on exit, also on failure, Ctrl-C or SIGTERM.

  P5  1 board, rkllm-sim 1000x faster than the vendor's numbers, short streamed answers; the same
      closed-loop load (hack/loadgen, N clients on keep-alive connections) (a) straight to the
      agent, (b) through the gateway, (c) through nginx (plain proxy_pass, no buffering, keep-alive
      upstream), interleaved in rounds. Details: gateway_p5.py.
  P6  3 boards at vendor speed. LeastLoad vs RoundRobin on a skewed mix (80 % short, 20 % long):
      users at 1.5x what the slots serve without waiting (closed loop, seeded scripts), and seeded
      Poisson schedules at 1.5x and 0.75x the requests/s the boards complete; then PrefixAffinity
      vs RoundRobin on multi-turn conversations over 8 shared system prompts: prefix-cache hit
      rate and TTFT. Details: gateway_p6.py.

Writes <out>/gateway.md (gateway_report.py, gateway_report_p6.py), gateway.json (every sample)
and gateway-p5.png, gateway-p5-pinned.png, gateway-p6.png. Needs the release binaries (agent,
operator, loadgen), nginx (hack/bench/install-nginx.sh) and matplotlib (hack/pyenv.sh's venv).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway_p5  # noqa: E402
import gateway_p6  # noqa: E402
import gateway_report  # noqa: E402
from testcluster import Stop, TestCluster, environment, wait_until  # noqa: E402

CACHE = Path(os.environ.get("ROCKCHIP_LLAMA_CACHE", Path.home() / ".cache" / "rockchip-llama"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", CACHE / "target"))
NS = "default"
MD_NAME = "qwen3"
MODEL = "qwen3-sim"
MODEL_FILE = "Qwen3-0.6B-sim_w8a8_rk3588.rkllm"
READY_TIMEOUT_S = 180


def log(msg: str) -> None:
    print(f"[gateway-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def http_json(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, dict(r.headers), r.read()


class Cluster(TestCluster):
    """A private test cluster (testcluster.py) with what P5 and P6 ask of it."""

    def __init__(self, work: Path, name: str, boards: int, env: dict[str, str]):
        super().__init__(work, name, boards, env, log)

    def operator_pid(self) -> int:
        for line in (self.dir / "pids").read_text().splitlines():
            pid, binary = line.split(" ", 1)
            if binary.endswith("/rockchip-llama-operator"):
                return int(pid)
        raise RuntimeError("the operator's PID is not in the cluster's pid list")

    def apply_md(self, replicas: int, strategy: str, n_batch: int = 1, prefix_chars: int = 256) -> None:
        sums = dict(line.split()[::-1] for line in (self.origin_dir / "SHA256SUMS").read_text().splitlines())
        doc = {
            "apiVersion": "rockchipllama.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": MD_NAME, "namespace": NS},
            "spec": {"model": MODEL, "format": "rkllm", "replicas": replicas, "socs": ["rk3588"],
                     "runtime": {"nBatch": n_batch},
                     "routing": {"strategy": strategy, "prefixChars": prefix_chars},
                     "source": {"url": f"{self.origin}/{MODEL_FILE}", "sha256": sums[MODEL_FILE]}},
        }
        subprocess.run([self.kubectl, "apply", "-f", "-"], input=json.dumps(doc), env=self.env, check=True,
                       text=True, stdout=subprocess.DEVNULL, timeout=60)

    def route(self) -> dict:
        _, _, body = http_json("GET", f"{self.gateway}/v1/models/{MODEL}")
        return json.loads(body)["meta"]

    def wait_routed(self, replicas: int, strategy: str) -> None:
        """Until the gateway routes the model to `replicas` boards with `strategy`, every board
        reports the model's slots, and one request through the gateway answers."""
        wait_until(f"{replicas} routed replicas with {strategy}",
                   lambda: (m := self.route())["ready_replicas"] == replicas and len(m["boards"]) == replicas
                   and m["routing"] == strategy, READY_TIMEOUT_S)
        status, _, _ = http_json("POST", f"{self.gateway}/v1/chat/completions",
                                 {"model": MODEL, "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 2},
                                 timeout=60)
        if status != 200:
            raise RuntimeError(f"a request through the gateway answered {status}")

    def board_loads(self) -> list[dict]:
        out = []
        for b in self.boards:
            _, _, body = http_json("GET", f"{b['endpoint']}/internal/v1/load")
            out.append(json.loads(body))
        return out

    def wait_idle(self) -> None:
        wait_until("idle boards", lambda: all(m["running"] + m["waiting"] == 0
                                              for r in self.board_loads() for m in r["models"]), 120)


def scrape(url: str) -> dict[str, float]:
    """A Prometheus text endpoint as {series: value}."""
    _, _, body = http_json("GET", url)
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            try:
                out[series] = float(value)
            except ValueError:
                pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["p5", "p6"], help="run one part (the report keeps the other's last numbers)")
    ap.add_argument("--out", default=str(ROOT / "docs/bench"), help="where gateway.{md,json} and the PNGs go")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the report and plots from a JSON result")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy the clusters' logs here")
    gateway_p5.add_args(ap)
    gateway_p6.add_args(ap)
    args = ap.parse_args()
    args.command = " ".join(["hack/bench/gateway_bench.py", *sys.argv[1:]])

    if args.render:
        result = json.loads(Path(args.render).read_text())
        gateway_report.write(result, Path(args.render).parent)
        return 0

    def on_signal(signum, _frame):
        raise Stop(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    out = Path(args.out)
    previous = out / "gateway.json"
    result = json.loads(previous.read_text()) if args.only and previous.exists() else {}
    result.update(environment=environment(), command=args.command)
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    t0 = time.monotonic()
    ok = False
    try:
        # Each part records where it ran: with --only, the other part's numbers are older.
        run = {"date": result["environment"]["date"], "commit": result["environment"]["commit"],
               "command": args.command}
        if args.only in (None, "p5"):
            result["p5"] = gateway_p5.run(args, work, Cluster) | {"run": run}
        if args.only in (None, "p6"):
            result["p6"] = gateway_p6.run(args, work, Cluster) | {"run": run}
        ok = True
    except (Stop, KeyboardInterrupt) as e:
        log(f"interrupted ({e or 'Ctrl-C'})")
        return 130
    finally:
        if args.keep_logs:
            for logs in work.glob("*-logs"):
                shutil.copytree(logs, Path(args.keep_logs) / logs.name, dirs_exist_ok=True)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work} for a look")
    result["environment"]["minutes"] = round((time.monotonic() - t0) / 60, 1)
    result["environment"]["loadavg_after"] = os.getloadavg()[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "gateway.json").write_text(json.dumps(result, indent=1) + "\n")
    gateway_report.write(result, out)
    log(f"done in {result['environment']['minutes']} min; wrote {out}/gateway.{{md,json}} and the plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
