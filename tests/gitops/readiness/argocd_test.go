package main

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func apiKey(t *testing.T, json string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON([]byte(json)); err != nil {
		t.Fatal(err)
	}
	return obj
}

const object = `{"apiVersion":"keymint.dev/v1alpha1","kind":"ApiKey",
	"metadata":{"name":"k","generation":3},"status":{"observedGeneration":3,"conditions":[{"type":"Ready"}]}}`

func TestTheObjectArrivesAsArgoCDConvertsIt(t *testing.T) {
	script := `return {status = "Healthy", message = tostring(obj.metadata.generation + obj.status.observedGeneration)
		.. " " .. obj.status.conditions[1].type .. " " .. tostring(#obj.status.conditions)}`
	got, err := argoCDHealth(apiKey(t, object), script)
	if err != nil {
		t.Fatal(err)
	}
	if *got != (verdict{Status: "Healthy", Message: "6 Ready 1"}) {
		t.Fatalf("got %+v", got)
	}
}

// Argo CD opens no string, math or io library for a script from argocd-cm:
// a script that uses one works in a test with all libraries and fails in
// Argo CD. It must fail here too.
func TestOnlyTheLibrariesArgoCDOpensAreThere(t *testing.T) {
	for _, script := range []string{
		`return {status = string.upper("healthy")}`,
		`return {status = tostring(math.floor(1))}`,
		`io.write("x") return {}`,
		`os.exit(1) return {}`,
	} {
		if got, err := argoCDHealth(apiKey(t, object), script); err == nil {
			t.Errorf("%s: ran, returned %+v", script, got)
		}
	}
	if _, err := argoCDHealth(apiKey(t, object), `table.insert({}, 1) return {status = "Healthy", message = tostring(os.time() > 0)}`); err != nil {
		t.Errorf("table and os.time are available in Argo CD: %v", err)
	}
}

func TestAStatusArgoCDDoesNotKnowIsUnknown(t *testing.T) {
	got, err := argoCDHealth(apiKey(t, object), `return {status = "Fine", message = "all good"}`)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != "Unknown" {
		t.Fatalf("got %+v", got)
	}
}

func TestAScriptThatReturnsNoTableIsAnError(t *testing.T) {
	if _, err := argoCDHealth(apiKey(t, object), `return "Healthy"`); err == nil {
		t.Fatal("a string was accepted as a health status")
	}
}
