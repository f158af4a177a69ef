# `make bench`: our agent vs llama.cpp's llama-server (issue 2). Included from the root Makefile.
# Not a CI gate; writes docs/bench/README.md + docs/bench/results.json. Pass bench.py options via
# BENCH_ARGS, e.g. `make bench BENCH_ARGS="--rounds 2 --models smollm2"`.
.PHONY: bench
bench:
	hack/bench/run.sh $(BENCH_ARGS)
