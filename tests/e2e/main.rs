//! End-to-end tests against a real Kubernetes API server: the local control
//! plane started by `support` (or the cluster in `KEYMINT_TEST_KUBECONFIG`).
//! One binary, so that every test shares one control plane per run.

mod support;

mod audit_exactly_once;
mod audit_history;
mod audit_hostile;
mod audit_stream;
mod calm;
mod control_plane;
mod crd_validation;
mod deletion;
mod exactly_once;
mod expires_at;
mod expiry;
mod first_run;
mod gitops_readiness;
mod ha;
mod hostile;
mod image;
mod leaks;
mod list_watch;
mod memory;
mod minting;
mod network_policy;
mod owner_binding;
mod packaging;
mod people;
mod project_binding;
mod provenance;
mod quota;
mod reinstall;
mod robustness;
mod show_once;
mod unobserved_deletion;
mod verification;
mod verifier;
mod verifier_bad_input;
mod verifier_chart;
mod verifier_nginx;
mod verifier_staleness;
mod verifier_traefik;
mod verifier_trust;
