#!/usr/bin/env bash
# meshcert's bootstrap: the only entry point a fresh machine needs.
#   ./meshcert.sh certify   the main job: certify the bundled reference SUT, write the report
#   ./meshcert.sh test      meshcert's own tests + the conformance suite
# It creates .venv with the pinned Python dependencies when missing or changed, then hands
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

stamp_want="$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)"
stamp=".venv/.meshcert-stamp"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$stamp_want" ]; then
  say "creating .venv with the pinned Python dependencies (requirements.txt)"
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/python -m pip install --progress-bar off -q --disable-pip-version-check -r requirements.txt
  .venv/bin/python -m pip install --progress-bar off -q --disable-pip-version-check --no-deps -e .
  echo "$stamp_want" > "$stamp"
fi
exec .venv/bin/meshcert "$@"
