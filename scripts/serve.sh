#!/usr/bin/env bash
# Run the market server in the foreground; --help lists its flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec "$VENV/bin/marketplace-server" "$@"
