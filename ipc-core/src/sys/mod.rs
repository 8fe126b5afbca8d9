//! The only unsafe code of the crate: `sendmsg`/`recvmsg` with descriptors,
//! socket options nix has no safe call for, and memory mappings.
//!
//! Everything above this module works with owned types: a received
//! descriptor becomes an `OwnedFd` before any other field of the datagram is
//! looked at, and a mapping is a value whose `Drop` unmaps it.
#![allow(unsafe_code)]

pub(crate) mod epoll;
pub(crate) mod mmap;
pub(crate) mod process;
#[cfg(feature = "tokio")]
pub(crate) mod reactor;
pub(crate) mod socket;
