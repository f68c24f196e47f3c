//! Maintenance windows for the `periodic` strategy, as pure functions of the
//! time: whether a moment is inside one, and when the next one opens. A
//! window is days of the week, a local start time and a length, in a time
//! zone (an IANA name read from the system's zoneinfo, `UTC`, or
//! `localtime`); a window may run past midnight into the next day. Daylight
//! saving is the zone's: a window at 02:30 on the night the clocks skip from
//! 02:00 to 03:00 starts at 03:30, shifted by the gap (RFC 5545's and
//! Temporal's "compatible" rule).

use anyhow::{ensure, Context, Result};
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

/// The zone named `name`: an IANA name, `UTC`, or `localtime` (the system's).
pub fn zone(name: &str) -> Result<TimeZone> {
    match name {
        "localtime" => Ok(TimeZone::system()),
        "UTC" | "utc" => Ok(TimeZone::UTC),
        _ => TimeZone::get(name).with_context(|| format!("unknown time zone {name:?}")),
    }
}

/// One maintenance window (`[[periodic.download]]` or `[[periodic.reboot]]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    #[serde(deserialize_with = "days")]
    days: Vec<Weekday>,
    #[serde(deserialize_with = "start")]
    start: (i8, i8),
    #[serde(deserialize_with = "length")]
    length: u32,
}

impl Window {
    /// A window on `days` from `hour:minute` for `length_minutes`.
    pub fn new(days: Vec<Weekday>, hour: i8, minute: i8, length_minutes: u32) -> Window {
        Window { days, start: (hour, minute), length: length_minutes }
    }

    /// Its length in minutes.
    pub fn length_minutes(&self) -> u32 {
        self.length
    }
}

fn days<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Weekday>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    if names.is_empty() {
        return Err(serde::de::Error::custom("a window needs at least one day"));
    }
    names.iter().map(|n| weekday(n).map_err(serde::de::Error::custom)).collect()
}

fn weekday(name: &str) -> Result<Weekday, String> {
    let all = [
        ("mon", Weekday::Monday),
        ("tue", Weekday::Tuesday),
        ("wed", Weekday::Wednesday),
        ("thu", Weekday::Thursday),
        ("fri", Weekday::Friday),
        ("sat", Weekday::Saturday),
        ("sun", Weekday::Sunday),
    ];
    let lower = name.to_ascii_lowercase();
    all.iter()
        .find(|(short, w)| lower == *short || lower == format!("{w:?}").to_ascii_lowercase())
        .map(|(_, w)| *w)
        .ok_or_else(|| format!("{name:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn start<'de, D: Deserializer<'de>>(d: D) -> Result<(i8, i8), D::Error> {
    let s = String::deserialize(d)?;
    let bad = || serde::de::Error::custom(format!("start {s:?} is not HH:MM (00:00 to 23:59)"));
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok((h, m))
}

fn length<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    let secs = crate::fleet::waves::parse_duration(&s).map_err(serde::de::Error::custom)?;
    if !(60..=7 * 86_400).contains(&secs) {
        return Err(serde::de::Error::custom(format!("length {s:?} must be at least 1m and at most 7 days")));
    }
    Ok((secs / 60) as u32)
}

/// Windows in one time zone.
#[derive(Clone, Debug)]
pub struct Windows {
    zone_name: String,
    zone: TimeZone,
    windows: Vec<Window>,
}

impl PartialEq for Windows {
    fn eq(&self, other: &Self) -> bool {
        self.zone_name == other.zone_name && self.windows == other.windows
    }
}

impl Windows {
    /// `windows` in the zone `zone_name`.
    pub fn new(zone_name: &str, windows: Vec<Window>) -> Result<Windows> {
        ensure!(!windows.is_empty(), "no windows");
        Ok(Windows { zone_name: zone_name.to_string(), zone: zone(zone_name)?, windows })
    }

    /// The windows.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// The zone's name.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The opening instants (unix seconds) of every window on `date` (local).
    fn openings(&self, date: Date) -> impl Iterator<Item = (i64, &Window)> + '_ {
        self.windows.iter().filter(move |w| w.days.contains(&date.weekday())).filter_map(move |w| {
            let local = date.at(w.start.0, w.start.1, 0, 0);
            // A start inside a DST gap is shifted by the gap (jiff's compatible rule).
            local.to_zoned(self.zone.clone()).ok().map(|z| (z.timestamp().as_second(), w))
        })
    }

    fn local_date(&self, t: i64) -> Date {
        Timestamp::from_second(t).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned(self.zone.clone()).date()
    }

    /// Whether `now` is inside a window; if so, when that window closes.
    pub fn open_until(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let t = now.unix_timestamp();
        let today = self.local_date(t);
        // A window opened up to 7 days ago may still be open.
        (0..=7)
            .filter_map(|k| today.checked_sub(jiff::Span::new().days(k)).ok())
            .flat_map(|d| self.openings(d).collect::<Vec<_>>())
            .filter(|(open, w)| *open <= t && t < open + i64::from(w.length) * 60)
            .map(|(open, w)| open + i64::from(w.length) * 60)
            .max()
            .and_then(|close| OffsetDateTime::from_unix_timestamp(close).ok())
    }

    /// When the next window opens after `now` (within the next 8 days).
    pub fn next_open(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let t = now.unix_timestamp();
        let today = self.local_date(t);
        (0..=8)
            .filter_map(|k| today.checked_add(jiff::Span::new().days(k)).ok())
            .flat_map(|d| self.openings(d).map(|(o, _)| o).collect::<Vec<_>>())
            .filter(|open| *open > t)
            .min()
            .and_then(|o| OffsetDateTime::from_unix_timestamp(o).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn windows(tz: &str, toml_text: &str) -> Windows {
        #[derive(Deserialize)]
        struct W {
            w: Vec<Window>,
        }
        let w: W = toml::from_str(toml_text).unwrap();
        Windows::new(tz, w.w).unwrap()
    }

    #[test]
    fn inside_outside_and_next_opening() {
        // Saturday and Sunday 22:00 for 3 hours, in UTC: runs past midnight.
        let w = windows("UTC", "[[w]]\ndays = [\"Sat\", \"sunday\"]\nstart = \"22:00\"\nlength = \"3h\"\n");
        // 2026-12-05 is a Saturday.
        let rows = [
            ("Saturday 21:59", datetime!(2026-12-05 21:59 UTC), None, Some(datetime!(2026-12-05 22:00 UTC))),
            ("Saturday 22:00", datetime!(2026-12-05 22:00 UTC), Some(datetime!(2026-12-06 01:00 UTC)), None),
            (
                "Sunday 00:30, past midnight",
                datetime!(2026-12-06 00:30 UTC),
                Some(datetime!(2026-12-06 01:00 UTC)),
                None,
            ),
            ("Sunday 01:00, closed", datetime!(2026-12-06 01:00 UTC), None, Some(datetime!(2026-12-06 22:00 UTC))),
            (
                "Monday 00:59, Sunday's window",
                datetime!(2026-12-07 00:59 UTC),
                Some(datetime!(2026-12-07 01:00 UTC)),
                None,
            ),
            ("Wednesday", datetime!(2026-12-09 12:00 UTC), None, Some(datetime!(2026-12-12 22:00 UTC))),
        ];
        for (what, now, open_until, next) in rows {
            assert_eq!(w.open_until(now), open_until, "{what}");
            if let Some(next) = next {
                assert_eq!(w.next_open(now), Some(next), "{what}");
            }
        }
    }

    #[test]
    fn time_zones_and_daylight_saving_are_the_zones() {
        // 03:00 Europe/Berlin is 02:00 UTC in winter, 01:00 UTC in summer.
        let w = windows("Europe/Berlin", "[[w]]\ndays = [\"Sun\"]\nstart = \"03:00\"\nlength = \"1h\"\n");
        assert!(w.open_until(datetime!(2026-12-06 02:30 UTC)).is_some(), "winter");
        assert!(w.open_until(datetime!(2026-12-06 01:30 UTC)).is_none(), "winter, an hour early");
        assert!(w.open_until(datetime!(2026-07-05 01:30 UTC)).is_some(), "summer");
        assert!(w.open_until(datetime!(2026-07-05 02:30 UTC)).is_none(), "summer, an hour late");
        // 2026-03-29: clocks go from 02:00 to 03:00 in Berlin; a 02:30 window
        // is shifted by the gap to 03:30 local (01:30 UTC).
        let gap = windows("Europe/Berlin", "[[w]]\ndays = [\"Sun\"]\nstart = \"02:30\"\nlength = \"30m\"\n");
        assert_eq!(gap.next_open(datetime!(2026-03-28 12:00 UTC)), Some(datetime!(2026-03-29 01:30 UTC)));
        // The same window in New York opens at another instant.
        let ny = windows("America/New_York", "[[w]]\ndays = [\"Sun\"]\nstart = \"03:00\"\nlength = \"1h\"\n");
        assert_eq!(ny.next_open(datetime!(2026-12-05 12:00 UTC)), Some(datetime!(2026-12-06 08:00 UTC)));
        assert!(zone("Mars/Olympus").is_err());
        assert!(zone("localtime").is_ok());
    }
}
