#!/usr/bin/env bash
# Debian packages the tests need beyond the toolchain, installed when missing (as
# root): chromium (the dashboard's end-to-end tests drive it with playwright-core)
# and prometheus, for `promtool check metrics` on the control plane's /metrics;
# iproute2, for the network namespaces of the control plane's partition test.
# Recommended packages are skipped: prometheus-node-exporter would take port 9100.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "test-tools.sh: missing ${missing[*]}; as root run: apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "test-tools.sh: installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update >&2
apt-get install -y --no-install-recommends "${missing[@]}" >&2
