//! High availability and observability: leader election on a Lease (only
//! the leader reconciles; a standby takes over), /metrics, /healthz, /readyz.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keymint::apikey::{ApiKey, Phase};
use kube::Api;
use kube::api::PostParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, eventually, record_secret_uids, wait_for_phase};

const LEADER: &[&str] = &["--leader-elect", "true"];

/// A minimal HTTP/1.0 GET: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: keymint\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

/// The value of a sample line `name` (with its labels) in a /metrics body.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn leading(op: &Operator) -> bool {
    let (_, body) = get(op.http_addr().await, "/metrics").await;
    sample(&body, "keymint_leader") == Some(1.0)
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over_on_shutdown() {
    let ns = TestNamespace::new("leader").await;
    let api: Api<ApiKey> = ns.api();
    let mut first = Operator::start(&ns.name, LEADER);
    eventually(Duration::from_secs(20), || leading(&first)).await;
    let mut second = Operator::start(&ns.name, LEADER);
    let second_addr = second.http_addr().await;
    // The standby is ready (it can take over) but does not lead.
    eventually(Duration::from_secs(20), || async {
        get(second_addr, "/readyz").await.0 == 200
    })
    .await;
    assert!(!leading(&second).await, "two leaders");
    let first_addr = first.http_addr().await;
    // The leader is ready once its caches are synced.
    eventually(Duration::from_secs(20), || async {
        get(first_addr, "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(get(second_addr, "/healthz").await.0, 200);

    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &api_key(&format!("before-{i}"), "ha", "alice@example.com"),
        )
        .await
        .expect("create");
    }
    for i in 0..5 {
        wait_for_phase(
            &api,
            &format!("before-{i}"),
            Phase::Active,
            Duration::from_secs(20),
        )
        .await;
    }
    assert!(
        !second.log().contains("reconciled"),
        "the standby reconciled:\n{}",
        second.log()
    );

    // Graceful shutdown releases the lease: the standby takes over at once.
    assert!(first.terminate(), "the leader exits 0 on SIGTERM");
    assert!(first.log().contains("lease released"), "{}", first.log());
    let released = Instant::now();
    eventually(Duration::from_secs(10), || leading(&second)).await;
    let takeover = released.elapsed();
    assert!(
        takeover < Duration::from_secs(4),
        "takeover took {takeover:?}"
    );

    api.create(
        &PostParams::default(),
        &api_key("after", "ha", "alice@example.com"),
    )
    .await
    .expect("create");
    wait_for_phase(&api, "after", Phase::Active, Duration::from_secs(20)).await;
    assert!(second.running());
    ns.delete().await;
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_the_lease_duration_and_no_key_is_minted_twice() {
    const KEYS: usize = 40;
    let ns = TestNamespace::new("leader-kill").await;
    let api: Api<ApiKey> = ns.api();
    let seen = record_secret_uids(ns.api()).await;
    let mut first = Operator::start(&ns.name, LEADER);
    eventually(Duration::from_secs(20), || leading(&first)).await;
    let second = Operator::start(&ns.name, LEADER);
    second.http_addr().await;

    // Churn: keys keep coming while the leader is killed.
    let creator = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..KEYS {
                let key = api_key(
                    &format!("key-{i:02}"),
                    "ha",
                    &format!("user-{}@example.com", i % 4),
                );
                api.create(&PostParams::default(), &key)
                    .await
                    .expect("create");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.kill();
    let killed = Instant::now();
    eventually(Duration::from_secs(25), || leading(&second)).await;
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(keymint::runtime::leader::LEASE_SECONDS + 2),
        "takeover after SIGKILL took {takeover:?}"
    );
    creator.await.expect("creator");
    for i in 0..KEYS {
        wait_for_phase(
            &api,
            &format!("key-{i:02}"),
            Phase::Active,
            Duration::from_secs(30),
        )
        .await;
    }
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), KEYS, "one Secret per key, none lost");
        for (name, uids) in seen.iter() {
            assert_eq!(uids.len(), 1, "Secret {name} was minted twice: {uids:?}");
        }
    }
    ns.delete().await;
}

#[tokio::test]
async fn metrics_count_keys_by_phase_with_bounded_labels() {
    let ns = TestNamespace::new("metrics").await;
    let api: Api<ApiKey> = ns.api();
    let operator = Operator::start(&ns.name, &["--max-keys-per-owner", "2"]);
    for i in 0..3 {
        api.create(
            &PostParams::default(),
            &api_key(&format!("key-{i}"), "metrics", "alice@example.com"),
        )
        .await
        .expect("create");
    }
    wait_for_phase(&api, "key-2", Phase::Rejected, Duration::from_secs(20)).await;
    wait_for_phase(&api, "key-1", Phase::Active, Duration::from_secs(20)).await;
    let addr = operator.http_addr().await;
    eventually(Duration::from_secs(10), || async {
        let (_, body) = get(addr, "/metrics").await;
        sample(&body, "keymint_keys{phase=\"Active\"}") == Some(2.0)
            && sample(&body, "keymint_keys{phase=\"Rejected\"}") == Some(1.0)
    })
    .await;
    // Counters move once the audit entry is durable, a moment after the
    // status that the gauges count.
    eventually(Duration::from_secs(10), || async {
        sample(&get(addr, "/metrics").await.1, "keymint_mints_total") == Some(2.0)
    })
    .await;
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(sample(&body, "keymint_mints_total"), Some(2.0), "{body}");
    assert_eq!(
        sample(&body, "keymint_rejections_total"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "keymint_leader"),
        Some(1.0),
        "without election the one instance leads"
    );
    assert!(
        sample(&body, "keymint_audit_appends_total").is_some_and(|n| n >= 3.0),
        "{body}"
    );
    assert!(sample(&body, "keymint_reconcile_duration_seconds_count").is_some_and(|n| n >= 3.0));
    // At rest nothing waits for a worker, and no Event was dropped.
    assert_eq!(sample(&body, "keymint_queue_depth"), Some(0.0), "{body}");
    assert_eq!(
        sample(&body, "keymint_events_dropped_total"),
        Some(0.0),
        "{body}"
    );
    // No label carries a name, owner or project: only phases and categories,
    // and the namespace of audit entries (capped by --audit-metric-namespaces).
    let audit_entries = format!(
        "keymint_audit_entries_total{{apikey_namespace=\"{}\"}}",
        ns.name
    );
    assert!(
        sample(&body, &audit_entries).is_some_and(|n| n >= 3.0),
        "{body}"
    );
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(&audit_entries))
    {
        for forbidden in ["key-0", "alice", "metrics\"", &ns.name] {
            assert!(!line.contains(forbidden), "unbounded label in {line:?}");
        }
    }
    ns.delete().await;
}
