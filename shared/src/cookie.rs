//! The shared secret that lets nodes into one cluster, as Erlang's magic cookie.
//!
//! The cookie comes from `SWITCHBOARD_COOKIE` or the file named by `SWITCHBOARD_COOKIE_FILE`.
//! It is wrapped so that it can never be printed: `Debug` shows a placeholder, and there is no
//! `Display`. It never crosses the wire; [`crate::handshake`] only sends HMACs keyed by it.

use std::fmt;
use std::path::Path;

/// The shortest cookie a node accepts. Short secrets are guessable offline from one recorded
/// handshake, so this is a hard floor, not a recommendation.
pub const MIN_COOKIE_LEN: usize = 16;

/// Why a cookie could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CookieError {
    /// Neither variable was set.
    #[error(
        "no cookie: set SWITCHBOARD_COOKIE or SWITCHBOARD_COOKIE_FILE to a shared secret of at least {MIN_COOKIE_LEN} bytes"
    )]
    Missing,
    /// The cookie is shorter than [`MIN_COOKIE_LEN`].
    #[error("the cookie is {len} bytes; it must be at least {MIN_COOKIE_LEN} bytes")]
    TooShort {
        /// The length that was found.
        len: usize,
    },
    /// The cookie file could not be read.
    #[error("cannot read the cookie file {path}: {source}")]
    Unreadable {
        /// The file that was named.
        path: String,
        /// The I/O failure.
        source: std::io::Error,
    },
}

/// A validated cluster cookie.
#[derive(Clone)]
pub struct Cookie(Vec<u8>);

impl Cookie {
    /// Wraps a secret, refusing one shorter than [`MIN_COOKIE_LEN`]. Surrounding whitespace
    /// (a trailing newline in a file, typically) is not part of the secret.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, CookieError> {
        let secret = secret.as_ref().trim_ascii();
        if secret.is_empty() {
            return Err(CookieError::Missing);
        }
        if secret.len() < MIN_COOKIE_LEN {
            return Err(CookieError::TooShort { len: secret.len() });
        }
        Ok(Self(secret.to_vec()))
    }

    /// Reads the cookie from a file.
    pub fn from_file(path: &Path) -> Result<Self, CookieError> {
        let bytes = std::fs::read(path).map_err(|source| CookieError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(bytes)
    }

    /// Loads the cookie as a node does at start: `SWITCHBOARD_COOKIE`, else the file named by
    /// `SWITCHBOARD_COOKIE_FILE`.
    pub fn from_env() -> Result<Self, CookieError> {
        Self::from_sources(
            std::env::var("SWITCHBOARD_COOKIE").ok(),
            std::env::var("SWITCHBOARD_COOKIE_FILE").ok(),
        )
    }

    /// The rule behind [`Cookie::from_env`], separated so it can be tested without touching the
    /// process environment.
    pub fn from_sources(value: Option<String>, file: Option<String>) -> Result<Self, CookieError> {
        match (
            value.filter(|v| !v.is_empty()),
            file.filter(|f| !f.is_empty()),
        ) {
            (Some(value), _) => Self::new(value),
            (None, Some(file)) => Self::from_file(Path::new(&file)),
            (None, None) => Err(CookieError::Missing),
        }
    }

    /// The secret bytes, for keying the handshake's HMAC and nothing else.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cookie(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_missing_and_short_cookies() {
        assert!(matches!(
            Cookie::from_sources(None, None),
            Err(CookieError::Missing)
        ));
        assert!(matches!(
            Cookie::new("short"),
            Err(CookieError::TooShort { len: 5 })
        ));
        assert!(Cookie::new("0123456789abcdef").is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let cookie = Cookie::new("a-very-secret-cookie-value").unwrap();
        let shown = format!("{cookie:?}");
        assert!(!shown.contains("secret-cookie"), "{shown}");
    }

    #[test]
    fn file_cookie_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let cookie = Cookie::from_sources(None, Some(path.display().to_string())).unwrap();
        assert_eq!(cookie.expose(), b"0123456789abcdef0123");
    }
}
