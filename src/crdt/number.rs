//! Redis-compatible number parsing and formatting for string values.
//!
//! Redis decides whether a string "is an integer" with `string2ll` (no sign prefix `+`, no
//! leading zeros, no spaces, at most 20 bytes) and prints floats from INCRBYFLOAT with
//! `%.17Lf` on a `long double`, trimming trailing zeros. Meridian computes in `f64`; printing at
//! 17 decimals would expose binary noise (`0.30000000000000004`) that Redis's 80-bit long double
//! hides, so [`format_float`] prints at most 15 significant digits (and never more than 17
//! decimals, as Redis), which gives Redis's bytes for every ordinary value. Every region runs the
//! same function on the same state, so the bytes are identical everywhere.

/// Parses a byte string the way Redis `string2ll` does.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    if b == b"0" {
        return Some(0);
    }
    let (neg, digits) = match b[0] {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits[0] == b'0' {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}

/// Parses a float the way Redis `string2ld` accepts it: no surrounding spaces, no NaN.
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    if b.is_empty() || b.len() > 5120 {
        return None;
    }
    if b[0].is_ascii_whitespace() || b[b.len() - 1].is_ascii_whitespace() {
        return None;
    }
    let s = std::str::from_utf8(b).ok()?;
    let v: f64 = s.parse().ok()?;
    if v.is_nan() {
        return None;
    }
    Some(v)
}

/// Formats a finite float like Redis's INCRBYFLOAT reply (see the module doc).
pub fn format_float(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Digits before the decimal point (may be <= 0 for |v| < 1).
    let int_digits = v.abs().log10().floor() as i32 + 1;
    let decimals = (15 - int_digits).clamp(0, 17) as usize;
    let mut s = format!("{:.*}", decimals, v);
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// Formats an integer (possibly beyond i64 when concurrent increments overflowed).
pub fn format_i128(v: i128) -> String {
    let mut buf = itoa::Buffer::new();
    buf.format(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b"9223372036854775808"[..],
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"",
            b"-",
            b"1.0",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn floats_print_like_redis() {
        assert_eq!(format_float(10.5 + 0.1), "10.6");
        assert_eq!(format_float(0.1 + 0.2), "0.3");
        assert_eq!(format_float(5.0e3 + 2.0e2), "5200");
        assert_eq!(format_float(-5.6), "-5.6");
        assert_eq!(format_float(1e20), "100000000000000000000");
        assert_eq!(format_float(3e-20), "0");
        assert_eq!(format_float(3.0), "3");
    }

    #[test]
    fn float_parse_rejects_spaces_and_nan() {
        assert_eq!(parse_f64(b"5.0e3"), Some(5000.0));
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b"abc"), None);
    }
}
