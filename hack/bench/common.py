"""Shared by the `make bench` modules (see bench.py): cache path, the two test models, targets,
logging and number formatting."""
from __future__ import annotations

import os
import time
from pathlib import Path

CACHE = Path(os.environ.get("ROCKCHIP_LLAMA_CACHE", Path.home() / ".cache" / "rockchip-llama"))

MODELS = {
    "smollm2": {
        "name": "smollm2-135m-instruct",
        "label": "SmolLM2-135M-Instruct Q4_1",
        "llama_server_args": [],
    },
    "gemma": {
        "name": "gemma-3-270m",
        "label": "Gemma 3 270M (base) Q4_K_M",
        # The GGUF has no chat template; with --jinja (default) "gemma" would be a literal template.
        "llama_server_args": ["--no-jinja", "--chat-template", "gemma"],
    },
}

TARGETS = {"decode": 0.97, "prefill": 0.97, "ttft": 1.05, "prefix_reduction": 0.80}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# Used by the progress log lines as well as by the report.
def fmt(x, nd=None) -> str:
    if x is None:
        return "–"
    if nd is None:
        nd = 0 if abs(x) >= 100 else 1
    return f"{x:.{nd}f}"
