//! Criterion benchmarks of Weft's library crates.
//!
//! Run with `cargo bench -p weft-benches` (or `make bench`). Every benchmark uses fixed
//! inputs and touches no socket; end-to-end load is `weft bench`. Under `cargo test` each
//! benchmark runs once, as a smoke test.
