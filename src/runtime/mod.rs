//! `keymint run`: wiring (`run`), options, the HTTP endpoints, leader
//! election and metrics.

pub mod http;
pub mod leader;
pub mod metrics;
pub mod options;
pub mod run;
