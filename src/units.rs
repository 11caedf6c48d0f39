//! The units a spec and the command line are written in: Go-style durations
//! (`30s`, `1h30m`) and byte sizes given as a number or a Kubernetes quantity
//! (`512Ki`, `1G`). Pure parsing, no I/O; shared by the controller's
//! validation and the CLI.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Parses a Go-style duration (`30s`, `5m`, `1h30m`, `1.5h`, `500ms`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    // A spec can name more seconds than a `Duration` holds
    // (`99999999999999999999h`): that is unreadable, not a panic.
    Duration::try_from_secs_f64(total).ok()
}

/// Parses a size: a number of bytes, or a Kubernetes quantity such as
/// `512Ki`, `2Mi`, `1G` or `1e6`. `None` unless the result is positive.
pub fn parse_size(value: &IntOrString) -> Option<u64> {
    let bytes = match value {
        IntOrString::Int(i) => u64::try_from(*i).ok()?,
        IntOrString::String(s) => parse_quantity(s)?,
    };
    (bytes > 0).then_some(bytes)
}

fn parse_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = (number * factor).ceil();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration(&format!("{}h", "9".repeat(30))), None);
        assert_eq!(parse_duration(&format!("{}s", "9".repeat(400))), None);
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn sizes_parse_as_bytes_or_quantities() {
        let s = |v: &str| parse_size(&IntOrString::String(v.to_string()));
        assert_eq!(parse_size(&IntOrString::Int(4096)), Some(4096));
        assert_eq!(s("1Mi"), Some(1 << 20));
        assert_eq!(s("512Ki"), Some(512 << 10));
        assert_eq!(s("2M"), Some(2_000_000));
        assert_eq!(s("1e6"), Some(1_000_000));
        assert_eq!(s("1.5Ki"), Some(1536));
        assert_eq!(parse_size(&IntOrString::Int(0)), None);
        assert_eq!(parse_size(&IntOrString::Int(-1)), None);
        assert_eq!(s("big"), None);
    }
}
