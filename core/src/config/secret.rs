//! Secrets: passwords and tokens, never shown, taken from the config, a file or an
//! environment variable (at most one of them).

use super::error::KeyError;
use super::FileGuard;
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string (password, token). Its `Debug` and `Display` never show the value,
/// so a secret cannot leak through a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: call only where it is sent to Prometheus.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret may come from: `<key>`, `<key>File`, `<key>Env`.
pub(super) struct SecretSources {
    pub value: Option<String>,
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

/// Whether `name` can be an environment variable's name (letters, digits, `_`, not
/// starting with a digit).
pub(super) fn is_env_var_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One secret from at most one of its sources. `key` is its full name
/// (`prometheus.password`); errors name the key that was set (`passwordFile`), so
/// that they point at its line, and never show a value.
pub(super) fn resolve_secret(
    key: &'static str,
    sources: SecretSources,
    base_dir: &Path,
    guard: FileGuard,
) -> Result<Option<Secret>, KeyError> {
    let SecretSources { value, file, env } = sources;
    let short = key.rsplit('.').next().unwrap_or(key);
    // The error's key is the short name (looked up in the text), its message
    // starts with the full one.
    let fail = |suffix: &str, message: String| KeyError {
        key: format!("{short}{suffix}"),
        message: format!("{key}{suffix}: {message}"),
    };
    let count = value.is_some() as u8 + file.is_some() as u8 + env.is_some() as u8;
    if count > 1 {
        return Err(fail(
            "",
            format!("set only one of {short}, {short}File, {short}Env"),
        ));
    }
    if let Some(v) = value {
        return Ok(Some(Secret::new(v)));
    }
    if let Some(f) = file {
        let path = if f.is_relative() {
            base_dir.join(&f)
        } else {
            f
        };
        guard(&path).map_err(|reason| fail("File", reason))?;
        let text = super::small_file::read_text(&path, super::small_file::SECRET_LIMIT)
            .map_err(|e| fail("File", format!("cannot read {}: {e}", path.display())))?;
        let text = text.trim_end_matches(['\n', '\r']).to_string();
        if text.is_empty() {
            return Err(fail("File", format!("{} is empty", path.display())));
        }
        return Ok(Some(Secret::new(text)));
    }
    if let Some(var) = env {
        if !is_env_var_name(&var) {
            // Do not echo it: a secret pasted here by mistake must not reach a log.
            return Err(fail(
                "Env",
                "not a valid environment variable name (letters, digits, _)".into(),
            ));
        }
        let v = std::env::var(&var)
            .map_err(|_| fail("Env", format!("environment variable {var} is not set")))?;
        if v.is_empty() {
            return Err(fail("Env", format!("environment variable {var} is empty")));
        }
        return Ok(Some(Secret::new(v)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(value: Option<&str>, file: Option<&str>, env: Option<&str>) -> SecretSources {
        SecretSources {
            value: value.map(String::from),
            file: file.map(PathBuf::from),
            env: env.map(String::from),
        }
    }

    fn resolve(s: SecretSources) -> Result<Option<Secret>, KeyError> {
        resolve_secret("prometheus.password", s, Path::new("/"), &|_| Ok(()))
    }

    #[test]
    fn secrets_are_never_shown() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn one_source_at_most_and_errors_name_the_key_set() {
        assert_eq!(resolve(sources(None, None, None)), Ok(None));
        assert_eq!(
            resolve(sources(Some("x"), None, None))
                .unwrap()
                .unwrap()
                .expose(),
            "x"
        );
        assert_eq!(
            resolve(sources(Some("x"), None, Some("V"))),
            Err(KeyError::new(
                "password",
                "prometheus.password: set only one of password, passwordFile, passwordEnv"
            ))
        );
        assert_eq!(
            resolve(sources(None, None, Some("1 not-a-name s3cret"))),
            Err(KeyError::new(
                "passwordEnv",
                "prometheus.passwordEnv: not a valid environment variable name (letters, digits, _)"
            ))
        );
        let e = resolve(sources(None, Some("/nonexistent/pw"), None)).unwrap_err();
        assert_eq!(e.key, "passwordFile");
        assert!(
            e.message
                .starts_with("prometheus.passwordFile: cannot read /nonexistent/pw: "),
            "{e:?}"
        );
        let refused = resolve_secret(
            "storage.s3.sessionToken",
            sources(None, Some("pw"), None),
            Path::new("/etc"),
            &|p| Err(format!("{} is not allowed", p.display())),
        );
        assert_eq!(
            refused,
            Err(KeyError::new(
                "sessionTokenFile",
                "storage.s3.sessionTokenFile: /etc/pw is not allowed"
            ))
        );
    }

    #[test]
    fn env_var_names() {
        for ok in ["A", "_x", "PROMDUCK_TOKEN_2"] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "2A", "A-B", "A B", "é"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
    }
}
