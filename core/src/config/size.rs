//! Sizes in bytes as the configuration writes them (`268435456`, `256MiB`, `1GB`).

/// Parses a size in bytes: a whole number (`268435456`) or a number with a unit,
/// decimal (`kB`, `MB`, `GB`, `TB`: powers of 1000) or binary (`KiB`, `MiB`, `GiB`,
/// `TiB`: powers of 1024; `K`, `M`, `G`, `T` alone are decimal). Units are
/// case-insensitive, a space before the unit is allowed, fractions must come to
/// whole bytes (`1.5KiB` is 1536). Zero is rejected.
pub fn parse_byte_size(input: &str) -> Result<u64, SizeError> {
    let s = input.trim();
    let bad = || SizeError::Invalid(input.to_string());
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = (&s[..num_len], s[num_len..].trim_start());
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 18 || int.len() > 20
    {
        return Err(bad());
    }
    let mult: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1000u128.pow(2),
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1000u128.pow(3),
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1000u128.pow(4),
        "ti" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac_num: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let frac_bytes = frac_num * mult;
    if !frac_bytes.is_multiple_of(scale) {
        return Err(SizeError::NotWholeBytes(input.to_string()));
    }
    let total = int
        .checked_mul(mult)
        .and_then(|v| v.checked_add(frac_bytes / scale))
        .ok_or_else(|| SizeError::TooLarge(input.to_string()))?;
    if total == 0 {
        return Err(SizeError::Zero(input.to_string()));
    }
    u64::try_from(total).map_err(|_| SizeError::TooLarge(input.to_string()))
}

/// Why a text is not a size (each message quotes it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    #[error("invalid size `{0}`; expected a number of bytes or a number with a unit such as 256MiB or 1GB")]
    Invalid(String),
    #[error("size `{0}` is not a whole number of bytes")]
    NotWholeBytes(String),
    #[error("size `{0}` is too large")]
    TooLarge(String),
    #[error("size `{0}` must be greater than zero")]
    Zero(String),
}

/// A size for messages: `268435456 bytes (256MiB)`, or `1000 bytes`.
pub fn format_byte_size(n: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{n} bytes ({}{unit})", n / size);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_byte_size("268435456"), Ok(268_435_456));
        assert_eq!(parse_byte_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_byte_size("256 mib"), Ok(256 << 20));
        assert_eq!(parse_byte_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_byte_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_byte_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_byte_size("2Ti"), Ok(2 << 40));
        assert_eq!(parse_byte_size("10B"), Ok(10));
        for bad in [
            "",
            "0",
            "0MiB",
            "-5",
            "1.5",
            "5 parsecs",
            "1e6",
            "MiB",
            "1..5KiB",
            "99999999999999999999TiB",
        ] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_byte_size("1.5").unwrap_err().to_string(),
            "size `1.5` is not a whole number of bytes"
        );
        assert_eq!(
            parse_byte_size("0").unwrap_err().to_string(),
            "size `0` must be greater than zero"
        );
        assert_eq!(
            parse_byte_size("99999999999999999999TiB")
                .unwrap_err()
                .to_string(),
            "size `99999999999999999999TiB` is too large"
        );
        assert_eq!(format_byte_size(256 << 20), "268435456 bytes (256MiB)");
        assert_eq!(format_byte_size(1000), "1000 bytes");
    }
}
