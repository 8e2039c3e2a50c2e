//! S3's XML answers, read with `quick-xml`'s serde support: error
//! documents, ListObjectsV2, ListMultipartUploads, ListParts,
//! InitiateMultipartUpload and CompleteMultipartUpload. Elements the store
//! does not need are ignored; a document that is not what the request
//! answers is an error the caller reports (or retries) as garbage.

use chrono::{DateTime, Utc};
use quick_xml::events::Event;
use serde::Deserialize;

/// An S3 error document (`<Error>`).
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct S3Error {
    /// `NoSuchKey`, `SlowDown`, ...
    pub code: String,
    /// S3's words.
    pub message: String,
}

/// One page of ListObjectsV2.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListBucketResult {
    /// The objects of the page.
    #[serde(default)]
    pub contents: Vec<Object>,
    /// Whether more pages follow.
    #[serde(default)]
    pub is_truncated: bool,
    /// The token of the next page.
    pub next_continuation_token: Option<String>,
}

/// A listed object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Object {
    /// The full object key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// RFC 3339.
    pub last_modified: Option<String>,
}

/// One page of ListMultipartUploads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListMultipartUploadsResult {
    /// The incomplete uploads of the page.
    #[serde(default, rename = "Upload")]
    pub uploads: Vec<Upload>,
    /// Whether more pages follow.
    #[serde(default)]
    pub is_truncated: bool,
    /// Where the next page starts: key ...
    pub next_key_marker: Option<String>,
    /// ... and upload id.
    pub next_upload_id_marker: Option<String>,
}

/// An incomplete multipart upload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Upload {
    /// The full object key.
    pub key: String,
    /// The upload's id.
    pub upload_id: String,
    /// RFC 3339.
    pub initiated: Option<String>,
}

/// One page of ListParts.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListPartsResult {
    /// The parts of the page.
    #[serde(default, rename = "Part")]
    pub parts: Vec<Part>,
    /// Whether more pages follow.
    #[serde(default)]
    pub is_truncated: bool,
    /// The part number the next page starts after.
    pub next_part_number_marker: Option<String>,
}

impl ListPartsResult {
    /// Where the next page starts, if there is one.
    pub fn next_marker(&self) -> Option<u16> {
        let marker = self.next_part_number_marker.as_deref()?;
        self.is_truncated
            .then(|| marker.trim().parse().ok())
            .flatten()
    }
}

/// An uploaded part.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Part {
    /// Its size in bytes.
    #[serde(default)]
    pub size: u64,
    /// RFC 3339.
    pub last_modified: Option<String>,
}

/// The answer to CreateMultipartUpload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InitiateMultipartUploadResult {
    /// The new upload's id.
    pub upload_id: String,
}

/// Reads an answer of type `T`; the message says what was wrong with it.
pub(super) fn parse<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, String> {
    quick_xml::de::from_str(doc).map_err(|e| format!("cannot read the answer: {e}"))
}

/// The error a document holds, when it is an S3 error document: a failed
/// request's body, or a 200 answer that is an error in disguise
/// (CompleteMultipartUpload does that).
pub(super) fn error(doc: &str) -> Option<S3Error> {
    (root(doc)? == "Error").then(|| parse(doc).unwrap_or_default())
}

/// The name of the root element.
fn root(doc: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(doc);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                return Some(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
            }
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// An RFC 3339 time of an answer, when there is a valid one.
pub(super) fn time(t: Option<&str>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_parse_and_other_documents_are_no_errors() {
        // As AWS sends it (with the extra elements it adds).
        let err = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>SlowDown</Code>
  <Message>Please reduce your request rate &amp; retry &#x41;&#66;.</Message>
  <RequestId>4442587FB7D0A2F9</RequestId>
  <HostId>nLmXW5D+WqzC3Jq7Zc2q9vSPRxmVSjuqrx3hA0YzGlhuqO5NLw40i7o7sIL8tw0wEJ6Sn0LpM5I=</HostId>
</Error>"#;
        assert_eq!(
            error(err),
            Some(S3Error {
                code: "SlowDown".into(),
                message: "Please reduce your request rate & retry AB.".into()
            })
        );
        let minimal = "<Error><Code>NoSuchKey</Code></Error>";
        assert_eq!(error(minimal).unwrap().code, "NoSuchKey");
        assert_eq!(error(""), None, "a HEAD answer has no body");
        assert_eq!(error("<ListBucketResult></ListBucketResult>"), None);
        assert_eq!(error("<html><body>502 Bad Gateway</body></html>"), None);
    }

    #[test]
    fn list_objects_v2_pages_parse() {
        let page = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name>
  <Prefix>p/</Prefix>
  <KeyCount>2</KeyCount>
  <MaxKeys>2</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <Contents>
    <Key>p/backups/app-20240101T000000Z.sqlite.zst</Key>
    <LastModified>2024-01-01T00:00:01.000Z</LastModified>
    <ETag>"9b2cf535f27731c974343645a3985328"</ETag>
    <Size>434234</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents>
    <Key>p/backups/a&amp;b&lt;c</Key>
    <LastModified>2024-01-02T00:00:00Z</LastModified>
    <ETag>"x"</ETag>
    <Size>0</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>"#;
        let l: ListBucketResult = parse(page).unwrap();
        assert!(l.is_truncated);
        assert_eq!(l.contents.len(), 2);
        assert_eq!(l.contents[0].size, 434234);
        assert_eq!(l.contents[1].key, "p/backups/a&b<c");
        assert_eq!(
            time(l.contents[0].last_modified.as_deref())
                .unwrap()
                .to_rfc3339(),
            "2024-01-01T00:00:01+00:00"
        );
        assert_eq!(
            l.next_continuation_token.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
        let empty: ListBucketResult = parse(
            "<ListBucketResult><Name>b</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>",
        )
        .unwrap();
        assert!(empty.contents.is_empty() && !empty.is_truncated);
        assert!(parse::<ListBucketResult>(
            "<ListBucketResult><Contents><Key>k</Key><Size>x</Size></Contents></ListBucketResult>"
        )
        .is_err());
    }

    #[test]
    fn multipart_answers_parse() {
        let init = r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket>
  <Key>example-object</Key>
  <UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>
</InitiateMultipartUploadResult>"#;
        let i: InitiateMultipartUploadResult = parse(init).unwrap();
        assert_eq!(
            i.upload_id,
            "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
        );
        let uploads = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>bucket</Bucket>
  <KeyMarker></KeyMarker>
  <UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>my-movie.m2ts</NextKeyMarker>
  <NextUploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</NextUploadIdMarker>
  <MaxUploads>3</MaxUploads>
  <IsTruncated>true</IsTruncated>
  <Upload>
    <Key>my-divisor</Key>
    <UploadId>XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw</UploadId>
    <Initiator><ID>arn:aws:iam::111122223333:user/user1-11111a31-17b5-4fb7-9df5-b111111f13de</ID><DisplayName>user1-11111a31-17b5-4fb7-9df5-b111111f13de</DisplayName></Initiator>
    <Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID><DisplayName>OwnerDisplayName</DisplayName></Owner>
    <StorageClass>STANDARD</StorageClass>
    <Initiated>2010-11-10T20:48:33.000Z</Initiated>
  </Upload>
  <Upload>
    <Key>my-movie.m2ts</Key>
    <UploadId>VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>
    <StorageClass>STANDARD</StorageClass>
    <Initiated>2010-11-10T20:48:35.000Z</Initiated>
  </Upload>
</ListMultipartUploadsResult>"#;
        let u: ListMultipartUploadsResult = parse(uploads).unwrap();
        assert!(u.is_truncated);
        assert_eq!(u.uploads.len(), 2);
        assert_eq!(u.uploads[1].key, "my-movie.m2ts");
        assert_eq!(
            u.uploads[0].upload_id,
            "XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw"
        );
        assert!(time(u.uploads[0].initiated.as_deref()).is_some());
        assert_eq!(u.next_key_marker.as_deref(), Some("my-movie.m2ts"));
        assert_eq!(
            u.next_upload_id_marker.as_deref(),
            Some("YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ")
        );
        let none: ListMultipartUploadsResult = parse(
            "<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(none.uploads.is_empty() && !none.is_truncated);

        let parts = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket>
  <Key>example-object</Key>
  <UploadId>XXBsb2FkIElEIGZvciBlbHZpbmcncyVcdS1tb3ZpZS5tMnRzEEEwbG9hZA</UploadId>
  <PartNumberMarker>1</PartNumberMarker>
  <NextPartNumberMarker>3</NextPartNumberMarker>
  <MaxParts>2</MaxParts>
  <IsTruncated>true</IsTruncated>
  <Part>
    <PartNumber>2</PartNumber>
    <LastModified>2010-11-10T20:48:34.000Z</LastModified>
    <ETag>"7778aef83f66abc1fa1e8477f296d394"</ETag>
    <Size>10485760</Size>
  </Part>
  <Part>
    <PartNumber>3</PartNumber>
    <LastModified>2010-11-10T20:48:33.000Z</LastModified>
    <ETag>"aaaa18db4cc2f85cedef654fccc4a4x8"</ETag>
    <Size>10485761</Size>
  </Part>
</ListPartsResult>"#;
        let p: ListPartsResult = parse(parts).unwrap();
        assert_eq!(p.parts.iter().map(|p| p.size).sum::<u64>(), 20971521);
        assert_eq!(p.next_marker(), Some(3));
        let newest = p
            .parts
            .iter()
            .filter_map(|p| time(p.last_modified.as_deref()))
            .max();
        assert_eq!(newest.unwrap().to_rfc3339(), "2010-11-10T20:48:34+00:00");
        let last: ListPartsResult = parse(
            "<ListPartsResult><NextPartNumberMarker></NextPartNumberMarker><IsTruncated>false</IsTruncated></ListPartsResult>",
        )
        .unwrap();
        assert!(last.parts.is_empty());
        assert_eq!(last.next_marker(), None);
    }

    #[test]
    fn a_completed_upload_is_told_from_an_error_in_a_200_answer() {
        let done = r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Location>https://example-bucket.s3.amazonaws.com/example-object</Location>
  <Bucket>example-bucket</Bucket>
  <Key>example-object</Key>
  <ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag>
</CompleteMultipartUploadResult>"#;
        assert_eq!(error(done), None);
        let failed = r#"<?xml version="1.0" encoding="UTF-8"?>

<Error>
<Code>InternalError</Code>
<Message>We encountered an internal error. Please try again.</Message>
<RequestId>656c76696e6727732072657175657374</RequestId>
<HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId>
</Error>"#;
        assert_eq!(error(failed).unwrap().code, "InternalError");
        // S3 keeps a slow completion alive with whitespace before the document.
        let padded = format!("   \n  \n{failed}");
        assert_eq!(error(&padded).unwrap().code, "InternalError");
        assert_eq!(error(&format!("  \n{done}")), None);
    }
}
