//! `keymint delete`: after a confirmation on a terminal (or `--yes`), the
//! ApiKey is deleted; keymint then deletes its Secret and records it.

use clap::Args;
use kube::ResourceExt;
use kube::api::{DeleteParams, Preconditions};

use crate::people::connection::{Cluster, Connection};
use crate::people::error::{API_KEYS, Call, PeopleError};
use crate::people::terminal;

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The ApiKey.
    pub name: String,
    /// Do not ask: needed when standard input is not a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(cluster: &Cluster, args: &DeleteArgs) -> Result<(), PeopleError> {
    let call = Call::new("delete", API_KEYS)
        .named(&args.name)
        .in_namespace(&cluster.namespace);
    if !args.yes && !terminal::stdin_is_terminal() {
        return Err(PeopleError::NotConfirmed(args.name.clone()));
    }
    let api = cluster.api_keys();
    // Read first: the question names what is deleted, and the delete is
    // of that very object (its UID), not one created since under the name.
    let api_key = api.get(&args.name).await.map_err(|e| {
        Call::new("get", API_KEYS)
            .named(&args.name)
            .in_namespace(&cluster.namespace)
            .failed(e)
    })?;
    if !args.yes {
        let key_id = api_key
            .status
            .as_ref()
            .and_then(|s| s.key_id.clone())
            .unwrap_or_else(|| "none".into());
        let question = format!(
            "Delete ApiKey {} (project {}, key id {}) in namespace {}? Its key stops working at once.",
            args.name,
            terminal::escape(&api_key.spec.project),
            terminal::escape(&key_id),
            cluster.namespace
        );
        if !terminal::confirm(&question)? {
            return Err(PeopleError::Declined(args.name.clone()));
        }
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: api_key.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    api.delete(&args.name, &params)
        .await
        .map_err(|e| call.failed(e))?;
    eprintln!(
        "ApiKey {} deleted: its key no longer verifies; keymint deletes its Secret.",
        args.name
    );
    Ok(())
}
