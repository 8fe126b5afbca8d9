//! What each fuzz target checks, shared by the targets (`fuzz_targets/`) and
//! the regression test that replays `regressions/` in `cargo test`.
//!
//! Invariants, not only "no crash": no panic; the descriptor count is the
//! same after each input as before (nothing leaked); nothing is closed twice
//! (an `OwnedFd` closed twice aborts a debug build, which is how the targets
//! are built).
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use ipc_core::__private::fuzz;
use ipc_core::{channel, IpcMessage, Limits, SealedMemory, Sender, SharedMemory};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// A message that holds descriptors of every kind a receiver checks.
#[derive(IpcMessage)]
pub enum Msg {
    Plain(u64, String),
    Files {
        file: File,
        more: Vec<OwnedFd>,
    },
    Sockets(Option<UnixStream>, Sender<u8>),
    Memory {
        shared: SharedMemory,
        sealed: Option<SealedMemory>,
    },
    Memfd(memfd::Memfd, Box<(u8, File)>),
    /// Byte arrays, which the derive carries as byte strings of a fixed
    /// length, beside a descriptor.
    Keys {
        id: [u8; 16],
        tag: Option<[u8; 4]>,
        list: Vec<[u8; 2]>,
        file: File,
    },
    /// A recursive type, which a body of nested tags would decode by
    /// recursing once per byte, and zero-sized elements.
    Tree(Tree, Vec<()>),
}

/// A type that recurses through `Box`, with a descriptor in some nodes.
#[derive(IpcMessage)]
pub enum Tree {
    Leaf(u8),
    Node(Box<Tree>),
    Fork(Box<Tree>, Option<File>),
}

pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Descriptors of the kinds named by `kinds` (one byte each): /dev/null, a
/// stream socket, a channel end, a sealed memfd, an unsealed memfd, a
/// size-sealed memfd.
pub fn descriptors(kinds: &[u8]) -> Vec<OwnedFd> {
    kinds
        .iter()
        .filter_map(|k| match k % 6 {
            0 => File::open("/dev/null").ok().map(OwnedFd::from),
            1 => UnixStream::pair().ok().map(|(a, _)| OwnedFd::from(a)),
            2 => channel::<u8>()
                .ok()
                .and_then(|(tx, _)| OwnedFd::try_from(tx).ok()),
            3 => memfd(
                SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK,
                4096,
            ),
            // Two pages: a pooled body (wire kind 2) of up to 4096 bytes.
            4 => memfd(SealFlag::empty(), 8192),
            _ => memfd(SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK, 4096),
        })
        .collect()
}

fn memfd(seals: SealFlag, len: i64) -> Option<OwnedFd> {
    let fd = memfd_create(c"fuzz", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).ok()?;
    nix::unistd::ftruncate(&fd, len).ok()?;
    if !seals.is_empty() {
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).ok()?;
    }
    Some(fd)
}

/// Splits an input into descriptor kinds (first byte: how many, at most 8)
/// and the datagram.
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    let n = (n as usize % 9).min(rest.len());
    rest.split_at(n)
}

/// The frame header parser.
pub fn header(data: &[u8]) {
    let _ = fuzz::header(data);
}

/// A ring's memory as a hostile sender may write it (its head word, then
/// its slots): records are taken, each at most a record's length, and the
/// take ends, whatever the memory holds.
pub fn ring(data: &[u8]) {
    let taken = fuzz::ring(data);
    assert!(taken <= 2048, "more records than slots");
}

/// The body decode of `Msg` with descriptors of several kinds attached.
pub fn decode(data: &[u8]) {
    let before = fd_count();
    {
        let (kinds, datagram) = split(data);
        let fds = descriptors(kinds);
        let limits = Limits::default()
            .with_max_descriptors(6)
            .with_max_bytes(1 << 20)
            .with_max_depth(64)
            .with_max_zero_sized(1000);
        let _ = fuzz::decode::<Msg>(datagram, fds, &limits);
    }
    assert_eq!(fd_count(), before, "a descriptor leaked");
}

/// What the `receive` target does around the datagram, from the first
/// byte of its input.
pub mod flags {
    /// The receiving socket has `SO_PASSCRED`: every datagram comes with
    /// the sender's credentials.
    pub const PASSCRED: u8 = 1;
    /// The receiving socket has `SO_PASSPIDFD`: every datagram comes with
    /// a pidfd of the sender, a descriptor the receiver must close.
    pub const PASSPIDFD: u8 = 2;
    /// The datagram carries the sender's credentials explicitly.
    pub const CREDENTIALS: u8 = 4;
    /// An empty datagram goes first.
    pub const EMPTY_FIRST: u8 = 8;
    /// The sender shuts its end down for writing afterwards.
    pub const HALF_CLOSE: u8 = 16;
}

/// `SO_PASSPIDFD` (Linux 6.5).
const SO_PASSPIDFD: i32 = 76;

fn turn_on(socket: &impl std::os::fd::AsFd, option: i32) {
    let on: nix::libc::c_int = 1;
    // SAFETY: `on` is a valid int for the call, and its size is passed.
    // An option the kernel does not know is refused, which is harmless here.
    unsafe {
        nix::libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            nix::libc::SOL_SOCKET,
            option,
            (&on as *const nix::libc::c_int).cast(),
            std::mem::size_of_val(&on) as nix::libc::socklen_t,
        );
    }
}

/// The whole receive path: the datagram and descriptors written to a real
/// socketpair, read by a receiver, with the control messages and the
/// stream's end that [`flags`] (the first byte) ask for.
pub fn receive(data: &[u8]) {
    let before = fd_count();
    {
        let Some((&options, rest)) = data.split_first() else {
            return;
        };
        let (kinds, datagram) = split(rest);
        let fds = descriptors(kinds);
        let Ok((tx, mut rx)) = channel::<Msg>() else {
            return;
        };
        rx.set_limits(
            Limits::default()
                .with_max_descriptors(6)
                .with_max_bytes(1 << 20)
                .with_max_depth(64)
                .with_max_zero_sized(1000),
        );
        if options & flags::PASSCRED != 0 {
            turn_on(&rx, nix::libc::SO_PASSCRED);
        }
        if options & flags::PASSPIDFD != 0 {
            turn_on(&rx, SO_PASSPIDFD);
        }
        let Ok(raw) = OwnedFd::try_from(tx) else {
            return;
        };
        let dontwait = nix::sys::socket::MsgFlags::MSG_DONTWAIT;
        if options & flags::EMPTY_FIRST != 0 {
            let _ = nix::sys::socket::send(raw.as_raw_fd(), &[], dontwait);
        }
        let raws: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let credentials = nix::sys::socket::UnixCredentials::new();
        let mut cmsgs = Vec::new();
        if !raws.is_empty() {
            cmsgs.push(nix::sys::socket::ControlMessage::ScmRights(&raws));
        }
        if options & flags::CREDENTIALS != 0 {
            cmsgs.push(nix::sys::socket::ControlMessage::ScmCredentials(
                &credentials,
            ));
        }
        let iov = [std::io::IoSlice::new(datagram)];
        let sent = nix::sys::socket::sendmsg::<()>(raw.as_raw_fd(), &iov, &cmsgs, dontwait, None);
        drop(fds);
        let half_closed = options & flags::HALF_CLOSE != 0
            && nix::sys::socket::shutdown(raw.as_raw_fd(), nix::sys::socket::Shutdown::Write)
                .is_ok();
        if sent.is_ok() {
            let _ = rx.try_recv();
        }
        if half_closed {
            // Nothing more can come: the end, at once and for good.
            for _ in 0..3 {
                match rx.try_recv() {
                    Err(ipc_core::Error::Disconnected) => {}
                    Ok(_) => panic!("a message after the end of the stream"),
                    Err(e) => panic!("a half-closed stream reads as {e}, not its end"),
                }
            }
        } else {
            // The channel goes on: a good message after any input arrives.
            let good = ipc_core::Sender::<Msg>::from(raw);
            good.send(Msg::Plain(7, "after".into()))
                .expect("send after a bad input");
            match rx.try_recv() {
                Ok(Msg::Plain(7, _)) => {}
                Ok(_) => panic!("the good message came back different"),
                Err(e) => panic!("the channel is broken after a bad input: {e}"),
            }
        }
    }
    assert_eq!(fd_count(), before, "a descriptor leaked");
}
