//! What a message type looks like, for the handshake that keeps two ends
//! built for different types from reading each other's bytes as garbage.
//!
//! A type that derives `IpcMessage` is described by its structure as the
//! derive saw it: its name, its fields' names and types as written, its
//! variants. Any other type is described by `std::any::type_name`. Nothing
//! extra is asked of users' serde types.
//!
//! The derive's `Deserialize` reports its structure when a probe is running
//! on this thread (one thread-local flag read per derived value, otherwise).
//! [`describe`] runs the probe: it deserializes a `T` from a deserializer
//! that refuses everything, so the derived impl, if any, records itself and
//! nothing else happens.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeOwned, Visitor};

thread_local! {
    static PROBING: Cell<bool> = const { Cell::new(false) };
    static RECORDED: RefCell<Option<&'static str>> = const { RefCell::new(None) };
}

/// Whether a probe is running on this thread; generated code asks.
#[inline]
pub fn probing() -> bool {
    PROBING.with(Cell::get)
}

/// Records the structure of the derived type being probed; generated code
/// calls it when [`probing`] is true.
pub fn record(structure: &'static str) {
    RECORDED.with(|r| {
        r.borrow_mut().get_or_insert(structure);
    });
}

/// A description of `T` that changes when its definition does.
pub(crate) fn describe<T: DeserializeOwned>() -> String {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PROBING.with(|p| p.set(false));
        }
    }
    RECORDED.with(|r| *r.borrow_mut() = None);
    PROBING.with(|p| p.set(true));
    let reset = Reset;
    let _ = T::deserialize(Refuse);
    drop(reset);
    let name = std::any::type_name::<T>();
    match RECORDED.with(|r| r.borrow_mut().take()) {
        // The structure leaves out module paths, so the same type reached
        // through two crates matches; generic arguments come from the name.
        Some(structure) => match name.find('<') {
            Some(generics) => format!("{structure} as {}", &name[generics..]),
            None => structure.to_string(),
        },
        None => name.to_string(),
    }
}

/// A deserializer that refuses every request.
struct Refuse;

#[derive(Debug)]
struct Refused;

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("type probe")
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Refused
    }
}

impl<'de> de::Deserializer<'de> for Refuse {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_types_are_described_by_name() {
        assert_eq!(describe::<u64>(), "u64");
        assert_eq!(
            describe::<Vec<String>>(),
            "alloc::vec::Vec<alloc::string::String>"
        );
        assert!(!probing());
    }
}
