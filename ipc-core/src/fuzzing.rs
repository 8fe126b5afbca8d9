//! Entry points for the fuzz targets (`fuzz/`) and their regression tests:
//! the receiver's pure steps, reachable without a socket. Not a public API.

use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::limits::Limits;

/// Parses a frame header; `true` when it is well-formed.
pub fn header(data: &[u8]) -> bool {
    crate::wire::Header::parse(data).is_ok()
}

/// Decodes `datagram` with `fds` attached exactly as a receiver with
/// `limits` would.
pub fn decode<T: DeserializeOwned + 'static>(
    datagram: &[u8],
    fds: Vec<OwnedFd>,
    limits: &Limits,
) -> Result<T> {
    crate::transport::decode_datagram(datagram, fds, limits)
}

/// Takes records from a ring laid out of `data` (its head word, then its
/// slots) as a receiving end does; how many it took.
pub fn ring(data: &[u8]) -> usize {
    crate::transport::ring::take_from(data)
}
