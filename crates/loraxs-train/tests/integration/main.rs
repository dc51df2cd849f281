//! The trainer's integration tests, one binary (each test binary links
//! burn again: one binary builds faster than two).

mod causal;
mod trainer;

/// The backend's random generators (dropout) and burn's collective engine
/// are process-wide: runs that must be reproducible cannot overlap.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
