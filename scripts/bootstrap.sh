# Sourced by the other scripts: create .venv at the repository root and
# install the project into it, again whenever pyproject.toml changes.
# Sets ROOT and VENV.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

_marketplace_bootstrap() {
  local python="${PYTHON:-python3}"
  local stamp="$VENV/.installed"
  local want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$VENV/bin/python" ]]; then
    return 0
  fi
  if ! command -v "$python" >/dev/null; then
    echo "bootstrap: $python not found; install Python 3.10 or newer" >&2
    return 1
  fi
  echo "bootstrap: installing the project into $VENV (first run only)" >&2
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$python" -m venv "$VENV" || return 1
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --editable "$ROOT[dev]" >&2 || return 1
  echo "$want" >"$stamp"
}

_marketplace_bootstrap || {
  echo "bootstrap: installing the project failed; see the pip output above" >&2
  exit 1
}
