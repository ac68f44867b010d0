//! Times on the command line (`--since`, `--at`) and in the output. Pure:
//! every function takes "now" as an argument.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use trustpool_evidence::duration::parse_duration;

/// The current time in unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reads a point in time given on the command line:
/// - RFC 3339 (`2026-11-22T14:02:00Z`, `2026-11-22T15:02:00+01:00`);
/// - an age, that long before `now_ms` (`90s`, `10m`, `2h`, and `3d` for days);
/// - unix milliseconds with an `@` prefix (`@1795356120000`).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Some(ms) = text.strip_prefix('@') {
        return ms.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
            format!("time '{text}': after '@' give unix milliseconds, e.g. @1795356120000")
        });
    }
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        return i64::try_from(ms)
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| format!("time '{text}' is before 1970"));
    }
    let age_ms = match parse_duration(text) {
        Ok(d) => i64::try_from(d.as_millis()).ok(),
        Err(_) => parse_days(text),
    };
    match age_ms {
        Some(age) if age <= now_ms => Ok(now_ms - age),
        Some(_) => Err(format!("time '{text}': that age reaches before 1970")),
        None => Err(format!(
            "time '{text}' is neither RFC 3339 (2026-11-22T14:02:00Z), an age (90s, 10m, 2h, 3d) nor @unix-milliseconds"
        )),
    }
}

/// `3d` → milliseconds; anything else → None.
fn parse_days(text: &str) -> Option<i64> {
    let digits = text.strip_suffix('d')?;
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()?.checked_mul(86_400_000)
}

fn datetime(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// RFC 3339 UTC to the second (`2026-11-22T14:02:00Z`); `-` for 0 (never).
pub fn rfc3339(ms: i64) -> String {
    if ms == 0 {
        return "-".to_string();
    }
    match datetime(ms.div_euclid(1000) * 1000).and_then(|t| t.format(&Rfc3339).ok()) {
        Some(s) => s,
        None => format!("@{ms}"),
    }
}

/// RFC 3339 UTC with milliseconds (`2026-11-22T14:02:00.125Z`) for JSON;
/// `None` for 0 (never).
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    if ms == 0 {
        return None;
    }
    let t = datetime(ms)?;
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    Some(format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        t.millisecond()
    ))
}

/// A compact span: `45s`, `12m`, `3h`, `2d` (rounded down to the largest unit).
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 86_400 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// How long ago `then_ms` was: `12s ago`, `5m ago`; `never` for 0; `in 3s`
/// for a time ahead of the local clock.
pub fn age(now_ms: i64, then_ms: i64) -> String {
    if then_ms == 0 {
        "never".to_string()
    } else if then_ms > now_ms {
        format!("in {}", span(then_ms - now_ms))
    } else {
        format!("{} ago", span(now_ms - then_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_356_120_000; // 2026-11-22T14:02:00Z

    #[test]
    fn rfc3339_is_read_in_any_offset() {
        assert_eq!(parse_time("2026-11-22T14:02:00Z", NOW), Ok(NOW));
        assert_eq!(parse_time("2026-11-22T15:02:00+01:00", NOW), Ok(NOW));
        assert_eq!(parse_time("2026-11-22T14:02:00.250Z", NOW), Ok(NOW + 250));
    }

    #[test]
    fn ages_count_back_from_now() {
        assert_eq!(parse_time("10m", NOW), Ok(NOW - 600_000));
        assert_eq!(parse_time("2h", NOW), Ok(NOW - 7_200_000));
        assert_eq!(parse_time("90s", NOW), Ok(NOW - 90_000));
        assert_eq!(parse_time("3d", NOW), Ok(NOW - 3 * 86_400_000));
        assert!(parse_time("100000h", 1_000).is_err());
    }

    #[test]
    fn unix_ms_with_at() {
        assert_eq!(parse_time("@1795356120000", 0), Ok(NOW));
        assert!(parse_time("@-5", NOW).is_err());
        assert!(parse_time("@soon", NOW).is_err());
    }

    #[test]
    fn garbage_is_refused_with_the_accepted_forms() {
        for bad in ["", "yesterday", "10", "2026-11-22", "14:02", "d", "10x"] {
            let e = parse_time(bad, NOW).expect_err(bad);
            assert!(e.contains("RFC 3339") || e.contains('@'), "{bad}: {e}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(rfc3339(NOW + 999), "2026-11-22T14:02:00Z");
        assert_eq!(rfc3339(0), "-");
        assert_eq!(
            rfc3339_ms(NOW + 5).as_deref(),
            Some("2026-11-22T14:02:00.005Z")
        );
        assert_eq!(rfc3339_ms(0), None);
        assert_eq!(age(NOW, NOW - 12_400), "12s ago");
        assert_eq!(age(NOW, NOW - 5 * 60_000 - 1), "5m ago");
        assert_eq!(age(NOW, NOW - 3 * 3_600_000), "3h ago");
        assert_eq!(age(NOW, NOW - 50 * 3_600_000), "2d ago");
        assert_eq!(age(NOW, 0), "never");
        assert_eq!(age(NOW, NOW + 3_000), "in 3s");
        assert_eq!(age(NOW, NOW), "0s ago");
    }
}
