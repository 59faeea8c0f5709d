//! Method names as calls carry them: interned, so a call names its method without allocating.
//!
//! A caller passes the method as a `&str` of any lifetime, and both a local request and a wire
//! frame need an owned copy. Copying it cost an allocation and a free per call, the largest
//! per-call cost left on the local path. The methods a program calls are a handful of literals,
//! so the first [`CAPACITY`] distinct names (up to [`MAX_LEN`] bytes) are kept for the life of
//! the process and handed out as static [`ByteString`]s, which clone and drop for free. Only the
//! calling side interns (names that arrive over a link are slices of their frame), so a peer
//! cannot fill the table; a program that makes up method names at run time fills it once and
//! then pays a copy per call, as before.

use std::sync::OnceLock;

use crate::service::ByteString;

/// How many distinct names are interned, at most.
const CAPACITY: usize = 64;

/// Longer names are copied per call rather than kept.
const MAX_LEN: usize = 64;

static NAMES: [OnceLock<&'static str>; CAPACITY] = [const { OnceLock::new() }; CAPACITY];

/// `method` as an owned name: the interned copy, or a fresh one once the table is full.
pub(crate) fn method(method: &str) -> ByteString {
    if method.len() <= MAX_LEN {
        for slot in &NAMES {
            // Slots fill in order and never change, so the scan meets every interned name
            // before the first free slot. Racing callers of one new name wait on the same slot.
            let name = *slot.get_or_init(|| Box::leak(method.into()));
            if name == method {
                return ByteString::from_static(name);
            }
        }
    }
    ByteString::from(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_interned_once() {
        let first = method("interning_test_method");
        let second = method(&String::from("interning_test_method"));
        assert_eq!(first, "interning_test_method");
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "both are the one interned copy"
        );
        let long = "x".repeat(MAX_LEN + 1);
        assert_eq!(method(&long), long.as_str());
    }
}
