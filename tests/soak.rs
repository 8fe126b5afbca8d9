//! A soak, bounded in time: several processes send random messages with
//! random descriptors and shared memory over one channel and channels of
//! their own; every message must arrive exactly once, in per-sender order,
//! and descriptor and mapping counts must return to where they started.
//!
//! Three seconds by default; `IPC_CORE_SOAK_SECS=600 cargo test --test soak
//! -- --nocapture` soaks for ten minutes.

mod support;

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use ipc_core::{channel, Error, IpcMessage, SealedMemory, Select, SharedMemory};
use support::{close_in_child, fd_count, fork_child, memfd_mappings, serial};

#[derive(IpcMessage)]
struct Item {
    sender: u32,
    seq: u64,
    files: Vec<OwnedFd>,
    shared: Option<SharedMemory>,
    sealed: Option<SealedMemory>,
    payload: Vec<u8>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn item(sender: u32, seq: u64, rng: &mut Rng) -> Item {
    let r = rng.next();
    let files = (0..r % 4)
        .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()))
        .collect();
    let shared = (r % 7 == 0).then(|| {
        let mut region = SharedMemory::new(4096).unwrap();
        region[0] = seq as u8;
        region
    });
    let sealed = (r % 11 == 0).then(|| SealedMemory::new(&[sender as u8; 100]).unwrap());
    let len = match r % 20 {
        0 => 70_000 + (r % 100_000) as usize,
        _ => (r % 2_000) as usize,
    };
    Item {
        sender,
        seq,
        files,
        shared,
        sealed,
        payload: vec![(seq % 251) as u8; len],
    }
}

#[test]
fn many_processes_many_channels_exactly_once_in_order_and_no_leaks() {
    let _serial = serial();
    let seconds: u64 = std::env::var("IPC_CORE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    const SENDERS: u32 = 4;
    let (fds_before, maps_before) = (fd_count(), memfd_mappings());
    let started = Instant::now();
    {
        let (shared_tx, shared_rx) = channel::<Item>().unwrap();
        let mut own = Vec::new();
        let mut children = Vec::new();
        for sender in 0..SENDERS {
            let (tx, rx) = channel::<Item>().unwrap();
            let shared_tx = &shared_tx;
            let to_close: Vec<&ipc_core::Receiver<Item>> = own.iter().map(|(_, rx)| rx).collect();
            children.push(fork_child(|| {
                close_in_child(&shared_rx);
                close_in_child(&rx);
                for rx in to_close {
                    close_in_child(rx);
                }
                let mut rng = Rng(0x9e37_79b9 ^ ((sender as u64 + 1) * 0x85eb_ca6b));
                let deadline = Instant::now() + Duration::from_secs(seconds);
                let (mut shared_seq, mut own_seq) = (0, 0);
                while Instant::now() < deadline {
                    if rng.next() % 2 == 0 {
                        shared_tx.send(item(sender, shared_seq, &mut rng)).unwrap();
                        shared_seq += 1;
                    } else {
                        tx.send(item(sender, own_seq, &mut rng)).unwrap();
                        own_seq += 1;
                    }
                }
            }));
            own.push((tx, rx));
        }
        drop(shared_tx);
        let receivers: Vec<_> = own
            .into_iter()
            .map(|(tx, rx)| {
                drop(tx);
                rx
            })
            .collect();

        let mut select = Select::new().unwrap();
        select.register(&shared_rx, SENDERS as usize).unwrap();
        for (i, rx) in receivers.iter().enumerate() {
            select.register(rx, i).unwrap();
        }
        let mut next_shared = vec![0u64; SENDERS as usize];
        let mut next_own = vec![0u64; SENDERS as usize];
        let mut open = SENDERS as usize + 1;
        let mut messages = 0u64;
        while open > 0 {
            let ready = select.wait(Some(Duration::from_secs(30))).unwrap().to_vec();
            for token in ready {
                let rx = if token == SENDERS as usize {
                    &shared_rx
                } else {
                    &receivers[token]
                };
                loop {
                    match rx.try_recv() {
                        Ok(m) => {
                            let next = if token == SENDERS as usize {
                                &mut next_shared[m.sender as usize]
                            } else {
                                assert_eq!(
                                    m.sender as usize, token,
                                    "a message on another's channel"
                                );
                                &mut next_own[token]
                            };
                            assert_eq!(m.seq, *next, "sender {} out of order or lost", m.sender);
                            *next += 1;
                            assert!(m.payload.iter().all(|&b| b == (m.seq % 251) as u8));
                            if let Some(region) = &m.shared {
                                assert_eq!(region[0], m.seq as u8);
                            }
                            if let Some(region) = &m.sealed {
                                assert!(region.iter().all(|&b| b == m.sender as u8));
                            }
                            messages += 1;
                        }
                        Err(Error::Empty) => break,
                        Err(Error::Disconnected) => {
                            select.deregister(rx).unwrap();
                            open -= 1;
                            break;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        for child in children {
            child.join();
        }
        eprintln!(
            "soaked {messages} messages from {SENDERS} processes over {} channels in {:.1?}",
            SENDERS + 1,
            started.elapsed()
        );
        assert!(messages > 1000, "only {messages} messages in {seconds} s");
    }
    assert_eq!((fd_count(), memfd_mappings()), (fds_before, maps_before));
}
