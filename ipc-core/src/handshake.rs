//! The greeting both ends of a spawned or connected channel exchange before
//! any message: the protocol, and what each side sends and receives.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::credentials::PeerCredentials;
use crate::error::{Error, Result};
use crate::fingerprint::describe;
use crate::limits::Limits;
use crate::message::IpcMessage;
use crate::sys;
use crate::transport::{wait_readable, Socket, Wait};

/// How long a peer has to greet by default: an ipc-core peer greets as
/// soon as it is connected, so this only bounds what a stalled or foreign
/// peer can make a call wait.
pub(crate) const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

const PROTOCOL: &str = "ipc-core/1";

/// What one end sends and receives, as [`describe`] tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Types {
    sends: String,
    receives: String,
}

impl Types {
    pub(crate) fn of<Out: IpcMessage, In: IpcMessage>() -> Types {
        Types {
            sends: describe::<Out>(),
            receives: describe::<In>(),
        }
    }

    fn text(&self) -> String {
        format!("sends {}, receives {}", self.sends, self.receives)
    }
}

#[derive(Serialize, Deserialize)]
struct Hello {
    protocol: String,
    types: Types,
}

/// Sends this end's greeting.
pub(crate) fn greet(socket: &Socket, ours: &Types) -> Result<()> {
    socket.send(&hello(ours), Wait::Forever)
}

/// Sends this end's greeting without waiting: to a peer just accepted,
/// whose socket holds nothing of ours yet, it never has to.
pub(crate) fn greet_now(socket: &Socket, ours: &Types) -> Result<()> {
    socket.send(&hello(ours), Wait::Never)
}

fn hello(ours: &Types) -> Hello {
    Hello {
        protocol: PROTOCOL.to_string(),
        types: ours.clone(),
    }
}

/// Reads the peer's greeting and checks that it mirrors ours.
pub(crate) fn expect(socket: &Socket, ours: &Types, wait: Wait) -> Result<()> {
    check(ours, socket.recv(&greeting_limits(), wait))
}

/// As [`expect`], and what the kernel attached about the sender.
fn expect_from(
    socket: &Socket,
    ours: &Types,
    wait: Wait,
    sender: &mut sys::socket::Sender,
) -> Result<()> {
    check(ours, socket.recv_from(&greeting_limits(), wait, sender))
}

/// A greeting is small and carries no descriptor; a peer that sends more
/// is not greeting.
fn greeting_limits() -> Limits {
    Limits::default()
        .with_max_descriptors(0)
        .with_max_bytes(1 << 20)
}

fn check(ours: &Types, received: Result<Hello>) -> Result<()> {
    let hello = match received {
        Ok(hello) => hello,
        Err(Error::Decode(_) | Error::Descriptor(_) | Error::TooLarge { .. }) => {
            return Err(mismatch(ours, "a peer that does not greet like ipc-core"));
        }
        Err(e) => return Err(e),
    };
    if hello.protocol != PROTOCOL {
        return Err(mismatch(ours, &format!("protocol {}", hello.protocol)));
    }
    let theirs = hello.types;
    if theirs.sends != ours.receives || theirs.receives != ours.sends {
        return Err(mismatch(ours, &theirs.text()));
    }
    Ok(())
}

fn mismatch(ours: &Types, theirs: &str) -> Error {
    Error::TypeMismatch {
        ours: ours.text(),
        theirs: theirs.to_string(),
    }
}

/// A greeting still to be read before the first message, for the parent's
/// end of a spawned child, which must not wait for the child at spawn. The
/// parent's end asks the kernel to attach the sender's credentials (and a
/// pidfd of it) to what it receives until the greeting has come: they name
/// the process that greeted, the child itself, where the kernel's record
/// of the socket pair names the parent that made it.
#[derive(Debug)]
pub(crate) struct Pending {
    ours: Types,
    /// The spawned child's pid and a pidfd opened for it before anything
    /// could reap it: the pidfd of a greeting from that pid, where the
    /// kernel attaches none itself (before Linux 6.5).
    pub(crate) child: Option<(u32, OwnedFd)>,
    /// `None` until the greeting is read; then the outcome, kept so that
    /// every later receive reports a mismatch again.
    outcome: Mutex<Option<Settled>>,
}

#[derive(Debug)]
enum Settled {
    /// The peer greeted as it should; who it is, where the kernel said.
    Greeted(Option<Greeter>),
    Mismatch {
        ours: String,
        theirs: String,
    },
}

/// The process that sent the greeting.
#[derive(Debug)]
struct Greeter {
    credentials: nix::libc::ucred,
    pidfd: Option<OwnedFd>,
}

impl Pending {
    /// A greeting to come on `socket`, which is made to pass the sender's
    /// credentials until it has.
    pub(crate) fn new(socket: &Socket, ours: Types, child: Option<(u32, OwnedFd)>) -> Result<Self> {
        sys::socket::pass_sender(socket.as_fd(), true)
            .map_err(|e| Error::io("setsockopt(SO_PASSCRED)", e))?;
        Ok(Pending {
            ours,
            child,
            outcome: Mutex::new(None),
        })
    }

    /// Reads the greeting if it has not been read yet, within `wait`.
    ///
    /// The lock is held only to read a greeting that is already there,
    /// never while waiting for one: a `try_recv` on another thread must not
    /// block behind a `recv` that waits.
    pub(crate) fn settle(&self, socket: &Socket, wait: Wait) -> Result<()> {
        loop {
            {
                let mut outcome = self
                    .outcome
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if outcome.is_none() {
                    let mut sender = sys::socket::Sender::default();
                    match expect_from(socket, &self.ours, Wait::Never, &mut sender) {
                        Ok(()) => *outcome = Some(Settled::Greeted(self.greeter(sender))),
                        Err(Error::TypeMismatch { ours, theirs }) => {
                            *outcome = Some(Settled::Mismatch { ours, theirs })
                        }
                        Err(Error::Empty) => {}
                        // A closed peer or a failed call: try again next time.
                        Err(e) => return Err(e),
                    }
                    if outcome.is_some() {
                        // What comes after the greeting needs no credentials.
                        let _ = sys::socket::pass_sender(socket.as_fd(), false);
                    }
                }
                match outcome.as_ref() {
                    Some(Settled::Greeted(_)) => return Ok(()),
                    Some(Settled::Mismatch { ours, theirs }) => {
                        return Err(Error::TypeMismatch {
                            ours: ours.clone(),
                            theirs: theirs.clone(),
                        })
                    }
                    None => {}
                }
            }
            match wait {
                Wait::Never => return Err(Error::Empty),
                Wait::Forever => {
                    wait_readable(socket.as_fd(), None)?;
                }
                Wait::Until(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !wait_readable(socket.as_fd(), Some(left))? {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
    }

    /// Who greeted: the kernel's credentials of the sender, and the pidfd
    /// the kernel attached, if it could (none before Linux 6.5, nor when
    /// this process had no descriptor number free as the greeting was
    /// read).
    fn greeter(&self, sender: sys::socket::Sender) -> Option<Greeter> {
        Some(Greeter {
            credentials: sender.credentials?,
            pidfd: sender.pidfd,
        })
    }

    /// A pidfd of the process that greeted: the one the kernel attached
    /// or, for the spawned child's own pid, the one opened at spawn. The
    /// latter is looked up here rather than duplicated when the greeting
    /// is read, which may be when no descriptor number is free.
    fn greeter_pidfd<'a>(&'a self, greeter: &'a Greeter) -> Option<&'a OwnedFd> {
        greeter.pidfd.as_ref().or(match &self.child {
            Some((pid, pidfd)) if *pid as i32 == greeter.credentials.pid => Some(pidfd),
            _ => None,
        })
    }

    /// The credentials of the process that greeted, waiting up to
    /// [`GREETING_TIMEOUT`] for the greeting.
    pub(crate) fn credentials(&self, socket: &Socket) -> Result<PeerCredentials> {
        match self.settle(socket, Wait::timeout(GREETING_TIMEOUT)) {
            Err(Error::Timeout) => {
                return Err(Error::GreetingTimeout {
                    waited: GREETING_TIMEOUT,
                })
            }
            result => result?,
        }
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match outcome.as_ref() {
            Some(Settled::Greeted(Some(greeter))) => {
                let pidfd = match self.greeter_pidfd(greeter) {
                    Some(pidfd) => Some(
                        pidfd
                            .try_clone()
                            .map_err(|source| Error::Io { op: "dup", source })?,
                    ),
                    None => None,
                };
                let ucred = greeter.credentials;
                Ok(PeerCredentials::new(ucred.pid, ucred.uid, ucred.gid, pidfd))
            }
            _ => Err(Error::UnknownPeer(
                "the kernel attached no credentials to the child's greeting",
            )),
        }
    }
}
