//! A hostile peer in another process hands over memory built to hurt the
//! reader: a hugetlb memfd whose pages it can take away (SIGBUS), a tmpfs
//! file posing as a memfd, a sealed body of holes the reader would pay
//! for, and pooled bodies the receiver must hand back even when it refuses
//! them. Each is refused with a clear error, nothing leaks, and the next
//! message arrives.

mod support;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ipc_core::{channel, Error, Fd, IpcMessage, Limits, SealedMemory, SharedMemory};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use support::{
    close_in_child, dev_nulls, fd_count, fork_child, header, inline_frame, memfd, send_raw, serial,
};

/// A 2 MiB hugetlb memfd sealed with `seals`, or `None` where the kernel
/// makes none (then no peer can send one either).
fn hugetlb(seals: SealFlag) -> Option<OwnedFd> {
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING | MFdFlags::MFD_HUGETLB;
    let fd = memfd_create(c"huge", flags).ok()?;
    nix::unistd::ftruncate(&fd, 2 << 20).ok()?;
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)).ok()?;
    Some(fd)
}

/// An unlinked file of the tmpfs mounted at /dev/shm, `len` bytes long.
fn dev_shm_file(len: u64) -> std::fs::File {
    let path = format!("/dev/shm/ipc-core-test-{}", std::process::id());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.set_len(len).unwrap();
    file
}

#[test]
fn a_hugetlb_memfd_is_refused_before_anything_maps_it() {
    let _serial = serial();
    let size = SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK;
    if hugetlb(size).is_none() {
        eprintln!("this kernel makes no hugetlb memfd: nothing to refuse");
        return;
    }
    let (shared_tx, shared_rx) = channel::<SharedMemory>().unwrap();
    let (sealed_tx, sealed_rx) = channel::<SealedMemory>().unwrap();
    let shared_raw = shared_tx.as_fd().try_clone_to_owned().unwrap();
    let sealed_raw = sealed_tx.as_fd().try_clone_to_owned().unwrap();
    let before = fd_count();
    let child = fork_child(|| {
        close_in_child(&shared_rx);
        close_in_child(&sealed_rx);
        // Sealed as the receivers ask, and never given a page: with no free
        // huge page, the first read of a mapping of it is SIGBUS.
        let huge = hugetlb(size).unwrap();
        send_raw(&shared_raw, &inline_frame(1, &[0]), &[huge.as_raw_fd()]);
        shared_tx.send(SharedMemory::new(8).unwrap()).unwrap();
        let huge = hugetlb(size | SealFlag::F_SEAL_WRITE).unwrap();
        send_raw(&sealed_raw, &inline_frame(1, &[0]), &[huge.as_raw_fd()]);
        sealed_tx.send(SealedMemory::new(b"good").unwrap()).unwrap();
    });
    for got in [
        shared_rx.recv().map(|m| m[0]),
        sealed_rx.recv().map(|m| m[0]),
    ] {
        match got {
            Err(Error::Descriptor(why)) => assert!(why.contains("hugetlbfs"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(shared_rx.recv().unwrap().len(), 8);
    assert_eq!(&sealed_rx.recv().unwrap()[..], b"good");
    child.join();
    assert_eq!(fd_count(), before);
}

#[derive(IpcMessage)]
struct WithMemfd {
    memfd: memfd::Memfd,
}

#[test]
fn a_tmpfs_file_does_not_pass_as_a_memfd() {
    let _serial = serial();
    let (tx, rx) = channel::<WithMemfd>().unwrap();
    let (pooled_tx, mut pooled_rx) = channel::<Vec<u8>>().unwrap();
    pooled_rx.set_limits(Limits::default());
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    let pooled_raw = pooled_tx.as_fd().try_clone_to_owned().unwrap();
    let before = fd_count();
    let file = dev_shm_file(4096 + 3);
    // Laid out as a pooled body: the state word says lent, then a body.
    nix::sys::uio::pwrite(&file, &1u32.to_ne_bytes(), 0).unwrap();
    nix::sys::uio::pwrite(&file, &[2, 7, 7], 4096).unwrap();
    send_raw(&raw, &inline_frame(1, &[0]), &[file.as_raw_fd()]);
    send_raw(&pooled_raw, &header(2, 1, 3), &[file.as_raw_fd()]);
    match rx.recv() {
        Err(Error::Descriptor(why)) => assert!(why.contains("not a memfd"), "{why}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    match pooled_rx.recv() {
        Err(Error::Descriptor(why)) => assert!(why.contains("not a memfd"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut word = [0; 4];
    nix::sys::uio::pread(&file, &mut word, 0).unwrap();
    assert_eq!(
        u32::from_ne_bytes(word),
        1,
        "a file that is no memfd is not written"
    );
    let real = memfd::MemfdOptions::default().create("real").unwrap();
    tx.send(WithMemfd { memfd: real })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rx.recv().is_ok());
    drop(file);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_sealed_body_of_holes_is_refused_without_reading_it() {
    let _serial = serial();
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    let before = fd_count();
    let child = fork_child(|| {
        close_in_child(&rx);
        // 1 GiB announced, one page paid for: the length of a Vec<u8> that
        // makes the decoder read every byte, and holes after it.
        let len = 1u64 << 30;
        let fd = memfd(len as i64, SealFlag::empty());
        let mut varint = Vec::new();
        let mut n = len - 5;
        while n >= 0x80 {
            varint.push(n as u8 | 0x80);
            n >>= 7;
        }
        varint.push(n as u8);
        nix::sys::uio::pwrite(&fd, &varint, 0).unwrap();
        let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK;
        fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)).unwrap();
        send_raw(&raw, &header(1, 1, len), &[fd.as_raw_fd()]);
        tx.send(vec![1, 2, 3]).unwrap();
    });
    let started = Instant::now();
    match rx.recv() {
        Err(Error::Descriptor(why)) => assert!(why.contains("hole"), "{why}"),
        other => panic!("expected a refusal, got {:?}", other.map(|v| v.len())),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused only after {:?}",
        started.elapsed()
    );
    assert_eq!(rx.recv().unwrap(), [1, 2, 3]);
    child.join();
    assert_eq!(fd_count(), before);
}

/// A memfd laid out as a sender's pool slot: the state word says lent, and
/// `body` starts at offset 4096.
fn pooled(body: &[u8]) -> OwnedFd {
    let fd = memfd(4096 + body.len() as i64, SealFlag::empty());
    nix::sys::uio::pwrite(&fd, &1u32.to_ne_bytes(), 0).unwrap();
    nix::sys::uio::pwrite(&fd, body, 4096).unwrap();
    fd
}

fn state_word(slot: &OwnedFd) -> u32 {
    let mut word = [0xff; 4];
    nix::sys::uio::pread(slot, &mut word, 0).unwrap();
    u32::from_ne_bytes(word)
}

type Msg = (u8, Vec<Fd<OwnedFd>>);

/// An `RLIMIT_NOFILE` under which exactly `n` descriptor numbers are free.
fn limit_with_free_numbers(n: usize) -> u64 {
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut free = 0;
    for number in 0.. {
        if !open.contains(&number) {
            free += 1;
            if free == n {
                return number + 1;
            }
        }
    }
    unreachable!()
}

#[test]
fn a_pooled_body_refused_for_its_descriptors_is_still_handed_back() {
    let _serial = serial();
    let (tx, mut rx) = channel::<Msg>().unwrap();
    rx.set_limits(Limits::default().with_max_descriptors(4));
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    let before = fd_count();
    // Far more descriptors than the receiver makes room for: the kernel
    // installs the first ones and drops the rest.
    let slot = pooled(&[1, 0]);
    let extra = dev_nulls(100);
    let mut fds = vec![slot.as_raw_fd()];
    fds.extend(extra.iter().map(AsRawFd::as_raw_fd));
    send_raw(&raw, &header(2, fds.len() as u32, 2), &fds);
    drop(extra);
    match rx.recv() {
        Err(Error::Descriptor(why)) => assert!(why.contains("more descriptors"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(state_word(&slot), 0, "the slot is still lent");
    drop(slot);
    assert_eq!(fd_count(), before);

    // Out of descriptors (RLIMIT_NOFILE): the kernel installs what fits.
    let slot = pooled(&[1, 0]);
    let extra = dev_nulls(10);
    let mut fds = vec![slot.as_raw_fd()];
    fds.extend(extra.iter().map(AsRawFd::as_raw_fd));
    send_raw(&raw, &header(2, fds.len() as u32, 2), &fds);
    drop(extra);
    let limits =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        limit_with_free_numbers(3),
        limits.1,
    )
    .unwrap();
    let got = rx.recv();
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        limits.0,
        limits.1,
    )
    .unwrap();
    match got {
        Err(Error::Descriptor(why)) => assert!(why.contains("RLIMIT_NOFILE"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(state_word(&slot), 0, "the slot is still lent");
    drop(slot);
    assert_eq!(fd_count(), before);
    tx.send((1, vec![])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rx.recv().unwrap().0, 1);
}
