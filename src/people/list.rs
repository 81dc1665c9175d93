//! `keymint list`: the keys of a namespace (or all), optionally only the
//! caller's own.

use std::io::Write;

use clap::Args;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::apikey::ApiKey;
use crate::people::connection::{Cluster, Connection};
use crate::people::error::{API_KEYS, Call, PeopleError};
use crate::people::table;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Keys of every namespace.
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Only keys you own.
    #[arg(long)]
    pub mine: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(cluster: &Cluster, args: &ListArgs) -> Result<(), PeopleError> {
    let (api, call) = if args.all_namespaces {
        (
            Api::<ApiKey>::all(cluster.client.clone()),
            Call::new("list", API_KEYS),
        )
    } else {
        (
            cluster.api_keys(),
            Call::new("list", API_KEYS).in_namespace(&cluster.namespace),
        )
    };
    let mut keys = api
        .list(&ListParams::default())
        .await
        .map_err(|e| call.failed(e))?
        .items;
    if args.mine {
        let me = cluster.whoami().await?;
        keys.retain(|k| k.spec.owner == me);
    }
    if keys.is_empty() {
        let place = if args.all_namespaces {
            "any namespace".to_string()
        } else {
            format!("namespace {}", cluster.namespace)
        };
        let whose = if args.mine { " of yours" } else { "" };
        eprintln!("No ApiKeys{whose} in {place}.");
        return Ok(());
    }
    keys.sort_by_key(|k| (k.namespace(), k.name_any()));
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", table::render(&keys, args.all_namespaces))?;
    Ok(())
}
