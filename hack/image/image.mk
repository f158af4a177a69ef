# Container images and the single-board Compose file; included by the root Makefile.
#
#   make image COMPONENT=agent|operator ARCH=amd64|arm64
#                        build the Dockerfile (docker buildx where a daemon answers, else buildah
#                        with local stand-in bases) and print the OCI archive's path:
#                        ~/.cache/rockchip-llama/images/<component>-<arch>.oci.tar,
#                        reference localhost/rockchip-llama-<component>:<version>
#   make images          both components for this machine's architecture
#   make test-compose    docker-compose.yml against the Compose Specification's JSON schema
#   make test-image      both images built (their cargo stage seeded from this machine's release
#                        build of the agent and the operator), then
#                        each binary run inside its image as its user
#
# docs/images.md has the details and the measured times.

IMAGE_DIR := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
IMAGE_REPO_ROOT := $(abspath $(IMAGE_DIR)/../..)
COMPONENT ?= agent
ARCH ?= $(shell case "$$(uname -m)" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac)

.PHONY: image images image-deps test-compose test-image

image-deps:
	@$(IMAGE_DIR)/install.sh

image: image-deps
	@$(IMAGE_DIR)/build.sh $(COMPONENT) $(ARCH)

images: image-deps
	@$(IMAGE_DIR)/build.sh agent $(ARCH)
	@$(IMAGE_DIR)/build.sh operator $(ARCH)

test-compose:
	$(call step,docker-compose.yml against the Compose Specification schema)
	@py=$$($(IMAGE_REPO_ROOT)/hack/pyenv.sh) && schema=$$($(IMAGE_DIR)/compose-schema.sh) && \
	  "$$py" $(IMAGE_DIR)/check_compose.py "$$schema" $(IMAGE_REPO_ROOT)/docker-compose.yml

# `build` and the operator's release build first: the images' cargo stage starts from them
# (IMAGE_CARGO_SEED, build.sh), so it compiles nothing the machine has compiled already.
test-image: test-compose image-deps build
	cargo build --release -p rockchip-llama-operator
	$(call step,images: agent and operator from the Dockerfile (stand-in bases); each binary run inside as its user)
	$(IMAGE_DIR)/test.sh
