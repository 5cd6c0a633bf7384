//! Times on the command line: RFC 3339 UTC, µs since the epoch, or "this long ago".

use super::CliError;
use super::conn::now_us;

/// Longest duration accepted (`--ttl`, `--since 30d`): ten years.
pub const DURATION_S_MAX: u64 = 10 * 366 * 24 * 3600;

/// Parses `90s`, `15m`, `1h`, `7d` (or bare seconds) into seconds.
pub fn parse_duration_s(text: &str) -> Result<u64, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "{text:?} is not a duration (e.g. 90s, 15m, 1h, 7d)"
        ))
    };
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let seconds = value.checked_mul(scale).ok_or_else(bad)?;
    if seconds > DURATION_S_MAX {
        return Err(CliError::Usage(format!(
            "{text:?} is longer than ten years"
        )));
    }
    Ok(seconds)
}

/// Parses a point in time: µs since the epoch (all digits, 13+ of them), RFC 3339 UTC
/// (`2026-01-01T00:00:00Z`, fraction allowed), or a duration ago (`10m`).
pub fn parse_time_us(text: &str) -> Result<u64, CliError> {
    if text.len() >= 13 && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| CliError::Usage(format!("{text:?} is not a time")));
    }
    if text.contains('T') {
        return parse_rfc3339_us(text)
            .ok_or_else(|| CliError::Usage(format!("{text:?} is not an RFC 3339 UTC time")));
    }
    let ago_s = parse_duration_s(text)?;
    Ok(now_us().saturating_sub(ago_s * 1_000_000))
}

fn parse_rfc3339_us(text: &str) -> Option<u64> {
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (time, fraction) = match time.split_once('.') {
        Some((time, fraction)) => (time, Some(fraction)),
        None => (time, None),
    };
    let mut clock = time.splitn(3, ':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let micros = match fraction {
        Some(digits)
            if !digits.is_empty()
                && digits.len() <= 9
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let padded = format!("{digits:0<6}");
            padded[..6].parse::<i64>().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds * 1_000_000 + micros).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `time_us` as RFC 3339 UTC with milliseconds.
pub fn format_us(time_us: u64) -> String {
    let seconds = (time_us / 1_000_000) as i64;
    let millis = (time_us % 1_000_000) / 1000;
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let in_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_through_the_protocol_example() {
        assert_eq!(
            parse_time_us("2026-01-01T00:00:00Z").unwrap(),
            1_767_225_600_000_000
        );
        assert_eq!(format_us(1_767_225_600_000_000), "2026-01-01T00:00:00.000Z");
        assert_eq!(
            parse_time_us("2026-01-01T00:00:00.5Z").unwrap(),
            1_767_225_600_500_000
        );
        assert_eq!(
            parse_time_us("1767225600000000").unwrap(),
            1_767_225_600_000_000
        );
        assert!(parse_time_us("2026-13-01T00:00:00Z").is_err());
        assert!(parse_time_us("2026-01-01T00:00:00").is_err());
    }

    #[test]
    fn durations_have_units_and_a_bound() {
        assert_eq!(parse_duration_s("90s").unwrap(), 90);
        assert_eq!(parse_duration_s("1h").unwrap(), 3600);
        assert_eq!(parse_duration_s("7d").unwrap(), 7 * 86_400);
        assert_eq!(parse_duration_s("5").unwrap(), 5);
        assert!(parse_duration_s("1y").is_err());
        assert!(parse_duration_s("").is_err());
        assert!(parse_duration_s("4000d").is_err(), "above DURATION_S_MAX");
    }
}
