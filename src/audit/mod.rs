//! The audit stream. Pure: an entry and its place in the hash chain
//! (`entry`), a segment's content (`segment`), verification (`verify`, its
//! verdicts in `finding`), what the stream is known to hold (`index`),
//! how little of it start-up must read (`watermark`), retention
//! (`retention`) and the seal of the stream's own entries (`seal`). Its metrics (`metrics`). Kubernetes I/O: the segment ConfigMaps (`store`),
//! the appender (`stream`) and `keymint audit` (`cli`); their errors
//! (`error`).

pub mod cli;
pub mod entry;
pub mod error;
pub mod finding;
mod index;
pub mod metrics;
pub mod retention;
pub mod seal;
pub mod segment;
pub mod store;
pub mod stream;
pub mod verify;
pub mod watermark;

#[cfg(test)]
mod testing;

pub use entry::{
    Action, Draft, Entry, GENESIS, Head, chain, chain_all, chain_all_sealed, format_time,
    pruned_draft,
};
pub use error::AuditError;
pub use finding::{Anchor, Finding, FindingKind, Summary};
pub use retention::Retention;
pub use seal::{AuditKey, Keyring};
pub use segment::{ParseError, append_lines, parse_segment, size_after};
pub use verify::{verify, verify_with_checkpoint};
