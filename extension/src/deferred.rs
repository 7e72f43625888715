//! Bind errors of calls that carry a secret, raised at `init` instead.
//!
//! Why: DuckDB appends the statement's text (`LINE 1: SELECT … s3_secret_access_key :=
//! '…'`) to every error a table function raises in `bind`, but not to errors raised
//! in `init` or the scan. A call that names a secret (an S3 secret key or session
//! token, a password or token, a URL with `user:password@`) therefore never fails in
//! `bind`: its error is kept and raised at `init`, with the same text. (DuckDB's own
//! errors before promduck's bind — a syntax error, an unknown parameter name, a value
//! that cannot be cast to a typed parameter — echo the statement too, which promduck
//! cannot change: SECURITY.md says to pass secrets as `?` parameters, through the
//! environment or a config file instead.) The live functions defer every bind error.

use crate::params::{err, has_userinfo, named, BoxError, SECRET_PARAMETERS};
use duckdb::vtab::BindInfo;

/// Whether the call names a secret: one of [`SECRET_PARAMETERS`], or a `url` or
/// `s3_endpoint` with credentials in it.
pub fn carries_secret(bind: &BindInfo) -> bool {
    SECRET_PARAMETERS.iter().any(|p| named(bind, p).is_some())
        || ["url", "s3_endpoint", "data_dir"]
            .iter()
            .filter_map(|p| named(bind, p))
            .any(|v| has_userinfo(&v.render()))
}

/// A bind's result, or the error it will raise at `init`.
pub struct Deferred<T>(Result<T, String>);

impl<T> Deferred<T> {
    /// Runs a bind: its error is returned now, unless the call carries a secret. A
    /// panic (a dependency refusing a value it was not meant to get) is an error like
    /// any other, deferred the same way.
    pub fn bind(
        bind: &BindInfo,
        f: impl FnOnce() -> Result<T, BoxError>,
    ) -> Result<Deferred<T>, BoxError> {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(err(format!("promduck: internal error: {what}")))
            });
        match result {
            Ok(v) => Ok(Deferred(Ok(v))),
            Err(e) if carries_secret(bind) => Ok(Deferred(Err(e.to_string()))),
            Err(e) => Err(e),
        }
    }

    /// The bind's result, or its deferred error.
    pub fn get(&self) -> Result<&T, BoxError> {
        self.0.as_ref().map_err(|e| err(e.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_found_in_the_authority_only() {
        assert!(has_userinfo("http://u:p@127.0.0.1:9090/"));
        assert!(has_userinfo("https://token@h"));
        assert!(!has_userinfo("http://127.0.0.1:9090/a@b"));
        assert!(!has_userinfo("http://h/?q=a@b"));
        assert!(!has_userinfo("./data"));
        assert!(!has_userinfo("s3://bucket/prefix"));
    }
}
