//! Deploy windows and freeze periods.
//!
//! Allow windows: `Tue-Thu 10:00-14:00 UTC`, `Mon,Wed 09:30-17:00 +02:00`,
//! `daily 08:00-20:00`, `Mon-Fri 09:00-17:00 America/New_York`. The zone is
//! `UTC`, a fixed offset, or a named IANA zone whose daylight saving time is
//! followed (a window at 09:00 in New York is 09:00 there in July and in
//! January); without one the arena's `windows.timezone` applies.
//!
//! Freezes: a named period from the calendar (`black-friday-week`,
//! `december-holidays`), a yearly day range `12-20..12-26` (may wrap the new
//! year), or a dated range `2026-11-23..2026-11-30`. Ranges include both days.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveTime, Utc, Weekday};
use serde::{Serialize, Serializer};

/// Named freeze periods computed per year.
pub const NAMED_FREEZES: &[(&str, &str)] = &[
    (
        "black-friday-week",
        "Monday of Thanksgiving week through Cyber Monday (US, computed per year)",
    ),
    ("december-holidays", "December 20 through December 26"),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseWindowError {
    pub message: String,
    pub hint: &'static str,
}

const ALLOW_HINT: &str = "write days, a time range and an optional zone, e.g. `Tue-Thu 10:00-14:00 UTC` or `Mon,Wed 09:00-17:00 +02:00`";
const FREEZE_HINT: &str = "write a named period (black-friday-week, december-holidays), a yearly range `12-20..12-26` or dates `2026-11-23..2026-11-30`";

fn allow_err(message: String) -> ParseWindowError {
    ParseWindowError {
        message,
        hint: ALLOW_HINT,
    }
}

fn freeze_err(message: String) -> ParseWindowError {
    ParseWindowError {
        message,
        hint: FREEZE_HINT,
    }
}

/// Where a window's or a freeze's wall clock is: a fixed offset from UTC,
/// or a named IANA zone with its daylight saving time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl Zone {
    pub const UTC: Zone = Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset"));
}

impl From<FixedOffset> for Zone {
    fn from(offset: FixedOffset) -> Self {
        Zone::Fixed(offset)
    }
}

impl Default for Zone {
    fn default() -> Self {
        Zone::UTC
    }
}

/// Parse a zone: `UTC`, `Z`, a fixed offset such as `+02:00`, or an IANA
/// name such as `America/New_York` or `Europe/Berlin`.
pub fn parse_zone(text: &str) -> Result<Zone, ParseWindowError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(Zone::UTC);
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => {
            return t.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
                allow_err(format!(
                    "unknown time zone `{t}`: use `UTC`, a fixed offset such as `+02:00`, \
                     or an IANA zone such as `America/New_York`"
                ))
            });
        }
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let (h, m): (i32, i32) = match (h.parse(), m.parse()) {
        (Ok(h), Ok(m)) if (0..=14).contains(&h) && (0..60).contains(&m) => (h, m),
        _ => return Err(allow_err(format!("`{t}` is not a UTC offset"))),
    };
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
        .map(Zone::Fixed)
        .ok_or_else(|| allow_err(format!("`{t}` is not a UTC offset")))
}

/// `at` as a wall-clock time in `zone`; `None` past the calendar's ends.
fn local_time(at: DateTime<Utc>, zone: Zone) -> Option<chrono::NaiveDateTime> {
    match zone {
        Zone::Fixed(offset) => at.naive_utc().checked_add_offset(offset),
        Zone::Named(tz) => Some(at.with_timezone(&tz).naive_local()),
    }
}

/// A recurring weekly window in which deploys are allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowWindow {
    text: String,
    days: [bool; 7],
    start: NaiveTime,
    end: NaiveTime,
    zone: Zone,
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Some(Weekday::Mon),
        "tue" | "tues" | "tuesday" => Some(Weekday::Tue),
        "wed" | "wednesday" => Some(Weekday::Wed),
        "thu" | "thurs" | "thursday" => Some(Weekday::Thu),
        "fri" | "friday" => Some(Weekday::Fri),
        "sat" | "saturday" => Some(Weekday::Sat),
        "sun" | "sunday" => Some(Weekday::Sun),
        _ => None,
    }
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    if s == "24:00" {
        return NaiveTime::from_hms_opt(23, 59, 59);
    }
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

impl AllowWindow {
    /// Parse a window; `default_zone` applies when the text names none.
    pub fn parse(text: &str, default_zone: impl Into<Zone>) -> Result<Self, ParseWindowError> {
        let default_zone = default_zone.into();
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (days_part, time_part, zone) = match parts.as_slice() {
            [d, t] => (*d, *t, default_zone),
            [d, t, z] => (*d, *t, parse_zone(z)?),
            _ => return Err(allow_err(format!("`{text}` is not a deploy window"))),
        };
        let mut days = [false; 7];
        if matches!(
            days_part.to_ascii_lowercase().as_str(),
            "daily" | "*" | "mon-sun"
        ) {
            days = [true; 7];
        } else {
            for item in days_part.split(',') {
                if let Some((a, b)) = item.split_once('-') {
                    let (Some(a), Some(b)) = (parse_weekday(a), parse_weekday(b)) else {
                        return Err(allow_err(format!("`{item}` is not a range of weekdays")));
                    };
                    let (a, b) = (a.num_days_from_monday(), b.num_days_from_monday());
                    let mut d = a;
                    loop {
                        days[d as usize] = true;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                } else {
                    let Some(d) = parse_weekday(item) else {
                        return Err(allow_err(format!("`{item}` is not a weekday")));
                    };
                    days[d.num_days_from_monday() as usize] = true;
                }
            }
        }
        let Some((start, end)) = time_part.split_once('-') else {
            return Err(allow_err(format!(
                "`{time_part}` is not a time range like 10:00-14:00"
            )));
        };
        let (Some(start), Some(end)) = (parse_time(start), parse_time(end)) else {
            return Err(allow_err(format!(
                "`{time_part}` is not a time range like 10:00-14:00"
            )));
        };
        if start >= end {
            return Err(allow_err(format!(
                "window `{time_part}` ends before it starts"
            )));
        }
        Ok(AllowWindow {
            text: text.to_string(),
            days,
            start,
            end,
            zone,
        })
    }

    /// Whether `at` falls inside the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let Some(local) = local_time(at, self.zone) else {
            return false;
        };
        let day = local.weekday().num_days_from_monday() as usize;
        let time = local.time();
        self.days[day] && time >= self.start && time < self.end
    }
}

impl fmt::Display for AllowWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for AllowWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A period in which no deploy may start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freeze {
    text: String,
    rule: FreezeRule,
    zone: Zone,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FreezeRule {
    BlackFridayWeek,
    /// Month/day to month/day, every year.
    Yearly {
        from: (u32, u32),
        to: (u32, u32),
    },
    Dated {
        from: NaiveDate,
        to: NaiveDate,
    },
}

fn parse_month_day(s: &str) -> Option<(u32, u32)> {
    let (m, d) = s.split_once('-')?;
    let (m, d): (u32, u32) = (m.parse().ok()?, d.parse().ok()?);
    // Validate against a leap year so 02-29 is accepted.
    NaiveDate::from_ymd_opt(2024, m, d)?;
    Some((m, d))
}

/// Black Friday: the day after the fourth Thursday of November.
pub fn black_friday(year: i32) -> NaiveDate {
    let first = NaiveDate::from_ymd_opt(year, 11, 1).expect("November 1st exists");
    let offset =
        (7 + Weekday::Thu.num_days_from_monday() - first.weekday().num_days_from_monday()) % 7;
    first + Duration::days(i64::from(offset) + 21 + 1)
}

impl Freeze {
    pub fn parse(text: &str, zone: impl Into<Zone>) -> Result<Self, ParseWindowError> {
        let zone = zone.into();
        let t = text.trim();
        let rule = match t {
            "black-friday-week" => FreezeRule::BlackFridayWeek,
            "december-holidays" => FreezeRule::Yearly {
                from: (12, 20),
                to: (12, 26),
            },
            _ => {
                let Some((a, b)) = t.split_once("..") else {
                    let known: Vec<&str> = NAMED_FREEZES.iter().map(|(n, _)| *n).collect();
                    return Err(freeze_err(format!(
                        "`{t}` is neither a named freeze ({}) nor a range",
                        known.join(", ")
                    )));
                };
                if let (Some(from), Some(to)) = (parse_month_day(a), parse_month_day(b)) {
                    FreezeRule::Yearly { from, to }
                } else if let (Ok(from), Ok(to)) = (
                    NaiveDate::parse_from_str(a, "%Y-%m-%d"),
                    NaiveDate::parse_from_str(b, "%Y-%m-%d"),
                ) {
                    if to < from {
                        return Err(freeze_err(format!("freeze `{t}` ends before it starts")));
                    }
                    FreezeRule::Dated { from, to }
                } else {
                    return Err(freeze_err(format!("`{t}` is not a range of days")));
                }
            }
        };
        Ok(Freeze {
            text: t.to_string(),
            rule,
            zone,
        })
    }

    /// The days (inclusive) this freeze covers in the year that `day` falls in,
    /// or that started the year before and wrap into it.
    fn covers(&self, day: NaiveDate) -> bool {
        match &self.rule {
            FreezeRule::BlackFridayWeek => {
                let bf = black_friday(day.year());
                let start = bf - Duration::days(4);
                let end = bf + Duration::days(3);
                day >= start && day <= end
            }
            FreezeRule::Yearly { from, to } => {
                let md = (day.month(), day.day());
                if from <= to {
                    md >= *from && md <= *to
                } else {
                    md >= *from || md <= *to
                }
            }
            FreezeRule::Dated { from, to } => day >= *from && day <= *to,
        }
    }

    /// Whether `at` falls inside the freeze.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        local_time(at, self.zone).is_some_and(|t| self.covers(t.date()))
    }
}

impl fmt::Display for Freeze {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Freeze {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn allow_window_matches_days_and_hours() {
        let w = AllowWindow::parse("Tue-Thu 10:00-14:00 UTC", utc()).unwrap();
        assert!(w.contains(at("2026-11-24T10:00:00Z"))); // Tuesday
        assert!(w.contains(at("2026-11-26T13:59:59Z"))); // Thursday
        assert!(!w.contains(at("2026-11-26T14:00:00Z")));
        assert!(!w.contains(at("2026-11-27T11:00:00Z"))); // Friday
        assert!(!w.contains(at("2026-11-23T11:00:00Z"))); // Monday
    }

    #[test]
    fn allow_window_honours_offsets() {
        let w = AllowWindow::parse("Mon 09:00-10:00 +02:00", utc()).unwrap();
        assert!(w.contains(at("2026-11-23T07:30:00Z")));
        assert!(!w.contains(at("2026-11-23T09:30:00Z")));
    }

    #[test]
    fn allow_window_rejects_garbage() {
        for bad in [
            "Tue-Thu",
            "Tue-Thu 14:00-10:00",
            "Funday 10:00-11:00",
            "Mon 10-11",
            "Mon 10:00-11:00 Mars/Base",
        ] {
            assert!(
                AllowWindow::parse(bad, utc()).is_err(),
                "{bad} should not parse"
            );
        }
    }

    #[test]
    fn black_friday_is_computed_per_year() {
        assert_eq!(
            black_friday(2025),
            NaiveDate::from_ymd_opt(2025, 11, 28).unwrap()
        );
        assert_eq!(
            black_friday(2026),
            NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
        );
        assert_eq!(
            black_friday(2027),
            NaiveDate::from_ymd_opt(2027, 11, 26).unwrap()
        );
    }

    #[test]
    fn freezes_cover_their_days() {
        let bf = Freeze::parse("black-friday-week", utc()).unwrap();
        assert!(bf.contains(at("2026-11-23T00:00:00Z")));
        assert!(bf.contains(at("2026-11-30T23:59:00Z"))); // Cyber Monday
        assert!(!bf.contains(at("2026-12-01T00:00:00Z")));
        assert!(!bf.contains(at("2026-11-22T23:59:00Z")));

        let dec = Freeze::parse("12-20..12-26", utc()).unwrap();
        assert!(dec.contains(at("2026-12-20T00:00:00Z")));
        assert!(dec.contains(at("2026-12-26T23:00:00Z")));
        assert!(!dec.contains(at("2026-12-27T00:00:00Z")));

        let wrap = Freeze::parse("12-30..01-02", utc()).unwrap();
        assert!(wrap.contains(at("2027-01-01T12:00:00Z")));
        assert!(!wrap.contains(at("2027-01-03T12:00:00Z")));

        let dated = Freeze::parse("2026-11-23..2026-11-25", utc()).unwrap();
        assert!(dated.contains(at("2026-11-24T12:00:00Z")));
        assert!(!dated.contains(at("2027-11-24T12:00:00Z")));
    }

    #[test]
    fn named_zones_follow_daylight_saving_time() {
        let w = AllowWindow::parse("Mon-Fri 09:00-17:00 America/New_York", utc()).unwrap();
        // 09:30 in New York: UTC-4 in July (EDT), UTC-5 in January (EST).
        assert!(w.contains(at("2026-07-07T13:30:00Z")));
        assert!(!w.contains(at("2026-07-07T12:30:00Z")));
        assert!(w.contains(at("2026-01-06T14:30:00Z")));
        assert!(!w.contains(at("2026-01-06T13:30:00Z")));
        // The arena's zone applies to windows and freezes that name none.
        let berlin = parse_zone("Europe/Berlin").unwrap();
        let w = AllowWindow::parse("daily 00:00-01:00", berlin).unwrap();
        assert!(w.contains(at("2026-03-28T23:30:00Z")), "CET: 00:30");
        assert!(w.contains(at("2026-03-29T22:30:00Z")), "CEST: 00:30");
        let f = Freeze::parse("12-24..12-26", berlin).unwrap();
        assert!(
            f.contains(at("2026-12-23T23:30:00Z")),
            "already the 24th in Berlin"
        );
        assert!(!f.contains(at("2026-12-23T22:30:00Z")));
        assert!(parse_zone("Mars/Olympus_Mons").is_err());
        assert!(parse_zone("america/new_york").is_err(), "names are exact");
    }

    #[test]
    fn freeze_rejects_garbage() {
        for bad in [
            "christmas-ish",
            "13-01..13-05",
            "2026-11-25..2026-11-23",
            "12-20",
        ] {
            assert!(Freeze::parse(bad, utc()).is_err(), "{bad} should not parse");
        }
    }
}
