#!/usr/bin/env bash
# schemathesis (PyPI), which fuzzes the management API from its own OpenAPI document,
# in a virtualenv:
#
#   scripts/schemathesis.sh [DIR]   create or update the venv in DIR (default
#                                   target/schemathesis-venv); print its
#                                   schemathesis executable last
#
# Idempotent: the pinned version, once installed, is reused. Needs python3 with its
# venv module (as root, Debian's python3-venv is installed when that is missing).
# Everything but the executable's path goes to stderr.
set -euo pipefail

log() { echo "schemathesis.sh: $*" >&2; }
die() { log "$*"; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(realpath -m "${1:-$root/target/schemathesis-venv}")
packages=(schemathesis==4.32.5)

# shellcheck source=scripts/pypi-venv.sh
source "$root/scripts/pypi-venv.sh"
pypi_venv "$venv" "${packages[@]}"

"$venv/bin/schemathesis" --version >&2 || die "schemathesis does not run"
echo "$venv/bin/schemathesis"
