# One Dockerfile for both images: COMPONENT=agent (the node agent, glibc, dlopens the vendor
# librkllmrt.so from the host) or COMPONENT=operator (operator + gateway, distroless: glibc and
# nothing else, no shell).
#
#   make image COMPONENT=agent ARCH=arm64      (docker buildx where a daemon answers, else buildah)
#   docker buildx build --platform linux/arm64 --build-arg COMPONENT=agent -t rockchip-llama-agent .
#
# The build stage always runs on the build machine's own platform and cross-compiles for
# TARGETARCH (amd64 or arm64) with Debian's cross gcc: no QEMU. The runtime stages therefore have
# no RUN at all, only COPY, so building an arm64 image on an amd64 machine never executes arm64
# code. docs/development.md#container-images explains the choices and what was verified.

ARG COMPONENT=agent

# --- build --------------------------------------------------------------------------------------
FROM --platform=$BUILDPLATFORM docker.io/library/rust:1.95-bookworm AS build
ARG TARGETARCH
ARG BUILDARCH
# cmake and libclang for llama-cpp-sys-2 (cmake build of llama.cpp, bindgen). A cross build also
# needs Debian's cross toolchain for the target (gcc, g++, libc, libstdc++, libgomp) and the
# target's Rust standard library.
RUN set -eu; \
    cross=""; \
    if [ "$TARGETARCH" != "$BUILDARCH" ]; then cross="crossbuild-essential-$TARGETARCH"; fi; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cmake libclang-dev $cross >/dev/null; \
    rm -rf /var/lib/apt/lists/*; \
    case "$TARGETARCH" in amd64) arch=x86_64 ;; arm64) arch=aarch64 ;; *) echo "TARGETARCH $TARGETARCH: amd64 or arm64" >&2; exit 1 ;; esac; \
    if [ -n "$cross" ]; then rustup target add "$arch-unknown-linux-gnu"; fi

ENV CARGO_TARGET_DIR=/cargo-target \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .

# The registry and the target directory are cache mounts: a rebuild after a source change
# compiles what changed, not llama.cpp and ~400 crates again. The target directory is per
# architecture and shared by both components. The binary is copied out because a cache mount is
# not part of the image. Along the way:
# - a cross build names the target's gcc (Debian's triplet-prefixed names) for cc, the linker and
#   cmake (llama-cpp-sys-2 hands CMAKE_* variables to it); a native build sets none of them and
#   omits --target, so it is the plain `cargo build --release` of a developer's machine;
# - both components are the same plain glibc build (the operator's distroless `cc` base has glibc
#   and libgcc_s), so both can start from the build machine's own compiled dependencies (below);
# - the agent gets llama.cpp's OpenMP runtime from the gcc that linked it (the slim base has no
#   libgomp), the CA bundle for model downloads, and /models owned by its user, so that a fresh
#   named volume mounted there is writable too.
# CARGO_HOME_DIR: cargo's home for the build, default the rust image's. `make test-image` passes
# the build machine's own and lays that machine's cargo registry and target directory under the
# two caches (copy-on-write), so a native build finds what the machine's `cargo build --release`
# compiled: cargo's fingerprints include the registry's path (docs/development.md, "Container
# images"). Not named CARGO_HOME: the image's ENV would win.
ARG CARGO_HOME_DIR=/usr/local/cargo
ARG COMPONENT
RUN --mount=type=cache,id=rockchip-llama-cargo-registry,target=${CARGO_HOME_DIR}/registry \
    --mount=type=cache,id=rockchip-llama-cargo-target-${TARGETARCH},target=/cargo-target \
    set -eu; \
    export CARGO_HOME="$CARGO_HOME_DIR"; \
    case "$TARGETARCH" in \
      amd64) arch=x86_64 ;; \
      arm64) arch=aarch64 ;; \
      *) echo "TARGETARCH $TARGETARCH: amd64 or arm64" >&2; exit 1 ;; \
    esac; \
    triple="$arch-unknown-linux-gnu"; gnu="$arch-linux-gnu"; triple_env=$(echo "$triple" | tr a-z- A-Z_); \
    target=""; bindir="$CARGO_TARGET_DIR/release"; \
    if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
      export "CC_${arch}_unknown_linux_gnu=$gnu-gcc" "CXX_${arch}_unknown_linux_gnu=$gnu-g++" \
        "AR_${arch}_unknown_linux_gnu=$gnu-ar" "CARGO_TARGET_${triple_env}_LINKER=$gnu-gcc" \
        CMAKE_SYSTEM_NAME=Linux CMAKE_SYSTEM_PROCESSOR="$arch"; \
      target="--target=$triple"; bindir="$CARGO_TARGET_DIR/$triple/release"; \
    fi; \
    case "$COMPONENT" in agent | operator) ;; *) echo "COMPONENT $COMPONENT: agent or operator" >&2; exit 1 ;; esac; \
    cargo build --release --locked $target -p "rockchip-llama-$COMPONENT" --bin "rockchip-llama-$COMPONENT"; \
    out=/out/root; \
    install -D -m 0755 "$bindir/rockchip-llama-$COMPONENT" "$out/usr/local/bin/rockchip-llama-$COMPONENT"; \
    if [ "$COMPONENT" = agent ]; then \
      install -D -m 0644 "$("$gnu-gcc" -print-file-name=libgomp.so.1)" "$out/usr/lib/$gnu/libgomp.so.1"; \
      install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"; \
      install -d -m 0755 -o 65532 -g 65532 "$out/models"; \
    fi

# --- agent runtime ----------------------------------------------------------------------------
# glibc, libstdc++ (llama.cpp is C++) and libgcc_s come with the base; libgomp from the build.
FROM docker.io/library/debian:bookworm-slim AS agent
COPY --from=build /out/root/ /
ENV ROCKCHIP_LLAMA_LISTEN=0.0.0.0:8080 \
    ROCKCHIP_LLAMA_MODELS_DIR=/models
# Not root: the NPU device node is reached through its group (docker-compose.yml: group_add; the
# chart: the device plugin), sysfs tuning is the one thing that needs root (docs/single-board.md).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/rockchip-llama-agent"]
CMD ["serve"]
LABEL org.opencontainers.image.description="RockchipLlama node agent: OpenAI and Ollama APIs on an RK3588 board's NPU (RKLLM, the host's librkllmrt.so) or CPU (llama.cpp)"

# --- operator runtime -------------------------------------------------------------------------
# glibc and libgcc_s, which the operator links against; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12 AS operator
COPY --from=build /out/root/ /
USER 65532:65532
EXPOSE 11434
ENTRYPOINT ["/usr/local/bin/rockchip-llama-operator"]
CMD ["run"]
LABEL org.opencontainers.image.description="RockchipLlama operator and gateway: places ModelDeployments on Boards and routes OpenAI/Ollama requests to them"

# --- the image ----------------------------------------------------------------------------------
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (the chart), Compose may add its own.
FROM ${COMPONENT}
ARG COMPONENT
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://example.invalid/rockchip-llama
LABEL org.opencontainers.image.title="rockchip-llama-${COMPONENT}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="RockchipLlama"
