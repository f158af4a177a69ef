#!/usr/bin/env bash
# make test-image: builds both images for this machine's architecture (hack/image/build.sh, with
# the stand-in bases, the cargo caches seeded from this machine's own build unless
# IMAGE_CARGO_SEED=0) and checks each OCI archive as the node tier will use it:
#   - the archive's reference is the full image name;
#   - labels (org.opencontainers.image.*), user 65532:65532, entrypoint, no healthcheck;
#   - the binary runs inside the image's own root file system (`--version`; the agent also lists
#     its empty models directory), as the image's user: a static helper mounted into the container
#     prints its uid and groups and then executes the binary in the same process;
#   - sizes, printed.
# The docker-compose.yml check is the separate, fast `make test-compose`.
set -euo pipefail
# shellcheck source=hack/image/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

arch=$(case "$(uname -m)" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac)
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$IMAGE_ROOT/Cargo.toml")
fail=0
pass=0
check() {  # check DESCRIPTION COMMAND...
  if "${@:2}"; then pass=$((pass + 1)); log "ok    $1"; else fail=$((fail + 1)); log "FAIL  $1"; fi
}

tmp=$(mktemp -d)
containers=()
cleanup() {
  for c in "${containers[@]}"; do bah rm "$c" >/dev/null 2>&1 || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# uid/gid/groups of the process, then exec: the container's user is what the binary runs as.
cat > "$tmp/whoami.c" <<'EOF'
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
  gid_t groups[64];
  int n = getgroups(64, groups);
  printf("uid=%d gid=%d groups=", (int)getuid(), (int)getgid());
  for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", (int)groups[i]);
  printf("\n");
  fflush(stdout);
  if (argc > 1) { execv(argv[1], argv + 1); perror("execv"); return 127; }
  return 0;
}
EOF
gcc -static -Os -o "$tmp/whoami" "$tmp/whoami.c"

for component in agent operator; do
  name="localhost/rockchip-llama-$component:$version"
  log "=== $component"
  t0=$(date +%s.%N)
  archive=$(IMAGE_REPO=localhost IMAGE_CARGO_SEED=${IMAGE_CARGO_SEED:-1} "$IMAGE_ROOT/hack/image/build.sh" "$component" "$arch")
  log "$component image built in $(since "$t0") s: $archive"

  ref=$(tar -xOf "$archive" index.json | python3 -c 'import json, sys
print(json.load(sys.stdin)["manifests"][0].get("annotations", {}).get("org.opencontainers.image.ref.name", ""))')
  check "$component: archive reference is $name (got $ref)" test "$ref" = "$name"

  # Import the archive itself (not the image left in the build storage): that is the hand-off.
  c=$(bah from --quiet "oci-archive:$archive")
  containers+=("$c")
  cfg=$(bah inspect "$c" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["OCIv1"]["config"]))')
  field() { python3 -c 'import json, sys; c = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$cfg" "$1"; }
  check "$component: user 65532:65532" test "$(field 'c.get("User")')" = "65532:65532"
  check "$component: entrypoint /usr/local/bin/rockchip-llama-$component" \
    test "$(field 'c.get("Entrypoint")[0]')" = "/usr/local/bin/rockchip-llama-$component"
  check "$component: OCI labels (title, version, licenses)" \
    test "$(field '" ".join(c["Labels"].get("org.opencontainers.image." + k, "-") for k in ("title", "version", "licenses"))')" \
    = "rockchip-llama-$component $version Apache-2.0"
  check "$component: no healthcheck" test "$(field '"Healthcheck" in c')" = False

  out=$(bah run --volume "$tmp/whoami:/.whoami:ro" "$c" -- /.whoami "/usr/local/bin/rockchip-llama-$component" --version 2>&1) || true
  log "  $(echo "$out" | paste -sd' ')"
  check "$component: --version runs in the image, as uid 65532" \
    grep -qx "uid=65532 gid=65532 groups=.*" <<<"$(head -n1 <<<"$out")"
  check "$component: --version prints rockchip-llama-$component $version" \
    grep -qx "rockchip-llama-$component $version" <<<"$(sed -n 2p <<<"$out")"
  if [ "$component" = agent ]; then
    out=$(bah run "$c" -- /usr/local/bin/rockchip-llama-agent models 2>&1) || true
    log "  models: $(echo "$out" | head -n3 | paste -sd' ')"
    check "agent: lists /models (ROCKCHIP_LLAMA_MODELS_DIR) without error" \
      bah run "$c" -- /usr/local/bin/rockchip-llama-agent models
    check "agent: /models belongs to 65532" test "$(bah run "$c" -- stat -c %u:%g /models)" = "65532:65532"
  else
    mnt=$(bah mount "$c")
    check "operator: distroless (no shell, no package manager)" \
      bash -c "[ ! -e '$mnt/bin/sh' ] && [ ! -e '$mnt/usr/bin/dpkg' ]"
    bah umount "$c" >/dev/null
  fi
  size=$(bah images --format '{{.Size}}' "$name" 2>/dev/null | head -n1)
  log "$component: image $size, archive $(du -h "$archive" | cut -f1)"
done

printf '%d passed, %d failed\n' "$pass" "$fail"
[ "$fail" -eq 0 ]
