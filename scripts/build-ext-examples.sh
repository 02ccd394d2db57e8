#!/usr/bin/env bash
# Build the example extensions in examples/ext/: the WAT guest (text -> echo.wasm, with
# wasmtime's own assembler) and the AssemblyScript guest (npm + asc -> hello.wasm).
#   scripts/build-ext-examples.sh          build both
#   scripts/build-ext-examples.sh wat      build only the WAT guest (no Node.js needed)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
what="${1:-all}"

build_wat() {
  local dir="$root/examples/ext/echo-wat"
  "$python" - "$dir/echo.wat" "$dir/echo.wasm" <<'PY'
import sys
from pathlib import Path

import wasmtime

source, target = Path(sys.argv[1]), Path(sys.argv[2])
target.write_bytes(wasmtime.wat2wasm(source.read_text()))
print(f"built {target} ({target.stat().st_size} bytes)")
PY
}

build_as() {
  local dir="$root/examples/ext/hello-as"
  command -v npm >/dev/null || { echo "npm not found: install Node.js 18+ to build hello-as" >&2; exit 1; }
  (
    cd "$dir"
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
    npm run --silent build
  )
  echo "built $dir/hello.wasm ($(wc -c <"$dir/hello.wasm") bytes)"
}

case "$what" in
  all) build_wat; build_as ;;
  wat) build_wat ;;
  as) build_as ;;
  *) echo "usage: $0 [all|wat|as]" >&2; exit 2 ;;
esac
