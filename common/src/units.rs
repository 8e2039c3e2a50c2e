//! Parsing of durations, sizes and times as the flags accept them (SPEC §1).

use crate::error::{Error, Result};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use std::time::Duration;

/// The longest duration any flag accepts: beyond it, time arithmetic on
/// today's date leaves the calendar.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 366 * 86400);

/// The largest size any flag accepts (8 EiB).
pub const MAX_SIZE: u64 = 1 << 63;

/// Parses `90s`, `15m`, `26h`, `7d`, `4w` (a bare number is seconds), up to
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = split_unit(s);
    let n: f64 = num.parse().map_err(|_| {
        Error::usage(format!(
            "invalid duration {s:?}: expected e.g. 90s, 15m, 26h, 7d, 4w"
        ))
    })?;
    let mult = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        _ => {
            return Err(Error::usage(format!(
                "invalid duration {s:?}: unknown unit {unit:?} (use s, m, h, d or w)"
            )))
        }
    };
    let secs = n * mult;
    if !secs.is_finite() || secs > MAX_DURATION.as_secs_f64() {
        return Err(Error::usage(format!(
            "invalid duration {s:?}: longer than the 100 years any setting allows"
        )));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| Error::usage(format!("invalid duration {s:?}: out of range")))
}

/// Parses sizes like `512M`, `10G`, `1.5T`, `4096` (bytes), binary
/// multiples, up to [`MAX_SIZE`].
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, unit) = split_unit(t);
    let mult: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(Error::usage(format!(
                "invalid size {s:?}: unknown unit {unit:?} (use K, M, G or T)"
            )))
        }
    };
    let too_large = || Error::usage(format!("invalid size {s:?}: larger than 8 EiB"));
    let bytes = match num.parse::<u64>() {
        Ok(n) => n.checked_mul(mult).ok_or_else(too_large)?,
        Err(_) => {
            let n: f64 = num.parse().map_err(|_| {
                Error::usage(format!("invalid size {s:?}: expected e.g. 512M or 10G"))
            })?;
            let b = n * mult as f64;
            if !b.is_finite() || b >= MAX_SIZE as f64 {
                return Err(too_large());
            }
            b as u64
        }
    };
    if bytes > MAX_SIZE {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Parses a duration flag, naming the flag in the error (exit 2).
pub fn duration_flag(flag: &str, value: &str) -> Result<Duration> {
    parse_duration(value).map_err(|e| e.context(flag))
}

/// Parses a size flag, naming the flag in the error (exit 2).
pub fn size_flag(flag: &str, value: &str) -> Result<u64> {
    parse_size(value).map_err(|e| e.context(flag))
}

fn split_unit(s: &str) -> (&str, &str) {
    let idx = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..idx], s[idx..].trim())
}

/// Parses RFC 3339, or `YYYY-MM-DD HH:MM:SS` / `YYYY-MM-DD` in UTC.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y%m%d_%H%M%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(Utc.from_utc_datetime(&n));
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Ok(dt.with_timezone(&Utc));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight")));
    }
    Err(Error::usage(format!(
        "invalid time {s:?}: use RFC 3339 (2025-01-18T14:35:00Z) or \"YYYY-MM-DD HH:MM:SS\" (UTC)"
    )))
}

/// Formats a byte count for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Formats a duration for people: `2.3s`, `4m05s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(
            parse_duration("26h").unwrap(),
            Duration::from_secs(26 * 3600)
        );
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(
            parse_duration("4w").unwrap(),
            Duration::from_secs(28 * 86400)
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("7x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("ten").is_err());
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
    }

    /// Asserts that `parse` refuses every one of `inputs` with a usage error.
    fn assert_usage_errors<T: std::fmt::Debug>(parse: fn(&str) -> Result<T>, inputs: &[&str]) {
        for input in inputs {
            let e = parse(input).unwrap_err();
            assert_eq!(e.code(), crate::ExitCode::Usage, "{input}: {e}");
        }
    }

    #[test]
    fn absurd_values_are_usage_errors_not_panics() {
        assert_usage_errors(
            parse_duration,
            &[
                "99999999999999999999w",
                "9999999999999w",
                "1e300s",
                "inf",
                "NaN",
                "-5s",
                "101w00",
            ],
        );
        assert!(parse_duration("5200w").is_ok());
        assert_usage_errors(
            parse_size,
            &[
                "99999999999999999999T",
                "1e30G",
                "18446744073709551615K",
                "-1M",
            ],
        );
        let e = duration_flag("--keep-within", "9999999999999w").unwrap_err();
        assert!(e.message.starts_with("--keep-within: "), "{e}");
    }

    #[test]
    fn times_in_rfc3339_and_plain_utc() {
        let a = parse_time("2025-01-18T14:35:00Z").unwrap();
        let b = parse_time("2025-01-18 14:35:00").unwrap();
        let c = parse_time("2025-01-18 16:35:00+02:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert!(parse_time("yesterday").is_err());
    }
}
