//! What a message type looks like, for the handshake that keeps two ends
//! built for different types from reading each other's bytes as garbage.
//!
//! A type that derives `IpcMessage` is described by its structure as the
//! derive saw it: its name, generics, serde attributes, fields and variants,
//! with each field's type described in turn, as instantiated, through the
//! same probe. So a change inside a nested derived type, or in the type a
//! generic parameter stands for, changes the description. Module paths of
//! derived types are left out, so a type reached through two crates
//! matches itself. Any other type is described by `std::any::type_name`;
//! where derived types are found inside it (the element of a `Vec`, an
//! `Option`'s value, a map's key and value; of a tuple, only the first), by
//! its name without module paths followed by theirs. Nothing extra is
//! asked of users' serde types.
//!
//! The derive's `Deserialize` reports its structure when a probe is running
//! on this thread (one thread-local flag read per derived value, otherwise).
//! [`describe`] runs the probe: it deserializes a `T` from a deserializer
//! that refuses every value, so the derived impls, if any, record
//! themselves and nothing else happens. A derived type is written out once
//! per description; where it comes again (a recursive type, a type used
//! twice) its name stands for it, so the probe ends and stays linear in the
//! number of types. It runs once per type when a connection is made.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// How deep the probe follows containers of types that do not derive
/// `IpcMessage`: deep enough for any written type, and an end for a
/// recursive one.
const MAX_DEPTH: usize = 32;

thread_local! {
    static PROBING: Cell<bool> = const { Cell::new(false) };
    static PROBE: RefCell<Probe> = RefCell::new(Probe::default());
}

#[derive(Default)]
struct Probe {
    /// Derived types written out (or being written) in this description,
    /// by `type_name`.
    seen: HashSet<&'static str>,
    /// The type being described now.
    frame: Frame,
    /// How many containers deep the refusing deserializer is.
    depth: usize,
}

/// What the probe learnt about one type.
#[derive(Default)]
struct Frame {
    /// Its structure, when it derives `IpcMessage`.
    own: Option<String>,
    /// Derived types found inside it.
    nested: Vec<String>,
    /// Whether its `Deserialize` asked the deserializer for anything: a
    /// derived type recorded after that is nested, not the type itself.
    asked: bool,
}

/// A field's describer, as generated code lists them.
pub type Describe = fn() -> String;

/// Whether a probe is running on this thread; generated code asks.
#[inline]
pub fn probing() -> bool {
    PROBING.with(Cell::get)
}

/// Records the structure of a derived type `T` met by the probe: `pieces`
/// are its structure's text around its fields' types, which `fields`
/// describe (one fewer than `pieces`). `name` stands for it where it comes
/// again. Generated code calls it when [`probing`] is true.
pub fn record<T: ?Sized>(name: &str, pieces: &[&str], fields: &[Describe]) {
    let first = PROBE.with(|p| p.borrow_mut().seen.insert(std::any::type_name::<T>()));
    let text = if first {
        let mut text = String::new();
        for (i, piece) in pieces.iter().enumerate() {
            text.push_str(piece);
            if let Some(field) = fields.get(i) {
                text.push_str(&field());
            }
        }
        text
    } else {
        name.to_string()
    };
    PROBE.with(|p| {
        let frame = &mut p.borrow_mut().frame;
        if frame.asked {
            frame.nested.push(text);
        } else {
            frame.own = Some(text);
        }
    });
}

/// A description of `T` that changes when its definition does.
pub(crate) fn describe<T: DeserializeOwned>() -> String {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PROBING.with(|p| p.set(false));
            PROBE.with(|p| *p.borrow_mut() = Probe::default());
        }
    }
    PROBE.with(|p| *p.borrow_mut() = Probe::default());
    PROBING.with(|p| p.set(true));
    let _reset = Reset;
    describe_in::<T>()
}

/// Describes `T` inside a running probe: a field's type, say.
pub(crate) fn describe_in<T: DeserializeOwned>() -> String {
    let outer = PROBE.with(|p| std::mem::take(&mut p.borrow_mut().frame));
    let _ = T::deserialize(Refuse);
    let frame = PROBE.with(|p| std::mem::replace(&mut p.borrow_mut().frame, outer));
    match frame.own {
        Some(structure) => structure,
        None if frame.nested.is_empty() => std::any::type_name::<T>().to_string(),
        // The derived types inside are described without module paths: so
        // is the type around them.
        None => format!("{} with {}", name_of::<T>(), frame.nested.join(" and ")),
    }
}

/// `T`'s name without module paths: `Vec<Inner>`, not
/// `alloc::vec::Vec<my_crate::Inner>`, for a type around derived types,
/// which match themselves whatever crate reaches them.
pub(crate) fn name_of<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let mut name = String::with_capacity(full.len());
    // Where the identifier being copied starts in `name`.
    let mut ident = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            name.truncate(ident);
            continue;
        }
        name.push(c);
        if !(c.is_alphanumeric() || c == '_') {
            ident = name.len();
        }
    }
    name
}

/// A deserializer that gives no value. It opens containers (options,
/// sequences, maps, newtypes) so the probe reaches the types inside.
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

/// Marks the current type as having asked for a value and, unless the
/// probe is too deep, runs `open` one level deeper.
fn open(open: impl FnOnce()) -> Refused {
    let deeper = PROBE.with(|p| {
        let mut p = p.borrow_mut();
        p.frame.asked = true;
        let deeper = p.depth < MAX_DEPTH;
        if deeper {
            p.depth += 1;
        }
        deeper
    });
    if deeper {
        open();
        PROBE.with(|p| p.borrow_mut().depth -= 1);
    }
    Refused
}

impl<'de> de::Deserializer<'de> for Refuse {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Refused> {
        Err(open(|| {}))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        Err(open(|| {
            let _ = visitor.visit_some(Refuse);
        }))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Refused> {
        Err(open(|| {
            let _ = visitor.visit_newtype_struct(Refuse);
        }))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        Err(open(|| {
            let _ = visitor.visit_seq(Inside);
        }))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        Err(open(|| {
            let _ = visitor.visit_map(Inside);
        }))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple_struct struct enum identifier
        ignored_any
    }
}

/// The inside of a sequence or map: the first element's type (a map's key
/// and value types) is probed, then the container ends in an error.
struct Inside;

impl<'de> SeqAccess<'de> for Inside {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Refused> {
        let _ = seed.deserialize(Refuse);
        Err(Refused)
    }
}

impl<'de> MapAccess<'de> for Inside {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Refused> {
        let _ = seed.deserialize(Refuse);
        Err(Refused)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, _: V) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn next_entry_seed<K: DeserializeSeed<'de>, V: DeserializeSeed<'de>>(
        &mut self,
        key: K,
        value: V,
    ) -> Result<Option<(K::Value, V::Value)>, Refused> {
        let _ = key.deserialize(Refuse);
        let _ = value.deserialize(Refuse);
        Err(Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::marker::PhantomData;

    use serde::{Deserialize, Deserializer};

    /// What `#[derive(IpcMessage)]` writes into `Deserialize`, by hand: a
    /// type with one field of type `F`, described as `struct {name}{f:F,}`.
    struct Derived<F, const V: u8>(PhantomData<F>);

    impl<'de, F: DeserializeOwned, const V: u8> Deserialize<'de> for Derived<F, V> {
        fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            if probing() {
                let name = ["Outer", "Inner", "Other"][usize::from(V)];
                record::<Self>(
                    name,
                    &[&format!("struct {name}{{f:"), ",}"],
                    &[describe_in::<F>],
                );
            }
            Err(de::Error::custom("type probe"))
        }
    }

    type Inner<F> = Derived<F, 1>;
    type Outer<F> = Derived<F, 0>;

    /// `enum Tree { Leaf(u8), Node(Box<Tree>) }`, by hand.
    struct Tree;

    impl<'de> Deserialize<'de> for Tree {
        fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            if probing() {
                record::<Self>(
                    "Tree",
                    &["enum Tree{Leaf(", "),Node(", "),}"],
                    &[describe_in::<u8>, describe_in::<Box<Tree>>],
                );
            }
            Err(de::Error::custom("type probe"))
        }
    }

    #[test]
    fn plain_types_are_described_by_name() {
        assert_eq!(describe::<u64>(), "u64");
        assert_eq!(
            describe::<Vec<String>>(),
            "alloc::vec::Vec<alloc::string::String>"
        );
        assert!(!probing());
    }

    #[test]
    fn names_lose_their_module_paths() {
        assert_eq!(
            name_of::<(Option<std::path::PathBuf>, [u8; 3])>(),
            "(Option<PathBuf>, [u8; 3])"
        );
    }

    #[test]
    fn nested_derived_types_are_described_by_their_structure() {
        assert_eq!(
            describe::<Outer<Inner<u32>>>(),
            "struct Outer{f:struct Inner{f:u32,},}"
        );
        assert_ne!(
            describe::<Outer<Inner<u32>>>(),
            describe::<Outer<Inner<u64>>>()
        );
        assert_eq!(
            describe::<Outer<Inner<u32>>>(),
            describe::<Outer<Inner<u32>>>()
        );
    }

    #[test]
    fn derived_types_inside_std_containers_are_reached() {
        assert_eq!(
            describe::<Vec<Inner<u8>>>(),
            "Vec<Derived<u8, 1>> with struct Inner{f:u8,}"
        );
        assert_eq!(
            describe::<Option<Box<Inner<u8>>>>(),
            "Option<Box<Derived<u8, 1>>> with struct Inner{f:u8,}"
        );
        let map = describe::<HashMap<String, Inner<i8>>>();
        assert!(map.ends_with("with struct Inner{f:i8,}"), "{map}");
        assert_ne!(map, describe::<HashMap<String, Inner<i16>>>());
    }

    #[test]
    fn a_type_that_comes_again_is_named_not_expanded() {
        assert_eq!(describe::<Tree>(), "enum Tree{Leaf(u8),Node(Tree),}");
        // The same type twice: written out once.
        assert_eq!(
            describe::<Outer<(Inner<u8>, Vec<Inner<u8>>)>>(),
            "struct Outer{f:(Derived<u8, 1>, Vec<Derived<u8, 1>>) with struct Inner{f:u8,},}"
        );
        assert!(!probing());
    }

    #[test]
    fn a_recursive_type_that_does_not_derive_ends_too() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct List(Option<Box<List>>);
        assert_eq!(describe::<List>(), std::any::type_name::<List>());
        assert_eq!(describe::<Vec<List>>(), std::any::type_name::<Vec<List>>());
    }
}
