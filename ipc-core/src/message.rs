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
/// - **Descriptors, with no attribute.** A field whose type is `OwnedFd`,
///   `File`, `UnixStream`, `UnixListener`, `UnixDatagram`, `TcpStream`,
///   `TcpListener`, `UdpSocket` or `memfd::Memfd` (matched by the last
///   segment of its path) travels in the descriptor sidecar, also inside
///   `Option`, `Vec`, `VecDeque`, `Box`, `Box<[T]>`, `Arc`, `Rc`, arrays
///   `[T; N]`, tuples of up to eight elements and the values of `HashMap`
///   and `BTreeMap`, nested to any depth: `HashMap<String, Vec<File>>` is
///   recognised. A received `Arc` or `Rc` is a new one; sending needs only
///   `&T`. The crate's own descriptor types ([`Sender`](crate::Sender),
///   [`Receiver`](crate::Receiver), [`Connection`](crate::Connection),
///   [`Fd`](crate::Fd), [`SharedMemory`](crate::SharedMemory)) are serde
///   types already.
/// - **`#[ipc(fd)]`** says the field's type, or the innermost type inside
///   the containers above, owns one descriptor: a type alias, a newtype of
///   yours, a generic parameter (`#[ipc(fd)] body: T` adds the bound the
///   impls need, so `Envelope<File>` and `Envelope<OwnedFd>` both work).
///   The type must implement `AsFd` (to be sent) and `From<OwnedFd>` (to be
///   rebuilt on receipt); one that cannot be rebuilt, like tokio's
///   `UnixStream`, travels as its std type.
/// - **`Fd<T>`** carries a descriptor wherever the derive cannot see one: a
///   generic field without `#[ipc(fd)]`, a container of another crate
///   (`SmallVec<[Fd<File>; 2]>`, `IndexMap<String, Fd<File>>`). A
///   descriptor as a map key is an error.
/// - **Numbers in one copy.** `Vec<T>`, `Box<[T]>` and `[T; N]` of `u8`,
///   `u16`, `u32`, `u64`, `u128`, `i8` to `i128`, `f32`, `f64`, `bool` and
///   `char` (also inside the containers above) travel as one byte string,
///   little endian, where serde makes a call per element; a received `bool`
///   must be 0 or 1 and a `char` a Unicode scalar value, or the message is
///   refused.
/// - **`#[ipc(pod)]`** carries a `Vec<T>`, `Box<[T]>` or `[T; N]` of any
///   [`Pod`](crate::Pod) type as its bytes, in this host's layout and byte
///   order: for two processes on one host.
/// - **`#[ipc(serde)]`** keeps a field plain serde whose type only shares a
///   name with a descriptor type (your own `File` that derives serde), or a
///   container of numbers that must keep serde's layout. `#[serde(...)]`
///   attributes on the type, its variants and fields are passed on to
///   serde, and a field serde takes over (`with`, `skip`, `flatten`) is
///   left to it.
/// - **Every other field** is plain serde. A type parameter gets the bound
///   its field needs: `Serialize` and `Deserialize`, or a descriptor's for
///   `#[ipc(fd)]`.
///
/// A type that cannot travel is one compile error on the field, which says
/// what would fix it. Unions, lifetime parameters and fields that borrow
/// are errors too: a received message owns all it holds.
///
/// The handshake of a [`Connection`](crate::Connection) compares both ends'
/// types field by field, through nested derived types and generic
/// parameters as instantiated, so two builds that disagree on a nested
/// struct are refused with [`Error::TypeMismatch`](crate::Error::TypeMismatch)
/// instead of misreading each other.
pub trait IpcMessage: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> IpcMessage for T {}
