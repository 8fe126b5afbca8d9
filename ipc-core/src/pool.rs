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
//! bodies per socket, bodies up to [`POOL_BODY_MAX`]. Anything else (a
//! bigger body, every slot still lent) travels in a fresh sealed memfd, as
//! it would without a pool. The memfds close with the socket.
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

/// One reusable memfd and the sender's mapping of its state word.
#[derive(Debug)]
struct Slot {
    fd: OwnedFd,
    state: WriteMap,
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

impl Pool {
    /// A slot for a body of `len` bytes: a free one that is large enough, a
    /// free one that may grow within the budget, or a new one. `None` when
    /// the body is too large for the pool or every slot is lent.
    pub(crate) fn claim(&self, len: usize) -> Option<Lease> {
        if len > POOL_BODY_MAX {
            return None;
        }
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots
            .iter()
            .find(|slot| slot.capacity() >= len && slot.try_claim())
        {
            return Some(Lease::new(slot.clone(), len));
        }
        let total: usize = slots.iter().map(|slot| slot.capacity()).sum();
        if let Some(slot) = slots
            .iter()
            .find(|slot| total - slot.capacity() + len <= BUDGET && slot.try_claim())
        {
            return Some(Lease::new(slot.clone(), len));
        }
        if slots.len() < SLOTS && total + len <= BUDGET {
            // Out of descriptors or memory: the sealed path reports it.
            let slot = Arc::new(Slot::new().ok()?);
            slots.push(slot.clone());
            return Some(Lease::new(slot, len));
        }
        None
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

    /// The memfd to write the body into, at [`BODY_OFFSET`].
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.slot.fd.as_fd()
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
        let first = pool.claim(100_000).unwrap();
        let first_fd = first.fd().as_raw_fd();
        first.sent();
        // Still lent: a second claim makes a second slot.
        let second = pool.claim(100_000).unwrap();
        assert_ne!(second.fd().as_raw_fd(), first_fd);
        hand_back(&second);
        let second_fd = second.fd().as_raw_fd();
        second.sent();
        let third = pool.claim(50_000).unwrap();
        assert_eq!(third.fd().as_raw_fd(), second_fd);
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn an_unsent_lease_frees_its_slot() {
        let pool = Pool::default();
        drop(pool.claim(1000).unwrap());
        pool.claim(1000).unwrap().sent();
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn the_pool_is_bounded_in_slots() {
        let pool = Pool::default();
        assert!(pool.claim(POOL_BODY_MAX + 1).is_none());
        let leases: Vec<_> = (0..SLOTS).map(|_| pool.claim(1000).unwrap()).collect();
        assert!(pool.claim(1000).is_none(), "every slot is lent");
        drop(leases);
        assert!(pool.claim(1000).is_some());
        assert_eq!(pool.len(), SLOTS);
    }

    #[test]
    fn the_pool_is_bounded_in_bytes() {
        let pool = Pool::default();
        let big: Vec<_> = (0..BUDGET / POOL_BODY_MAX)
            .map(|_| pool.claim(POOL_BODY_MAX).unwrap())
            .collect();
        assert!(pool.claim(1).is_none(), "over the byte budget");
        drop(big);
        // A free slot is grown rather than a new one made past the budget.
        assert!(pool.claim(POOL_BODY_MAX).is_some());
        assert_eq!(pool.len(), BUDGET / POOL_BODY_MAX);
    }
}
