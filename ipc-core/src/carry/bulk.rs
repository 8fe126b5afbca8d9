//! Bulk numeric data in one copy: `Vec<T>`, `Box<[T]>` and `[T; N]` of a
//! primitive number travel as one byte string, little endian, where serde
//! makes a call per element.
//!
//! On a little-endian host sending is a cast of the slice to its bytes, no
//! copy; receiving builds the values in one pass over the bytes, a loop
//! the compiler vectorizes. A big-endian host swaps each element both ways.
//! `bool` and `char` are checked on receipt: a byte other than 0 or 1, or a
//! number that is not a Unicode scalar value, is a decode error.
//!
//! `#[ipc(pod)]` carries the same containers of any `bytemuck::Pod` type in
//! this host's layout, as a cast both ways: for two processes on one host.

use std::borrow::Cow;
use std::marker::PhantomData;

use bytemuck::Pod;
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

use super::{shape, Carry};

mod sealed {
    pub trait Sealed {}
}

/// A primitive number (or `bool`, `char`) that travels in bulk as its
/// little-endian bytes.
pub trait Number: Copy + Default + sealed::Sealed {
    /// The element's name, for errors and the handshake.
    const NAME: &'static str;
    /// Bytes per element on the wire.
    const SIZE: usize;
    /// The little-endian bytes of `values`: borrowed where the host is
    /// little endian.
    fn encode(values: &[Self]) -> Cow<'_, [u8]>;
    /// One element from exactly [`SIZE`](Number::SIZE) bytes, or `None` when
    /// they are no valid `Self`.
    fn read(chunk: &[u8]) -> Option<Self>;
    /// Every element of `bytes`, whose length is a multiple of `SIZE`, or
    /// `None` when one of them is no valid `Self`.
    fn decode(bytes: &[u8]) -> Option<Vec<Self>>;
}

macro_rules! numbers {
    ($($t:ty),+) => {$(
        impl sealed::Sealed for $t {}
        impl Number for $t {
            const NAME: &'static str = stringify!($t);
            const SIZE: usize = std::mem::size_of::<$t>();
            fn encode(values: &[Self]) -> Cow<'_, [u8]> {
                #[cfg(target_endian = "little")]
                return Cow::Borrowed(bytemuck::cast_slice(values));
                #[cfg(target_endian = "big")]
                return Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect());
            }
            fn read(chunk: &[u8]) -> Option<Self> {
                chunk.try_into().ok().map(<$t>::from_le_bytes)
            }
            fn decode(bytes: &[u8]) -> Option<Vec<Self>> {
                // Every chunk has SIZE bytes: the fallback is never taken, and
                // the loop has no branch to keep it from vectorizing.
                Some(
                    bytes
                        .chunks_exact(Self::SIZE)
                        .map(|c| c.try_into().map_or(<$t>::default(), <$t>::from_le_bytes))
                        .collect(),
                )
            }
        }
    )+};
}

numbers!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

impl sealed::Sealed for bool {}
impl Number for bool {
    const NAME: &'static str = "bool";
    const SIZE: usize = 1;
    fn encode(values: &[Self]) -> Cow<'_, [u8]> {
        // One byte, 0 or 1, whatever the host's byte order.
        Cow::Borrowed(bytemuck::cast_slice(values))
    }
    fn read(chunk: &[u8]) -> Option<Self> {
        match chunk {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
    fn decode(bytes: &[u8]) -> Option<Vec<Self>> {
        bytes.chunks_exact(1).map(Self::read).collect()
    }
}

impl sealed::Sealed for char {}
impl Number for char {
    const NAME: &'static str = "char";
    const SIZE: usize = 4;
    fn encode(values: &[Self]) -> Cow<'_, [u8]> {
        #[cfg(target_endian = "little")]
        return Cow::Borrowed(bytemuck::cast_slice(values));
        #[cfg(target_endian = "big")]
        return Cow::Owned(
            values
                .iter()
                .flat_map(|&c| u32::from(c).to_le_bytes())
                .collect(),
        );
    }
    fn read(chunk: &[u8]) -> Option<Self> {
        char::from_u32(u32::from_le_bytes(chunk.try_into().ok()?))
    }
    fn decode(bytes: &[u8]) -> Option<Vec<Self>> {
        bytes.chunks_exact(Self::SIZE).map(Self::read).collect()
    }
}

/// Reads one byte string with `read`, which sees its bytes.
fn fetch_bytes<'de, De, T>(
    deserializer: De,
    expecting: impl Fn(&mut std::fmt::Formatter<'_>) -> std::fmt::Result,
    read: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, De::Error>
where
    De: Deserializer<'de>,
{
    struct BytesOf<E, R>(E, R);
    impl<'de, T, E, R> Visitor<'de> for BytesOf<E, R>
    where
        E: Fn(&mut std::fmt::Formatter<'_>) -> std::fmt::Result,
        R: FnOnce(&[u8]) -> Result<T, String>,
    {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            (self.0)(f)
        }
        fn visit_bytes<Er: de::Error>(self, bytes: &[u8]) -> Result<T, Er> {
            (self.1)(bytes).map_err(Er::custom)
        }
    }
    deserializer.deserialize_bytes(BytesOf(expecting, read))
}

/// Elements of `size` bytes each in `bytes`, or why not.
fn whole(bytes: &[u8], size: usize, name: &str) -> Result<usize, String> {
    if size != 0 && bytes.len() % size == 0 {
        Ok(bytes.len() / size)
    } else {
        Err(format!(
            "{} bytes are not a whole number of {size}-byte {name} elements",
            bytes.len()
        ))
    }
}

fn invalid(name: &str) -> String {
    format!("an element is not a valid {name}")
}

fn fetch_numbers<'de, De: Deserializer<'de>, T: Number>(
    deserializer: De,
) -> Result<Vec<T>, De::Error> {
    fetch_bytes(
        deserializer,
        |f| write!(f, "{} elements as little-endian bytes", T::NAME),
        |bytes| {
            whole(bytes, T::SIZE, T::NAME)?;
            T::decode(bytes).ok_or_else(|| invalid(T::NAME))
        },
    )
}

impl<T: Number> Carry<shape::Numbers> for Vec<T> {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.serialize_bytes(&T::encode(self))
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        fetch_numbers(deserializer)
    }
    fn describe(_: PhantomData<Self>) -> String {
        format!("Vec<{}>le", T::NAME)
    }
}

impl<T: Number> Carry<shape::Numbers> for Box<[T]> {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.serialize_bytes(&T::encode(self))
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        fetch_numbers(deserializer).map(Vec::into_boxed_slice)
    }
    fn describe(_: PhantomData<Self>) -> String {
        format!("Box<[{}]>le", T::NAME)
    }
}

impl<T: Number, const N: usize> Carry<shape::NumberArray> for [T; N] {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.serialize_bytes(&T::encode(self))
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        fetch_bytes(
            deserializer,
            |f| write!(f, "{N} {} elements as little-endian bytes", T::NAME),
            |bytes| {
                if whole(bytes, T::SIZE, T::NAME)? != N {
                    return Err(format!(
                        "{} bytes are not the {N} {} elements of the array",
                        bytes.len(),
                        T::NAME
                    ));
                }
                let mut values = [T::default(); N];
                for (value, chunk) in values.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
                    *value = T::read(chunk).ok_or_else(|| invalid(T::NAME))?;
                }
                Ok(values)
            },
        )
    }
    fn describe(_: PhantomData<Self>) -> String {
        format!("[{};{N}]le", T::NAME)
    }
}

/// An element of a `#[ipc(pod)]` field: a `Pod` type, carried as its bytes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not plain old data, so `#[ipc(pod)]` cannot carry it as bytes",
    label = "the elements of an `#[ipc(pod)]` field must implement `ipc_core::Pod`",
    note = "implement `ipc_core::Pod` for a `#[repr(C)]` type of numbers without padding (bytemuck's `#[derive(Pod, Zeroable)]` does it and checks), or drop `#[ipc(pod)]`"
)]
pub trait PodElement: Pod {}

#[diagnostic::do_not_recommend]
impl<T: Pod> PodElement for T {}

/// The size of a `#[ipc(pod)]` element; a compile error for a type of size
/// zero, whose count the bytes could not tell.
const fn pod_size<T: Pod>() -> usize {
    let size = std::mem::size_of::<T>();
    assert!(
        size != 0,
        "#[ipc(pod)] needs an element type of non-zero size"
    );
    size
}

fn fetch_pods<'de, De: Deserializer<'de>, T: Pod>(deserializer: De) -> Result<Vec<T>, De::Error> {
    let size = const { pod_size::<T>() };
    fetch_bytes(
        deserializer,
        |f| write!(f, "{} values as bytes", pod_name::<T>()),
        |bytes| {
            whole(bytes, size, &pod_name::<T>())?;
            Ok(bytes.chunks_exact(size).map(read_pod).collect())
        },
    )
}

/// One `T` from exactly `size_of::<T>()` bytes, wherever they sit.
fn read_pod<T: Pod>(chunk: &[u8]) -> T {
    // Every chunk has the size of a T: the fallback is never taken.
    bytemuck::try_pod_read_unaligned(chunk).unwrap_or_else(|_| T::zeroed())
}

fn pod_name<T>() -> String {
    std::any::type_name::<T>().to_string()
}

impl<T: PodElement> Carry<shape::Pod> for Vec<T> {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.serialize_bytes(bytemuck::cast_slice(self))
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        fetch_pods(deserializer)
    }
    fn describe(_: PhantomData<Self>) -> String {
        format!("Vec<{}>pod", pod_name::<T>())
    }
}

impl<T: PodElement> Carry<shape::Pod> for Box<[T]> {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.serialize_bytes(bytemuck::cast_slice(self))
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        fetch_pods(deserializer).map(Vec::into_boxed_slice)
    }
    fn describe(_: PhantomData<Self>) -> String {
        format!("Box<[{}]>pod", pod_name::<T>())
    }
}

impl<T: PodElement, const N: usize> Carry<shape::Pod> for [T; N] {
    fn carry<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        serializer.serialize_bytes(bytemuck::cast_slice(self))
    }
    fn fetch<'de, De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        let _ = const { pod_size::<T>() };
        fetch_bytes(
            deserializer,
            |f| write!(f, "{N} {} values as bytes", pod_name::<T>()),
            |bytes| {
                let size = std::mem::size_of::<T>();
                if whole(bytes, size, &pod_name::<T>())? != N {
                    return Err(format!(
                        "{} bytes are not the {N} {} values of the array",
                        bytes.len(),
                        pod_name::<T>()
                    ));
                }
                let mut values = [T::zeroed(); N];
                for (value, chunk) in values.iter_mut().zip(bytes.chunks_exact(size)) {
                    *value = read_pod(chunk);
                }
                Ok(values)
            },
        )
    }
    fn describe(_: PhantomData<Self>) -> String {
        format!("[{};{N}]pod", pod_name::<T>())
    }
}
