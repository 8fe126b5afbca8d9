//! A producer and a consumer process share a ring of records through
//! `SharedMemory`; the producer then hands a sealed snapshot of what it
//! produced to a reader, which can trust it not to change.
//!
//! ```text
//! cargo run --release --example shared_memory
//! ```
//!
//! The parent creates two regions: a control block of atomics (where the
//! producer publishes how far it wrote and the consumer how far it read)
//! and the ring of records itself. It forks both processes and sends each
//! its handles inside a message; from then on records move through shared
//! pages with no copy and no syscall. At the end the producer seals a
//! summary into a `SealedMemory`; the parent passes it to the consumer, who
//! checks its own totals against it and shows that the snapshot cannot be
//! written.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytemuck::{Pod, Zeroable};
use ipc_core::{Connection, IpcMessage, SealedMemory, SharedMemory};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

const SLOTS: usize = 4096;
const RECORDS: u64 = 2_000_000;
/// Control block: word 0 is how many records were written, word 8 how
/// many were read (a cache line apart, so the two sides do not contend).
const WRITTEN: usize = 0;
const READ: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Record {
    seq: u64,
    value: u64,
    check: u64,
}

impl Record {
    fn new(seq: u64) -> Self {
        let value = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Record {
            seq,
            value,
            check: seq ^ value,
        }
    }
}

/// What the parent tells a child.
#[derive(IpcMessage)]
enum Order {
    /// Start on this ring, coordinating through this control block.
    Start {
        control: SharedMemory,
        ring: SharedMemory,
    },
    /// Check your totals against this sealed summary.
    Check(SealedMemory),
}

/// What a child tells the parent.
#[derive(IpcMessage)]
enum Report {
    /// The producer is done; its summary (records, sum) is sealed.
    Produced(SealedMemory),
    /// The consumer drained the ring.
    Consumed { records: u64, sum: u64 },
    /// The consumer compared its totals with the snapshot and tried to
    /// write to it.
    Verified { matches: bool, write_refused: bool },
}

type Child = Connection<Report, Order>;
type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let control = SharedMemory::new(128)?;
    let ring = SharedMemory::new(SLOTS * std::mem::size_of::<Record>())?;
    println!(
        "parent:   a ring of {SLOTS} records ({} KiB) and a control block of atomics, both on memfds",
        ring.len() / 1024
    );

    let (to_consumer, consumer_end) = Connection::<Order, Report>::pair()?;
    let consumer_pid = spawn(|| consumer(consumer_end))?;
    let (to_producer, producer_end) = Connection::<Order, Report>::pair()?;
    let producer_pid = spawn(|| producer(producer_end))?;

    let started = Instant::now();
    to_producer.send(Order::Start {
        control: control.try_clone()?,
        ring: ring.try_clone()?,
    })?;
    to_consumer.send(Order::Start { control, ring })?;

    let Report::Consumed { records, sum } = to_consumer.recv()? else {
        return Err("the consumer answered out of turn".into());
    };
    let elapsed = started.elapsed();
    println!(
        "parent:   {records} records went through the shared ring in {:.0?} ({:.1} M records/s), no copy through the kernel",
        elapsed,
        records as f64 / elapsed.as_secs_f64() / 1e6
    );
    let Report::Produced(snapshot) = to_producer.recv()? else {
        return Err("the producer answered out of turn".into());
    };
    println!(
        "parent:   the producer sealed its summary into a {}-byte SealedMemory; handing it to the consumer",
        snapshot.len()
    );
    to_consumer.send(Order::Check(snapshot))?;
    let Report::Verified {
        matches,
        write_refused,
    } = to_consumer.recv()?
    else {
        return Err("the consumer answered out of turn".into());
    };
    println!("parent:   consumer says its totals match the snapshot: {matches}; writing to the snapshot was refused: {write_refused}");
    println!("parent:   checksum of all values {sum:#018x}");
    waitpid(producer_pid, None)?;
    waitpid(consumer_pid, None)?;
    if matches && write_refused {
        Ok(())
    } else {
        Err("the snapshot did not hold".into())
    }
}

fn producer(parent: Child) -> Result<(), Failure> {
    let Order::Start { control, mut ring } = parent.recv()? else {
        return Err("expected the ring first".into());
    };
    let counters = control.atomics::<AtomicU64>()?;
    let slots = ring.as_mut_slice_of::<Record>()?;
    let mut sum = 0u64;
    for seq in 0..RECORDS {
        while seq - counters[READ].load(Ordering::Acquire) >= SLOTS as u64 {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        let record = Record::new(seq);
        sum = sum.wrapping_add(record.value);
        slots[seq as usize % SLOTS] = record;
        counters[WRITTEN].store(seq + 1, Ordering::Release);
    }
    let summary = [RECORDS, sum];
    let snapshot = SealedMemory::new(bytemuck::cast_slice(&summary))?;
    println!("producer: wrote {RECORDS} records; sealed a summary nobody can change");
    parent.send(Report::Produced(snapshot))?;
    Ok(())
}

fn consumer(parent: Child) -> Result<(), Failure> {
    let Order::Start { control, ring } = parent.recv()? else {
        return Err("expected the ring first".into());
    };
    let counters = control.atomics::<AtomicU64>()?;
    let slots = ring.as_slice_of::<Record>()?;
    let mut sum = 0u64;
    for seq in 0..RECORDS {
        while counters[WRITTEN].load(Ordering::Acquire) <= seq {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        // Another process writes these bytes: read them afresh each time.
        // SAFETY: the reference points into the mapped ring, valid and
        // aligned for Record; Record is plain data, valid for any bytes.
        let record = unsafe { std::ptr::read_volatile(&slots[seq as usize % SLOTS]) };
        if record.seq != seq || record.check != record.seq ^ record.value {
            return Err(format!("record {seq} arrived torn").into());
        }
        sum = sum.wrapping_add(record.value);
        counters[READ].store(seq + 1, Ordering::Release);
    }
    println!("consumer: read {RECORDS} records, every one whole and in order");
    parent.send(Report::Consumed {
        records: RECORDS,
        sum,
    })?;

    let Order::Check(snapshot) = parent.recv()? else {
        return Err("expected the snapshot".into());
    };
    let summary: &[u64] = snapshot.as_slice_of()?;
    let matches = summary == [RECORDS, sum];
    let write_refused =
        nix::sys::uio::pwrite(snapshot.as_fd(), b"tamper", 0) == Err(nix::errno::Errno::EPERM);
    println!("consumer: the snapshot says {summary:?}; a write through its descriptor fails with EPERM: {write_refused}");
    parent.send(Report::Verified {
        matches,
        write_refused,
    })?;
    Ok(())
}

/// Forks a child that runs `body` and exits.
fn spawn(body: impl FnOnce() -> Result<(), Failure>) -> nix::Result<Pid> {
    // SAFETY: this program is single-threaded when it forks, so the child
    // starts with every lock free; the child leaves through `exit`.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let code = match body() {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("child failed: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}
