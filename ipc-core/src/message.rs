//! `IpcMessage`: the name users see for "a type that can travel".

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A type that can travel as a message: every
/// `T: Serialize + DeserializeOwned`, by a blanket impl.
///
/// `#[derive(IpcMessage)]` (the derive of the same name) writes those serde
/// impls for a struct or enum whose fields hold descriptors, so that
/// ordinary Rust types travel with no serde attribute and no serde
/// dependency in the user's crate:
///
/// ```
/// use ipc_core::{channel, IpcMessage, Sender};
/// use std::fs::File;
/// use std::io::Read;
/// use std::os::unix::net::UnixStream;
///
/// #[derive(IpcMessage)]
/// enum Request {
///     Open { path: String, reply: Sender<Reply> },
///     Upload(File, Option<UnixStream>),
///     Shutdown,
/// }
///
/// #[derive(IpcMessage)]
/// struct Reply {
///     file: File,
///     size: u64,
/// }
///
/// let (tx, rx) = channel::<Request>()?;
/// let (reply, replies) = channel::<Reply>()?;
/// tx.send(Request::Open { path: "/etc/hostname".into(), reply })?;
///
/// // The broker's side, usually in another process:
/// if let Request::Open { path, reply } = rx.recv()? {
///     let file = File::open(&path)?;
///     let size = file.metadata()?.len();
///     reply.send(Reply { file, size })?;
/// }
///
/// let Reply { mut file, size } = replies.recv()?;
/// let mut text = String::new();
/// file.read_to_string(&mut text)?;
/// assert_eq!(text.len() as u64, size);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # What the derive recognises
///
/// A field is routed through the descriptor sidecar, with no attribute, when
/// its type is one of `OwnedFd`, `File`, `UnixStream`, `UnixListener`,
/// `UnixDatagram`, `TcpStream`, `TcpListener`, `UdpSocket` or
/// `memfd::Memfd` (matched by the last segment of its path), or is built
/// from them with `Option`, `Vec`, `Box`, arrays `[T; N]` and tuples of up
/// to eight elements, nested to any depth: `Vec<(String, Option<File>)>` is
/// recognised. Every other field is plain serde, and the crate's own
/// descriptor types ([`Sender`](crate::Sender),
/// [`Receiver`](crate::Receiver), [`Connection`](crate::Connection),
/// [`Fd`](crate::Fd)) are serde types already.
///
/// - `#[ipc(fd)]` routes a field whose type owns one descriptor but is not
///   recognised by name (a type alias, a newtype of yours): the type must
///   implement `AsFd` and `From<OwnedFd>`.
/// - `Vec<u8>` and `[u8; N]` fields (also inside the wrappers above) travel
///   as one byte string each: a copy, where serde makes a call per byte.
///   A 32-byte key costs a `memcpy`, not a few hundred instructions.
/// - `#[ipc(serde)]` keeps a field plain whose type only shares a name with
///   a descriptor type (your own `File` that derives serde), or a byte
///   array that must keep serde's tuple layout; a field with its own
///   `#[serde(with = ...)]` stays plain too.
/// - For a descriptor anywhere else (a `HashMap` value, a third-party
///   generic), wrap it in [`Fd<T>`](crate::Fd).
/// - `#[serde(...)]` attributes on the type, its variants and fields are
///   passed on to serde.
///
/// Generic types derive too (`struct Envelope<T> { id: u64, body: T }`),
/// with `T: Serialize` and `T: Deserialize` bounds where `T` is used.
///
/// Unions, lifetime parameters and fields that borrow are compile errors:
/// a received message owns all it holds.
pub trait IpcMessage: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> IpcMessage for T {}
