#!/usr/bin/env bash
# Installs the Debian packages the build needs (llama-cpp-sys-2 drives cmake and runs bindgen,
# which loads libclang), plus any named as arguments (make test-ui: chromium chromium-driver).
# Idempotent: a machine that already has them pays one dpkg query.
set -euo pipefail
need=()
for p in cmake libclang-dev "$@"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${need[*]} (apt)" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
