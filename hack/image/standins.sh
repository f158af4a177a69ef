#!/usr/bin/env bash
# Makes local stand-ins for the base images the Dockerfile's FROM lines name, for machines that
# cannot pull them (no registry access beyond package mirrors). Each is tagged with the exact
# name the Dockerfile uses, so the Dockerfile is built as it is, never edited for the test:
#
#   docker.io/library/debian:bookworm-slim   debootstrap --variant=minbase bookworm
#   docker.io/library/rust:1.95-bookworm     that + gcc/g++/make/pkg-config/ca-certificates (what
#                                            the real image's buildpack-deps base brings and the
#                                            build uses) + this machine's Rust 1.95 toolchain
#                                            under /usr/local/{rustup,cargo}, as the real image
#   gcr.io/distroless/cc-debian12            a few files: /etc/passwd with root, nobody and
#                                            nonroot (65532), /etc/group, nsswitch.conf, the CA
#                                            bundle, zoneinfo, /tmp, /home/nonroot; and the files
#                                            of Debian's libc6, libgcc-s1 and libstdc++6 taken
#                                            from the minbase root file system (no shell, no
#                                            package manager; the real image adds libgomp1 and
#                                            libssl3, which the operator does not use)
#
# They are stand-ins, not copies: good enough to build and run our images, labelled
# org.rockchip-llama.standin=<recipe> so a changed recipe (the numbers below, the toolchain, the
# machine's extra CA certificates) makes them again and nobody mistakes them for the real ones.
# The rust stand-in trusts what this machine trusts: CA certificates added locally
# (/usr/local/share/ca-certificates, e.g. a TLS-inspecting egress proxy's) are added to it the
# Debian way, or cargo inside the build could not reach crates.io. Root file systems and the
# toolchain are cached as tar files in ~/.cache/rockchip-llama/standins/. Needs root
# (debootstrap), buildah and debootstrap (hack/image/install.sh), and the Debian mirror (MIRROR,
# default deb.debian.org).
#
#   hack/image/standins.sh           make what is missing or stale
#   hack/image/standins.sh --force   make all three again
set -euo pipefail
# shellcheck source=hack/image/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIRROR=${MIRROR:-http://deb.debian.org/debian}
force=0
[ "${1:-}" = --force ] && force=1
[ "$(id -u)" -eq 0 ] || die "standins.sh needs root (debootstrap, and buildah's chroot isolation)"
command -v debootstrap >/dev/null || die "debootstrap missing: run hack/image/install.sh"

mkdir -p "$STANDINS_DIR"
exec 8> "$STANDINS_DIR/.lock"
flock 8

# Bump a number when its recipe below changes.
SLIM_RECIPE=1 RUST_RECIPE=1 CC_RECIPE=1
sysroot=$(rustc --print sysroot)
rust_version=$(rustc --version | awk '{print $2}')
case "$rust_version" in
  1.95.*) ;;
  *) die "the rust stand-in must carry Rust 1.95 (the Dockerfile's rust:1.95-bookworm); rustc is $rust_version" ;;
esac
extra_cas=(/usr/local/share/ca-certificates/*.crt)
[ -e "${extra_cas[0]}" ] || extra_cas=()
slim_recipe="slim-$SLIM_RECIPE"
rust_recipe="rust-$RUST_RECIPE-$SLIM_RECIPE-$( { rustc -vV; cat "${extra_cas[@]}" /dev/null; } | sha256sum | cut -c1-12)"
cc_recipe="cc-$CC_RECIPE-$SLIM_RECIPE"

current() {  # current NAME RECIPE: the stand-in exists with this recipe
  [ "$force" = 0 ] || return 1
  [ "$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "org.rockchip-llama.standin"}}' "$1" 2>/dev/null)" = "$2" ]
}

commit() {  # commit CONTAINER NAME RECIPE
  bah config --label org.rockchip-llama.standin="$3" \
    --label org.opencontainers.image.description="local stand-in for $2 (hack/image/standins.sh), not the published image" \
    "$1"
  bah commit --quiet --rm "$1" "$2" >/dev/null
}

# --- debian:bookworm-slim -------------------------------------------------------------------
minbase="$STANDINS_DIR/bookworm-minbase-$SLIM_RECIPE.tar"
if [ ! -f "$minbase" ]; then
  t0=$(date +%s.%N)
  log "debootstrap --variant=minbase bookworm from $MIRROR (once; cached as ${minbase/#$HOME/\~})"
  root=$(mktemp -d "$STANDINS_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" > "$STANDINS_DIR/debootstrap.log" 2>&1 \
    || { tail -n 20 "$STANDINS_DIR/debootstrap.log" >&2; die "debootstrap failed (log: $STANDINS_DIR/debootstrap.log)"; }
  # What the real slim image also does without: package lists, caches, docs.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$MIRROR" "$MIRROR" > "$root/etc/apt/sources.list"
  tar --numeric-owner -C "$root" -cf "$minbase.part" .
  mv "$minbase.part" "$minbase"
  rm -rf "$root"
  trap - EXIT
  log "minbase root file system: $(du -h "$minbase" | cut -f1) in $(since "$t0") s"
fi
if current "$SLIM_BASE" "$slim_recipe"; then
  log "$SLIM_BASE: stand-in up to date"
else
  t0=$(date +%s.%N)
  c=$(bah from --quiet scratch)
  bah add --quiet "$c" "$minbase" / >/dev/null
  bah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  commit "$c" "$SLIM_BASE" "$slim_recipe"
  log "$SLIM_BASE: stand-in made in $(since "$t0") s"
fi

# --- rust:1.95-bookworm -----------------------------------------------------------------------
if current "$RUST_BASE" "$rust_recipe"; then
  log "$RUST_BASE: stand-in up to date"
else
  t0=$(date +%s.%N)
  toolchain_name="$rust_version-x86_64-unknown-linux-gnu"
  toolchain="$STANDINS_DIR/toolchain-$(rustc -vV | sha256sum | cut -c1-12).tar"
  if [ ! -f "$toolchain" ]; then
    log "packing this machine's toolchain $sysroot (without its docs) as $toolchain_name"
    tar --numeric-owner --owner=0 --group=0 --exclude=./share/doc -C "$sysroot" \
      --transform "s,^\.,./$toolchain_name," -cf "$toolchain.part" .
    mv "$toolchain.part" "$toolchain"
  fi
  c=$(bah from --quiet --pull=never "$SLIM_BASE")
  log "installing the real rust image's build packages in the stand-in (apt, from $MIRROR)"
  bah run "$c" -- sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends ca-certificates curl git gcc g++ libc6-dev make pkg-config file >/dev/null \
      && rm -rf /var/lib/apt/lists/*'
  if [ "${#extra_cas[@]}" -gt 0 ]; then
    log "adding this machine's extra CA certificates: ${extra_cas[*]##*/}"
    for ca in "${extra_cas[@]}"; do
      bah copy --quiet "$c" "$ca" "/usr/local/share/ca-certificates/${ca##*/}" >/dev/null
    done
    bah run "$c" -- update-ca-certificates >/dev/null
  fi
  bah run "$c" -- mkdir -p /usr/local/rustup/toolchains /usr/local/cargo/bin
  bah add --quiet "$c" "$toolchain" /usr/local/rustup/toolchains/ >/dev/null
  # The real image has rustup's proxies in /usr/local/cargo/bin; with rustup on this machine the
  # stand-in does too (so `rustup target add` in the Dockerfile's cross path is the real command,
  # failing here only for want of internet), otherwise plain links to the toolchain.
  if rustup_bin=$(command -v rustup); then
    bah copy --quiet "$c" "$(readlink -f "$rustup_bin")" /usr/local/cargo/bin/rustup >/dev/null
    bah run "$c" -- sh -c "for p in cargo rustc rustdoc; do ln -s rustup /usr/local/cargo/bin/\$p; done; \
      printf 'version = \"12\"\ndefault_toolchain = \"$toolchain_name\"\nprofile = \"minimal\"\n' \
      > /usr/local/rustup/settings.toml"
  else
    bah run "$c" -- sh -c "for p in cargo rustc rustdoc; do \
      ln -s /usr/local/rustup/toolchains/$toolchain_name/bin/\$p /usr/local/cargo/bin/\$p; done"
  fi
  bah config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$rust_version" "$c"
  bah run "$c" -- cargo --version >/dev/null || die "cargo does not run in the rust stand-in"
  commit "$c" "$RUST_BASE" "$rust_recipe"
  log "$RUST_BASE: stand-in made in $(since "$t0") s"
fi

# --- gcr.io/distroless/cc-debian12 ---------------------------------------------------------------
if current "$CC_BASE" "$cc_recipe"; then
  log "$CC_BASE: stand-in up to date"
else
  t0=$(date +%s.%N)
  root=$(mktemp -d "$STANDINS_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$root" "$root.tar"' EXIT
  mkdir -p "$root"/{etc/ssl/certs,tmp,root,home/nonroot,usr/share,var}
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root" "$root/home/nonroot"
  cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat > "$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
  printf 'PRETTY_NAME="Distroless stand-in"\nID=debian\nVERSION_ID="12"\n' > "$root/etc/os-release"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" \
    || die "no CA bundle at /etc/ssl/certs/ca-certificates.crt (Debian: ca-certificates)"
  [ -d /usr/share/zoneinfo ] && cp -a /usr/share/zoneinfo "$root/usr/share/"
  # The C runtime the operator links against (glibc, libgcc_s; libstdc++ as the real image has
  # it): every file and link the three packages installed in the minbase root file system.
  mb=$(mktemp -d "$STANDINS_DIR/minbase.XXXXXX")
  trap 'rm -rf "$root" "$root.tar" "$mb"' EXIT
  tar -C "$mb" -xf "$minbase"
  dpkg_arch=$(dpkg --print-architecture)
  # Debian's merged /usr first: /lib and /lib64 are links into /usr, where the packages' files
  # (listed under their historical /lib paths) and the loader's path lead.
  mkdir -p "$root/usr/lib" "$root/usr/lib64"
  for l in lib lib64; do
    if [ -L "$mb/$l" ]; then cp -a "$mb/$l" "$root/"; fi
  done
  for pkg in libc6 libgcc-s1 libstdc++6; do
    list="$mb/var/lib/dpkg/info/$pkg:$dpkg_arch.list"
    [ -f "$list" ] || die "$pkg is not in the minbase root file system ($list)"
    while IFS= read -r f; do
      if [ -L "$mb$f" ] || [ -f "$mb$f" ]; then (cd "$mb" && cp -a --parents ".$f" "$root/"); fi
    done < "$list"
  done
  rm -rf "$mb"
  [ -e "$root/lib64/ld-linux-x86-64.so.2" ] || [ "$dpkg_arch" != amd64 ] \
    || die "the cc stand-in has no dynamic loader at /lib64/ld-linux-x86-64.so.2"
  chown -R 0:0 "$root"
  chown 65532:65532 "$root/home/nonroot"
  tar --numeric-owner -C "$root" -cf "$root.tar" .
  c=$(bah from --quiet scratch)
  bah add --quiet "$c" "$root.tar" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$c"
  commit "$c" "$CC_BASE" "$cc_recipe"
  rm -rf "$root" "$root.tar"
  trap - EXIT
  log "$CC_BASE: stand-in made in $(since "$t0") s"
fi
