//go:build tools

// Package tools pins the upstream Kubernetes commands this module builds, so
// that `go mod tidy` keeps them (and their exact versions) in go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
