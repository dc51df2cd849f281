//! Benchmarks for loraxs.
