use duckdb::Connection;
use std::error::Error;
#[duckdb::duckdb_entrypoint_c_api(ext_name = "promduck", min_duckdb_version = "v1.2.0")]
pub fn extension_entrypoint(_con: Connection) -> Result<(), Box<dyn Error>> { Ok(()) }
