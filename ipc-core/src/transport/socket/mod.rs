//! The socket lane: one message, one `SOCK_SEQPACKET` datagram, its
//! descriptors in `SCM_RIGHTS`.

pub(crate) mod receive;
pub(crate) mod send;
