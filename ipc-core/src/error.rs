//! The one error type of the crate, and the send error that hands a message back.

use std::fmt;
use std::io;

/// What went wrong in a send, a receive, or the set-up of a channel.
///
/// Every variant says what happened; its `Display` says what to do about it.
/// The enum is `#[non_exhaustive]`: match the variants you act on and keep a
/// catch-all arm.
///
/// # Examples
///
/// ```
/// use ipc_core::{channel, Error};
/// use std::time::Duration;
///
/// let (_tx, rx) = channel::<u32>()?;
/// match rx.recv_timeout(Duration::from_millis(1)) {
///     Err(Error::Timeout) => {}
///     other => panic!("expected a timeout, got {other:?}"),
/// }
/// # Ok::<(), ipc_core::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The other end of the channel is gone: every sender was dropped (seen by
    /// a receiver once the queued messages are read) or the receiver was
    /// dropped (seen by a sender). Nothing more will arrive or be delivered.
    #[error("the peer closed the channel; no further messages can be exchanged, so stop using it")]
    Disconnected,

    /// Nothing arrived within the time given to `recv_timeout`, or the
    /// receiver made no room within the time given to `send_timeout`.
    #[error("the peer did not keep up before the timeout (no message arrived, or no room was made for one); try again or give up on the peer")]
    Timeout,

    /// `try_recv` found no message waiting.
    #[error("no message is waiting; call recv() to block or try again later")]
    Empty,

    /// `try_send` found the socket buffer full: the receiver is not keeping up.
    #[error(
        "the channel's socket buffer is full; call send() to block until the receiver catches up"
    )]
    Full,

    /// A system call failed. The message adds what to do where the cause
    /// is a common one (an address in use or with nothing behind it, a
    /// permission, the descriptor limit).
    #[error("{op} failed: {source}{}", advice(.op, .source))]
    Io {
        /// The step that failed (`"sendmsg"`, `"recvmsg"`, `"socketpair"`, ...).
        op: &'static str,
        /// The error the kernel gave.
        #[source]
        source: io::Error,
    },

    /// The message could not be serialized.
    #[error("could not encode the message: {0}; check the Serialize impls of its fields")]
    Encode(String),

    /// The bytes that arrived do not decode as the expected message type.
    #[error("could not decode the message: {0}; both ends must use the same message type and version of this crate")]
    Decode(String),

    /// The message holds more descriptors than one datagram carries.
    #[error("the message holds {count} descriptors but at most {max} fit in one message; send the rest in another message")]
    TooManyDescriptors {
        /// How many descriptors the message holds (counting an out-of-line body).
        count: usize,
        /// How many fit.
        max: usize,
    },

    /// A message's body is larger than this receiver accepts.
    #[error("the peer sent a body of {len} bytes but this receiver accepts at most {max}; raise the limit with set_limits() if the peer is trusted")]
    TooLarge {
        /// The size the peer announced.
        len: u64,
        /// The receiver's limit.
        max: u64,
    },

    /// A descriptor in the message was missing, out of range, used twice,
    /// unreferenced, of the wrong kind, or failed a seal check. Every
    /// descriptor that came with the message has been closed, or (one whose
    /// close the peer could make block: a lingering TCP socket, a FUSE
    /// file) handed to a background thread that closes it, so the refusal
    /// never waits on the peer.
    #[error("bad descriptor in message: {0}")]
    Descriptor(String),

    /// The resource is in use elsewhere: a region mapped writable by
    /// another handle cannot be sealed. The message says what to release.
    #[error("{0}")]
    Busy(String),

    /// A shared memory region cannot be seen as a slice of the type asked
    /// for: its length is not a whole number of them.
    #[error("{0}")]
    Layout(String),

    /// This process was not started by `process::spawn`, so it has no
    /// connection to a parent.
    #[error("no connection to a parent: {0}; start this program with ipc_core::process::spawn, or connect to a Listener instead")]
    NotSpawned(String),

    /// A peer did not greet in time: it is not an ipc-core peer, or it is
    /// stalled. A [`Listener`](crate::Listener) has dropped it and goes
    /// on; a `connect` or `process::parent` gives up.
    #[error("no greeting came from the peer within {waited:?}: it is not an ipc-core peer, or it is stalled; a listener drops it and goes on (call accept again), a connect gives up (try again, or raise the timeout)")]
    GreetingTimeout {
        /// How long it was given.
        waited: std::time::Duration,
    },

    /// Who is at the other end of this connection cannot be known.
    #[error("who is at the other end is not known: {0}")]
    UnknownPeer(&'static str),

    /// The two ends were built for different message types.
    #[error("message types differ: this side speaks `{ours}`, the peer speaks `{theirs}`; build both from the same type definitions")]
    TypeMismatch {
        /// This side's message type.
        ours: String,
        /// The peer's message type.
        theirs: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, errno: nix::errno::Errno) -> Self {
        Error::Io {
            op,
            source: io::Error::from(errno),
        }
    }
}

/// What to do about a failed call, where the cause is a common one.
fn advice(op: &str, source: &io::Error) -> &'static str {
    use nix::libc;
    match (op, source.raw_os_error()) {
        ("bind", Some(libc::EADDRINUSE)) => {
            "; a live process listens at this address (or a file that is not a socket is there): \
             stop it, or bind another address"
        }
        ("connect", Some(libc::ECONNREFUSED)) => {
            "; nothing listens at this address any more (a socket file was left behind): start \
             the listener, then connect again"
        }
        ("connect", Some(libc::ENOENT)) => {
            "; nothing listens at this address: start the listener first, or check the path \
             (an address starting with @ is an abstract name)"
        }
        (_, Some(libc::EACCES | libc::EPERM)) => {
            "; this process may not do that: check the permissions of the socket file and of \
             its directory, or the process's own privileges"
        }
        (_, Some(libc::EMFILE)) => {
            "; this process is out of descriptors: raise RLIMIT_NOFILE (ulimit -n) or close \
             some"
        }
        (_, Some(libc::ENFILE)) => {
            "; the system is out of open files: close some, or raise fs.file-max"
        }
        (_, Some(libc::ENOMEM | libc::ENOBUFS)) => {
            "; the system is out of memory for this: free some and try again"
        }
        _ => "",
    }
}

/// An I/O error from the caller's own code, so that `?` works in a function
/// that returns [`Result`].
///
/// # Examples
///
/// ```
/// fn size(path: &str) -> ipc_core::Result<u64> {
///     Ok(std::fs::metadata(path)?.len())
/// }
/// assert!(matches!(size("/nonexistent"), Err(ipc_core::Error::Io { .. })));
/// ```
impl From<io::Error> for Error {
    fn from(source: io::Error) -> Self {
        Error::Io {
            op: "an I/O call",
            source,
        }
    }
}

/// A `Result` whose error is [`Error`].
///
/// # Examples
///
/// ```
/// fn ask(question: &str) -> ipc_core::Result<String> {
///     let (tx, rx) = ipc_core::channel::<String>()?;
///     tx.send(question.to_uppercase())?;
///     rx.recv()
/// }
/// assert_eq!(ask("why")?, "WHY");
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed send: the error, and the message that was not sent.
///
/// The message comes back whole, every descriptor in it still open, so the
/// caller can retry, send it elsewhere, or drop it. `Debug` does not require
/// `T: Debug`.
///
/// # Examples
///
/// ```
/// use ipc_core::{channel, Error};
///
/// let (tx, rx) = channel::<String>()?;
/// drop(rx);
/// let err = tx.send("hello".to_string()).unwrap_err();
/// assert!(matches!(err.error(), Error::Disconnected));
/// assert_eq!(err.into_inner(), "hello");
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct SendError<T> {
    message: T,
    error: Error,
}

impl<T> SendError<T> {
    pub(crate) fn new(message: T, error: Error) -> Self {
        SendError { message, error }
    }

    /// Why the send failed.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = ipc_core::channel::<u8>()?;
    /// drop(rx);
    /// let failed = tx.send(1).unwrap_err();
    /// assert!(matches!(failed.error(), ipc_core::Error::Disconnected));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The message that was not sent, descriptors still open.
    ///
    /// # Examples
    ///
    /// ```
    /// use ipc_core::Fd;
    /// use std::fs::File;
    ///
    /// let (tx, rx) = ipc_core::channel::<Fd<File>>()?;
    /// drop(rx);
    /// let file = tx.send(Fd::new(File::open("/dev/null")?)).unwrap_err().into_inner();
    /// assert_eq!(file.metadata()?.len(), 0, "still open");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> T {
        self.message
    }

    /// Splits into the message and the error.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = ipc_core::channel::<Vec<u8>>()?;
    /// let full = loop {
    ///     if let Err(e) = tx.try_send(vec![0; 50_000]) {
    ///         break e;
    ///     }
    /// };
    /// let (message, error) = full.into_parts();
    /// assert_eq!(message.len(), 50_000);
    /// assert!(matches!(error, ipc_core::Error::Full));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn into_parts(self) -> (T, Error) {
        (self.message, self.error)
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message not sent: {}", self.error)
    }
}

impl<T> std::error::Error for SendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<SendError<T>> for Error {
    fn from(e: SendError<T>) -> Self {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_send_sync_static() {
        fn check<E: std::error::Error + Send + Sync + 'static>() {}
        check::<Error>();
        check::<SendError<std::fs::File>>();
    }

    #[test]
    fn send_error_debug_needs_no_debug_on_message() {
        struct Opaque;
        let e = SendError::new(Opaque, Error::Full);
        assert!(format!("{e:?}").contains("Full"));
        assert!(e.to_string().contains("socket buffer is full"));
    }

    #[test]
    fn io_errors_of_common_causes_say_what_to_do() {
        let in_use = Error::io("bind", nix::errno::Errno::EADDRINUSE).to_string();
        assert!(in_use.contains("bind another address"), "{in_use}");
        let refused = Error::io("connect", nix::errno::Errno::ECONNREFUSED).to_string();
        assert!(refused.contains("start the listener"), "{refused}");
        let missing = Error::io("connect", nix::errno::Errno::ENOENT).to_string();
        assert!(missing.contains("start the listener first"), "{missing}");
        let denied = Error::io("connect", nix::errno::Errno::EACCES).to_string();
        assert!(denied.contains("permissions"), "{denied}");
        let plain = Error::io("sendmsg", nix::errno::Errno::EINVAL).to_string();
        assert_eq!(plain, "sendmsg failed: Invalid argument (os error 22)");
    }

    #[test]
    fn io_error_keeps_source() {
        let e = Error::io("sendmsg", nix::errno::Errno::EBADF);
        let source = std::error::Error::source(&e).expect("io error has a source");
        assert!(source.to_string().contains("Bad file descriptor"));
        assert!(e.to_string().starts_with("sendmsg failed"));
    }
}
