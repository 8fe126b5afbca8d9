//! Which atomics may live in shared memory.

use std::sync::atomic::{
    AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicIsize, AtomicU16, AtomicU32, AtomicU64,
    AtomicU8, AtomicUsize,
};

mod sealed {
    pub trait Sealed {}
}

/// An integer atomic type, usable in [`SharedMemory`](crate::SharedMemory)
/// between processes: every bit pattern is a valid value and its operations
/// are lock-free, so they work across address spaces.
///
/// `AtomicBool` is not one: a peer could store a byte that is neither zero
/// nor one. The trait is sealed: no type outside this crate implements it.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// let region = ipc_core::SharedMemory::new(64)?;
/// let counters = region.atomics::<AtomicU64>()?;
/// counters[0].fetch_add(1, Ordering::SeqCst);
/// assert_eq!(counters.len(), 8);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub trait SharedAtomic: sealed::Sealed + Sync {}

macro_rules! shared_atomic {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl SharedAtomic for $t {}
    )*};
}

shared_atomic!(
    AtomicU8,
    AtomicU16,
    AtomicU32,
    AtomicU64,
    AtomicUsize,
    AtomicI8,
    AtomicI16,
    AtomicI32,
    AtomicI64,
    AtomicIsize
);
