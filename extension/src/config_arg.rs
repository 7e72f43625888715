//! The `config :=` argument shared by `prom_collect` and `prom_compact`: which file,
//! loaded under the host's sandbox, with its `outputDir` checked as a place to write.
//!
//! One place, so that both functions find the configuration exactly as the collector
//! binary does without `--config`: `$PROMDUCK_CONFIG` (empty means unset), else
//! [`DEFAULT_CONFIG_FILE`] relative to the working directory.

use crate::params::{err, named_string, BoxError};
use crate::sandbox::Policy;
use duckdb::vtab::BindInfo;
use promduck_core::config::{Config, DEFAULT_CONFIG_FILE};
use promduck_core::storage::Location;
use std::path::Path;

/// The configuration `who` runs with: `config :=` if given, else the collector's default.
/// Every file it reads and the folder or bucket it writes pass `policy` first.
pub fn load(bind: &BindInfo, policy: &Policy, who: &str) -> Result<Config, BoxError> {
    let path = match named_string(bind, "config") {
        Some(p) => p,
        None => default_path(policy, who)?,
    };
    let config = Config::load_guarded(Path::new(&path), &|p| policy.check_path(who, "read", p))
        .map_err(|e| err(crate::sandbox::redact_config_error(&e)))?;
    let out = config.storage.output_dir.to_string_lossy().into_owned();
    match Location::parse(&out).map_err(|e| err(e.to_string()))? {
        Location::Local(dir) => policy.check_dir(who, "write", &dir).map_err(err)?,
        Location::S3 { .. } => policy.check_url(who, &out).map_err(err)?,
    }
    Ok(config)
}

/// `$PROMDUCK_CONFIG`, else the default file if it exists, else an error naming both.
/// The file that would be used is put to the sandbox before anything looks at it
/// (not even whether the default file exists is learnt where it may not be read).
fn default_path(policy: &Policy, who: &str) -> Result<String, BoxError> {
    let from_env = std::env::var("PROMDUCK_CONFIG")
        .ok()
        .filter(|s| !s.is_empty());
    let candidate = from_env.as_deref().unwrap_or(DEFAULT_CONFIG_FILE);
    if !policy.external_access {
        policy
            .check_path(who, "read", Path::new(candidate))
            .map_err(err)?;
    }
    if let Some(p) = from_env {
        return Ok(p);
    }
    if Path::new(DEFAULT_CONFIG_FILE).is_file() {
        return Ok(DEFAULT_CONFIG_FILE.to_string());
    }
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "?".into());
    Err(err(format!(
        "{who} needs config := 'path/to/config.yaml', or PROMDUCK_CONFIG, or {DEFAULT_CONFIG_FILE} \
         in the working directory (there is none in {cwd})"
    )))
}
