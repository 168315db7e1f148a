//! Error details a program can act on, in the standard gRPC form: every status Weft
//! returns for a refused request carries, in `grpc-status-details-bin`, a
//! `google.rpc.Status` whose details hold a `google.rpc.ErrorInfo` (domain
//! [`DOMAIN`], a [`Reason`] in UPPER_SNAKE_CASE, metadata such as the transaction id)
//! and, where waiting and retrying helps, a `google.rpc.RetryInfo` with the delay.
//!
//! The messages are the googleapis definitions (`google/rpc/status.proto`,
//! `google/rpc/error_details.proto`, `google/protobuf/any.proto`, `duration.proto`),
//! written here with the same field numbers, so any gRPC library's rich-error support
//! (for example `tonic-types`, `grpc-status` in Go, `google.rpc` in Python) reads them.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;

/// `ErrorInfo.domain` of every Weft error.
pub const DOMAIN: &str = "weft.v1";

const ERROR_INFO_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const RETRY_INFO_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    /// The type of `value`, `type.googleapis.com/<full name>`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// The gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.rpc.ErrorInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct ErrorInfo {
    /// Why, as a [`Reason`] name.
    #[prost(string, tag = "1")]
    pub reason: String,
    /// [`DOMAIN`].
    #[prost(string, tag = "2")]
    pub domain: String,
    /// Context, for example `tx_id` (hex) or `resume_from`.
    #[prost(map = "string, string", tag = "3")]
    pub metadata: HashMap<String, String>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    /// How long to wait before retrying.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// Why a request was refused: `ErrorInfo.reason`. Part of the public API: names are
/// never reused for another meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// UNAVAILABLE: the validator is stopping; use another.
    ShuttingDown,
    /// UNAVAILABLE: the validator is syncing the finalized log; retry or use another.
    Syncing,
    /// RESOURCE_EXHAUSTED: the mempool is full; retry after the delay.
    MempoolFull,
    /// RESOURCE_EXHAUSTED: too many clients wait on finality here; retry or poll.
    TooManyWaiters,
    /// RESOURCE_EXHAUSTED: a subscriber fell behind; resume from `resume_from`.
    SubscriberLagged,
    /// ALREADY_EXISTS: the same transaction (payload and expiry) is pending or final.
    AlreadySubmitted,
    /// FAILED_PRECONDITION: the expiry has passed; submit with a later one.
    Expired,
    /// FAILED_PRECONDITION: consensus time passed the expiry before it was finalized.
    ExpiredUnfinalized,
    /// INVALID_ARGUMENT: the expiry is further ahead than the dedup window allows.
    ExpiryTooFar,
    /// INVALID_ARGUMENT: an empty payload.
    EmptyPayload,
    /// INVALID_ARGUMENT: a payload above the validator's size limit.
    PayloadTooLarge,
    /// INVALID_ARGUMENT: a transaction id, vertex hash or other digest is not 32 bytes.
    MalformedDigest,
    /// DEADLINE_EXCEEDED: not finalized within the wait; `status` says where it is.
    NotFinalizedYet,
    /// NOT_FOUND: no such transaction here.
    TransactionNotFound,
    /// NOT_FOUND: no such vertex here.
    VertexNotFound,
    /// OUT_OF_RANGE: a sequence beyond the finalized tip (`tip`).
    PastTip,
    /// UNAVAILABLE: no stable checkpoint covers the transaction yet; retry shortly.
    CheckpointPending,
    /// FAILED_PRECONDITION: the proof would span more entries than a proof may hold.
    ProofTooLong,
    /// INTERNAL: the validator's store or a task failed; see its log.
    Internal,
}

impl Reason {
    /// The `ErrorInfo.reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ShuttingDown => "SHUTTING_DOWN",
            Reason::Syncing => "SYNCING",
            Reason::MempoolFull => "MEMPOOL_FULL",
            Reason::TooManyWaiters => "TOO_MANY_WAITERS",
            Reason::SubscriberLagged => "SUBSCRIBER_LAGGED",
            Reason::AlreadySubmitted => "ALREADY_SUBMITTED",
            Reason::Expired => "EXPIRED",
            Reason::ExpiredUnfinalized => "EXPIRED_UNFINALIZED",
            Reason::ExpiryTooFar => "EXPIRY_TOO_FAR",
            Reason::EmptyPayload => "EMPTY_PAYLOAD",
            Reason::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Reason::MalformedDigest => "MALFORMED_DIGEST",
            Reason::NotFinalizedYet => "NOT_FINALIZED_YET",
            Reason::TransactionNotFound => "TRANSACTION_NOT_FOUND",
            Reason::VertexNotFound => "VERTEX_NOT_FOUND",
            Reason::PastTip => "PAST_TIP",
            Reason::CheckpointPending => "CHECKPOINT_PENDING",
            Reason::ProofTooLong => "PROOF_TOO_LONG",
            Reason::Internal => "INTERNAL",
        }
    }

    /// Every reason, for documentation and tests.
    pub const ALL: [Reason; 19] = [
        Reason::ShuttingDown,
        Reason::Syncing,
        Reason::MempoolFull,
        Reason::TooManyWaiters,
        Reason::SubscriberLagged,
        Reason::AlreadySubmitted,
        Reason::Expired,
        Reason::ExpiredUnfinalized,
        Reason::ExpiryTooFar,
        Reason::EmptyPayload,
        Reason::PayloadTooLarge,
        Reason::MalformedDigest,
        Reason::NotFinalizedYet,
        Reason::TransactionNotFound,
        Reason::VertexNotFound,
        Reason::PastTip,
        Reason::CheckpointPending,
        Reason::ProofTooLong,
        Reason::Internal,
    ];

    /// The reason named `name`, if it is one of ours.
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// What a client reads back from a status: the reason, its metadata, the retry delay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    /// `ErrorInfo.reason` (kept as a string: a newer validator may send a reason this
    /// client does not know; [`Reason::parse`] maps the known ones).
    pub reason: Option<String>,
    /// `ErrorInfo.domain`.
    pub domain: Option<String>,
    /// `ErrorInfo.metadata`.
    pub metadata: HashMap<String, String>,
    /// `RetryInfo.retry_delay`.
    pub retry_delay: Option<Duration>,
}

/// The `grpc-status-details-bin` bytes for a refusal.
pub fn encode_details(
    code: i32,
    message: &str,
    reason: Reason,
    metadata: &[(&str, String)],
    retry_delay: Option<Duration>,
) -> Vec<u8> {
    let info = ErrorInfo {
        reason: reason.as_str().to_string(),
        domain: DOMAIN.to_string(),
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect(),
    };
    let mut details = vec![Any {
        type_url: ERROR_INFO_URL.to_string(),
        value: info.encode_to_vec(),
    }];
    if let Some(delay) = retry_delay {
        let retry = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
            }),
        };
        details.push(Any {
            type_url: RETRY_INFO_URL.to_string(),
            value: retry.encode_to_vec(),
        });
    }
    RpcStatus {
        code,
        message: message.to_string(),
        details,
    }
    .encode_to_vec()
}

/// Reads what [`encode_details`] wrote (unknown detail types are skipped; bytes that do
/// not decode give empty details).
pub fn decode_details(bytes: &[u8]) -> Details {
    let mut out = Details::default();
    let Ok(status) = RpcStatus::decode(bytes) else {
        return out;
    };
    for any in status.details {
        match any.type_url.as_str() {
            ERROR_INFO_URL => {
                if let Ok(info) = ErrorInfo::decode(any.value.as_slice()) {
                    out.reason = Some(info.reason);
                    out.domain = Some(info.domain);
                    out.metadata = info.metadata;
                }
            }
            RETRY_INFO_URL => {
                if let Ok(RetryInfo {
                    retry_delay: Some(delay),
                }) = RetryInfo::decode(any.value.as_slice())
                {
                    let seconds = u64::try_from(delay.seconds).unwrap_or(0);
                    let nanos = u32::try_from(delay.nanos).unwrap_or(0).min(999_999_999);
                    out.retry_delay = Some(Duration::new(seconds, nanos));
                }
            }
            _ => {}
        }
    }
    out
}

/// A `tonic::Status` with the details for `reason`.
pub fn status(
    code: tonic::Code,
    reason: Reason,
    message: impl Into<String>,
    metadata: &[(&str, String)],
    retry_delay: Option<Duration>,
) -> tonic::Status {
    let message = message.into();
    let details = encode_details(code as i32, &message, reason, metadata, retry_delay);
    tonic::Status::with_details(code, message, details.into())
}

/// The details of a status a validator returned.
pub fn details(status: &tonic::Status) -> Details {
    decode_details(status.details())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_round_trip_through_a_status() {
        let status = status(
            tonic::Code::ResourceExhausted,
            Reason::MempoolFull,
            "the mempool is full",
            &[("tx_id", "ab".repeat(32))],
            Some(Duration::from_millis(1_500)),
        );
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let details = details(&status);
        assert_eq!(details.reason.as_deref(), Some("MEMPOOL_FULL"));
        assert_eq!(details.domain.as_deref(), Some(DOMAIN));
        assert_eq!(details.metadata.get("tx_id"), Some(&"ab".repeat(32)));
        assert_eq!(details.retry_delay, Some(Duration::from_millis(1_500)));
        let rpc = RpcStatus::decode(status.details()).expect("a google.rpc.Status");
        assert_eq!(rpc.code, tonic::Code::ResourceExhausted as i32);
        assert_eq!(rpc.message, "the mempool is full");
    }

    #[test]
    fn a_status_without_retry_has_no_delay_and_garbage_gives_empty_details() {
        let status = status(
            tonic::Code::NotFound,
            Reason::TransactionNotFound,
            "no such transaction",
            &[],
            None,
        );
        let details = details(&status);
        assert_eq!(details.reason.as_deref(), Some("TRANSACTION_NOT_FOUND"));
        assert_eq!(details.retry_delay, None);
        assert_eq!(decode_details(&[0xff, 0xff, 0xff]), Details::default());
        assert_eq!(decode_details(&[]), Details::default());
    }

    #[test]
    fn every_reason_has_a_distinct_name_that_parses_back() {
        let mut names = std::collections::BTreeSet::new();
        for reason in Reason::ALL {
            assert!(names.insert(reason.as_str()), "{reason:?} repeats a name");
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            assert!(reason
                .as_str()
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_'));
        }
        assert_eq!(Reason::parse("NOT_A_REASON"), None);
    }
}
