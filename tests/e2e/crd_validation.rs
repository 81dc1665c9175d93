//! Bad input is refused at admission, by the real API server, with a message
//! that names the field; good input — edge cases included — is accepted.
//!
//! New objects go in both ways tools send them: as `kubectl apply` does (a
//! POST with strict field validation, so unknown fields are errors rather
//! than warnings) and as `kubectl apply --server-side`, Flux and Argo CD's
//! server-side mode do (an apply patch, strict too).

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::support::{TestNamespace, templates};

fn api_keys(ns: &TestNamespace) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("keymint.dev", "v1alpha1", "ApiKey");
    Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk))
}

fn object(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "keymint.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn valid_spec() -> Value {
    json!({"project": "payments", "owner": "alice@example.com"})
}

/// `valid_spec()` with `path` (a `/`-separated JSON pointer under spec) set
/// to `value`, or removed when `value` is null.
fn spec_with(path: &str, value: Value) -> Value {
    let mut spec = valid_spec();
    let (parent, leaf) = path.rsplit_once('/').map_or(("", path), |(p, l)| (p, l));
    let mut target = &mut spec;
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        target = target
            .as_object_mut()
            .expect("object")
            .entry(part)
            .or_insert_with(|| json!({}));
    }
    let map = target.as_object_mut().expect("object");
    if value.is_null() {
        map.remove(leaf);
    } else {
        map.insert(leaf.to_string(), value);
    }
    spec
}

/// A create as client-side `kubectl apply` sends it.
async fn create(ns: &TestNamespace, body: &Value) -> Result<DynamicObject, kube::Error> {
    let url = format!(
        "/apis/keymint.dev/v1alpha1/namespaces/{}/apikeys?fieldValidation=Strict&fieldManager=kubectl-client-side-apply",
        ns.name
    );
    let request = http::Request::post(url)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(body).expect("json"))
        .expect("request");
    ns.client.request(request).await
}

/// A server-side apply, strict, as `kubectl apply --server-side` and GitOps
/// controllers send it.
async fn apply(
    api: &Api<DynamicObject>,
    name: &str,
    body: &Value,
) -> Result<DynamicObject, kube::Error> {
    let params = PatchParams::apply("keymint-tests").validation_strict();
    api.patch(name, &params, &Patch::Apply(body)).await
}

fn labels(n: usize) -> Value {
    Value::Object(
        (0..n)
            .map(|i| (format!("example.com/label-{i}"), json!("v")))
            .collect(),
    )
}

struct Refused {
    case: &'static str,
    spec: Value,
    /// What the error message must contain: the field first, then often the
    /// rule.
    expect: &'static [&'static str],
}

fn refused_on_create() -> Vec<Refused> {
    let long = |n: usize| "a".repeat(n);
    vec![
        Refused {
            case: "missing project",
            spec: spec_with("project", Value::Null),
            expect: &["spec.project", "Required value"],
        },
        Refused {
            case: "missing owner",
            spec: spec_with("owner", Value::Null),
            expect: &["spec.owner", "Required value"],
        },
        Refused {
            case: "empty project",
            spec: spec_with("project", json!("")),
            expect: &["spec.project", "at least 1 chars long"],
        },
        Refused {
            case: "empty owner",
            spec: spec_with("owner", json!("")),
            expect: &["spec.owner", "at least 1 chars long"],
        },
        Refused {
            case: "project with capitals",
            spec: spec_with("project", json!("Payments")),
            expect: &["spec.project", "should match"],
        },
        Refused {
            case: "project with underscore",
            spec: spec_with("project", json!("pay_ments")),
            expect: &["spec.project", "should match"],
        },
        Refused {
            case: "project starting with a dash",
            spec: spec_with("project", json!("-payments")),
            expect: &["spec.project", "should match"],
        },
        Refused {
            case: "project ending with a dash",
            spec: spec_with("project", json!("payments-")),
            expect: &["spec.project", "should match"],
        },
        Refused {
            case: "project of 64 characters",
            spec: spec_with("project", json!(long(64))),
            expect: &["spec.project", "Too long", "63"],
        },
        Refused {
            case: "project that is a number",
            spec: spec_with("project", json!(42)),
            expect: &["spec.project", "must be of type string"],
        },
        Refused {
            case: "owner with a space",
            spec: spec_with("owner", json!("alice smith")),
            expect: &["spec.owner", "should match"],
        },
        Refused {
            case: "owner with a newline",
            spec: spec_with("owner", json!("alice\nmallory")),
            expect: &["spec.owner", "should match"],
        },
        Refused {
            case: "owner of 254 characters",
            spec: spec_with("owner", json!(long(254))),
            expect: &["spec.owner", "Too long", "253"],
        },
        Refused {
            case: "description of 257 characters",
            spec: spec_with("description", json!(long(257))),
            expect: &["spec.description", "Too long", "256"],
        },
        Refused {
            case: "description with a newline",
            spec: spec_with("description", json!("CI key\nsecond line")),
            expect: &["spec.description", "should match"],
        },
        Refused {
            case: "description that is a list",
            spec: spec_with("description", json!(["a"])),
            expect: &["spec.description", "must be of type string"],
        },
        Refused {
            case: "expiresAt in words",
            spec: spec_with("expiresAt", json!("tomorrow")),
            expect: &["spec.expiresAt", "date-time"],
        },
        Refused {
            case: "expiresAt without a time",
            spec: spec_with("expiresAt", json!("2027-01-31")),
            expect: &["spec.expiresAt", "date-time"],
        },
        Refused {
            case: "expiresAt in day/month/year",
            spec: spec_with("expiresAt", json!("31/01/2027 00:00")),
            expect: &["spec.expiresAt", "date-time"],
        },
        Refused {
            case: "expiresAt with junk before the fraction",
            spec: spec_with("expiresAt", json!("2099-01-31T00:00:00x5Z")),
            expect: &["spec.expiresAt", "should match"],
        },
        Refused {
            case: "expiresAt with an impossible offset",
            spec: spec_with("expiresAt", json!("2099-01-31T00:00:00+99:99:99")),
            expect: &["spec.expiresAt"],
        },
        Refused {
            case: "annotation value of 3601 characters",
            spec: spec_with(
                "secretTemplate/annotations",
                json!({"example.com/note": long(3601)}),
            ),
            expect: &[
                "spec.secretTemplate.annotations.example.com/note",
                "Too long",
            ],
        },
        Refused {
            case: "expiresAt as a Unix time",
            spec: spec_with("expiresAt", json!(1800000000)),
            expect: &["spec.expiresAt", "must be of type"],
        },
        Refused {
            case: "unknown field in spec",
            spec: spec_with("expiry", json!("2027-01-31T00:00:00Z")),
            expect: &["spec.expiry", "unknown field"],
        },
        Refused {
            case: "unknown field in secretTemplate",
            spec: spec_with("secretTemplate/finalizers", json!(["x"])),
            expect: &["spec.secretTemplate.finalizers", "unknown field"],
        },
        Refused {
            case: "secretName with capitals",
            spec: spec_with("secretName", json!("Payments-CI")),
            expect: &["spec.secretName", "should match"],
        },
        Refused {
            case: "secretName with underscore",
            spec: spec_with("secretName", json!("payments_ci")),
            expect: &["spec.secretName", "should match"],
        },
        Refused {
            case: "secretName of 254 characters",
            spec: spec_with("secretName", json!(long(254))),
            expect: &["spec.secretName", "Too long", "253"],
        },
        Refused {
            case: "empty secretName",
            spec: spec_with("secretName", json!("")),
            expect: &["spec.secretName", "at least 1 chars long"],
        },
        Refused {
            case: "label key with a space",
            spec: spec_with("secretTemplate/labels", json!({"team name": "payments"})),
            expect: &["spec.secretTemplate.labels", "label keys must be"],
        },
        Refused {
            case: "label key name of 64 characters",
            spec: spec_with("secretTemplate/labels", json!({long(64): "x"})),
            expect: &["spec.secretTemplate.labels", "label keys must be"],
        },
        Refused {
            case: "label key with a bad prefix",
            spec: spec_with("secretTemplate/labels", json!({"Example.COM/team": "x"})),
            expect: &["spec.secretTemplate.labels", "label keys must be"],
        },
        Refused {
            case: "label key with two slashes",
            spec: spec_with("secretTemplate/labels", json!({"a/b/c": "x"})),
            expect: &["spec.secretTemplate.labels", "label keys must be"],
        },
        Refused {
            case: "label key reserved for keymint",
            spec: spec_with(
                "secretTemplate/labels",
                json!({"keymint.dev/api-key": "other"}),
            ),
            expect: &["spec.secretTemplate.labels", "reserved for keymint"],
        },
        Refused {
            case: "label value with a space",
            spec: spec_with("secretTemplate/labels", json!({"team": "pay ments"})),
            expect: &["spec.secretTemplate.labels.team", "should match"],
        },
        Refused {
            case: "label value of 64 characters",
            spec: spec_with("secretTemplate/labels", json!({"team": long(64)})),
            expect: &["spec.secretTemplate.labels.team", "Too long", "63"],
        },
        Refused {
            case: "65 labels",
            spec: spec_with("secretTemplate/labels", labels(65)),
            expect: &["spec.secretTemplate.labels", "must have at most 64 items"],
        },
        Refused {
            case: "annotation key starting with a dash",
            spec: spec_with("secretTemplate/annotations", json!({"-note": "x"})),
            expect: &["spec.secretTemplate.annotations", "annotation keys must be"],
        },
        Refused {
            case: "annotation key reserved for keymint",
            spec: spec_with(
                "secretTemplate/annotations",
                json!({"keymint.dev/key-hash": "x"}),
            ),
            expect: &["spec.secretTemplate.annotations", "reserved for keymint"],
        },
        Refused {
            case: "secretTemplate one character over its total bound",
            spec: spec_with("secretTemplate", templates::at_bound(1, 'a')),
            expect: &["spec.secretTemplate", "must be at most 8192 characters"],
        },
        Refused {
            case: "secretTemplate that is a string",
            spec: spec_with("secretTemplate", json!("labels")),
            expect: &["spec.secretTemplate", "must be of type object"],
        },
    ]
}

#[tokio::test]
async fn malformed_api_keys_are_refused_naming_the_field() {
    let ns = TestNamespace::new("crd-refused").await;
    let cases = refused_on_create();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    let long_name = "n".repeat(64);
    match create(&ns, &object(&long_name, valid_spec())).await {
        Err(kube::Error::Api(status))
            if status.code == 422
                && status.message.contains("metadata.name must be at most 63") => {}
        other => failures.push(format!("name of 64 characters: {other:?}")),
    }
    for (i, case) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        match create(&ns, &object(&name, case.spec.clone())).await {
            Ok(_) => failures.push(format!("{}: accepted", case.case)),
            Err(kube::Error::Api(status)) => {
                let missing: Vec<_> = case
                    .expect
                    .iter()
                    .filter(|e| !status.message.contains(*e))
                    .collect();
                if !(status.code == 422 || status.code == 400) || !missing.is_empty() {
                    failures.push(format!(
                        "{}: {} {:?} lacks {missing:?}",
                        case.case, status.code, status.message
                    ));
                }
            }
            Err(other) => failures.push(format!("{}: unexpected error {other}", case.case)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    ns.delete().await;
}

/// Server-side apply refuses the same objects. Its wording differs (type
/// mismatches and unknown fields fail while building the typed patch, with
/// a 500 from upstream), so only the field name is asserted here.
#[tokio::test]
async fn malformed_api_keys_are_refused_by_server_side_apply() {
    let ns = TestNamespace::new("crd-refused-ssa").await;
    let api = api_keys(&ns);
    let mut failures = Vec::new();
    for (i, case) in refused_on_create().iter().enumerate() {
        let name = format!("bad-{i}");
        let field = case.expect[0];
        match apply(&api, &name, &object(&name, case.spec.clone())).await {
            Ok(_) => failures.push(format!("{}: accepted", case.case)),
            Err(kube::Error::Api(status)) if status.message.contains(field) => {}
            Err(other) => failures.push(format!("{}: {other} does not name {field}", case.case)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    ns.delete().await;
}

#[tokio::test]
async fn immutable_fields_cannot_change_after_creation() {
    let ns = TestNamespace::new("crd-immutable").await;
    let api = api_keys(&ns);
    let with_secret = spec_with("secretName", json!("payments-ci"));
    let cases: Vec<(&str, Value, Value, &[&str])> = vec![
        (
            "project changed",
            valid_spec(),
            spec_with("project", json!("billing")),
            &["spec.project", "project is immutable"],
        ),
        (
            "owner changed",
            valid_spec(),
            spec_with("owner", json!("mallory@example.com")),
            &["spec.owner", "owner is immutable"],
        ),
        (
            "secretName changed",
            with_secret.clone(),
            spec_with("secretName", json!("other")),
            &["spec.secretName", "secretName is immutable"],
        ),
        (
            "secretName added",
            valid_spec(),
            spec_with("secretName", json!("other")),
            &["spec.secretName", "secretName is immutable"],
        ),
        (
            "secretName removed",
            with_secret,
            valid_spec(),
            &["spec.secretName", "secretName is immutable"],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (case, before, after, expect)) in cases.iter().enumerate() {
        let name = format!("immutable-{i}");
        apply(&api, &name, &object(&name, before.clone()))
            .await
            .expect("valid create");
        match apply(&api, &name, &object(&name, after.clone())).await {
            Ok(_) => failures.push(format!("{case}: accepted")),
            Err(kube::Error::Api(status)) => {
                let missing: Vec<_> = expect
                    .iter()
                    .filter(|e| !status.message.contains(*e))
                    .collect();
                if status.code != 422 || !missing.is_empty() {
                    failures.push(format!(
                        "{case}: {} {:?} lacks {missing:?}",
                        status.code, status.message
                    ));
                }
            }
            Err(other) => failures.push(format!("{case}: unexpected error {other}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    ns.delete().await;
}

#[tokio::test]
async fn valid_api_keys_are_accepted_including_edge_cases() {
    let ns = TestNamespace::new("crd-accepted").await;
    let api = api_keys(&ns);
    // The bound's edge exactly: one character more is refused above.
    let bound = keymint::apikey::TEMPLATE_MAX_CHARS;
    assert_eq!(templates::chars(&templates::at_bound(0, '🔑')), bound);
    assert_eq!(templates::chars(&templates::at_bound(1, 'a')), bound + 1);
    let cases: Vec<(&str, Value)> = vec![
        ("minimal: no description, no expiry", valid_spec()),
        (
            "project of 63 characters",
            spec_with("project", json!("p".repeat(63))),
        ),
        ("one-character project", spec_with("project", json!("p"))),
        (
            "owner of 253 characters",
            spec_with("owner", json!("o".repeat(253))),
        ),
        (
            "ServiceAccount owner",
            spec_with("owner", json!("system:serviceaccount:ci:deployer")),
        ),
        (
            "description of 256 ASCII characters",
            spec_with("description", json!("d".repeat(256))),
        ),
        (
            "description of 256 non-ASCII characters",
            spec_with("description", json!("ключ🔑".repeat(256 / 5) + "é")),
        ),
        ("empty description", spec_with("description", json!(""))),
        (
            "expiry in UTC",
            spec_with("expiresAt", json!("2027-01-31T00:00:00Z")),
        ),
        (
            "expiry with an offset and fraction",
            spec_with("expiresAt", json!("2027-01-31T09:30:00.250+02:00")),
        ),
        (
            "expiry in the past (minted never, refused by the controller, not the schema)",
            spec_with("expiresAt", json!("2020-01-01T00:00:00Z")),
        ),
        (
            "secretName of 253 characters",
            spec_with(
                "secretName",
                json!(format!("{}.{}", "s".repeat(126), "s".repeat(126))),
            ),
        ),
        (
            "secretTemplate with prefixed labels and annotations",
            spec_with(
                "secretTemplate",
                json!({
                    "labels": {"team": "payments", "app.kubernetes.io/part-of": "checkout", "empty": ""},
                    "annotations": {"example.com/note": "any value, even with spaces: ok"}
                }),
            ),
        ),
        ("64 labels", spec_with("secretTemplate/labels", labels(64))),
        (
            "the largest secretTemplate, counted in characters (of four bytes each)",
            spec_with("secretTemplate", templates::at_bound(0, '🔑')),
        ),
        (
            "label key name of 63 characters",
            spec_with(
                "secretTemplate/labels",
                json!({"k".repeat(63): "v".repeat(63)}),
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (case, spec)) in cases.iter().enumerate() {
        let name = format!("good-{i}");
        if let Err(e) = apply(&api, &name, &object(&name, spec.clone())).await {
            failures.push(format!("{case}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Mutable fields may change, and may be added or removed.
    let name = "good-0";
    let changed = spec_with("description", json!("rotated by CI"));
    let changed = {
        let mut spec = changed;
        spec["expiresAt"] = json!("2028-01-01T00:00:00Z");
        spec
    };
    apply(&api, name, &object(name, changed))
        .await
        .expect("description and expiresAt may change");
    apply(&api, name, &object(name, valid_spec()))
        .await
        .expect("description and expiresAt may be removed");
    ns.delete().await;
}

/// What a person sees: `kubectl apply` of a bad manifest fails at once, and
/// the message names the field.
#[tokio::test]
async fn kubectl_apply_reports_the_field() {
    let ns = TestNamespace::new("crd-kubectl").await;
    let manifest = serde_json::to_string(&object(
        "ci-deploy",
        spec_with("project", json!("Payments!")),
    ))
    .expect("json");
    let out = crate::support::kubectl::kubectl(&["apply", "-n", &ns.name, "-f", "-"], &manifest);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "kubectl apply accepted a bad project"
    );
    assert!(stderr.contains("spec.project"), "{stderr}");
    ns.delete().await;
}
