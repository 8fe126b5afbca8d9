//! Typed IPC for Linux: processes exchange ordinary Rust values that hold
//! open files, sockets, memfds and channel ends.
//!
//! A message is any `T: Serialize + DeserializeOwned`. It travels as one
//! `AF_UNIX` `SOCK_SEQPACKET` datagram: a small header, the
//! [postcard](https://docs.rs/postcard) body, and every descriptor inside the
//! value in one `SCM_RIGHTS` control message. On receipt each descriptor is
//! an owned, close-on-exec descriptor in the same place of the value.
//!
//! ```
//! use ipc_core::{channel, Fd, Sender};
//! use serde::{Deserialize, Serialize};
//! use std::fs::File;
//! use std::io::{Read, Seek, Write};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Job {
//!     id: u64,
//!     input: Fd<File>,
//!     reply: Sender<u64>,
//! }
//!
//! let (jobs, job_rx) = channel::<Job>()?;
//! let (reply, replies) = channel::<u64>()?;
//!
//! let mut input = tempfile()?;
//! input.write_all(b"twelve bytes")?;
//! input.rewind()?;
//!
//! // Usually the receiver lives in another process; the wire is the same.
//! jobs.send(Job { id: 1, input: Fd::new(input), reply })?;
//!
//! let job = job_rx.recv()?;
//! let mut text = String::new();
//! (&*job.input).read_to_string(&mut text)?;
//! job.reply.send(text.len() as u64)?;
//!
//! assert_eq!(replies.recv()?, 12);
//! # fn tempfile() -> std::io::Result<File> {
//! #     let path = std::env::temp_dir().join(format!("ipc-core-doc-{}", std::process::id()));
//! #     let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
//! #     std::fs::remove_file(&path)?;
//! #     Ok(file)
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The pieces
//!
//! - [`channel`](fn@channel) gives a one-way [`Sender`]/[`Receiver`] pair;
//!   [`Connection::pair`] a two-way one. All three are descriptors and travel
//!   inside messages.
//! - [`Fd<T>`] carries any descriptor type anywhere serde reaches.
//! - [`SharedMemory`] is a memfd region both sides map read-write;
//!   [`SealedMemory`] one that nobody can change, checked on receipt.
//! - [`Limits`] bound what a receiver accepts from a peer it does not trust.
//! - [`Error`] says what went wrong and what to do; a failed send hands the
//!   message back in a [`SendError`].
//!
//! # What the receiver checks
//!
//! Every index in the body must name a descriptor that came with the
//! datagram, each exactly once, and every descriptor that came must be named;
//! the body must decode exactly, with no trailing bytes; truncated datagrams
//! and control messages are errors. On every error, every descriptor that
//! came with the message is closed and the channel stays usable.
//!
//! # The ring lane
//!
//! Between processes, once a sender has sent a few small messages, its
//! messages without descriptors (bodies up to 15 KiB) travel through a
//! ring in a size-sealed memfd it shares with the receiving end, past the
//! kernel's work per datagram; messages with descriptors, and larger
//! ones, stay on the socket, and each sender's order holds across the
//! two. The receiving end checks the ring as it checks any received
//! memory, copies each record out before decoding it, and closes a ring
//! its sender broke, with an error, going on with the socket.
//! [`Sender::set_ring_lane`] (or `IPC_CORE_RING=off` in the environment)
//! keeps a sender on the socket, [`Limits::with_max_rings`] a receiver.
//!
//! ```
//! let (tx, rx) = ipc_core::channel::<u32>()?;
//! for i in 0..100 {
//!     // Past the first few (once the receiver has taken the ring up), a
//!     // record in the ring: no system call on either side.
//!     tx.send(i)?;
//!     assert_eq!(rx.recv()?, i);
//! }
//! # Ok::<(), ipc_core::Error>(())
//! ```
//!
//! Bodies over 64 KiB travel out of line in a memfd, so message size has no
//! ceiling but memory and [`Limits`], and the receive buffer stays fixed.
//! Either the receiver copies the body into its own memory before it
//! decodes it (a memfd the sender reuses, up to 32 MiB) or the sender seals
//! the memfd before it sends and the receiver checks the seals before it
//! reads: a peer cannot change a body while it is decoded.
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[doc(hidden)]
pub mod __private;
mod atomic;
mod bounded;
mod carry;
mod channel;
mod connection;
mod credentials;
mod disposal;
mod error;
mod fd;
mod fingerprint;
mod fuzzing;
mod greetings;
mod handshake;
mod limits;
mod listener;
mod message;
pub mod process;
mod sealing;
mod select;
mod shm;
mod sidecar;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;
mod transport;
mod wire;

pub use atomic::SharedAtomic;
pub use channel::{channel, Iter, Receiver, Sender};
pub use connection::Connection;
pub use credentials::PeerCredentials;
pub use error::{Error, Result, SendError};
pub use fd::Fd;
pub use limits::Limits;
pub use listener::Listener;
pub use message::IpcMessage;
pub use select::{Select, Source};
pub use shm::{SealError, SealedMemory, SharedMemory};

/// Plain-old-data types (bytemuck's traits, re-exported): an `#[ipc(pod)]`
/// field carries a `Vec`, `Box<[T]>` or array of them as their bytes, in
/// this host's layout.
///
/// # Examples
///
/// ```
/// use ipc_core::{channel, IpcMessage, Pod, Zeroable};
///
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Point {
///     x: f32,
///     y: f32,
/// }
/// // SAFETY: `Point` is `repr(C)`, two `f32`s with no padding, and any
/// // bits are a valid `Point`. (bytemuck's `#[derive(Pod, Zeroable)]`
/// // checks this for you.)
/// unsafe impl Zeroable for Point {}
/// unsafe impl Pod for Point {}
///
/// #[derive(IpcMessage)]
/// struct Path {
///     #[ipc(pod)]
///     points: Vec<Point>,
/// }
///
/// let (tx, rx) = channel::<Path>()?;
/// let points = vec![Point { x: 1.0, y: 2.0 }, Point { x: -0.5, y: 0.0 }];
/// tx.send(Path { points: points.clone() })?;
/// assert_eq!(rx.recv()?.points, points);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub use bytemuck::{Pod, Zeroable};

// The derive of the same name as the trait; its docs are the derive's own
// (a doc comment here would be shown before them, saying it twice).
pub use ipc_derive::IpcMessage;
