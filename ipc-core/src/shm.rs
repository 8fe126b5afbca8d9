//! Memory shared between processes: `SharedMemory`, read-write on both
//! sides, and `SealedMemory`, which nobody can change any more.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bytemuck::Pod;
use nix::fcntl::SealFlag;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::atomic::SharedAtomic;
use crate::error::{Error, Result};
use crate::fd::{deserialize_fd, serialize_fd};
use crate::sealing::{self, SIZE_SEALS};
use crate::sidecar;
use crate::sys::mmap::{ReadMap, WriteMap};

/// Seals a `SealedMemory` must carry: no writes, no resizing.
const SEALED: SealFlag = SIZE_SEALS.union(SealFlag::F_SEAL_WRITE);

/// A region of memory shared read-write between processes, on a memfd.
///
/// Send it inside a message and the receiver maps the same pages: what one
/// side writes the other sees. Its size is sealed, so no process can shrink
/// it under another's mapping; on receipt the seals and the size are checked
/// before anything is mapped.
///
/// The bytes may change under a reader whenever another process writes:
/// coordinate through [`atomics`](SharedMemory::atomics) or messages, and
/// [`seal`](SharedMemory::seal) what a receiver must be able to trust.
///
/// # Examples
///
/// ```
/// use ipc_core::{channel, SharedMemory};
///
/// let mut region = SharedMemory::new(4096)?;
/// let mine = region.try_clone()?;
/// let (tx, rx) = channel::<SharedMemory>()?;
/// tx.send(region)?;
///
/// let mut theirs = rx.recv()?; // usually in another process
/// theirs[..5].copy_from_slice(b"hello");
/// assert_eq!(&mine[..5], b"hello");
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct SharedMemory {
    map: WriteMap,
    fd: OwnedFd,
}

impl SharedMemory {
    /// Creates a zeroed region of `len` bytes: a close-on-exec memfd (never
    /// executable where the kernel has `MFD_NOEXEC_SEAL`), sealed against
    /// growing and shrinking, mapped read-write.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the memfd cannot be created, sized or mapped (out
    /// of memory, out of descriptors).
    ///
    /// # Examples
    ///
    /// ```
    /// let region = ipc_core::SharedMemory::new(100)?;
    /// assert_eq!(region.len(), 100);
    /// assert!(region.iter().all(|&b| b == 0));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn new(len: usize) -> Result<Self> {
        let fd = sealing::create(c"ipc-core-shared", len as u64)?;
        sealing::seal(fd.as_fd(), SIZE_SEALS)?;
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self> {
        let map = WriteMap::new(fd.as_fd(), len).map_err(|e| Error::io("mmap", e))?;
        Ok(SharedMemory { map, fd })
    }

    /// The size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ipc_core::SharedMemory::new(8)?.len(), 8);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.map.bytes().len()
    }

    /// Whether the region is zero bytes long.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(ipc_core::SharedMemory::new(0)?.is_empty());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A second handle to the same pages: keep one, send one.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the descriptor cannot be duplicated or mapped.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut a = ipc_core::SharedMemory::new(16)?;
    /// let b = a.try_clone()?;
    /// a[0] = 42;
    /// assert_eq!(b[0], 42);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|source| Error::Io { op: "dup", source })?;
        Self::map(fd, self.len())
    }

    /// Seals the region against writing, resizing and further sealing, and
    /// maps it read-only: from now on nobody can change the bytes.
    ///
    /// # Errors
    ///
    /// A [`SealError`] that hands the region back, writable as it was,
    /// when it cannot be sealed: `EBUSY` while another handle, here or in
    /// another process, still maps it writable (drop every other
    /// `SharedMemory` of it, then seal again).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut region = ipc_core::SharedMemory::new(4)?;
    /// region.copy_from_slice(b"snap");
    /// let other = region.try_clone()?;
    /// // Another handle maps it writable: refused, and handed back.
    /// let region = region.seal().unwrap_err().into_inner().unwrap();
    /// drop(other);
    /// let sealed = region.seal()?;
    /// assert_eq!(&sealed[..], b"snap");
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn seal(self) -> Result<SealedMemory, SealError> {
        let SharedMemory { map, fd } = self;
        let len = map.bytes().len();
        // The write seal is refused while a writable mapping exists.
        drop(map);
        match sealing::seal(fd.as_fd(), sealing::ALL_SEALS) {
            Ok(()) => SealedMemory::map(fd, len).map_err(|error| SealError {
                region: None,
                error,
            }),
            Err(error) => {
                // Mapped again and handed back; only a failed mapping (out
                // of memory) loses it.
                let error = match error {
                    Error::Io { source, .. } if source.raw_os_error() == Some(nix::libc::EBUSY) => {
                        Error::Busy(
                            "the region cannot be sealed while another handle maps it writable \
                             (a SharedMemory of it here or in another process): drop every other \
                             handle, then seal again"
                                .into(),
                        )
                    }
                    other => other,
                };
                match SharedMemory::map(fd, len) {
                    Ok(region) => Err(SealError {
                        region: Some(region),
                        error,
                    }),
                    Err(_) => Err(SealError {
                        region: None,
                        error,
                    }),
                }
            }
        }
    }

    /// The region as a slice of plain-old-data values.
    ///
    /// # Errors
    ///
    /// [`Error::Layout`] when the length is not a whole number of `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// let region = ipc_core::SharedMemory::new(16)?;
    /// let words: &[u32] = region.as_slice_of()?;
    /// assert_eq!(words, [0; 4]);
    /// assert!(region.as_slice_of::<[u8; 3]>().is_err());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn as_slice_of<T: Pod>(&self) -> Result<&[T]> {
        bytemuck::try_cast_slice(self.map.bytes()).map_err(|e| layout::<T>(self.len(), e))
    }

    /// The region as a mutable slice of plain-old-data values.
    ///
    /// # Errors
    ///
    /// [`Error::Layout`] when the length is not a whole number of `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut region = ipc_core::SharedMemory::new(16)?;
    /// region.as_mut_slice_of::<u64>()?[1] = 7;
    /// assert_eq!(region[8], 7);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn as_mut_slice_of<T: Pod>(&mut self) -> Result<&mut [T]> {
        let len = self.len();
        bytemuck::try_cast_slice_mut(self.map.bytes_mut()).map_err(|e| layout::<T>(len, e))
    }

    /// The region as a slice of atomics, for counters and flags that several
    /// processes update at once.
    ///
    /// # Errors
    ///
    /// [`Error::Layout`] when the length is not a whole number of `A`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// let region = ipc_core::SharedMemory::new(8)?;
    /// let other = region.try_clone()?;
    /// region.atomics::<AtomicU32>()?[1].store(5, Ordering::Release);
    /// assert_eq!(other.atomics::<AtomicU32>()?[1].load(Ordering::Acquire), 5);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn atomics<A: SharedAtomic>(&self) -> Result<&[A]> {
        self.map.atomics().ok_or_else(|| {
            Error::Layout(format!(
                "a region of {} bytes is not a whole number of {} ({} bytes each); size it as a multiple",
                self.len(),
                std::any::type_name::<A>(),
                std::mem::size_of::<A>()
            ))
        })
    }
}

fn layout<T>(len: usize, e: bytemuck::PodCastError) -> Error {
    use bytemuck::PodCastError;
    let why = match e {
        PodCastError::OutputSliceWouldHaveSlop | PodCastError::SizeMismatch => {
            "its length is not a whole number of them"
        }
        PodCastError::TargetAlignmentGreaterAndInputNotAligned
        | PodCastError::AlignmentMismatch => "it does not start at a multiple of their alignment",
    };
    Error::Layout(format!(
        "a region of {len} bytes cannot be seen as [{}] ({} bytes each, align {}): {why}; size it as a multiple",
        std::any::type_name::<T>(),
        std::mem::size_of::<T>(),
        std::mem::align_of::<T>()
    ))
}

/// A [`SharedMemory::seal`] that failed: the region back, and why.
///
/// `Debug` shows the error; the region is still the caller's, writable, to
/// seal again once the cause is gone.
///
/// # Examples
///
/// ```
/// let region = ipc_core::SharedMemory::new(8)?;
/// let _other = region.try_clone()?;
/// let failed = region.seal().unwrap_err();
/// assert!(matches!(failed.error(), ipc_core::Error::Busy(_)));
/// let region = failed.into_inner().expect("handed back");
/// assert_eq!(region.len(), 8);
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct SealError {
    region: Option<SharedMemory>,
    error: Error,
}

impl SealError {
    /// Why the region could not be sealed.
    ///
    /// # Examples
    ///
    /// ```
    /// let region = ipc_core::SharedMemory::new(8)?;
    /// let _other = region.try_clone()?;
    /// let failed = region.seal().unwrap_err();
    /// assert!(failed.error().to_string().contains("drop every other handle"));
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The region, writable as it was; `None` only when it could not be
    /// mapped again (out of memory), and is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// let region = ipc_core::SharedMemory::new(8)?;
    /// let other = region.try_clone()?;
    /// let region = region.seal().unwrap_err().into_inner().unwrap();
    /// drop(other);
    /// assert!(region.seal().is_ok());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn into_inner(self) -> Option<SharedMemory> {
        self.region
    }
}

impl fmt::Debug for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealError")
            .field("error", &self.error)
            .field("handed_back", &self.region.is_some())
            .finish()
    }
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the region was not sealed: {}", self.error)
    }
}

impl std::error::Error for SealError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SealError> for Error {
    fn from(e: SealError) -> Self {
        e.error
    }
}

impl Deref for SharedMemory {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.bytes()
    }
}

impl DerefMut for SharedMemory {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.map.bytes_mut()
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("fd", &self.fd)
            .field("len", &self.len())
            .finish()
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.fd.as_fd(), serializer)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fd = deserialize_fd(deserializer)?;
        let (fd, len) = checked_len(fd, SIZE_SEALS, "a SharedMemory").map_err(de::Error::custom)?;
        SharedMemory::map(fd, len).map_err(|e| {
            de::Error::custom(sidecar::reject(format!(
                "a SharedMemory could not be mapped writable ({e}); a write-sealed region travels as SealedMemory"
            )))
        })
    }
}

/// A received memfd and its size after checking its seals, or the
/// refusal (the descriptor closed; see [`sidecar::refuse`]).
fn checked_len(fd: OwnedFd, seals: SealFlag, what: &str) -> Result<(OwnedFd, usize), String> {
    let size = match sealing::check(&fd, seals, what) {
        Ok(size) => size,
        Err(why) => return Err(sidecar::refuse(fd, why)),
    };
    match usize::try_from(size) {
        Ok(len) => Ok((fd, len)),
        Err(_) => Err(sidecar::refuse(
            fd,
            format!("{what} of {size} bytes does not fit the address space"),
        )),
    }
}

/// A region of memory nobody can change: sealed against writes, growing and
/// shrinking, mapped read-only.
///
/// On receipt the seals and the size are checked before the region is
/// mapped, and a memfd that is not sealed is refused, so the receiver can
/// trust the bytes not to change under it.
///
/// # Examples
///
/// ```
/// use ipc_core::{channel, SealedMemory};
///
/// let snapshot = SealedMemory::new(b"version 1")?;
/// let (tx, rx) = channel::<SealedMemory>()?;
/// tx.send(snapshot)?;
/// assert_eq!(&rx.recv()?[..], b"version 1");
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub struct SealedMemory {
    map: ReadMap,
    fd: OwnedFd,
}

impl SealedMemory {
    /// A sealed region holding a copy of `bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the memfd cannot be created, mapped or sealed.
    ///
    /// # Examples
    ///
    /// ```
    /// let sealed = ipc_core::SealedMemory::new(&[1, 2, 3])?;
    /// assert_eq!(&sealed[..], [1, 2, 3]);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn new(bytes: &[u8]) -> Result<Self> {
        let mut region = SharedMemory::new(bytes.len())?;
        region.copy_from_slice(bytes);
        Ok(region.seal()?)
    }

    /// A sealed region holding a copy of `values`, in this host's layout:
    /// a table of numbers or of `Pod` records in one call, to read back
    /// with [`as_slice_of`](SealedMemory::as_slice_of).
    ///
    /// # Errors
    ///
    /// As [`new`](SealedMemory::new).
    ///
    /// # Examples
    ///
    /// ```
    /// let weights: Vec<f32> = vec![0.5, 1.5, 2.5];
    /// let sealed = ipc_core::SealedMemory::from_slice(&weights)?;
    /// assert_eq!(sealed.as_slice_of::<f32>()?, [0.5, 1.5, 2.5]);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn from_slice<T: Pod>(values: &[T]) -> Result<Self> {
        Self::new(bytemuck::cast_slice(values))
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Self> {
        let map = ReadMap::new(fd.as_fd(), len).map_err(|e| Error::io("mmap", e))?;
        Ok(SealedMemory { map, fd })
    }

    /// The size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(ipc_core::SealedMemory::new(b"abc")?.len(), 3);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.map.bytes().len()
    }

    /// Whether the region is zero bytes long.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(ipc_core::SealedMemory::new(b"")?.is_empty());
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A second handle to the same pages.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the descriptor cannot be duplicated or mapped.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = ipc_core::SealedMemory::new(b"same")?;
    /// assert_eq!(&a.try_clone()?[..], b"same");
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|source| Error::Io { op: "dup", source })?;
        Self::map(fd, self.len())
    }

    /// The region as a slice of plain-old-data values.
    ///
    /// # Errors
    ///
    /// [`Error::Layout`] when the length is not a whole number of `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// let sealed = ipc_core::SealedMemory::new(&[1, 0, 2, 0])?;
    /// assert_eq!(sealed.as_slice_of::<u16>()?, [1, 2]);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn as_slice_of<T: Pod>(&self) -> Result<&[T]> {
        bytemuck::try_cast_slice(self.map.bytes()).map_err(|e| layout::<T>(self.len(), e))
    }
}

impl Deref for SealedMemory {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.bytes()
    }
}

/// Two regions are equal when they hold the same bytes.
///
/// # Examples
///
/// ```
/// use ipc_core::SealedMemory;
/// assert_eq!(SealedMemory::new(b"abc")?, SealedMemory::new(b"abc")?);
/// assert_ne!(SealedMemory::new(b"abc")?, SealedMemory::new(b"abd")?);
/// # Ok::<(), ipc_core::Error>(())
/// ```
impl PartialEq for SealedMemory {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl Eq for SealedMemory {}

impl AsFd for SealedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Debug for SealedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedMemory")
            .field("fd", &self.fd)
            .field("len", &self.len())
            .finish()
    }
}

impl Serialize for SealedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.fd.as_fd(), serializer)
    }
}

impl<'de> Deserialize<'de> for SealedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fd = deserialize_fd(deserializer)?;
        let (fd, len) = checked_len(fd, SEALED, "a SealedMemory").map_err(de::Error::custom)?;
        SealedMemory::map(fd, len).map_err(|e| {
            de::Error::custom(sidecar::reject(format!(
                "a SealedMemory could not be mapped: {e}"
            )))
        })
    }
}
