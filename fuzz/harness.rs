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

/// The body decode of `Msg` with descriptors of several kinds attached.
pub fn decode(data: &[u8]) {
    let before = fd_count();
    {
        let (kinds, datagram) = split(data);
        let fds = descriptors(kinds);
        let limits = Limits::default()
            .with_max_descriptors(6)
            .with_max_bytes(1 << 20);
        let _ = fuzz::decode::<Msg>(datagram, fds, &limits);
    }
    assert_eq!(fd_count(), before, "a descriptor leaked");
}

/// The whole receive path: the datagram and descriptors written to a real
/// socketpair, read by a receiver.
pub fn receive(data: &[u8]) {
    let before = fd_count();
    {
        let (kinds, datagram) = split(data);
        let fds = descriptors(kinds);
        let Ok((tx, mut rx)) = channel::<Msg>() else {
            return;
        };
        rx.set_limits(
            Limits::default()
                .with_max_descriptors(6)
                .with_max_bytes(1 << 20),
        );
        let Ok(raw) = OwnedFd::try_from(tx) else {
            return;
        };
        let raws: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let iov = [std::io::IoSlice::new(datagram)];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raws)];
        let cmsgs: &[_] = if raws.is_empty() { &[] } else { &cmsg };
        let sent = nix::sys::socket::sendmsg::<()>(
            raw.as_raw_fd(),
            &iov,
            cmsgs,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            None,
        );
        drop(fds);
        if sent.is_ok() {
            let _ = rx.try_recv();
        }
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
    assert_eq!(fd_count(), before, "a descriptor leaked");
}
