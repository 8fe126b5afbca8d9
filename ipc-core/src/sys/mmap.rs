//! Shared mappings of a memfd, unmapped when dropped.
//!
//! A mapping never outlives its value, and its value never hands out a slice
//! that outlives a borrow of it. Callers check seals and the file size before
//! they map: mapping past the end of a file that a peer can shrink is how a
//! reader dies of SIGBUS.

use std::mem::{align_of, size_of};
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::slice;

use nix::errno::Errno;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::atomic::SharedAtomic;

/// One `MAP_SHARED` mapping of `len` bytes, or no mapping at all for `len == 0`.
#[derive(Debug)]
struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is an address range this value alone maps and unmaps; the
// memory behind it is plain bytes with no thread affinity.
unsafe impl Send for Region {}
// SAFETY: shared access only reads through `&self` (see `ReadMap`/`WriteMap`).
unsafe impl Sync for Region {}

impl Region {
    fn map(fd: BorrowedFd<'_>, len: usize, prot: ProtFlags) -> Result<Self, Errno> {
        let Some(length) = NonZeroUsize::new(len) else {
            return Ok(Region {
                ptr: NonNull::dangling(),
                len: 0,
            });
        };
        // SAFETY: we ask the kernel for a fresh address (no MAP_FIXED), so no
        // existing memory is replaced. The caller has checked that the file is
        // at least `len` bytes long and cannot shrink, so every byte of the
        // range stays backed for as long as it is mapped.
        let ptr = unsafe { mmap(None, length, prot, MapFlags::MAP_SHARED, fd, 0)? };
        Ok(Region {
            ptr: ptr.cast(),
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` readable bytes while `self` lives
        // (or dangling with len 0, which a slice allows).
        unsafe { slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: `ptr..ptr+len` is exactly the range mmap returned, and
            // no slice borrowed from it outlives `self`.
            let _ = unsafe { munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// A read-only shared mapping.
#[derive(Debug)]
pub(crate) struct ReadMap(Region);

impl ReadMap {
    /// Maps the first `len` bytes of `fd` read-only; pages are mapped as
    /// they are touched.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize) -> Result<Self, Errno> {
        Region::map(fd, len, ProtFlags::PROT_READ).map(ReadMap)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// A read-write shared mapping.
#[derive(Debug)]
pub(crate) struct WriteMap(Region);

impl WriteMap {
    /// Maps the first `len` bytes of `fd` read-write; pages are mapped as
    /// they are touched.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize) -> Result<Self, Errno> {
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        Region::map(fd, len, prot).map(WriteMap)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }

    /// The mapping as a slice of atomics, or `None` when its length is not a
    /// whole number of `A` (mappings are page aligned, but that is checked too).
    pub(crate) fn atomics<A: SharedAtomic>(&self) -> Option<&[A]> {
        let Region { ptr, len } = &self.0;
        let size = size_of::<A>();
        if ptr.as_ptr().align_offset(align_of::<A>()) != 0 || len % size != 0 {
            return None;
        }
        // SAFETY: the range is mapped readable and writable for `len` bytes
        // while `self` lives, and the slice borrows `self`; the pointer is
        // aligned for A and the length a whole number of A (checked above);
        // A is an integer atomic, valid for every bit pattern. Atomics are
        // made to be mutated through shared references, which is what other
        // handles and processes do to these bytes.
        Some(unsafe { slice::from_raw_parts(ptr.as_ptr().cast::<A>(), len / size) })
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the range is mapped writable for `len` bytes while `self`
        // lives, and `&mut self` makes this the only slice into it from this
        // process for the borrow's duration.
        unsafe { slice::from_raw_parts_mut(self.0.ptr.as_ptr(), self.0.len) }
    }
}
