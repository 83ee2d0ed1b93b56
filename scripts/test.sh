#!/usr/bin/env bash
# Run the test suite; extra arguments go to pytest (for example -k core -x).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
status=0
"$VENV/bin/python" -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
  echo "test.sh: pytest collected no tests; check the arguments" >&2
fi
exit $status
