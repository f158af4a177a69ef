#!/usr/bin/env bash
# Installs the Debian packages the node tier (`make test-node`) runs on: containerd + runc (the
# container runtime), the CNI plugins (bridge, host-local, portmap, loopback), iptables and nft
# (kube-proxy, the kubelet and the CNI bridge program them; nft is also how teardown checks the
# host is clean), gcc + libc6-dev (the static pause binary) and openssl. Idempotent: when everything is
# present it costs one dpkg query and prints nothing.
#
# Versions are Debian 12's (pinned by the distribution): containerd 1.6.20, runc 1.1.5,
# containernetworking-plugins 1.1.1, iptables 1.8.9, nftables 1.0.6. The kubelet is pinned at 1.37
# because 1.38 needs a CRI with the RuntimeConfig call (containerd >= 2.0); docs/development.md.
#
# Only the binaries are used: the node tier starts containerd itself with its own config, root and
# socket, so the packaged containerd service is stopped and disabled when systemd started it.
set -euo pipefail
PKGS=(containerd runc containernetworking-plugins iptables nftables gcc libc6-dev openssl)
need=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  echo "node install-deps: installing ${need[*]} (apt)" >&2
  SUDO=""
  [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run (e.g. a concurrent install step) holds the lock for a while: wait, bounded.
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >&2
  # The package's service would run a second containerd on /run/containerd; this tier never uses
  # it. Without systemd (containers, CI VMs) there is nothing to stop.
  if [[ -d /run/systemd/system ]] && systemctl is-active --quiet containerd 2>/dev/null; then
    echo "node install-deps: stopping and disabling the packaged containerd service" >&2
    $SUDO systemctl disable --now containerd >&2 || true
  fi
fi
for b in containerd ctr runc iptables ip6tables nft gcc openssl; do
  command -v "$b" >/dev/null || { echo "node install-deps: $b missing after install" >&2; exit 1; }
done
for p in bridge host-local portmap loopback; do
  [[ -x "/usr/lib/cni/$p" ]] || { echo "node install-deps: /usr/lib/cni/$p missing" >&2; exit 1; }
done
