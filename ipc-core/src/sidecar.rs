//! The descriptor sidecar: while a message is encoded, every descriptor met
//! at any depth is collected and written as its index; while it is decoded,
//! every index is taken back exactly once.
//!
//! The context is a scoped thread-local. A scope swaps its own state in and
//! the enclosing one out, and a guard swaps them back on every exit, a panic
//! included, so scopes nest and nothing is left behind for the next message.
//! A descriptor serialized or deserialized with no scope active (into JSON,
//! say) is an error, never a bare number.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Said when a descriptor type is serialized outside of a send.
pub(crate) const OUTSIDE_ENCODE: &str =
    "a descriptor can only be serialized by an ipc_core send; other serializers cannot carry it";
/// Said when a descriptor type is deserialized outside of a receive.
pub(crate) const OUTSIDE_DECODE: &str =
    "a descriptor can only be deserialized by an ipc_core receive; other deserializers cannot carry it";

/// What went wrong with the descriptors of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The body named an index past the end of the sidecar.
    OutOfRange { index: u32, count: usize },
    /// The body named the same index twice.
    Reused { index: u32 },
    /// A descriptor nothing in the body named.
    Unreferenced { index: usize },
    /// A descriptor of the wrong kind, or a memfd whose seals or size are wrong.
    Rejected(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::OutOfRange { index, count } => write!(
                f,
                "the body names descriptor {index} but the message carries {count}"
            ),
            Fault::Reused { index } => write!(f, "the body names descriptor {index} twice"),
            Fault::Unreferenced { index } => write!(
                f,
                "descriptor {index} came with the message but nothing in the body names it"
            ),
            Fault::Rejected(why) => f.write_str(why),
        }
    }
}

#[derive(Default)]
struct DecodeScope {
    slots: Vec<Option<OwnedFd>>,
    fault: Option<Fault>,
}

thread_local! {
    /// Where the innermost encode scope's descriptors start in
    /// `ENCODED`, or `None` outside any encode scope. Entering and leaving
    /// a scope that meets no descriptor (most messages) touches only this
    /// and `ENCODED_LEN`: two `Cell`s.
    static ENCODE_BASE: Cell<Option<usize>> = const { Cell::new(None) };
    /// The length of `ENCODED`, kept beside it so that a scope can tell
    /// whether it pushed anything without borrowing the vector.
    static ENCODED_LEN: Cell<usize> = const { Cell::new(0) };
    /// Descriptors of every open encode scope, outermost first; each scope
    /// takes its own off the end when it closes. Its capacity stays, so
    /// steady-state sends do not allocate.
    static ENCODED: RefCell<Vec<RawFd>> = const { RefCell::new(Vec::new()) };
    static DECODE: RefCell<Option<DecodeScope>> = const { RefCell::new(None) };
    /// `Some` while the innermost decode scope is one for a message that
    /// came with no descriptors: all it can record is the first index the
    /// body named. Most messages carry none, and this scope is a plain
    /// `Cell` to swap, where a full one moves a vector in and out.
    static EMPTY: Cell<Option<Option<u32>>> = const { Cell::new(None) };
}

/// Runs `encode` with a fresh encode scope. Descriptors it serializes are
/// put in `fds` (cleared first) as raw numbers borrowed from the message,
/// which the caller keeps alive until the datagram is sent.
///
/// A caller that reuses one vector allocates only when a message holds more
/// descriptors than ever before.
pub(crate) fn collect<R>(fds: &mut Vec<RawFd>, encode: impl FnOnce() -> R) -> R {
    struct Restore<'a> {
        base: usize,
        outer: Option<usize>,
        fds: &'a mut Vec<RawFd>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            ENCODE_BASE.set(self.outer);
            if ENCODED_LEN.get() > self.base {
                ENCODED.with(|encoded| {
                    let mut encoded = encoded.borrow_mut();
                    self.fds.extend_from_slice(&encoded[self.base..]);
                    encoded.truncate(self.base);
                });
                ENCODED_LEN.set(self.base);
            }
        }
    }

    fds.clear();
    // Outside every scope nothing is pending, so a scope's descriptors
    // start where its enclosing scopes' end.
    let base = ENCODED_LEN.get();
    let outer = ENCODE_BASE.replace(Some(base));
    let _restore = Restore { base, outer, fds };
    encode()
}

/// Called by a descriptor's `Serialize`: records `fd`, returns its index.
pub(crate) fn push(fd: BorrowedFd<'_>) -> Result<u32, &'static str> {
    let base = ENCODE_BASE.get().ok_or(OUTSIDE_ENCODE)?;
    ENCODED.with(|encoded| {
        let mut encoded = encoded.borrow_mut();
        encoded.push(fd.as_raw_fd());
        ENCODED_LEN.set(encoded.len());
        Ok((encoded.len() - 1 - base) as u32)
    })
}

/// Why a decode under [`restore`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure<E> {
    /// A descriptor was out of range, reused, unreferenced or refused.
    Fault(Fault),
    /// The decode itself failed.
    Decode(E),
}

/// Runs `decode` with the received descriptors available by index.
///
/// Every slot must be taken exactly once. A fault recorded while decoding
/// wins over the decode's own error (which is then only its echo); an
/// unreferenced descriptor is checked after a decode that succeeded.
/// Whatever is left in the slots is closed, on every path, a panic included;
/// `slots` comes back empty, its capacity kept.
#[inline]
pub(crate) fn restore<T, E>(
    slots: &mut Vec<Option<OwnedFd>>,
    decode: impl FnOnce() -> Result<T, E>,
) -> Result<T, Failure<E>> {
    struct Restore<'a> {
        outer: Option<DecodeScope>,
        outer_empty: Option<Option<u32>>,
        slots: &'a mut Vec<Option<OwnedFd>>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let ours = DECODE.with(|s| s.replace(self.outer.take()));
            EMPTY.set(self.outer_empty);
            if let Some(mut ours) = ours {
                // Closes what was not taken.
                crate::disposal::discard_all(ours.slots.drain(..).flatten());
                *self.slots = ours.slots;
            }
        }
    }

    if slots.is_empty() {
        return restore_empty(decode);
    }
    let scope = DecodeScope {
        slots: std::mem::take(slots),
        fault: None,
    };
    let outer = DECODE.with(|s| s.replace(Some(scope)));
    // This scope is the innermost now, not an empty one around it.
    let outer_empty = EMPTY.replace(None);
    let _restore = Restore {
        outer,
        outer_empty,
        slots,
    };
    let result = decode();
    DECODE.with(|s| {
        let mut state = s.borrow_mut();
        let Some(scope) = state.as_mut() else {
            unreachable!("our scope is set until `_restore` drops")
        };
        if let Some(fault) = scope.fault.take() {
            return Err(Failure::Fault(fault));
        }
        let value = result.map_err(Failure::Decode)?;
        match scope.slots.iter().position(Option::is_some) {
            Some(index) => Err(Failure::Fault(Fault::Unreferenced { index })),
            None => Ok(value),
        }
    })
}

/// [`restore`] for a message with no descriptors.
#[inline]
fn restore_empty<T, E>(decode: impl FnOnce() -> Result<T, E>) -> Result<T, Failure<E>> {
    struct Restore(Option<Option<u32>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            EMPTY.set(self.0);
        }
    }

    let restore = Restore(EMPTY.replace(Some(None)));
    let result = decode();
    let named = EMPTY.get().flatten();
    drop(restore);
    match named {
        Some(index) => Err(Failure::Fault(Fault::OutOfRange { index, count: 0 })),
        None => result.map_err(Failure::Decode),
    }
}

/// Called by a descriptor's `Deserialize`: takes the descriptor at `index`.
///
/// A fault is also recorded in the scope, because serde's error types do not
/// all keep a custom message (postcard's does not); `restore` reports it.
pub(crate) fn take(index: u32) -> Result<OwnedFd, String> {
    if let Some(named) = EMPTY.get() {
        EMPTY.set(Some(named.or(Some(index))));
        return Err(Fault::OutOfRange { index, count: 0 }.to_string());
    }
    DECODE.with(|s| match s.borrow_mut().as_mut() {
        Some(scope) => {
            let count = scope.slots.len();
            let fault = match scope.slots.get_mut(index as usize) {
                None => Fault::OutOfRange { index, count },
                Some(slot) => match slot.take() {
                    Some(fd) => return Ok(fd),
                    None => Fault::Reused { index },
                },
            };
            let message = fault.to_string();
            scope.fault.get_or_insert(fault);
            Err(message)
        }
        None => Err(OUTSIDE_DECODE.to_string()),
    })
}

/// Records that descriptor `fd` was taken but refused (wrong kind, bad
/// seals), closes it where the peer cannot make the close wait (see
/// [`disposal`](crate::disposal)), and returns the message for serde's
/// error.
pub(crate) fn refuse(fd: OwnedFd, why: String) -> String {
    crate::disposal::discard(fd);
    reject(why)
}

/// Records that a descriptor was taken but refused (wrong kind, bad seals)
/// and returns the message for serde's error. The caller closes it: it is
/// one checked to be a memfd, or [`refuse`] closes it.
pub(crate) fn reject(why: String) -> String {
    if EMPTY.get().is_some() {
        // Nothing was taken in an empty scope, so nothing can be refused.
        return why;
    }
    DECODE.with(|s| {
        if let Some(scope) = s.borrow_mut().as_mut() {
            scope.fault.get_or_insert(Fault::Rejected(why.clone()));
        }
    });
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn files(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()))
            .collect()
    }

    #[test]
    fn collect_gives_indices_in_order_and_nests() {
        let a = files(3);
        let mut outer_fds = Vec::new();
        let mut inner_fds = Vec::new();
        collect(&mut outer_fds, || {
            assert_eq!(push(a[0].as_fd()), Ok(0));
            collect(&mut inner_fds, || {
                assert_eq!(push(a[1].as_fd()), Ok(0));
            });
            assert_eq!(push(a[2].as_fd()), Ok(1));
        });
        assert_eq!(outer_fds, vec![a[0].as_raw_fd(), a[2].as_raw_fd()]);
        assert_eq!(inner_fds, vec![a[1].as_raw_fd()]);
        assert_eq!(push(a[0].as_fd()), Err(OUTSIDE_ENCODE));
    }

    #[test]
    fn collect_leaves_no_state_after_a_panic() {
        let a = files(1);
        let mut fds = Vec::new();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            collect(&mut fds, || {
                push(a[0].as_fd()).unwrap();
                panic!("serializer blew up");
            })
        }));
        assert!(caught.is_err());
        assert_eq!(push(a[0].as_fd()), Err(OUTSIDE_ENCODE));
        // The next scope starts empty: nothing of the failed one rides along.
        collect(&mut fds, || {});
        assert!(fds.is_empty());
    }

    #[test]
    fn restore_takes_each_index_once() {
        let mut slots: Vec<_> = files(2).into_iter().map(Some).collect();
        let got = restore(&mut slots, || {
            Ok::<_, ()>((take(1).is_ok(), take(0).is_ok()))
        });
        assert_eq!(got, Ok((true, true)));
        assert!(slots.is_empty());
    }

    #[test]
    fn restore_reports_reuse_range_and_unreferenced() {
        let mut slots: Vec<_> = files(2).into_iter().map(Some).collect();
        let got = restore(&mut slots, || {
            let _a = take(0).unwrap();
            take(0).map(drop)
        });
        assert_eq!(got, Err(Failure::Fault(Fault::Reused { index: 0 })));
        assert!(slots.is_empty(), "descriptor 1 was closed");

        let mut slots: Vec<_> = files(1).into_iter().map(Some).collect();
        let got = restore(&mut slots, || take(5).map(drop));
        assert_eq!(
            got,
            Err(Failure::Fault(Fault::OutOfRange { index: 5, count: 1 }))
        );

        let mut slots: Vec<_> = files(2).into_iter().map(Some).collect();
        let got = restore(&mut slots, || take(0).map(drop));
        assert_eq!(got, Err(Failure::Fault(Fault::Unreferenced { index: 1 })));

        // A failed decode is reported as such, not as the descriptors it left.
        let mut slots: Vec<_> = files(2).into_iter().map(Some).collect();
        let got = restore(&mut slots, || Err::<(), _>("bad bytes"));
        assert_eq!(got, Err(Failure::Decode("bad bytes")));
        assert!(slots.is_empty());

        assert_eq!(take(0).unwrap_err(), OUTSIDE_DECODE);
    }

    #[test]
    fn a_message_without_descriptors_that_names_one_is_a_fault() {
        let mut slots = Vec::new();
        let got = restore(&mut slots, || take(3).map(drop));
        assert_eq!(
            got,
            Err(Failure::Fault(Fault::OutOfRange { index: 3, count: 0 }))
        );
        let got = restore(&mut slots, || Ok::<_, ()>(7));
        assert_eq!(got, Ok(7), "the fault stayed with its scope");
        assert_eq!(take(0).unwrap_err(), OUTSIDE_DECODE);
    }

    #[test]
    fn empty_and_full_scopes_nest_either_way() {
        let mut outer: Vec<_> = files(1).into_iter().map(Some).collect();
        let got = restore(&mut outer, || {
            let inner = restore(&mut Vec::new(), || take(0).map(drop));
            assert_eq!(
                inner,
                Err(Failure::Fault(Fault::OutOfRange { index: 0, count: 0 }))
            );
            // The outer scope's descriptor is still there for the outer body.
            take(0).map(drop)
        });
        assert_eq!(got, Ok(()));

        let got = restore(&mut Vec::new(), || {
            let mut inner: Vec<_> = files(1).into_iter().map(Some).collect();
            let taken = restore(&mut inner, || take(0).map(drop));
            assert_eq!(taken, Ok(()));
            take(1).map(drop)
        });
        assert_eq!(
            got,
            Err(Failure::Fault(Fault::OutOfRange { index: 1, count: 0 }))
        );
        assert_eq!(take(0).unwrap_err(), OUTSIDE_DECODE);
    }

    #[test]
    fn restore_closes_everything_after_a_panic() {
        let mut slots: Vec<_> = files(2).into_iter().map(Some).collect();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            restore(&mut slots, || -> Result<(), ()> {
                panic!("deserializer blew up")
            })
        }));
        assert!(caught.is_err());
        assert!(slots.is_empty());
        assert_eq!(take(0).unwrap_err(), OUTSIDE_DECODE);
    }
}
