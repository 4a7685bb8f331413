#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests, installed from Debian's packages if missing.
#
#   scripts/postgres.sh [start] [DIR]   start (or reuse) the server whose data lives in
#                                       DIR (default target/pg); print its URL last
#   scripts/postgres.sh stop [DIR]      stop it
#   scripts/postgres.sh crash [DIR]     stop it the hard way (immediate shutdown: no
#                                       checkpoint, crash recovery on the next start)
#
# The server listens on 127.0.0.1 only, trusts loopback connections, and keeps
# fsync on. STRATA_PG_PORT picks the first port to try (default 54329).
# Everything but the URL goes to stderr, so `url=$(scripts/postgres.sh)` works.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }

command=start
case "${1:-}" in
  start | stop | crash) command=$1; shift ;;
esac
dir=$(realpath -m "${1:-target/pg}")
data=$dir/data

# initdb and postgres refuse to run as root: run them as the package's user.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

find_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$bin" ] && [ -x "$bin/postgres" ]; then
    echo "$bin"
  fi
}

bin=$(find_bin)

running() {
  [ -n "$bin" ] && [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

url() { echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/postgres"; }

if [ "$command" = stop ] || [ "$command" = crash ]; then
  mode=fast
  if [ "$command" = crash ]; then mode=immediate; fi
  if running; then
    as_owner "$bin/pg_ctl" -D "$data" -m "$mode" -w stop >&2
  else
    log "no server running in $data"
  fi
  exit 0
fi

if [ -z "$bin" ]; then
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed; as root run: apt-get install -y postgresql"
  log "installing PostgreSQL from Debian's packages"
  # The package would start its own cluster; tests use their own server instead.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y --no-install-recommends postgresql >&2
  bin=$(find_bin)
  [ -n "$bin" ] || die "installed postgresql but found no server binaries under /usr/lib/postgresql"
fi

if running && [ -f "$dir/port" ]; then
  log "reusing the server in $data"
  url
  exit 0
fi

mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "the postgres user is missing; reinstall the postgresql package"
  chown postgres: "$dir"
fi

if [ ! -f "$data/PG_VERSION" ]; then
  log "creating a cluster in $data"
  as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C >&2
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=${STRATA_PG_PORT:-54329}
for _ in $(seq 1 50); do
  port_free "$port" && break
  port=$((port + 1))
done
port_free "$port" || die "no free port from ${STRATA_PG_PORT:-54329} on"

# Settings go in a file of their own, rewritten on every start (the port may change).
as_owner tee "$data/strata.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = on
synchronous_commit = on
max_connections = 300
EOF
if ! grep -q "^include_if_exists = 'strata.conf'" "$data/postgresql.conf"; then
  echo "include_if_exists = 'strata.conf'" | as_owner tee -a "$data/postgresql.conf" >/dev/null
fi

log "starting PostgreSQL on 127.0.0.1:$port"
if ! as_owner "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start >&2; then
  tail -n 20 "$dir/postgres.log" >&2 || true
  die "PostgreSQL did not start; see $dir/postgres.log"
fi
echo "$port" >"$dir/port.tmp" && mv "$dir/port.tmp" "$dir/port"
url
