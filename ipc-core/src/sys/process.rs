//! Handing a socket to a child at a known descriptor number, and taking it
//! up in the child.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;

/// Makes the child started by `command` find `fd` at number `target`,
/// inheritable across its `exec`. `fd` must stay open until the child is
/// spawned; it is close-on-exec itself, so only `target` reaches the program.
pub(crate) fn inherit_at(command: &mut Command, fd: BorrowedFd<'_>, target: RawFd) {
    let fd = fd.as_raw_fd();
    let hook = move || {
        // dup2 onto itself would keep close-on-exec: clear it instead.
        // SAFETY: between fork and exec only async-signal-safe calls are
        // allowed; dup2 and fcntl are. `fd` is open in the child (the parent
        // keeps it open until spawn returns), and `target` is ours to replace.
        let rc = unsafe {
            if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            }
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: the hook only makes async-signal-safe calls (see above) and
    // allocates nothing.
    unsafe {
        command.pre_exec(hook);
    }
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of the socket a spawning parent left at `fd`, once per
/// process. It must be open and an `AF_UNIX` `SOCK_SEQPACKET` socket; it is
/// made close-on-exec so that this process's own children do not inherit it.
pub(crate) fn take_inherited(fd: RawFd) -> Result<OwnedFd, String> {
    if fd < 0 {
        return Err(format!("descriptor {fd} is not a descriptor number"));
    }
    // SAFETY: fcntl(F_GETFD) on any number is harmless: it fails with EBADF
    // when nothing is open there.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("descriptor {fd} is not open"));
    }
    // SAFETY: `fd` is open (checked above); the borrow lasts for this check.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if !super::socket::is_channel_end(borrowed) {
        return Err(format!(
            "descriptor {fd} is not a connected AF_UNIX SOCK_SEQPACKET socket"
        ));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err("the parent's channel was already taken up in this process".into());
    }
    // SAFETY: `fd` is open and is the socket the spawning parent placed
    // there for this process (checked above); TAKEN makes this the only
    // owner that will ever be made of it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `owned` is open; setting FD_CLOEXEC touches nothing else.
    unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(owned)
}

/// A pidfd of process `pid`, or `None` where the kernel has no
/// `pidfd_open` (before Linux 5.3). It names the process that has `pid`
/// now: race-free only for a child not yet reaped, whose pid cannot be
/// reused.
pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // close-on-exec descriptor or -1; it reads no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just installed `fd` in our table for this call;
    // nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// How many times this process is a `fork` away from the one that loaded
/// this library: state that must not be shared with a parent (the rings a
/// sender writes, which one process writes alone) records the generation
/// it was made in, and a child sees it change.
pub(crate) fn fork_generation() -> u64 {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: the handler only increments an atomic, which is
        // async-signal-safe, as a child handler of fork must be; it is
        // registered once and never unregistered (it stays valid: a
        // function item).
        unsafe {
            libc::pthread_atfork(None, None, Some(forked));
        }
    });
    FORK_GENERATION.load(Ordering::Relaxed)
}

static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn forked() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The CPU this thread runs on, or 0 where the kernel will not say.
pub(crate) fn current_cpu() -> u64 {
    // SAFETY: sched_getcpu takes nothing and returns an int (-1 on error).
    let cpu = unsafe { libc::sched_getcpu() };
    u64::try_from(cpu).unwrap_or(0)
}

/// A process's effective user and group ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EffectiveIds {
    pub uid: u32,
    pub gid: u32,
}

/// `struct pidfd_info` of `linux/pidfd.h` (Linux 6.13), as first
/// published (`PIDFD_INFO_SIZE_VER0`, 64 bytes). The kernel fills as much
/// of its own struct as the size in the request number allows.
#[repr(C)]
#[derive(Debug, Default)]
// The kernel's layout: every field is written, a few are read.
#[allow(dead_code)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);

/// `PIDFD_INFO_CREDS`: ask for (and, in the answer, got) the ids.
const PIDFD_INFO_CREDS: u64 = 1 << 1;

/// `PIDFD_GET_INFO`: `_IOWR(PIDFS_IOCTL_MAGIC (0xFF), 11, struct
/// pidfd_info)`, that is read-write (3 << 30), the struct's size in bits
/// 16..30, the magic in bits 8..16 and the number in bits 0..8.
const PIDFD_GET_INFO: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as libc::c_ulong) << 16) | (0xFF << 8) | 11;

const _: () = assert!(PIDFD_GET_INFO == 0xC040_FF0B);

/// The effective ids of the process `pidfd` names, now, as the kernel
/// reports them through the pidfd (`PIDFD_GET_INFO`, Linux 6.13).
/// `Ok(None)` where the kernel has no such request (`ENOTTY`, `EINVAL`);
/// `ESRCH` once the process has been reaped.
pub(crate) fn pidfd_ids(pidfd: BorrowedFd<'_>) -> Result<Option<EffectiveIds>, nix::errno::Errno> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_CREDS,
        ..PidfdInfo::default()
    };
    // SAFETY: PIDFD_GET_INFO reads and writes at most the size encoded in
    // the request number, which is that of `info`, valid for reads and
    // writes for the call. On a descriptor that is no pidfd (or an older
    // kernel) the ioctl fails without touching it.
    let rc = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_INFO as _,
            &mut info as *mut PidfdInfo,
        )
    };
    if rc < 0 {
        return match nix::errno::Errno::last() {
            nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL => Ok(None),
            e => Err(e),
        };
    }
    if info.mask & PIDFD_INFO_CREDS == 0 {
        return Ok(None);
    }
    Ok(Some(EffectiveIds {
        uid: info.euid,
        gid: info.egid,
    }))
}

/// Whether the process `pidfd` names has not been reaped yet (a zombie
/// still counts): `pidfd_send_signal` with signal 0, which checks and
/// sends nothing. A process this one may not signal (`EPERM`) is there.
pub(crate) fn pidfd_alive(pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: pidfd_send_signal with signal 0, no siginfo (null) and no
    // flags reads no memory of ours and sends nothing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0 || nix::errno::Errno::last() == nix::errno::Errno::EPERM
}
