#!/usr/bin/env bash
# Installs what `make image` and `make test-image` need when there is no usable `docker buildx`:
# buildah (builds the Dockerfile without a daemon), and debootstrap (makes the local stand-ins
# for the base images, hack/image/standins.sh). Debian packages only. Idempotent: a machine that
# has them pays one dpkg query, and says so.
set -euo pipefail
need=()
for p in buildah debootstrap; do
  if dpkg -s "$p" >/dev/null 2>&1; then
    echo "image/install: $p $(dpkg-query -W -f='${Version}' "$p") already installed" >&2
  else
    need+=("$p")
  fi
done
[ "${#need[@]}" -eq 0 ] && exit 0
echo "image/install: installing ${need[*]} (apt-get install --no-install-recommends)" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# buildah's recommends (crun/runc, fuse-overlayfs, slirp4netns) are not needed: builds run with
# --isolation chroot and the vfs storage driver (hack/image/build.sh).
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
for p in "${need[@]}"; do
  echo "image/install: $p $(dpkg-query -W -f='${Version}' "$p") installed" >&2
done
