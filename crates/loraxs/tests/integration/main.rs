//! The integration tests of this crate, one module per former test file,
//! in one binary: each test binary links and monomorphises burn afresh,
//! so one binary per crate compiles in a fraction of the time.

#[path = "../common/mod.rs"]
mod common;

mod bank;
mod files;
mod interchange;
mod layers;
mod training;
