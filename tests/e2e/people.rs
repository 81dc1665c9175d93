//! The people's commands (`keymint create`, `list`, `describe`, `delete`,
//! and `kubectl keymint`), run as the real binary against the real API
//! server by impersonated users — alice owns keys, bob may edit ApiKeys in
//! the namespace but is not alice — with the chart's roles and owner
//! binding, and keymint running so keys become Active.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use keymint::apikey::{ApiKey, Phase, key};
use keymint::people::error::{API_KEYS, Call, PeopleError};

use crate::support::access::{Check, may};
use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, chart, control_plane, eventually, wait_for_phase};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// Runs `keymint args...` with the admin kubeconfig (impersonation comes
/// from `--as` in `args`), stdin not a terminal.
fn keymint(args: &[&str]) -> Output {
    keymint_with(args, control_plane().kubeconfig())
}

fn keymint_with(args: &[&str], kubeconfig: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keymint"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("run keymint")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure with exactly one line on stderr, `error: ...`
/// containing every one of `words`; returns that line.
fn fails_with(o: &Output, words: &[&str]) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "succeeded: {}{err}", stdout(o));
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or_default();
    assert!(last.starts_with("error: "), "{err}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{err}"
    );
    for word in words {
        assert!(last.contains(word), "{word:?} not in {last:?}");
    }
    last.to_string()
}

/// The chart's people-facing objects for this namespace: the edit role
/// (bound to alice and bob here), and optionally the owner binding bound
/// to this namespace only. Returns the cluster-scoped names to delete.
struct Grants {
    edit: String,
    policy: Option<String>,
}

async fn grant_people(ns: &TestNamespace, with_owner_binding: bool) -> Grants {
    let suffix = ns.name.rsplit('-').next().expect("suffix");
    let release = format!("keymint-people-{suffix}");
    let selector = json!({"matchLabels": {"kubernetes.io/metadata.name": ns.name}});
    let bind = format!("ownerBinding.namespaceSelector={selector}");
    let objects = chart::render(
        &release,
        &ns.name,
        &[
            "--set",
            "rbac.aggregateToDefaultRoles=false",
            "--set-json",
            &bind,
        ],
    );
    let find = |kind: &str, name: &str| -> Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let edit = format!("{release}-edit");
    let role: ClusterRole = serde_json::from_value(find("ClusterRole", &edit)).expect("role");
    Api::<ClusterRole>::all(ns.client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("create the edit ClusterRole");
    // People read their key from its Secret: the built-in edit role gives
    // them that, as a tenant has it.
    for user in [ALICE, BOB] {
        for role in [edit.as_str(), "edit"] {
            let binding: RoleBinding = serde_json::from_value(json!({
                "metadata": {"generateName": "people-"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            }))
            .expect("binding");
            Api::<RoleBinding>::namespaced(ns.client.clone(), &ns.name)
                .create(&PostParams::default(), &binding)
                .await
                .expect("create a RoleBinding");
        }
    }
    let alice_client = control_plane().as_user(ALICE, &[]).await;
    let alice: Api<ApiKey> = Api::namespaced(alice_client.clone(), &ns.name);
    let alice_secrets: Api<Secret> = Api::namespaced(alice_client, &ns.name);
    eventually(Duration::from_secs(30), || async {
        alice.list(&ListParams::default()).await.is_ok()
            && alice_secrets.get_opt("probe").await.is_ok()
    })
    .await;
    let policy = match with_owner_binding {
        true => Some(install_owner_binding(ns, &release, &find).await),
        false => None,
    };
    Grants { edit, policy }
}

async fn install_owner_binding(
    ns: &TestNamespace,
    release: &str,
    find: &impl Fn(&str, &str) -> Value,
) -> String {
    let name = format!("{release}-owner-binding");
    let policy: ValidatingAdmissionPolicy =
        serde_json::from_value(find("ValidatingAdmissionPolicy", &name)).expect("policy");
    Api::<ValidatingAdmissionPolicy>::all(ns.client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the owner-binding policy");
    let binding: ValidatingAdmissionPolicyBinding =
        serde_json::from_value(find("ValidatingAdmissionPolicyBinding", &name)).expect("binding");
    Api::<ValidatingAdmissionPolicyBinding>::all(ns.client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the owner-binding policy binding");
    // The policy takes effect asynchronously: a dry-run create by bob for
    // alice is refused once it does.
    let bob: Api<ApiKey> = Api::namespaced(control_plane().as_user(BOB, &[]).await, &ns.name);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually(Duration::from_secs(30), || async {
        matches!(
            bob.create(&dry, &api_key("probe", "payments", ALICE)).await,
            Err(kube::Error::Api(s)) if s.message.contains("spec.owner")
        )
    })
    .await;
    name
}

impl Grants {
    async fn remove(self, client: &Client) {
        if let Some(name) = &self.policy {
            let dp = DeleteParams::default();
            Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                .delete(name, &dp)
                .await
                .expect("delete the policy binding");
            Api::<ValidatingAdmissionPolicy>::all(client.clone())
                .delete(name, &dp)
                .await
                .expect("delete the policy");
        }
        Api::<ClusterRole>::all(client.clone())
            .delete(&self.edit, &DeleteParams::default())
            .await
            .expect("delete the edit ClusterRole");
    }
}

/// The key in the ApiKey's Secret, read as admin.
async fn key_in_secret(ns: &TestNamespace, name: &str) -> String {
    let secret = ns.api::<Secret>().get(name).await.expect("get the Secret");
    let data = secret.data.expect("data");
    String::from_utf8(data["api-key"].0.clone()).expect("text")
}

#[tokio::test]
async fn alice_creates_and_lists_her_key_and_bob_cannot_delete_it() {
    let ns = TestNamespace::new("people").await;
    let grants = grant_people(&ns, true).await;
    // keymint keeps its audit stream in its own namespace, where tenants
    // hold no `edit`: here, one next to alice's.
    let audit_ns = audit_namespace_for_operator_of(&ns).await;
    let _operator = Operator::start(&ns.name, &["--audit-namespace", &audit_ns.name]);
    let n = ns.name.as_str();

    let created = keymint(&[
        "create",
        "ci-deploy",
        "--project",
        "payments",
        "--description",
        "CI deploy",
        "--expires",
        "30d",
        "-n",
        n,
        "--as",
        ALICE,
        "-o",
        "json",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let json: Value = serde_json::from_str(stdout(&created).trim()).expect("one JSON object");
    assert_eq!(json["owner"], ALICE, "the owner is the caller: {json}");
    assert_eq!(
        (json["project"].as_str(), json["namespace"].as_str()),
        (Some("payments"), Some(n))
    );
    let shown = json["key"].as_str().expect("key");
    assert_eq!(
        shown,
        key_in_secret(&ns, "ci-deploy").await,
        "the key of the Secret"
    );
    let api = ns.api::<ApiKey>();
    let stored = api.get("ci-deploy").await.expect("get");
    let status = stored.status.clone().expect("status");
    assert_eq!(status.phase, Some(Phase::Active));
    let parsed = key::parse(shown).expect("a keymint key");
    assert_eq!(status.key_hash, Some(key::hash(&parsed)));
    assert_eq!(json["keyId"].as_str(), status.key_id.as_deref());
    assert!(stored.spec.expires_at.is_some(), "--expires 30d was sent");
    assert!(!stderr(&created).contains(shown), "the key only on stdout");

    // A key of dave's, created by an admin: in the namespace's list, not in
    // alice's own.
    api.create(
        &PostParams::default(),
        &api_key("daves", "payments", "dave@example.com"),
    )
    .await
    .expect("create dave's key");
    wait_for_phase(&api, "daves", Phase::Active, Duration::from_secs(20)).await;
    let list = keymint(&["list", "-n", n, "--as", ALICE]);
    assert!(list.status.success(), "{}", stderr(&list));
    let table = stdout(&list);
    let header = table.lines().next().expect("header");
    for column in [
        "NAME",
        "PROJECT",
        "DESCRIPTION",
        "KEY ID",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "PHASE",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(table.lines().any(|l| l.starts_with("daves ")), "{table}");
    let mine = stdout(&keymint(&["list", "-n", n, "--as", ALICE, "--mine"]));
    let row = mine
        .lines()
        .find(|l| l.starts_with("ci-deploy "))
        .expect("her key");
    for cell in [
        "payments",
        "CI deploy",
        status.key_id.as_deref().expect("id"),
        "Active",
    ] {
        assert!(row.contains(cell), "{cell:?} in {row}");
    }
    assert!(!mine.contains("daves"), "--mine: {mine}");
    assert!(
        !table.contains(shown) && !mine.contains(shown),
        "list never shows a key"
    );

    // describe: the audit stream is keymint's; alice may not read it, an
    // admin may.
    let audit = ["--audit-namespace", audit_ns.name.as_str()];
    let hers = keymint(
        &[
            &["describe", "ci-deploy", "-n", n, "--as", ALICE][..],
            &audit,
        ]
        .concat(),
    );
    assert!(hers.status.success(), "{}", stderr(&hers));
    let text = stdout(&hers);
    for line in [
        "Phase:       Active",
        "Owner:       alice@example.com",
        "  not readable: ",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    assert!(text.contains("Ready True Minted"), "{text}");
    eventually(Duration::from_secs(10), || async {
        let admin = stdout(&keymint(
            &[&["describe", "ci-deploy", "-n", n][..], &audit].concat(),
        ));
        admin.lines().any(|l| l.contains("  minted "))
    })
    .await;

    // bob may delete ApiKeys here by RBAC, but not alice's.
    let bobs = keymint(&["delete", "ci-deploy", "--yes", "-n", n, "--as", BOB]);
    fails_with(
        &bobs,
        &["only the owner (alice@example.com)", "not bob@example.com"],
    );
    assert!(
        api.get_opt("ci-deploy").await.expect("get").is_some(),
        "still there"
    );
    // Without a terminal, delete needs --yes.
    let unasked = keymint(&["delete", "ci-deploy", "-n", n, "--as", ALICE]);
    fails_with(&unasked, &["--yes", "not a terminal"]);
    let hers = keymint(&["delete", "ci-deploy", "--yes", "-n", n, "--as", ALICE]);
    assert!(hers.status.success(), "{}", stderr(&hers));
    eventually(Duration::from_secs(20), || async {
        api.get_opt("ci-deploy").await.expect("get").is_none()
    })
    .await;

    // The policy still bound, deleting the namespace deletes dave's key:
    // the namespace controller is not the owner, and passes. (The namespace
    // holds this operator's quota ledgers, so it may not finish here.)
    Api::<Namespace>::all(ns.client.clone())
        .delete(n, &DeleteParams::default())
        .await
        .expect("delete the namespace");
    eventually(Duration::from_secs(60), || async {
        api.get_opt("daves")
            .await
            .expect("get")
            .is_none_or(|k| k.metadata.deletion_timestamp.is_some())
    })
    .await;
    grants.remove(&ns.client).await;
    audit_ns.delete().await;
}

/// A namespace for the audit stream of the operator of `ns`, with the
/// chart's ConfigMap rights there for that operator's ServiceAccount.
async fn audit_namespace_for_operator_of(ns: &TestNamespace) -> TestNamespace {
    let audit_ns = TestNamespace::new("people-audit").await;
    let release = chart::operator_release(&ns.name);
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": release},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                   "verbs": ["get", "list", "create", "update", "delete"]}],
    }))
    .expect("role");
    audit_ns
        .api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .expect("create the audit Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": release},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": release},
        "subjects": [{"kind": "ServiceAccount", "name": release, "namespace": ns.name}],
    }))
    .expect("binding");
    audit_ns
        .api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the audit RoleBinding");
    let (user, groups) = chart::operator_identity(&ns.name);
    let write = Check::new("create", "", "configmaps", Some(&audit_ns.name));
    eventually(Duration::from_secs(30), || async {
        may(&ns.client, &user, &groups, &write).await
    })
    .await;
    audit_ns
}

#[tokio::test]
async fn on_a_terminal_the_key_is_shown_exactly_once_and_delete_asks() {
    let ns = TestNamespace::new("people-tty").await;
    let grants = grant_people(&ns, false).await;
    let _operator = Operator::start(&ns.name, &[]);
    let n = ns.name.clone();
    let kubeconfig = control_plane().kubeconfig().to_path_buf();
    let program = env!("CARGO_BIN_EXE_keymint");

    let terminal = {
        let (n, kubeconfig) = (n.clone(), kubeconfig.clone());
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(program);
            command
                .args([
                    "create",
                    "term-key",
                    "--project",
                    "payments",
                    "-n",
                    &n,
                    "--as",
                    ALICE,
                ])
                .env("KUBECONFIG", &kubeconfig);
            let mut session =
                rexpect::session::spawn_command(command, Some(60_000)).expect("spawn on a pty");
            session.exp_eof().expect("create ends")
        })
        .await
        .expect("pty task")
    };
    let shown = key_in_secret(&ns, "term-key").await;
    assert_eq!(
        terminal.matches(&shown).count(),
        1,
        "exactly once:\n{terminal}"
    );
    assert_eq!(
        terminal.matches("kmk_").count(),
        1,
        "no other key-like text:\n{terminal}"
    );
    assert!(
        terminal.contains("keymint will not show it again"),
        "{terminal}"
    );
    assert!(
        terminal.contains("waiting for keymint to mint ApiKey term-key"),
        "the spinner:\n{terminal}"
    );

    let asked = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(program);
        command
            .args(["delete", "term-key", "-n", &n, "--as", ALICE])
            .env("KUBECONFIG", &kubeconfig);
        let mut session =
            rexpect::session::spawn_command(command, Some(30_000)).expect("spawn on a pty");
        let question = session.exp_string("[y/N]").expect("the question");
        session.send_line("y").expect("answer");
        (question, session.exp_eof().expect("delete ends"))
    })
    .await
    .expect("pty task");
    assert!(
        asked
            .0
            .contains("Delete ApiKey term-key (project payments, key id km_"),
        "{}",
        asked.0
    );
    assert!(asked.1.contains("ApiKey term-key deleted"), "{}", asked.1);
    let api = ns.api::<ApiKey>();
    eventually(Duration::from_secs(20), || async {
        api.get_opt("term-key").await.expect("get").is_none()
    })
    .await;
    grants.remove(&ns.client).await;
    ns.delete().await;
}

#[tokio::test]
async fn kubectl_keymint_runs_the_same_cli_with_kubectls_flags() {
    let ns = TestNamespace::new("people-kubectl").await;
    let grants = grant_people(&ns, false).await;
    alice_api(&ns)
        .await
        .create(
            &PostParams::default(),
            &api_key("by-yaml", "payments", ALICE),
        )
        .await
        .expect("alice creates a key");
    // The plugin as `make install` makes it: a symlink named kubectl-keymint
    // on PATH, found and run by the real kubectl.
    let dir = control_plane()
        .kubeconfig()
        .parent()
        .expect("dir")
        .join(format!("plugin-{}", ns.name));
    std::fs::create_dir_all(&dir).expect("plugin dir");
    let plugin = dir.join("kubectl-keymint");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keymint"), &plugin).expect("symlink");
    let kubeconfig = control_plane().kubeconfig();
    let context = kubeconfig_context(kubeconfig);
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/controlplane/bin/kubectl");
    let run = |args: &[&str]| {
        Command::new(&kubectl)
            .args(args)
            .env("PATH", &path)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    };
    let k = kubeconfig.to_str().expect("path");
    let listed = run(&[
        "keymint",
        "list",
        "--kubeconfig",
        k,
        "--context",
        &context,
        "--namespace",
        &ns.name,
        "--as",
        ALICE,
    ]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        stdout(&listed).lines().any(|l| l.starts_with("by-yaml ")),
        "{}",
        stdout(&listed)
    );
    let help = run(&["keymint", "--help"]);
    assert!(
        stdout(&help).contains("Usage: kubectl keymint"),
        "{}",
        stdout(&help)
    );
    let wrong = run(&[
        "keymint",
        "list",
        "--kubeconfig",
        k,
        "--context",
        "no-such-context",
    ]);
    fails_with(&wrong, &["cannot use the kubeconfig", "no-such-context"]);
    let _ = std::fs::remove_dir_all(&dir);
    grants.remove(&ns.client).await;
    ns.delete().await;
}

async fn alice_api(ns: &TestNamespace) -> Api<ApiKey> {
    Api::namespaced(control_plane().as_user(ALICE, &[]).await, &ns.name)
}

fn kubeconfig_context(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("kubeconfig");
    let config: Value = serde_norway::from_str(&text).expect("YAML");
    config["current-context"]
        .as_str()
        .expect("current-context")
        .to_string()
}

#[tokio::test]
async fn failures_say_what_to_do_in_one_line() {
    // No operator runs for this namespace.
    let ns = TestNamespace::new("people-fail").await;
    let grants = grant_people(&ns, false).await;
    let n = ns.name.as_str();

    let missing = keymint_with(&["list"], Path::new("/nonexistent/kubeconfig"));
    fails_with(
        &missing,
        &["no kubeconfig", "/nonexistent/kubeconfig", "KUBECONFIG"],
    );

    let unreachable = unreachable_kubeconfig(&ns);
    let down = keymint_with(&["list", "-n", n], &unreachable);
    fails_with(
        &down,
        &["cannot reach the API server at https://127.0.0.1:1/"],
    );

    let carol = keymint(&["list", "-n", n, "--as", "carol@example.com"]);
    fails_with(
        &carol,
        &[
            &format!("no permission to list apikeys.keymint.dev in namespace {n}"),
            "carol@example.com",
        ],
    );

    let refused = keymint(&[
        "create",
        "bad",
        "--project",
        "Not_A_Label",
        "-n",
        n,
        "--as",
        ALICE,
    ]);
    fails_with(&refused, &["refused by the API server", "spec.project"]);

    let past = keymint(&[
        "create",
        "old",
        "--project",
        "payments",
        "--expires",
        "2020-01-01T00:00:00Z",
        "-n",
        n,
        "--as",
        ALICE,
    ]);
    fails_with(&past, &["--expires", "in the past"]);

    let waited = keymint(&[
        "create",
        "nobody-home",
        "--project",
        "payments",
        "--timeout",
        "2s",
        "-n",
        n,
        "--as",
        ALICE,
    ]);
    fails_with(
        &waited,
        &[
            "keymint did not answer within 2s",
            "no status",
            "removed",
            "operator running",
        ],
    );
    let api = ns.api::<ApiKey>();
    eventually(Duration::from_secs(10), || async {
        // The finalizer added at creation (if any) waits for an operator;
        // the deletion was requested all the same.
        api.get_opt("nobody-home")
            .await
            .expect("get")
            .is_none_or(|k| k.metadata.deletion_timestamp.is_some())
    })
    .await;

    // A resource the API server does not serve: its real 404 reads as a
    // missing CRD.
    let gvk = GroupVersionKind::gvk("keymint.dev", "v1alpha1", "NoSuchThing");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "nosuchthings");
    let absent: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), n, &resource);
    let Err(kube::Error::Api(status)) = absent.list(&ListParams::default()).await else {
        panic!("an unserved resource lists");
    };
    let error = Call::new("list", API_KEYS)
        .in_namespace(n)
        .refused_with(&status);
    assert!(matches!(error, PeopleError::CrdMissing), "{error}");

    grants.remove(&ns.client).await;
    ns.delete().await;
}

/// The admin kubeconfig with its server moved to a port nobody listens on.
fn unreachable_kubeconfig(ns: &TestNamespace) -> std::path::PathBuf {
    let text = std::fs::read_to_string(control_plane().kubeconfig()).expect("kubeconfig");
    let mut config: Value = serde_norway::from_str(&text).expect("YAML");
    for cluster in config["clusters"].as_array_mut().expect("clusters") {
        cluster["cluster"]["server"] = Value::String("https://127.0.0.1:1".into());
    }
    let path = control_plane()
        .kubeconfig()
        .parent()
        .expect("dir")
        .join(format!("{}-unreachable.kubeconfig", ns.name));
    std::fs::write(&path, serde_norway::to_string(&config).expect("YAML")).expect("write");
    path
}

#[tokio::test]
async fn a_full_quota_names_the_keys_holding_the_slots() {
    let ns = TestNamespace::new("people-quota").await;
    let grants = grant_people(&ns, false).await;
    let _operator = Operator::start(&ns.name, &["--max-keys-per-owner", "1"]);
    let n = ns.name.as_str();
    let first = keymint(&[
        "create",
        "first",
        "--project",
        "payments",
        "-n",
        n,
        "--as",
        ALICE,
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = keymint(&[
        "create",
        "second",
        "--project",
        "payments",
        "-n",
        n,
        "--as",
        ALICE,
    ]);
    fails_with(
        &second,
        &[
            "ApiKey second was rejected: quota full",
            "keys holding the slots: first",
            "removed",
        ],
    );
    let api = ns.api::<ApiKey>();
    eventually(Duration::from_secs(20), || async {
        api.get_opt("second").await.expect("get").is_none()
    })
    .await;
    assert!(api.get_opt("first").await.expect("get").is_some());
    grants.remove(&ns.client).await;
    ns.delete().await;
}

#[tokio::test]
async fn the_owner_is_whoever_the_api_server_says_is_calling() {
    // `--as` is impersonation: the SelfSubjectReview answers with the
    // impersonated user, and a kubeconfig user's own `as:` counts the same.
    let ns = TestNamespace::new("people-whoami").await;
    let grants = grant_people(&ns, false).await;
    let _operator = Operator::start(&ns.name, &[]);
    let text = std::fs::read_to_string(control_plane().kubeconfig()).expect("kubeconfig");
    let mut config: Value = serde_norway::from_str(&text).expect("YAML");
    for user in config["users"].as_array_mut().expect("users") {
        user["user"]["as"] = Value::String(BOB.into());
    }
    let path = control_plane()
        .kubeconfig()
        .parent()
        .expect("dir")
        .join(format!("{}-bob.kubeconfig", ns.name));
    std::fs::write(&path, serde_norway::to_string(&config).expect("YAML")).expect("write");
    let created = keymint_with(
        &[
            "create",
            "bobs",
            "--project",
            "payments",
            "-n",
            &ns.name,
            "-o",
            "json",
        ],
        &path,
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let stored = ns.api::<ApiKey>().get("bobs").await.expect("get");
    assert_eq!(stored.spec.owner, BOB);
    let managers: Vec<_> = stored
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers
            .iter()
            .any(|m| m == keymint::people::create::FIELD_MANAGER),
        "{managers:?}"
    );
    let _ = std::fs::remove_file(&path);
    grants.remove(&ns.client).await;
    ns.delete().await;
}

#[tokio::test]
async fn values_from_the_api_reach_the_terminal_escaped() {
    let ns = TestNamespace::new("people-escape").await;
    // Whoever may write an ApiKey picks these bytes: an owner that clears
    // the screen and retitles the window, a description that reverses what
    // follows it.
    let owner = "mallory\u{1b}[2J\u{1b}]0;pwned\u{7}";
    let mut hostile = api_key("hostile", "payments", owner);
    hostile.spec.description = Some("invoice\u{202e}fdp.exe".into());
    ns.api::<ApiKey>()
        .create(&PostParams::default(), &hostile)
        .await
        .expect("the schema admits both");
    let raw = ['\u{1b}', '\u{7}', '\u{202e}'];

    let listed = keymint(&["list", "-n", &ns.name]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let table = stdout(&listed);
    assert!(!table.contains(raw), "{table:?}");
    assert!(table.contains("invoice\\u{202e}fdp.exe"), "{table}");

    let described = keymint(&["describe", "hostile", "-n", &ns.name]);
    assert!(described.status.success(), "{}", stderr(&described));
    let text = stdout(&described);
    assert!(!text.contains(raw), "{text:?}");
    for line in [
        "Owner:       mallory\\u{1b}[2J\\u{1b}]0;pwned\\u{7}",
        "Description: invoice\\u{202e}fdp.exe",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    ns.delete().await;
}
