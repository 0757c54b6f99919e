//! RESP framing: requests in ([`parse`]), replies out ([`reply`]).
//!
//! Requests are parsed in place: a command is a list of byte ranges into the connection's read
//! buffer ([`Args`]), so no argument is copied before a command needs to own it.

pub mod parse;
pub mod reply;

pub use parse::{parse_command, Args, Limits, OwnedArgs, Parsed, ProtocolError};
pub use reply::{Out, Protocol};
