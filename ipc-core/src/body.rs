//! Bodies too large to travel inside the datagram: written into a memfd that
//! is sealed before it is sent, and read by the receiver only after it has
//! checked the seals, so the receiver decodes bytes that cannot change.
//!
//! Up to [`COPY_MAX`] a body is copied in with `write` and out with `pread`:
//! mapping and unmapping (page tables, TLB flushes) cost more than copying
//! that much. Larger bodies are serialized straight into a mapping and
//! decoded straight from one.

use std::os::fd::{AsFd, OwnedFd};

use crate::error::Error;
use crate::sealing;
use crate::sys::mmap::{ReadMap, WriteMap};

/// Bodies up to this size are copied rather than mapped.
pub(crate) const COPY_MAX: usize = 1 << 20;

/// Creates a sealed memfd holding a copy of `bytes`.
pub(crate) fn write_copied(bytes: &[u8]) -> Result<OwnedFd, Error> {
    let fd = sealing::create(c"ipc-core-body", 0)?;
    let mut written = 0;
    while written < bytes.len() {
        match nix::unistd::write(&fd, &bytes[written..]) {
            Ok(n) => written += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("write", e)),
        }
    }
    sealing::seal(fd.as_fd(), sealing::ALL_SEALS)?;
    Ok(fd)
}

/// Creates a sealed memfd of at most `capacity` bytes filled in place by
/// `fill`, which returns how many bytes it wrote. Returns the memfd and that
/// length.
pub(crate) fn write_mapped(
    capacity: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<usize, Error>,
) -> Result<(OwnedFd, usize), Error> {
    let fd = sealing::create(c"ipc-core-body", capacity as u64)?;
    // Every page will be written: allocate them in one call rather than
    // taking a fault per page.
    let mut map = WriteMap::populated(fd.as_fd(), capacity).map_err(|e| Error::io("mmap", e))?;
    let used = fill(map.bytes_mut())?;
    // The write seal is refused while a writable mapping exists.
    drop(map);
    if used < capacity {
        nix::unistd::ftruncate(&fd, used as i64).map_err(|e| Error::io("ftruncate", e))?;
    }
    sealing::seal(fd.as_fd(), sealing::ALL_SEALS)?;
    Ok((fd, used))
}

/// Checks that a received body memfd is sealed against writes and resizing
/// and holds `len` bytes; returns `len` as a size.
pub(crate) fn check(fd: &OwnedFd, len: u64) -> Result<usize, Error> {
    let write_and_size = sealing::SIZE_SEALS.union(nix::fcntl::SealFlag::F_SEAL_WRITE);
    let size =
        sealing::check(fd, write_and_size, "the out-of-line body").map_err(Error::Descriptor)?;
    if size < len {
        return Err(Error::Descriptor(format!(
            "the out-of-line body holds {size} bytes but the header announces {len}"
        )));
    }
    usize::try_from(len).map_err(|_| Error::TooLarge {
        len,
        max: usize::MAX as u64,
    })
}

/// Copies the first `out.len()` bytes of a checked body memfd into `out`.
pub(crate) fn read_copied(fd: &OwnedFd, out: &mut [u8]) -> Result<(), Error> {
    let mut read = 0;
    while read < out.len() {
        match nix::sys::uio::pread(fd, &mut out[read..], read as i64) {
            Ok(0) => return Err(Error::Descriptor("the out-of-line body ended early".into())),
            Ok(n) => read += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("pread", e)),
        }
    }
    Ok(())
}

/// Maps the first `len` bytes of a checked body memfd read-only.
pub(crate) fn map(fd: &OwnedFd, len: usize) -> Result<ReadMap, Error> {
    ReadMap::new(fd.as_fd(), len).map_err(|e| Error::io("mmap", e))
}
