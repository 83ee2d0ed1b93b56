#!/usr/bin/env bash
# Run the market server in the foreground; --help lists its flags.
# Without --data-dir the market lives in memory and is lost on stop. With
# --data-dir DIR it is kept in an SQLite database in DIR. Every call that got
# a reply survives a crash or restart, and the next start loads it. Example:
#   scripts/serve.sh --data-dir ~/marketplace-data --queue-size 15
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec "$VENV/bin/marketplace-server" "$@"
