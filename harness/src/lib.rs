//! `bitnet-harness`: runs YAML scenarios against the BitNet engine and the llama.cpp reference,
//! compares traces, keeps goldens and writes reports (see DESIGN.md for the data flow):
//! [`scenario`] → model (in [`run`]) → engine and [`reference`](mod@reference) → [`compare`] → verdicts
//! ([`run`]) → [`golden`] / [`report`].

pub mod bench;
pub mod bounded;
pub mod calibrate;
pub mod compare;
pub mod fetch;
pub mod golden;
pub mod receipt;
pub mod reference;
pub mod replay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod tune;
