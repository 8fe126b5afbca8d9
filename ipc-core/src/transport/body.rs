//! Bodies too large to travel inside the datagram, in a memfd. Either way
//! the receiver decodes bytes that cannot change under it:
//!
//! - a *pooled* body is in a memfd the sender reuses (see `pool`): the
//!   receiver copies it out with `pread`, hands the memfd back ([`Lent`])
//!   and decodes its own copy;
//! - any other body is in a fresh memfd sealed before it is sent, read by
//!   the receiver only after it has checked the seals: copied out with
//!   `pread` up to [`COPY_MAX`] (mapping and unmapping cost more than
//!   copying that much), decoded straight from a read-only mapping above.
//!
//! The sender serializes a pooled body straight into its kept mapping of
//! the memfd (see `pool`), and streams any other body into a fresh memfd
//! with `pwrite(2)` as postcard produces it ([`Stream`]): no mapping of
//! pages that are new anyway, and a large byte string goes from the message
//! to the kernel in one copy.

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use super::pool;
use crate::error::Error;
use crate::sealing;
use crate::sys::mmap::ReadMap;

/// Bodies up to this size are copied out with `pread` rather than mapped.
pub(crate) const COPY_MAX: usize = 1 << 20;

/// A postcard flavor that streams a body into a memfd with `pwrite(2)`,
/// staging small pieces in `stage` and writing large ones (a byte string)
/// straight from where they are: no mapping, no second copy, and the kernel
/// fills each new page whole instead of zeroing it first.
pub(crate) struct Stream<'a> {
    fd: BorrowedFd<'a>,
    stage: &'a mut [u8],
    staged: usize,
    written: usize,
    /// The errno of a failed write: postcard's error type cannot hold it.
    failed: &'a Cell<Option<Errno>>,
}

impl<'a> Stream<'a> {
    pub(crate) fn new(
        fd: BorrowedFd<'a>,
        stage: &'a mut [u8],
        failed: &'a Cell<Option<Errno>>,
    ) -> Self {
        Stream {
            fd,
            stage,
            staged: 0,
            written: 0,
            failed,
        }
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> postcard::Result<()> {
        while !bytes.is_empty() {
            match nix::sys::uio::pwrite(self.fd, bytes, self.written as i64) {
                Ok(n) => {
                    self.written += n;
                    bytes = &bytes[n..];
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    self.failed.set(Some(e));
                    return Err(postcard::Error::SerializeBufferFull);
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> postcard::Result<()> {
        let staged = std::mem::take(&mut self.staged);
        // Split the borrow: the stage is read while `written` is updated.
        let stage = std::mem::take(&mut self.stage);
        let result = self.write_all(&stage[..staged]);
        self.stage = stage;
        result
    }
}

impl postcard::ser_flavors::Flavor for Stream<'_> {
    type Output = usize;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        if self.staged == self.stage.len() {
            self.flush()?;
        }
        self.stage[self.staged] = byte;
        self.staged += 1;
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        let room = self.stage.len() - self.staged;
        if bytes.len() <= room {
            self.stage[self.staged..self.staged + bytes.len()].copy_from_slice(bytes);
            self.staged += bytes.len();
            return Ok(());
        }
        self.flush()?;
        if bytes.len() >= self.stage.len() / 2 {
            return self.write_all(bytes);
        }
        self.stage[..bytes.len()].copy_from_slice(bytes);
        self.staged = bytes.len();
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<usize> {
        self.flush()?;
        Ok(self.written)
    }
}

/// Creates an empty memfd for a body to be streamed into.
pub(crate) fn create() -> Result<OwnedFd, Error> {
    sealing::create(c"ipc-core-body", 0)
}

/// Seals a body memfd against every change before it is sent.
///
/// Nothing maps a body memfd, so the write seal's `EBUSY` can only mean
/// that the kernel still holds a transient reference to a page just
/// written (it waits a little for such pins itself, and gives up under
/// load): try again a few times, backing off, before reporting it.
pub(crate) fn seal(fd: BorrowedFd<'_>) -> Result<(), Error> {
    let mut pause = std::time::Duration::from_micros(50);
    for _ in 0..8 {
        match sealing::seal(fd, sealing::ALL_SEALS) {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(Errno::EBUSY as i32) => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            result => return result,
        }
    }
    sealing::seal(fd, sealing::ALL_SEALS)
}

/// Checks that a received body memfd is sealed against writes and resizing
/// and holds `len` bytes; returns `len` as a size.
pub(crate) fn check(fd: &OwnedFd, len: u64) -> Result<usize, Error> {
    let write_and_size = sealing::SIZE_SEALS.union(nix::fcntl::SealFlag::F_SEAL_WRITE);
    let size =
        sealing::check(fd, write_and_size, "the out-of-line body").map_err(Error::Descriptor)?;
    fits("the out-of-line body", size, len)
}

/// Checks that `held` bytes of `what` are enough for a body of `len`;
/// returns `len` as a size.
fn fits(what: &str, held: u64, len: u64) -> Result<usize, Error> {
    if held < len {
        return Err(Error::Descriptor(format!(
            "{what} holds {held} bytes but the header announces {len}"
        )));
    }
    usize::try_from(len).map_err(|_| Error::TooLarge {
        len,
        max: usize::MAX as u64,
    })
}

/// Checks that the first `len` bytes of a body memfd hold no hole: pages
/// the sender never wrote. A body the receiver maps is read where it is,
/// and reading a hole of a memfd allocates a page, charged to the reader
/// and kept in the memfd for as long as the peer holds it: a peer could
/// make this process pay for gigabytes it never paid for itself. A sender
/// writes every byte of a body, so a body with a hole is refused.
pub(crate) fn check_allocated(fd: &OwnedFd, len: usize) -> Result<(), Error> {
    use nix::unistd::{lseek, Whence};
    match lseek(fd, 0, Whence::SeekHole) {
        Ok(hole) if hole as u64 >= len as u64 => Ok(()),
        Ok(hole) => Err(Error::Descriptor(format!(
            "the out-of-line body has a hole at byte {hole} of {len}: memory the peer never \
             wrote, which this process would pay for as it reads; the peer does not follow \
             the protocol"
        ))),
        Err(e) => Err(Error::io("lseek(SEEK_HOLE)", e)),
    }
}

/// Copies `out.len()` bytes from `start` of a body memfd into `out`.
pub(crate) fn read_copied(fd: &OwnedFd, start: u64, out: &mut [u8]) -> Result<(), Error> {
    let mut read = 0;
    while read < out.len() {
        let offset = start + read as u64;
        match nix::sys::uio::pread(fd, &mut out[read..], offset as i64) {
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

/// A pooled body the sender lent: read once into the receiver's own
/// memory, then handed back when this is dropped, on every path.
#[derive(Debug)]
pub(crate) struct Lent {
    fd: OwnedFd,
    /// The memfd's size when it arrived.
    size: u64,
}

impl Lent {
    /// Accepts the descriptor of a pooled body. Only a memfd is read or
    /// written: any other file could block a read (a FIFO, a FUSE file).
    /// The memfd needs no seals: its body is copied before it is decoded.
    pub(crate) fn accept(fd: OwnedFd) -> Result<Lent, Error> {
        match sealing::check(&fd, nix::fcntl::SealFlag::empty(), "the pooled body") {
            Ok(size) => Ok(Lent { fd, size }),
            Err(why) => {
                crate::disposal::discard(fd);
                Err(Error::Descriptor(why))
            }
        }
    }

    /// Checks that the memfd holds a body of `len` bytes, before any
    /// memory is set aside for it; returns `len` as a size. (A peer that
    /// shrinks it later makes the copy come up short: an error too.)
    pub(crate) fn check(&self, len: u64) -> Result<usize, Error> {
        let held = self.size.saturating_sub(pool::BODY_OFFSET);
        fits("the pooled body", held, len)
    }

    /// Copies the body, `out.len()` bytes, into `out`.
    pub(crate) fn read(&self, out: &mut [u8]) -> Result<(), Error> {
        read_copied(&self.fd, pool::BODY_OFFSET, out)
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Best effort: a peer that sent a memfd we cannot write only loses
        // its own slot.
        let _ = nix::sys::uio::pwrite(&self.fd, &pool::FREE.to_ne_bytes(), 0);
    }
}
