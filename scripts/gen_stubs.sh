#!/usr/bin/env bash
# Generate client and server stubs from proto/ for one language.
#
# Usage: scripts/gen_stubs.sh [LANG] [OUT_DIR]
#   LANG     python (default)
#   OUT_DIR  folder to write into; default gen/python, the copy the Python
#            package imports.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lang="${1:-python}"
out="${2:-$root/gen/$lang}"
proto_file="marketplace/v1/marketplace.proto"

case "$lang" in
  python)
    python="${PYTHON:-$root/.venv/bin/python}"
    if ! "$python" -c "import grpc_tools" 2>/dev/null; then
      echo "gen_stubs.sh: grpcio-tools is not installed for $python;" \
        "run 'pip install grpcio-tools' or scripts/test.sh once" >&2
      exit 1
    fi
    mkdir -p "$out"
    "$python" -m grpc_tools.protoc -I "$root/proto" \
      --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
      "$root/proto/$proto_file"
    touch "$out/marketplace/__init__.py" "$out/marketplace/v1/__init__.py"
    ;;
  *)
    echo "gen_stubs.sh: unknown language '$lang'; supported: python" >&2
    exit 2
    ;;
esac
