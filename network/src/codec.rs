//! Frames on a request-response stream: a `u32` big-endian length, then that many
//! bytes. The length is checked against the protocol's limit *before* anything is
//! allocated, so a peer cannot make us buffer more than the limit.
//!
//! An oversized *request* is not an I/O error: libp2p's request-response behaviour logs
//! a failed `read_request` and reports nothing, so we could not tell who sent it.
//! Instead the codec stops reading and hands up the one-byte [`OVERSIZED_MARKER`] in
//! place of the request, which the service sees with the sender's peer id and
//! penalizes. An oversized *response* is an `InvalidData` error, which libp2p reports
//! as an outbound failure of our own request.

use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The marker the codec puts in the error of an oversized frame.
pub(crate) const OVERSIZED: &str = "frame exceeds the protocol limit";

/// What [`FrameCodec::read_request`] returns instead of an oversized request. No valid
/// message (its first byte is a channel tag) or request (a postcard enum: 0xff alone is an unfinished
/// varint) is this.
pub(crate) const OVERSIZED_MARKER: &[u8] = &[0xff];

/// Length-prefixed frames with one size limit per direction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameCodec {
    pub(crate) max_request: usize,
    pub(crate) max_response: usize,
}

/// Reads one frame; `Ok(Err(length))` if its announced length is over `limit` (nothing
/// more is read).
async fn read_frame<T>(io: &mut T, limit: usize) -> io::Result<Result<Bytes, usize>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let length = u32::from_be_bytes(header) as usize;
    if length > limit {
        return Ok(Err(length));
    }
    let mut frame = vec![0u8; length];
    io.read_exact(&mut frame).await?;
    Ok(Ok(Bytes::from(frame)))
}

async fn write_frame<T>(io: &mut T, frame: &[u8]) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let length = u32::try_from(frame.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    io.write_all(&length.to_be_bytes()).await?;
    io.write_all(frame).await?;
    io.close().await
}

#[async_trait]
impl libp2p::request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Bytes;
    type Response = Bytes;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Bytes>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(read_frame(io, self.max_request)
            .await?
            .unwrap_or_else(|_| Bytes::from_static(OVERSIZED_MARKER)))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Bytes>
    where
        T: AsyncRead + Unpin + Send,
    {
        let limit = self.max_response;
        read_frame(io, limit).await?.map_err(|length| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{OVERSIZED}: {length} > {limit} bytes"),
            )
        })
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        frame: Bytes,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &frame).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        frame: Bytes,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &frame).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    #[test]
    fn frames_round_trip_and_oversized_frames_are_refused_before_allocation() {
        futures::executor::block_on(async {
            let mut wire = Cursor::new(Vec::new());
            write_frame(&mut wire, b"hello").await.expect("write");
            let bytes = wire.into_inner();
            assert_eq!(&bytes[..4], &5u32.to_be_bytes());

            let frame = read_frame(&mut Cursor::new(bytes.clone()), 5)
                .await
                .expect("fits");
            assert_eq!(frame.as_deref(), Ok(&b"hello"[..]));

            let over = read_frame(&mut Cursor::new(bytes.clone()), 4)
                .await
                .expect("read");
            assert_eq!(over, Err(5));

            // A header that announces 4 GiB is refused without reading further.
            let huge = u32::MAX.to_be_bytes().to_vec();
            let mut codec = FrameCodec {
                max_request: 1 << 20,
                max_response: 1 << 20,
            };
            let protocol = StreamProtocol::new("/test");
            let request = codec
                .read_request(&protocol, &mut Cursor::new(huge.clone()))
                .await
                .expect("the marker, not an error");
            assert_eq!(&request[..], OVERSIZED_MARKER);
            let error = codec
                .read_response(&protocol, &mut Cursor::new(huge))
                .await
                .expect_err("an oversized response fails our request");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert!(error.to_string().contains(OVERSIZED));

            // A truncated frame is an error, not a short read.
            let truncated = bytes[..7].to_vec();
            assert!(read_frame(&mut Cursor::new(truncated), 5).await.is_err());
        });
    }
}
