//! Criterion benchmarks of Weft's library crates.
