//! Input limits, checked on the http node before anything reaches another service. Lengths count
//! characters, not bytes.

use crate::error::ApiError;

/// 3-32 of `[a-zA-Z0-9_.-]`.
pub(crate) fn username(value: &str) -> Result<(), ApiError> {
    let length = value.chars().count();
    if !(3..=32).contains(&length)
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(ApiError::validation(
            "username",
            "username must be 3-32 characters of a-z, A-Z, 0-9, '_', '.' and '-'",
        ));
    }
    Ok(())
}

/// At least 8 characters (and at most 1024, so hashing stays cheap).
pub(crate) fn password(value: &str) -> Result<(), ApiError> {
    let length = value.chars().count();
    if !(8..=1024).contains(&length) {
        return Err(ApiError::validation(
            "password",
            "password must be 8-1024 characters",
        ));
    }
    Ok(())
}

/// 1-64 characters, not only whitespace.
pub(crate) fn room_name(value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.chars().count() > 64 {
        return Err(ApiError::validation(
            "name",
            "room name must be 1-64 characters and not only whitespace",
        ));
    }
    Ok(())
}

/// At most 256 characters.
pub(crate) fn topic(value: &str) -> Result<(), ApiError> {
    if value.chars().count() > 256 {
        return Err(ApiError::validation(
            "topic",
            "topic must be at most 256 characters",
        ));
    }
    Ok(())
}

/// 1-4000 characters, not only whitespace.
pub(crate) fn body(value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.chars().count() > 4000 {
        return Err(ApiError::validation(
            "body",
            "message body must be 1-4000 characters and not only whitespace",
        ));
    }
    Ok(())
}

/// At most 255 visible ASCII characters.
pub(crate) fn idempotency_key(value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 255 || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::validation(
            "Idempotency-Key",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(())
}

/// Milliseconds a time parameter may be from the epoch either way: 14 digits, about the year
/// 5138. Every time the API writes back must be formattable as RFC 3339 (up to the year 9999).
const MAX_TIME_MS: i64 = 99_999_999_999_999;

/// A time query parameter: RFC 3339, or milliseconds since the Unix epoch (at most 14 digits);
/// `None` when absent.
pub(crate) fn time(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(ms) = value.parse::<i64>() {
        if ms.abs() > MAX_TIME_MS {
            return Err(ApiError::validation(
                field,
                format!("{field} in milliseconds must have at most 14 digits"),
            ));
        }
        return Ok(Some(ms));
    }
    humantime::parse_rfc3339_weak(value)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Some(d.as_millis() as i64))
        .ok_or_else(|| {
            ApiError::validation(field, format!("{field} must be RFC 3339 or milliseconds"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_at_their_edges() {
        assert!(username("abc").is_ok());
        assert!(username("ab").is_err());
        assert!(username(&"a".repeat(32)).is_ok());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(username("héllo").is_err());
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(room_name(" ").is_err());
        assert!(room_name(&"é".repeat(64)).is_ok());
        assert!(room_name(&"é".repeat(65)).is_err());
        assert!(topic(&"t".repeat(257)).is_err());
        assert!(body("\n\t ").is_err());
        assert!(body(&"x".repeat(4000)).is_ok());
        assert!(body(&"x".repeat(4001)).is_err());
    }

    #[test]
    fn times_past_fourteen_digits_of_milliseconds_are_refused() {
        assert_eq!(
            time("t", Some("99999999999999")).unwrap(),
            Some(MAX_TIME_MS)
        );
        assert!(time("t", Some("300000000000000")).is_err());
        assert!(time("t", Some("-300000000000000")).is_err());
    }

    #[test]
    fn times_are_rfc3339_or_milliseconds() {
        assert_eq!(time("since", None).unwrap(), None);
        assert_eq!(
            time("since", Some("1700000000000")).unwrap(),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            time("since", Some("2023-11-14T22:13:20Z")).unwrap(),
            Some(1_700_000_000_000)
        );
        assert!(time("since", Some("yesterday")).is_err());
    }
}
