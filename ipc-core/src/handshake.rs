//! The greeting both ends of a spawned or connected channel exchange before
//! any message: the protocol, and what each side sends and receives.

use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fingerprint::describe;
use crate::limits::Limits;
use crate::message::IpcMessage;
use crate::transport::{wait_readable, Socket, Wait};

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
    socket.send(
        &Hello {
            protocol: PROTOCOL.to_string(),
            types: ours.clone(),
        },
        false,
    )
}

/// Reads the peer's greeting and checks that it mirrors ours.
pub(crate) fn expect(socket: &Socket, ours: &Types, wait: Wait) -> Result<()> {
    // A greeting is small; a peer that sends more is not greeting.
    let limits = Limits::default()
        .with_max_descriptors(0)
        .with_max_bytes(1 << 20);
    let hello: Hello = match socket.recv(&limits, wait) {
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
/// end of a spawned child, which must not wait for the child at spawn.
#[derive(Debug)]
pub(crate) struct Pending {
    ours: Types,
    /// `None` until the greeting is read; then the outcome, kept so that
    /// every later receive reports a mismatch again.
    outcome: Mutex<Option<Result<(), (String, String)>>>,
}

impl Pending {
    pub(crate) fn new(ours: Types) -> Self {
        Pending {
            ours,
            outcome: Mutex::new(None),
        }
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
                    match expect(socket, &self.ours, Wait::Never) {
                        Ok(()) => *outcome = Some(Ok(())),
                        Err(Error::TypeMismatch { ours, theirs }) => {
                            *outcome = Some(Err((ours, theirs)))
                        }
                        Err(Error::Empty) => {}
                        // A closed peer or a failed call: try again next time.
                        Err(e) => return Err(e),
                    }
                }
                match outcome.as_ref() {
                    Some(Ok(())) => return Ok(()),
                    Some(Err((ours, theirs))) => {
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
}
