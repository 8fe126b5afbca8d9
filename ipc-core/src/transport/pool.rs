//! The sender's pool of reusable body memfds.
//!
//! A fresh memfd per large message pays for page allocation, zeroing and
//! freeing every time; a memfd written again finds its pages in place. A
//! pooled memfd cannot be sealed (it is written again), so the receiver
//! never decodes from it: it copies the body out into its own memory and
//! then hands the memfd back by writing [`FREE`] into the state word at
//! offset 0. The sender claims a slot with a compare-and-swap on that word
//! through a shared mapping, so two processes that share a socket after a
//! `fork` never write one slot at once.
//!
//! ```text
//! offset        size  field
//!      0           4  state: 0 free, 1 lent (native endian)
//!   4096   body_len   the body
//! ```
//!
//! The pool is bounded: at most [`SLOTS`] memfds and [`BUDGET`] bytes of
//! bodies per socket, bodies up to [`POOL_BODY_MAX`]. A blocking send that
//! finds every slot lent ([`Claim::Busy`]) waits for one while the receiver
//! is behind (see `transport`); anything else (a bigger body, a send that
//! must not wait, a receiver that does not hand back) travels in a fresh
//! sealed memfd, as it would without a pool. The memfds close with the
//! socket.
//!
//! The pool is per socket, never shared between peers: a receiver may keep
//! a duplicate of every memfd it was lent, so a slot written again is read
//! (and writable) by all who held it before. Within one socket that is only
//! the peer itself; across sockets it would let one peer read and rewrite
//! the messages sent to another.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nix::fcntl::SealFlag;

use crate::error::Error;
use crate::sealing;
use crate::sys::mmap::WriteMap;

/// Where the body starts in a pooled memfd: the first page holds the state.
pub(crate) const BODY_OFFSET: u64 = 4096;

/// The largest body that goes through the pool. Larger ones are rare enough
/// that keeping their pages around costs more than allocating them.
pub(crate) const POOL_BODY_MAX: usize = 32 << 20;

/// Memfds per socket: enough for a sender to run a few messages ahead of
/// its receiver.
pub(crate) const SLOTS: usize = 4;

/// Body bytes the memfds of one socket may hold together.
pub(crate) const BUDGET: usize = 64 << 20;

/// The state word of a slot nobody is reading: the receiver writes it.
pub(crate) const FREE: u32 = 0;
const LENT: u32 = 1;

/// One reusable memfd and the sender's mappings of it.
#[derive(Debug)]
struct Slot {
    fd: OwnedFd,
    /// The state word, mapped for the slot's life: `claim` reads it while
    /// the holder of a lease may be remapping the body.
    state: WriteMap,
    /// The whole file, state page included (a mapping starts on a page),
    /// kept from one message to the next so that writing a body is a
    /// `memcpy` into pages already mapped. Only the holder of a lease
    /// touches it.
    body: Mutex<Option<WriteMap>>,
    /// The largest body this slot has held: what its pages cost.
    capacity: AtomicUsize,
}

impl Slot {
    /// A new slot, already lent to its creator.
    fn new() -> Result<Slot, Error> {
        let fd = sealing::create(c"ipc-core-pooled-body", BODY_OFFSET)?;
        // The receiver holds this memfd too. Fixing its first page (no
        // shrinking) keeps the sender's mapping of it from ever faulting,
        // and sealing the seals keeps a receiver from adding a write seal
        // that would make our next write fail.
        sealing::seal(fd.as_fd(), SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL)?;
        let state =
            WriteMap::new(fd.as_fd(), size_of::<u32>()).map_err(|e| Error::io("mmap", e))?;
        let slot = Slot {
            fd,
            state,
            body: Mutex::new(None),
            capacity: AtomicUsize::new(0),
        };
        slot.word()
            .ok_or_else(|| Error::Layout("a pooled memfd's state word is misaligned".into()))?
            .store(LENT, Ordering::Relaxed);
        Ok(slot)
    }

    fn word(&self) -> Option<&AtomicU32> {
        self.state.atomics::<AtomicU32>()?.first()
    }

    /// Takes the slot if no one is reading it.
    fn try_claim(&self) -> bool {
        self.word().is_some_and(|word| {
            word.compare_exchange(FREE, LENT, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
    }

    fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }
}

/// A socket's pool. Clones of a sender share it with the socket.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    slots: Mutex<Vec<Arc<Slot>>>,
}

/// What [`Pool::claim`] found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// A slot, lent to the caller.
    Lease(Lease),
    /// Every slot that could take the body is lent: one handed back will.
    Busy,
    /// The pool cannot take this body: too large, more than its slots may
    /// grow to, or no new memfd could be made.
    Never,
}

impl Claim {
    /// The lease, if there is one.
    #[cfg(test)]
    fn lease(self) -> Option<Lease> {
        match self {
            Claim::Lease(lease) => Some(lease),
            _ => None,
        }
    }
}

impl Pool {
    /// A slot for a body of `len` bytes: a free one that is large enough, a
    /// free one that may grow within the budget, or a new one.
    pub(crate) fn claim(&self, len: usize) -> Claim {
        if len > POOL_BODY_MAX {
            return Claim::Never;
        }
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots
            .iter()
            .find(|slot| slot.capacity() >= len && slot.try_claim())
        {
            return Claim::Lease(Lease::new(slot.clone(), len));
        }
        let total: usize = slots.iter().map(|slot| slot.capacity()).sum();
        let fits = |slot: &Arc<Slot>| total - slot.capacity() + len <= BUDGET;
        if let Some(slot) = slots.iter().find(|slot| fits(slot) && slot.try_claim()) {
            return Claim::Lease(Lease::new(slot.clone(), len));
        }
        if slots.len() < SLOTS && total + len <= BUDGET {
            // Out of descriptors or memory: the sealed path reports it.
            let Ok(slot) = Slot::new() else {
                return Claim::Never;
            };
            let slot = Arc::new(slot);
            slots.push(slot.clone());
            return Claim::Lease(Lease::new(slot, len));
        }
        if slots
            .iter()
            .any(|slot| slot.capacity() >= len || fits(slot))
        {
            Claim::Busy
        } else {
            Claim::Never
        }
    }

    /// Slots the pool holds, lent or free.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A claimed slot. Dropped unsent, it is free again; once sent, it stays
/// lent until the receiver hands it back.
#[derive(Debug)]
pub(crate) struct Lease {
    slot: Arc<Slot>,
    sent: bool,
}

impl Lease {
    fn new(slot: Arc<Slot>, len: usize) -> Lease {
        slot.capacity.fetch_max(len, Ordering::Relaxed);
        Lease { slot, sent: false }
    }

    /// The memfd the body is in, at [`BODY_OFFSET`].
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.slot.fd.as_fd()
    }

    /// Runs `write` on the body's place in the memfd, at least `len` bytes
    /// long, through the slot's mapping: grown (the file and the mapping)
    /// when it is too small, kept otherwise.
    pub(crate) fn write_with<R>(
        &self,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, Error> {
        let mut body = self
            .slot
            .body
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let offset = BODY_OFFSET as usize;
        let map = match body.take() {
            Some(map) if map.bytes().len() >= offset + len => body.insert(map),
            // None yet, or too small: dropped here, before the remap.
            _ => {
                // Whole pages, and room to grow a little before the next remap.
                let want = (offset + len).next_multiple_of(1 << 16);
                let size = nix::sys::stat::fstat(&self.slot.fd)
                    .map_err(|e| Error::io("fstat", e))?
                    .st_size as usize;
                if size < want {
                    nix::unistd::ftruncate(&self.slot.fd, want as i64)
                        .map_err(|e| Error::io("ftruncate", e))?;
                }
                // The file cannot shrink (sealed), so the mapping stays backed.
                let map =
                    WriteMap::new(self.slot.fd.as_fd(), want).map_err(|e| Error::io("mmap", e))?;
                body.insert(map)
            }
        };
        Ok(write(&mut map.bytes_mut()[offset..]))
    }

    /// Records that `len` bytes were written (a `Serialize` impl may write
    /// more than it measured).
    pub(crate) fn wrote(&self, len: usize) {
        self.slot.capacity.fetch_max(len, Ordering::Relaxed);
    }

    /// The body is on its way: the receiver frees the slot.
    pub(crate) fn sent(mut self) {
        self.sent = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.sent {
            if let Some(word) = self.slot.word() {
                word.store(FREE, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// What a receiver does once it has copied the body out.
    fn hand_back(lease: &Lease) {
        nix::sys::uio::pwrite(lease.fd(), &FREE.to_ne_bytes(), 0).unwrap();
    }

    #[test]
    fn a_handed_back_slot_is_reused() {
        let pool = Pool::default();
        let first = pool.claim(100_000).lease().unwrap();
        let first_fd = first.fd().as_raw_fd();
        first.sent();
        // Still lent: a second claim makes a second slot.
        let second = pool.claim(100_000).lease().unwrap();
        assert_ne!(second.fd().as_raw_fd(), first_fd);
        hand_back(&second);
        let second_fd = second.fd().as_raw_fd();
        second.sent();
        let third = pool.claim(50_000).lease().unwrap();
        assert_eq!(third.fd().as_raw_fd(), second_fd);
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn an_unsent_lease_frees_its_slot() {
        let pool = Pool::default();
        drop(pool.claim(1000).lease().unwrap());
        pool.claim(1000).lease().unwrap().sent();
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn the_pool_is_bounded_in_slots() {
        let pool = Pool::default();
        assert!(matches!(pool.claim(POOL_BODY_MAX + 1), Claim::Never));
        let leases: Vec<_> = (0..SLOTS)
            .map(|_| pool.claim(1000).lease().unwrap())
            .collect();
        assert!(
            matches!(pool.claim(1000), Claim::Busy),
            "every slot is lent"
        );
        drop(leases);
        assert!(pool.claim(1000).lease().is_some());
        assert_eq!(pool.len(), SLOTS);
    }

    #[test]
    fn the_pool_is_bounded_in_bytes() {
        let pool = Pool::default();
        let big: Vec<_> = (0..BUDGET / POOL_BODY_MAX)
            .map(|_| pool.claim(POOL_BODY_MAX).lease().unwrap())
            .collect();
        assert!(matches!(pool.claim(1), Claim::Busy), "over the byte budget");
        drop(big);
        // A free slot is grown rather than a new one made past the budget.
        assert!(pool.claim(POOL_BODY_MAX).lease().is_some());
        assert_eq!(pool.len(), BUDGET / POOL_BODY_MAX);
    }

    #[test]
    fn a_body_the_slots_cannot_grow_to_is_never_pooled() {
        let pool = Pool::default();
        let quarter = BUDGET / SLOTS;
        let leases: Vec<_> = (0..SLOTS)
            .map(|_| pool.claim(quarter).lease().unwrap())
            .collect();
        drop(leases);
        // Every slot is free, but growing one to this size would pass the
        // budget: waiting for a hand-back would never help.
        assert!(matches!(pool.claim(quarter + 1), Claim::Never));
    }
}
