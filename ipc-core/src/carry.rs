//! How `#[derive(IpcMessage)]` routes a field that holds descriptors of
//! foreign types (`File`, `OwnedFd`, `Vec<UnixStream>`, ...), which have no
//! serde impls of their own.
//!
//! The derive reads the field's type and writes a *shape*: a type that
//! mirrors it, with [`Desc`](shape::Desc) where a descriptor sits and
//! [`Plain`](shape::Plain) where an ordinary serde value does.
//! `Option<(String, File)>` has the shape `Opt<(Plain, Desc)>`.
//! [`Carry<Shape>`] is implemented for every type of that shape, so the
//! compiler, not the macro, checks each leaf.

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};

use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fd::{deserialize_fd, serialize_fd};
use crate::sidecar;

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
    /// `Option<T>`.
    #[derive(Debug)]
    pub struct Opt<S>(PhantomData<S>);
    /// `Vec<T>`.
    #[derive(Debug)]
    pub struct Seq<S>(PhantomData<S>);
    /// `Box<T>`.
    #[derive(Debug)]
    pub struct Boxed<S>(PhantomData<S>);
    /// `[T; N]`.
    #[derive(Debug)]
    pub struct Array<S>(PhantomData<S>);
}

/// A type that travels in the shape `S`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel as this field of an IpcMessage",
    label = "this field's type holds something that is neither a descriptor nor serde-serializable",
    note = "descriptor leaves must implement `AsFd + From<OwnedFd>`; other leaves need `Serialize + DeserializeOwned`; wrap anything else in `ipc_core::Fd<T>`"
)]
pub trait Carry<S>: Sized {
    /// Serializes `self` in shape `S`.
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error>;
    /// Deserializes a `Self` in shape `S`.
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error>;
}

/// The function `#[serde(serialize_with)]` names for a routed field.
pub fn serialize<Sh, T: Carry<Sh>, Ser: Serializer>(
    value: &T,
    serializer: Ser,
) -> Result<Ser::Ok, Ser::Error> {
    value.carry(serializer)
}

/// The function `#[serde(deserialize_with)]` names for a routed field.
pub fn deserialize<'de, Sh, T: Carry<Sh>, De: Deserializer<'de>>(
    deserializer: De,
) -> Result<T, De::Error> {
    T::fetch(deserializer)
}

/// A type that `#[ipc(fd)]` may route: it owns exactly one descriptor.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a descriptor type, so `#[ipc(fd)]` cannot route it",
    label = "`#[ipc(fd)]` needs a type that implements `AsFd` and `From<OwnedFd>`",
    note = "remove `#[ipc(fd)]` for a type with serde impls, or implement `AsFd` and `From<OwnedFd>` for it"
)]
pub trait Descriptor: AsFd + From<OwnedFd> {}
#[diagnostic::do_not_recommend]
impl<T: AsFd + From<OwnedFd>> Descriptor for T {}

/// The function `#[serde(serialize_with)]` names for an `#[ipc(fd)]` field.
pub fn serialize_descriptor<T: Descriptor, Ser: Serializer>(
    value: &T,
    serializer: Ser,
) -> Result<Ser::Ok, Ser::Error> {
    serialize_fd(value.as_fd(), serializer)
}

/// The function `#[serde(deserialize_with)]` names for an `#[ipc(fd)]` field.
pub fn deserialize_descriptor<'de, T: Descriptor, De: Deserializer<'de>>(
    deserializer: De,
) -> Result<T, De::Error> {
    deserialize_fd(deserializer).map(T::from)
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

impl<T: Serialize + DeserializeOwned> Carry<shape::Plain> for T {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.serialize(serializer)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        T::deserialize(deserializer)
    }
}

impl<T: Descriptor> Carry<shape::Desc> for T {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serialize_fd(self.as_fd(), serializer)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        deserialize_fd(deserializer).map(T::from)
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
            return Err(de::Error::custom(sidecar::reject(why)));
        }
        memfd::Memfd::try_from_fd(fd).map_err(|_| {
            de::Error::custom(sidecar::reject(
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
}

impl<S, T: Carry<S>> Carry<shape::Seq<S>> for Vec<T> {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.collect_seq(self.iter().map(via::<S, T>))
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        // From_<S, T> has T's layout, so this collect reuses the allocation.
        Vec::<From_<S, T>>::deserialize(deserializer).map(|v| v.into_iter().map(|x| x.0).collect())
    }
}

impl<S, T: Carry<S>> Carry<shape::Boxed<S>> for Box<T> {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        (**self).carry(serializer)
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        T::fetch(deserializer).map(Box::new)
    }
}

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
