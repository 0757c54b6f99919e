//! The replication wire format: versioned msgpack frames (`rmp-serde`) carried by the mesh.
//!
//! The first byte of every mesh frame names its traffic class ([`CLASS_REPL`] here); the rest
//! is one [`ReplFrame`]. New fields go into a new variant (`V2`), never into `V1`, so nodes of
//! different versions can tell what they cannot read instead of misreading it.

use crate::crdt::EntryDelta;
use serde::{Deserialize, Serialize};

/// Mesh frame class byte of replication traffic.
pub const CLASS_REPL: u8 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplFrame {
    V1(ReplMsg),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplMsg {
    /// Full entries of changed keys, sent by `from` on one link session.
    Batch {
        from: u64,
        session: u64,
        /// The first batch of a session: the receiver records the session as known.
        fresh: bool,
        /// Batch number within the session (acks name it).
        batch: u64,
        /// Every change the sender published up to this offset is in this batch or an earlier
        /// one of the session (0 when the batch does not complete anything).
        upto: u64,
        entries: Vec<KeyEntry>,
    },
    /// The receiver merged `batch`. `need_resync`: it does not know `session` (it restarted
    /// since the session began), so the sender must start over with a full sync.
    Ack {
        from: u64,
        session: u64,
        batch: u64,
        upto: u64,
        need_resync: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEntry {
    #[serde(with = "serde_bytes")]
    pub key: Box<[u8]>,
    pub entry: EntryDelta,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a replication frame (class byte {0})")]
    Class(u8),
    #[error("empty frame")]
    Empty,
    #[error("undecodable replication frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("unencodable replication frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

pub fn encode(msg: ReplMsg) -> Result<bytes::Bytes, WireError> {
    let mut buf = vec![CLASS_REPL];
    rmp_serde::encode::write(&mut buf, &ReplFrame::V1(msg))?;
    Ok(buf.into())
}

pub fn decode(frame: &[u8]) -> Result<ReplMsg, WireError> {
    match frame.first() {
        None => Err(WireError::Empty),
        Some(&CLASS_REPL) => {
            let ReplFrame::V1(m) = rmp_serde::from_slice(&frame[1..])?;
            Ok(m)
        }
        Some(&c) => Err(WireError::Class(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_an_error() {
        let m = ReplMsg::Ack {
            from: 7,
            session: 1,
            batch: 2,
            upto: 3,
            need_resync: false,
        };
        assert_eq!(decode(&encode(m.clone()).unwrap()).unwrap(), m);
        assert!(decode(&[CLASS_REPL, 0xff, 0x00]).is_err());
        assert!(decode(&[9, 1, 2]).is_err());
        assert!(decode(&[]).is_err());
    }
}
