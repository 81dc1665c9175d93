#!/usr/bin/env bash
# Builds traefik, the reverse proxy whose ForwardAuth middleware the e2e tests
# put in front of keymint's verifier (tests/e2e/verifier_traefik.rs), into
# target/tools/bin. The version is the one pinned in go.mod, built from the Go
# module proxy (no release archive is downloaded). A Go module of its own:
# `go install traefik@version` refuses a module with replace directives, and
# Traefik's dependency graph stays apart from the other test tools'.
#
# Pinned at v3.6.12: v3.7.x requires github.com/traefik/traefik/dynamic/ext,
# a nested module that the v3 module's zip leaves out and that the proxy does
# not serve, so v3.7.x cannot be built from the module proxy.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../target/tools/bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)" # absolute: the build runs from this directory
cd "$here"
version="$(go list -m -f '{{.Version}}' github.com/traefik/traefik/v3)"
echo "building traefik $version into $out (cold: several minutes on 2 cores; cached afterwards)" >&2
# Stamp the version so `traefik version` tells the truth.
go build -ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$version" \
  -o "$out/traefik" github.com/traefik/traefik/v3/cmd/traefik
# go build leaves an up-to-date binary untouched: mark it fresh for make.
touch "$out/traefik"
