//go:build tools

// Package tools pins Traefik, the reverse proxy whose ForwardAuth middleware
// the e2e tests put in front of keymint's verifier, so that `go mod tidy`
// keeps it and its exact dependency versions in go.sum. A module of its own:
// Traefik's dependency graph (every provider it ships) must not be unified
// with the control plane's, helm's or the ext_authz client's.
package tools

import (
	_ "github.com/traefik/traefik/v3/cmd/traefik"
)
