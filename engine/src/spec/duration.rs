//! Human durations such as `"2s"`, `"5m"`, `"1m30s"` and `"250ms"`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SpecError;

/// A non-negative span of time with millisecond precision, written like `"1m30s"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    millis: u64,
}

impl Duration {
    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration { millis }
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration {
            millis: secs * 1000,
        }
    }

    /// The duration in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// The duration as a standard library value.
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }
}

const UNITS: [(&str, u64); 5] = [
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
    ("", 0),
];

impl FromStr for Duration {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SpecError::BadDuration(text.to_owned());
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut millis: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let scale = UNITS
                .iter()
                .find(|(name, scale)| *name == unit && *scale > 0)
                .map(|(_, scale)| *scale)
                .ok_or_else(bad)?;
            millis = number
                .checked_mul(scale)
                .and_then(|part| millis.checked_add(part))
                .ok_or_else(bad)?;
        }
        Ok(Duration { millis })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis == 0 {
            return f.write_str("0s");
        }
        let mut left = self.millis;
        for (name, scale) in UNITS.iter().filter(|(_, scale)| *scale > 0) {
            if left >= *scale {
                write!(f, "{}{}", left / scale, name)?;
                left %= scale;
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

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        let ms = |s: &str| s.parse::<Duration>().map(Duration::as_millis);
        assert_eq!(ms("2s").ok(), Some(2_000));
        assert_eq!(ms("5m").ok(), Some(300_000));
        assert_eq!(ms("1h").ok(), Some(3_600_000));
        assert_eq!(ms("250ms").ok(), Some(250));
        assert_eq!(ms("1m30s").ok(), Some(90_000));
        assert_eq!(ms("0s").ok(), Some(0));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "",
            "2",
            "s",
            "-1s",
            "2 days",
            "1.5s",
            "2x",
            "99999999999999999999h",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn displays_in_canonical_form() {
        assert_eq!(Duration::from_millis(90_500).to_string(), "1m30s500ms");
        assert_eq!(Duration::from_secs(0).to_string(), "0s");
        assert_eq!(
            "120s"
                .parse::<Duration>()
                .map(|d| d.to_string())
                .ok()
                .as_deref(),
            Some("2m")
        );
    }
}
