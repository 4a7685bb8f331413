# Sourced by the scripts that install tools from PyPI into a virtualenv
# (scripts/k8s-tools.sh, scripts/schemathesis.sh). Defines
#
#   pypi_venv DIR PACKAGE==VERSION...
#
# which creates the virtualenv in DIR when it is missing or broken (as root,
# installing Debian's python3-venv when python3 lacks its venv module) and installs
# the pinned packages unless DIR already holds exactly those. Idempotent; all its
# output goes to stderr. The sourcing script defines log and die.

pypi_venv() {
  local venv=$1
  shift
  local python=$venv/bin/python stamp=$venv/.strata-packages
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
  if [ "$(cat "$stamp" 2>/dev/null)" != "$*" ]; then
    log "installing $* from PyPI"
    "$python" -m pip install --quiet --disable-pip-version-check "$@" >&2
    echo "$*" >"$stamp"
  fi
}
