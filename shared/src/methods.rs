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
//!
//! A name is looked for from a slot picked by a cheap hash of it, and on from there (open
//! addressing), so a lookup usually compares one name, not every name interned before it.

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
        let start = first_slot(method.as_bytes());
        for step in 0..CAPACITY {
            // A slot is filled once and never changes, so the probe from `start` meets every
            // name whose probe passed this way before it meets a free slot. Racing callers of
            // one new name wait on the same slot; of two names, the one that loses moves on.
            let slot = &NAMES[(start + step) % CAPACITY];
            let name = *slot.get_or_init(|| Box::leak(method.into()));
            if name == method {
                return ByteString::from_static(name);
            }
        }
    }
    ByteString::from(method)
}

/// Where the probe for `name` starts: a mix of its length and its first and last bytes, which
/// tells the few method names of a program apart without reading all of them.
fn first_slot(name: &[u8]) -> usize {
    let (first, last) = match name {
        [] => (0, 0),
        [first, .., last] => (*first, *last),
        [only] => (*only, *only),
    };
    let mixed = (name.len() as u32)
        .wrapping_mul(31)
        .wrapping_add(u32::from(first).wrapping_mul(7))
        .wrapping_add(u32::from(last));
    mixed as usize % CAPACITY
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

    #[test]
    fn names_that_start_at_the_same_slot_are_both_interned() {
        // Same length, first and last bytes: the same first slot.
        let (one, other) = ("collide_a_z", "collide_b_z");
        assert_eq!(first_slot(one.as_bytes()), first_slot(other.as_bytes()));
        let first = method(one);
        let second = method(other);
        assert_eq!((first.as_ref(), second.as_ref()), (one, other));
        assert_eq!(method(one).as_ptr(), first.as_ptr());
        assert_eq!(method(other).as_ptr(), second.as_ptr());
    }
}
