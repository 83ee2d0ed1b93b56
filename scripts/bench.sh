#!/usr/bin/env bash
# Run the benchmarks and write benchmarks/RESULTS.md and benchmarks/results.json
# (about 5 minutes on 2 cores). --smoke runs a tiny configuration in seconds;
# --help lists every flag.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
printf -v command '%q ' scripts/bench.sh "$@"
BENCH_COMMAND="${command% }" exec "$VENV/bin/python" -m benchmarks.bench "$@"
