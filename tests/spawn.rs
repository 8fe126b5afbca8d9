//! Multi-process programs with real spawned processes: this binary re-runs
//! itself as each child (`IPC_CORE_TEST_ROLE` names the role), so it runs
//! without the libtest harness and prints its own `N passed, N failed`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use ipc_core::{channel, process, Connection, Error, Listener, Select, Sender};
use support::{child_command, fd_count, run_tests, ROLE};

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        std::process::exit(play(&role));
    }
    run_tests(&[
        (stringify!(echo_across_spawn), echo_across_spawn),
        (
            stringify!(only_the_channel_reaches_the_child),
            only_the_channel_reaches_the_child,
        ),
        (
            stringify!(a_child_killed_mid_conversation_reads_as_disconnected),
            a_child_killed_mid_conversation_reads_as_disconnected,
        ),
        (
            stringify!(the_parents_death_reads_as_disconnected_in_the_child),
            the_parents_death_reads_as_disconnected_in_the_child,
        ),
        (
            stringify!(a_type_mismatch_is_an_error_on_both_sides_of_spawn),
            a_type_mismatch_is_an_error_on_both_sides_of_spawn,
        ),
        (
            stringify!(a_child_started_without_spawn_gets_a_clear_error),
            a_child_started_without_spawn_gets_a_clear_error,
        ),
        (
            stringify!(unrelated_processes_connect_with_the_right_credentials),
            unrelated_processes_connect_with_the_right_credentials,
        ),
        (
            stringify!(a_type_mismatch_is_an_error_on_both_sides_of_connect),
            a_type_mismatch_is_an_error_on_both_sides_of_connect,
        ),
        (
            stringify!(a_stale_socket_path_is_replaced_and_a_live_one_is_not),
            a_stale_socket_path_is_replaced_and_a_live_one_is_not,
        ),
        (
            stringify!(select_wakes_for_the_one_ready_receiver_of_many),
            select_wakes_for_the_one_ready_receiver_of_many,
        ),
        (
            stringify!(try_recv_does_not_wait_behind_a_recv_awaiting_the_greeting),
            try_recv_does_not_wait_behind_a_recv_awaiting_the_greeting,
        ),
        (
            stringify!(a_spawned_child_is_seen_with_its_own_credentials),
            a_spawned_child_is_seen_with_its_own_credentials,
        ),
        (
            stringify!(select_reports_spawned_connections_ready_only_for_messages),
            select_reports_spawned_connections_ready_only_for_messages,
        ),
        (
            stringify!(the_child_takes_its_channel_variable_out_of_the_environment),
            the_child_takes_its_channel_variable_out_of_the_environment,
        ),
        (
            stringify!(a_child_gives_up_on_a_parent_that_never_greets),
            a_child_gives_up_on_a_parent_that_never_greets,
        ),
    ]);
}

/// What a child does, by role; the return value is its exit status.
fn play(role: &str) -> i32 {
    match role {
        "echo" => {
            let parent = process::parent::<String, String>().unwrap();
            while let Ok(text) = parent.recv() {
                parent.send(text).unwrap();
            }
            0
        }
        "count_fds" => {
            let parent = process::parent::<Vec<i32>, ()>().unwrap();
            let mut fds = open_fds();
            // Leave out the directory being listed.
            fds.retain(|fd| {
                std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .map(|target| !target.starts_with("/proc"))
                    .unwrap_or(false)
            });
            parent.send(fds).unwrap();
            0
        }
        "mismatch" => match process::parent::<u64, u64>() {
            Err(Error::TypeMismatch { ours, theirs }) => {
                assert!(ours.contains("u64"), "{ours}");
                assert!(theirs.contains("String"), "{theirs}");
                42
            }
            _ => 1,
        },
        "no_parent" => match process::parent::<u64, u64>() {
            Err(Error::NotSpawned(why)) if why.contains("IPC_CORE_CHANNEL_FD") => 0,
            _ => 1,
        },
        "middle" => {
            // Start a grandchild, greet it, and die without a word.
            let (_grandchild, conn) =
                process::spawn::<String, ()>(&mut child_command("grandchild")).unwrap();
            conn.send("hello".into()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            0
        }
        "grandchild" => {
            let parent = process::parent::<(), String>().unwrap();
            assert_eq!(parent.recv().unwrap(), "hello");
            let verdict = match parent.recv_timeout(Duration::from_secs(20)) {
                Err(Error::Disconnected) => "disconnected",
                Err(Error::Timeout) => "hung",
                _ => "other",
            };
            let report = std::env::var("REPORT_TO").unwrap();
            let reporter = Connection::<String, ()>::connect(report).unwrap();
            reporter.send(verdict.into()).unwrap();
            0
        }
        "client" => {
            let addr = std::env::var("CONNECT_TO").unwrap();
            let server = Connection::<u32, String>::connect(addr).unwrap();
            server.send(std::process::id()).unwrap();
            assert_eq!(server.recv().unwrap(), "welcome");
            let peer = server.peer_credentials().unwrap();
            assert_eq!(peer.pid() as u32, std::os::unix::process::parent_id());
            0
        }
        "wrong_client" => {
            let addr = std::env::var("CONNECT_TO").unwrap();
            match Connection::<String, u32>::connect(addr) {
                Err(Error::TypeMismatch { .. }) => 42,
                _ => 1,
            }
        }
        "send_on_the_sender_received" => {
            let parent = process::parent::<(), Sender<u64>>().unwrap();
            let sender = parent.recv().unwrap();
            sender.send(99).unwrap();
            0
        }
        "slow_greeter" => {
            std::thread::sleep(Duration::from_millis(1500));
            let parent = process::parent::<u32, ()>().unwrap();
            parent.send(7).unwrap();
            0
        }
        "drop_privileges" => {
            // As a privilege-separated worker does: give up root before
            // talking to the broker.
            if nix::unistd::geteuid().is_root() {
                let nobody = nix::unistd::Uid::from_raw(NOBODY);
                let nogroup = nix::unistd::Gid::from_raw(NOBODY);
                nix::unistd::setgroups(&[]).unwrap();
                nix::unistd::setresgid(nogroup, nogroup, nogroup).unwrap();
                nix::unistd::setresuid(nobody, nobody, nobody).unwrap();
            }
            let parent = process::parent::<u32, ()>().unwrap();
            parent.send(std::process::id()).unwrap();
            let _ = parent.recv();
            0
        }
        "greet_then_send" => {
            let parent = process::parent::<u32, ()>().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            parent.send(std::process::id()).unwrap();
            let _ = parent.recv();
            0
        }
        "env_check" => {
            let parent = process::parent::<bool, ()>().unwrap();
            parent
                .send(std::env::var_os(process::CHANNEL_FD_ENV).is_none())
                .unwrap();
            0
        }
        "mute_parent" => {
            let started = std::time::Instant::now();
            match process::parent_timeout::<u32, u32>(Duration::from_millis(200)) {
                Err(Error::GreetingTimeout { .. })
                    if started.elapsed() < Duration::from_secs(2) =>
                {
                    0
                }
                other => {
                    eprintln!("expected a greeting timeout, got {:?}", other.map(drop));
                    1
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// The uid and gid of `nobody`, which a child running as root drops to.
const NOBODY: u32 = 65534;

fn open_fds() -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    fds.sort();
    fds
}

fn exit_code(child: &mut std::process::Child) -> Option<i32> {
    child.wait().unwrap().code()
}

fn echo_across_spawn() {
    let before = fd_count();
    let (mut child, worker) = process::spawn::<String, String>(&mut child_command("echo")).unwrap();
    for i in 0..200 {
        let text = format!("message {i}");
        worker.send(text.clone()).unwrap();
        assert_eq!(worker.recv().unwrap(), text);
    }
    drop(worker);
    assert_eq!(exit_code(&mut child), Some(0));
    assert_eq!(fd_count(), before);
}

fn only_the_channel_reaches_the_child() {
    // Descriptors this test process inherited without close-on-exec (a
    // build tool's jobserver, say) reach any child; besides those, the child
    // gets 0, 1, 2 and its channel at 3, and none of the sockets, memfds or
    // files this process has open.
    let _open_here = (
        channel::<u8>().unwrap(),
        ipc_core::SharedMemory::new(10).unwrap(),
    );
    let mut expected: Vec<i32> = open_fds()
        .into_iter()
        .filter(|&fd| fd > 2 && support::is_open(fd) && !support::is_cloexec(unsafe_borrow(fd)))
        .collect();
    expected.extend([0, 1, 2, 3]);
    expected.sort();
    expected.dedup();
    let (mut child, conn) =
        process::spawn::<(), Vec<i32>>(&mut child_command("count_fds")).unwrap();
    let fds = conn.recv().unwrap();
    assert_eq!(exit_code(&mut child), Some(0));
    assert_eq!(fds, expected);
}

fn unsafe_borrow(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: `fd` is open (checked just before) and this test closes
    // nothing meanwhile; the borrow is used for one fcntl.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

fn a_child_killed_mid_conversation_reads_as_disconnected() {
    let before = fd_count();
    let (mut child, worker) = process::spawn::<String, String>(&mut child_command("echo")).unwrap();
    worker.send("one".into()).unwrap();
    assert_eq!(worker.recv().unwrap(), "one");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(matches!(worker.recv(), Err(Error::Disconnected)));
    let err = worker.send("two".into()).unwrap_err();
    assert!(matches!(err.error(), Error::Disconnected), "{err:?}");
    assert_eq!(err.into_inner(), "two");
    drop(worker);
    assert_eq!(fd_count(), before);
}

fn the_parents_death_reads_as_disconnected_in_the_child() {
    let name = format!("@ipc-core-test-report-{}", std::process::id());
    let reports = Listener::<(), String>::bind(&name).unwrap();
    let mut middle = child_command("middle");
    middle.env("REPORT_TO", &name);
    let (mut middle, _conn) = process::spawn::<(), ()>(&mut middle).unwrap();
    assert_eq!(exit_code(&mut middle), Some(0));
    let grandchild = reports.accept().unwrap();
    assert_eq!(grandchild.recv().unwrap(), "disconnected");
}

fn a_type_mismatch_is_an_error_on_both_sides_of_spawn() {
    let (mut child, conn) =
        process::spawn::<String, String>(&mut child_command("mismatch")).unwrap();
    match conn.recv() {
        Err(Error::TypeMismatch { ours, theirs }) => {
            assert!(ours.contains("String"), "{ours}");
            assert!(theirs.contains("u64"), "{theirs}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    // Every later receive says so again; nothing is read as the wrong type.
    assert!(matches!(conn.try_recv(), Err(Error::TypeMismatch { .. })));
    assert_eq!(exit_code(&mut child), Some(42));
}

fn a_child_started_without_spawn_gets_a_clear_error() {
    let status = child_command("no_parent")
        .env_remove(process::CHANNEL_FD_ENV)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

fn unrelated_processes_connect_with_the_right_credentials() {
    let path = std::env::temp_dir().join(format!("ipc-core-test-{}.sock", std::process::id()));
    let listener = Listener::<String, u32>::bind(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o170000, 0o140000, "a socket file");
    let mut client = child_command("client")
        .env("CONNECT_TO", &path)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let conn = listener.accept().unwrap();
    let pid = conn.recv().unwrap();
    let peer = conn.peer_credentials().unwrap();
    assert_eq!(peer.pid() as u32, pid);
    assert_eq!(peer.pid() as u32, client.id());
    assert_eq!(peer.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(peer.gid(), nix::unistd::getegid().as_raw());
    if let Some(pidfd) = peer.pidfd() {
        // The pidfd names the client: it becomes readable when it exits.
        let _ = pidfd;
    }
    conn.send("welcome".into()).unwrap();
    assert_eq!(exit_code(&mut client), Some(0));
    drop(listener);
    assert!(!path.exists(), "the listener removes its socket file");
}

fn a_type_mismatch_is_an_error_on_both_sides_of_connect() {
    let name = format!("@ipc-core-test-mismatch-{}", std::process::id());
    let listener = Listener::<String, u32>::bind(&name).unwrap();
    let mut client = child_command("wrong_client")
        .env("CONNECT_TO", &name)
        .spawn()
        .unwrap();
    match listener.accept() {
        Err(Error::TypeMismatch { ours, theirs }) => {
            // Both ends claim to send strings: neither can read the other.
            assert_eq!(ours, "sends alloc::string::String, receives u32");
            assert_eq!(theirs, "sends alloc::string::String, receives u32");
        }
        other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
    }
    assert_eq!(exit_code(&mut client), Some(42));
}

fn a_stale_socket_path_is_replaced_and_a_live_one_is_not() {
    let dir = std::env::temp_dir().join(format!("ipc-core-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("daemon.sock");
    // A socket file left by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let listener = Listener::<(), ()>::bind(&path).unwrap();
    // A live listener is not replaced.
    let err = Listener::<(), ()>::bind(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Io { op: "bind", source } if source.raw_os_error() == Some(nix::libc::EADDRINUSE)),
        "{err:?}"
    );
    // That bind's probe connected to the live listener and left at once:
    // the listener's next accept is the next real peer, not an error.
    let client = std::thread::spawn({
        let path = path.clone();
        move || {
            Connection::<(), ()>::connect(&path)
                .unwrap()
                .send(())
                .unwrap()
        }
    });
    let peer = listener.accept().unwrap();
    peer.recv().unwrap();
    client.join().unwrap();
    drop(listener);
    // Nor is a file that is not a socket.
    std::fs::write(&path, "precious").unwrap();
    assert!(Listener::<(), ()>::bind(&path).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn select_wakes_for_the_one_ready_receiver_of_many() {
    let mut select = Select::new().unwrap();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for token in 0..100 {
        let (tx, rx) = channel::<u64>().unwrap();
        select.register(&rx, token).unwrap();
        senders.push(tx);
        receivers.push(rx);
    }
    // A process of its own sends on receiver 57's sender.
    let (mut child, conn) =
        process::spawn::<Sender<u64>, ()>(&mut child_command("send_on_the_sender_received"))
            .unwrap();
    conn.send(senders[57].clone()).unwrap();
    let ready = select.wait(Some(Duration::from_secs(20))).unwrap().to_vec();
    assert_eq!(ready, [57]);
    assert_eq!(receivers[57].try_recv().unwrap(), 99);
    assert_eq!(exit_code(&mut child), Some(0));
    assert!(matches!(
        select.wait(Some(Duration::from_millis(20))),
        Err(Error::Timeout)
    ));
    // A receiver whose senders are all gone is ready too: it says Disconnected.
    drop(senders.remove(3));
    assert_eq!(select.wait(Some(Duration::from_secs(5))).unwrap(), [3]);
    assert!(matches!(receivers[3].try_recv(), Err(Error::Disconnected)));
}

fn try_recv_does_not_wait_behind_a_recv_awaiting_the_greeting() {
    let (mut child, conn) = process::spawn::<(), u32>(&mut child_command("slow_greeter")).unwrap();
    std::thread::scope(|s| {
        // This receive waits for the child's greeting, then its message.
        let waiting = s.spawn(|| conn.recv());
        std::thread::sleep(Duration::from_millis(100));
        let start = std::time::Instant::now();
        assert!(matches!(conn.try_recv(), Err(Error::Empty)));
        assert!(matches!(
            conn.recv_timeout(Duration::from_millis(50)),
            Err(Error::Timeout)
        ));
        assert!(
            start.elapsed() < Duration::from_millis(1000),
            "try_recv and recv_timeout waited behind recv: {:?}",
            start.elapsed()
        );
        assert_eq!(waiting.join().unwrap().unwrap(), 7);
    });
    assert_eq!(exit_code(&mut child), Some(0));
}

fn a_spawned_child_is_seen_with_its_own_credentials() {
    let before = fd_count();
    let root = nix::unistd::geteuid().is_root();
    let (mut child, conn) =
        process::spawn::<(), u32>(&mut child_command("drop_privileges")).unwrap();
    // Asked before the child has greeted: it waits for the greeting.
    let peer = conn.peer_credentials().unwrap();
    assert_eq!(peer.pid() as u32, child.id(), "the child, not this process");
    let (uid, gid) = if root {
        (NOBODY, NOBODY)
    } else {
        eprintln!("not root: the child keeps this process's uid");
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    };
    assert_eq!((peer.uid(), peer.gid()), (uid, gid));
    let pidfd = peer.pidfd().expect("a pidfd of the child");
    let info = std::fs::read_to_string(format!(
        "/proc/self/fdinfo/{}",
        std::os::fd::AsRawFd::as_raw_fd(&pidfd)
    ))
    .unwrap();
    assert!(
        info.contains(&format!("Pid:\t{}\n", child.id())),
        "the pidfd names another process: {info}"
    );
    assert_eq!(conn.recv().unwrap(), child.id());
    drop(peer);
    drop(conn);
    assert_eq!(exit_code(&mut child), Some(0));
    assert_eq!(fd_count(), before);
}

fn select_reports_spawned_connections_ready_only_for_messages() {
    let mut select = Select::new().unwrap();
    let children: Vec<_> = (0..3)
        .map(|token| {
            let (child, conn) =
                process::spawn::<(), u32>(&mut child_command("greet_then_send")).unwrap();
            select.register(&conn, token).unwrap();
            (child, conn)
        })
        .collect();
    // Each child greets as it starts and sends 300 ms later: the greetings
    // make the sockets readable, and must not make them ready.
    let mut got = Vec::new();
    while got.len() < children.len() {
        let ready = select.wait(Some(Duration::from_secs(10))).unwrap().to_vec();
        for token in ready {
            let (child, conn) = &children[token];
            match conn.try_recv() {
                Ok(pid) => {
                    assert_eq!(pid, child.id());
                    got.push(token);
                }
                Err(e) => panic!("connection {token} was ready for no message: {e}"),
            }
        }
    }
    got.sort();
    assert_eq!(got, [0, 1, 2]);
    for (mut child, conn) in children {
        drop(conn);
        assert_eq!(exit_code(&mut child), Some(0));
    }
}

fn the_child_takes_its_channel_variable_out_of_the_environment() {
    let (mut child, conn) = process::spawn::<(), bool>(&mut child_command("env_check")).unwrap();
    assert!(
        conn.recv().unwrap(),
        "the child still names a descriptor its own children would not have"
    );
    assert_eq!(exit_code(&mut child), Some(0));
}

fn a_child_gives_up_on_a_parent_that_never_greets() {
    use std::os::unix::process::CommandExt;
    // A socket at descriptor 3 whose other end never says a word.
    let (mute_end, child_end) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&child_end);
    let mut command = child_command("mute_parent");
    command.env(process::CHANNEL_FD_ENV, "3");
    // SAFETY: between fork and exec the hook only calls dup2, which is
    // async-signal-safe; `fd` stays open in this process until spawn returns.
    unsafe {
        command.pre_exec(move || {
            if nix::libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop(child_end);
    assert_eq!(exit_code(&mut child), Some(0));
    drop(mute_end);
}
