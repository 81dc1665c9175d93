//go:build tools

// Package tools pins the developer tools this module builds (helm, for
// `helm lint` and the chart's tests), so that `go mod tidy` keeps them and
// their exact versions in go.sum. A module of its own: helm's Kubernetes
// client libraries must not be unified with the control plane's pinned
// k8s.io/kubernetes build in tests/controlplane.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
