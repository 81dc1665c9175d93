//! Per-(project, owner) key quota. Pure: the ledger and its hard limit
//! (`ledger`), who gets a slot (`admission`), which keys a missing ledger is
//! rebuilt from (`rebuild`). Kubernetes I/O: the ledger's
//! ConfigMap (`store`), slot requests (`slots`), and the index of keys
//! waiting for a slot, kept from the watch (`waiting`).

pub mod admission;
pub mod ledger;
pub mod rebuild;
pub mod slots;
pub mod store;
pub mod waiting;

pub use ledger::{Admission, DEFAULT_LIMIT, Entry, Ledger, LedgerParseError, Millis, Pair};
