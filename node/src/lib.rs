//! The weft validator binary: CLI, config, engine, gRPC API, metrics.
