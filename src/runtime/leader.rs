//! Leader election on a `coordination.k8s.io` Lease, with kube-lease-manager:
//! only the leader reconciles; standbys wait, ready to take over.
//!
//! kube-lease-manager renews the lease and takes it over once it expires.
//! A standby also watches the Lease so that a lease *released* by a leader
//! shutting down gracefully is taken over at once, not when it would have
//! expired.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Lease validity after the last renewal; a killed leader is replaced
/// within about this long.
pub const LEASE_SECONDS: u64 = 15;
/// The leader renews this long before the lease would expire.
pub const GRACE_SECONDS: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not known yet.
    Unknown,
    /// Another instance leads; this one waits.
    Standby,
    Leader,
}

pub struct Election {
    role: watch::Receiver<Role>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Election {
    pub async fn start(
        client: Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
    ) -> Result<Election, kube_lease_manager::LeaseManagerError> {
        let candidate = Candidate {
            client: client.clone(),
            lease_name: lease_name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
        };
        let manager = candidate.manager().await?;
        let (tx, role) = watch::channel(Role::Unknown);
        let tx = Arc::new(tx);
        let released = Arc::new(Notify::new());
        let leases: Api<Lease> = Api::namespaced(client, namespace);
        let observer = tokio::spawn(observe(
            leases,
            lease_name.to_string(),
            identity.to_string(),
            tx.clone(),
            released.clone(),
        ));
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            campaign(candidate, manager, tx, released, stop_rx).await;
            observer.abort();
        });
        Ok(Election {
            role,
            stop: Some(stop),
            task,
        })
    }

    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Resolves once this instance leads.
    pub async fn leading(&mut self) {
        let _ = self.role.wait_for(|r| *r == Role::Leader).await;
    }

    /// Resolves if this instance, having led, stops leading.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut role = self.role.clone();
        async move {
            let _ = role.wait_for(|r| *r != Role::Leader).await;
        }
    }

    /// Releases the lease (if held) so a standby takes over at once.
    pub async fn resign(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// What it takes to (re)create the lease manager.
struct Candidate {
    client: Client,
    lease_name: String,
    namespace: String,
    identity: String,
}

impl Candidate {
    async fn manager(&self) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
        let params = LeaseParams::new(&self.identity, LEASE_SECONDS, GRACE_SECONDS)
            .with_field_manager("keymint");
        LeaseManager::new(
            self.client.clone(),
            &self.lease_name,
            &self.namespace,
            params,
            LeaseCreateMode::AutoCreate,
        )
        .await
    }
}

async fn campaign(
    candidate: Candidate,
    mut manager: LeaseManager,
    tx: Arc<watch::Sender<Role>>,
    released: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => {
                if let Err(e) = manager.release().await {
                    warn!(error = %e, "could not release the lease");
                } else {
                    info!("lease released");
                }
                tx.send_replace(Role::Standby);
                return;
            }
            changed = manager.changed() => match changed {
                Ok(true) => {
                    info!("leading: this instance reconciles");
                    tx.send_replace(Role::Leader);
                }
                Ok(false) => {
                    info!("no longer leading");
                    tx.send_replace(Role::Standby);
                }
                Err(e) => {
                    warn!(error = %e, "leader election");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            // A released lease: kube-lease-manager would sleep until the old
            // lease expired (it only re-reads an expired lease), so start a
            // fresh manager, which reads the free lease and locks it.
            _ = released.notified() => {
                if *tx.borrow() != Role::Leader {
                    match candidate.manager().await {
                        Ok(fresh) => manager = fresh,
                        Err(e) => warn!(error = %e, "leader election"),
                    }
                }
            }
        }
    }
}

/// Watches the Lease: a holder other than us means "standing by"; no
/// holder means it was released.
async fn observe(
    leases: Api<Lease>,
    name: String,
    identity: String,
    tx: Arc<watch::Sender<Role>>,
    released: Arc<Notify>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // Back off on errors (a missing RBAC rule must not turn into a hot loop).
    let mut events = watcher(leases, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(lease) = event else {
            continue;
        };
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty());
        match holder {
            None => released.notify_one(),
            Some(h) if h != identity => {
                tx.send_if_modified(|role| {
                    let standby = *role == Role::Unknown;
                    if standby {
                        *role = Role::Standby;
                    }
                    standby
                });
            }
            Some(_) => {}
        }
    }
}
