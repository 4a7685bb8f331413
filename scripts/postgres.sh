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
# fsync on. It serves TLS beside plain TCP, with a certificate for 127.0.0.1 and
# localhost signed by a CA made on the first start: DIR/tls/ca.crt is what a
# client's sslrootcert names (scripts/check passes it to the tests as
# STRATA_TEST_POSTGRES_CA). STRATA_PG_PORT picks the first port to try (default
# 54329). Everything but the URL goes to stderr, so `url=$(scripts/postgres.sh)`
# works.
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

tls=$dir/tls
if running && [ -f "$dir/port" ]; then
  if [ -f "$tls/ca.crt" ]; then
    log "reusing the server in $data"
    url
    exit 0
  fi
  log "restarting the server in $data to serve TLS"
  as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >&2
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

# A CA and the server's certificate (ECDSA P-256), made once per DIR.
if [ ! -f "$tls/server.key" ] || [ ! -f "$tls/ca.crt" ]; then
  command -v openssl >/dev/null || die "openssl is missing (it makes the test certificates): apt-get install -y openssl"
  log "making a CA and a server certificate in $tls"
  mkdir -p "$tls"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=Strata test PostgreSQL CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=127.0.0.1" -keyout "$tls/server.key.new" -out "$tls/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$tls/server.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 3650 -extfile "$tls/server.ext" -out "$tls/server.crt" 2>/dev/null
  rm -f "$tls/server.csr" "$tls/server.ext" "$tls/ca.srl"
  chmod 600 "$tls/server.key.new" "$tls/ca.key"
  mv "$tls/server.key.new" "$tls/server.key"
  # PostgreSQL reads its key only if its own user owns it, readable by nobody else.
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$tls"; fi
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
ssl = on
ssl_cert_file = '$tls/server.crt'
ssl_key_file = '$tls/server.key'
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
