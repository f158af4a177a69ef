#!/usr/bin/env bash
# Installs nginx (Debian package `nginx`) for `make bench-gateway`, which runs it as a plain
# reverse proxy next to the gateway (P5). Idempotent: a machine that has it pays one dpkg query.
# Prints the nginx binary's path on stdout.
#
# The package's postinst would start the system service on port 80; the bench never uses it (it
# runs its own nginx in the foreground with a generated config), so a policy-rc.d refuses service
# starts during the install when the machine has none (the usual container idiom), and is removed
# afterwards.
set -euo pipefail
if ! dpkg -s nginx >/dev/null 2>&1; then
  echo "install-nginx: installing nginx (apt)" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=1
  fi
  cleanup() { if [ "$made_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
  trap cleanup EXIT
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq --no-install-recommends nginx >&2
fi
command -v nginx || echo /usr/sbin/nginx
