//! `sendmsg`/`recvmsg` of one datagram with its `SCM_RIGHTS` sidecar.
//!
//! nix's own `recvmsg` hands back descriptors as `Vec<RawFd>` and allocates
//! per call; these two calls use a control buffer on the stack and give
//! owned descriptors straight away.

use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use nix::errno::Errno;
use nix::libc;

/// The kernel's `SCM_MAX_FD`: the most descriptors one datagram carries.
pub(crate) const MAX_FDS: usize = 253;

const FD_SIZE: usize = size_of::<RawFd>();

/// Bytes of control buffer that hold one `SCM_RIGHTS` message of `n` descriptors.
const fn control_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument; it reads no memory.
    // `n * FD_SIZE` is at most 253 * 4, far inside `c_uint`.
    unsafe { libc::CMSG_SPACE((n * FD_SIZE) as libc::c_uint) as usize }
}

/// Room for the control messages a socket option can add to every
/// datagram, besides `SCM_RIGHTS`: `SCM_CREDENTIALS` (`SO_PASSCRED`),
/// `SCM_PIDFD` (`SO_PASSPIDFD`) and a short `SCM_SECURITY` label
/// (`SO_PASSSEC`). Whoever holds a socket can set those options, a peer
/// that handed the socket over included, so a receive leaves room for them
/// or a message within the limits would come control-truncated.
const OTHER_CONTROL: usize = {
    // SAFETY: CMSG_SPACE is arithmetic on its argument; it reads no memory.
    let credentials = unsafe { libc::CMSG_SPACE(size_of::<libc::ucred>() as libc::c_uint) };
    // SAFETY: as above.
    let pidfd = unsafe { libc::CMSG_SPACE(FD_SIZE as libc::c_uint) };
    // SAFETY: as above.
    let label = unsafe { libc::CMSG_SPACE(SECURITY_LABEL as libc::c_uint) };
    (credentials + pidfd + label) as usize
};

/// Bytes of an `SCM_SECURITY` label a receive makes room for.
const SECURITY_LABEL: usize = 64;

/// `SCM_PIDFD` (Linux 6.5): a pidfd of the sender, installed in our table.
const SCM_PIDFD: libc::c_int = 0x04;

const CONTROL_CAPACITY: usize = control_space(MAX_FDS) + OTHER_CONTROL;

/// A control buffer aligned for `cmsghdr` (whose alignment is that of `size_t`).
#[repr(C, align(8))]
struct ControlBuffer(MaybeUninit<[u8; CONTROL_CAPACITY]>);

impl ControlBuffer {
    fn new() -> Self {
        ControlBuffer(MaybeUninit::uninit())
    }

    fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr().cast()
    }
}

/// Creates a connected pair of close-on-exec `AF_UNIX` `SOCK_SEQPACKET` sockets.
pub(crate) fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// Sends `bytes` as one datagram with `fds` attached, retrying on `EINTR`.
///
/// The caller keeps `fds` open for the call (they are borrowed from the
/// message being sent); a number that is not open is `EBADF`, nothing worse.
/// `MSG_NOSIGNAL` is always set: a closed peer is `EPIPE`, never `SIGPIPE`.
/// With `dontwait`, a full socket buffer is `EAGAIN` instead of blocking.
#[inline]
pub(crate) fn send(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[RawFd],
    dontwait: bool,
) -> Result<(), Errno> {
    if fds.len() > MAX_FDS {
        return Err(Errno::ETOOMANYREFS);
    }
    let flags = libc::MSG_NOSIGNAL | if dontwait { libc::MSG_DONTWAIT } else { 0 };
    if fds.is_empty() {
        // send() skips copying a msghdr and an iovec in from user space.
        return retry(|| {
            // SAFETY: `bytes` is valid for reads of its length for the call.
            unsafe {
                libc::send(
                    socket.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    flags,
                )
            }
        });
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let mut control = ControlBuffer::new();
    // SAFETY: msghdr is a plain C struct (pointers, lengths, an int) for which
    // all-zero bytes are a valid value: no buffers, no flags.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    let data_len = fds.len() * FD_SIZE;
    header.msg_control = control.as_mut_ptr();
    header.msg_controllen = control_space(fds.len()) as _;
    // SAFETY: msg_control points at CONTROL_CAPACITY bytes aligned for
    // cmsghdr and msg_controllen (<= CONTROL_CAPACITY, as fds.len() <=
    // MAX_FDS) covers one header plus `data_len` bytes, so CMSG_FIRSTHDR is
    // non-null and CMSG_DATA points at `data_len` writable bytes inside the
    // buffer. The writes go through raw pointers into our own buffer.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as libc::c_uint) as _;
        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, fd) in fds.iter().enumerate() {
            ptr::write_unaligned(data.add(i), *fd);
        }
    }
    retry(|| {
        // SAFETY: `header` points at one iovec over `bytes` and a control
        // message filled in above; both outlive the call. The descriptors are
        // borrowed, so they stay open while the kernel takes its own
        // references to them.
        unsafe { libc::sendmsg(socket.as_raw_fd(), &header, flags) }
    })
}

/// Runs a send until it is not interrupted. A `SOCK_SEQPACKET` send is all
/// or nothing, so any count means the whole datagram went.
fn retry(mut send: impl FnMut() -> isize) -> Result<(), Errno> {
    loop {
        if send() >= 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// What one `recvmsg` gave besides the bytes and descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Bytes written into the buffer.
    pub len: usize,
    /// The datagram was longer than the buffer; the rest is lost (`MSG_TRUNC`).
    pub truncated: bool,
    /// More descriptors came than the control buffer held, or the kernel could
    /// not install them all (`MSG_CTRUNC`); the rest were closed by the kernel.
    pub control_truncated: bool,
}

/// Who sent a datagram, as the kernel attached it: `SCM_CREDENTIALS` when
/// the receiving socket has `SO_PASSCRED`, `SCM_PIDFD` with `SO_PASSPIDFD`.
/// Both are taken when the datagram is sent, from the sending process.
#[derive(Debug, Default)]
pub(crate) struct Sender {
    pub credentials: Option<libc::ucred>,
    /// `None` too when the kernel could not install one (no number free).
    pub pidfd: Option<OwnedFd>,
}

impl Received {
    /// Nothing came: no byte, and nothing cut short.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.truncated && !self.control_truncated
    }
}

/// Receives one datagram into `buf`, its descriptors pushed onto `fds` as
/// owned, close-on-exec descriptors. Room is made for `max_fds` descriptors
/// (a few more fit where no other control message takes the room; the
/// caller counts them). Retries on `EINTR`; with `dontwait` an empty socket
/// is `EAGAIN`.
///
/// Every descriptor the kernel installs is owned at once: those of
/// `SCM_RIGHTS` are handed to the caller, a pidfd of `SCM_PIDFD` (which a
/// peer turns on with `SO_PASSPIDFD` on a socket it handed over) goes to
/// `sender` or is closed. A negative number in either is no descriptor
/// and is skipped: the kernel writes an error there (`-EMFILE`) when it
/// could not install a pidfd, and `sender` then gets no pidfd.
/// Control messages that carry no descriptor (credentials, a security
/// label) are ignored.
#[inline]
pub(crate) fn recv(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    fds: &mut Vec<OwnedFd>,
    dontwait: bool,
    sender: Option<&mut Sender>,
) -> Result<Received, Errno> {
    let flags = if dontwait { libc::MSG_DONTWAIT } else { 0 };
    recv_flags(socket, buf, max_fds, fds, flags, sender)
}

/// [`recv`] with the `recvmsg` flags given (`MSG_PEEK`, say: what a peek
/// installs is owned just the same).
fn recv_flags(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    fds: &mut Vec<OwnedFd>,
    flags: libc::c_int,
    mut sender: Option<&mut Sender>,
) -> Result<Received, Errno> {
    let max_fds = max_fds.min(MAX_FDS);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = ControlBuffer::new();
    // SAFETY: as in `send`, all-zero is a valid msghdr.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr();
    header.msg_controllen = (control_space(max_fds) + OTHER_CONTROL) as _;
    let flags = libc::MSG_CMSG_CLOEXEC | flags;
    let len = loop {
        // SAFETY: the iovec covers `buf`, writable for its length; the control
        // buffer is writable for msg_controllen bytes. Both outlive the call.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, flags) };
        if n >= 0 {
            break n as usize;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    };
    // Own every descriptor before anything else is looked at, so that any
    // error from here on closes them.
    let control_start = header.msg_control as usize;
    // The kernel sets msg_controllen to the bytes it filled, never more
    // than the buffer; bounded by the buffer all the same.
    let control_len = (header.msg_controllen as usize).min(CONTROL_CAPACITY);
    if control_len > 0 {
        // SAFETY: the kernel filled msg_controllen bytes of our aligned control
        // buffer with well-formed cmsghdrs; CMSG_FIRSTHDR/CMSG_NXTHDR walk
        // them within that length and return null at the end.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&header) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` is non-null and points at a cmsghdr inside the
            // filled part of the buffer (see above).
            let (level, kind, cmsg_len) = unsafe {
                (
                    (*cmsg).cmsg_level,
                    (*cmsg).cmsg_type,
                    (*cmsg).cmsg_len as usize,
                )
            };
            // The payload the kernel wrote: `cmsg_len` of a control
            // message cut short (MSG_CTRUNC) never runs past the bytes
            // filled, but bound it by them all the same.
            let filled = (cmsg as usize)
                .checked_sub(control_start)
                .and_then(|offset| control_len.checked_sub(offset))
                .unwrap_or(0);
            let cmsg_len = cmsg_len.min(filled);
            let data_len = cmsg_len.saturating_sub(cmsg_len_zero());
            let installs_fds =
                level == libc::SOL_SOCKET && (kind == libc::SCM_RIGHTS || kind == SCM_PIDFD);
            if installs_fds {
                let count = data_len / FD_SIZE;
                // SAFETY: CMSG_DATA of a valid cmsghdr points at its payload.
                let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
                for i in 0..count {
                    // SAFETY: `i < count` keeps the read inside the payload
                    // the kernel wrote (`data_len` is bounded by `cmsg_len`
                    // and by the bytes filled). The payload may be unaligned
                    // for RawFd, hence read_unaligned.
                    let raw = unsafe { ptr::read_unaligned(data.add(i)) };
                    // A negative number is no descriptor: the kernel writes
                    // the error where the number goes when it could not
                    // install a pidfd (`-EMFILE` with no number free), and
                    // nothing was installed. Owning it would close a
                    // number that is not ours (an I/O-safety violation).
                    if raw < 0 {
                        continue;
                    }
                    // SAFETY: the kernel just installed `raw` (not negative,
                    // checked above) in our table for this message; nothing
                    // else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if kind == libc::SCM_RIGHTS {
                        fds.push(owned);
                    } else if let Some(sender) = sender.as_deref_mut() {
                        sender.pidfd = Some(owned);
                    }
                    // Otherwise a pidfd nobody asked for: closed here.
                }
            }
            let is_credentials = level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS;
            if is_credentials && data_len >= size_of::<libc::ucred>() {
                if let Some(sender) = sender.as_deref_mut() {
                    // SAFETY: the payload holds a whole ucred (`cmsg_len`
                    // covers it, checked above); it may be unaligned.
                    let ucred =
                        unsafe { ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::ucred>()) };
                    sender.credentials = Some(ucred);
                }
            }
            // SAFETY: `header` describes the control buffer and `cmsg` is one
            // of its headers; CMSG_NXTHDR returns the next one or null.
            cmsg = unsafe { libc::CMSG_NXTHDR(&header, cmsg) };
        }
    }
    Ok(Received {
        len,
        truncated: header.msg_flags & libc::MSG_TRUNC != 0,
        control_truncated: header.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// `CMSG_LEN(0)`: the size of a control header with no payload.
const fn cmsg_len_zero() -> usize {
    // SAFETY: CMSG_LEN is arithmetic on its argument; it reads no memory.
    unsafe { libc::CMSG_LEN(0) as usize }
}

/// Whether a receive on `socket` that read nothing was the end of the
/// stream: the peer closed its end or shut it down for writing (or this
/// end was shut down for reading), and nothing more is queued. A live peer
/// can send an empty datagram too, which is no end; neither is one queued
/// before real messages.
pub(crate) fn finished(socket: BorrowedFd<'_>) -> bool {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // nix's poll drops what it does not name, POLLRDHUP among it.
    // SAFETY: `fd` is one valid pollfd, writable for the call; a zero
    // timeout never blocks.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    let shut = ready == 1 && fd.revents & (libc::POLLHUP | libc::POLLRDHUP) != 0;
    // Messages still queued behind an empty datagram come first; so does a
    // datagram of no bytes that carries something (descriptors, or the
    // pidfd a socket set to SO_PASSPIDFD gets with each datagram), which
    // the end of the stream never does.
    shut && queued_bytes(socket) == Ok(0) && !carries_control(socket)
}

/// Whether the datagram at the head of `socket`'s queue carries control
/// messages, by a peek; what the peek installs is let go of at once.
fn carries_control(socket: BorrowedFd<'_>) -> bool {
    let mut fds = Vec::new();
    let mut sender = Sender::default();
    let peeked = recv_flags(
        socket,
        &mut [0u8; 1],
        MAX_FDS,
        &mut fds,
        libc::MSG_PEEK | libc::MSG_DONTWAIT,
        Some(&mut sender),
    );
    let carries = !fds.is_empty()
        || sender.pidfd.is_some()
        || sender.credentials.is_some()
        || peeked.is_ok_and(|r| r.control_truncated);
    crate::disposal::discard_all(fds);
    carries
}

/// Whether the peer of `socket` has closed its end (or shut it down).
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) fn hung_up(socket: BorrowedFd<'_>) -> bool {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `fd` is one valid pollfd, writable for the call; a zero
    // timeout never blocks.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready == 1 && fd.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0
}

/// The kind of the datagram at the head of `socket`'s queue, by a peek at
/// its header (nothing is taken, no descriptor installed); `None` when
/// nothing is queued, `Some(Inline)` for what has no header to tell (an
/// end of stream, an empty datagram): a receive deals with it.
pub(crate) fn peek_kind(socket: BorrowedFd<'_>) -> Option<crate::wire::Body> {
    let mut head = [0u8; crate::wire::HEADER_LEN];
    // SAFETY: `head` is valid for writes of its length for the call; with
    // no control buffer, a peek installs no descriptor.
    let n = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            head.as_mut_ptr().cast(),
            head.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return match Errno::last() {
            Errno::EAGAIN => None,
            _ => Some(crate::wire::Body::Inline),
        };
    }
    let kind = crate::wire::Header::parse(&head[..n as usize]).map(|h| h.body);
    Some(kind.unwrap_or(crate::wire::Body::Inline))
}

/// Bytes queued for reading (`SIOCINQ`): on a seqpacket socket, those of
/// every queued datagram, so an empty datagram adds nothing.
pub(crate) fn queued_bytes(socket: BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut value: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at
    // `value`, valid for writes for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut value) };
    if rc == 0 {
        Ok(value.max(0) as usize)
    } else {
        Err(Errno::last())
    }
}

/// Sets an integer socket option.
fn set_int_option(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> Result<(), Errno> {
    // SAFETY: `value` is a valid int for the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// `SO_PASSPIDFD` (Linux 6.5).
const SO_PASSPIDFD: libc::c_int = 76;

/// Asks the kernel to attach the sender's credentials (and, where it can,
/// a pidfd of the sender) to every datagram `socket` receives, or stops.
/// A kernel without `SO_PASSPIDFD` attaches credentials alone.
pub(crate) fn pass_sender(socket: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    set_int_option(socket, libc::SOL_SOCKET, libc::SO_PASSCRED, on.into())?;
    match set_int_option(socket, libc::SOL_SOCKET, SO_PASSPIDFD, on.into()) {
        Ok(()) | Err(Errno::ENOPROTOOPT | Errno::EINVAL) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Bounds how long a blocking send or `connect` on `socket` waits
/// (`SO_SNDTIMEO`; zero: no bound). A `connect` to a listener whose backlog
/// is full waits for room; past the bound it fails with `EAGAIN`.
pub(crate) fn set_send_timeout(
    socket: BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> Result<(), Errno> {
    let value = libc::timeval {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `value` is a valid timeval for the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&value as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Clears `O_NONBLOCK` on a socket this process alone holds.
pub(crate) fn set_blocking(socket: BorrowedFd<'_>) -> Result<(), Errno> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(socket, FcntlArg::F_GETFL)?);
    fcntl(
        socket,
        FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK)),
    )
    .map(drop)
}

/// Reads an integer socket option.
fn int_option(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> Result<libc::c_int, Errno> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` says how many
    // bytes `value` holds; the kernel writes at most that many.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(Errno::last())
    }
}

/// Bytes of datagrams this end sent that its peer has not received yet:
/// 0 once the peer has taken every one (or has closed its end, which drops
/// them). `SIOCOUTQ`, which Linux numbers as `TIOCOUTQ`.
pub(crate) fn unread_bytes(socket: BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut value: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which points at
    // `value`, valid for writes for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut value) };
    if rc == 0 {
        Ok(value.max(0) as usize)
    } else {
        Err(Errno::last())
    }
}

/// Whether `fd` is an `AF_UNIX` `SOCK_SEQPACKET` socket.
pub(crate) fn is_unix_seqpacket(fd: BorrowedFd<'_>) -> bool {
    int_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) == Ok(libc::AF_UNIX)
        && int_option(fd, libc::SOL_SOCKET, libc::SO_TYPE) == Ok(libc::SOCK_SEQPACKET)
}

/// Whether `fd` can be a channel end: a connected `AF_UNIX`
/// `SOCK_SEQPACKET` socket. A listening or an unconnected one fails every
/// receive at once (`ENOTCONN`), and would keep a `Select` waking.
pub(crate) fn is_channel_end(fd: BorrowedFd<'_>) -> bool {
    is_unix_seqpacket(fd)
        && int_option(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Ok(0)
        && nix::sys::socket::getpeername::<nix::sys::socket::UnixAddr>(fd.as_raw_fd()).is_ok()
}

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd of the peer process.
const SO_PEERPIDFD: libc::c_int = 77;

/// A pidfd of the process at the other end of `socket`, or `None` where the
/// kernel does not offer `SO_PEERPIDFD`.
pub(crate) fn peer_pidfd(socket: BorrowedFd<'_>) -> Result<Option<OwnedFd>, Errno> {
    match int_option(socket, libc::SOL_SOCKET, SO_PEERPIDFD) {
        // SAFETY: SO_PEERPIDFD installs a new close-on-exec pidfd in our
        // table and returns its number; nothing else owns it.
        Ok(fd) if fd >= 0 => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Ok(_) | Err(Errno::ENOPROTOOPT) | Err(Errno::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Owns a descriptor `accept4` just returned.
pub(crate) fn own_accepted(fd: RawFd) -> OwnedFd {
    // SAFETY: accept4 installed `fd` in our table for this call and returned
    // it to us alone.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Whether `fd` is an `AF_UNIX` socket.
pub(crate) fn is_unix_socket(fd: BorrowedFd<'_>) -> bool {
    int_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) == Ok(libc::AF_UNIX)
}

/// What ended a [`sleep_on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// The timeout passed.
    Timeout,
    /// The socket is readable or hung up, or a signal came: look again.
    Socket,
    /// One of the watched sockets hung up (or failed).
    Watched,
}

/// The most sockets a [`sleep_on`] watches besides the one it sleeps on.
pub(crate) const WATCHED_MAX: usize = 32;

/// Sleeps until `socket` is readable (or hung up), or one of `watched`
/// hangs up, at most `timeout` milliseconds (`-1`: no end). A sleep in
/// `poll`, unlike one in `recvmsg`, ends for every thread that sleeps on
/// the socket when a datagram comes, not for one of them.
///
/// `watched` holds descriptor numbers that the caller's lock no longer
/// keeps open: one closed meanwhile reads as hung up (`POLLNVAL`), one
/// reused names another file, and either only ends the sleep early.
pub(crate) fn sleep_on(
    socket: BorrowedFd<'_>,
    watched: &[RawFd],
    timeout: libc::c_int,
) -> Result<Woke, Errno> {
    let empty = libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    };
    let mut fds = [empty; 1 + WATCHED_MAX];
    fds[0] = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let watched = &watched[..watched.len().min(WATCHED_MAX)];
    for (slot, &fd) in fds[1..].iter_mut().zip(watched) {
        // No events asked: hang-up and errors are reported regardless.
        slot.fd = fd;
    }
    let n = 1 + watched.len();
    // SAFETY: `fds` holds `n` initialized pollfds, writable for the call;
    // poll reads the numbers and writes `revents`, acting on no file.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout) };
    if rc < 0 {
        return match Errno::last() {
            Errno::EINTR => Ok(Woke::Socket),
            e => Err(e),
        };
    }
    if rc == 0 {
        return Ok(Woke::Timeout);
    }
    if fds[0].revents != 0 {
        return Ok(Woke::Socket);
    }
    Ok(Woke::Watched)
}

/// The inode of a socket, or `None` where `fstat` fails.
pub(crate) fn inode(socket: BorrowedFd<'_>) -> Option<u64> {
    nix::sys::stat::fstat(socket).ok().map(|stat| stat.st_ino)
}

/// The inode of the socket at the other end of the `AF_UNIX` socket
/// `socket`, as the kernel's socket diagnostics (`sock_diag`, what `ss`
/// reads) tell it; `None` where they will not.
pub(crate) fn peer_inode(socket: BorrowedFd<'_>) -> Option<u64> {
    use nix::sys::socket::{
        recv, sendto, socket as open, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const UDIAG_SHOW_PEER: u32 = 0x4;
    const UNIX_DIAG_PEER: u16 = 2;
    const NLMSG_HDR: usize = 16;
    const DIAG_MSG: usize = 16;

    let ino = u32::try_from(inode(socket)?).ok()?;
    let diag: OwnedFd = open(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    // struct nlmsghdr, then struct unix_diag_req.
    let mut request = Vec::with_capacity(40);
    request.extend(40u32.to_ne_bytes());
    request.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend(NLM_F_REQUEST.to_ne_bytes());
    request.extend([0u8; 8]); // sequence, port
    request.extend([libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, pad
    request.extend(u32::MAX.to_ne_bytes()); // every state
    request.extend(ino.to_ne_bytes());
    request.extend(UDIAG_SHOW_PEER.to_ne_bytes());
    request.extend([0xffu8; 8]); // no cookie
    sendto(
        diag.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut reply = [0u8; 512];
    let n = recv(diag.as_raw_fd(), &mut reply, MsgFlags::empty()).ok()?;
    let reply = &reply[..n];
    let u16_at = |at: usize| Some(u16::from_ne_bytes(reply.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(reply.get(at..at + 4)?.try_into().ok()?));
    if u16_at(4)? != SOCK_DIAG_BY_FAMILY || u32_at(NLMSG_HDR + 4)? != ino {
        return None;
    }
    let end = (u32_at(0)? as usize).min(reply.len());
    let mut at = NLMSG_HDR + DIAG_MSG;
    while at + 4 <= end {
        let len = usize::from(u16_at(at)?);
        if len < 4 {
            return None;
        }
        if u16_at(at + 2)? == UNIX_DIAG_PEER {
            return u32_at(at + 4).map(u64::from);
        }
        at += len.next_multiple_of(4);
    }
    None
}
