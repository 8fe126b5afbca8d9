//! Descriptors and memory: many descriptors per message, passing sealed
//! memory of 4 KiB and 1 GiB beside the raw floor, and waiting on 10 or 1000
//! receivers; each beside the raw syscalls in the same run.
//!
//! `cargo bench --bench descriptors`

mod common;

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ipc_core::{channel, Fd, Receiver, SealedMemory, Select, SharedMemory};
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

fn many_descriptors(c: &mut Criterion) {
    let mut group = c.benchmark_group("descriptors_per_message");
    for count in [1usize, 16, 253] {
        let files: Vec<Fd<OwnedFd>> = (0..count)
            .map(|_| Fd::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap())))
            .collect();
        let (tx, rx) = channel::<Vec<Fd<OwnedFd>>>().unwrap();
        group.bench_function(BenchmarkId::new("ipc_core", count), |b| {
            b.iter(|| {
                tx.send_ref(&files).unwrap();
                rx.recv().unwrap()
            })
        });

        let (a, b_end) = common::seqpacket_pair();
        let raws: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!([RawFd; 253]);
        group.bench_with_input(BenchmarkId::new("raw_sendmsg", count), &raws, |b, raws| {
            b.iter(|| {
                common::send_fds(&a, &[1; 16], raws);
                common::recv_fds(&b_end, &mut buf, &mut cmsg)
            })
        });
    }
    group.finish();
}

fn sealed_memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("pass_sealed_memory");
    for (label, len) in [("4KiB", 4usize << 10), ("1GiB", 1 << 30)] {
        let mut region = SharedMemory::new(len).unwrap();
        region[len / 2] = 1;
        let sealed = region.seal().unwrap();
        let (tx, rx): (_, Receiver<SealedMemory>) = channel().unwrap();
        let mut ours = || {
            tx.send_ref(&sealed).unwrap();
            let got = rx.recv().unwrap();
            got[len / 2]
        };

        // The floor: the same checks and mapping by hand.
        let (a, b_end) = common::seqpacket_pair();
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut floor = || {
            common::send_fds(&a, &[1; 16], &[sealed.as_fd().as_raw_fd()]);
            let fd = common::recv_fds(&b_end, &mut buf, &mut cmsg).remove(0);
            let seals = fcntl(fd.as_fd(), FcntlArg::F_GET_SEALS).unwrap();
            assert!(seals & nix::libc::F_SEAL_WRITE != 0);
            let size = nix::sys::stat::fstat(&fd).unwrap().st_size as usize;
            // SAFETY: a fresh read-only mapping of a sealed memfd of
            // `size` bytes, unmapped below.
            let ptr = unsafe {
                mmap(
                    None,
                    NonZeroUsize::new(size).unwrap(),
                    ProtFlags::PROT_READ,
                    MapFlags::MAP_SHARED,
                    &fd,
                    0,
                )
                .unwrap()
            };
            // SAFETY: `len / 2 < size`, inside the mapping.
            let byte = unsafe { ptr.cast::<u8>().add(len / 2).read_volatile() };
            // SAFETY: the range mmap returned, no longer used.
            unsafe { munmap(ptr, size).unwrap() };
            byte
        };
        group.bench_function(BenchmarkId::new("ipc_core", label), |b| b.iter(&mut ours));
        group.bench_function(BenchmarkId::new("raw_floor", label), |b| b.iter(&mut floor));
        common::versus(
            &mut group,
            &format!("ipc_core_interleaved/{label}"),
            "raw_floor",
            100,
            |n| common::repeat(n, &mut ours),
            |n| common::repeat(n, &mut floor),
        );
    }
    group.finish();
}

fn select_scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_one_ready");
    for registered in [10usize, 1000] {
        let mut select = Select::new().unwrap();
        let mut ends = Vec::new();
        for token in 0..registered {
            let (tx, rx) = channel::<u8>().unwrap();
            select.register(&rx, token).unwrap();
            ends.push((tx, rx));
        }
        let (tx, rx) = &ends[registered / 2];
        group.bench_function(BenchmarkId::from_parameter(registered), |b| {
            b.iter(|| {
                tx.send(1).unwrap();
                let ready = select.wait(None).unwrap()[0];
                assert_eq!(ready, registered / 2);
                rx.try_recv().unwrap()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = many_descriptors, sealed_memory, select_scaling
}
criterion_main!(benches);
