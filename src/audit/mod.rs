//! The audit stream: entries and their hash chain (`chain`, pure), the
//! stream kept in ConfigMaps (`stream`), and `keymint audit` (`cli`).

pub mod chain;
pub mod cli;
pub mod stream;

pub use chain::*;
