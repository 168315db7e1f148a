//! The weft validator: CLI, configuration, engine, gRPC API and metrics. The `weft`
//! binary is a thin shell over [`cli`].

pub mod api;
pub mod bench;
pub mod cli;
pub mod client_cli;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod node;
pub mod reset;
pub mod sync;
pub mod testnet;
