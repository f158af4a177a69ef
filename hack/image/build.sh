#!/usr/bin/env bash
# make image COMPONENT=agent|operator ARCH=amd64|arm64: builds the Dockerfile and writes the image
# as an OCI archive whose reference is the full image name, then prints the archive's path (the
# only thing on stdout):
#
#   ~/.cache/rockchip-llama/images/<component>-<arch>.oci.tar
#   ref: ${IMAGE_REPO:-localhost}/rockchip-llama-<component>:<version>   (version: Cargo.toml's)
#
# Import it into containerd with `ctr -n k8s.io images import <archive>`; with podman or docker,
# `podman load -i` / `docker load -i` after `skopeo copy oci-archive:... docker-archive:...`.
#
# Builder: `docker buildx` when a Docker daemon answers, else buildah (hack/image/install.sh) with
# chroot isolation, vfs storage and its own storage under ~/.cache/rockchip-llama/buildah (see
# lib.sh). With buildah the bases are, by default, the local stand-ins of hack/image/standins.sh
# (IMAGE_BASES=standins, for machines that cannot pull); IMAGE_BASES=registry pulls the real ones.
#
# IMAGE_CARGO_SEED=1 (buildah, native, root; `make test-image` sets it): the Dockerfile's
# two cargo caches start from this machine's own cargo registry ($CARGO_HOME/registry) and target
# directory ($CARGO_TARGET_DIR) instead of empty: each cache directory gets an overlay mount for
# the build, the machine's directory as its read-only lower layer and a private upper layer under
# ~/.cache/rockchip-llama/buildah/seed/ taking every write, so the machine's own build is never
# touched. With CARGO_HOME passed through (build argument CARGO_HOME_DIR) the registry's path, part of cargo's
# fingerprints, is the same inside, and what `make build` compiled (llama.cpp included) is fresh:
# the agent's and the operator's `cargo build --release -p …` in the image are the machine's own.
set -euo pipefail
# shellcheck source=hack/image/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

component=${1:-${COMPONENT:-agent}}
arch=${2:-${ARCH:-}}
case "$component" in agent | operator) ;; *) die "COMPONENT=$component: agent or operator" ;; esac
host_arch=$(case "$(uname -m)" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac)
arch=${arch:-$host_arch}
case "$arch" in amd64 | arm64) ;; *) die "ARCH=$arch: amd64 or arm64" ;; esac

version=${VERSION:-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$IMAGE_ROOT/Cargo.toml")}
[ -n "$version" ] || die "no version in Cargo.toml's [workspace.package]"
revision=$(git -C "$IMAGE_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git -C "$IMAGE_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi
name="${IMAGE_REPO:-localhost}/rockchip-llama-$component:$version"
out="$IMAGES_DIR/$component-$arch.oci.tar"
mkdir -p "$IMAGES_DIR"
build_args=(--build-arg "COMPONENT=$component" --build-arg "VERSION=$version" --build-arg "REVISION=$revision")

t0=$(date +%s.%N)
if have_buildx; then
  log "building $name for linux/$arch with docker buildx"
  docker buildx build --platform "linux/$arch" "${build_args[@]}" \
    --output "type=oci,dest=$out.part,name=$name" -f "$IMAGE_ROOT/Dockerfile" "$IMAGE_ROOT" >&2
else
  command -v buildah >/dev/null || die "neither docker buildx (with a daemon) nor buildah: run hack/image/install.sh"
  mkdir -p "$BUILDAH_DIR"
  exec 9> "$BUILDAH_DIR/build.lock"
  flock 9
  case "${IMAGE_BASES:-standins}" in
    standins) "$IMAGE_ROOT/hack/image/standins.sh"; pull=never ;;
    registry) pull=true ;;
    *) die "IMAGE_BASES=${IMAGE_BASES}: standins or registry" ;;
  esac
  seeded=()
  unseed() {
    local m
    for m in "${seeded[@]}"; do umount "$m" 2>/dev/null || log "warning: could not unmount $m"; done
    seeded=()
  }
  trap unseed EXIT
  if [ "${IMAGE_CARGO_SEED:-0}" = 1 ] && [ "$arch" = "$host_arch" ] && [ "$(id -u)" -eq 0 ]; then
    host_cargo_home=${CARGO_HOME:-$HOME/.cargo}
    host_target=${CARGO_TARGET_DIR:-$CACHE/target}
    seed() {  # seed LOWER CACHE_ID: overlay LOWER (read-only) + a private upper onto the cache
      local dir="$BUILDAH_DIR/tmp/buildah-cache/$2" layers="$BUILDAH_DIR/seed/$2"
      [ -d "$1" ] || return 0
      mkdir -p "$dir" "$layers/upper" "$layers/work"
      while mountpoint -q "$dir"; do umount "$dir"; done  # left by a build that was killed
      mount -t overlay overlay -o "lowerdir=$1,upperdir=$layers/upper,workdir=$layers/work" "$dir"
      seeded+=("$dir")
      log "cache $2 seeded from $1 (writes go to ${layers/#$HOME/\~}/upper)"
    }
    seed "$host_cargo_home/registry" rockchip-llama-cargo-registry
    seed "$host_target" "rockchip-llama-cargo-target-$arch"
    build_args+=(--build-arg "CARGO_HOME_DIR=$host_cargo_home")
  fi
  log "building $name for linux/$arch with buildah $(buildah --version | awk '{print $3}') (bases: ${IMAGE_BASES:-standins})"
  # BUILD* are passed explicitly: buildah 1.28 fills them in only after it has resolved the
  # FROM --platform=$BUILDPLATFORM line, so a cross build would otherwise pick the target's base.
  bah build --layers --pull="$pull" --platform "linux/$arch" \
    --build-arg "BUILDPLATFORM=linux/$host_arch" --build-arg "BUILDOS=linux" --build-arg "BUILDARCH=$host_arch" \
    "${build_args[@]}" -t "$name" -f "$IMAGE_ROOT/Dockerfile" "$IMAGE_ROOT" >&2
  unseed
  log "writing $out"
  rm -f "$out.part"
  bah push --quiet "$name" "oci-archive:$out.part:$name" >&2
fi
mv "$out.part" "$out"
log "$name ($component, linux/$arch): $(du -h "$out" | cut -f1) archive in $(since "$t0") s"
echo "$out"
