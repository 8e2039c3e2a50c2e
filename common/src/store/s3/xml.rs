//! Just enough XML for S3's flat answers that rusty-s3 does not parse:
//! error documents and ListMultipartUploads.

/// The bodies of every `<tag>...</tag>` element, in order (no nesting of the same tag).
pub(super) fn elements<'a>(doc: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// The unescaped text of the first `<tag>` element.
pub(super) fn text(doc: &str, tag: &str) -> Option<String> {
    elements(doc, tag).first().map(|t| unescape(t))
}

/// Replaces XML's predefined entities and numeric character references.
pub(super) fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_and_upload_lists_parse() {
        let err = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please &amp; reduce &#x41;&#66;</Message></Error>";
        assert_eq!(text(err, "Code").as_deref(), Some("SlowDown"));
        assert_eq!(text(err, "Message").as_deref(), Some("Please & reduce AB"));
        assert_eq!(text(err, "Nope"), None);
        let list = "<ListMultipartUploadsResult><Upload><Key>a/b</Key><UploadId>1</UploadId></Upload><Upload><Key>a/c&lt;</Key><UploadId>2</UploadId></Upload><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
        let ups = elements(list, "Upload");
        assert_eq!(ups.len(), 2);
        assert_eq!(text(ups[1], "Key").as_deref(), Some("a/c<"));
        assert_eq!(unescape("a & b &bogus; c"), "a & b &bogus; c");
    }
}
