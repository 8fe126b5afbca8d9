//! The frame header that starts every datagram. Pure: no syscalls, so it is
//! unit tested and fuzzed on its own.
//!
//! ```text
//! offset  size  field
//!      0     2  magic, b"ic"
//!      2     1  version, 2
//!      3     1  body kind: 0 inline (the body follows the header),
//!                          1 out of line (the first descriptor is a sealed
//!                            memfd holding the body; nothing follows)
//!                          2 pooled (the first descriptor is a memfd the
//!                            sender reuses, body at offset 4096; the
//!                            receiver copies it and writes 0 at offset 0)
//!                          3 ring offer (no message: the descriptors are a
//!                            sending process's ring memfd and the
//!                            receiver's end of its private socket)
//!                          4 wake (no message: the doorbell of a ring
//!                            whose receiver was about to sleep)
//!      4     4  descriptors attached, little endian, the body's memfd included
//!      8     8  body length in bytes, little endian
//! ```
//!
//! The body names the message's own descriptors by index, counted after
//! the body's memfd. That memfd comes first so that it arrives even when
//! the receiver's control buffer holds fewer descriptors than were sent
//! (the kernel keeps the first ones): a pooled memfd then still goes back
//! to its sender. Version 1 put it last.

use std::fmt;

/// Bytes in a header.
pub(crate) const HEADER_LEN: usize = 16;

/// The largest body that travels inside the datagram. Larger bodies travel
/// in a memfd. 64 KiB: past this, two socket copies cost more than
/// creating, sealing and mapping a memfd, and it fits in the default
/// `SO_SNDBUF` (208 KiB) several times over, so a sender rarely blocks.
pub(crate) const INLINE_MAX: usize = 64 * 1024;

/// The receive buffer: the largest datagram a well-behaved peer sends.
pub(crate) const DATAGRAM_MAX: usize = HEADER_LEN + INLINE_MAX;

const MAGIC: [u8; 2] = *b"ic";
const VERSION: u8 = 2;

/// Where the body of a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// Right after the header, in the same datagram.
    Inline,
    /// In a sealed memfd, the first descriptor of the datagram.
    OutOfLine,
    /// In a memfd of the sender's pool, the first descriptor of the datagram.
    Pooled,
    /// No message: a sending process offers a ring (see `transport::ring`).
    RingOffer,
    /// No message: a ring's doorbell.
    Wake,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub body: Body,
    /// Descriptors attached, the body's memfd included.
    pub fds: u32,
    pub body_len: u64,
}

/// Why a datagram's header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Short(usize),
    Magic([u8; 2]),
    Version(u8),
    Kind(u8),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short(n) => write!(
                f,
                "datagram of {n} bytes is shorter than the {HEADER_LEN}-byte header"
            ),
            HeaderError::Magic(m) => write!(
                f,
                "datagram starts with {m:02x?}, not this protocol's magic; the peer does not speak ipc_core"
            ),
            HeaderError::Version(v) => write!(
                f,
                "peer speaks wire version {v}, this side speaks {VERSION}; upgrade both sides together"
            ),
            HeaderError::Kind(k) => write!(f, "unknown body kind {k}"),
        }
    }
}

impl Header {
    /// Writes the header into the first `HEADER_LEN` bytes of `out`.
    #[inline]
    pub(crate) fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = match self.body {
            Body::Inline => 0,
            Body::OutOfLine => 1,
            Body::Pooled => 2,
            Body::RingOffer => 3,
            Body::Wake => 4,
        };
        out[4..8].copy_from_slice(&self.fds.to_le_bytes());
        out[8..16].copy_from_slice(&self.body_len.to_le_bytes());
    }

    /// Reads the header at the start of a datagram.
    #[inline]
    pub(crate) fn parse(datagram: &[u8]) -> Result<Header, HeaderError> {
        let Some(bytes) = datagram.first_chunk::<HEADER_LEN>() else {
            return Err(HeaderError::Short(datagram.len()));
        };
        let magic = [bytes[0], bytes[1]];
        if magic != MAGIC {
            return Err(HeaderError::Magic(magic));
        }
        if bytes[2] != VERSION {
            return Err(HeaderError::Version(bytes[2]));
        }
        let body = match bytes[3] {
            0 => Body::Inline,
            1 => Body::OutOfLine,
            2 => Body::Pooled,
            3 => Body::RingOffer,
            4 => Body::Wake,
            k => return Err(HeaderError::Kind(k)),
        };
        let mut fds = [0; 4];
        fds.copy_from_slice(&bytes[4..8]);
        let mut len = [0; 8];
        len.copy_from_slice(&bytes[8..16]);
        Ok(Header {
            body,
            fds: u32::from_le_bytes(fds),
            body_len: u64::from_le_bytes(len),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for header in [
            Header {
                body: Body::Inline,
                fds: 0,
                body_len: 0,
            },
            Header {
                body: Body::OutOfLine,
                fds: 253,
                body_len: u64::MAX,
            },
            Header {
                body: Body::Pooled,
                fds: 1,
                body_len: 1 << 20,
            },
        ] {
            let mut out = [0; HEADER_LEN];
            header.write(&mut out);
            assert_eq!(Header::parse(&out), Ok(header));
        }
    }

    #[test]
    fn refuses_short_foreign_and_future_headers() {
        let mut good = [0; HEADER_LEN];
        Header {
            body: Body::Inline,
            fds: 1,
            body_len: 3,
        }
        .write(&mut good);
        assert_eq!(Header::parse(&good[..15]), Err(HeaderError::Short(15)));
        assert_eq!(Header::parse(&[]), Err(HeaderError::Short(0)));
        let mut bad = good;
        bad[0] = b'X';
        assert!(matches!(Header::parse(&bad), Err(HeaderError::Magic(_))));
        let mut bad = good;
        bad[2] = 1;
        assert_eq!(Header::parse(&bad), Err(HeaderError::Version(1)));
        let mut bad = good;
        bad[3] = 7;
        assert_eq!(Header::parse(&bad), Err(HeaderError::Kind(7)));
    }
}
