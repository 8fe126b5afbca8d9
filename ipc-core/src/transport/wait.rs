//! The waits of a send or a receive: how long a call may wait ([`Wait`]),
//! and how it waits: in `poll` on a socket, or in short sleeps for what no
//! descriptor signals (a receiver's progress through a sender's memfds).

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};

/// How long a receive may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Until a message or the end of the channel.
    Forever,
    /// Not at all: `Error::Empty` when nothing is queued.
    Never,
    /// Until the deadline: `Error::Timeout` then.
    Until(Instant),
}

impl Wait {
    pub(crate) fn timeout(timeout: Duration) -> Wait {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Forever,
        }
    }
}

/// The pauses of a sender waiting on its receiver's progress, which no
/// descriptor signals: from 20 µs, doubling up to 1 ms.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff(Duration::from_micros(20))
    }

    pub(crate) fn sleep(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(1));
    }

    /// Sleeps the next pause, cut short at `wait`'s deadline; `false` once
    /// the deadline has passed (or `wait` is `Never`).
    pub(crate) fn sleep_within(&mut self, wait: Wait) -> bool {
        match wait {
            Wait::Forever => {
                self.sleep();
                true
            }
            Wait::Never => false,
            Wait::Until(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                std::thread::sleep(self.0.min(left));
                self.0 = (self.0 * 2).min(Duration::from_millis(1));
                true
            }
        }
    }
}

/// Waits with no time limit until `socket` has one of `events` (or an
/// error or hang-up, which the next call reports).
pub(crate) fn wait_for(socket: BorrowedFd<'_>, events: PollFlags) -> Result<()> {
    let mut fds = [PollFd::new(socket, events)];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(Error::io("poll", e)),
    }
}

/// `timeout` in poll's milliseconds, rounded up so that a wait never ends a
/// little before its deadline.
pub(crate) fn poll_timeout(timeout: Duration) -> PollTimeout {
    let millis = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}

/// Waits until `fd` is readable (or hung up), at most `timeout` if given.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool> {
    match timeout {
        Some(timeout) => readable(fd, timeout),
        None => wait_for(fd, PollFlags::POLLIN).map(|()| true),
    }
}

/// Waits up to `timeout` for `socket` to be readable (or hung up).
pub(crate) fn readable(socket: BorrowedFd<'_>, timeout: Duration) -> Result<bool> {
    ready_within(socket, PollFlags::POLLIN, timeout)
}

/// Waits up to `timeout` for `socket` to have one of `events` (or an error
/// or hang-up, which the next call reports).
pub(crate) fn ready_within(
    socket: BorrowedFd<'_>,
    events: PollFlags,
    timeout: Duration,
) -> Result<bool> {
    let timeout = poll_timeout(timeout);
    let mut fds = [PollFd::new(socket, events)];
    match poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        // Let the caller look again and recompute what is left of its wait.
        Err(Errno::EINTR) => Ok(true),
        Err(e) => Err(Error::io("poll", e)),
    }
}
