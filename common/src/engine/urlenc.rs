//! Percent-encoding of the parts of database URLs.

use crate::error::{Error, Result};

/// Decodes `%XX` escapes; `what` names the URL kind in errors ("PostgreSQL URL").
pub fn decode(s: &str, what: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let v = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::usage(format!("invalid {what}: bad percent-encoding")))?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::usage(format!("invalid {what}: percent-encoding is not UTF-8")))
}

/// Encodes everything but unreserved characters (and those in `keep`).
pub fn encode(s: &str, keep: &[u8]) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b if keep.contains(&b) => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_rejects_bad_escapes() {
        let s = "Pw-1@/:!x é";
        assert_eq!(super::decode(&super::encode(s, &[]), "URL").unwrap(), s);
        assert_eq!(super::encode("/a b", b"/"), "/a%20b");
        assert!(super::decode("%zz", "URL").is_err());
        assert!(super::decode("%ff", "URL").is_err());
    }
}
