# keymint — developer entry points. `make help` lists them.

CARGO      ?= cargo
CP_DIR     := target/controlplane
CP_BIN     := $(CP_DIR)/bin
CP_STAMP   := $(CP_BIN)/.built
CP_SOURCES := tests/controlplane/go.mod tests/controlplane/go.sum tests/controlplane/build.sh $(wildcard tests/controlplane/launcher/*.go)
KUBECTL    := $(CP_BIN)/kubectl
HELM       := $(CP_BIN)/helm
TOOLS_SOURCES := tests/tools/go.mod tests/tools/go.sum tests/tools/build.sh
TOOLS_BIN  := target/tools/bin
READINESS  := $(TOOLS_BIN)/keymint-readiness
READINESS_SOURCES := tests/gitops/go.mod tests/gitops/go.sum tests/gitops/build.sh $(wildcard tests/gitops/readiness/*.go)
EXTAUTHZ   := $(TOOLS_BIN)/keymint-extauthz-check
EXTAUTHZ_SOURCES := tests/extauthz/go.mod tests/extauthz/go.sum tests/extauthz/build.sh tests/extauthz/main.go
TRAEFIK    := $(TOOLS_BIN)/traefik
TRAEFIK_SOURCES := tests/traefik/go.mod tests/traefik/go.sum tests/traefik/build.sh
IMAGE      ?= keymint:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
CONTAINER_ENGINE ?= podman
IMAGE_CONTEXT := target/image
LOCAL_KUBECONFIG := $(CP_DIR)/kubeconfig

.PHONY: help build install test prereqs unit-test e2e-test lint fmt crds controlplane tools readiness extauthz traefik static image image-dockerfile cluster-up cluster-down run demo clean bench bench-quick

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build the keymint binary (debug)
	$(CARGO) build

PREFIX ?= $(HOME)/.local

install: ## install keymint and the kubectl plugin (kubectl-keymint, a symlink) into PREFIX/bin (default ~/.local/bin)
	$(CARGO) install --locked --path . --root $(PREFIX)
	ln -sf keymint $(PREFIX)/bin/kubectl-keymint

test: prereqs controlplane tools readiness extauthz traefik static ## unit tests and end-to-end tests against a real local control plane
	cd tests/gitops && go test ./...
	$(CARGO) test --lib --bins --tests

unit-test: ## unit tests, the protocol model and the purity check: no control plane, a minute
	$(CARGO) test --lib --bins --test purity --test quota_model --test docs_links

e2e-test: prereqs controlplane tools readiness extauthz traefik static ## only the end-to-end tests, against a real local control plane
	cd tests/gitops && go test ./...
	$(CARGO) test --test e2e

SMALL_BIN := target/release-small/keymint

# What the tests run that neither cargo nor go can build: stop at once with
# the command that installs it, not in the middle of a test.
prereqs:
	@test -x /usr/sbin/nginx -o -x /usr/bin/nginx || { echo "make test needs nginx (the real client of forward-auth): apt-get install nginx-light   (bash .ci/run installs it)" >&2; exit 1; }

bench: controlplane tools ## benchmarks (release build, own control plane, ~15-25 min): table + target/bench/results.json; then the size build's mint, restart and verify: target/bench/results-small.json
	$(CARGO) build --release
	$(CARGO) build --profile release-small --bin keymint
	$(CARGO) bench --bench bench -- --full $(ARGS)
	KEYMINT_BENCH_BIN=$(abspath $(SMALL_BIN)) KEYMINT_BENCH_RESULTS=$(abspath target/bench/results-small.json) \
		$(CARGO) bench --bench bench -- --full --only mint,restart,verify --mint-sizes 10000 $(ARGS)

bench-quick: controlplane tools ## ~1 minute smoke version of `make bench` (200 keys, no 10k waves)
	$(CARGO) build --release
	$(CARGO) bench --bench bench -- --quick $(ARGS)

lint: tools ## cargo fmt --check, clippy with warnings as errors, go vet, helm lint
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	cd tests/controlplane && test -z "$$(gofmt -l launcher)" && go vet ./launcher
	cd tests/gitops && test -z "$$(gofmt -l readiness)" && go vet ./readiness
	cd tests/extauthz && test -z "$$(gofmt -l .)" && go vet .
	$(HELM) lint --strict charts/keymint

fmt: ## format Rust and Go sources
	$(CARGO) fmt
	gofmt -w tests/controlplane/launcher tests/gitops/readiness tests/extauthz

crds: ## regenerate crds/ from the Rust types
	$(CARGO) run --quiet -- crd apikeys > crds/apikeys.keymint.dev.yaml
	$(CARGO) run --quiet -- crd projectgrants > crds/projectgrants.keymint.dev.yaml

controlplane: $(CP_STAMP) ## build kube-apiserver, kube-controller-manager, kubectl and the etcd launcher

$(CP_STAMP): $(CP_SOURCES)
	tests/controlplane/build.sh $(CP_BIN)

tools: $(HELM) ## build helm (tests/tools, its own Go module) into target/controlplane/bin

$(HELM): $(TOOLS_SOURCES)
	tests/tools/build.sh $(CP_BIN)

readiness: $(READINESS) ## build keymint-readiness (tests/gitops: kstatus and Argo CD's Lua health check) into target/tools/bin

$(READINESS): $(READINESS_SOURCES)
	tests/gitops/build.sh $(TOOLS_BIN)

extauthz: $(EXTAUTHZ) ## build keymint-extauthz-check (tests/extauthz: an Envoy ext_authz v3 client from Envoy's protos) into target/tools/bin

$(EXTAUTHZ): $(EXTAUTHZ_SOURCES)
	tests/extauthz/build.sh $(TOOLS_BIN)

traefik: $(TRAEFIK) ## build traefik (tests/traefik: the version pinned in its go.mod, from the Go module proxy) into target/tools/bin

$(TRAEFIK): $(TRAEFIK_SOURCES)
	tests/traefik/build.sh $(TOOLS_BIN)

static: ## keymint as one static binary (release, stripped; target/static): what `make image` puts in the image
	tests/image/build-static.sh >/dev/null

image: static ## the image from the static binary, FROM scratch, nothing pulled (IMAGE=keymint:VERSION; CONTAINER_ENGINE=podman|docker)
	rm -rf $(IMAGE_CONTEXT) && mkdir -p $(IMAGE_CONTEXT)
	cp "$$(tests/image/build-static.sh)" $(IMAGE_CONTEXT)/keymint
	$(CONTAINER_ENGINE) build -f Dockerfile.host -t $(IMAGE) $(IMAGE_CONTEXT)

image-dockerfile: ## the image built from source inside the engine (multi-stage Dockerfile; pulls rust:alpine and distroless/static)
	$(CONTAINER_ENGINE) build -t $(IMAGE) .

cluster-up: controlplane ## start the local control plane in the background; kubeconfig in target/controlplane/kubeconfig
	@if [ -f $(CP_DIR)/pid ] && kill -0 $$(cat $(CP_DIR)/pid) 2>/dev/null; then \
		echo "already running: export KUBECONFIG=$(abspath $(LOCAL_KUBECONFIG))"; exit 0; fi; \
	rm -f $(LOCAL_KUBECONFIG); \
	setsid $(CP_BIN)/keymint-controlplane --dir $(CP_DIR) >$(CP_DIR)/cluster.log 2>&1 </dev/null & echo $$! > $(CP_DIR)/pid; \
	for i in $$(seq 1 300); do \
		if [ -f $(LOCAL_KUBECONFIG) ]; then \
			echo "control plane up: export KUBECONFIG=$(abspath $(LOCAL_KUBECONFIG))"; exit 0; fi; \
		if ! kill -0 $$(cat $(CP_DIR)/pid) 2>/dev/null; then cat $(CP_DIR)/cluster.log; exit 1; fi; \
		sleep 0.2; \
	done; echo "control plane not ready after 60s; see $(CP_DIR)/cluster.log"; exit 1

cluster-down: ## stop the local control plane started by cluster-up (and the demo's operator)
	@if [ -f $(CP_DIR)/operator.pid ]; then kill $$(cat $(CP_DIR)/operator.pid) 2>/dev/null || true; rm -f $(CP_DIR)/operator.pid; fi
	@if [ -f $(CP_DIR)/pid ]; then kill $$(cat $(CP_DIR)/pid) 2>/dev/null || true; \
		while kill -0 $$(cat $(CP_DIR)/pid) 2>/dev/null; do sleep 0.2; done; \
		rm -f $(CP_DIR)/pid; echo "control plane stopped"; \
	else echo "no control plane running"; fi

run: tools ## run the operator against KUBECONFIG, or the local control plane (with the chart's owner binding) when unset (flags: ARGS="...")
	@if [ -z "$$KUBECONFIG" ]; then $(MAKE) --no-print-directory cluster-up >/dev/null && \
		$(KUBECTL) --kubeconfig $(LOCAL_KUBECONFIG) apply --server-side -f crds/ >/dev/null && \
		$(HELM) template keymint charts/keymint --show-only templates/owner-binding.yaml | \
			$(KUBECTL) --kubeconfig $(LOCAL_KUBECONFIG) apply -f - >/dev/null && \
		$(KUBECTL) --kubeconfig $(LOCAL_KUBECONFIG) create namespace keymint-system 2>/dev/null || true; fi; \
	KUBECONFIG=$${KUBECONFIG:-$(abspath $(LOCAL_KUBECONFIG))} $(CARGO) run -- run $(ARGS)

demo: cluster-up tools ## control plane, CRD, owner binding, operator, examples: Active, Rejected and Expired keys, a key read once
	examples/demo.sh

clean: cluster-down ## stop the control plane and remove build outputs
	$(CARGO) clean
