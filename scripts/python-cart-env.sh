#!/usr/bin/env bash
# The Python environment of the examples on CloudState's Python SDK: a virtualenv
# with CloudState's Python support library (cloudstate 0.1.1 from PyPI), the
# cart's shoppingcart_pb2 / domain_pb2 modules generated from the same protos as
# the Rust cart (examples/python-shopping-cart), and the orders example's
# orders/orders_pb2 with Strata's published strata/timers_pb2 (examples/python-orders).
#
#   scripts/python-cart-env.sh [DIR]   create or update the venv in DIR (default
#                                      target/python-cart-venv); print its python last
#
# Idempotent: an existing venv with the pinned packages is reused, and the modules are
# regenerated every time (it takes a second). Needs python3 (3.11) with its venv
# module; as root, Debian's python3-venv is installed when that is missing. Only PyPI
# is used. Everything but the interpreter's path goes to stderr, so
# `python=$(scripts/python-cart-env.sh | tail -n 1)` works.
set -euo pipefail

log() { echo "python-cart-env.sh: $*" >&2; }
die() { log "$*"; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
example=$root/examples/python-shopping-cart
venv=$(realpath -m "${1:-$root/target/python-cart-venv}")
python=$venv/bin/python
requirements=$example/requirements.txt

# The pinned grpcio wheels exist for CPython 3.7 to 3.11; STRATA_PYTHON picks another
# interpreter than python3.
base_python=${STRATA_PYTHON:-python3}
command -v "$base_python" >/dev/null || die "$base_python is missing; as root run: apt-get install -y python3 python3-venv"
"$base_python" -c 'import sys; sys.exit(not (3, 7) <= sys.version_info[:2] <= (3, 11))' ||
  die "$base_python is Python $("$base_python" -c 'import platform; print(platform.python_version())'); the pinned packages need 3.7 to 3.11 (set STRATA_PYTHON)"

if [ ! -x "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
  log "creating a virtualenv in $venv"
  rm -rf "$venv"
  if ! "$base_python" -m venv "$venv" >&2; then
    rm -rf "$venv"
    [ "$(id -u)" = 0 ] || die "$base_python -m venv failed; as root run: apt-get install -y python3-venv"
    log "installing python3-venv from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y --no-install-recommends python3-venv >&2
    "$base_python" -m venv "$venv" >&2
  fi
fi

# cloudstate 0.1.1 pins versions that do not install on Python 3.11, so dependencies
# are not resolved: requirements.txt lists every package needed, pinned.
stamp=$venv/.strata-requirements
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  log "installing $(grep -c '^[a-z]' "$requirements") pinned packages from PyPI"
  "$python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi

log "generating the cart's protobuf modules into $example/generated"
generated=$example/generated
mkdir -p "$generated"
find "$generated" -maxdepth 1 -name '*_pb2*.py' -delete
# cloudstate/entity_key.proto and google/api/*.proto are imported from Python
# packages at run time (the SDK's cloudstate package, googleapis-common-protos), so
# only the cart's own files are generated.
"$python" -m grpc_tools.protoc \
  -I "$root/examples/shopping-cart/proto" \
  -I "$root/proto" \
  --python_out="$generated" \
  shoppingcart.proto domain.proto >&2

# The cart must import with this interpreter, or nothing else will work.
(cd "$example" && PYTHONDONTWRITEBYTECODE=1 "$python" -c 'import shopping_cart' >&2) || die "the cart does not import in $venv"

orders=$root/examples/python-orders
log "generating the orders example's protobuf modules into $orders/generated"
find "$orders/generated" -name '*_pb2*.py' -delete
"$python" -m grpc_tools.protoc \
  -I "$orders/proto" \
  -I "$root/proto" \
  --python_out="$orders/generated" \
  orders/orders.proto strata/timers.proto >&2
(cd "$orders" && PYTHONDONTWRITEBYTECODE=1 "$python" -c 'import function' >&2) || die "the orders example does not import in $venv"

log "ready"
echo "$python"
