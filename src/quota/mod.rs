//! Per-(project, owner) key quota: the ledger and the admission order
//! (`ledger`, pure), the ledger's ConfigMap (`store`), and the index of keys
//! waiting for a slot (`waiting`).

pub mod ledger;
pub mod store;
pub mod waiting;

pub use ledger::*;
