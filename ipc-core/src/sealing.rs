//! Memfds: creating them sealable, sealing them, and checking a received
//! one's seals and size before anything maps it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::fstat;

use crate::error::Error;

/// `MFD_NOEXEC_SEAL` (Linux 6.3): the memfd can never be made executable.
const MFD_NOEXEC_SEAL: MFdFlags = MFdFlags::from_bits_retain(0x0008);

/// Seals that fix a memfd's size.
pub(crate) const SIZE_SEALS: SealFlag = SealFlag::F_SEAL_GROW.union(SealFlag::F_SEAL_SHRINK);

/// Seals that fix a memfd's size and contents, and the seals themselves.
pub(crate) const ALL_SEALS: SealFlag = SIZE_SEALS
    .union(SealFlag::F_SEAL_WRITE)
    .union(SealFlag::F_SEAL_SEAL);

/// Creates a close-on-exec, sealable memfd of `len` bytes, never executable
/// where the kernel offers `MFD_NOEXEC_SEAL`.
pub(crate) fn create(name: &std::ffi::CStr, len: u64) -> Result<OwnedFd, Error> {
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let fd = match memfd_create(name, flags | MFD_NOEXEC_SEAL) {
        Err(Errno::EINVAL) => memfd_create(name, flags),
        other => other,
    }
    .map_err(|e| Error::io("memfd_create", e))?;
    nix::unistd::ftruncate(&fd, len as i64).map_err(|e| Error::io("ftruncate", e))?;
    Ok(fd)
}

/// Adds `seals` to a memfd.
pub(crate) fn seal(fd: BorrowedFd<'_>, seals: SealFlag) -> Result<(), Error> {
    fcntl(fd, FcntlArg::F_ADD_SEALS(seals))
        .map(drop)
        .map_err(|e| Error::io("fcntl(F_ADD_SEALS)", e))
}

/// Checks that `fd` is a memfd carrying at least the seals `required` and
/// returns its size. The message says what is wrong, for `Error::Descriptor`.
///
/// A memfd is a file of the kernel's internal tmpfs mount, which every
/// memfd of this process shares: its device is that of one made here. A
/// file of a mounted tmpfs (`/dev/shm`) is not one, nor is a memfd made with
/// `MFD_HUGETLB`, which lives on hugetlbfs: its pages come from a pool a
/// peer can drain, and a hole punched in it makes a reader die of SIGBUS
/// whatever the seals say.
pub(crate) fn check(fd: impl AsFd, required: SealFlag, what: &str) -> Result<u64, String> {
    let fd = fd.as_fd();
    let seals = match fcntl(fd, FcntlArg::F_GET_SEALS) {
        Ok(bits) => SealFlag::from_bits_retain(bits),
        Err(_) => {
            return Err(format!(
                "{what} is not a memfd; the peer must send memory made by this crate"
            ))
        }
    };
    let stat = fstat(fd).map_err(|e| format!("fstat on {what} failed: {e}"))?;
    if Some(stat.st_dev) != memfd_device() {
        return Err(not_a_memfd(fd, what));
    }
    if !seals.contains(required) {
        return Err(format!(
            "{what} lacks the seals {:?}; the peer could change it under this process",
            required.difference(seals)
        ));
    }
    Ok(stat.st_size as u64)
}

/// The device of memfds, learned from one made once per process; `None`
/// while none could be made (out of descriptors): every check fails then.
fn memfd_device() -> Option<nix::libc::dev_t> {
    static DEVICE: std::sync::OnceLock<nix::libc::dev_t> = std::sync::OnceLock::new();
    if let Some(device) = DEVICE.get() {
        return Some(*device);
    }
    let probe = memfd_create(c"ipc-core-probe", MFdFlags::MFD_CLOEXEC).ok()?;
    let device = fstat(&probe).ok()?.st_dev;
    Some(*DEVICE.get_or_init(|| device))
}

/// Makes the device of memfds known now, if it is not yet.
pub(crate) fn learn_memfd_device() {
    let _ = memfd_device();
}

/// Why a sealable file that is no memfd of ours was refused.
#[cold]
fn not_a_memfd(fd: BorrowedFd<'_>, what: &str) -> String {
    let hugetlb = nix::sys::statfs::fstatfs(fd)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC);
    if hugetlb {
        format!(
            "{what} is a hugetlbfs memfd (MFD_HUGETLB), whose pages a peer can take away \
             under a reader (SIGBUS); send memory made by this crate"
        )
    } else {
        format!(
            "{what} is a file of a mounted file system (or this process could not make a \
             memfd to compare it with), not a memfd; the peer must send memory made by this crate"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_memfd_takes_seals_and_passes_the_check() {
        let fd = create(c"test", 4096).unwrap();
        assert!(check(&fd, SIZE_SEALS, "region")
            .unwrap_err()
            .contains("lacks the seals"));
        seal(fd.as_fd(), SIZE_SEALS).unwrap();
        assert_eq!(check(&fd, SIZE_SEALS, "region"), Ok(4096));
        assert!(check(&fd, ALL_SEALS, "region").is_err());
        seal(fd.as_fd(), ALL_SEALS).unwrap();
        assert_eq!(check(&fd, ALL_SEALS, "region"), Ok(4096));
    }

    #[test]
    fn a_plain_file_is_not_a_memfd() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(check(&file, SIZE_SEALS, "region")
            .unwrap_err()
            .contains("not a memfd"));
    }
}
