//! The weft.v1 gRPC API: protobuf definitions, generated code and checked conversions.
