//! The reply writer: RESP2 or RESP3 straight into the connection's output buffer.
//!
//! Commands describe replies by type (map, set, double, null...) and the writer picks the wire
//! form for the connection's protocol, as Redis does: a RESP3 map is a flat array in RESP2, a
//! null is `$-1` or `_`, a double is a bulk string or `,`.

use bytes::BytesMut;

/// The protocol a connection speaks (HELLO switches it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

/// An output buffer with typed reply writers.
pub struct Out {
    pub buf: BytesMut,
    pub proto: Protocol,
}

impl Out {
    pub fn new(proto: Protocol) -> Self {
        Out {
            buf: BytesMut::with_capacity(16 * 1024),
            proto,
        }
    }

    pub fn resp3(&self) -> bool {
        self.proto == Protocol::Resp3
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    #[inline]
    fn header(&mut self, tag: u8, n: i64) {
        let mut itoa = itoa::Buffer::new();
        self.buf.reserve(24);
        self.buf.extend_from_slice(&[tag]);
        self.buf.extend_from_slice(itoa.format(n).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn ok(&mut self) {
        self.raw(b"+OK\r\n");
    }

    pub fn simple(&mut self, s: &str) {
        self.raw(b"+");
        self.raw(s.as_bytes());
        self.raw(b"\r\n");
    }

    /// An error reply; `msg` includes the code (`ERR ...`, `WRONGTYPE ...`). CR/LF are replaced,
    /// since an error is a single line.
    pub fn error(&mut self, msg: &str) {
        self.raw(b"-");
        for b in msg.bytes() {
            self.buf
                .extend_from_slice(&[if b == b'\r' || b == b'\n' { b' ' } else { b }]);
        }
        self.raw(b"\r\n");
    }

    #[inline]
    pub fn int(&mut self, n: i64) {
        self.header(b':', n);
    }

    #[inline]
    pub fn bulk(&mut self, b: &[u8]) {
        self.header(b'$', b.len() as i64);
        self.raw(b);
        self.raw(b"\r\n");
    }

    pub fn bulk_opt(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }

    /// A null bulk string (RESP2 `$-1`, RESP3 `_`).
    pub fn null(&mut self) {
        self.raw(if self.resp3() { b"_\r\n" } else { b"$-1\r\n" });
    }

    /// A null array (RESP2 `*-1`, RESP3 `_`): EXEC aborted by WATCH, for instance.
    pub fn null_array(&mut self) {
        self.raw(if self.resp3() { b"_\r\n" } else { b"*-1\r\n" });
    }

    pub fn array(&mut self, n: usize) {
        self.header(b'*', n as i64);
    }

    /// A map of `n` pairs (RESP2: an array of 2n).
    pub fn map(&mut self, n: usize) {
        if self.resp3() {
            self.header(b'%', n as i64)
        } else {
            self.header(b'*', 2 * n as i64)
        }
    }

    /// A set of `n` elements (RESP2: an array).
    pub fn set(&mut self, n: usize) {
        self.header(if self.resp3() { b'~' } else { b'*' }, n as i64)
    }

    /// An out-of-band push of `n` elements (RESP3 only; RESP2 gets an array).
    pub fn push(&mut self, n: usize) {
        self.header(if self.resp3() { b'>' } else { b'*' }, n as i64)
    }

    /// A double (RESP3 `,`; RESP2 a bulk string).
    pub fn double(&mut self, v: f64) {
        let s = crate::crdt::number::format_float(v);
        if self.resp3() {
            self.raw(b",");
            self.raw(s.as_bytes());
            self.raw(b"\r\n");
        } else {
            self.bulk(s.as_bytes());
        }
    }

    pub fn boolean(&mut self, v: bool) {
        if self.resp3() {
            self.raw(if v { b"#t\r\n" } else { b"#f\r\n" })
        } else {
            self.int(v as i64)
        }
    }

    /// Verbatim text (RESP3 `=` with `txt:`; RESP2 a bulk string), as INFO and CLIENT LIST.
    pub fn verbatim(&mut self, s: &str) {
        if self.resp3() {
            self.header(b'=', s.len() as i64 + 4);
            self.raw(b"txt:");
            self.raw(s.as_bytes());
            self.raw(b"\r\n");
        } else {
            self.bulk(s.as_bytes());
        }
    }

    /// A HELP reply: one simple string per line, as Redis's `addReplyHelp`.
    pub fn help(&mut self, lines: &[&str]) {
        self.array(lines.len());
        for l in lines {
            self.simple(l);
        }
    }

    /// Writes a bulk string per element.
    pub fn bulk_array<'a>(&mut self, items: impl ExactSizeIterator<Item = &'a [u8]>) {
        self.array(items.len());
        for i in items {
            self.bulk(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_forms() {
        let mut o = Out::new(Protocol::Resp2);
        o.null();
        o.map(1);
        o.double(1.5);
        assert_eq!(&o.buf[..], b"$-1\r\n*2\r\n$3\r\n1.5\r\n");
        let mut o = Out::new(Protocol::Resp3);
        o.null();
        o.map(1);
        o.double(1.5);
        o.verbatim("a");
        assert_eq!(&o.buf[..], b"_\r\n%1\r\n,1.5\r\n=5\r\ntxt:a\r\n");
    }

    #[test]
    fn errors_are_one_line() {
        let mut o = Out::new(Protocol::Resp2);
        o.error("ERR a\r\nb");
        assert_eq!(&o.buf[..], b"-ERR a  b\r\n");
    }
}
