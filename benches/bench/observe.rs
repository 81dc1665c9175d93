//! What a user would see, timed: watches on the scenario's ApiKeys and on
//! its keys' Secrets (metadata only), each event stamped with the local
//! clock when it arrives. The control plane runs on this machine, so those
//! stamps compare directly with `expiresAt` and with when a create was sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use keymint::apikey::{ApiKey, Phase};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

use crate::Result;

#[derive(Default)]
pub struct Seen {
    /// Current phase by ApiKey name (absent: no status yet).
    pub phase: HashMap<String, Phase>,
    /// When each ApiKey was first seen in each phase, by name.
    pub first: HashMap<String, Vec<(Phase, Timestamp)>>,
    /// ApiKeys deleted (gone from the API).
    pub gone: HashMap<String, Timestamp>,
    /// Secrets: creation seen, deletion seen; live now and at most.
    pub secret_created: HashMap<String, Timestamp>,
    pub secret_deleted: HashMap<String, Timestamp>,
    pub secrets_live: usize,
    pub secrets_live_max: usize,
}

impl Seen {
    pub fn count(&self, phase: Phase) -> usize {
        self.phase.values().filter(|p| **p == phase).count()
    }

    pub fn first_in(&self, name: &str, phase: Phase) -> Option<Timestamp> {
        self.first
            .get(name)?
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, t)| *t)
    }
}

pub struct Observer {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Observer {
    /// Starts both watches and returns once both have listed.
    pub async fn start(client: &Client, namespace: &str) -> Result<Observer> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(2);
        let keys: Api<ApiKey> = Api::namespaced(client.clone(), namespace);
        let secrets: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), namespace);
        let key_task = {
            let (seen, tx) = (seen.clone(), tx.clone());
            tokio::spawn(async move {
                let mut stream = watcher(keys, watcher::Config::default()).boxed();
                while let Some(event) = stream.next().await {
                    let now = Timestamp::now();
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    match event {
                        Ok(watcher::Event::Apply(k) | watcher::Event::InitApply(k)) => {
                            let name = k.name_any();
                            if let Some(phase) = k.status.as_ref().and_then(|s| s.phase) {
                                let first = s.first.entry(name.clone()).or_default();
                                if !first.iter().any(|(p, _)| *p == phase) {
                                    first.push((phase, now));
                                }
                                s.phase.insert(name, phase);
                            }
                        }
                        Ok(watcher::Event::Delete(k)) => {
                            s.gone.entry(k.name_any()).or_insert(now);
                        }
                        Ok(watcher::Event::InitDone) => {
                            let _ = tx.try_send(());
                        }
                        Ok(watcher::Event::Init) => {}
                        Err(e) => eprintln!("bench: ApiKey watch: {e}"),
                    }
                }
            })
        };
        let secret_task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                // Only keys' Secrets: never stream unrelated (large) ones.
                let config =
                    watcher::Config::default().labels(keymint::apikey::secret::LABEL_API_KEY);
                let mut stream = watcher(secrets, config).boxed();
                while let Some(event) = stream.next().await {
                    let now = Timestamp::now();
                    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    match event {
                        Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => {
                            if let std::collections::hash_map::Entry::Vacant(e) =
                                s.secret_created.entry(m.name_any())
                            {
                                e.insert(now);
                                s.secrets_live += 1;
                                s.secrets_live_max = s.secrets_live_max.max(s.secrets_live);
                            }
                        }
                        Ok(watcher::Event::Delete(m)) => {
                            if s.secret_deleted.insert(m.name_any(), now).is_none() {
                                s.secrets_live = s.secrets_live.saturating_sub(1);
                            }
                        }
                        Ok(watcher::Event::InitDone) => {
                            let _ = tx.try_send(());
                        }
                        Ok(watcher::Event::Init) => {}
                        Err(e) => eprintln!("bench: Secret watch: {e}"),
                    }
                }
            })
        };
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .map_err(|_| "watches did not sync within 60 s")?;
        }
        Ok(Observer {
            seen,
            tasks: vec![key_task, secret_task],
        })
    }

    pub fn with<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Polls until `done` holds; false when `timeout` passed first.
    pub async fn wait(&self, timeout: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.with(&done) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
