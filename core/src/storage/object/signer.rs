//! What object_store has no call for, signed with its own SigV4 signer: listing a
//! key's unfinished multipart uploads, and a DELETE only while the object is
//! still the version compaction read (`If-Match`).

use super::*;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Requests object_store has no call for, signed by object_store's own SigV4
/// signer ([`object_store::aws::AwsAuthorizer`]) with the store's credentials and
/// sent by its HTTP client: listing the unfinished multipart uploads of a key
/// (a compaction killed mid-upload leaves one, invisible but billed, which the
/// next one aborts) and a DELETE that happens only while the object is still the
/// version compaction read (`If-Match`). S3 stores only; the in-memory store of
/// the unit tests has none.
#[derive(Clone)]
pub(super) struct Signer {
    pub(super) s3: Option<Arc<object_store::aws::AmazonS3>>,
    pub(super) http: object_store::client::HttpClient,
    /// `https://host/bucket` (path style) or `https://bucket.host`, as object_store builds it.
    pub(super) bucket_endpoint: String,
    pub(super) region: String,
}

impl Signer {
    pub(super) fn from_builder(b: &AmazonS3Builder, bucket: &str) -> Option<Signer> {
        use object_store::aws::AmazonS3ConfigKey as K;
        use object_store::client::HttpConnector;
        let region = b
            .get_config_value(&K::Region)
            .unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = b
            .get_config_value(&K::S3Endpoint)
            .or_else(|| b.get_config_value(&K::Endpoint));
        let virtual_hosted =
            b.get_config_value(&K::VirtualHostedStyleRequest).as_deref() == Some("true");
        let bucket_endpoint = match (endpoint, virtual_hosted) {
            (Some(e), true) => e,
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let allow_http = b
            .get_config_value(&K::Client(object_store::ClientConfigKey::AllowHttp))
            .as_deref()
            == Some("true");
        let options = object_store::ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(Duration::from_secs(30))
            .with_connect_timeout(Duration::from_secs(5));
        let http = super::super::s3_http::SameEndpointConnector
            .connect(&options)
            .ok()?;
        Some(Signer {
            s3: None,
            http,
            bucket_endpoint,
            region,
        })
    }

    /// Sends a signed request for `key` (the bucket itself when empty), retried on
    /// 5xx and transport errors (4 attempts, 100 ms doubling); returns the status
    /// and body.
    pub(super) async fn send(
        &self,
        method: &'static str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&'static str, String)],
    ) -> std::result::Result<(u16, Bytes), String> {
        use object_store::client::{HttpRequest, HttpRequestBody};
        let s3 = self.s3.as_ref().ok_or("no S3 client")?;
        let mut url = format!("{}/{}", self.bucket_endpoint, uri_encode(key, true));
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&uri_encode(k, false));
            url.push('=');
            url.push_str(&uri_encode(v, false));
        }
        let mut wait = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let credential = s3
                .credentials()
                .get_credential()
                .await
                .map_err(|e| e.to_string())?;
            let mut req = HttpRequest::new(HttpRequestBody::empty());
            *req.method_mut() = method.parse().map_err(|_| "bad method")?;
            *req.uri_mut() = url.parse().map_err(|e| format!("{url}: {e}"))?;
            for (name, value) in headers {
                let v = object_store::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
                req.headers_mut().insert(*name, v);
            }
            object_store::aws::AwsAuthorizer::new(&credential, "s3", &self.region)
                .try_authorize(&mut req, None)
                .map_err(|e| e.to_string())?;
            let outcome = match self.http.execute(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.into_body().bytes().await {
                        // 5xx other than these (501 NotImplemented…) is an answer, not a hiccup.
                        Ok(body) if !matches!(status, 500 | 502 | 503 | 504) => {
                            return Ok((status, body))
                        }
                        Ok(body) => format!("{status}: {}", String::from_utf8_lossy(&body)),
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            if attempt >= 4 {
                return Err(outcome);
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }

    /// The upload ids of every unfinished multipart upload of exactly `key`;
    /// `None` when the server cannot list them (501 NotImplemented).
    pub(super) async fn list_uploads(
        &self,
        key: &str,
    ) -> std::result::Result<Option<Vec<String>>, String> {
        let mut ids = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        for _ in 0..100 {
            let mut query = vec![("uploads", ""), ("prefix", key)];
            if !key_marker.is_empty() {
                query.push(("key-marker", &key_marker));
                query.push(("upload-id-marker", &id_marker));
            }
            let (status, body) = self.send("GET", "", &query, &[]).await?;
            let text = String::from_utf8_lossy(&body);
            if status == 501 {
                return Ok(None);
            }
            if status != 200 {
                return Err(format!("{status}: {text}"));
            }
            for upload in text.split("<Upload>").skip(1) {
                if let (Some(k), Some(id)) =
                    (xml_value(upload, "Key"), xml_value(upload, "UploadId"))
                {
                    if k == key {
                        ids.push(id);
                    }
                }
            }
            if xml_value(&text, "IsTruncated").as_deref() != Some("true") {
                break;
            }
            key_marker = xml_value(&text, "NextKeyMarker").unwrap_or_default();
            id_marker = xml_value(&text, "NextUploadIdMarker").unwrap_or_default();
            if key_marker.is_empty() {
                break;
            }
        }
        Ok(Some(ids))
    }
}

/// RFC 3986's unreserved characters, which S3's canonical URI keeps as they are.
pub(super) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same and `/`, for a key (a path).
pub(super) const UNRESERVED_AND_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');

/// `text` percent-encoded as S3 wants it: unreserved characters kept (and `/` in a path).
pub(super) fn uri_encode(text: &str, path: bool) -> String {
    let set = if path {
        UNRESERVED_AND_SLASH
    } else {
        UNRESERVED
    };
    utf8_percent_encode(text, set).to_string()
}

/// The text of the first `<tag>…</tag>` in `xml`, entities decoded.
pub(super) fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written encoder the percent-encoding crate replaced, as the reference.
    fn by_hand(text: &str, path: bool) -> String {
        let mut out = String::with_capacity(text.len());
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (path && b == b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    #[test]
    fn uri_encoding_is_unchanged() {
        assert_eq!(
            uri_encode("p/2024-01-01/a b+é~.parquet", true),
            "p/2024-01-01/a%20b%2B%C3%A9~.parquet"
        );
        assert_eq!(uri_encode("a/b=c&d", false), "a%2Fb%3Dc%26d");
    }

    proptest::proptest! {
        #[test]
        fn uri_encoding_matches_the_hand_written_one(s in "([ %+~./_=&-]|\\PC){0,24}") {
            for path in [false, true] {
                proptest::prop_assert_eq!(uri_encode(&s, path), by_hand(&s, path));
            }
        }
    }
}
