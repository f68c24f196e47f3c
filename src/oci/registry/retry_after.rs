//! `Retry-After` values (RFC 9110 §10.2.3): a number of seconds, or an
//! HTTP-date in any of the three forms recipients must accept (IMF-fixdate,
//! the obsolete RFC 850 form and asctime), turned into a delay from now.

use std::time::Duration;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// `Sun, 06 Nov 1994 08:49:37 GMT`
const IMF_FIXDATE: &[BorrowedFormatItem<'static>] =
    format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT");
/// `Sunday, 06-Nov-94 08:49:37 GMT`, once its year has been given four digits.
const RFC850_FULL_YEAR: &[BorrowedFormatItem<'static>] =
    format_description!("[weekday], [day]-[month repr:short]-[year] [hour]:[minute]:[second] GMT");
/// `Sun Nov  6 08:49:37 1994`
const ASCTIME: &[BorrowedFormatItem<'static>] =
    format_description!("[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]");

/// The delay a `Retry-After` value asks for, as of `now`: a date in the past
/// is no delay. `None` when the value is neither form.
pub fn delay(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit is still "a long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let when = http_date(value)?;
    let ahead = when - now;
    Some(if ahead.is_negative() { Duration::ZERO } else { ahead.unsigned_abs() })
}

/// Parses an HTTP-date (always UTC).
fn http_date(value: &str) -> Option<OffsetDateTime> {
    let parsed = PrimitiveDateTime::parse(value, IMF_FIXDATE)
        .ok()
        .or_else(|| PrimitiveDateTime::parse(&rfc850_with_full_year(value)?, RFC850_FULL_YEAR).ok())
        .or_else(|| PrimitiveDateTime::parse(value, ASCTIME).ok())?;
    Some(parsed.assume_utc())
}

/// An RFC 850 date with its two-digit year widened the way RFC 9110 says: a
/// year that would be more than 50 years in the future is in the past century.
fn rfc850_with_full_year(value: &str) -> Option<String> {
    let (date, time) = value.split_once(' ')?.1.split_once(' ')?;
    let mut parts = date.splitn(3, '-');
    let (day, month, yy) = (parts.next()?, parts.next()?, parts.next()?);
    if yy.len() != 2 {
        return None;
    }
    let yy: i32 = yy.parse().ok()?;
    let this_year = OffsetDateTime::now_utc().year();
    let mut year = this_year - this_year.rem_euclid(100) + yy;
    if year > this_year + 50 {
        year -= 100;
    }
    let weekday = value.split_once(' ')?.0;
    Some(format!("{weekday} {day}-{month}-{year} {time}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(1994-11-06 08:49:30 UTC);

    #[test]
    fn seconds() {
        assert_eq!(delay("120", NOW), Some(Duration::from_secs(120)));
        assert_eq!(delay(" 0 ", NOW), Some(Duration::ZERO));
        assert_eq!(delay("99999999999999999999999", NOW), Some(Duration::from_secs(u64::MAX)));
        assert_eq!(delay("-5", NOW), None);
        assert_eq!(delay("1.5", NOW), None);
        assert_eq!(delay("", NOW), None);
    }

    #[test]
    fn the_three_http_date_forms() {
        let seven = Some(Duration::from_secs(7));
        assert_eq!(delay("Sun, 06 Nov 1994 08:49:37 GMT", NOW), seven);
        assert_eq!(delay("Sunday, 06-Nov-94 08:49:37 GMT", NOW), seven);
        assert_eq!(delay("Sun Nov  6 08:49:37 1994", NOW), seven);
        // A day later.
        assert_eq!(delay("Mon, 07 Nov 1994 08:49:30 GMT", NOW), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn past_dates_are_no_delay_and_junk_is_ignored() {
        assert_eq!(delay("Sun, 06 Nov 1994 08:00:00 GMT", NOW), Some(Duration::ZERO));
        assert_eq!(delay("Sun, 06 Nov 1994 08:49:37 PST", NOW), None);
        assert_eq!(delay("tomorrow", NOW), None);
        assert_eq!(delay("Sun, 32 Nov 1994 08:49:37 GMT", NOW), None);
    }
}
