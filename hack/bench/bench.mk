# `make bench`: our agent vs llama.cpp's llama-server (issue 2), then `make bench-npu`, `-controller`, `-distribution`, `-gateway` and `-cold-start`. Included
# from the root Makefile. Not a CI gate; writes docs/bench/README.md + results.json and
# docs/bench/npu.md + npu.json. Pass bench.py options via BENCH_ARGS, e.g.
# `make bench BENCH_ARGS="--rounds 2 --models smollm2"`, and npu_bench.py options via BENCH_NPU_ARGS.
#
# `make bench-npu` alone: the RKLLM (NPU) engine against rkllm-sim at vendor speed — agent overhead
# vs the runtime driven directly, 8 concurrent clients, n_batch 4 vs 1, prompt cache on/off (~3 min).
#
# `make bench-controller` (also run by `make bench`): P8, the controller at scale — 300 Boards
# written by a load generator (no agents) × 1000 ModelDeployments on a private test control plane;
# convergence time, reconciles/s, operator peak RSS (~3 min). Writes docs/bench/controller-scale.
# {md,json,png}; options via BENCH_CONTROLLER_ARGS (see hack/bench/p8_controller_scale.py --help).
#
# `make bench-distribution` (also run by `make bench`; root: network namespaces, a bridge, tc): P7,
# one model blob to 8 boards over 100 Mbit/s links, from the origin vs relayed along the
# controller's chain, one board slowed (~8 min). Writes docs/bench/distribution.{md,json,png};
# options via BENCH_DISTRIBUTION_ARGS (see hack/bench/p7_distribution.py --help).
#
# `make bench-gateway` (also run by `make bench`; installs nginx with apt the first time): issue 10's
# P5, the gateway's proxy overhead next to a direct connection and nginx (1 board, rkllm-sim sped up,
# hack/loadgen), and P6, LeastLoad vs RoundRobin under a skewed mix and PrefixAffinity vs RoundRobin
# on multi-turn conversations (3 boards at vendor speed), each on its own private test cluster
# (~19 min). Writes docs/bench/gateway.{md,json} and gateway-p5.png, gateway-p6.png; options via
# BENCH_GATEWAY_ARGS (see hack/bench/gateway_bench.py --help, e.g. "--only p5").
#
# `make bench-cold-start` (also run by `make bench`): P9, scale from zero — time from the first
# request to the first token for an autoscaled ModelDeployment at zero replicas, the file cached on a
# board vs downloaded first, next to a warm replica; SmolLM2 on the CPU engine and the Qwen3 sim on
# rkllm-sim at vendor speed with an assumed load speed (250 MB/s, eMMC class), 2 boards (~4 min).
# Writes docs/bench/cold-start.{md,json,png}; options via BENCH_COLD_START_ARGS (see
# hack/bench/p9_cold_start.py --help, e.g. "--samples 3 --engines npu").
#
# Every report embeds plots drawn with hack/bench/plots.py from its JSON (PNG next to it in
# docs/bench/); each bench's `--render JSON` (p8: `--replot JSON`) redraws page and plots without
# measuring. `make test-bench-plots` (part of `make test`, ~40 s) redraws all of them from the
# committed JSON into a temporary directory and checks the PNGs.
.PHONY: bench bench-npu bench-controller bench-distribution bench-gateway bench-cold-start test-bench-plots
bench:
	hack/bench/run.sh $(BENCH_ARGS)
	hack/bench/npu_run.sh $(BENCH_NPU_ARGS)
	$(MAKE) --no-print-directory bench-controller
	$(MAKE) --no-print-directory bench-distribution
	$(MAKE) --no-print-directory bench-gateway
	$(MAKE) --no-print-directory bench-cold-start

bench-npu:
	hack/bench/npu_run.sh $(BENCH_NPU_ARGS)

bench-controller:
	cargo build --release -p rockchip-llama-operator --bin rockchip-llama-operator
	py=$$(hack/pyenv.sh) && $$py hack/bench/p8_controller_scale.py $(BENCH_CONTROLLER_ARGS)

bench-distribution:
	cargo build --release -p rockchip-llama-agent
	py=$$(hack/pyenv.sh) && $$py hack/bench/p7_distribution.py --agent $(AGENT) $(BENCH_DISTRIBUTION_ARGS)

bench-gateway:
	hack/bench/install-nginx.sh >/dev/null
	cargo build --release -p rockchip-llama-agent -p rockchip-llama-operator -p rockchip-llama-loadgen
	py=$$(hack/pyenv.sh) && $$py hack/bench/gateway_bench.py $(BENCH_GATEWAY_ARGS)

bench-cold-start:
	cargo build --release -p rockchip-llama-agent -p rockchip-llama-operator
	py=$$(hack/pyenv.sh) && $$py hack/bench/p9_cold_start.py $(BENCH_COLD_START_ARGS)

test-bench-plots:
	$(call step,bench plots: every docs/bench report redrawn from its committed JSON)
	py=$$(hack/pyenv.sh) && nice -n 10 $$py -m unittest discover -s hack/bench -p test_plots.py
