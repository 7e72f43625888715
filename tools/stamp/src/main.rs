//! `promduck-stamp IN OUT [--version v0.1.0] [--duckdb-version v1.2.0] [--platform P] [--abi C_STRUCT]`
//!
//! `--abi C_STRUCT_UNSTABLE --duckdb-version v2.0.1`: a build on DuckDB's unstable C API
//! (v2 in DuckDB 2.0), which DuckDB loads only in the exact version named.
//!
//! Appends DuckDB's extension metadata footer to a shared library, producing a file
//! DuckDB's `LOAD` accepts. The footer is 512 bytes: eight 32-byte NUL-padded fields
//! (three unused, ABI type, extension version, C API version, platform, magic "4"),
//! in that order, followed by a 256-byte signature area, zero for unsigned builds.
//! (Layout from DuckDB's `src/main/extension/extension_load.cpp`.)

use std::process::ExitCode;

const FIELD: usize = 32;

fn field(value: &str) -> Result<[u8; FIELD], String> {
    if value.len() > FIELD {
        return Err(format!(
            "footer field {value:?} is longer than {FIELD} bytes"
        ));
    }
    let mut f = [0u8; FIELD];
    f[..value.len()].copy_from_slice(value.as_bytes());
    Ok(f)
}

/// DuckDB's platform name for the machine this tool was built for.
fn default_platform() -> String {
    let os = match std::env::consts::OS {
        "macos" => "osx",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{os}_{arch}")
}

/// Builds the 512-byte footer.
pub fn footer(
    abi: &str,
    ext_version: &str,
    capi_version: &str,
    platform: &str,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(512);
    for value in ["", "", "", abi, ext_version, capi_version, platform, "4"] {
        out.extend_from_slice(&field(value)?);
    }
    out.extend_from_slice(&[0u8; 256]);
    Ok(out)
}

const FOOTER: usize = 512;

fn field_text(f: &[u8]) -> String {
    String::from_utf8_lossy(&f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())]).into_owned()
}

/// The platform, extension and C API versions of the footer `bytes` already ends with, if any
/// (magic "4" in the eighth field, an ABI type in the fourth, a zero signature area).
pub fn existing_footer(bytes: &[u8]) -> Option<String> {
    if bytes.len() < FOOTER {
        return None;
    }
    let f = &bytes[bytes.len() - FOOTER..];
    let abi = field_text(&f[96..128]);
    let known_abi = abi == "C_STRUCT" || abi == "CPP" || abi == "C_STRUCT_UNSTABLE";
    if field_text(&f[224..256]) != "4" || !known_abi || f[256..].iter().any(|&b| b != 0) {
        return None;
    }
    Some(format!(
        "{}, extension {}, C API {}",
        field_text(&f[192..224]),
        field_text(&f[128..160]),
        field_text(&f[160..192])
    ))
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let mut capi = "v1.2.0".to_string();
    let mut platform = default_platform();
    let mut abi = "C_STRUCT".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--version" => version = args.next().ok_or("--version needs a value")?,
            "--duckdb-version" => capi = args.next().ok_or("--duckdb-version needs a value")?,
            "--platform" => platform = args.next().ok_or("--platform needs a value")?,
            "--abi" => {
                abi = args.next().ok_or("--abi needs a value")?;
                if abi != "C_STRUCT" && abi != "C_STRUCT_UNSTABLE" {
                    return Err(format!(
                        "--abi: {abi:?} is neither C_STRUCT nor C_STRUCT_UNSTABLE"
                    ));
                }
            }
            "-h" | "--help" => {
                println!("usage: promduck-stamp IN.so OUT.duckdb_extension [--version vX.Y.Z] [--duckdb-version v1.2.0] [--platform {}] [--abi C_STRUCT|C_STRUCT_UNSTABLE]", default_platform());
                return Ok(());
            }
            _ => positional.push(a),
        }
    }
    let [input, output] = positional.as_slice() else {
        return Err("usage: promduck-stamp IN.so OUT.duckdb_extension (see --help)".into());
    };
    let mut bytes = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    if !bytes.starts_with(b"\x7fELF")
        && !bytes.starts_with(&[0xcf, 0xfa, 0xed, 0xfe])
        && !bytes.starts_with(b"MZ")
    {
        return Err(format!("{input}: not a shared library"));
    }
    // An already stamped file (e.g. the linux_amd64 build, re-stamped for linux_amd64_gcc4)
    // gets its footer replaced, never a second one appended.
    if let Some(old) = existing_footer(&bytes) {
        eprintln!("{input}: replacing its footer ({old})");
        bytes.truncate(bytes.len() - FOOTER);
    }
    bytes.extend(footer(&abi, &version, &capi, &platform)?);
    // A name of this process's own: two builds stamping the same file at once (parallel
    // `make build`s) must not rename each other's half-written file.
    let tmp = format!("{output}.tmp{}", std::process::id());
    std::fs::write(&tmp, &bytes).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, output).map_err(|e| format!("{output}: {e}"))?;
    eprintln!("stamped {output} ({platform}, extension {version}, {abi} {capi})");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("promduck-stamp: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_layout() {
        let f = footer("C_STRUCT", "v0.1.0", "v1.2.0", "linux_amd64").unwrap();
        assert_eq!(f.len(), 512);
        assert_eq!(&f[96..104], b"C_STRUCT");
        assert_eq!(&f[128..134], b"v0.1.0");
        assert_eq!(&f[160..166], b"v1.2.0");
        assert_eq!(&f[192..203], b"linux_amd64");
        assert_eq!(f[224], b'4');
        assert!(f[225..].iter().all(|&b| b == 0));
        assert!(footer("C_STRUCT", &"x".repeat(33), "v", "p").is_err());
    }

    #[test]
    fn existing_footer_is_recognised() {
        let mut lib = b"\x7fELF".to_vec();
        lib.extend([7u8; 600]);
        assert_eq!(existing_footer(&lib), None);
        lib.extend(footer("C_STRUCT", "v0.1.0", "v1.2.0", "linux_amd64").unwrap());
        assert_eq!(
            existing_footer(&lib).as_deref(),
            Some("linux_amd64, extension v0.1.0, C API v1.2.0")
        );
        // a signed file's signature area is not zero: not ours to replace
        let n = lib.len();
        lib[n - 1] = 1;
        assert_eq!(existing_footer(&lib), None);
    }
}
