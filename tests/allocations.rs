//! Heap allocations on the message path, counted by a global allocator:
//! none per send in steady state, none per receive beyond the message's own
//! fields. Counted per thread, so the test harness's own allocations on other
//! threads do not count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::fd::OwnedFd;

use ipc_core::{channel, Connection, Fd};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is a const-initialized thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; `ptr` came from `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded; `ptr` came from `alloc` above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations this thread makes while running `f`.
fn allocations<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (ALLOCATIONS.with(Cell::get) - before, result)
}

type Plain = (u64, [u8; 32], Option<u32>);

#[test]
fn a_send_allocates_nothing_in_steady_state() {
    let (tx, rx) = channel::<(Plain, Fd<OwnedFd>)>().unwrap();
    let file = || Fd::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
    // Warm up: the thread's buffers are made on first use.
    tx.send(((1, [2; 32], None), file())).unwrap();
    rx.recv().unwrap();
    for i in 0..1000u64 {
        let message = ((i, [3; 32], Some(7)), file());
        let (sent, result) = allocations(|| tx.send(message));
        result.unwrap();
        assert_eq!(sent, 0, "send number {i} allocated");
        let (received, message) = allocations(|| rx.recv());
        assert_eq!(message.unwrap().0 .0, i);
        assert_eq!(received, 0, "receive number {i} allocated");
    }
}

#[test]
fn a_receive_allocates_only_the_messages_own_fields() {
    let (a, b) = Connection::<(u32, Vec<u8>, String), (u32, Vec<u8>, String)>::pair().unwrap();
    // Warm up: the first messages set up the ring lane, once.
    for _ in 0..4 {
        a.send((0, vec![1; 10], "warm".into())).unwrap();
        b.recv().unwrap();
    }
    for i in 0..200u32 {
        a.send((i, vec![1; 100], "x".repeat(5))).unwrap();
        let (received, message) = allocations(|| b.recv());
        let message = message.unwrap();
        assert_eq!(message.0, i);
        assert_eq!(
            received, 2,
            "receive {i}: the Vec and the String, nothing else"
        );
    }
}

#[test]
fn the_ring_lane_allocates_nothing_either_way() {
    let (tx, rx) = channel::<Plain>().unwrap();
    // Warm up: the first messages set up the ring lane.
    for _ in 0..4 {
        tx.send((1, [2; 32], None)).unwrap();
        rx.recv().unwrap();
    }
    for i in 0..1000u64 {
        let (sent, result) = allocations(|| tx.send((i, [3; 32], Some(7))));
        result.unwrap();
        assert_eq!(sent, 0, "send number {i} allocated");
        let (received, message) = allocations(|| rx.recv());
        assert_eq!(message.unwrap().0, i);
        assert_eq!(received, 0, "receive number {i} allocated");
    }
}

#[derive(ipc_core::IpcMessage)]
struct Blob {
    data: Vec<u8>,
}

#[test]
fn a_large_body_costs_no_heap_allocation_of_ours() {
    let (tx, rx) = channel::<Blob>().unwrap();
    // Warm up: the thread's buffers, the receiver's copy of a body and the
    // sender's pool of memfds are made on first use, at the largest size.
    tx.send(Blob {
        data: vec![0; 3_000_000],
    })
    .unwrap();
    rx.recv().unwrap();
    for len in [300_000, 3_000_000].repeat(10) {
        // Out of line: streamed into a memfd of the sender's pool and
        // copied out by the receiver.
        let body = Blob {
            data: vec![9u8; len],
        };
        let (sent, result) = allocations(|| tx.send(body));
        result.unwrap();
        assert_eq!(sent, 0);
        let (received, body) = allocations(|| rx.recv());
        assert_eq!(body.unwrap().data.len(), len);
        assert_eq!(received, 1, "the Vec, nothing else");
    }
}
