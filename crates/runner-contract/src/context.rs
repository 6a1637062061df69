//! The runner context: what the engine tells a runner about the Action it runs.
//!
//! Pure data, no I/O. Field names are camelCase on the wire, as in Capact.

use serde::{Deserialize, Serialize};

/// The runner context document, read from `RUNNER_CONTEXT_PATH`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    /// Name of the Action; runners name what they create after it.
    pub name: String,
    /// When true the runner validates and reports but creates nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Bound on the whole execution; zero means no timeout.
    #[serde(default)]
    pub timeout: GoDuration,
    /// Where the runner runs and who owns what it creates.
    pub platform: Platform,
}

/// Platform settings of the Kubernetes engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Platform {
    /// Namespace the runner creates its resources in.
    pub namespace: String,
    /// Service account the runner's workloads run as.
    pub service_account_name: String,
    /// Owner of everything the runner creates.
    pub owner_ref: OwnerReference,
}

/// A Kubernetes owner reference (`metav1.OwnerReference`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    /// API version of the owner, for example `core.capact.io/v1alpha1`.
    pub api_version: String,
    /// Kind of the owner, for example `Action`.
    pub kind: String,
    /// Name of the owner.
    pub name: String,
    /// UID of the owner.
    pub uid: String,
    /// Whether the owner is the managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// Whether the owner cannot be deleted before this object is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// A duration written the way Go's `time.Duration` prints and parses it
/// (`10m`, `1h30m`, `1.5s`, `300ms`, `0s`).
///
/// Parsing follows Go's `time.ParseDuration`: a sequence of decimal numbers, each
/// with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`);
/// a lone `0` needs no unit. Formatting follows Go's `Duration.String()`, so a
/// value round-trips but its spelling may not: `10m` is written back as `10m0s`.
///
/// Caveats: negative durations are rejected (a timeout cannot be negative), and
/// the largest value is Go's, `i64::MAX` nanoseconds (about 292 years). On the wire
/// a bare non-negative integer is also accepted as nanoseconds, which is how Go's
/// `encoding/json` writes a `time.Duration`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub std::time::Duration);

/// Why a string is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration")]
    Empty,
    /// The string does not follow the grammar (a number without unit, a stray character).
    #[error("invalid duration {0:?}")]
    Invalid(String),
    /// A number is followed by something that is not a known unit.
    #[error(
        "unknown unit {unit:?} in duration {input:?} (valid units are ns, us, µs, ms, s, m, h)"
    )]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole duration string.
        input: String,
    },
    /// The duration has a minus sign.
    #[error("negative duration {0:?}")]
    Negative(String),
    /// The duration does not fit in Go's `time.Duration` (`i64` nanoseconds).
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Go's upper bound: `time.Duration` is an `i64` count of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

impl GoDuration {
    /// The zero duration, meaning "no timeout" in a [`Context`].
    pub const ZERO: GoDuration = GoDuration(std::time::Duration::ZERO);

    /// The duration as a limit: `None` when it is zero, which means no limit.
    pub fn as_limit(self) -> Option<std::time::Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }

    /// Whether this is the zero duration.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// Parses a Go duration string such as `1h30m` or `1.5s`.
    pub fn parse(input: &str) -> Result<GoDuration, DurationError> {
        let mut rest = input;
        if let Some(r) = rest.strip_prefix('+') {
            rest = r;
        } else if rest.starts_with('-') {
            return Err(DurationError::Negative(input.to_owned()));
        }
        if rest.is_empty() {
            return Err(if input.is_empty() {
                DurationError::Empty
            } else {
                DurationError::Invalid(input.to_owned())
            });
        }
        // Go special-cases a bare zero: it is the only number allowed without a unit.
        if rest == "0" {
            return Ok(GoDuration::ZERO);
        }
        let invalid = || DurationError::Invalid(input.to_owned());
        let overflow = || DurationError::Overflow(input.to_owned());
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let (whole, after_whole) = split_digits(rest);
            let (fraction, after_fraction) = match after_whole.strip_prefix('.') {
                Some(r) => split_digits(r),
                None => ("", after_whole),
            };
            if whole.is_empty() && fraction.is_empty() {
                return Err(invalid());
            }
            let unit_len = after_fraction
                .find(|c: char| c == '.' || c.is_ascii_digit())
                .unwrap_or(after_fraction.len());
            let (unit, after_unit) = after_fraction.split_at(unit_len);
            if unit.is_empty() {
                return Err(invalid());
            }
            let scale: u128 = match unit {
                "ns" => 1,
                "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60 * 1_000_000_000,
                "h" => 3_600 * 1_000_000_000,
                _ => {
                    return Err(DurationError::UnknownUnit {
                        unit: unit.to_owned(),
                        input: input.to_owned(),
                    });
                }
            };
            let mut value: u128 = 0;
            for d in whole.bytes() {
                value = value * 10 + u128::from(d - b'0');
                if value > MAX_NANOS {
                    return Err(overflow());
                }
            }
            let mut nanos = value.checked_mul(scale).ok_or_else(overflow)?;
            // Like Go, digits beyond what can change the result are ignored; 20
            // digits are more than nanoseconds of an hour need and cannot overflow.
            let mut numerator: u128 = 0;
            let mut denominator: u128 = 1;
            for d in fraction.bytes().take(20) {
                numerator = numerator * 10 + u128::from(d - b'0');
                denominator *= 10;
            }
            nanos += numerator * scale / denominator;
            total = total.checked_add(nanos).ok_or_else(overflow)?;
            if total > MAX_NANOS {
                return Err(overflow());
            }
            rest = after_unit;
        }
        let total = u64::try_from(total).map_err(|_| overflow())?;
        Ok(GoDuration(std::time::Duration::from_nanos(total)))
    }
}

/// Splits a leading run of ASCII digits off `s`.
fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// Writes `value / 10^precision` with its fraction, trailing zeros trimmed and
/// without a point when the fraction is zero (Go's `fmtFrac` + `fmtInt`).
fn write_fraction(out: &mut String, value: u64, precision: u32) {
    use std::fmt::Write as _;
    let divisor = 10u64.pow(precision);
    let whole = value / divisor;
    let fraction = value % divisor;
    // Writing to a String cannot fail.
    let _ = write!(out, "{whole}");
    if fraction != 0 {
        let digits = format!("{fraction:0width$}", width = precision as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

impl std::fmt::Display for GoDuration {
    /// Formats like Go's `Duration.String()`: `0s`, `300ms`, `1.5µs`, `1h30m0s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Durations beyond Go's range cannot be parsed; clamp so printing never panics.
        let nanos = u64::try_from(self.0.as_nanos().min(MAX_NANOS)).unwrap_or(u64::MAX);
        let mut out = String::new();
        if nanos == 0 {
            out.push_str("0s");
        } else if nanos < 1_000 {
            write_fraction(&mut out, nanos, 0);
            out.push_str("ns");
        } else if nanos < 1_000_000 {
            write_fraction(&mut out, nanos, 3);
            // Go writes U+00B5 (micro sign).
            out.push_str("\u{b5}s");
        } else if nanos < NANOS_PER_SECOND {
            write_fraction(&mut out, nanos, 6);
            out.push_str("ms");
        } else {
            let seconds = nanos / NANOS_PER_SECOND;
            let (hours, minutes) = (seconds / 3_600, seconds / 60 % 60);
            if hours > 0 {
                out.push_str(&format!("{hours}h"));
            }
            if seconds >= 60 {
                out.push_str(&format!("{minutes}m"));
            }
            write_fraction(
                &mut out,
                seconds % 60 * NANOS_PER_SECOND + nanos % NANOS_PER_SECOND,
                9,
            );
            out.push('s');
        }
        f.write_str(&out)
    }
}

impl std::str::FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

impl From<std::time::Duration> for GoDuration {
    fn from(d: std::time::Duration) -> Self {
        GoDuration(d)
    }
}

impl From<GoDuration> for std::time::Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

impl Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = GoDuration;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Go duration string such as \"10m\" or \"1h30m\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoDuration, E> {
                GoDuration::parse(v).map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<GoDuration, E> {
                if u128::from(v) > MAX_NANOS {
                    return Err(E::custom(DurationError::Overflow(v.to_string())));
                }
                Ok(GoDuration(std::time::Duration::from_nanos(v)))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<GoDuration, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(DurationError::Negative(v.to_string()))),
                }
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(s: &str) -> Duration {
        GoDuration::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .0
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("10m"), Duration::from_secs(600));
        assert_eq!(parse("1h30m"), Duration::from_secs(5_400));
        assert_eq!(parse("1.5s"), Duration::from_millis(1_500));
        assert_eq!(parse("300ms"), Duration::from_millis(300));
        assert_eq!(parse("2h45m0.5s"), Duration::from_millis(9_900_500));
        assert_eq!(parse("0s"), Duration::ZERO);
        assert_eq!(parse("0"), Duration::ZERO);
        assert_eq!(parse("+5s"), Duration::from_secs(5));
        assert_eq!(parse("1ns"), Duration::from_nanos(1));
        assert_eq!(parse("2us"), Duration::from_micros(2));
        assert_eq!(parse("2\u{b5}s"), Duration::from_micros(2));
        assert_eq!(parse("2\u{3bc}s"), Duration::from_micros(2));
        assert_eq!(parse(".5s"), Duration::from_millis(500));
        assert_eq!(parse("5.s"), Duration::from_secs(5));
        assert_eq!(parse("1.0000000001s"), Duration::from_secs(1));
        assert_eq!(parse("1m1m"), Duration::from_secs(120));
        assert_eq!(
            parse("2562047h47m16.854775807s"),
            Duration::from_nanos(i64::MAX as u64)
        );
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert_eq!(GoDuration::parse(""), Err(DurationError::Empty));
        for bad in ["10", "1.5", ".", "s", "abc", "+", "1..5s"] {
            assert!(
                matches!(GoDuration::parse(bad), Err(DurationError::Invalid(_))),
                "{bad:?} should be invalid, got {:?}",
                GoDuration::parse(bad)
            );
        }
        assert!(matches!(
            GoDuration::parse("10x"),
            Err(DurationError::UnknownUnit { unit, .. }) if unit == "x"
        ));
        // As in Go, a space is part of the unit.
        assert!(matches!(
            GoDuration::parse("1h 30m"),
            Err(DurationError::UnknownUnit { unit, .. }) if unit == "h "
        ));
        assert!(matches!(
            GoDuration::parse("-1s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            GoDuration::parse("2562047h47m16.854775808s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            GoDuration::parse("99999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formats_like_go_duration_string() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_100), "1.1\u{b5}s"),
            (Duration::from_micros(2_200), "2.2ms"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(600), "10m0s"),
            (Duration::from_secs(3_600), "1h0m0s"),
            (Duration::from_secs(5_400), "1h30m0s"),
            (Duration::from_millis(9_900_500), "2h45m0.5s"),
            (
                Duration::from_nanos(i64::MAX as u64),
                "2562047h47m16.854775807s",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(GoDuration(d).to_string(), want);
            assert_eq!(parse(want), d, "{want} does not parse back");
        }
    }

    #[test]
    fn serde_uses_the_go_string_and_accepts_nanoseconds() {
        let d: GoDuration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(5_400));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m0s\"");
        let d: GoDuration = serde_json::from_str("1500000000").unwrap();
        assert_eq!(d.0, Duration::from_millis(1_500));
        let err = serde_json::from_str::<GoDuration>("\"10x\"").unwrap_err();
        assert!(err.to_string().contains("unknown unit \"x\""), "{err}");
        let err = serde_json::from_str::<GoDuration>("-1").unwrap_err();
        assert!(err.to_string().contains("negative duration"), "{err}");
        let err = serde_json::from_str::<GoDuration>("true").unwrap_err();
        assert!(err.to_string().contains("Go duration string"), "{err}");
    }
}
