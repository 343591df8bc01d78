#!/usr/bin/env bash
# Lint the Kubernetes manifests: render every overlay of scripts/kubernetes (what is
# deployed; the base is their building block) with kubectl's kustomize, and run checkov's Kubernetes checks on them (the skipped checks
# and why: scripts/kubernetes/.checkov.yaml). checkov lives in its own .venv-checkov,
# pinned by scripts/kubernetes/checkov.lock (its dependencies clash with the gateway's).
# The schema validation of the same output is a test (tests/test_kubernetes.py).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kubectl >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then
        echo "error: kubectl is needed to render the manifests (kubectl kustomize)" >&2
        exit 1
    fi
    echo "   kubectl not installed: manifests not linted (CI requires it)"
    exit 0
fi

lock=scripts/kubernetes/checkov.lock
stamp=.venv-checkov/.installed
wanted="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    rm -rf .venv-checkov
    .venv/bin/python -m venv .venv-checkov
    if ! .venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check \
        -r "$lock" > .venv-checkov/pip.log 2>&1; then
        cat .venv-checkov/pip.log >&2
        exit 1
    fi
    echo "$wanted" > "$stamp"
fi

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for dir in scripts/kubernetes/overlays/*/; do
    name=$(basename "$dir")
    mkdir -p "$rendered/$name"
    kubectl kustomize "$dir" > "$rendered/$name/manifests.yaml"
done
# --skip-download: no network (checkov's guideline links are not needed to check).
.venv-checkov/bin/checkov -d "$rendered" --config-file scripts/kubernetes/.checkov.yaml \
    --skip-download
