//! How `#[derive(IpcMessage)]` routes a field.
//!
//! The derive reads the field's type and writes a *shape*: a type that
//! mirrors it, with [`Desc`](shape::Desc) where a descriptor sits and
//! [`Plain`](shape::Plain) where an ordinary serde value does.
//! `Option<(String, File)>` has the shape `Opt<(Plain, Desc)>`.
//! [`Carry<Shape>`] is implemented for every type of that shape, so the
//! compiler, not the macro, checks each leaf.
//!
//! A field that is one leaf goes through the leaf's own trait, [`Serde`] or
//! [`Descriptor`]: when its type cannot travel, the error is that trait's
//! message, which names the fix, and nothing about shapes. Each field is
//! written and read through the same trait at the same span, so the
//! compiler reports a type that cannot travel once, not once per direction.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fd::{deserialize_fd, serialize_fd};
use crate::fingerprint;
use crate::sidecar;

mod bulk;

pub use bulk::{Number, PodElement};

/// Shapes: types that only name how a field is carried.
pub mod shape {
    use std::marker::PhantomData;

    /// A value with serde impls of its own.
    #[derive(Debug)]
    pub struct Plain;
    /// A descriptor: `AsFd + From<OwnedFd>`.
    #[derive(Debug)]
    pub struct Desc;
    /// A `memfd::Memfd`, checked to be a memfd on receipt.
    #[derive(Debug)]
    pub struct Memfd;
    /// `Vec<u8>`, carried as bytes.
    #[derive(Debug)]
    pub struct Bytes;
    /// `[u8; N]`, carried as bytes.
    #[derive(Debug)]
    pub struct ByteArray;
    /// `Vec<T>` or `Box<[T]>` of a primitive number, carried as its
    /// little-endian bytes.
    #[derive(Debug)]
    pub struct Numbers;
    /// `[T; N]` of a primitive number, carried as its little-endian bytes.
    #[derive(Debug)]
    pub struct NumberArray;
    /// `#[ipc(pod)]`: `Vec<T>`, `Box<[T]>` or `[T; N]` of a `Pod` type,
    /// carried as its bytes in this host's layout.
    #[derive(Debug)]
    pub struct Pod;
    /// `Option<T>`.
    #[derive(Debug)]
    pub struct Opt<S>(PhantomData<S>);
    /// `Vec<T>`, `VecDeque<T>`, `Box<[T]>`.
    #[derive(Debug)]
    pub struct Seq<S>(PhantomData<S>);
    /// `Box<T>`, `Arc<T>`, `Rc<T>`.
    #[derive(Debug)]
    pub struct Boxed<S>(PhantomData<S>);
    /// `[T; N]`.
    #[derive(Debug)]
    pub struct Array<S>(PhantomData<S>);
    /// `HashMap<K, V>`, `BTreeMap<K, V>`: plain keys, values in shape `S`.
    #[derive(Debug)]
    pub struct Map<S>(PhantomData<S>);
}

/// A type that travels in the shape `S`: implemented for each leaf and
/// container a shape names.
pub trait Carry<S>: Sized {
    /// Serializes `self` in shape `S`.
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error>;
    /// Deserializes a `Self` in shape `S`.
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error>;
    /// What `Self` in shape `S` looks like, for the handshake.
    fn describe(_: PhantomData<Self>) -> String {
        std::any::type_name::<Self>().to_string()
    }
}

/// A field of plain serde: the derive routes every field through it that
/// holds no descriptor it can see. Its one impl is for every
/// `T: Serialize + DeserializeOwned`; the bound sits on that impl, not on
/// the trait, so a type that cannot travel is reported by this trait's
/// message alone.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel in an IpcMessage: serde cannot carry it, and the derive sees no descriptor in it to carry instead",
    label = "needs `Serialize` and `Deserialize` for all it holds",
    note = "a descriptor here (a generic parameter, a container of another crate) travels as `ipc_core::Fd<T>`: write `Fd<File>` where you wrote `File`",
    note = "a generic field that always holds a descriptor can say so with `#[ipc(fd)]`",
    note = "any other type needs serde's `Serialize` and `Deserialize` impls"
)]
pub trait Serde: Sized {
    /// Serializes `self`.
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error>;
    /// Deserializes a `Self`.
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error>;
    /// What `Self` looks like, for the handshake.
    fn describe(_: PhantomData<Self>) -> String;
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Serde for T {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.serialize(serializer)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        T::deserialize(deserializer)
    }
    fn describe(_: PhantomData<Self>) -> String {
        fingerprint::describe_in::<T>()
    }
}

/// A type that owns exactly one descriptor: sent by `AsFd`, rebuilt on
/// receipt by `From<OwnedFd>`. Its one impl holds the bound, as for
/// [`Serde`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel as a descriptor: it must implement `AsFd` to be sent and `From<OwnedFd>` to be rebuilt on receipt",
    label = "not a descriptor type that can be rebuilt from an `OwnedFd`",
    note = "a type that owns a descriptor but cannot be rebuilt from one (tokio's `UnixStream`, say) travels as its std type: convert it (`into_std()`) before sending and back (`from_std()`) after receipt, or send an `OwnedFd`",
    note = "a type with serde impls travels as plain serde: drop `#[ipc(fd)]`, or mark a field whose type only shares a descriptor type's name `#[ipc(serde)]`"
)]
pub trait Descriptor: Sized {
    /// Writes the descriptor into the sidecar and its index into the body.
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error>;
    /// Takes the descriptor at the index read from the body.
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error>;
    /// What `Self` is, for the handshake.
    fn describe(_: PhantomData<Self>) -> String {
        std::any::type_name::<Self>().to_string()
    }
}

#[diagnostic::do_not_recommend]
impl<T: AsFd + From<OwnedFd>> Descriptor for T {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serialize_fd(self.as_fd(), serializer)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        deserialize_fd(deserializer).map(T::from)
    }
}

/// A field whose type holds descriptors in shape `S`: what generated code
/// names for it. Its one impl is for every `T: Carry<S>`, so the compiler
/// reports the part of the type that cannot travel, by its own trait's
/// message, and lists no impls of `Carry` beside it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel as this field of an IpcMessage",
    label = "this field's type holds something that is neither a descriptor nor serde-serializable",
    note = "a descriptor the derive does not see travels as `ipc_core::Fd<T>`; any other type needs serde's `Serialize` and `Deserialize`"
)]
pub trait Walk<S>: Sized {
    /// Serializes `self` in shape `S`.
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error>;
    /// Deserializes a `Self` in shape `S`.
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error>;
    /// What `Self` in shape `S` looks like, for the handshake.
    fn describe(_: PhantomData<Self>) -> String;
}

impl<S, T: Carry<S>> Walk<S> for T {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        Carry::carry(self, serializer)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        <T as Carry<S>>::fetch(deserializer)
    }
    fn describe(_: PhantomData<Self>) -> String {
        <T as Carry<S>>::describe(PhantomData)
    }
}

/// What a field is described by when the derive leaves it to serde alone
/// (a field with `#[serde(with = ...)]`, say): its type's name.
pub fn named<T: ?Sized>() -> String {
    std::any::type_name::<T>().to_string()
}

/// `&T` as a serde value in shape `S`.
struct Via<'a, S, T>(&'a T, PhantomData<S>);

impl<S, T: Carry<S>> Serialize for Via<'_, S, T> {
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.0.carry(serializer)
    }
}

fn via<S, T>(value: &T) -> Via<'_, S, T> {
    Via(value, PhantomData)
}

/// A `T` read in shape `S`.
struct From_<S, T>(T, PhantomData<S>);

impl<'de, S, T: Carry<S>> Deserialize<'de> for From_<S, T> {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        T::fetch(deserializer).map(|value| From_(value, PhantomData))
    }
}

impl<T: Serde> Carry<shape::Plain> for T {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        Serde::carry(self, serializer)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        <T as Serde>::fetch(deserializer)
    }
    fn describe(_: PhantomData<Self>) -> String {
        <T as Serde>::describe(PhantomData)
    }
}

impl<T: Descriptor> Carry<shape::Desc> for T {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        Descriptor::carry(self, serializer)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        <T as Descriptor>::fetch(deserializer)
    }
}

impl Carry<shape::Memfd> for memfd::Memfd {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serialize_fd(self.as_file().as_fd(), serializer)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        let fd = deserialize_fd(deserializer)?;
        // memfd's own check takes any file that answers F_GET_SEALS: a
        // tmpfs file of /dev/shm would pass.
        let checked =
            crate::sealing::check(&fd, nix::fcntl::SealFlag::empty(), "a memfd::Memfd field");
        if let Err(why) = checked {
            return Err(de::Error::custom(sidecar::refuse(fd, why)));
        }
        memfd::Memfd::try_from_fd(fd).map_err(|fd| {
            de::Error::custom(sidecar::refuse(
                fd,
                "a memfd::Memfd field received a descriptor that is not a memfd".into(),
            ))
        })
    }
}

/// `Vec<u8>` as one byte string rather than a sequence of `u8`: postcard
/// writes both alike (a length, then the bytes), but this is one copy where
/// serde's `Vec<T>` makes a call per byte.
impl Carry<shape::Bytes> for Vec<u8> {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.serialize_bytes(self)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    bytes.push(b);
                }
                Ok(bytes)
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
    fn describe(_: PhantomData<Self>) -> String {
        "bytes".into()
    }
}

/// `[u8; N]` as one byte string rather than a tuple of `N` bytes: a length
/// byte more on the wire (for `N` under 128), and one copy each way where
/// serde's `[T; N]` makes a call per byte. A hash or a key in a message
/// costs a `memcpy`, not hundreds of instructions.
impl<const N: usize> Carry<shape::ByteArray> for [u8; N] {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.serialize_bytes(self)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        struct ByteArrayVisitor<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for ByteArrayVisitor<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<[u8; N], E> {
                bytes
                    .try_into()
                    .map_err(|_| E::invalid_length(bytes.len(), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
                let mut bytes = [0; N];
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(N + 1, &self));
                }
                Ok(bytes)
            }
        }
        deserializer.deserialize_bytes(ByteArrayVisitor::<N>)
    }
    fn describe(_: PhantomData<Self>) -> String {
        format!("[bytes;{N}]")
    }
}

impl<S, T: Carry<S>> Carry<shape::Opt<S>> for Option<T> {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        match self {
            None => serializer.serialize_none(),
            Some(value) => serializer.serialize_some(&via::<S, T>(value)),
        }
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        Option::<From_<S, T>>::deserialize(deserializer).map(|o| o.map(|v| v.0))
    }
    fn describe(_: PhantomData<Self>) -> String {
        format!("Option<{}>", T::describe(PhantomData))
    }
}

/// Sequences of values in shape `S`: each is written as serde writes a
/// sequence and collected from serde's `Vec`, so the allocation is reused.
macro_rules! seq_carry {
    ($($seq:ident<$t:ident> => $name:literal),+ $(,)?) => {$(
        impl<S, $t: Carry<S>> Carry<shape::Seq<S>> for $seq<$t> {
            fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
                serializer.collect_seq(self.iter().map(via::<S, $t>))
            }
            fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
                // From_<S, T> has T's layout, so this collect reuses the allocation.
                Vec::<From_<S, $t>>::deserialize(deserializer)
                    .map(|v| v.into_iter().map(|x| x.0).collect())
            }
            fn describe(_: PhantomData<Self>) -> String {
                format!($name, $t::describe(PhantomData))
            }
        }
    )+};
}

type BoxedSlice<T> = Box<[T]>;
seq_carry!(Vec<T> => "Vec<{}>", VecDeque<T> => "VecDeque<{}>", BoxedSlice<T> => "Box<[{}]>");

/// Owning pointers to one value in shape `S`: sending needs only `&T`; a
/// received one is a fresh pointer to the value read.
macro_rules! pointer_carry {
    ($($ptr:ident => $name:literal),+ $(,)?) => {$(
        impl<S, T: Carry<S>> Carry<shape::Boxed<S>> for $ptr<T> {
            fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
                (**self).carry(serializer)
            }
            fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
                T::fetch(deserializer).map($ptr::new)
            }
            fn describe(_: PhantomData<Self>) -> String {
                format!(concat!($name, "<{}>"), T::describe(PhantomData))
            }
        }
    )+};
}

pointer_carry!(Box => "Box", Arc => "Arc", Rc => "Rc");

/// Maps with plain serde keys and values in shape `S`, written as serde
/// writes a map.
macro_rules! map_carry {
    ($($map:ident<K, V $(, $h:ident)?> where K: $($kb:path),+ => $name:literal),+ $(,)?) => {$(
        impl<S, K, V: Carry<S> $(, $h)?> Carry<shape::Map<S>> for $map<K, V $(, $h)?>
        where
            K: Carry<shape::Plain> $(+ $kb)+,
            $($h: BuildHasher + Default,)?
        {
            fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
                serializer.collect_map(
                    self.iter()
                        .map(|(k, v)| (via::<shape::Plain, K>(k), via::<S, V>(v))),
                )
            }
            fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
                struct MapVisitor<S, M>(PhantomData<(S, M)>);
                impl<'de, S, K, V: Carry<S> $(, $h)?> Visitor<'de> for MapVisitor<S, $map<K, V $(, $h)?>>
                where
                    K: Carry<shape::Plain> $(+ $kb)+,
                    $($h: BuildHasher + Default,)?
                {
                    type Value = $map<K, V $(, $h)?>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a map")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                        let mut map = Self::Value::default();
                        while let Some((k, v)) =
                            access.next_entry::<From_<shape::Plain, K>, From_<S, V>>()?
                        {
                            map.insert(k.0, v.0);
                        }
                        Ok(map)
                    }
                }
                deserializer.deserialize_map(MapVisitor::<S, Self>(PhantomData))
            }
            fn describe(_: PhantomData<Self>) -> String {
                format!(concat!($name, "<{},{}>"), <K as Carry<shape::Plain>>::describe(PhantomData), V::describe(PhantomData))
            }
        }
    )+};
}

map_carry!(
    HashMap<K, V, H> where K: Eq, Hash => "HashMap",
    BTreeMap<K, V> where K: Ord => "BTreeMap",
);

impl<S, T: Carry<S>, const N: usize> Carry<shape::Array<S>> for [T; N] {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let mut tuple = serializer.serialize_tuple(N)?;
        for value in self {
            tuple.serialize_element(&via::<S, T>(value))?;
        }
        tuple.end()
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        struct ArrayVisitor<S, T, const N: usize>(PhantomData<(S, T)>);
        impl<'de, S, T: Carry<S>, const N: usize> Visitor<'de> for ArrayVisitor<S, T, N> {
            type Value = [T; N];
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of {N} elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[T; N], A::Error> {
                let mut values = Vec::with_capacity(N);
                for i in 0..N {
                    match seq.next_element::<From_<S, T>>()? {
                        Some(value) => values.push(value.0),
                        None => return Err(de::Error::invalid_length(i, &self)),
                    }
                }
                values
                    .try_into()
                    .map_err(|_| de::Error::invalid_length(N, &self))
            }
        }
        deserializer.deserialize_tuple(N, ArrayVisitor::<S, T, N>(PhantomData))
    }
    fn describe(_: PhantomData<Self>) -> String {
        format!("[{};{N}]", T::describe(PhantomData))
    }
}

macro_rules! tuple_carry {
    ($len:literal => $($t:ident $s:ident $i:tt),+) => {
        impl<$($s, $t: Carry<$s>),+> Carry<($($s,)+)> for ($($t,)+) {
            fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
                let mut tuple = serializer.serialize_tuple($len)?;
                $(tuple.serialize_element(&via::<$s, $t>(&self.$i))?;)+
                tuple.end()
            }
            fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
                <($(From_<$s, $t>,)+)>::deserialize(deserializer).map(|v| ($(v.$i.0,)+))
            }
            fn describe(_: PhantomData<Self>) -> String {
                let parts: [String; $len] = [$($t::describe(PhantomData)),+];
                format!("({},)", parts.join(","))
            }
        }
    };
}

tuple_carry!(1 => A SA 0);
tuple_carry!(2 => A SA 0, B SB 1);
tuple_carry!(3 => A SA 0, B SB 1, C SC 2);
tuple_carry!(4 => A SA 0, B SB 1, C SC 2, D SD 3);
tuple_carry!(5 => A SA 0, B SB 1, C SC 2, D SD 3, E SE 4);
tuple_carry!(6 => A SA 0, B SB 1, C SC 2, D SD 3, E SE 4, F SF 5);
tuple_carry!(7 => A SA 0, B SB 1, C SC 2, D SD 3, E SE 4, F SF 5, G SG 6);
tuple_carry!(8 => A SA 0, B SB 1, C SC 2, D SD 3, E SE 4, F SF 5, G SG 6, H SH 7);
