//! Round trips between two processes: ipc-core beside raw `SOCK_SEQPACKET`
//! syscalls and ipc-channel, in the same run.
//!
//! - same core: both processes pinned to core 0, so a round trip is two
//!   context switches and the code between them, with no cross-core wake-up
//!   (which costs tens of microseconds on small VMs and says nothing about
//!   the code);
//! - busy-poll: the processes on cores 0 and 1, both spinning on
//!   non-blocking receives;
//! - one descriptor: the same-core round trip with one descriptor attached
//!   each way.
//!
//! `cargo bench --bench round_trip`

mod common;

use std::os::fd::{AsRawFd, OwnedFd};

use criterion::{criterion_group, criterion_main, Criterion};
use ipc_core::{Connection, Error, Fd};

/// 64 bytes on the wire in every contender.
type Msg = ([u8; 32], [u8; 32]);
const MSG: Msg = ([7; 32], [9; 32]);
const HEADER: usize = 16;

fn same_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip_64B_same_core");
    common::pin(0);

    let (ours, theirs) = common::seqpacket_pair();
    let _peer = common::fork_peer(0, || {
        let mut buf = [0u8; 256];
        loop {
            let n = common::read(&theirs, &mut buf);
            if n == 0 {
                break;
            }
            common::write(&theirs, &buf[..n]);
        }
    });
    let frame = [1u8; HEADER + 64];
    let mut buf = [0u8; 256];
    group.bench_function("raw_seqpacket", |b| {
        b.iter(|| {
            common::write(&ours, &frame);
            common::read(&ours, &mut buf)
        })
    });
    drop(_peer);

    let (ours, theirs) = Connection::<Msg, Msg>::pair().unwrap();
    let _peer = common::fork_peer(0, || {
        while let Ok(m) = theirs.recv() {
            if theirs.send(m).is_err() {
                break;
            }
        }
    });
    group.bench_function("ipc_core", |b| {
        b.iter(|| {
            ours.send(MSG).unwrap();
            ours.recv().unwrap()
        })
    });
    drop(_peer);

    let (req_tx, req_rx) = ipc_channel::ipc::channel::<Msg>().unwrap();
    let (resp_tx, resp_rx) = ipc_channel::ipc::channel::<Msg>().unwrap();
    let _peer = common::fork_peer(0, || {
        while let Ok(m) = req_rx.recv() {
            if resp_tx.send(m).is_err() {
                break;
            }
        }
    });
    group.bench_function("ipc_channel", |b| {
        b.iter(|| {
            req_tx.send(MSG).unwrap();
            resp_rx.recv().unwrap()
        })
    });
    drop(_peer);
    common::unpin();
    group.finish();
}

fn busy_poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip_64B_busy_poll");
    common::pin(0);

    let (ours, theirs) = common::seqpacket_pair();
    let _peer = common::fork_peer(1, || {
        let mut buf = [0u8; 256];
        loop {
            let n = common::read_spinning(&theirs, &mut buf);
            common::write(&theirs, &buf[..n]);
        }
    });
    let frame = [1u8; HEADER + 64];
    let mut buf = [0u8; 256];
    group.bench_function("raw_seqpacket", |b| {
        b.iter(|| {
            common::write(&ours, &frame);
            common::read_spinning(&ours, &mut buf)
        })
    });
    drop(_peer);

    let (ours, theirs) = Connection::<Msg, Msg>::pair().unwrap();
    let _peer = common::fork_peer(1, || loop {
        match theirs.try_recv() {
            Ok(m) => theirs.send(m).unwrap(),
            Err(Error::Empty) => std::hint::spin_loop(),
            Err(_) => break,
        }
    });
    group.bench_function("ipc_core", |b| {
        b.iter(|| {
            ours.send(MSG).unwrap();
            loop {
                match ours.try_recv() {
                    Ok(m) => break m,
                    Err(Error::Empty) => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
        })
    });
    drop(_peer);

    let (req_tx, req_rx) = ipc_channel::ipc::channel::<Msg>().unwrap();
    let (resp_tx, resp_rx) = ipc_channel::ipc::channel::<Msg>().unwrap();
    let _peer = common::fork_peer(1, || loop {
        match req_rx.try_recv() {
            Ok(m) => resp_tx.send(m).unwrap(),
            Err(ipc_channel::TryRecvError::Empty) => std::hint::spin_loop(),
            Err(_) => break,
        }
    });
    group.bench_function("ipc_channel", |b| {
        b.iter(|| {
            req_tx.send(MSG).unwrap();
            loop {
                match resp_rx.try_recv() {
                    Ok(m) => break m,
                    Err(ipc_channel::TryRecvError::Empty) => std::hint::spin_loop(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        })
    });
    drop(_peer);
    common::unpin();
    group.finish();
}

fn one_descriptor(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip_1fd_same_core");
    common::pin(0);

    let (ours, theirs) = common::seqpacket_pair();
    let _peer = common::fork_peer(0, || {
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        loop {
            let fds = common::recv_fds(&theirs, &mut buf, &mut cmsg);
            common::send_fds(&theirs, &buf[..HEADER + 1], &[fds[0].as_raw_fd()]);
        }
    });
    let mut fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    let frame = [1u8; HEADER + 1];
    let mut buf = [0u8; 64];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    group.bench_function("raw_sendmsg_scm_rights", |b| {
        b.iter(|| {
            common::send_fds(&ours, &frame, &[fd.as_raw_fd()]);
            fd = common::recv_fds(&ours, &mut buf, &mut cmsg).remove(0);
        })
    });
    drop(_peer);

    let (ours, theirs) = Connection::<Fd<OwnedFd>, Fd<OwnedFd>>::pair().unwrap();
    let _peer = common::fork_peer(0, || {
        while let Ok(fd) = theirs.recv() {
            if theirs.send(fd).is_err() {
                break;
            }
        }
    });
    let mut fd = Some(Fd::new(OwnedFd::from(
        std::fs::File::open("/dev/null").unwrap(),
    )));
    group.bench_function("ipc_core", |b| {
        b.iter(|| {
            ours.send(fd.take().unwrap()).unwrap();
            fd = Some(ours.recv().unwrap());
        })
    });
    drop(_peer);
    common::unpin();
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = same_core, busy_poll, one_descriptor
}
criterion_main!(benches);
