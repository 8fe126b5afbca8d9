//! `Fd<T>`: any owned descriptor type as a serde value, and the two serde
//! functions every descriptor type of the crate is built on.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};

use crate::sidecar;

/// Writes `fd` into the sidecar of the message being sent and its index
/// into the body.
pub(crate) fn serialize_fd<S: Serializer>(
    fd: BorrowedFd<'_>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match sidecar::push(fd) {
        Ok(index) => serializer.serialize_u32(index),
        Err(why) => Err(ser::Error::custom(why)),
    }
}

/// Reads an index from the body and takes that descriptor from the sidecar
/// of the message being received.
pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<OwnedFd, D::Error> {
    let index = u32::deserialize(deserializer)?;
    sidecar::take(index).map_err(de::Error::custom)
}

/// Like [`deserialize_fd`], for a channel end: the descriptor must be an
/// `AF_UNIX` `SOCK_SEQPACKET` socket, or the message is refused.
pub(crate) fn deserialize_socket<'de, D: Deserializer<'de>>(
    deserializer: D,
    what: &str,
) -> Result<OwnedFd, D::Error> {
    let fd = deserialize_fd(deserializer)?;
    if crate::sys::socket::is_channel_end(fd.as_fd()) {
        Ok(fd)
    } else {
        Err(de::Error::custom(sidecar::refuse(
            fd,
            format!(
                "a {what} must be a connected AF_UNIX SOCK_SEQPACKET socket, but the peer sent \
             another kind of descriptor (or a listening or unconnected socket)"
            ),
        )))
    }
}

/// A receiving end as a value: its socket's index, then those of the rings
/// the peer's processes write to it (memfd and private socket), so that the
/// rings travel with it and whoever holds the end reads them.
pub(crate) fn serialize_end<S: Serializer>(
    socket: &crate::transport::Socket,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    socket.with_rings(|rings| {
        let rings: Vec<(Fd<BorrowedFd<'_>>, Fd<BorrowedFd<'_>>)> = rings
            .map(|(ring, private)| (Fd(ring), Fd(private)))
            .collect();
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&Fd(socket.as_fd()))?;
        tuple.serialize_element(&rings)?;
        tuple.end()
    })
}

/// Reads a receiving end written by [`serialize_end`]: the socket must be a
/// connected seqpacket socket and each ring check out as an offered one.
pub(crate) fn deserialize_end<'de, D: Deserializer<'de>>(
    deserializer: D,
    what: &'static str,
) -> Result<crate::transport::Socket, D::Error> {
    struct End(&'static str);
    impl<'de> de::Visitor<'de> for End {
        type Value = crate::transport::Socket;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a {} and its rings", self.0)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let fd = seq
                .next_element_seed(Channel(self.0))?
                .ok_or_else(|| de::Error::invalid_length(0, &self))?;
            let rings: Vec<(Fd<OwnedFd>, Fd<OwnedFd>)> = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(1, &self))?;
            let socket = crate::transport::Socket::received(fd);
            for (ring, private) in rings {
                socket
                    .adopt_ring(ring.into_inner(), private.into_inner())
                    .map_err(|why| de::Error::custom(sidecar::reject(why)))?;
            }
            Ok(socket)
        }
    }
    struct Channel(&'static str);
    impl<'de> de::DeserializeSeed<'de> for Channel {
        type Value = OwnedFd;
        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<OwnedFd, D::Error> {
            deserialize_socket(deserializer, self.0)
        }
    }
    deserializer.deserialize_tuple(2, End(what))
}

/// An owned descriptor of any type, as a value serde can carry.
///
/// `T` is any type that owns a descriptor: `File`, `OwnedFd`, `UnixStream`,
/// `memfd::Memfd`, a type of your own. Wrapped in `Fd`, it travels anywhere
/// serde reaches (a `HashMap` value, a tuple, a generic of another crate)
/// without `#[derive(IpcMessage)]`: the descriptor goes into the message's
/// sidecar and comes back as the same open file description.
///
/// Sending needs `T: AsFd`; receiving needs `T: From<OwnedFd>`. Serialized by
/// anything but an `ipc_core` send (into JSON, say), it is an error.
///
/// # Examples
///
/// ```
/// use ipc_core::{channel, Fd};
/// use std::collections::HashMap;
/// use std::fs::File;
/// use std::io::Read;
///
/// let (tx, rx) = channel::<HashMap<String, Fd<File>>>()?;
/// let mut files = HashMap::new();
/// files.insert("hosts".to_string(), Fd::new(File::open("/etc/hosts")?));
/// tx.send(files)?;
///
/// let mut got = rx.recv()?;
/// let hosts = got.remove("hosts").unwrap().into_inner();
/// let mut text = String::new();
/// (&hosts).read_to_string(&mut text)?;
/// assert_eq!(text, std::fs::read_to_string("/etc/hosts")?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fd<T>(T);

impl<T> Fd<T> {
    /// Wraps a descriptor.
    ///
    /// # Examples
    ///
    /// ```
    /// let fd = ipc_core::Fd::new(std::fs::File::open("/dev/null")?);
    /// assert!(fd.metadata()?.len() == 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(inner: T) -> Self {
        Fd(inner)
    }

    /// Unwraps the descriptor.
    ///
    /// # Examples
    ///
    /// ```
    /// let file: std::fs::File = ipc_core::Fd::new(std::fs::File::open("/dev/null")?).into_inner();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Fd<T> {
    fn from(inner: T) -> Self {
        Fd(inner)
    }
}

impl<T> Deref for Fd<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Fd<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: AsFd> AsFd for Fd<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl<T: fmt::Debug> fmt::Debug for Fd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Fd").field(&self.0).finish()
    }
}

impl<T: AsFd> Serialize for Fd<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0.as_fd(), serializer)
    }
}

impl<'de, T: From<OwnedFd>> Deserialize<'de> for Fd<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_fd(deserializer).map(|fd| Fd(T::from(fd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_send_is_an_error_not_a_number() {
        let fd = Fd::new(std::fs::File::open("/dev/null").unwrap());
        let err = postcard::to_allocvec(&fd).unwrap_err();
        assert_eq!(err, postcard::Error::SerdeSerCustom);
        let err = postcard::from_bytes::<Fd<OwnedFd>>(&[0]).unwrap_err();
        assert_eq!(err, postcard::Error::SerdeDeCustom);
    }
}
