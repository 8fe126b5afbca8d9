//! One-way traffic between two processes: small messages per second, 16 MiB
//! bodies, and a sweep of body sizes across the inline/out-of-line border;
//! ipc-core beside raw sockets and ipc-channel in the same run.
//!
//! `cargo bench --bench throughput`

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipc_core::{channel, Connection, IpcMessage};

/// A derived message holding bytes: the derive carries `Vec<u8>` as one
/// byte string, where plain serde makes a call per byte.
#[derive(IpcMessage, Clone)]
struct Blob {
    data: Vec<u8>,
}

/// Asks a forked producer for `n` messages and times their arrival.
fn timed<F: FnMut()>(ask: impl Fn(u64), n: u64, mut receive: F) -> Duration {
    let start = Instant::now();
    ask(n);
    for _ in 0..n {
        receive();
    }
    start.elapsed()
}

type Small = (u64, u64, u32);

fn small_messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_way_small_messages");
    group.throughput(Throughput::Elements(1));

    let (control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (tx, rx) = channel::<Small>().unwrap();
    let _peer = common::fork_peer(1, || {
        while let Ok(n) = control_peer.recv() {
            for i in 0..n {
                tx.send((i, i * 3, 7)).unwrap();
            }
        }
    });
    group.bench_function("ipc_core", |b| {
        b.iter_custom(|n| {
            timed(
                |n| control.send(n).unwrap(),
                n,
                || {
                    rx.recv().unwrap();
                },
            )
        })
    });
    drop(_peer);

    let (ctl_tx, ctl_rx) = ipc_channel::ipc::channel::<u64>().unwrap();
    let (tx, rx) = ipc_channel::ipc::channel::<Small>().unwrap();
    let _peer = common::fork_peer(1, || {
        while let Ok(n) = ctl_rx.recv() {
            for i in 0..n {
                tx.send((i, i * 3, 7)).unwrap();
            }
        }
    });
    group.bench_function("ipc_channel", |b| {
        b.iter_custom(|n| {
            timed(
                |n| ctl_tx.send(n).unwrap(),
                n,
                || {
                    rx.recv().unwrap();
                },
            )
        })
    });
    drop(_peer);
    group.finish();
}

const BIG: usize = 16 << 20;

fn big_bodies(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_way_16MiB");
    group.throughput(Throughput::Bytes(BIG as u64));
    group.sample_size(10);

    let (control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let _peer = common::fork_peer(1, || {
        let body = vec![5u8; BIG];
        while let Ok(n) = control_peer.recv() {
            for _ in 0..n {
                tx.send(body.clone()).unwrap();
            }
        }
    });
    group.bench_function("ipc_core_vec_u8", |b| {
        b.iter_custom(|n| {
            timed(
                |n| control.send(n).unwrap(),
                n,
                || {
                    assert_eq!(rx.recv().unwrap().len(), BIG);
                },
            )
        })
    });
    drop(_peer);

    let (control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (tx, rx) = channel::<Blob>().unwrap();
    let _peer = common::fork_peer(1, || {
        let body = Blob {
            data: vec![5u8; BIG],
        };
        while let Ok(n) = control_peer.recv() {
            for _ in 0..n {
                tx.send(body.clone()).unwrap();
            }
        }
    });
    group.bench_function("ipc_core_derived_bytes", |b| {
        b.iter_custom(|n| {
            timed(
                |n| control.send(n).unwrap(),
                n,
                || {
                    assert_eq!(rx.recv().unwrap().data.len(), BIG);
                },
            )
        })
    });
    drop(_peer);

    let (ctl_tx, ctl_rx) = ipc_channel::ipc::channel::<u64>().unwrap();
    let (tx, rx) = ipc_channel::ipc::bytes_channel().unwrap();
    let _peer = common::fork_peer(1, || {
        let body = vec![5u8; BIG];
        while let Ok(n) = ctl_rx.recv() {
            for _ in 0..n {
                tx.send(&body).unwrap();
            }
        }
    });
    group.bench_function("ipc_channel_bytes", |b| {
        b.iter_custom(|n| {
            timed(
                |n| ctl_tx.send(n).unwrap(),
                n,
                || {
                    assert_eq!(rx.recv().unwrap().len(), BIG);
                },
            )
        })
    });
    drop(_peer);

    let (control, control_peer) = Connection::<u64, ()>::pair().unwrap();
    let (ours, theirs) = common::stream_pair();
    let _peer = common::fork_peer(1, || {
        let body = vec![5u8; BIG];
        while let Ok(n) = control_peer.recv() {
            for _ in 0..n {
                let mut sent = 0;
                while sent < BIG {
                    sent += common::write(&theirs, &body[sent..]);
                }
            }
        }
    });
    let mut buf = vec![0u8; BIG];
    group.bench_function("raw_stream_socket", |b| {
        b.iter_custom(|n| {
            timed(
                |n| control.send(n).unwrap(),
                n,
                || {
                    let mut got = 0;
                    while got < BIG {
                        got += common::read(&ours, &mut buf[got..]);
                    }
                },
            )
        })
    });
    drop(_peer);
    group.finish();
}

/// Body sizes from 64 B to 256 MiB, sent and received in one process: the
/// inline path up to 64 KiB, a memfd of the sender's pool above (a fresh
/// sealed one past 32 MiB). No cliff at the border.
/// Each iteration also clones the body, as a sender that keeps its copy
/// would.
fn size_sweep(c: &mut Criterion) {
    let mut group = c.benchmark_group("body_size_sweep");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    let (tx, rx) = channel::<Blob>().unwrap();
    for size in [
        64usize,
        1 << 10,
        16 << 10,
        60 << 10,
        (64 << 10) - 8,
        (64 << 10) + 8,
        256 << 10,
        1 << 20,
        16 << 20,
        256 << 20,
    ] {
        let body = Blob {
            data: vec![3u8; size],
        };
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("ipc_core_bytes", size),
            &body,
            |b, body| {
                b.iter(|| {
                    tx.send(body.clone()).unwrap();
                    rx.recv().unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = small_messages, big_bodies, size_sweep
}
criterion_main!(benches);
