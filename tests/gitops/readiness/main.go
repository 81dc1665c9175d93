// Command keymint-readiness reads one Kubernetes object as JSON on standard
// input (as `kubectl get -o json` prints it, or as the e2e tests read it
// from the API server) and prints, as one JSON line, what the GitOps tools
// would make of it:
//
//	{"kstatus": {"status": "Current", "message": "..."},
//	 "argocd":  {"status": "Healthy", "message": "..."}}
//
// "kstatus" is sigs.k8s.io/cli-utils' status.Compute — the library Flux's
// kustomize-controller and helm-controller (wait), kpt and cli-utils use.
// "argocd" is the Argo CD health script given with --argocd-health, run by
// gopher-lua the way Argo CD runs a health check from argocd-cm (see
// argocd.go); it is left out without the flag.
//
// Exit status: 0 with a verdict, 1 when the input or the script is unusable
// (the reason on standard error).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// verdict is one tool's judgement of the object.
type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type report struct {
	Kstatus verdict  `json:"kstatus"`
	ArgoCD  *verdict `json:"argocd,omitempty"`
}

func main() {
	script := flag.String("argocd-health", "", "an Argo CD health check (Lua) to run over the object")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, *script); err != nil {
		fmt.Fprintln(os.Stderr, "keymint-readiness:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, script string) error {
	input, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("read standard input: %w", err)
	}
	// Decoded as client-go decodes what the API server sends (integers stay
	// int64): the form both kstatus and Argo CD's cluster cache see.
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(input); err != nil {
		return fmt.Errorf("standard input is not a Kubernetes object as JSON: %w", err)
	}
	computed, err := status.Compute(obj)
	if err != nil {
		return fmt.Errorf("kstatus: %w", err)
	}
	result := report{Kstatus: verdict{Status: computed.Status.String(), Message: computed.Message}}
	if script != "" {
		source, err := os.ReadFile(script)
		if err != nil {
			return errors.New("read the Argo CD health script: " + err.Error())
		}
		health, err := argoCDHealth(obj, string(source))
		if err != nil {
			return fmt.Errorf("argo cd health script %s: %w", script, err)
		}
		result.ArgoCD = health
	}
	return json.NewEncoder(out).Encode(result)
}
