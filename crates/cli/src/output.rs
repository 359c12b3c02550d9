//! Formatting for people: sizes, rates, times.

use std::time::{SystemTime, UNIX_EPOCH};

/// `1.5 GiB`, `312 B` (as `doctor` shows the settings).
pub fn size(bytes: u64) -> String {
    blobcache_core::config::format_size(bytes)
}

/// `850 MiB/s`
pub fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{}/s", size((bytes as f64 / secs) as u64))
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-23 18:50:01Z` (UTC).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `x` rounded to `decimals` decimal places (the precision a JSON output
/// shows a time with).
pub fn rounded(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_times_and_strings_format() {
        assert_eq!(size(312), "312 B");
        assert_eq!(size(3 << 29), "1.5 GiB");
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_795_459_801), "2026-11-23 18:50:01Z");
        assert_eq!(rounded(0.123_456_7, 3), 0.123);
    }
}
