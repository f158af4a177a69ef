#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` (the `make bench` baseline) from the llama.cpp sources
# vendored in the PyPI sdist llama-cpp-python==0.3.36, and prints the binary's absolute path on
# stdout (progress goes to stderr).
#
#   hack/bench/build-llama-server.sh          build once, then reuse (stamp file)
#   FORCE=1 hack/bench/build-llama-server.sh  rebuild
#
# Result: ~/.cache/rockchip-llama/llama-server/<version>/bin/llama-server plus a `stamp` that
# records the sdist sha256 and the cmake flags; a warm run only checks the stamp (~0 s).
#
# CPU flags match our agent's engine build: llama-cpp-sys-2 without `-C target-cpu=native` passes
# GGML_NATIVE=OFF, so ggml falls back to its x86-64 defaults (SSE4.2, AVX, AVX2, BMI2, FMA, F16C
# on; no AVX-512). We build llama-server the same way (-DGGML_NATIVE=OFF, defaults untouched,
# OpenMP on, static libs) so the benchmark compares engine with engine, not compiler flags.
# Build type is llama.cpp's default `Release` (-O3).
set -euo pipefail

version="0.3.36"
sdist="llama_cpp_python-$version.tar.gz"
# Computed once from `pip download --no-binary :all: llama-cpp-python==0.3.36` (76,589,250 bytes).
sdist_sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

cache="${ROCKCHIP_LLAMA_CACHE:-$HOME/.cache/rockchip-llama}"
root="$cache/llama-server"
dest="$root/$version"
bin="$dest/bin/llama-server"
stamp="$dest/stamp"
py="${PYTHON:-python3}"
jobs="${BENCH_BUILD_JOBS:-2}"

cmake_flags=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE=OFF
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
)
want_stamp="llama-cpp-python==$version sha256=$sdist_sha256 cmake ${cmake_flags[*]}"

log() { echo "build-llama-server: $*" >&2; }

if [ -z "${FORCE:-}" ] && [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ]; then
  log "up to date ($bin)"
  echo "$bin"
  exit 0
fi

mkdir -p "$root/dl"
# One build at a time on this 2-core machine: serialise our own builds with a lock ...
exec 9>"$root/.lock"
flock -w 1800 9 || { log "timed out waiting for $root/.lock"; exit 1; }

# 1. sdist (pip download only: never installed; pip verifies the index hash, we verify the pin).
tarball="$root/dl/$sdist"
if ! { [ -f "$tarball" ] && echo "$sdist_sha256  $tarball" | sha256sum -c --status; }; then
  rm -f "$tarball"
  log "pip download llama-cpp-python==$version (sdist, ~77 MB; pip prepares metadata, ~1 min)"
  "$py" -m pip download --quiet --no-deps --no-binary :all: --disable-pip-version-check \
    -d "$root/dl" "llama-cpp-python==$version" >&2
fi
echo "$sdist_sha256  $tarball" | sha256sum -c --status \
  || { log "sha256 mismatch for $tarball (expected $sdist_sha256)"; rm -f "$tarball"; exit 1; }
log "sdist sha256 OK ($sdist_sha256)"

# 2. Extract only the vendored llama.cpp tree.
src="$root/src-$version"
if [ ! -f "$src/.extracted" ]; then
  log "extracting vendor/llama.cpp"
  rm -rf "$src"; mkdir -p "$src"
  tar -xzf "$tarball" -C "$src" --strip-components=1 "llama_cpp_python-$version/vendor/llama.cpp"
  touch "$src/.extracted"
fi
lsrc="$src/vendor/llama.cpp"

# ... and be polite to other engineers' cmake builds (e.g. llama-cpp-sys-2 inside cargo): wait,
# bounded, while another `cmake --build` runs.
for _ in $(seq 1 90); do
  others=$(pgrep -fa 'cmake.*--build' | grep -v "$root" | grep -vc pgrep || true)
  [ "$others" -eq 0 ] && break
  log "another cmake build is running; waiting (max 15 min) ..."
  sleep 10
done

# 3. Configure + build (-j2). Progress: cmake prints [ n%] lines.
build="$src/build"
log "cmake configure: ${cmake_flags[*]}"
cmake -S "$lsrc" -B "$build" "${cmake_flags[@]}" >"$root/cmake-configure.log" 2>&1 \
  || { tail -30 "$root/cmake-configure.log" >&2; exit 1; }
grep -E '^(GGML_(NATIVE|AVX|AVX2|AVX512|FMA|F16C|BMI2|SSE42|OPENMP)|CMAKE_BUILD_TYPE):' "$build/CMakeCache.txt" \
  | tr '\n' ' ' | sed 's/^/build-llama-server: cache: /' >&2; echo >&2
log "cmake --build -j$jobs --target llama-server (cold: ~5 min on 2 cores)"
start=$(date +%s)
cmake --build "$build" -j"$jobs" --target llama-server 2>&1 \
  | grep --line-buffered -E '^\[ *[0-9]+%\]|error|Error' | sed -u 's/^/build-llama-server: /' >&2
[ "${PIPESTATUS[0]}" -eq 0 ] || { log "build failed"; exit 1; }
log "built in $(( $(date +%s) - start )) s"

mkdir -p "$dest/bin"
install -m 0755 "$build/bin/llama-server" "$bin"
cp "$build/CMakeCache.txt" "$dest/CMakeCache.txt"
echo "$want_stamp" > "$stamp"
log "installed $bin"
echo "$bin"
