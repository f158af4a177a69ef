#!/usr/bin/env bash
# Creates or refreshes the Python venv the compat suite and the fuzz smoke run in, at
# ${ROCKCHIP_LLAMA_CACHE:-~/.cache/rockchip-llama}/venv, from the pinned hack/requirements-test.txt.
# Prints the venv's python on stdout (progress goes to stderr), so callers do
#   py=$(hack/pyenv.sh)
# A stamp file holds the hash of the requirements file and of the base interpreter's version; while
# it matches, a run costs two sha256 calls and no pip. Concurrent callers serialise on a flock.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
req="$root/hack/requirements-test.txt"
cache="${ROCKCHIP_LLAMA_CACHE:-$HOME/.cache/rockchip-llama}"
venv="${ROCKCHIP_LLAMA_VENV:-$cache/venv}"
base_py="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"

# The base interpreter's real path and version are part of the key: a venv breaks when its base
# moves, and a shim (pyenv) can point at another version tomorrow.
base_id=$("$base_py" -c 'import os, sys; print(os.path.realpath(sys.executable), sys.version.split()[0])') \
  || { echo "pyenv: cannot run $base_py" >&2; exit 1; }
want=$(printf '%s\n%s\n' "$(sha256sum < "$req")" "$base_id" | sha256sum | cut -d' ' -f1)

ready() { [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }

if ! ready; then
  mkdir -p "$(dirname "$venv")"
  exec 9> "$venv.lock"
  flock 9
  if ! ready; then  # another caller may have finished while we waited
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c '' 2>/dev/null \
      || [ "$(cat "$venv/.base-python" 2>/dev/null)" != "$base_id" ]; then
      echo "pyenv: creating $venv" >&2
      rm -rf "$venv"
      "$base_py" -m venv "$venv" >&2
      echo "$base_id" > "$venv/.base-python"
    fi
    echo "pyenv: installing $(grep -c '==' "$req") pinned packages from ${req#"$root"/}" >&2
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
    echo "$want" > "$stamp"
    echo "pyenv: ready" >&2
  fi
fi
echo "$venv/bin/python"
