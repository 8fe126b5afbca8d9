//! Replays the fuzz targets' regression inputs (`fuzz/regressions/`) and a
//! deterministic sweep over valid frames, every truncation of them and a
//! flip of every byte, through the same harness the fuzzers run
//! (`fuzz/harness.rs`): no panic, no descriptor leaked or closed twice, and
//! a truncated frame is always refused.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::os::fd::{AsRawFd, OwnedFd};

use harness::{flags, Msg, Tree};
use ipc_core::{channel, Limits, SealedMemory, SharedMemory};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// Valid inputs for the decode and receive targets: a kinds prefix naming
/// descriptors of the right kinds, then a datagram captured from a real send.
fn seeds() -> Vec<Vec<u8>> {
    let null = || std::fs::File::open("/dev/null").unwrap();
    let messages: Vec<(Vec<u8>, Msg)> = vec![
        (vec![], Msg::Plain(42, "plain".into())),
        (
            vec![0, 0, 0],
            Msg::Files {
                file: null(),
                more: vec![null().into(), null().into()],
            },
        ),
        (
            vec![1, 2],
            Msg::Sockets(
                Some(std::os::unix::net::UnixStream::pair().unwrap().0),
                channel::<u8>().unwrap().0,
            ),
        ),
        (
            vec![5, 3],
            Msg::Memory {
                shared: SharedMemory::new(4096).unwrap(),
                sealed: Some(SealedMemory::new(&[1; 4096]).unwrap()),
            },
        ),
        (
            vec![4, 0],
            Msg::Memfd(
                memfd::MemfdOptions::default().create("seed").unwrap(),
                Box::new((9, null())),
            ),
        ),
        (
            vec![0],
            Msg::Keys {
                id: [7; 16],
                tag: Some(*b"tag!"),
                list: vec![[1, 2], [3, 4]],
                file: null(),
            },
        ),
        (
            vec![0],
            Msg::Tree(
                Tree::Fork(Box::new(Tree::Node(Box::new(Tree::Leaf(3)))), Some(null())),
                vec![(); 5],
            ),
        ),
    ];
    messages
        .into_iter()
        .map(|(kinds, message)| {
            let (tx, rx) = channel::<Msg>().unwrap();
            tx.send(message).unwrap_or_else(|_| panic!("seed send"));
            let raw = OwnedFd::try_from(rx).unwrap();
            let mut buf = vec![0u8; 70_000];
            let mut cmsg = nix::cmsg_space!([i32; 8]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                raw.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .unwrap();
            let len = msg.bytes;
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for fd in fds {
                        nix::unistd::close(fd).unwrap();
                    }
                }
            }
            let mut input = vec![kinds.len() as u8];
            input.extend(&kinds);
            input.extend(&buf[..len]);
            input
        })
        .collect()
}

/// An input of the receive target: its flags byte, then a decode input.
fn with_flags(options: u8, input: &[u8]) -> Vec<u8> {
    let mut with = vec![options];
    with.extend_from_slice(input);
    with
}

/// The tests count the process's descriptors: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn regression_inputs_replay_cleanly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut replayed = 0;
    for (target, run) in [
        ("header", harness::header as fn(&[u8])),
        ("decode", harness::decode),
        ("receive", harness::receive),
        ("ring", harness::ring),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            run(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} regression inputs");
}

#[test]
fn valid_frames_decode_and_every_truncation_or_flip_is_handled() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seeds = seeds();
    let limits = Limits::default()
        .with_max_descriptors(6)
        .with_max_bytes(1 << 20);
    for seed in &seeds {
        // The seed itself is a message.
        let kinds_len = 1 + seed[0] as usize;
        let (prefix, datagram) = seed.split_at(kinds_len);
        let fds = harness::descriptors(&prefix[1..]);
        assert!(
            ipc_core::__private::fuzz::decode::<Msg>(datagram, fds, &limits).is_ok(),
            "a valid frame decodes"
        );
        // With every control message and end of stream the receive target
        // can add around it.
        let all = flags::PASSCRED
            | flags::PASSPIDFD
            | flags::CREDENTIALS
            | flags::EMPTY_FIRST
            | flags::HALF_CLOSE;
        for options in 0..=all {
            harness::receive(&with_flags(options, seed));
        }
        // Every truncation is refused, and leaks nothing.
        for cut in 0..datagram.len() {
            let fds = harness::descriptors(&prefix[1..]);
            let got = ipc_core::__private::fuzz::decode::<Msg>(&datagram[..cut], fds, &limits);
            assert!(
                got.is_err(),
                "a frame cut at {cut} of {} was accepted",
                datagram.len()
            );
            let mut input = prefix.to_vec();
            input.extend(&datagram[..cut]);
            harness::decode(&input);
        }
        // Every byte flipped: accepted or refused, never a panic or a leak.
        for at in 0..datagram.len() {
            let mut input = seed.clone();
            input[kinds_len + at] ^= 0xff;
            harness::decode(&input);
            harness::receive(&with_flags(flags::PASSPIDFD | flags::EMPTY_FIRST, &input));
        }
    }
    if let Ok(dir) = std::env::var("IPC_CORE_WRITE_SEEDS") {
        for (i, seed) in seeds.iter().enumerate() {
            for (target, input) in [("decode", seed.clone()), ("receive", with_flags(0, seed))] {
                let dir = std::path::Path::new(&dir).join(target);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
            }
        }
    }
}
