//! Small text formatters for human output: byte sizes, counts, and times.
//!
//! Pure functions of their inputs (the current time is passed in, read once by the
//! caller with [`unix_now`]), so that the rendering built on them is testable to the
//! character.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current Unix time, for "3 minutes ago"; a clock before 1970 reads as 1970.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A byte count in binary units with one decimal: `0 B`, `512 B`, `1.5 KiB`, `35.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    // Move up a unit before rounding would print `1024.0`.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A number with thousands separators: `1,204`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count with its noun, plural when it is not one: `1 file`, `1,204 files`.
pub fn count(n: u64, noun: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {noun}{s}", thousands(n))
}

/// How long ago `then` was, both in Unix seconds: `just now`, `3 minutes ago`.
pub fn ago(then: i64, now: i64) -> String {
    let secs = now.saturating_sub(then);
    if secs < 0 {
        // The daemon's clock or ours is off; say so rather than print a negative age.
        return "in the future".to_owned();
    }
    let secs = secs.unsigned_abs();
    let (n, unit) = match secs {
        0..10 => return "just now".to_owned(),
        10..60 => (secs, "second"),
        60..3_600 => (secs / 60, "minute"),
        3_600..86_400 => (secs / 3_600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{} ago", count(n, unit))
}

/// A Unix time as a UTC calendar time: `2026-11-21 14:02:11 UTC`.
pub fn utc_time(unix: i64) -> String {
    let (year, month, day) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after Howard
/// Hinnant's `civil_from_days`: eras of 400 years, years starting on March 1st so the
/// leap day falls last.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        let check = |n: u64, want: &str| assert_eq!(bytes(n), want, "{n}");
        check(0, "0 B");
        check(1023, "1023 B");
        check(1024, "1.0 KiB");
        check(1536, "1.5 KiB");
        check(1024 * 1024 - 1, "1.0 MiB");
        check(36_909_875, "35.2 MiB");
        check(3 * 1024 * 1024 * 1024, "3.0 GiB");
        check(5 << 40, "5.0 TiB");
        check(u64::MAX, "16777216.0 TiB");
    }

    #[test]
    fn counts() {
        let check = |n: u64, want: &str| assert_eq!(count(n, "file"), want, "{n}");
        check(0, "0 files");
        check(1, "1 file");
        check(999, "999 files");
        check(1_204, "1,204 files");
        check(1_000_000, "1,000,000 files");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn relative_times() {
        let now = 1_795_269_731;
        let check = |secs_ago: i64, want: &str| assert_eq!(ago(now - secs_ago, now), want);
        check(-5, "in the future");
        check(0, "just now");
        check(9, "just now");
        check(45, "45 seconds ago");
        check(60, "1 minute ago");
        check(180, "3 minutes ago");
        check(7_200, "2 hours ago");
        check(86_400 * 3 + 5, "3 days ago");
        assert_eq!(ago(i64::MIN, i64::MAX), "106,751,991,167,300 days ago");
    }

    #[test]
    fn calendar_times() {
        let check = |unix: i64, want: &str| assert_eq!(utc_time(unix), want, "{unix}");
        check(0, "1970-01-01 00:00:00 UTC");
        check(-1, "1969-12-31 23:59:59 UTC");
        check(951_782_400, "2000-02-29 00:00:00 UTC");
        check(1_795_269_731, "2026-11-21 14:02:11 UTC");
    }
}
