#!/usr/bin/env bash
# Run a whole scenario: scripts/simulate.sh [SCENARIO] [--time-scale F] [--server HOST:PORT]
# With no SCENARIO it runs a small bundled example; --help lists every flag.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec "$VENV/bin/marketplace-simulate" "$@"
