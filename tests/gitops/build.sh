#!/usr/bin/env bash
# Builds keymint-readiness (./readiness): what kstatus (Flux, kpt, cli-utils)
# and Argo CD's Lua health check make of an ApiKey, for the e2e tests. A Go
# module of its own: cli-utils pins its own k8s.io/apimachinery, apart from
# the control plane's and helm's.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../target/tools/bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)" # absolute: the build runs from this directory
cd "$here"
echo "building keymint-readiness into $out (cold: about a minute; cached afterwards)" >&2
go build -ldflags='-s -w' -o "$out/keymint-readiness" ./readiness
# go build leaves an up-to-date binary untouched: mark it fresh for make.
touch "$out/keymint-readiness"
