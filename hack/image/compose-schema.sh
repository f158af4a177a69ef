#!/usr/bin/env bash
# Prints the path of the Compose Specification JSON schema, fetching it once. The schema comes from
# a package registry: the PyPI wheel of check-jsonschema vendors the compose-spec project's
# compose-spec.json (builtin_schemas/vendor/). The wheel (downloaded, never installed) and the
# schema are both pinned by sha256; the schema is cached in ~/.cache/rockchip-llama/compose-spec/.
# To move to a newer schema: bump the version, run once with the new hashes left empty to see them.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache="${ROCKCHIP_LLAMA_CACHE:-$HOME/.cache/rockchip-llama}/compose-spec"

WHEEL_VERSION=0.39.0
WHEEL_SHA256=14ce5c94871c551268ea948ffe21e9f1464dc48fb20bf9a4c13deeaaf756cf9b
SCHEMA_SHA256=d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64

schema="$cache/compose-spec-${SCHEMA_SHA256:0:12}.json"
if [ -f "$schema" ] && [ "$(sha256sum < "$schema" | cut -d' ' -f1)" = "$SCHEMA_SHA256" ]; then
  echo "$schema"
  exit 0
fi
mkdir -p "$cache"
py=$("$root/hack/pyenv.sh")
tmp=$(mktemp -d "$cache/dl.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "compose-schema: downloading check-jsonschema==$WHEEL_VERSION (wheel, no dependencies) for its compose-spec.json" >&2
echo "check-jsonschema==$WHEEL_VERSION --hash=sha256:$WHEEL_SHA256" > "$tmp/req.txt"
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --require-hashes -r "$tmp/req.txt" -d "$tmp" >&2
"$py" - "$tmp"/check_jsonschema-*.whl "$tmp/compose-spec.json" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("check_jsonschema/builtin_schemas/vendor/compose-spec.json")
open(sys.argv[2], "wb").write(data)
EOF
got=$(sha256sum < "$tmp/compose-spec.json" | cut -d' ' -f1)
if [ "$got" != "$SCHEMA_SHA256" ]; then
  echo "compose-schema: compose-spec.json has sha256 $got, expected $SCHEMA_SHA256" >&2
  exit 1
fi
mv "$tmp/compose-spec.json" "$schema"
echo "$schema"
