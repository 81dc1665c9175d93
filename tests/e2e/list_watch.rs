//! keymint's list-then-watch (`runtime::watch`) against the real API server:
//! a list in several pages, continue tokens included, gives every ApiKey
//! once, in order, between `Init` and `InitDone`; the watch then resumes
//! from the list's version and tells creates and deletes.

use std::time::Duration;

use futures::StreamExt;
use keymint::apikey::{ApiKey, GuardedApiKey};
use keymint::runtime::watch::in_pages;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher::Event;

use crate::support::{TestNamespace, api_key};

#[tokio::test]
async fn a_list_in_pages_then_the_watch_tell_every_key_once() {
    let ns = TestNamespace::new("listwatch").await;
    let api_keys = ns.api::<ApiKey>();
    let names = ["k1", "k2", "k3", "k4", "k5"];
    for name in names {
        let created = api_key(name, "payments", "alice@example.com");
        api_keys
            .create(&PostParams::default(), &created)
            .await
            .expect("create");
    }
    // Pages of 2: three pages, two continue tokens.
    let mut events = in_pages(ns.api::<GuardedApiKey>(), 2).boxed();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("an event within 30 s")
            .expect("the stream goes on")
            .expect("no error")
    };
    assert!(matches!(next().await, Event::Init));
    let mut listed = Vec::new();
    loop {
        match next().await {
            Event::InitApply(api_key) => listed.push(api_key.name_any()),
            Event::InitDone => break,
            other => panic!("unexpected during the list: {other:?}"),
        }
    }
    assert_eq!(listed, names, "every key once, in the API server's order");

    let created = api_key("k6", "payments", "alice@example.com");
    api_keys
        .create(&PostParams::default(), &created)
        .await
        .expect("create");
    match next().await {
        Event::Apply(api_key) => assert_eq!(api_key.name_any(), "k6"),
        other => panic!("expected k6 created, got {other:?}"),
    }
    api_keys
        .delete("k1", &DeleteParams::default())
        .await
        .expect("delete");
    match next().await {
        Event::Delete(api_key) => assert_eq!(api_key.name_any(), "k1"),
        other => panic!("expected k1 deleted, got {other:?}"),
    }
    ns.delete().await;
}
