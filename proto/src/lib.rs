//! The weft.v1 gRPC API: protobuf definitions (`proto/weft/v1/ledger.proto`), the
//! generated tonic client and server, and the encoded file descriptor set for server
//! reflection.

#![allow(missing_docs, clippy::all, missing_debug_implementations)]

/// Package `weft.v1`.
pub mod v1 {
    tonic::include_proto!("weft.v1");
}

pub mod rpc;

/// The encoded `FileDescriptorSet` of `weft.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("weft_v1_descriptor");
