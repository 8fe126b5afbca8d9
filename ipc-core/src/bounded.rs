//! Decoding a body within the receiver's bounds on nesting and on elements
//! that take no bytes. Pure: no syscalls, so it is unit tested and fuzzed.
//!
//! postcard bounds neither. A recursive message type
//! (`enum Tree { Leaf(u8), Node(Box<Tree>) }`) decodes a body of nested
//! `Node` tags by recursing once per byte until the stack overflows, and a
//! `Vec<()>` that announces 2^64 elements in 11 bytes loops for ever, since
//! each element takes no bytes to decode. So postcard's deserializer is
//! wrapped in one that counts: every nested value (option, struct, tuple,
//! sequence, map, enum variant) takes a level of [`Limits::max_depth`], a
//! level may begin only while the decode has taken less stack than
//! [`Limits::max_stack`] (a level's frames grow with the size of its
//! value, so the count alone does not bound the stack), and every
//! sequence element or map entry that consumed no byte of the body
//! takes one of [`Limits::max_zero_sized`]. Going over either is a decode
//! error that names the bound, and the channel goes on.
//!
//! The body is read through a postcard flavor over a `Cell`, which the
//! wrapper reads too: that is how it sees whether an element took bytes.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::{Deserialize, Serialize, Serializer};

use crate::limits::Limits;

/// Decodes `body` as a `T`, exactly (no trailing bytes), within `limits`.
/// The error says what was wrong, for `Error::Decode`.
///
/// A message that is a byte buffer (`Vec<u8>`) is read as one byte string,
/// a copy, where serde's `Vec<u8>` reads a byte at a time: postcard writes
/// both the same way (a length, then the bytes).
#[inline]
pub(crate) fn from_bytes<T: DeserializeOwned + 'static>(
    body: &[u8],
    limits: &Limits,
) -> Result<T, String> {
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        let ByteBuf(bytes) = decode::<ByteBuf>(body, limits)?;
        let mut message: Option<T> = None;
        if let Some(slot) = (&mut message as &mut dyn Any).downcast_mut::<Option<Vec<u8>>>() {
            *slot = Some(bytes);
        }
        return message.ok_or_else(|| unreachable!("T is Vec<u8>, checked above"));
    }
    decode(body, limits)
}

/// A byte string to send: what a `Vec<u8>` message is sent as.
pub(crate) struct ByteString<'a>(pub &'a [u8]);

impl Serialize for ByteString<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// A byte string received: what a `Vec<u8>` message is read as.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }
        }
        deserializer.deserialize_byte_buf(Bytes).map(ByteBuf)
    }
}

fn decode<T: DeserializeOwned>(body: &[u8], limits: &Limits) -> Result<T, String> {
    let state = State {
        stack_base: stack_address(),
        max_stack: limits.max_stack(),
        rest: Cell::new(body),
        zero_sized_left: Cell::new(limits.max_zero_sized()),
        exceeded: Cell::new(None),
    };
    let mut postcard = postcard::Deserializer::from_flavor(Input { rest: &state.rest });
    let bounded = Bounded {
        inner: &mut postcard,
        depth: limits.max_depth(),
        state: &state,
    };
    match T::deserialize(bounded) {
        Ok(value) => match state.rest.get().len() {
            0 => Ok(value),
            trailing => Err(format!("{trailing} bytes trail the message")),
        },
        Err(e) => Err(match state.exceeded.get() {
            Some(exceeded) => exceeded.to_string(),
            None => e.to_string(),
        }),
    }
}

/// An address in the stack frame of the caller: how deep the stack is
/// now. Safe Rust: the address of a local, never read through.
/// `black_box` keeps the local in memory, on the stack.
#[inline(always)]
fn stack_address() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// The shared state of one decode.
struct State<'de> {
    /// Where the stack was when the decode began.
    stack_base: usize,
    /// Bytes of stack the decode may take before it refuses to nest further.
    max_stack: usize,
    /// The bytes not decoded yet; postcard's flavor advances it.
    rest: Cell<&'de [u8]>,
    zero_sized_left: Cell<usize>,
    /// Which bound was crossed, kept beside postcard's error (whose custom
    /// errors keep no message).
    exceeded: Cell<Option<Exceeded>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    Depth,
    /// Nested within the depth limit, but each level so large that the
    /// decode took more than its stack budget.
    Stack,
    ZeroSized,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exceeded::Depth => f.write_str(
                "the message nests deeper than this receiver's depth limit (Limits::max_depth); \
                 raise it with Limits::with_max_depth if the peer is trusted and the type is that deep",
            ),
            Exceeded::Stack => f.write_str(
                "the message nests deeper than this receiver's decode stack allows \
                 (Limits::max_stack): each level of this type takes much stack; raise it \
                 with Limits::with_max_stack only if the peer is trusted and the receiving \
                 thread's stack has room, or box the large fields of the recursive type",
            ),
            Exceeded::ZeroSized => f.write_str(
                "the message holds more elements that take no bytes (such as `()`) than this \
                 receiver accepts (Limits::max_zero_sized); raise it with \
                 Limits::with_max_zero_sized if the peer is trusted",
            ),
        }
    }
}

impl State<'_> {
    fn exceed<E: de::Error>(&self, what: Exceeded) -> E {
        self.exceeded.set(Some(what));
        E::custom(what)
    }

    /// Refuses to go a level deeper once the decode has taken more stack
    /// than its budget. Called where a level begins, so a type whose
    /// levels hold large values is stopped by the stack they take, not
    /// only by their count.
    #[inline(always)]
    fn check_stack<E: de::Error>(&self) -> Result<(), E> {
        // The distance either way: a stack that grows up is measured too.
        if self.stack_base.abs_diff(stack_address()) > self.max_stack {
            return Err(self.exceed(Exceeded::Stack));
        }
        Ok(())
    }

    /// Counts an element that consumed no bytes.
    #[inline]
    fn zero_sized<E: de::Error>(&self) -> Result<(), E> {
        match self.zero_sized_left.get().checked_sub(1) {
            Some(left) => {
                self.zero_sized_left.set(left);
                Ok(())
            }
            None => Err(self.exceed(Exceeded::ZeroSized)),
        }
    }
}

/// postcard's input: the body, through the shared cell.
struct Input<'de> {
    rest: &'de Cell<&'de [u8]>,
}

impl<'de> postcard::de_flavors::Flavor<'de> for Input<'de> {
    type Remainder = ();
    type Source = &'de [u8];

    #[inline]
    fn pop(&mut self) -> postcard::Result<u8> {
        let (&byte, rest) = self
            .rest
            .get()
            .split_first()
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.rest.set(rest);
        Ok(byte)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        Some(self.rest.get().len())
    }

    #[inline]
    fn try_take_n(&mut self, count: usize) -> postcard::Result<&'de [u8]> {
        let rest = self.rest.get();
        if rest.len() < count {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let (taken, rest) = rest.split_at(count);
        self.rest.set(rest);
        Ok(taken)
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A deserializer with `depth` levels of nesting left.
struct Bounded<'s, 'de, D> {
    inner: D,
    depth: usize,
    state: &'s State<'de>,
}

impl<'s, 'de, D> Bounded<'s, 'de, D> {
    /// The visitor of a nested value, one level down; an error when no
    /// level is left.
    #[inline]
    fn nest<V, E: de::Error>(&self, visitor: V) -> Result<Guard<'s, 'de, V>, E> {
        self.state.check_stack()?;
        match self.depth.checked_sub(1) {
            Some(depth) => Ok(Guard {
                inner: visitor,
                depth,
                state: self.state,
            }),
            None => Err(self.state.exceed(Exceeded::Depth)),
        }
    }
}

/// Forwards calls that read one scalar: nothing nests below them.
macro_rules! scalars {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(visitor)
        }
    )*};
}

/// Forwards calls that may nest, one level down.
macro_rules! nested {
    ($($method:ident $(($($arg:ident: $ty:ty),*))?)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, $($($arg: $ty,)*)? visitor: V) -> Result<V::Value, D::Error> {
            let visitor = self.nest(visitor)?;
            self.inner.$method($($($arg,)*)? visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<'_, 'de, D> {
    type Error = D::Error;

    scalars! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }

    nested! {
        deserialize_any deserialize_ignored_any deserialize_option deserialize_seq
        deserialize_map
        deserialize_unit_struct(name: &'static str)
        deserialize_newtype_struct(name: &'static str)
        deserialize_tuple(len: usize)
        deserialize_tuple_struct(name: &'static str, len: usize)
        deserialize_struct(name: &'static str, fields: &'static [&'static str])
        deserialize_enum(name: &'static str, variants: &'static [&'static str])
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A visitor of a value at `depth`: whatever it is handed to read further
/// is bounded too.
struct Guard<'s, 'de, V> {
    inner: V,
    depth: usize,
    state: &'s State<'de>,
}

impl<'s, 'de, V> Guard<'s, 'de, V> {
    fn wrap<T>(&self, inner: T) -> Bounded<'s, 'de, T> {
        Bounded {
            inner,
            depth: self.depth,
            state: self.state,
        }
    }
}

macro_rules! visit_scalars {
    ($($method:ident($ty:ty))*) => {$(
        #[inline]
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Guard<'_, 'de, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    visit_scalars! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
        visit_i128(i128) visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64)
        visit_u128(u128) visit_f32(f32) visit_f64(f64) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    #[inline]
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let bounded = self.wrap(deserializer);
        self.inner.visit_some(bounded)
    }

    #[inline]
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        let bounded = self.wrap(deserializer);
        self.inner.visit_newtype_struct(bounded)
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let bounded = self.wrap(seq);
        self.inner.visit_seq(bounded)
    }

    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let bounded = BoundedMap {
            entry_start: 0,
            access: self.wrap(map),
        };
        self.inner.visit_map(bounded)
    }

    #[inline]
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let bounded = self.wrap(data);
        self.inner.visit_enum(bounded)
    }
}

/// A seed whose value is read at the seed's depth.
struct Seed<'s, 'de, S> {
    inner: S,
    depth: usize,
    state: &'s State<'de>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, 'de, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Bounded {
            inner: deserializer,
            depth: self.depth,
            state: self.state,
        })
    }
}

impl<'s, 'de, T> Bounded<'s, 'de, T> {
    fn seed<S>(&self, inner: S) -> Seed<'s, 'de, S> {
        Seed {
            inner,
            depth: self.depth,
            state: self.state,
        }
    }

    /// Bytes of the body not decoded yet.
    fn rest(&self) -> usize {
        self.state.rest.get().len()
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Bounded<'_, 'de, A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let before = self.rest();
        let element = self.inner.next_element_seed(self.seed(seed))?;
        if element.is_some() && self.rest() == before {
            self.state.zero_sized()?;
        }
        Ok(element)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A map whose entries are counted as sequence elements are.
struct BoundedMap<'s, 'de, A> {
    /// Body bytes left when the current entry's key was read.
    entry_start: usize,
    access: Bounded<'s, 'de, A>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for BoundedMap<'_, 'de, A> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.entry_start = self.access.rest();
        let seed = self.access.seed(seed);
        self.access.inner.next_key_seed(seed)
    }

    #[inline]
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.access.seed(seed);
        let value = self.access.inner.next_value_seed(seed)?;
        if self.access.rest() == self.entry_start {
            self.access.state.zero_sized()?;
        }
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        self.access.inner.size_hint()
    }
}

impl<'s, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Bounded<'s, 'de, A> {
    type Error = A::Error;
    type Variant = Bounded<'s, 'de, A::Variant>;

    #[inline]
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let seed = self.seed(seed);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            Bounded {
                inner: variant,
                depth: self.depth,
                state: self.state,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Bounded<'_, 'de, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    #[inline]
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.nest(visitor)?;
        self.inner.tuple_variant(len, visitor)
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.nest(visitor)?;
        self.inner.struct_variant(fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Tree {
        Leaf(u8),
        Node(Box<Tree>),
        Pair {
            left: Box<Tree>,
            right: Option<Box<Tree>>,
        },
    }

    fn limits(depth: usize, zero_sized: usize) -> Limits {
        Limits::default()
            .with_max_depth(depth)
            .with_max_zero_sized(zero_sized)
    }

    fn nodes(depth: usize) -> Vec<u8> {
        let mut body = vec![1; depth];
        body.extend([0, 7]);
        body
    }

    #[test]
    fn values_within_the_bounds_decode_as_postcard_does() {
        let tree = Tree::Pair {
            left: Box::new(Tree::Node(Box::new(Tree::Leaf(3)))),
            right: Some(Box::new(Tree::Leaf(4))),
        };
        let body = postcard::to_allocvec(&tree).unwrap();
        assert_eq!(from_bytes::<Tree>(&body, &Limits::default()), Ok(tree));
        let map: BTreeMap<String, Vec<Option<(u8, ())>>> =
            [("a".to_string(), vec![Some((1, ())), None])].into();
        let body = postcard::to_allocvec(&map).unwrap();
        assert_eq!(from_bytes(&body, &Limits::default()), Ok(map));
        assert_eq!(
            from_bytes::<Vec<()>>(&[3], &limits(128, 3)),
            Ok(vec![(), (), ()])
        );
    }

    #[test]
    fn nesting_past_the_depth_is_refused_without_recursing_further() {
        // 200 levels decode with room, fail one level short.
        assert!(from_bytes::<Tree>(&nodes(200), &limits(201, 0)).is_ok());
        let err = from_bytes::<Tree>(&nodes(200), &limits(200, 0)).unwrap_err();
        assert!(err.contains("Limits::max_depth"), "{err}");
        // A million nested tags would overflow any stack; refused at once.
        let err = from_bytes::<Tree>(&nodes(1_000_000), &Limits::default()).unwrap_err();
        assert!(err.contains("deeper"), "{err}");
    }

    #[test]
    fn nesting_past_the_stack_budget_is_refused() {
        let stack = |bytes| Limits::default().with_max_stack(bytes);
        let err = from_bytes::<Tree>(&nodes(10), &stack(0)).unwrap_err();
        assert!(err.contains("Limits::max_stack"), "{err}");
        // A flat value takes no level past the first check.
        assert_eq!(from_bytes::<u8>(&[3], &stack(0)), Ok(3));
        assert!(from_bytes::<Tree>(&nodes(10), &stack(64 << 10)).is_ok());
    }

    #[test]
    fn zero_sized_elements_are_counted_and_bounded() {
        // A Vec<()> announcing u64::MAX elements in 11 bytes.
        let mut body = vec![0xff; 9];
        body.push(0x01);
        let err = from_bytes::<Vec<()>>(&body, &limits(128, 1000)).unwrap_err();
        assert!(err.contains("Limits::max_zero_sized"), "{err}");
        // Entries of a map count as well.
        let err = from_bytes::<BTreeMap<(), ()>>(&body, &limits(128, 10)).unwrap_err();
        assert!(err.contains("take no bytes"), "{err}");
        // Elements that take bytes are not counted.
        let bytes = postcard::to_allocvec(&vec![1u16; 5000]).unwrap();
        assert_eq!(
            from_bytes::<Vec<u16>>(&bytes, &limits(128, 0)),
            Ok(vec![1; 5000])
        );
    }

    #[test]
    fn trailing_and_missing_bytes_are_errors() {
        assert!(from_bytes::<u8>(&[1, 2], &Limits::default())
            .unwrap_err()
            .contains("1 bytes trail"));
        assert!(from_bytes::<(u8, u8)>(&[1], &Limits::default()).is_err());
    }
}
