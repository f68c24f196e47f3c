//! Rollout waves: when a host may take a release, as a pure function of its
//! position in the fleet, the release's schedule and the time.
//!
//! A schedule is a start time and a list of waves `AFTER=PERCENT%`
//! (`1h=1%,4h=5%,1d=15%,3d=100%`): by `AFTER` past the start, `PERCENT` of
//! the fleet may have the release. Between two waves the share rises
//! linearly (hosts of a wave are spread evenly over it, as Bottlerocket's
//! updog spreads them), so no wave boundary sends a burst of hosts at once.
//! A wave at `0` lets its share go at the start. The last wave must reach
//! 100 %, so every host converges.
//!
//! A host's position is a number in [0, 1) from a hash of its machine-id and
//! the image digest: stable for one release, different between releases (so
//! the same hosts are not always first). The host may take the release once
//! the share passes its position.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

/// One wave: by `after` past the start, `percent` of the fleet may update.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Wave {
    /// Seconds after the start.
    pub after_seconds: u64,
    /// The share of the fleet, in percent (0–100), that may have the release by then.
    pub percent: f64,
}

/// The waves of a release, validated: times strictly rising, shares never
/// falling, the last at 100 %.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Wave>", into = "Vec<Wave>")]
pub struct Waves(Vec<Wave>);

impl Waves {
    /// Validates `waves`.
    pub fn new(waves: Vec<Wave>) -> Result<Waves> {
        ensure!(!waves.is_empty(), "no waves");
        let mut prev: Option<Wave> = None;
        for w in &waves {
            ensure!(
                w.percent.is_finite() && (0.0..=100.0).contains(&w.percent),
                "wave share {}% is not between 0% and 100%",
                w.percent
            );
            if let Some(p) = prev {
                ensure!(
                    w.after_seconds > p.after_seconds,
                    "waves must be in time order: {} does not come after {}",
                    format_duration(w.after_seconds),
                    format_duration(p.after_seconds)
                );
                ensure!(w.percent >= p.percent, "a wave's share cannot fall: {}% after {}%", w.percent, p.percent);
            }
            prev = Some(*w);
        }
        let last = waves.last().expect("not empty");
        ensure!(
            last.percent == 100.0,
            "the last wave must reach 100% (it reaches {}%), so that every host converges",
            last.percent
        );
        Ok(Waves(waves))
    }

    /// The waves, in order.
    pub fn as_slice(&self) -> &[Wave] {
        &self.0
    }

    /// The share of the fleet (0.0–1.0) that may have the release `elapsed`
    /// seconds after the start (none before it).
    pub fn share(&self, elapsed: f64) -> f64 {
        if elapsed < 0.0 {
            return 0.0;
        }
        let (mut t0, mut p0) = (0.0, 0.0);
        for w in &self.0 {
            let (t1, p1) = (w.after_seconds as f64, w.percent / 100.0);
            if t1 == 0.0 {
                p0 = p1;
                continue;
            }
            if elapsed < t1 {
                return p0 + (p1 - p0) * (elapsed - t0) / (t1 - t0);
            }
            (t0, p0) = (t1, p1);
        }
        p0
    }

    /// The first moment (seconds after the start) the share exceeds `position`.
    pub fn reached_after(&self, position: f64) -> f64 {
        let (mut t0, mut p0) = (0.0, 0.0);
        for w in &self.0 {
            let (t1, p1) = (w.after_seconds as f64, w.percent / 100.0);
            if t1 == 0.0 {
                p0 = p1;
                continue;
            }
            if position < p0 {
                return t0;
            }
            if position < p1 {
                return t0 + (position - p0) / (p1 - p0) * (t1 - t0);
            }
            (t0, p0) = (t1, p1);
        }
        t0
    }
}

impl TryFrom<Vec<Wave>> for Waves {
    type Error = anyhow::Error;
    fn try_from(v: Vec<Wave>) -> Result<Waves> {
        Waves::new(v)
    }
}

impl From<Waves> for Vec<Wave> {
    fn from(w: Waves) -> Vec<Wave> {
        w.0
    }
}

/// Parses `AFTER=PERCENT%[,AFTER=PERCENT%...]` (`--waves`).
impl FromStr for Waves {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Waves> {
        let mut waves = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (after, pct) =
                part.split_once('=').with_context(|| format!("wave {part:?} is not AFTER=PERCENT% (e.g. 1h=5%)"))?;
            let after = parse_duration(after.trim()).with_context(|| format!("wave {part:?}"))?;
            let pct = pct.trim();
            let number = pct.strip_suffix('%').with_context(|| format!("wave {part:?}: the share needs a %"))?;
            let percent: f64 = number.trim().parse().with_context(|| format!("wave {part:?}: {pct:?} is no share"))?;
            waves.push(Wave { after_seconds: after, percent });
        }
        Waves::new(waves).with_context(|| format!("waves {s:?}"))
    }
}

impl fmt::Display for Waves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.0.iter().map(|w| format!("{}={}%", format_duration(w.after_seconds), w.percent)).collect();
        f.write_str(&parts.join(","))
    }
}

/// Parses a duration: a number and a unit (`s`, `m`, `h`, `d`, `w`), or
/// several (`1h30m`); `0` alone is zero.
pub fn parse_duration(s: &str) -> Result<u64> {
    if s == "0" {
        return Ok(0);
    }
    ensure!(!s.is_empty(), "empty duration");
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => bail!("duration {s:?}: {c:?} is no unit (s, m, h, d, w)"),
        };
        ensure!(!number.is_empty(), "duration {s:?}: a unit without a number");
        let n: u64 = number.parse().with_context(|| format!("duration {s:?}"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .with_context(|| format!("duration {s:?} is too long"))?;
        number.clear();
    }
    ensure!(number.is_empty(), "duration {s:?}: {number} has no unit (s, m, h, d, w)");
    Ok(total)
}

/// Writes seconds the way [`parse_duration`] reads them (`1d2h`, `90s` → `1m30s`).
pub fn format_duration(mut secs: u64) -> String {
    if secs == 0 {
        return "0".into();
    }
    let mut out = String::new();
    for (unit, len) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// `t` in RFC 3339, UTC, to the second (for messages and status).
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0).unwrap_or(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// A release's schedule: when it starts and how it spreads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    /// When the first wave starts.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// The waves.
    pub waves: Waves,
}

/// A host's place in the fleet for one release: a number in [0, 1).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Position(f64);

impl Position {
    /// From a hash of the machine-id and the image digest: stable for one
    /// release, independent between releases.
    pub fn of(machine_id: &str, image_digest: &str) -> Position {
        let h = Sha256::new()
            .chain_update(b"hostctl rollout position v1\0")
            .chain_update(machine_id.trim().as_bytes())
            .chain_update(b"\0")
            .chain_update(image_digest.as_bytes())
            .finalize();
        let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
        Position((n >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// A given position (tests, benchmarks); clamped into [0, 1).
    pub fn new(v: f64) -> Position {
        Position(v.clamp(0.0, 1.0 - f64::EPSILON))
    }

    /// The number.
    pub fn value(self) -> f64 {
        self.0
    }
}

/// Whether a host may take a release now, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "camelCase")]
pub enum Eligibility {
    /// No valid rollout metadata: the release is not released to this host.
    NotReleased,
    /// The release has not started yet.
    #[serde(rename_all = "camelCase")]
    BeforeStart {
        /// When it starts.
        #[serde(with = "time::serde::rfc3339")]
        start: OffsetDateTime,
        /// When this host's turn comes.
        #[serde(with = "time::serde::rfc3339")]
        eligible_at: OffsetDateTime,
    },
    /// Started, but this host's turn has not come.
    #[serde(rename_all = "camelCase")]
    Waiting {
        /// When it comes.
        #[serde(with = "time::serde::rfc3339")]
        eligible_at: OffsetDateTime,
        /// The share of the fleet eligible now (0–1).
        share: f64,
    },
    /// This host may take it.
    #[serde(rename_all = "camelCase")]
    Eligible {
        /// Since when.
        #[serde(with = "time::serde::rfc3339")]
        since: OffsetDateTime,
        /// The share of the fleet eligible now (0–1).
        share: f64,
    },
}

impl Eligibility {
    /// Whether the host may take the release.
    pub fn is_eligible(&self) -> bool {
        matches!(self, Eligibility::Eligible { .. })
    }
}

impl fmt::Display for Eligibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |t: &OffsetDateTime| format_time(*t);
        match self {
            Eligibility::NotReleased => f.write_str("not released (no valid rollout metadata)"),
            Eligibility::BeforeStart { start, eligible_at } => {
                write!(f, "the rollout starts at {}; this host's turn is at {}", t(start), t(eligible_at))
            }
            Eligibility::Waiting { eligible_at, share } => write!(
                f,
                "{:.2}% of the fleet may update now; this host's turn is at {}",
                share * 100.0,
                t(eligible_at)
            ),
            Eligibility::Eligible { since, share } => {
                write!(f, "eligible since {} ({:.2}% of the fleet may update now)", t(since), share * 100.0)
            }
        }
    }
}

/// The pure decision: may the host at `position` take a release with
/// `schedule` (none: no valid metadata) at `now`?
pub fn eligibility(position: Position, schedule: Option<&Schedule>, now: OffsetDateTime) -> Eligibility {
    let Some(s) = schedule else { return Eligibility::NotReleased };
    let after = s.waves.reached_after(position.value());
    let eligible_at = s.start + Duration::seconds_f64(after);
    let elapsed = (now - s.start).as_seconds_f64();
    let share = s.waves.share(elapsed);
    if now < s.start {
        Eligibility::BeforeStart { start: s.start, eligible_at }
    } else if position.value() < share || now >= eligible_at {
        Eligibility::Eligible { since: eligible_at.max(s.start), share }
    } else {
        Eligibility::Waiting { eligible_at, share }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn schedule(start: OffsetDateTime, waves: &str) -> Schedule {
        Schedule { start, waves: waves.parse().unwrap() }
    }

    #[test]
    fn wave_specs_parse_and_print_back() {
        for (spec, back) in [
            ("1h=1%,4h=5%,1d=15%,3d=100%", "1h=1%,4h=5%,1d=15%,3d=100%"),
            ("0=10%, 90m=100%", "0=10%,1h30m=100%"),
            ("1h30m=50%,1w=100%", "1h30m=50%,1w=100%"),
            ("2h=100%", "2h=100%"),
        ] {
            assert_eq!(spec.parse::<Waves>().unwrap().to_string(), back, "{spec}");
        }
    }

    #[test]
    fn bad_wave_specs_are_refused_with_the_reason() {
        for (spec, why) in [
            ("", "not AFTER=PERCENT%"),
            ("1h=5", "needs a %"),
            ("1h=5%", "must reach 100%"),
            ("1h=50%,30m=100%", "time order"),
            ("1h=50%,1h=100%", "time order"),
            ("1h=60%,2h=50%,3h=100%", "cannot fall"),
            ("1h=120%", "not between"),
            ("1x=100%", "no unit"),
            ("h=100%", "without a number"),
            ("10=100%", "has no unit"),
            ("1h=abc%", "no share"),
            ("1h=-1%,2h=100%", "not between"),
            ("1h=NaN%,2h=100%", "not between"),
        ] {
            let err = format!("{:#}", spec.parse::<Waves>().unwrap_err());
            assert!(err.contains(why), "{spec:?}: {err}");
        }
    }

    #[test]
    fn share_rises_linearly_between_waves() {
        let w: Waves = "1h=1%,4h=5%,1d=15%,3d=100%".parse().unwrap();
        let cases = [
            (-1.0, 0.0),
            (0.0, 0.0),
            (1800.0, 0.005),
            (3600.0, 0.01),
            (3600.0 * 2.5, 0.03),
            (4.0 * 3600.0, 0.05),
            (86_400.0, 0.15),
            (2.0 * 86_400.0, 0.575),
            (3.0 * 86_400.0, 1.0),
            (30.0 * 86_400.0, 1.0),
        ];
        for (t, want) in cases {
            assert!((w.share(t) - want).abs() < 1e-9, "share({t}) = {} != {want}", w.share(t));
        }
        // reached_after is the inverse of share.
        for p in [0.0, 0.004, 0.01, 0.2, 0.9999] {
            let t = w.reached_after(p);
            assert!((w.share(t) - p).abs() < 1e-9, "p {p}: t {t}, share {}", w.share(t));
        }
        let w: Waves = "0=10%,1h=100%".parse().unwrap();
        assert!((w.share(0.0) - 0.1).abs() < 1e-12);
        assert_eq!(w.reached_after(0.05), 0.0);
        assert!((w.reached_after(0.55) - 1800.0).abs() < 1e-6);
    }

    #[test]
    fn positions_are_stable_per_release_and_spread() {
        let a = Position::of("0123456789abcdef0123456789abcdef", "sha256:aa");
        assert_eq!(a, Position::of("0123456789abcdef0123456789abcdef\n", "sha256:aa"), "machine-id's newline ignored");
        assert_ne!(a, Position::of("0123456789abcdef0123456789abcdef", "sha256:bb"), "another release, another place");
        let n = 10_000;
        let below = (0..n).filter(|i| Position::of(&format!("host-{i}"), "sha256:aa").value() < 0.25).count();
        assert!((below as f64 / n as f64 - 0.25).abs() < 0.02, "{below}");
    }

    /// The decision table: (what, position, schedule, now, expected).
    #[test]
    fn eligibility_table() {
        let start = datetime!(2026-12-07 10:00 UTC);
        let waves = "1h=1%,4h=5%,1d=15%,3d=100%";
        let s = schedule(start, waves);
        // The same instant written in another time zone is the same schedule.
        let s_berlin = schedule(datetime!(2026-12-07 11:00 +01:00), waves);
        let s_la = schedule(datetime!(2026-12-07 02:00 -08:00), waves);
        let at = |p: f64, h: f64| (Position::new(p), start + Duration::seconds_f64(h * 3600.0));
        type Expect = fn(&Eligibility) -> bool;
        let eligible: Expect = |e| e.is_eligible();
        let waiting: Expect = |e| matches!(e, Eligibility::Waiting { .. });
        let before: Expect = |e| matches!(e, Eligibility::BeforeStart { .. });
        let not_released: Expect = |e| matches!(e, Eligibility::NotReleased);
        type Row<'a> = (&'a str, (Position, OffsetDateTime), Option<&'a Schedule>, Expect);
        let rows: Vec<Row> = vec![
            ("no metadata, any time", at(0.0, 100.0), None, not_released),
            ("before start, first host", at(0.0, -1.0), Some(&s), before),
            ("before start by one second", (Position::new(0.0), start - Duration::SECOND), Some(&s), before),
            ("at start, position 0", at(0.0, 0.0), Some(&s), eligible),
            ("mid first wave, inside its share", at(0.004, 0.5), Some(&s), eligible),
            ("mid first wave, outside its share", at(0.006, 0.5), Some(&s), waiting),
            ("mid second wave, inside", at(0.02, 2.0), Some(&s), eligible),
            ("mid second wave, outside", at(0.04, 2.0), Some(&s), waiting),
            ("mid last wave, inside", at(0.5, 48.0), Some(&s), eligible),
            ("mid last wave, outside", at(0.6, 48.0), Some(&s), waiting),
            ("after the last wave, last host", at(0.999_999, 72.0), Some(&s), eligible),
            ("long after the last wave", at(0.999_999, 10_000.0), Some(&s), eligible),
            // Clock skew: each host decides on its own clock. A host whose clock
            // is 10 minutes slow sees the start 10 minutes late (and its turn);
            // a fast one sees them early. Neither takes a release before its
            // own clock says its turn came, and both converge.
            ("clock 10 min slow at the true start", at(0.0, -10.0 / 60.0), Some(&s), before),
            ("clock 10 min fast before the true start", at(0.0, 10.0 / 60.0), Some(&s), eligible),
            ("clock 10 min slow at its true turn", at(0.005, 0.5 - 10.0 / 60.0), Some(&s), waiting),
            ("clock 10 min slow, 10 min later", at(0.005, 0.5 + 1e-6), Some(&s), eligible),
            // Time zones: the start's offset does not change the instant.
            ("start given in +01:00, mid wave inside", at(0.004, 0.5), Some(&s_berlin), eligible),
            ("start given in +01:00, mid wave outside", at(0.006, 0.5), Some(&s_berlin), waiting),
            ("start given in -08:00, before start", at(0.0, -0.5), Some(&s_la), before),
            ("start given in -08:00, after last", at(0.9, 73.0), Some(&s_la), eligible),
        ];
        for (what, (pos, now), sched, expect) in rows {
            let e = eligibility(pos, sched, now);
            assert!(expect(&e), "{what}: got {e:?}");
            // The same decision whatever zone `now` is written in.
            let now_tokyo = now.to_offset(time::macros::offset!(+9));
            assert_eq!(eligibility(pos, sched, now_tokyo), e, "{what}: depends on now's zone");
        }
        // The moment given for a waiting host is when it becomes eligible.
        let (pos, now) = at(0.03, 2.0);
        let Eligibility::Waiting { eligible_at, .. } = eligibility(pos, Some(&s), now) else { panic!() };
        assert_eq!(eligible_at, start + Duration::hours(2) + Duration::minutes(30));
        assert!(!eligibility(pos, Some(&s), eligible_at - Duration::SECOND).is_eligible());
        assert!(eligibility(pos, Some(&s), eligible_at).is_eligible());
    }
}
