#!/usr/bin/env bash
# Builds keymint-extauthz-check, the Envoy ext_authz v3 gRPC client of the
# e2e tests (from Envoy's published protos, go-control-plane), into
# target/tools/bin. A Go module of its own, apart from the control plane's
# and helm's dependency graphs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../target/tools/bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)" # absolute: the build runs from this directory
cd "$here"
echo "building keymint-extauthz-check into $out (cold: a minute or two; cached afterwards)" >&2
go build -ldflags="-s -w" -o "$out/keymint-extauthz-check" .
# go build leaves an up-to-date binary untouched: mark it fresh for make.
touch "$out/keymint-extauthz-check"
