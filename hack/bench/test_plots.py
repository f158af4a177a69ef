"""`make test-bench-plots` (part of `make test`): every `make bench` report and its plots are drawn
again from the JSON committed in docs/bench/, into a temporary directory, through each bench's own
render-only command line; and every helper of plots.py draws. Needs the venv (hack/pyenv.sh).

    py=$(hack/pyenv.sh) && $py -m unittest discover -s hack/bench -p test_plots.py -v
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOCS = ROOT / "docs" / "bench"
MAX_PNG = 200_000  # bytes: keep the repository light

# (script and its render-only flag, the JSON it reads, the report it writes, the PNGs it draws)
REPORTS = [
    (["bench.py", "--render"], "results.json", "README.md", ["agent-vs-llama-server.png"]),
    (["npu_bench.py", "--render"], "npu.json", "npu.md", ["npu.png"]),
    (["gateway_bench.py", "--render"], "gateway.json", "gateway.md", ["gateway-p5.png", "gateway-p5-pinned.png", "gateway-p6.png"]),
    (["p7_distribution.py", "--render"], "distribution.json", "distribution.md", ["distribution.png"]),
    (["p8_controller_scale.py", "--replot"], "controller-scale.json", "controller-scale.md",
     ["controller-scale.png"]),
    (["p9_cold_start.py", "--render"], "cold-start.json", "cold-start.md", ["cold-start.png"]),
]


class Reports(unittest.TestCase):
    def test_each_report_redraws_from_its_committed_json(self):
        for (script, flag), js, md, pngs in REPORTS:
            with self.subTest(report=md), tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / js
                shutil.copy(DOCS / js, src)
                p = subprocess.run([sys.executable, str(HERE / script), flag, str(src)], cwd=ROOT,
                                   capture_output=True, text=True, timeout=300)
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                text = (Path(tmp) / md).read_text()
                for png in pngs:
                    out = Path(tmp) / png
                    self.assertTrue(out.is_file(), f"{png} not drawn")
                    self.assertEqual(out.read_bytes()[:8], b"\x89PNG\r\n\x1a\n", png)
                    self.assertLess(out.stat().st_size, MAX_PNG, f"{png}: keep it under {MAX_PNG} bytes")
                    self.assertTrue(f"]({png})" in text, f"{md} does not embed {png}")
                self.assertNotIn("No plot", text)

    def test_committed_reports_embed_their_plots(self):
        for _, _, md, pngs in REPORTS:
            text = (DOCS / md).read_text()
            for png in pngs:
                with self.subTest(png=png):
                    self.assertTrue(f"]({png})" in text, f"docs/bench/{md} does not embed {png}")
                    self.assertTrue((DOCS / png).is_file(), f"docs/bench/{png} is missing")


class Helpers(unittest.TestCase):
    """Every helper draws; the module docstring's cold-start example runs as written."""

    def test_helpers_draw(self):
        sys.path.insert(0, str(HERE))
        import plots

        self.assertIsNone(plots.missing())
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            cached_s, download_s = [3.4, 3.6, 3.5, 4.1], [24.0, 25.5, 23.9, 26.2]
            # The module docstring's example, as written there.
            example = "\n".join(line[4:].split("  # ")[0] for line in _first_indented_block(plots.__doc__))
            exec(compile(example, "plots.__doc__", "exec"), {"cached_s": cached_s, "download_s": download_s,
                                                              "out": out})
            self.assertTrue((out / "cold-start.png").stat().st_size > 0)

            fig, ax = plots.figure(2, 3)
            plots.quantile_cdf(ax[0], {"gateway": ([0, 0.5, 0.99, 1], [1, 2, 5, 9])}, unit="ms", log=True)
            plots.ladder(ax[1], ["1", "8"], {"ours": [{"p50": 1, "p99": 3}, {"p50": 2, "p99": 9}]}, unit="ms")
            plots.strip(ax[2], ["a"], {"on": [[1, 2, 3]], "off": [[5, 6]]}, unit="ms", median_fmt="{:.0f}")
            plots.grouped_bars(ax[3], ["1", "4", "8"], {"n_batch 1": [10, 20, 28], "n_batch 4": [10, 40, 83]},
                               ylabel="tok/s", xlabel="clients", ranges={"n_batch 1": [(9, 11), None, (27, 29)]})
            plots.ratio_strip(ax[4], {"decode": {"m": [0.98, 1.01]}}, {"decode": ("≥", 0.97)})
            plots.timeline(ax[5], [0, 1, 2], {"board 1": [0, 5, 10], "board 2": [0, 4]}, ylabel="MiB")
            plots.target(ax[5], 8, "target")
            plots.save(fig, out / "all.png")
            self.assertLess((out / "all.png").stat().st_size, MAX_PNG)


def _first_indented_block(doc: str) -> list[str]:
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))
    end = next((i for i in range(start, len(lines)) if lines[i] and not lines[i].startswith("    ")), len(lines))
    return [line for line in lines[start:end] if line.strip()]


if __name__ == "__main__":
    unittest.main()
