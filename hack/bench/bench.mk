# `make bench`: our agent vs llama.cpp's llama-server (issue 2), then `make bench-npu`. Included
# from the root Makefile. Not a CI gate; writes docs/bench/README.md + results.json and
# docs/bench/npu.md + npu.json. Pass bench.py options via BENCH_ARGS, e.g.
# `make bench BENCH_ARGS="--rounds 2 --models smollm2"`, and npu_bench.py options via BENCH_NPU_ARGS.
#
# `make bench-npu` alone: the RKLLM (NPU) engine against rkllm-sim at vendor speed — agent overhead
# vs the runtime driven directly, 8 concurrent clients, n_batch 4 vs 1, prompt cache on/off (~3 min).
.PHONY: bench bench-npu
bench:
	hack/bench/run.sh $(BENCH_ARGS)
	hack/bench/npu_run.sh $(BENCH_NPU_ARGS)

bench-npu:
	hack/bench/npu_run.sh $(BENCH_NPU_ARGS)
