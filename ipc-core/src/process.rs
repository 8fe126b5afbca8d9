//! Starting a child process with a connection to it.

use std::process::{Child, Command};
use std::time::Duration;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::handshake::{self, Pending, Types, GREETING_TIMEOUT};
use crate::message::IpcMessage;
use crate::sys;
use crate::transport::{Socket, Wait};

/// The environment variable that names the descriptor number at which a
/// spawned child finds its connection to the parent.
///
/// # Examples
///
/// ```
/// // A program can tell whether it was started by spawn before asking.
/// if std::env::var_os(ipc_core::process::CHANNEL_FD_ENV).is_none() {
///     println!("started by hand: no parent to serve");
/// }
/// ```
pub const CHANNEL_FD_ENV: &str = "IPC_CORE_CHANNEL_FD";

/// The descriptor number the child finds its connection at.
const CHILD_FD: i32 = 3;

/// Starts `command` with a connection to it: this end sends `Out` and
/// receives `In`.
///
/// The child inherits exactly one socket, at descriptor 3, named in the
/// environment variable [`CHANNEL_FD_ENV`]; it picks it up with
/// [`parent`]. Both ends greet each other with a description of their
/// message types: the child checks at once, this end on its first receive,
/// and a mismatch is [`Error::TypeMismatch`] on both. The child's death
/// (exit, crash, `SIGKILL`) reads as [`Error::Disconnected`] here.
///
/// Spawning configures `command` (an environment variable and a hook that
/// places the socket): use a fresh `Command` for each child.
///
/// # Errors
///
/// [`Error::Io`] when the socket cannot be made or the program not started.
///
/// # Examples
///
/// A worker program calls [`parent`] and serves; `examples/worker_pool.rs`
/// is a whole broker. Here the child is a program that is no ipc-core
/// peer at all: it exits without a word, and the connection says so.
///
/// ```
/// use ipc_core::{process, Error};
/// use std::process::Command;
///
/// let (mut child, worker) = process::spawn::<u64, String>(&mut Command::new("true"))?;
/// assert!(matches!(worker.recv(), Err(Error::Disconnected)));
/// assert!(child.wait()?.success());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn<Out: IpcMessage, In: IpcMessage>(
    command: &mut Command,
) -> Result<(Child, Connection<Out, In>)> {
    let (mut ours, theirs) = Socket::pair()?;
    let types = Types::of::<Out, In>();
    // Queued for the child to read when it starts; never blocks.
    handshake::greet(&ours, &types)?;
    // Before the child can greet: its greeting must come with its
    // credentials, since the kernel's record of the pair names this process.
    let mut pending = Pending::new(&ours, types, None)?;
    sys::process::inherit_at(command, std::os::fd::AsFd::as_fd(&theirs), CHILD_FD);
    command.env(CHANNEL_FD_ENV, CHILD_FD.to_string());
    let child = command.spawn().map_err(|source| Error::Io {
        op: "spawn",
        source,
    })?;
    drop(theirs);
    // Not reaped yet, so its pid names it alone.
    pending.child = sys::process::pidfd_open(child.id()).map(|pidfd| (child.id(), pidfd));
    ours.expect_greeting(pending);
    Ok((child, Connection::from_socket(ours)))
}

/// In a child started by [`spawn`]: the connection to the parent, typed
/// from this side (this end sends `Out`, the parent's `In`).
///
/// Checks the parent's greeting before it returns, waiting for it up to
/// 10 seconds (a parent queues it before the child starts; see
/// [`parent_timeout`]). The parent's death reads as
/// [`Error::Disconnected`] on this connection.
///
/// It takes [`CHANNEL_FD_ENV`] out of this process's environment, so that
/// this process's own children, which do not inherit the socket, do not
/// find a variable naming it. Like any change to the environment, that is
/// for a process with no other thread reading the environment at the same
/// time: call it first thing in `main`.
///
/// # Errors
///
/// [`Error::NotSpawned`] when this process was not started by [`spawn`]
/// (or the connection was taken up already); [`Error::TypeMismatch`] when
/// the parent was built for other message types;
/// [`Error::GreetingTimeout`] when the socket it was given never greets.
///
/// # Examples
///
/// ```
/// match ipc_core::process::parent::<u64, String>() {
///     Ok(parent) => { /* serve the parent */ }
///     Err(ipc_core::Error::NotSpawned(why)) => eprintln!("run me through spawn(): {why}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
pub fn parent<Out: IpcMessage, In: IpcMessage>() -> Result<Connection<Out, In>> {
    parent_timeout(GREETING_TIMEOUT)
}

/// As [`parent`], waiting at most `timeout` for the parent's greeting.
///
/// # Errors
///
/// As [`parent`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let got = ipc_core::process::parent_timeout::<u64, String>(Duration::from_secs(1));
/// assert!(matches!(got, Err(ipc_core::Error::NotSpawned(_))));
/// ```
pub fn parent_timeout<Out: IpcMessage, In: IpcMessage>(
    timeout: Duration,
) -> Result<Connection<Out, In>> {
    let value = std::env::var(CHANNEL_FD_ENV)
        .map_err(|_| Error::NotSpawned(format!("{CHANNEL_FD_ENV} is not set")))?;
    let number: i32 = value.parse().map_err(|_| {
        Error::NotSpawned(format!(
            "{CHANNEL_FD_ENV}={value:?} is not a descriptor number"
        ))
    })?;
    let fd = sys::process::take_inherited(number).map_err(Error::NotSpawned)?;
    // Taken: a grandchild must not find it named.
    std::env::remove_var(CHANNEL_FD_ENV);
    let socket = Socket::new(fd);
    let types = Types::of::<Out, In>();
    handshake::greet(&socket, &types)?;
    match handshake::expect(&socket, &types, Wait::timeout(timeout)) {
        Err(Error::Timeout) => Err(Error::GreetingTimeout { waited: timeout }),
        result => result.map(|()| Connection::from_socket(socket)),
    }
}
