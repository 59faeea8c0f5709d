//! Method names as calls carry them: [`Method`], which a caller makes from a literal for free.
//!
//! Both a local request and a wire frame need an owned copy of the method's name. Copying a
//! `&str` cost an allocation and a free per call, and looking it up in a table of interned names
//! instead still cost about a sixth of a local call's instructions (hash, probe, compare). But the
//! methods a program calls are literals: a `&'static str` becomes a [`Method`] that points at it,
//! which clones and drops for free. A name made at run time (the CLI's `call` command) is moved
//! in as a `String`, once.

use crate::service::ByteString;

/// The name of a method to call or cast: from a `&'static str` without copying, or from an
/// owned `String`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Method(ByteString);

impl Method {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a request carries it.
    pub(crate) fn into_name(self) -> ByteString {
        self.0
    }
}

impl From<&'static str> for Method {
    fn from(name: &'static str) -> Self {
        Self(ByteString::from_static(name))
    }
}

impl From<String> for Method {
    fn from(name: String) -> Self {
        Self(ByteString::from(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_is_carried_without_a_copy() {
        let literal: &'static str = "method_literal";
        let method = Method::from(literal);
        assert_eq!(method.as_str().as_ptr(), literal.as_ptr());
        assert_eq!(method.clone().into_name(), literal);
        assert_eq!(Method::from(String::from("made_up")).as_str(), "made_up");
    }
}
