//! Helpers shared by the cross-process tests: forking a child that reports
//! failure through its exit status, counting open descriptors, and running
//! the tests of one binary one at a time.
#![allow(dead_code)]

pub mod ring;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Tests of one binary run one at a time: they count the process's open
/// descriptors, and a child forked by one test would inherit the sockets of
/// another and keep its peer from seeing the end of the channel.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Open descriptors of this process.
pub fn fd_count() -> usize {
    // read_dir holds one descriptor of its own while it counts, every time.
    let list = || -> Vec<String> {
        let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        fds.sort();
        fds
    };
    // Another thread of the test binary opens and closes a descriptor now
    // and then, not ours (seen: one that vanished between the listing and
    // its readlink, in about one run of the fd_passing tests in twenty). A
    // descriptor a test leaked stays open; that one does not last 2 ms, so
    // count once two listings 2 ms apart agree.
    let mut second = list();
    for _ in 0..50 {
        let first = second;
        std::thread::sleep(std::time::Duration::from_millis(2));
        second = list();
        if first == second {
            break;
        }
    }
    second.len()
}

/// Bytes queued for the receiver of `rx` (`FIONREAD`): on a seqpacket
/// socket, the sum of every queued datagram.
pub fn queued_bytes(rx: &impl AsFd) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a pointer to `n`, valid for
    // writes for the call.
    let rc = unsafe { nix::libc::ioctl(rx.as_fd().as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD");
    n as usize
}

/// What is queued at `rx` once a sender in another process has stopped:
/// waits (up to 10 s) for at least `at_least` bytes, then 300 ms more, so
/// that a sender that does not stop where it should shows in the count.
pub fn queued_when_sender_stops(rx: &impl AsFd, at_least: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while queued_bytes(rx) < at_least && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    queued_bytes(rx)
}

/// Open descriptors of this process whose target names `what` (a memfd's
/// name, say).
pub fn fds_naming(what: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains(what))
        .count()
}

/// Whether `fd` is open in this process.
pub fn is_open(fd: std::os::fd::RawFd) -> bool {
    nix::fcntl::fcntl(
        // SAFETY: the borrowed descriptor is used only for this one fcntl,
        // which reports EBADF if the number is not open.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_ok()
}

/// Whether `fd` is close-on-exec.
pub fn is_cloexec(fd: impl AsFd) -> bool {
    let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
    nix::fcntl::FdFlag::from_bits_retain(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
}

/// A forked child process.
#[derive(Debug)]
pub struct Forked {
    pid: Pid,
}

/// Forks; the child runs `body` and exits 0, or 101 if it panicked, with the
/// panic message written straight to descriptor 2 (the test harness's
/// capture of the forked thread would swallow it). The child takes no lock
/// of the standard library's (stdout's, say): another thread of the parent
/// may have held it at the fork.
pub fn fork_child(body: impl FnOnce()) -> Forked {
    // SAFETY: the tests of a binary run one at a time (`serial`), so no other
    // test thread is inside the allocator or holds a lock the child needs;
    // the child runs only `body` and leaves through `_exit`.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Parent { child } => Forked { pid: child },
        ForkResult::Child => {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            let code = match result {
                Ok(()) => 0,
                Err(payload) => {
                    let message = payload
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| payload.downcast_ref::<&str>().copied())
                        .unwrap_or("(non-string panic)");
                    let stderr = std::io::stderr();
                    let _ = nix::unistd::write(
                        stderr.as_fd(),
                        format!("child panicked: {message}\n").as_bytes(),
                    );
                    101
                }
            };
            // SAFETY: _exit ends the child at once, running no destructors or
            // atexit handlers that belong to the parent's state.
            unsafe { nix::libc::_exit(code) }
        }
    }
}

/// Closes, in a forked child, a descriptor the child inherited but must not
/// hold (the parent's end of a channel, so that the parent's drop reaches
/// the peer). The value that owns it in the child's copy of memory is never
/// dropped: the child leaves through `_exit`.
pub fn close_in_child(fd: &impl AsFd) {
    nix::unistd::close(fd.as_fd().as_raw_fd()).expect("close in child");
}

impl Forked {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the child and asserts that it exited 0.
    pub fn join(self) {
        match waitpid(self.pid, None).expect("waitpid") {
            WaitStatus::Exited(_, 0) => {}
            status => panic!("child failed: {status:?}"),
        }
    }

    /// Kills the child with SIGKILL and reaps it.
    pub fn kill(self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}

/// Sends `bytes` with `fds` attached as one raw datagram, as a hostile peer would.
pub fn send_raw(socket: &OwnedFd, bytes: &[u8], fds: &[std::os::fd::RawFd]) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None).expect("raw sendmsg");
}

/// A frame header as the wire format documents it.
pub fn header(kind: u8, fds: u32, body_len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(b"ic");
    h.push(2);
    h.push(kind);
    h.extend_from_slice(&fds.to_le_bytes());
    h.extend_from_slice(&body_len.to_le_bytes());
    h
}

/// A datagram with an inline body.
pub fn inline_frame(fds: u32, body: &[u8]) -> Vec<u8> {
    let mut frame = header(0, fds, body.len() as u64);
    frame.extend_from_slice(body);
    frame
}

/// `n` descriptors of /dev/null.
pub fn dev_nulls(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()))
        .collect()
}

/// A temporary file, already unlinked.
pub fn temp_file() -> std::fs::File {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "ipc-core-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

/// The environment variable that tells a re-run test binary which child
/// role to play.
pub const ROLE: &str = "IPC_CORE_TEST_ROLE";

/// A command that re-runs this test binary as the child `role`.
pub fn child_command(role: &str) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.env(ROLE, role);
    command
}

/// A test runner for binaries with `harness = false`, whose children are
/// the binary itself: runs each test in turn, prints one line per test and
/// the closing `N passed, N failed` line, and exits non-zero on failure.
/// Arguments that do not start with `-` filter tests by name.
pub fn run_tests(tests: &[(&str, fn())]) -> ! {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let outcome = std::panic::catch_unwind(test);
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    println!();
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 })
}

/// A sealable memfd of `len` bytes carrying `seals`, as a peer might make it.
pub fn memfd(len: i64, seals: nix::fcntl::SealFlag) -> OwnedFd {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(c"test", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&fd, len).unwrap();
    if !seals.is_empty() {
        nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_ADD_SEALS(seals)).unwrap();
    }
    fd
}

/// Mappings of memfds in this process.
pub fn memfd_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("/memfd:"))
        .count()
}

/// `SO_PASSPIDFD` (Linux 6.5): the kernel attaches a pidfd of the sender to
/// every datagram the socket receives.
pub const SO_PASSPIDFD: i32 = 76;

/// Turns a boolean socket option on, as a peer may on an end it hands over.
pub fn turn_on(socket: &impl AsFd, option: i32) {
    let on: nix::libc::c_int = 1;
    // SAFETY: `on` is a valid int for the call, and its size is passed.
    let rc = unsafe {
        nix::libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            nix::libc::SOL_SOCKET,
            option,
            (&on as *const nix::libc::c_int).cast(),
            std::mem::size_of_val(&on) as nix::libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt {option}");
}

/// Whether the peer of a connected socket has closed its end.
pub fn is_hung_up(socket: &impl AsFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // A peer's close shuts both directions of a unix socket: POLLHUP.
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).unwrap();
    fds[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

/// CPU time the calling thread has used.
pub fn thread_cpu() -> std::time::Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
    let (user, system) = (usage.user_time(), usage.system_time());
    std::time::Duration::from_secs((user.tv_sec() + system.tv_sec()) as u64)
        + std::time::Duration::from_micros((user.tv_usec() + system.tv_usec()) as u64)
}
