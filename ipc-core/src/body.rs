//! Bodies too large to travel inside the datagram: written into a memfd that
//! is sealed before it is sent, mapped read-only by the receiver after it has
//! checked the seals, so the receiver decodes bytes that cannot change.

use std::os::fd::{AsFd, OwnedFd};

use crate::error::Error;
use crate::sealing;
use crate::sys::mmap::{ReadMap, WriteMap};

/// Creates a sealed memfd of at most `capacity` bytes filled by `fill`, which
/// returns how many bytes it wrote. Returns the memfd and that length.
pub(crate) fn write(
    capacity: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<usize, Error>,
) -> Result<(OwnedFd, usize), Error> {
    let fd = sealing::create(c"ipc-core-body", capacity as u64)?;
    let mut map = WriteMap::new(fd.as_fd(), capacity).map_err(|e| Error::io("mmap", e))?;
    let used = fill(map.bytes_mut())?;
    // The write seal is refused while a writable mapping exists.
    drop(map);
    if used < capacity {
        nix::unistd::ftruncate(&fd, used as i64).map_err(|e| Error::io("ftruncate", e))?;
    }
    sealing::seal(fd.as_fd(), sealing::ALL_SEALS)?;
    Ok((fd, used))
}

/// Maps the first `len` bytes of a received body memfd read-only, after
/// checking that it is sealed against writes and resizing and holds `len`
/// bytes.
pub(crate) fn map(fd: &OwnedFd, len: u64) -> Result<ReadMap, Error> {
    let write_and_size = sealing::SIZE_SEALS.union(nix::fcntl::SealFlag::F_SEAL_WRITE);
    let size =
        sealing::check(fd, write_and_size, "the out-of-line body").map_err(Error::Descriptor)?;
    if size < len {
        return Err(Error::Descriptor(format!(
            "the out-of-line body holds {size} bytes but the header announces {len}"
        )));
    }
    let len = usize::try_from(len).map_err(|_| Error::TooLarge {
        len,
        max: usize::MAX as u64,
    })?;
    ReadMap::new(fd.as_fd(), len).map_err(|e| Error::io("mmap", e))
}
