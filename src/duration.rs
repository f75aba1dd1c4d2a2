//! Durations as Istio/Kubernetes users write them: "5s", "1.5s", "300ms", "5m", "1h30m".

use std::time::Duration;

/// Parses a Go/protobuf-style duration string. Bare numbers are rejected: a unit is required so
/// "30" can never be misread as 30 ms or 30 min.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total_nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("invalid duration {s:?}: expected a number"));
        }
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (use e.g. \"5s\" or \"5m\")"
                ))
            }
            other => return Err(format!("invalid duration {s:?}: unknown unit {other:?}")),
        };
        let (int_part, frac_part) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(format!("invalid duration {s:?}"));
        }
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| format!("invalid duration {s:?}"))?
        };
        let mut frac_nanos: u128 = 0;
        let mut scale = unit_nanos;
        for d in frac_part.chars() {
            let digit = d
                .to_digit(10)
                .ok_or_else(|| format!("invalid duration {s:?}"))?;
            scale /= 10;
            frac_nanos += u128::from(digit) * scale;
        }
        total_nanos = total_nanos
            .checked_add(int.checked_mul(unit_nanos).ok_or("duration too large")?)
            .and_then(|t| t.checked_add(frac_nanos))
            .ok_or("duration too large")?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| "duration too large")?;
    Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in ["", "5", "s", "5x", "-5s", "5s5", "..s", "1e3s"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
