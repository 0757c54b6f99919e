//! Framing of frames and requests on QUIC streams.
//!
//! Wire format, one message per stream direction:
//!
//! ```text
//! +----------------+---------------------------+
//! | len: u32 (BE)  | payload: len bytes        |  then FIN
//! +----------------+---------------------------+
//! ```
//!
//! The first payload byte is reserved for the upper layers (their payload version); the mesh
//! never interprets the payload. Invariants on receive:
//! - a declared length above the maximum is refused *before* anything is allocated: the stream
//!   is stopped with [`code::FRAME_TOO_LARGE`];
//! - the body buffer only grows as bytes actually arrive (never pre-sized from the declared
//!   length), so a peer that declares 64 MiB and sends 10 bytes costs 10 bytes;
//! - a stream that ends early, carries bytes past the declared length, or is reset is reported
//!   as a [`FrameError`] for the caller to log and drop.

use bytes::Bytes;
use quinn::{ReadExactError, RecvStream, SendStream, VarInt};

/// Application error codes used when the mesh stops or resets a stream.
pub mod code {
    use quinn::VarInt;
    /// The declared frame length exceeds the receiver's maximum.
    pub const FRAME_TOO_LARGE: VarInt = VarInt::from_u32(1);
    /// The stream did not carry exactly one well-formed frame.
    pub const MALFORMED: VarInt = VarInt::from_u32(2);
    /// The request's handler dropped its reply sender without answering.
    pub const NO_REPLY: VarInt = VarInt::from_u32(3);
    /// The node is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(4);
}

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared length exceeds the maximum; nothing was allocated.
    #[error("declared frame length {len} exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    /// The stream ended before the header or the declared payload was complete.
    #[error("truncated frame: stream ended after {got} of {expected} bytes")]
    Truncated { got: usize, expected: usize },
    /// More bytes followed the declared payload.
    #[error("trailing bytes after a {len}-byte frame")]
    Trailing { len: usize },
    /// The stream or connection failed underneath (reset, connection lost, ...).
    #[error("stream: {0}")]
    Stream(String),
}

/// The 4-byte length prefix for a payload of `len` bytes.
///
/// Invariant: callers check `len` against their maximum (which fits a `u32`) first.
pub fn header(len: usize) -> [u8; HEADER_LEN] {
    debug_assert!(len <= u32::MAX as usize);
    (len as u32).to_be_bytes()
}

/// Writes one frame and finishes the stream. Returns once quinn has taken every byte, not when
/// the peer has acknowledged them.
pub async fn write_frame(send: &mut SendStream, payload: Bytes) -> Result<(), quinn::WriteError> {
    let mut chunks = [Bytes::copy_from_slice(&header(payload.len())), payload];
    send.write_all_chunks(&mut chunks).await?;
    // `finish` only fails if the stream was already finished or reset: the write above would
    // have failed first in the reset case, so either way there is nothing more to do.
    let _ = send.finish();
    Ok(())
}

/// Reads exactly one frame followed by the end of the stream.
///
/// On [`FrameError::TooLarge`] the stream has been stopped with [`code::FRAME_TOO_LARGE`]; on
/// other malformed input the caller decides (usually: stop with [`code::MALFORMED`], drop).
pub async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Bytes, FrameError> {
    let mut hdr = [0u8; HEADER_LEN];
    match recv.read_exact(&mut hdr).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(got)) => {
            return Err(FrameError::Truncated {
                got,
                expected: HEADER_LEN,
            })
        }
        Err(ReadExactError::ReadError(e)) => return Err(FrameError::Stream(e.to_string())),
    }
    let len = u32::from_be_bytes(hdr) as usize;
    if len > max {
        let _ = recv.stop(code::FRAME_TOO_LARGE);
        return Err(FrameError::TooLarge { len, max });
    }
    // Read the body in order, growing the buffer only with bytes that arrived, and refuse a
    // byte past `len`. Not `read_to_end`: it reads *unordered*, and after the ordered header
    // read, reordered or duplicated packets then make quinn 0.11 mis-account the stream (a
    // valid frame judged too long, and an arithmetic overflow in `RecvStream::stop`).
    let mut body = Vec::new();
    loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.bytes.len() > len {
                    return Err(FrameError::Trailing { len });
                }
                body.extend_from_slice(&chunk.bytes);
            }
            Ok(None) => break,
            Err(e) => return Err(FrameError::Stream(e.to_string())),
        }
    }
    if body.len() == len {
        Ok(Bytes::from(body))
    } else {
        Err(FrameError::Truncated {
            got: HEADER_LEN + body.len(),
            expected: HEADER_LEN + len,
        })
    }
}

/// Stops a stream whose content we refuse, ignoring "already closed".
pub fn refuse(recv: &mut RecvStream, why: VarInt) {
    let _ = recv.stop(why);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_big_endian_length() {
        assert_eq!(header(0), [0, 0, 0, 0]);
        assert_eq!(header(0x0102_0304), [1, 2, 3, 4]);
        assert_eq!(
            u32::from_be_bytes(header(64 * 1024 * 1024)) as usize,
            64 * 1024 * 1024
        );
    }
}
