//! Go-style durations (`10m`, `1h30m`, `1.5s`, `300ms`, `0s`), as Capact writes them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration written the way Go's `time.Duration` parses and prints it.
///
/// Parsing accepts what Go's `time.ParseDuration` accepts, except negative values
/// (a timeout cannot be negative). Printing gives what Go's `Duration.String()`
/// gives, so `10m` is written back as `10m0s`, the same value Capact writes.
/// Zero means "no timeout" wherever it bounds an execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// The duration, or `None` when it is zero (no limit).
    pub fn as_limit(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d)
    }
}

/// Why a string is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct ParseDurationError {
    /// The string that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl FromStr for GoDuration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ParseDurationError {
            input: input.to_owned(),
            reason,
        };
        let (negative, mut rest) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        if rest == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        if rest.is_empty() {
            return Err(fail("empty"));
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let int_part = &rest[..int_len];
            rest = &rest[int_len..];
            let mut frac_part = "";
            if let Some(after_dot) = rest.strip_prefix('.') {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                frac_part = &after_dot[..frac_len];
                rest = &after_dot[frac_len..];
            }
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(fail("expected a number"));
            }
            let unit_len = rest
                .find(|c: char| c == '.' || c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let nanos_per_unit: u128 = match unit {
                "ns" => 1,
                "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
                "ms" => 1_000_000,
                "s" => NANOS_PER_SEC,
                "m" => 60 * NANOS_PER_SEC,
                "h" => 3600 * NANOS_PER_SEC,
                "" => return Err(fail("missing unit (one of ns, us, ms, s, m, h)")),
                _ => return Err(fail("unknown unit (expected one of ns, us, ms, s, m, h)")),
            };
            let int: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| fail("number too large"))?
            };
            let mut nanos = int
                .checked_mul(nanos_per_unit)
                .ok_or_else(|| fail("number too large"))?;
            if !frac_part.is_empty() {
                // Digits past the 20th are below a nanosecond of an hour; dropping them
                // keeps the arithmetic inside u128.
                let digits = &frac_part[..frac_part.len().min(20)];
                let numerator: u128 = digits.parse().map_err(|_| fail("bad fraction"))?;
                let denominator = 10u128.pow(digits.len() as u32);
                nanos += numerator * nanos_per_unit / denominator;
            }
            total = total
                .checked_add(nanos)
                .ok_or_else(|| fail("number too large"))?;
        }
        if total > i64::MAX as u128 {
            return Err(fail("larger than Go's maximum duration"));
        }
        if negative && total != 0 {
            return Err(fail("negative durations are not allowed"));
        }
        Ok(GoDuration(Duration::from_nanos(total as u64)))
    }
}

/// `value / unit` as a decimal with trailing zeros trimmed, as Go prints it.
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let frac = format!("{frac:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < NANOS_PER_SEC {
            let (unit, name) = match nanos {
                0..1_000 => (1, "ns"),
                1_000..1_000_000 => (1_000, "\u{b5}s"),
                _ => (1_000_000, "ms"),
            };
            return write!(f, "{}{name}", decimal(nanos, unit));
        }
        let secs = nanos / NANOS_PER_SEC;
        let (hours, minutes) = (secs / 3600, secs / 60 % 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        let sub_minute = nanos % (60 * NANOS_PER_SEC);
        write!(f, "{}s", decimal(sub_minute, NANOS_PER_SEC))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Duration {
        s.parse::<GoDuration>().expect(s).0
    }

    #[test]
    fn parses_what_go_parses() {
        assert_eq!(parse("10m"), Duration::from_secs(600));
        assert_eq!(parse("1h30m"), Duration::from_secs(5400));
        assert_eq!(parse("1.5s"), Duration::from_millis(1500));
        assert_eq!(parse("300ms"), Duration::from_millis(300));
        assert_eq!(parse("0s"), Duration::ZERO);
        assert_eq!(parse("0"), Duration::ZERO);
        assert_eq!(parse("2h45m0.5s"), Duration::from_millis(9_900_500));
        assert_eq!(parse("1us"), Duration::from_micros(1));
        assert_eq!(parse("1\u{b5}s"), Duration::from_micros(1));
        assert_eq!(parse("1\u{3bc}s"), Duration::from_micros(1));
        assert_eq!(parse(".5h"), Duration::from_secs(1800));
        assert_eq!(parse("+5s"), Duration::from_secs(5));
        assert_eq!(parse("1.000000001s"), Duration::new(1, 1));
    }

    #[test]
    fn prints_what_go_prints() {
        let cases = [
            ("0s", "0s"),
            ("10m", "10m0s"),
            ("1h30m", "1h30m0s"),
            ("1.5s", "1.5s"),
            ("300ms", "300ms"),
            ("2h45m0.5s", "2h45m0.5s"),
            ("1.5ms", "1.5ms"),
            ("1us", "1\u{b5}s"),
            ("5ns", "5ns"),
            ("1h", "1h0m0s"),
            ("61s", "1m1s"),
            ("1.000000001s", "1.000000001s"),
        ];
        for (input, printed) in cases {
            let d: GoDuration = input.parse().expect(input);
            assert_eq!(d.to_string(), printed, "{input}");
            assert_eq!(printed.parse::<GoDuration>().expect(printed), d);
        }
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (input, reason) in [
            ("", "empty"),
            ("10", "missing unit"),
            ("10x", "unknown unit"),
            ("-5s", "negative"),
            ("h", "expected a number"),
            ("1.s.", "expected a number"),
            ("9999999999999h", "larger than"),
        ] {
            let err = input.parse::<GoDuration>().expect_err(input);
            assert!(err.to_string().contains(reason), "{input}: {err}");
            assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
        }
    }

    #[test]
    fn zero_means_no_limit() {
        assert_eq!(GoDuration::default().as_limit(), None);
        assert_eq!(
            GoDuration(Duration::from_secs(3)).as_limit(),
            Some(Duration::from_secs(3))
        );
    }
}
