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
python=$venv/bin/python
packages=(schemathesis==4.32.5)

command -v python3 >/dev/null || die "python3 is missing; as root run: apt-get install -y python3 python3-venv"
if [ ! -x "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
  log "creating a virtualenv in $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2; then
    rm -rf "$venv"
    [ "$(id -u)" = 0 ] || die "python3 -m venv failed; as root run: apt-get install -y python3-venv"
    log "installing python3-venv from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y --no-install-recommends python3-venv >&2
    python3 -m venv "$venv" >&2
  fi
fi

stamp=$venv/.strata-packages
if [ "$(cat "$stamp" 2>/dev/null)" != "${packages[*]}" ]; then
  log "installing ${packages[*]} from PyPI"
  "$python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
  echo "${packages[*]}" >"$stamp"
fi

"$venv/bin/schemathesis" --version >&2 || die "schemathesis does not run"
echo "$venv/bin/schemathesis"
