#!/usr/bin/env bash
# Builds the local control plane into target/controlplane/bin: upstream
# kube-apiserver, kube-controller-manager and kubectl (the versions pinned in
# go.mod) and keymint-controlplane, the launcher that embeds etcd.
#
# Go's build cache makes a second run cheap; the Makefile also skips this
# script entirely while the binaries are newer than go.mod, go.sum and the
# launcher's sources.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../target/controlplane/bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)" # absolute: the build runs from this directory
cd "$here"
echo "building the local control plane into $out (cold: ~6 min on 2 cores; cached afterwards)" >&2
# Stamp the real version: without it the binaries report v0.0.0-master and
# clients that parse the server version (kubectl, kube-rs) complain.
version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="${version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
go build -ldflags="$ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl
go build -ldflags='-s -w' -o "$out/keymint-controlplane" ./launcher
touch "$out/.built"
