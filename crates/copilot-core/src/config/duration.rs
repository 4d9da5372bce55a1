//! Durations as written in definitions: `500ms`, `30s`, `5m`, `24h`, `7d`,
//! or a combination such as `1h30m`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

/// A non-negative span of time with millisecond precision, at most
/// [`Duration::MAX`]: every duration a definition or flag can hold can be
/// added to any instant and any timer without overflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

/// The longest duration accepted anywhere, as written: ten years.
pub const MAX_TEXT: &str = "3650d";
const MAX_MS: u64 = 3650 * 86_400_000;

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);
    pub const MAX: Duration = Duration(std::time::Duration::from_millis(MAX_MS));

    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    pub fn as_chrono(self) -> chrono::Duration {
        chrono::Duration::milliseconds(i64::try_from(self.as_millis()).unwrap_or(i64::MAX))
    }

    /// `t` plus this duration, saturating at the last instant chrono knows.
    pub fn after(self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.checked_add_signed(self.as_chrono())
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// `t` minus this duration, saturating at the first instant chrono knows.
    pub fn before(self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.checked_sub_signed(self.as_chrono())
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{0}` has no unit")]
    MissingUnit(String),
    #[error("unknown unit `{unit}` in `{input}`")]
    UnknownUnit { unit: String, input: String },
    #[error("`{0}` is not a duration")]
    Invalid(String),
    #[error("`{0}` is longer than {MAX_TEXT}, the longest duration copilot accepts")]
    Overflow(String),
}

impl ParseDurationError {
    pub fn hint(&self) -> &'static str {
        match self {
            ParseDurationError::Overflow(_) => "write a shorter one (`24h`, `7d`, `365d`)",
            _ => "write a number and a unit: ms, s, m, h or d (e.g. `30s`, `5m`, `1h30m`, `24h`)",
        }
    }
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ParseDurationError::Empty);
        }
        let mut total_ms: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Err(ParseDurationError::Invalid(input.to_string()));
            }
            let value: u64 = rest[..digits]
                .parse()
                .map_err(|_| ParseDurationError::Overflow(input.to_string()))?;
            rest = &rest[digits..];
            let unit_len = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .len();
            if unit_len == 0 {
                return Err(if rest.is_empty() {
                    ParseDurationError::MissingUnit(input.to_string())
                } else {
                    ParseDurationError::Invalid(input.to_string())
                });
            }
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let factor = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => {
                    return Err(ParseDurationError::UnknownUnit {
                        unit: unit.to_string(),
                        input: input.to_string(),
                    });
                }
            };
            let part = value
                .checked_mul(factor)
                .ok_or_else(|| ParseDurationError::Overflow(input.to_string()))?;
            total_ms = total_ms
                .checked_add(part)
                .filter(|ms| *ms <= MAX_MS)
                .ok_or_else(|| ParseDurationError::Overflow(input.to_string()))?;
        }
        Ok(Duration::from_millis(total_ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        // Whole days read better as days, except a single day, which people write `24h`.
        const DAY: u64 = 86_400_000;
        if ms.is_multiple_of(DAY) && ms > DAY {
            return write!(f, "{}d", ms / DAY);
        }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e: ParseDurationError| serde::de::Error::custom(format!("{e}; {}", e.hint())))
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h|d))+$",
            "description": "A duration such as 500ms, 30s, 5m, 1h30m, 24h or 7d"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!("500ms".parse::<Duration>().unwrap().as_millis(), 500);
        assert_eq!("30s".parse::<Duration>().unwrap().as_millis(), 30_000);
        assert_eq!("5m".parse::<Duration>().unwrap().as_millis(), 300_000);
        assert_eq!("1h30m".parse::<Duration>().unwrap().as_millis(), 5_400_000);
        assert_eq!("7d".parse::<Duration>().unwrap().as_millis(), 604_800_000);
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!("".parse::<Duration>(), Err(ParseDurationError::Empty));
        assert!(matches!(
            "5".parse::<Duration>(),
            Err(ParseDurationError::MissingUnit(_))
        ));
        assert!(matches!(
            "5 minutes".parse::<Duration>(),
            Err(ParseDurationError::Invalid(_))
        ));
        assert!(matches!(
            "5y".parse::<Duration>(),
            Err(ParseDurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            "m5".parse::<Duration>(),
            Err(ParseDurationError::Invalid(_))
        ));
    }

    #[test]
    fn bounds_durations_to_what_instants_can_hold() {
        assert_eq!("3650d".parse::<Duration>(), Ok(Duration::MAX));
        for text in ["3651d", "100000000d", "87601h", "99999999999999999999s"] {
            assert!(
                matches!(
                    text.parse::<Duration>(),
                    Err(ParseDurationError::Overflow(_))
                ),
                "{text}"
            );
        }
        let t = DateTime::<Utc>::MAX_UTC;
        assert_eq!(Duration::MAX.after(t), t);
        assert_eq!(
            Duration::MAX.before(DateTime::<Utc>::MIN_UTC),
            DateTime::<Utc>::MIN_UTC
        );
    }

    #[test]
    fn displays_in_largest_units() {
        for text in ["30s", "5m", "1h30m", "24h", "26h", "7d", "1s500ms"] {
            assert_eq!(text.parse::<Duration>().unwrap().to_string(), text);
        }
    }
}
