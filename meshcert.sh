#!/usr/bin/env bash
# meshcert's bootstrap: the only entry point a fresh machine needs.
#   ./meshcert.sh certify   the main job: certify the bundled reference SUT, write the report
#   ./meshcert.sh test      meshcert's own tests + the conformance suite
#   ./meshcert.sh tox -e unit|conformance|chaos|property|kind|certify|lint   (tox.ini)
# It creates .venv with the pinned Python dependencies (pyproject.toml) when missing or changed, then hands
# over to the `meshcert` command, which installs/starts the Docker engine, builds the pinned
# Go tools and the local images when missing (with progress), and runs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
say() { printf '[meshcert.sh] %s\n' "$*" >&2; }

py="${MESHCERT_PYTHON:-python3}"
if ! command -v "$py" >/dev/null; then
  say "no python3; installing Debian's python3 + venv"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv
fi
if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
  say "python3 lacks venv/ensurepip; installing python3-venv"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
fi
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then export PATH="$PATH:/usr/local/go/bin"; fi

# pyproject.toml is the one pin list: runtime dependencies, and the `dev` extra (ruff, tox).
# The venv is rebuilt when it (or setup.py, the package list) changes; otherwise nothing runs.
stamp_want="$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)"
stamp=".venv/.meshcert-stamp"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$stamp_want" ]; then
  say "installing meshcert and its pinned dependencies (pyproject.toml, with the dev extra) into .venv"
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/python -m pip install --progress-bar off -q --disable-pip-version-check -e ".[dev]"
  echo "$stamp_want" > "$stamp"
  say "installed: $(.venv/bin/python -m pip list --disable-pip-version-check 2>/dev/null | wc -l) packages in .venv"
fi
# compiled bytecode in meshcert's cache, never in the checkout, and written even where
# PYTHONDONTWRITEBYTECODE is set: every Python process of a run otherwise recompiles the suite
# (meshcert/toolchain/paths.py bytecode_env says what it costs)
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-${MESHCERT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcert}/pycache}"
unset PYTHONDONTWRITEBYTECODE
# `./meshcert.sh tox -e unit`: tox from .venv (pinned in the dev extra), see tox.ini
if [ "${1:-}" = tox ]; then shift; exec .venv/bin/tox "$@"; fi
exec .venv/bin/meshcert "$@"
