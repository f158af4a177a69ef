# Shared by hack/image/*.sh (sourced, not run). Where the image tier keeps its state, and buildah
# with that state: its own storage (vfs: works on any filesystem, no fuse, no overlay mounts), its
# own run root, and its own temporary directory, because buildah keeps `RUN --mount=type=cache`
# directories under $TMPDIR/buildah-cache/<id> and /var/tmp would lose them between CI runs.
#
#   ~/.cache/rockchip-llama/
#     images/<component>-<arch>.oci.tar   what `make image` produces (the documented hand-off)
#     buildah/<driver>/{root,runroot}     buildah storage and run root, one per storage driver
#     buildah/tmp/buildah-cache/<id>      the Dockerfile's cache mounts (cargo registry, target)
#     standins/                           root file systems and toolchain for the stand-in bases
#
# Storage driver (BUILDAH_DRIVER): overlay where the kernel has it and the cache is not itself on
# overlayfs (a layer costs nothing), else vfs, which works anywhere but copies the whole file system
# for every layer (about 5 s per Dockerfile step on the 1.5 GB build stage here).

IMAGE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${ROCKCHIP_LLAMA_CACHE:-$HOME/.cache/rockchip-llama}
IMAGES_DIR=$CACHE/images
BUILDAH_DIR=$CACHE/buildah
STANDINS_DIR=$CACHE/standins

# The three base images the Dockerfile's FROM lines name. The stand-ins are tagged exactly so.
RUST_BASE=docker.io/library/rust:1.95-bookworm
SLIM_BASE=docker.io/library/debian:bookworm-slim
CC_BASE=gcr.io/distroless/cc-debian12

log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: error: %s\n' "$*" >&2; exit 1; }

if [ -z "${BUILDAH_DRIVER:-}" ]; then
  mkdir -p "$BUILDAH_DIR"
  if grep -qw overlay /proc/filesystems 2>/dev/null && [ "$(stat -f -c %T "$BUILDAH_DIR")" != overlayfs ]; then
    BUILDAH_DRIVER=overlay
  else
    BUILDAH_DRIVER=vfs
  fi
fi

bah() {
  local d="$BUILDAH_DIR/$BUILDAH_DRIVER"
  mkdir -p "$d/root" "$d/runroot" "$BUILDAH_DIR/tmp"
  TMPDIR="$BUILDAH_DIR/tmp" BUILDAH_ISOLATION=chroot \
    buildah --root "$d/root" --runroot "$d/runroot" --storage-driver "$BUILDAH_DRIVER" "$@"
}

# `docker buildx` counts only when a daemon answers; the client alone (as on the CI machines)
# cannot build anything.
have_buildx() {
  command -v docker >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1 \
    && docker info >/dev/null 2>&1
}

# Seconds since $1 (a `date +%s.%N`), one decimal.
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
