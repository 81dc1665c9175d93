#!/usr/bin/env bash
# Builds the developer tools pinned in go.mod (today: helm, for `make lint`
# and the chart's tests) into target/controlplane/bin, next to kubectl.
# A Go module of its own so that helm's k8s.io libraries are resolved apart
# from the control plane's k8s.io/kubernetes build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../target/controlplane/bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)" # absolute: the build runs from this directory
cd "$here"
version="$(go list -m -f '{{.Version}}' helm.sh/helm/v3)"
echo "building helm $version into $out (cold: a few minutes on 2 cores; cached afterwards)" >&2
# Stamp the version so `helm version` tells the truth.
go build -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean" -o "$out/helm" helm.sh/helm/v3/cmd/helm
# go build leaves an up-to-date binary untouched: mark it fresh for make.
touch "$out/helm"
