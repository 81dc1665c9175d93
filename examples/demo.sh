#!/usr/bin/env bash
# The keymint demo (make demo): a local control plane, the CRDs, the operator,
# the examples applied, and every phase a user meets: Active keys, one
# Rejected by the quota, one Rejected for a project its namespace is not
# granted, one Expired, and a key read once from its Secret.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CP=target/controlplane
export KUBECONFIG="$PWD/$CP/kubeconfig"
kubectl="$CP/bin/kubectl"
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }

say "1. The CRDs"
run "$kubectl" apply --server-side -f crds/
"$kubectl" wait --for=condition=Established --timeout=30s crd/apikeys.keymint.dev crd/projectgrants.keymint.dev >/dev/null

say "2. The owner binding and the operator (quota lowered to 2 keys per owner and project for the demo)"
# The chart's admission policy that makes spec.owner the creator's username;
# keymint refuses to start without it (or --allow-unbound-owners).
run sh -c "$CP/bin/helm template keymint charts/keymint --show-only templates/owner-binding.yaml | $kubectl apply -f -"
"$kubectl" create namespace keymint-system --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
"$kubectl" create namespace payments --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
say "   The payments namespace is granted the payments project (by a cluster admin)"
for i in $(seq 1 50); do "$kubectl" apply -f examples/projectgrant.yaml >/dev/null && break; sleep 0.2; done
run "$kubectl" get projectgrants -n payments
if [ -f "$CP/operator.pid" ] && kill -0 "$(cat "$CP/operator.pid")" 2>/dev/null; then
  kill "$(cat "$CP/operator.pid")"; while kill -0 "$(cat "$CP/operator.pid")" 2>/dev/null; do sleep 0.1; done
fi
cargo build --quiet
printf '+ keymint run --namespace keymint-system --max-keys-per-owner 2 --expiry-warning 1h  (in the background, log in %s)\n' "$CP/operator.log"
target/debug/keymint run --namespace keymint-system --max-keys-per-owner 2 --expiry-warning 1h >"$CP/operator.log" 2>&1 &
echo $! >"$CP/operator.pid"

# A re-run starts from a clean slate (the operator removes the old keys).
"$kubectl" delete apikeys --all -n payments --wait=true --timeout=60s >/dev/null

say "3. Alice's keys: two from examples/, a third over her quota, one for a project payments is not granted, and one that expires in 5 seconds"
for i in $(seq 1 50); do "$kubectl" apply -n payments -f examples/apikeys.yaml && break; sleep 0.2; done
sleep 1 # let the two examples be older than the third, so the quota admits them first
expires="$(date -u -d '+5 seconds' +%Y-%m-%dT%H:%M:%S.%3NZ)"
"$kubectl" apply -n payments -f - <<YAML
apiVersion: keymint.dev/v1alpha1
kind: ApiKey
metadata: {name: one-too-many}
spec: {project: payments, owner: alice@example.com, description: "A third key: over the quota of 2"}
---
apiVersion: keymint.dev/v1alpha1
kind: ApiKey
metadata: {name: not-granted}
spec: {project: billing, owner: alice@example.com, description: "A project payments is not granted"}
---
apiVersion: keymint.dev/v1alpha1
kind: ApiKey
metadata: {name: short-lived}
spec: {project: payments, owner: bob@example.com, description: "Expires in 5 seconds", expiresAt: "$expires"}
YAML
"$kubectl" wait -n payments --for=jsonpath='{.status.phase}'=Active --timeout=30s apikey/ci-deploy apikey/nightly-report >/dev/null
"$kubectl" wait -n payments --for=jsonpath='{.status.phase}'=Rejected --timeout=30s apikey/one-too-many apikey/not-granted >/dev/null
run "$kubectl" get apikeys -n payments

say "4. Waiting for short-lived to expire"
"$kubectl" wait -n payments --for=jsonpath='{.status.phase}'=Expired --timeout=30s apikey/short-lived >/dev/null
run "$kubectl" get apikeys -n payments
run "$kubectl" get secrets -n payments -l app.kubernetes.io/managed-by=keymint

say "5. Why one-too-many and not-granted were rejected"
run "$kubectl" get apikey one-too-many -n payments -o jsonpath='{.status.conditions[0].message}{"\n"}'
run "$kubectl" get apikey not-granted -n payments -o jsonpath='{.status.conditions[0].reason}: {.status.conditions[0].message}{"\n"}'

say "6. The key, read once from its Secret (the only place it exists)"
printf '+ %s\n' "$kubectl get secret payments-ci -n payments -o jsonpath='{.data.api-key}' | base64 -d"
"$kubectl" get secret payments-ci -n payments -o jsonpath='{.data.api-key}' | base64 -d; echo
run "$kubectl" get apikey ci-deploy -n payments -o jsonpath='keyId={.status.keyId} keyHash={.status.keyHash}{"\n"}'

say "7. Events"
run "$kubectl" get events -n payments --sort-by=.lastTimestamp -o custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message

say "8. The audit stream: one entry per transition, hash-chained, in ConfigMaps"
run target/debug/keymint audit list --audit-namespace keymint-system
run target/debug/keymint audit verify --audit-namespace keymint-system

cat <<EOT

The operator keeps running. Try:
  export KUBECONFIG=$KUBECONFIG
  $kubectl delete apikey ci-deploy -n payments   # frees a slot: one-too-many becomes Active
  $kubectl patch projectgrant projects -n payments --type merge -p '{"spec":{"projects":["payments","billing"]}}'
                                                 # grants billing: not-granted becomes Active
  $kubectl get ak -n payments
Stop everything with: make cluster-down
EOT
