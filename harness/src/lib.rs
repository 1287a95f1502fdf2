//! `bitnet-harness`: runs YAML scenarios against the BitNet engine and the llama.cpp reference,
//! compares traces, keeps goldens and receipts (see DESIGN.md for the data flow).
pub mod calibrate;
pub mod compare;
pub mod reference;
