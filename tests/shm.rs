//! Shared memory between real processes: shared writes, sealed regions that
//! nobody can change, hostile memfds refused before anything is mapped, and
//! no descriptor or mapping left behind.

mod support;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use ipc_core::{channel, Connection, Error, SealedMemory, SharedMemory};
use nix::errno::Errno;
use nix::fcntl::SealFlag;
use nix::sys::mman::{mmap, MapFlags, ProtFlags};
use support::{
    close_in_child, fd_count, fork_child, inline_frame, memfd, memfd_mappings, send_raw, serial,
};

#[test]
fn a_childs_writes_are_seen_in_the_parents_handle() {
    let _serial = serial();
    let (fds_before, maps_before) = (fd_count(), memfd_mappings());
    const LEN: usize = 1 << 20;
    const ADDS: u64 = 100_000;
    let region = SharedMemory::new(LEN).unwrap();
    let mine = region.try_clone().unwrap();
    let (parent, child_end) = Connection::<SharedMemory, ()>::pair().unwrap();
    let child = fork_child(|| {
        close_in_child(&parent);
        close_in_child(&mine);
        let mut theirs = child_end.recv().unwrap_or_else(|_| panic!("no region"));
        assert_eq!(theirs.len(), LEN);
        for (i, b) in theirs[4096..].iter_mut().enumerate() {
            *b = (i % 253) as u8;
        }
        let counters = theirs.atomics::<AtomicU64>().unwrap();
        for _ in 0..ADDS {
            counters[0].fetch_add(1, Ordering::Relaxed);
        }
        child_end.send(()).unwrap();
    });
    drop(child_end);
    parent.send(region).unwrap();
    let counters = mine.atomics::<AtomicU64>().unwrap();
    for _ in 0..ADDS {
        counters[0].fetch_add(1, Ordering::Relaxed);
    }
    parent.recv().unwrap();
    child.join();
    assert_eq!(
        counters[0].load(Ordering::SeqCst),
        2 * ADDS,
        "both processes counted"
    );
    assert!(mine[4096..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i % 253) as u8));
    drop((mine, parent));
    assert_eq!((fd_count(), memfd_mappings()), (fds_before, maps_before));
}

#[test]
fn a_sealed_region_cannot_be_written_or_resized_through_the_received_descriptor() {
    let _serial = serial();
    let mut region = SharedMemory::new(8192).unwrap();
    region[..6].copy_from_slice(b"sealed");
    let sealed = region.seal().unwrap();
    let (tx, rx) = channel::<(SealedMemory, SharedMemory)>().unwrap();
    let child = fork_child(|| {
        close_in_child(&tx);
        let (sealed, shared) = rx.recv().unwrap();
        assert_eq!(&sealed[..6], b"sealed");
        let fd = sealed.as_fd();
        assert_eq!(nix::sys::uio::pwrite(fd, b"changed", 0), Err(Errno::EPERM));
        assert_eq!(nix::unistd::ftruncate(fd, 1), Err(Errno::EPERM));
        assert_eq!(nix::unistd::ftruncate(fd, 1 << 20), Err(Errno::EPERM));
        let writable = std::num::NonZeroUsize::new(8192).unwrap();
        // SAFETY: the mapping is expected to fail; were it to succeed, it is
        // a fresh range that nothing else uses and is never touched.
        let mapped = unsafe {
            mmap(
                None,
                writable,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_eq!(mapped.err(), Some(Errno::EPERM));
        assert_eq!(&sealed[..6], b"sealed");
        // A SharedMemory can be written but never resized.
        assert_eq!(nix::unistd::ftruncate(shared.as_fd(), 1), Err(Errno::EPERM));
        assert_eq!(nix::sys::uio::pwrite(shared.as_fd(), b"ok", 0), Ok(2));
    });
    drop(rx);
    tx.send((sealed, SharedMemory::new(4096).unwrap())).unwrap();
    child.join();
}

#[test]
fn hostile_memfds_are_refused_before_anything_is_mapped() {
    let _serial = serial();
    let size = SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK;
    let (sealed_tx, sealed_rx) = channel::<SealedMemory>().unwrap();
    let (shared_tx, shared_rx) = channel::<SharedMemory>().unwrap();
    let sealed_raw = OwnedFd::try_from(sealed_tx).unwrap();
    let shared_raw = OwnedFd::try_from(shared_tx).unwrap();
    let (fds_before, maps_before) = (fd_count(), memfd_mappings());
    let child = fork_child(|| {
        close_in_child(&sealed_rx);
        close_in_child(&shared_rx);
        let frame = inline_frame(1, &[0]);
        let send = |socket: &OwnedFd, fd: OwnedFd| send_raw(socket, &frame, &[fd.as_raw_fd()]);
        // As SealedMemory: unsealed, shrinkable, writable, not a memfd.
        send(&sealed_raw, memfd(4096, SealFlag::empty()));
        send(
            &sealed_raw,
            memfd(4096, SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW),
        );
        send(&sealed_raw, memfd(4096, size));
        send(
            &sealed_raw,
            OwnedFd::from(std::fs::File::open("/dev/null").unwrap()),
        );
        // As SharedMemory: unsealed, growable, write-sealed, not a memfd.
        send(&shared_raw, memfd(4096, SealFlag::empty()));
        send(&shared_raw, memfd(4096, SealFlag::F_SEAL_SHRINK));
        send(&shared_raw, memfd(4096, size | SealFlag::F_SEAL_WRITE));
        send(
            &shared_raw,
            OwnedFd::from(std::fs::File::open("/dev/null").unwrap()),
        );
    });
    for _ in 0..4 {
        match sealed_rx.recv() {
            Err(Error::Descriptor(why)) => assert!(why.contains("SealedMemory"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!((fd_count(), memfd_mappings()), (fds_before, maps_before));
    }
    for _ in 0..4 {
        match shared_rx.recv() {
            Err(Error::Descriptor(why)) => assert!(why.contains("SharedMemory"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!((fd_count(), memfd_mappings()), (fds_before, maps_before));
    }
    child.join();
}

#[test]
fn no_descriptor_or_mapping_leaks_over_many_regions() {
    let _serial = serial();
    let (tx, rx) = channel::<(SharedMemory, SealedMemory, Vec<u8>)>().unwrap();
    let (fds_before, maps_before) = (fd_count(), memfd_mappings());
    let child = fork_child(|| {
        close_in_child(&rx);
        for i in 0..500usize {
            let mut shared = SharedMemory::new(4096 * (1 + i % 4)).unwrap();
            shared[0] = i as u8;
            let sealed = SealedMemory::new(&[i as u8; 100]).unwrap();
            // Every tenth message also has an out-of-line body.
            let body = vec![i as u8; if i % 10 == 0 { 100_000 } else { 10 }];
            tx.send((shared, sealed, body)).unwrap();
        }
    });
    for i in 0..500usize {
        let (shared, sealed, body) = rx.recv().unwrap();
        assert_eq!(shared.len(), 4096 * (1 + i % 4));
        assert_eq!(shared[0], i as u8);
        assert_eq!(sealed.len(), 100);
        assert!(sealed.iter().chain(&body).all(|&b| b == i as u8));
    }
    child.join();
    assert_eq!((fd_count(), memfd_mappings()), (fds_before, maps_before));
}

#[test]
fn sealing_while_another_process_maps_it_writable_hands_the_region_back() {
    let _serial = serial();
    let mut region = SharedMemory::new(4096).unwrap();
    region[..5].copy_from_slice(b"hello");
    let (tx, rx) = ipc_core::channel::<SharedMemory>().unwrap();
    let (done, wait) = std::os::unix::net::UnixStream::pair().unwrap();
    tx.send(region.try_clone().unwrap()).unwrap();
    let child = fork_child(|| {
        // Holds a writable mapping of the region until told to go.
        let mine = rx.recv().unwrap();
        assert_eq!(&mine[..5], b"hello");
        std::io::Write::write_all(&mut &wait, b"m").unwrap();
        let mut byte = [0];
        let _ = std::io::Read::read(&mut &wait, &mut byte);
    });
    drop(rx);
    // Once the child has it mapped.
    std::io::Read::read_exact(&mut &done, &mut [0]).unwrap();
    let failed = region.seal().unwrap_err();
    match failed.error() {
        Error::Busy(why) => assert!(why.contains("drop every other handle"), "{why}"),
        other => panic!("expected Busy, got {other:?}"),
    }
    let mut region = failed.into_inner().expect("the region comes back");
    assert_eq!(&region[..5], b"hello", "the bytes are kept");
    region[0] = b'j';
    std::io::Write::write_all(&mut &done, b"x").unwrap();
    child.join();
    let sealed = region.seal().unwrap();
    assert_eq!(&sealed[..5], b"jello");
}

#[test]
fn typed_views_check_length() {
    let _serial = serial();
    let mut region = SharedMemory::new(24).unwrap();
    region.as_mut_slice_of::<u64>().unwrap()[2] = u64::MAX;
    assert_eq!(region.as_slice_of::<u64>().unwrap(), [0, 0, u64::MAX]);
    assert!(matches!(
        region.as_slice_of::<[u64; 2]>(),
        Err(Error::Layout(_))
    ));
    assert!(matches!(region.atomics::<AtomicU64>(), Ok(a) if a.len() == 3));
    let odd = SharedMemory::new(12).unwrap();
    let err = odd.atomics::<AtomicU64>().unwrap_err();
    assert!(err.to_string().contains("12 bytes"), "{err}");
}
