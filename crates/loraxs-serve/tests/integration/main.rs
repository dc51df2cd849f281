//! The server's integration tests, one binary (each test binary links
//! burn again: one binary builds faster than two).

mod completions;
mod serve;
