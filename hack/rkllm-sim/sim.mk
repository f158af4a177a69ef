# rkllm-sim: the stand-in for the vendor's librkllmrt.so; included by the root Makefile.
#
#   make rkllm-sim   build both ABI variants and the simulated model files, then print (stdout,
#                    one per line): the ABI 1.2 library, the ABI 1.3 library, each model file.
#                    Progress goes to stderr, so tests can do
#                    ROCKCHIP_LLAMA_TEST_RKLLM="$$(make -s rkllm-sim | paste -sd:)"
#
# Each variant has its own target dir: the two feature sets would otherwise rebuild each other.

RKLLM_SIM_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
CACHE ?= $(HOME)/.cache/rockchip-llama
CARGO_TARGET_DIR ?= $(CACHE)/target

.PHONY: rkllm-sim
rkllm-sim:
	@$(RKLLM_SIM_ROOT)/build.sh "$(CARGO_TARGET_DIR)" "$(CACHE)/rkllm-sim/models"
