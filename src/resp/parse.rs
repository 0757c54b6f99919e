//! The request parser: multibulk (`*N\r\n$L\r\n...`) and inline commands, like Redis.
//!
//! It checks before it parses: every length header is validated against the configured limits
//! before a byte of the body is awaited or a buffer is sized from it, so no header can make the
//! server allocate unboundedly or panic. Errors carry Redis's exact `Protocol error: ...` text;
//! the connection replies `-ERR <text>` and closes, as Redis does.
//!
//! Returns `Ok(None)` while a command is incomplete; the caller reads more and retries.

use memchr::memchr;

/// Longest inline command or length line Redis accepts (PROTO_INLINE_MAX_SIZE).
pub const INLINE_MAX: usize = 64 * 1024;

/// Parser limits (from config: proto-max-bulk-len, and the multibulk count bound).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bulk_len: usize,
    pub max_multibulk_len: usize,
    /// Before AUTH, Redis allows only small commands (10 args, 16 KiB bulks).
    pub authenticated: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as usize,
            authenticated: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub std::borrow::Cow<'static, str>);

impl ProtocolError {
    fn new(msg: &'static str) -> Self {
        ProtocolError(std::borrow::Cow::Borrowed(msg))
    }
}

/// One command's arguments: ranges into a buffer.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    spans: &'a [(u32, u32)],
}

impl<'a> Args<'a> {
    pub fn new(buf: &'a [u8], spans: &'a [(u32, u32)]) -> Self {
        Args { buf, spans }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    #[inline]
    pub fn get(&self, i: usize) -> &'a [u8] {
        let (s, e) = self.spans[i];
        &self.buf[s as usize..e as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Arguments from `from` on.
    pub fn skip(&self, from: usize) -> Args<'a> {
        Args {
            buf: self.buf,
            spans: &self.spans[from.min(self.spans.len())..],
        }
    }

    pub fn to_owned(&self) -> OwnedArgs {
        let mut buf = Vec::with_capacity(self.spans.iter().map(|(s, e)| (e - s) as usize).sum());
        let mut spans = Vec::with_capacity(self.len());
        for a in self.iter() {
            let s = buf.len() as u32;
            buf.extend_from_slice(a);
            spans.push((s, buf.len() as u32));
        }
        OwnedArgs { buf, spans }
    }
}

/// A command copied out of the read buffer (queued by MULTI).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnedArgs {
    buf: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

impl OwnedArgs {
    pub fn args(&self) -> Args<'_> {
        Args::new(&self.buf, &self.spans)
    }

    pub fn from_slices(parts: &[&[u8]]) -> Self {
        let mut o = OwnedArgs::default();
        for p in parts {
            let s = o.buf.len() as u32;
            o.buf.extend_from_slice(p);
            o.spans.push((s, o.buf.len() as u32));
        }
        o
    }
}

/// Reads a `\r\n`-terminated line starting at `pos`: returns (line, next pos).
fn line<'b>(
    buf: &'b [u8],
    pos: usize,
    too_big: &'static str,
) -> Result<Option<(&'b [u8], usize)>, ProtocolError> {
    match memchr(b'\r', &buf[pos..]) {
        Some(i) => {
            if i > INLINE_MAX {
                return Err(ProtocolError::new(too_big));
            }
            if pos + i + 1 >= buf.len() {
                return Ok(None);
            }
            Ok(Some((&buf[pos..pos + i], pos + i + 2)))
        }
        None if buf.len() - pos > INLINE_MAX => Err(ProtocolError::new(too_big)),
        None => Ok(None),
    }
}

/// Parses a length the way Redis does (`string2ll`): optional '-', digits only.
fn parse_len(s: &[u8]) -> Option<i64> {
    crate::crdt::number::parse_i64(s)
}

/// A parsed command: how many bytes it used, and its arguments if they could not stay in the
/// buffer (quoted inline commands); otherwise they are the `spans` filled by the parser.
#[derive(Debug)]
pub struct Parsed {
    pub consumed: usize,
    pub owned: Option<OwnedArgs>,
}

/// Parses one command from `buf`. On success fills `spans` (unless `owned` is returned);
/// a command with no arguments (empty line, `*0`) consumes its bytes and leaves `spans` empty.
pub fn parse_command(
    buf: &[u8],
    limits: &Limits,
    spans: &mut Vec<(u32, u32)>,
) -> Result<Option<Parsed>, ProtocolError> {
    spans.clear();
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf, spans);
    }
    let Some((count, mut pos)) = line(buf, 1, "too big mbulk count string")? else {
        return Ok(None);
    };
    let count = match parse_len(count) {
        // Redis ignores empty and negative multibulks (`*0`, `*-1`).
        Some(n) if n <= 0 => n,
        Some(n) if n <= i32::MAX as i64 && (n as usize) <= limits.max_multibulk_len => n,
        _ => return Err(ProtocolError::new("invalid multibulk length")),
    };
    if !limits.authenticated && count > 10 {
        return Err(ProtocolError::new("unauthenticated multibulk length"));
    }
    if count <= 0 {
        return Ok(Some(Parsed {
            consumed: pos,
            owned: None,
        }));
    }
    // Never size from the header alone: a lying count gets at most this much up front.
    spans.reserve((count as usize).min(1024));
    for _ in 0..count {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(expected_dollar(buf[pos]));
        }
        let Some((len, body)) = line(buf, pos + 1, "too big bulk count string")? else {
            return Ok(None);
        };
        let len = match parse_len(len) {
            Some(n) if n >= 0 && (n as usize) <= limits.max_bulk_len => n as usize,
            _ => return Err(ProtocolError::new("invalid bulk length")),
        };
        if !limits.authenticated && len > 16384 {
            return Err(ProtocolError::new("unauthenticated bulk length"));
        }
        if buf.len() < body + len + 2 {
            return Ok(None);
        }
        if buf.len() > u32::MAX as usize {
            return Err(ProtocolError::new("invalid bulk length"));
        }
        spans.push((body as u32, (body + len) as u32));
        pos = body + len + 2;
    }
    Ok(Some(Parsed {
        consumed: pos,
        owned: None,
    }))
}

/// Redis says which byte it found instead of `$` (`expected '$', got '%c'`).
fn expected_dollar(got: u8) -> ProtocolError {
    ProtocolError(format!("expected '$', got '{}'", char::from(got)).into())
}

/// Inline command: one line split on whitespace, with Redis's quoting rules (sdssplitargs).
fn parse_inline(buf: &[u8], spans: &mut Vec<(u32, u32)>) -> Result<Option<Parsed>, ProtocolError> {
    let Some(nl) = memchr(b'\n', buf) else {
        if buf.len() > INLINE_MAX {
            return Err(ProtocolError::new("too big inline request"));
        }
        return Ok(None);
    };
    if nl > INLINE_MAX {
        return Err(ProtocolError::new("too big inline request"));
    }
    let end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line = &buf[..end];
    if line.contains(&b'"') || line.contains(&b'\'') {
        // Quoted arguments are unescaped, so they cannot point into the buffer: copy them.
        let parts =
            split_inline_quoted(line).ok_or(ProtocolError::new("unbalanced quotes in request"))?;
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        return Ok(Some(Parsed {
            consumed: nl + 1,
            owned: Some(OwnedArgs::from_slices(&refs)),
        }));
    }
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < line.len() && !line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i > start {
            spans.push((start as u32, i as u32));
        }
    }
    Ok(Some(Parsed {
        consumed: nl + 1,
        owned: None,
    }))
}

/// Splits an inline line with quotes like Redis `sdssplitargs`; None on unbalanced quotes.
pub fn split_inline_quoted(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= n {
                    return None;
                }
                if line[i] == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && line[i + 2].is_ascii_hexdigit()
                    && line[i + 3].is_ascii_hexdigit()
                {
                    let h = |c: u8| (c as char).to_digit(16).unwrap() as u8;
                    cur.push(h(line[i + 2]) * 16 + h(line[i + 3]));
                    i += 3;
                } else if line[i] == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        c => c,
                    });
                } else if line[i] == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(line[i]);
                }
            } else if insq {
                if i >= n {
                    return None;
                }
                if line[i] == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if line[i] == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(line[i]);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        i += 1;
                        break;
                    }
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Option<(usize, Vec<Vec<u8>>)>;

    fn parse(b: &[u8]) -> Result<Parsed, ProtocolError> {
        let mut spans = Vec::new();
        Ok(
            parse_command(b, &Limits::default(), &mut spans)?.map(|p| match p.owned {
                Some(o) => (p.consumed, o.args().iter().map(|a| a.to_vec()).collect()),
                None => (
                    p.consumed,
                    spans
                        .iter()
                        .map(|(s, e)| b[*s as usize..*e as usize].to_vec())
                        .collect(),
                ),
            }),
        )
    }

    #[test]
    fn multibulk() {
        let (n, a) = parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(n, 20);
        assert_eq!(a, vec![b"GET".to_vec(), b"k".to_vec()]);
        assert_eq!(parse(b"*2\r\n$3\r\nGET\r\n$1\r\n").unwrap(), None);
        assert_eq!(parse(b"*2\r\n$3\r\nGE").unwrap(), None);
    }

    #[test]
    fn inline() {
        let (n, a) = parse(b"SET  k v\r\n").unwrap().unwrap();
        assert_eq!(n, 10);
        assert_eq!(a.len(), 3);
        assert_eq!(
            split_inline_quoted(b"set k \"a b\\x41\"").unwrap()[2],
            b"a bA"
        );
        assert_eq!(split_inline_quoted(b"set k \"ab"), None);
    }

    #[test]
    fn limits() {
        assert_eq!(parse(b"*-1\r\n").unwrap(), Some((5, vec![])));
        assert_eq!(
            parse(b"*abc\r\n").unwrap_err().0,
            "invalid multibulk length"
        );
        assert_eq!(
            parse(b"*1\r\n$-5\r\n").unwrap_err().0,
            "invalid bulk length"
        );
        assert_eq!(
            parse(b"*1\r\n$999999999999\r\n").unwrap_err().0,
            "invalid bulk length"
        );
        assert_eq!(
            parse(b"*1\r\nx3\r\n").unwrap_err().0,
            "expected '$', got 'x'"
        );
        let big = vec![b'a'; INLINE_MAX + 10];
        assert_eq!(parse(&big).unwrap_err().0, "too big inline request");
    }
}
