//! Closing descriptors this crate refuses or discards, so that a peer
//! cannot make the close block.
//!
//! `close(2)` of the last reference to some files waits on someone else: a
//! TCP socket set to linger (`SO_LINGER`) with a full send queue waits up
//! to its linger timeout, which whoever holds a copy of the socket sets
//! (and can set again); a file on a FUSE mount sends `FLUSH` to the FUSE
//! server and waits for its answer. A peer that attaches such a file to a
//! message the receiver refuses would otherwise hold the receiver (or a
//! listener, and every client behind it) in `close` for as long as it
//! likes.
//!
//! [`discard`] is the one way the crate lets go of a descriptor it did
//! not hand to the caller. Files whose close cannot wait on anyone
//! (`AF_UNIX` sockets, pipes, memfds, files on ordinary filesystems,
//! devices) are closed at once, so a refusal leaves the descriptor table
//! as it found it; the rest (other sockets, FUSE files, anything `fstat`
//! cannot tell) go to a background thread that closes them, started on
//! first use in each process (a forked child starts its own).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;

use nix::sys::stat::{fstat, SFlag};
use nix::sys::statfs::{fstatfs, FUSE_SUPER_MAGIC};

use crate::sys::socket::is_unix_socket;

/// Closes `fd`, at once if its close cannot block, on the closer thread
/// otherwise. Never blocks the caller on the file.
pub(crate) fn discard(fd: OwnedFd) {
    if closes_at_once(fd.as_fd()) {
        drop(fd);
    } else {
        close_later(fd);
    }
}

/// [`discard`]s each of `fds`.
pub(crate) fn discard_all(fds: impl IntoIterator<Item = OwnedFd>) {
    fds.into_iter().for_each(discard);
}

/// Whether closing `fd` cannot wait on another party.
fn closes_at_once(fd: BorrowedFd<'_>) -> bool {
    let Ok(stat) = fstat(fd) else {
        return false;
    };
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFSOCK {
        // A socket of another family may linger; AF_UNIX ones never do.
        return is_unix_socket(fd);
    }
    // A FIFO on a FUSE mount is a pipe to the kernel, but a plain check is
    // worth more than that case.
    match fstatfs(fd) {
        // `FUSE_SUPER_MAGIC` (0x65735546): the `f_type` of a FUSE mount.
        Ok(fs) => fs.filesystem_type() != FUSE_SUPER_MAGIC,
        Err(_) => false,
    }
}

/// The closer thread's queue, and the process that started it: a forked
/// child has the queue in its memory but not the thread.
static CLOSER: Mutex<Option<(u32, Sender<OwnedFd>)>> = Mutex::new(None);

/// Hands `fd` to the closer thread, starting it if this process has none.
fn close_later(fd: OwnedFd) {
    let pid = std::process::id();
    // `try_lock`: after a fork, another thread of the parent may have held
    // the lock, and it stays locked in the child for good. Contended or
    // stuck, the close gets a thread of its own.
    let fd = match CLOSER.try_lock() {
        Ok(mut closer) => {
            if closer
                .as_ref()
                .is_none_or(|(started_by, _)| *started_by != pid)
            {
                *closer = start().map(|queue| (pid, queue));
            }
            match closer.as_ref() {
                Some((_, queue)) => match queue.send(fd) {
                    Ok(()) => return,
                    Err(mpsc::SendError(fd)) => {
                        *closer = None;
                        fd
                    }
                },
                None => fd,
            }
        }
        Err(_) => fd,
    };
    close_on_own_thread(fd);
}

/// Starts the closer thread; `None` if the process cannot make a thread.
fn start() -> Option<Sender<OwnedFd>> {
    let (queue, closing) = mpsc::channel::<OwnedFd>();
    std::thread::Builder::new()
        .name("ipc-core-closer".into())
        .spawn(move || closing.into_iter().for_each(drop))
        .ok()?;
    Some(queue)
}

/// Closes `fd` on a thread of its own, or here if no thread can be made
/// (the process is out of threads: nothing better is left).
fn close_on_own_thread(fd: OwnedFd) {
    // A spawn that fails drops the closure, and `fd` with it.
    let _ = std::thread::Builder::new()
        .name("ipc-core-closer".into())
        .spawn(move || drop(fd));
}
