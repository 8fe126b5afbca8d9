//! What a receiver learns of its peer: the ids `peer_credentials()`
//! reports are the peer's effective ids at the time of the call, whatever
//! the peer chose to attach to its greeting, and what the kernel attaches
//! to a datagram (`SCM_CREDENTIALS`, `SCM_PIDFD`) never becomes a
//! descriptor that is not one. This binary re-runs itself as each child
//! (`IPC_CORE_TEST_ROLE` names the role), so it runs without the libtest
//! harness.

mod support;

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use ipc_core::{channel, process};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Uid;
use support::{child_command, fd_count, fork_child, run_tests, turn_on, ROLE, SO_PASSPIDFD};

const NOBODY: u32 = 65534;

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        std::process::exit(play(&role));
    }
    run_tests(&[
        (
            stringify!(a_spawned_child_that_keeps_root_is_seen_as_root),
            a_spawned_child_that_keeps_root_is_seen_as_root,
        ),
        (
            stringify!(the_ids_are_those_the_peer_has_when_asked),
            the_ids_are_those_the_peer_has_when_asked,
        ),
        (
            stringify!(a_pidfd_the_kernel_could_not_install_is_no_descriptor),
            a_pidfd_the_kernel_could_not_install_is_no_descriptor,
        ),
        (
            stringify!(a_greeting_read_out_of_descriptors_still_names_the_child),
            a_greeting_read_out_of_descriptors_still_names_the_child,
        ),
    ]);
}

fn play(role: &str) -> i32 {
    match role {
        "real_nobody_effective_root" => {
            // Real uid nobody; effective and saved uid still root: the
            // child has every privilege it had.
            let (nobody, root) = (Uid::from_raw(NOBODY), Uid::from_raw(0));
            nix::unistd::setresuid(nobody, root, root).unwrap();
            let parent = process::parent::<u32, ()>().unwrap();
            parent.send(nix::unistd::geteuid().as_raw()).unwrap();
            let _ = parent.recv();
            0
        }
        "drop_after_greeting" => {
            // Greets as root, then drops every uid to nobody.
            let parent = process::parent::<u32, ()>().unwrap();
            parent.send(nix::unistd::geteuid().as_raw()).unwrap();
            parent.recv().unwrap();
            let nobody = Uid::from_raw(NOBODY);
            nix::unistd::setresuid(nobody, nobody, nobody).unwrap();
            parent.send(nix::unistd::geteuid().as_raw()).unwrap();
            let _ = parent.recv();
            0
        }
        "greet" => {
            let parent = process::parent::<u32, ()>().unwrap();
            parent.send(std::process::id()).unwrap();
            let _ = parent.recv();
            0
        }
        _ => 2,
    }
}

fn needs_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root to spawn a child with a uid of its choosing");
    false
}

/// A spawned child's greeting carries the ids it chose to attach (its real
/// uid by default); a child that sets only its real uid to nobody keeps
/// root. `peer_credentials().uid()` is its effective uid, read from the
/// process through its pidfd: root.
fn a_spawned_child_that_keeps_root_is_seen_as_root() {
    if !needs_root() {
        return;
    }
    let before = fd_count();
    let (mut child, conn) =
        process::spawn::<(), u32>(&mut child_command("real_nobody_effective_root")).unwrap();
    let peer = conn.peer_credentials().unwrap();
    let effective = conn.recv().unwrap();
    drop(conn);
    assert!(child.wait().unwrap().success());
    assert_eq!(effective, 0, "the child kept root");
    assert_eq!(
        peer.uid(),
        effective,
        "peer_credentials says uid {} for a child whose effective uid is {effective}",
        peer.uid()
    );
    drop(peer);
    assert_eq!(fd_count(), before);
}

/// The ids are read when `peer_credentials()` is called: asked again after
/// the child dropped to nobody, it says nobody.
fn the_ids_are_those_the_peer_has_when_asked() {
    if !needs_root() {
        return;
    }
    let before = fd_count();
    let (mut child, conn) =
        process::spawn::<(), u32>(&mut child_command("drop_after_greeting")).unwrap();
    assert_eq!(conn.recv().unwrap(), 0);
    assert_eq!(conn.peer_credentials().unwrap().uid(), 0);
    conn.send(()).unwrap();
    assert_eq!(conn.recv().unwrap(), NOBODY);
    let peer = conn.peer_credentials().unwrap();
    // The gid was left as it was.
    let gid = nix::unistd::getegid().as_raw();
    assert_eq!((peer.uid(), peer.gid()), (NOBODY, gid));
    drop((peer, conn));
    assert!(child.wait().unwrap().success());
    assert_eq!(fd_count(), before);
}

/// The lowest descriptor number free now: the limit under which a process
/// can open nothing more.
fn lowest_free() -> u64 {
    let probe = nix::unistd::dup(std::io::stdin().as_fd()).unwrap();
    probe.as_raw_fd() as u64
}

/// Runs `f` with `RLIMIT_NOFILE` at the lowest free number (no descriptor
/// can be opened), then restores the limit.
fn out_of_descriptors<R>(f: impl FnOnce() -> R) -> R {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, lowest_free(), hard).unwrap();
    let result = f();
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    result
}

/// Runs `victim` in a forked child and asserts that it exited 0: a crash
/// (an abort) would take the whole test binary down otherwise.
fn in_child(what: &str, victim: impl FnOnce()) {
    let child = fork_child(victim);
    match waitpid(child.pid(), None).unwrap() {
        WaitStatus::Exited(_, 0) => {}
        status => panic!("{what}: the receiving process ended with {status:?}"),
    }
}

/// With `SO_PASSPIDFD` on a receiving socket (a peer that handed the end
/// over can turn it on), a receiver with no descriptor number free gets an
/// `SCM_PIDFD` holding `-EMFILE`, not a descriptor: it is no descriptor to
/// the receive either (nothing is closed that is not ours, which a build
/// with debug assertions would abort on). The message arrives, and the
/// channel goes on.
fn a_pidfd_the_kernel_could_not_install_is_no_descriptor() {
    in_child("a message read out of descriptors", || {
        let before = fd_count();
        let (tx, rx) = channel::<u32>().unwrap();
        turn_on(&rx, SO_PASSPIDFD);
        tx.send(7).unwrap();
        let got = out_of_descriptors(|| rx.recv());
        assert_eq!(got.unwrap(), 7);
        tx.send(8).unwrap();
        assert_eq!(rx.recv().unwrap(), 8);
        drop((tx, rx));
        assert_eq!(fd_count(), before);
    });
}

/// The parent's end of a spawned child reads the greeting with
/// `SO_PASSPIDFD` on. Read while the parent has no descriptor number free,
/// the greeting's `SCM_PIDFD` holds an error: the pidfd opened at spawn
/// names the child instead, and `peer_credentials()` works once numbers
/// are free again.
fn a_greeting_read_out_of_descriptors_still_names_the_child() {
    in_child("a greeting read out of descriptors", || {
        let before = fd_count();
        let (mut child, conn) = process::spawn::<(), u32>(&mut child_command("greet")).unwrap();
        // Wait for the greeting and the first message to be queued.
        let mut fds = [nix::poll::PollFd::new(
            conn.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let first = out_of_descriptors(|| conn.try_recv());
        assert_eq!(first.unwrap(), child.id());
        let peer = conn.peer_credentials().unwrap_or_else(|e| {
            panic!("peer_credentials after a greeting read out of descriptors: {e}")
        });
        assert_eq!(peer.pid() as u32, child.id());
        let pidfd = peer.pidfd().expect("a pidfd of the child");
        assert!(
            pidfd.as_raw_fd() >= 0,
            "a pidfd numbered {}",
            pidfd.as_raw_fd()
        );
        drop(peer);
        drop(conn);
        child.wait().unwrap();
        assert_eq!(fd_count(), before);
    });
}
