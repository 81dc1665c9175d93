//! The people's commands: `keymint create`, `list`, `describe`, `delete`,
//! also run as the kubectl plugin `kubectl keymint`. The seed's "API keys"
//! page from a terminal: the owner is the caller, the key is shown once.
//!
//! Kubernetes I/O in one file per command; what they decide and print —
//! errors (`error`), a waiting key's verdict (`outcome`), the table
//! (`table`) — is pure.

pub mod connection;
pub mod create;
pub mod delete;
pub mod describe;
pub mod error;
pub mod list;
pub mod outcome;
pub mod table;
pub mod terminal;

use clap::Subcommand;

pub use error::PeopleError;

/// The name of the binary kubectl runs for `kubectl keymint ...`.
pub const PLUGIN_BINARY: &str = "kubectl-keymint";

#[derive(Subcommand, Debug)]
pub enum PeopleCommand {
    /// Create an ApiKey owned by you, wait until it is minted, show the key once.
    Create(create::CreateArgs),
    /// List ApiKeys: name, project, description, key id, created, expires, last used, phase.
    List(list::ListArgs),
    /// Show one ApiKey: status, conditions and its latest audit entries.
    Describe(describe::DescribeArgs),
    /// Delete an ApiKey (asks first on a terminal; --yes to skip).
    Delete(delete::DeleteArgs),
}

impl PeopleCommand {
    fn connection(&self) -> &connection::Connection {
        match self {
            PeopleCommand::Create(a) => &a.connection,
            PeopleCommand::List(a) => &a.connection,
            PeopleCommand::Describe(a) => &a.connection,
            PeopleCommand::Delete(a) => &a.connection,
        }
    }
}

/// Runs one of the people's commands.
pub async fn run(command: PeopleCommand) -> Result<(), PeopleError> {
    let cluster = command.connection().connect().await?;
    let result = match &command {
        PeopleCommand::Create(args) => create::run(&cluster, args).await,
        PeopleCommand::List(args) => list::run(&cluster, args).await,
        PeopleCommand::Describe(args) => describe::run(&cluster, args).await,
        PeopleCommand::Delete(args) => delete::run(&cluster, args).await,
    };
    result.map_err(|e| e.at_server(&cluster.server))
}

/// Whether the program was started as `kubectl-keymint` (by kubectl, or a
/// symlink): then its usage says `kubectl keymint`.
pub fn invoked_as_plugin(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|name| name == PLUGIN_BINARY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_plugin_is_known_by_its_file_name() {
        assert!(invoked_as_plugin(Some(OsStr::new("kubectl-keymint"))));
        assert!(invoked_as_plugin(Some(OsStr::new(
            "/usr/local/bin/kubectl-keymint"
        ))));
        assert!(!invoked_as_plugin(Some(OsStr::new("/usr/bin/keymint"))));
        assert!(!invoked_as_plugin(None));
    }
}
