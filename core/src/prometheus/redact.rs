//! Credentials out of every text that quotes a server: each spelling a secret may
//! take on the wire (itself, percent-encoded, base64, JSON- and HTML-escaped).

use crate::config::PrometheusConfig;
use base64::alphabet;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Replaces every spelling of a connection's credentials in text that quotes a
/// server (an error body may echo the request's `Authorization` header): the
/// password, token and credential-bearing header values themselves, their
/// base64 (standard and URL-safe, with and without padding; of `user:password`
/// too), percent-encoded, JSON- and HTML-escaped forms, and whole `Basic …` /
/// `Bearer …` header values.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so that a form containing another is replaced whole.
    pub(super) forms: Vec<String>,
}

impl Redactor {
    pub fn new(cfg: &PrometheusConfig) -> Self {
        let mut forms = std::collections::BTreeSet::new();
        if let Some(p) = cfg
            .password
            .as_ref()
            .map(|p| p.expose())
            .filter(|p| !p.is_empty())
        {
            add_secret_forms(&mut forms, p);
            if let Some(u) = &cfg.username {
                add_basic_forms(&mut forms, u, p);
            }
        }
        if let Some(t) = cfg
            .bearer_token
            .as_ref()
            .map(|t| t.expose())
            .filter(|t| !t.is_empty())
        {
            add_secret_forms(&mut forms, t);
            for v in text_forms(&format!("Bearer {t}")) {
                forms.insert(v);
            }
        }
        // Extra headers carry tenant ids and API keys as often as `Authorization`
        // values; values too short to be credentials would only garble messages.
        for v in cfg.headers.values() {
            let v = v.trim();
            if v.len() < 4 {
                continue;
            }
            add_secret_forms(&mut forms, v);
            if let Some((scheme, cred)) = v.split_once(' ') {
                let cred = cred.trim();
                if cred.len() >= 4 {
                    add_secret_forms(&mut forms, cred);
                    if scheme.eq_ignore_ascii_case("basic") {
                        if let Some((u, p)) = base64_decode(cred)
                            .and_then(|b| String::from_utf8(b).ok())
                            .and_then(|s| {
                                s.split_once(':')
                                    .map(|(u, p)| (u.to_string(), p.to_string()))
                            })
                        {
                            if !p.is_empty() {
                                add_secret_forms(&mut forms, &p);
                                add_basic_forms(&mut forms, &u, &p);
                            }
                        }
                    }
                }
            }
        }
        let mut forms: Vec<String> = forms.into_iter().filter(|f| !f.is_empty()).collect();
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        Redactor { forms }
    }

    /// `s` with every credential form replaced by `***`.
    pub fn redact(&self, s: &str) -> String {
        let mut out = s.to_string();
        for f in &self.forms {
            if out.contains(f.as_str()) {
                out = out.replace(f.as_str(), "***");
            }
        }
        out
    }

    pub(super) fn longest(&self) -> usize {
        self.forms.first().map_or(0, |f| f.len())
    }
}

/// `s` as it may appear in text: itself, JSON-escaped (`\"`, `\/`), HTML-escaped.
pub(super) fn text_forms(s: &str) -> Vec<String> {
    let mut v = vec![s.to_string()];
    let json = serde_json::to_string(s).unwrap_or_default();
    let json = json.trim_matches('"').to_string();
    v.push(json.replace('/', "\\/"));
    v.push(json);
    let html = s
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    v.push(html.replace('\'', "&#39;"));
    v.push(html.replace('\'', "&#x27;"));
    v
}

pub(super) fn add_secret_forms(forms: &mut std::collections::BTreeSet<String>, secret: &str) {
    let mut spellings = vec![secret.to_string()];
    for plus in [false, true] {
        let enc = percent_encode(secret, plus);
        spellings.push(lower_hex(&enc));
        spellings.push(enc);
    }
    spellings.extend(base64_forms(secret.as_bytes()));
    for s in spellings {
        forms.extend(text_forms(&s));
    }
}

pub(super) fn add_basic_forms(
    forms: &mut std::collections::BTreeSet<String>,
    user: &str,
    password: &str,
) {
    for b in base64_forms(format!("{user}:{password}").as_bytes()) {
        forms.extend(text_forms(&format!("Basic {b}")));
        forms.extend(text_forms(&b));
    }
}

/// Percent escapes with lower-case hex digits (`%3a`), everything else unchanged.
pub(super) fn lower_hex(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push('%');
            out.push((b[i + 1] as char).to_ascii_lowercase());
            out.push((b[i + 2] as char).to_ascii_lowercase());
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// RFC 3986's unreserved bytes, `A-Za-z0-9-._~`: what a form value keeps as is.
pub(super) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Every byte but `A-Za-z0-9-._~` as `%XX` (a space as `+` when `plus`).
pub(super) fn percent_encode(s: &str, plus: bool) -> String {
    let encoded = utf8_percent_encode(s, UNRESERVED).to_string();
    // Every `%` of the output starts an escape, so each `%20` is a space.
    if plus {
        encoded.replace("%20", "+")
    } else {
        encoded
    }
}

/// Standard and URL-safe base64 of `data`, with and without padding.
pub(super) fn base64_forms(data: &[u8]) -> Vec<String> {
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .map(|engine| engine.encode(data))
        .collect()
}

/// Decodes standard or URL-safe base64, padded or not, as a `Basic` header value
/// may come (lenient: trailing bits are ignored, as servers do).
pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let lenient = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let s = s.trim();
    [
        GeneralPurpose::new(&alphabet::STANDARD, lenient),
        GeneralPurpose::new(&alphabet::URL_SAFE, lenient),
    ]
    .iter()
    .find_map(|engine| engine.decode(s).ok())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::prometheus) const USER: &str = "bob";
    pub(in crate::prometheus) const PASSWORD: &str = "p4ss:w/rd \"q\"+&é";
    pub(in crate::prometheus) const TOKEN: &str = "tok-Zq9/+s3cr3t=";
    pub(in crate::prometheus) const API_KEY: &str = "key-7781-abcd";

    /// Every spelling of `s` that must never appear.
    fn forms_of(s: &str) -> Vec<String> {
        let mut v = vec![s.to_string()];
        v.extend(base64_forms(s.as_bytes()));
        v.push(percent_encode(s, false));
        v.push(percent_encode(s, true));
        v.push(lower_hex(&percent_encode(s, false)));
        v.push(
            serde_json::to_string(s)
                .unwrap()
                .trim_matches('"')
                .to_string(),
        );
        v
    }

    /// Every spelling of the test credentials that must never appear, and their starts.
    pub(in crate::prometheus) fn forbidden() -> Vec<String> {
        let mut v = Vec::new();
        for s in [PASSWORD, TOKEN, API_KEY, &format!("{USER}:{PASSWORD}")] {
            v.extend(forms_of(s));
        }
        v.push(PASSWORD[..8].to_string());
        v.push(TOKEN[..8].to_string());
        v
    }

    #[test]
    fn redactor_replaces_every_form() {
        let mut cfg = PrometheusConfig::new(crate::config::PromUrl::parse("http://x:1").unwrap());
        cfg.username = Some(USER.into());
        cfg.password = Some(crate::config::Secret::new(PASSWORD));
        cfg.headers.insert("X-Api-Key".into(), API_KEY.into());
        cfg.headers.insert("X-Scope-OrgID".into(), "a".into());
        let r = Redactor::new(&cfg);
        let forms = [
            forms_of(PASSWORD),
            forms_of(&format!("{USER}:{PASSWORD}")),
            forms_of(API_KEY),
        ]
        .concat();
        for f in &forms {
            let text = format!("before {f} after");
            let out = r.redact(&text);
            assert!(!out.contains(f.as_str()), "{f:?} survived: {out}");
            assert!(out.contains("***"), "{out}");
        }
        let basic = format!(
            "Basic {}",
            STANDARD.encode(format!("{USER}:{PASSWORD}").as_bytes())
        );
        assert_eq!(
            r.redact(&format!("Authorization: {basic}\n")),
            "Authorization: ***\n"
        );
        // Short header values are not credentials and are left alone.
        assert_eq!(r.redact("a tenant"), "a tenant");

        let mut cfg = PrometheusConfig::new(crate::config::PromUrl::parse("http://x:1").unwrap());
        cfg.bearer_token = Some(crate::config::Secret::new(TOKEN));
        let r = Redactor::new(&cfg);
        assert_eq!(
            r.redact(&format!("authorization: Bearer {TOKEN}")),
            "authorization: ***"
        );
        // A Basic credential given as a header is decoded, and its password redacted too.
        let mut cfg = PrometheusConfig::new(crate::config::PromUrl::parse("http://x:1").unwrap());
        cfg.headers.insert("Authorization".into(), basic.clone());
        let r = Redactor::new(&cfg);
        assert_eq!(
            r.redact(&format!(
                "{basic} / {PASSWORD} / {}",
                percent_encode(PASSWORD, true)
            )),
            "*** / *** / ***"
        );
    }

    /// The crate's encodings are the four spellings a header may carry (values from
    /// Python's `base64`), and decoding takes each of them back.
    #[test]
    fn base64_spellings() {
        let data = b"bob:p4ss:w/rd \xff?>";
        assert_eq!(
            base64_forms(data),
            [
                "Ym9iOnA0c3M6dy9yZCD/Pz4=",
                "Ym9iOnA0c3M6dy9yZCD/Pz4",
                "Ym9iOnA0c3M6dy9yZCD_Pz4=",
                "Ym9iOnA0c3M6dy9yZCD_Pz4",
            ]
        );
        for form in base64_forms(data) {
            assert_eq!(
                base64_decode(&format!(" {form} ")).as_deref(),
                Some(&data[..]),
                "{form}"
            );
        }
        assert_eq!(base64_decode("not base64!"), None);
    }
}
