//! What the verifier trusts, played as the attacker against the real API
//! server: a status that carries another ApiKey's hash, two Active ApiKeys
//! with one hash, and routes that name no project (or name it where the
//! client can reach). Statuses are written by the admin through the status
//! subresource, since only keymint writes status in a real cluster; no
//! operator runs, so nothing rewrites them.

use keymint::apikey::{ApiKey, key};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::verifier::{Launch, Verifier};
use crate::support::{TestNamespace, api_key, eventually, raw_http};

/// Creates the ApiKey `name` of `project` and writes its status as the
/// admin: `phase`, and the hash and id of `minted`.
async fn with_status(
    api: &Api<ApiKey>,
    name: &str,
    project: &str,
    phase: &str,
    minted: &key::MintedKey,
) {
    api.create(
        &PostParams::default(),
        &api_key(name, project, "alice@example.com"),
    )
    .await
    .expect("create the ApiKey");
    let status = json!({"status": {
        "phase": phase, "keyId": key::key_id(minted), "keyHash": key::hash(minted),
        "secretName": name,
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write the status as the admin");
}

async fn json_check(verifier: &Verifier, key: &str, project: &str) -> Value {
    verifier.verify_json(key, project).await
}

/// The Tampered path once copied a Secret's hash annotation into status:
/// a tenant who planted the victim's hash there made the victim's key
/// contested, refused everywhere, silently. Only Active ApiKeys claim a
/// hash now, so a status in any other phase changes nothing.
#[tokio::test]
async fn a_hash_planted_in_a_non_active_status_cannot_make_the_victims_key_fail() {
    let ns = TestNamespace::new("verify-planted").await;
    let api: Api<ApiKey> = ns.api();
    let victim = key::mint().expect("mint");
    with_status(&api, "victim", "payments", "Active", &victim).await;
    let verifier = Verifier::start(&ns).await;
    assert_eq!(
        json_check(&verifier, victim.expose(), "payments").await["valid"],
        true
    );
    for (name, phase) in [
        ("planted-tampered", "SecretTampered"),
        ("planted-conflict", "Conflict"),
        ("planted-pending", "Pending"),
        ("planted-expired", "Expired"),
    ] {
        with_status(&api, name, "payments", phase, &victim).await;
    }
    // Wait for the verifier to have seen the last one (a key of its own,
    // Active, written after them), then check the victim's.
    let marker = key::mint().expect("mint");
    with_status(&api, "marker", "payments", "Active", &marker).await;
    eventually(std::time::Duration::from_secs(10), || async {
        json_check(&verifier, marker.expose(), "payments").await["valid"] == true
    })
    .await;
    let answer = json_check(&verifier, victim.expose(), "payments").await;
    assert_eq!(
        (&answer["valid"], &answer["apiKey"]),
        (&json!(true), &json!(format!("{}/victim", ns.name))),
        "{answer}"
    );
    let metrics = raw_http::get(verifier.probe, "/metrics", &[]).await.text();
    assert!(
        metrics.contains("keymint_verifier_contested_hashes 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keymint_verifier_index_keys 2"),
        "only the Active ApiKeys are indexed:\n{metrics}"
    );
    ns.delete().await;
}

/// Two Active ApiKeys with one hash: keymint never mints that, so one
/// status was written by someone else. The key verifies for neither, and
/// the verifier says so: a warning naming both, and a metric.
#[tokio::test]
async fn a_hash_two_active_api_keys_claim_is_refused_for_both_logged_and_counted() {
    let ns = TestNamespace::new("verify-contest").await;
    let api: Api<ApiKey> = ns.api();
    let verifier = Verifier::start(&ns).await;
    let shared = key::mint().expect("mint");
    with_status(&api, "first", "payments", "Active", &shared).await;
    eventually(std::time::Duration::from_secs(10), || async {
        json_check(&verifier, shared.expose(), "payments").await["valid"] == true
    })
    .await;
    with_status(&api, "second", "billing", "Active", &shared).await;
    eventually(std::time::Duration::from_secs(10), || async {
        json_check(&verifier, shared.expose(), "*").await["reason"] == "unknown"
    })
    .await;
    for project in ["payments", "billing"] {
        let answer = json_check(&verifier, shared.expose(), project).await;
        assert_eq!(answer["valid"], false, "{project}: {answer}");
    }
    let metrics = raw_http::get(verifier.probe, "/metrics", &[]).await.text();
    assert!(
        metrics.contains("keymint_verifier_contested_hashes 1"),
        "{metrics}"
    );
    let log = verifier.log();
    let warned = log.lines().find(|l| l.contains("claim one key hash"));
    let warned = warned.unwrap_or_else(|| panic!("no warning of the contest:\n{log}"));
    for name in ["first", "second"] {
        let named = format!("{}/{name}", ns.name);
        assert!(warned.contains(&named), "{named} not in {warned}");
    }
    assert!(warned.contains(&key::key_id(&shared)), "{warned}");
    assert!(
        !log.contains(&shared.expose()[4..]),
        "the key is in the log"
    );
    ns.delete().await;
}

/// No project named meant any project, on every protocol: any tenant's key
/// passed a route that forgot to name one, and the prefixed route (which
/// reads no query) was unrestricted whatever its query said. Now such a
/// check is a 400 (INVALID_ARGUMENT on gRPC) that says the route must name
/// a project; `*` opts into any project explicitly.
#[tokio::test]
async fn a_check_that_names_no_project_is_refused_on_every_protocol() {
    let ns = TestNamespace::new("verify-unnamed").await;
    let api: Api<ApiKey> = ns.api();
    let minted = key::mint().expect("mint");
    with_status(&api, "ci", "payments", "Active", &minted).await;
    let verifier = Verifier::start(&ns).await;
    let bearer = format!("Bearer {}", minted.expose());
    let auth = [("Authorization", bearer.as_str())];

    // The bare route: projects from its own query only.
    for path in [
        "/forward-auth",
        "/forward-auth?project=",
        "/forward-auth?Project=payments",
        "/forward-auth?projects=payments",
        "/forward-auth?project=payments&projekt=billing",
    ] {
        let reply = raw_http::get(verifier.http, path, &auth).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
        assert_eq!(reply.header("X-Keymint-Owner"), None, "{path}");
    }
    let misspelt = raw_http::get(verifier.http, "/forward-auth?Project=payments", &auth).await;
    assert!(
        misspelt.text().contains("\"Project\""),
        "{}",
        misspelt.text()
    );
    let unnamed = raw_http::get(verifier.http, "/forward-auth", &auth).await;
    assert!(
        unnamed.text().contains("names no project"),
        "{}",
        unnamed.text()
    );
    // A header never names the bare route's project (proxies forward the
    // client's headers).
    let from_header = [
        ("Authorization", bearer.as_str()),
        ("X-Keymint-Require-Project", "payments"),
    ];
    let reply = raw_http::get(verifier.http, "/forward-auth", &from_header).await;
    assert_eq!(reply.status, 400);
    for (path, status) in [
        ("/forward-auth?project=*", 200),
        ("/forward-auth?project=billing,payments", 200),
        ("/forward-auth?project=billing", 403),
    ] {
        let reply = raw_http::get(verifier.http, path, &auth).await;
        assert_eq!(reply.status, status, "{path}");
    }

    // The prefixed route: the query is the client's and is not read; the
    // projects come from the header the proxy sets, and must be there.
    for (path, required) in [
        ("/forward-auth/?project=payments", None),
        ("/forward-auth/orders?project=*", None),
        ("/forward-auth/", Some("")),
        ("/forward-auth/orders", Some(" , ")),
    ] {
        let mut headers = vec![("Authorization", bearer.as_str())];
        headers.extend(required.map(|r| ("X-Keymint-Require-Project", r)));
        let reply = raw_http::get(verifier.http, path, &headers).await;
        assert_eq!(reply.status, 400, "{path} {required:?}: {}", reply.text());
    }
    let star = [
        ("Authorization", bearer.as_str()),
        ("X-Keymint-Require-Project", "*"),
    ];
    let reply = raw_http::get(verifier.http, "/forward-auth/orders", &star).await;
    assert_eq!(reply.status, 200);

    // gRPC ext_authz: the route's context extension, or a denial.
    for extensions in [
        json!({}),
        json!({"project": ""}),
        json!({"other": "payments"}),
    ] {
        let answer = verifier.ext_authz(&json!({"headers": {"authorization": bearer},
                                                "contextExtensions": extensions}));
        assert_eq!(
            (&answer["grpcCode"], &answer["httpStatus"]),
            (&json!(3), &json!(400)),
            "{extensions}: {answer}"
        );
    }
    let answer = verifier.ext_authz(&json!({"headers": {"authorization": bearer},
                                            "contextExtensions": {"project": "*"}}));
    assert_eq!(answer["grpcCode"], 0, "{answer}");

    // POST /v1/verify: the body names the project.
    for body in [
        json!({"key": minted.expose()}),
        json!({"key": minted.expose(), "project": ""}),
    ] {
        let reply = raw_http::post_json(verifier.http, "/v1/verify", &body).await;
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert_eq!(reply.json()["reason"], "bad-request");
        assert!(!reply.text().contains(&minted.expose()[4..]));
    }
    assert_eq!(
        json_check(&verifier, minted.expose(), "*").await["valid"],
        true
    );
    ns.delete().await;
}

/// A single-project deployment opts in with `--default-project` (here its
/// environment twin): a check that names no project is checked against it,
/// so another project's key is still refused.
#[tokio::test]
async fn the_default_project_stands_in_for_an_unnamed_one() {
    let ns = TestNamespace::new("verify-default").await;
    let api: Api<ApiKey> = ns.api();
    let (ours, theirs) = (key::mint().expect("mint"), key::mint().expect("mint"));
    with_status(&api, "ours", "payments", "Active", &ours).await;
    with_status(&api, "theirs", "billing", "Active", &theirs).await;
    let launch = Launch {
        env: &[("KEYMINT_VERIFIER_DEFAULT_PROJECT", "payments")],
        ..Launch::default()
    };
    let verifier = Verifier::launch(&ns, launch).await;
    for (minted, status) in [(&ours, 200), (&theirs, 403)] {
        let bearer = format!("Bearer {}", minted.expose());
        let auth = [("Authorization", bearer.as_str())];
        for path in ["/forward-auth", "/forward-auth/orders?project=billing"] {
            let reply = raw_http::get(verifier.http, path, &auth).await;
            assert_eq!(reply.status, status, "{path}");
        }
        let answer = verifier.ext_authz(&json!({"headers": {"authorization": bearer}}));
        let code = if status == 200 { 0 } else { 7 };
        assert_eq!(answer["grpcCode"], code, "{answer}");
        let body = json!({"key": minted.expose()});
        let reply = raw_http::post_json(verifier.http, "/v1/verify", &body).await;
        assert_eq!(reply.json()["valid"], status == 200, "{}", reply.text());
    }
    ns.delete().await;
}
