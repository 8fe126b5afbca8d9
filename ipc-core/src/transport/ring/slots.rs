//! The ring itself: slots in memory shared with a peer, written by one
//! sending process, read by any process that holds the receiving end.
//! Pure: atomics on a slice of words, no syscalls, so it is unit tested
//! with threads and fuzzed with a scribbling peer.
//!
//! It is Dmitry Vyukov's bounded queue over fixed slots: each slot starts
//! with a sequence word that says whose turn it is. The producer keeps its
//! position to itself and writes a slot when its sequence equals that
//! position; it publishes by storing position + 1. A consumer claims the
//! slot at the shared head when its sequence is head + 1, by a
//! compare-and-swap on the head, copies it out, and hands it back to the
//! producer's next lap by storing head + capacity. So any number of
//! consumers (a receiving end held by forked workers) take each message
//! once, and no index ever points outside the ring: every one is masked.
//!
//! A message larger than one slot spans consecutive slots; the producer
//! publishes the first slot last, so a consumer that sees it sees the rest.
//!
//! ```text
//! word     field
//!    0     magic, b"icring01"
//!    1     slots (a power of two)
//!   16     head: the next position consumers take (compare-and-swap)
//!   24     waiting: 1 while a consumer is about to sleep (armed), 0 else
//!   32     the CPU the producer last published from
//!   40     the ring's state: 0 offered, 1 accepted, 2 refused (by the
//!          receiving side)
//!  512..   slots, SLOT_WORDS words each:
//!            0      sequence
//!            1      kind << 32 | length in bytes (first slot of a span)
//!            2..    payload, 8 bytes a word, little endian; continuation
//!                   slots carry payload from word 1
//! ```
//!
//! Everything the peer can write is read once into a local, checked, then
//! used: a length that does not fit, a span whose slots are not all
//! published, a kind that does not exist, are [`Taken::Corrupt`] or not
//! ready yet; never an index outside the slots, never a loop that a peer
//! can keep going.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Words of the header page.
pub(crate) const HEADER_WORDS: usize = 512;
/// Words per slot: 128 bytes, two cache lines.
pub(crate) const SLOT_WORDS: usize = 16;
/// Slots of a ring: 2,048 of 128 bytes, 256 KiB.
pub(crate) const SLOTS: usize = 2048;
/// Payload bytes of the first slot of a span, and of each later one.
const FIRST_PAYLOAD: usize = (SLOT_WORDS - 2) * 8;
const MORE_PAYLOAD: usize = (SLOT_WORDS - 1) * 8;
/// The longest span: a body of up to 15 KiB travels in the ring.
pub(crate) const MAX_SPAN: usize = 128;
/// The largest body the ring carries.
pub(crate) const MAX_BODY: usize = FIRST_PAYLOAD + (MAX_SPAN - 1) * MORE_PAYLOAD;

const MAGIC: u64 = u64::from_le_bytes(*b"icring01");
const W_MAGIC: usize = 0;
const W_SLOTS: usize = 1;
pub(crate) const W_HEAD: usize = 16;
const W_WAITING: usize = 24;
const W_CPU: usize = 32;
const W_STATE: usize = 40;
const W_SLEEPERS: usize = 48;

/// The ring's state, as the receiving side set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Offered,
    Accepted,
    Refused,
}

/// What a record is.
pub(crate) const KIND_MESSAGE: u32 = 1;
/// The sender's next message is a datagram on its private socket.
pub(crate) const KIND_PLACEHOLDER: u32 = 2;

/// The words of a ring of `slots` slots.
pub(crate) const fn words(slots: usize) -> usize {
    HEADER_WORDS + slots * SLOT_WORDS
}

/// Slots needed for a body of `len` bytes.
pub(crate) const fn span(len: usize) -> usize {
    if len <= FIRST_PAYLOAD {
        1
    } else {
        1 + (len - FIRST_PAYLOAD).div_ceil(MORE_PAYLOAD)
    }
}

/// A ring laid over shared words.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slots<'a> {
    words: &'a [AtomicU64],
    slots: usize,
}

impl<'a> Slots<'a> {
    /// Lays out a fresh ring of `slots` slots over `words` (zeroed, as a
    /// new memfd is): the producer's side, before it offers the ring.
    pub(crate) fn init(words: &'a [AtomicU64], slots: usize) -> Option<Slots<'a>> {
        let ring = Slots::view(words, slots)?;
        words[W_SLOTS].store(slots as u64, Ordering::Relaxed);
        for position in 0..slots {
            ring.seq(position as u64)
                .store(position as u64, Ordering::Relaxed);
        }
        words[W_MAGIC].store(MAGIC, Ordering::Release);
        Some(ring)
    }

    /// The ring a peer laid out over `words`, once its header checks out:
    /// the receiving side, before it accepts the ring.
    pub(crate) fn open(words: &'a [AtomicU64]) -> Option<Slots<'a>> {
        if words.get(W_MAGIC)?.load(Ordering::Acquire) != MAGIC {
            return None;
        }
        let slots = usize::try_from(words.get(W_SLOTS)?.load(Ordering::Relaxed)).ok()?;
        Slots::view(words, slots)
    }

    /// The producer's view of the ring it laid out: its own slot count,
    /// whatever the peer wrote into the header since.
    pub(crate) fn own(words: &'a [AtomicU64]) -> Option<Slots<'a>> {
        Slots::view(words, SLOTS)
    }

    fn view(words: &'a [AtomicU64], slots: usize) -> Option<Slots<'a>> {
        let fits = slots.is_power_of_two()
            && (MAX_SPAN * 2..=1 << 16).contains(&slots)
            && words.len() == self::words(slots);
        fits.then_some(Slots { words, slots })
    }

    fn mask(&self) -> u64 {
        self.slots as u64 - 1
    }

    fn slot(&self, position: u64) -> &'a [AtomicU64] {
        let start = HEADER_WORDS + (position & self.mask()) as usize * SLOT_WORDS;
        &self.words[start..start + SLOT_WORDS]
    }

    fn seq(&self, position: u64) -> &'a AtomicU64 {
        &self.slot(position)[0]
    }

    fn head(&self) -> &'a AtomicU64 {
        &self.words[W_HEAD]
    }

    // --- the producer's side ---

    /// Whether the `n` slots from `position`, the producer's own count,
    /// are back from the consumers' last lap.
    pub(crate) fn has_room(&self, position: u64, n: usize) -> bool {
        n <= MAX_SPAN
            && (0..n as u64).all(|i| {
                let position = position.wrapping_add(i);
                self.seq(position).load(Ordering::Acquire) == position
            })
    }

    /// Writes `body` as one record of `kind` at `position`, the producer's
    /// own count, and publishes it. `false` when its slots are not all
    /// free: the ring is full (the caller waits, or gives up).
    pub(crate) fn push(&self, position: u64, kind: u32, body: &[u8]) -> bool {
        let n = span(body.len());
        if !self.has_room(position, n) {
            return false;
        }
        let first = self.slot(position);
        first[1].store(u64::from(kind) << 32 | body.len() as u64, Ordering::Relaxed);
        let (head_bytes, rest) = body.split_at(body.len().min(FIRST_PAYLOAD));
        store(&first[2..], head_bytes);
        for (i, chunk) in rest.chunks(MORE_PAYLOAD).enumerate() {
            let position = position + 1 + i as u64;
            store(&self.slot(position)[1..], chunk);
            self.seq(position).store(position + 1, Ordering::Release);
        }
        // The first slot last: a consumer that sees it sees the span.
        first[0].store(position + 1, Ordering::Release);
        true
    }

    /// Slots the record of `body` takes: what the producer's count moves by.
    #[cfg(test)]
    pub(crate) fn advance(body: &[u8]) -> u64 {
        span(body.len()) as u64
    }

    /// Whether a consumer is about to sleep: then a doorbell must wake it.
    /// Clears the flag, so one doorbell rings per sleep.
    ///
    /// While two or more receiving threads sleep counted
    /// ([`sleep_begin`]), every record rings, and the flag stays: a
    /// doorbell wakes every thread asleep in `poll`, but one that finds it
    /// taken by another sleeps on, and needs the next. One sleeper alone
    /// needs one doorbell.
    ///
    /// [`sleep_begin`]: Slots::sleep_begin
    pub(crate) fn take_waiting(&self) -> bool {
        // Ordered after the publish, as the consumer's arm is before its
        // check: one of the two sees the other.
        fence(Ordering::SeqCst);
        if self.words[W_SLEEPERS].load(Ordering::Relaxed) >= 2 {
            return true;
        }
        let waiting = &self.words[W_WAITING];
        waiting.load(Ordering::Relaxed) == 1 && waiting.swap(0, Ordering::AcqRel) == 1
    }

    /// What the receiving side made of the offer. A value no receiver
    /// writes reads as refused.
    pub(crate) fn state(&self) -> State {
        match self.words[W_STATE].load(Ordering::Acquire) {
            0 => State::Offered,
            1 => State::Accepted,
            _ => State::Refused,
        }
    }

    /// Records the CPU the producer runs on, for a consumer deciding
    /// whether spinning could pay.
    pub(crate) fn set_cpu(&self, cpu: u64) {
        self.words[W_CPU].store(cpu, Ordering::Relaxed);
    }

    // --- the consumers' side ---

    /// Whether a record is there to take (or a span not yet whole, which
    /// [`take`](Slots::take) reports).
    pub(crate) fn ready(&self) -> bool {
        let head = self.head().load(Ordering::Acquire);
        self.seq(head).load(Ordering::Acquire) == head.wrapping_add(1)
    }

    /// Takes the record at the head, copying its body into `out` (cleared
    /// first).
    pub(crate) fn take(&self, out: &mut Vec<u8>) -> Taken {
        // Claims race with other consumers, and a peer can move the head
        // under them: a bounded number of tries, then "busy".
        for _ in 0..64 {
            let head = self.head().load(Ordering::Acquire);
            let first = self.slot(head);
            if first[0].load(Ordering::Acquire) != head.wrapping_add(1) {
                return Taken::Nothing;
            }
            let word = first[1].load(Ordering::Relaxed);
            let (kind, len) = ((word >> 32) as u32, (word & u64::from(u32::MAX)) as usize);
            let valid = matches!(kind, KIND_MESSAGE | KIND_PLACEHOLDER) && len <= MAX_BODY;
            let n = span(len.min(MAX_BODY)) as u64;
            // A span is published first slot last: the rest must be there.
            let whole = valid
                && (1..n).all(|i| {
                    let position = head.wrapping_add(i);
                    self.seq(position).load(Ordering::Acquire) == position.wrapping_add(1)
                });
            if !whole {
                // Another consumer may have taken the record (and the
                // producer written the slot again) since the head was read.
                if self.head().load(Ordering::Acquire) != head {
                    continue;
                }
                return Taken::Corrupt;
            }
            let next = head.wrapping_add(n);
            if self
                .head()
                .compare_exchange(head, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            out.clear();
            out.reserve(len);
            let first_len = len.min(FIRST_PAYLOAD);
            load(&first[2..], first_len, out);
            let mut left = len - first_len;
            for i in 1..n {
                let take = left.min(MORE_PAYLOAD);
                load(&self.slot(head.wrapping_add(i))[1..], take, out);
                left -= take;
            }
            // Back to the producer, for its next lap.
            for i in 0..n {
                let position = head.wrapping_add(i);
                self.seq(position)
                    .store(position.wrapping_add(self.slots as u64), Ordering::Release);
            }
            return match kind {
                KIND_MESSAGE => Taken::Message,
                _ => Taken::Placeholder,
            };
        }
        Taken::Busy
    }

    /// Accepts the offer: the producer may write.
    pub(crate) fn accept(&self) {
        self.words[W_STATE].store(1, Ordering::Release);
    }

    /// Refuses the offer: the producer goes on without a ring.
    pub(crate) fn refuse(&self) {
        self.words[W_STATE].store(2, Ordering::Release);
    }

    /// A receiving thread is about to sleep in `poll` on the socket, until
    /// [`sleep_end`](Slots::sleep_end): with another asleep too, every
    /// record rings the doorbell. The caller arms the ring and looks once
    /// more before it sleeps.
    pub(crate) fn sleep_begin(&self) {
        self.words[W_SLEEPERS].fetch_add(1, Ordering::SeqCst);
    }

    /// A receiving thread counted by [`sleep_begin`](Slots::sleep_begin)
    /// is awake. Never below zero, whatever the sender wrote there.
    pub(crate) fn sleep_end(&self) {
        let _ = self.words[W_SLEEPERS]
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Says a consumer is about to sleep, so that the next publish rings
    /// the doorbell; the caller then looks once more before it sleeps.
    pub(crate) fn arm(&self) {
        self.words[W_WAITING].store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The CPU the producer last published from.
    pub(crate) fn producer_cpu(&self) -> u64 {
        self.words[W_CPU].load(Ordering::Relaxed)
    }
}

/// What [`Slots::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// A message's body, now in the caller's buffer.
    Message,
    /// The sender's next message is on its private socket.
    Placeholder,
    /// Nothing published at the head.
    Nothing,
    /// Other consumers, or the peer, kept moving the head: try later.
    Busy,
    /// The peer wrote what no producer writes: the ring is not to be read.
    Corrupt,
}

/// Stores `bytes` into `words`, 8 bytes a word, little endian.
fn store(words: &[AtomicU64], bytes: &[u8]) {
    for (word, chunk) in words.iter().zip(bytes.chunks(8)) {
        let mut eight = [0u8; 8];
        eight[..chunk.len()].copy_from_slice(chunk);
        word.store(u64::from_le_bytes(eight), Ordering::Relaxed);
    }
}

/// Appends the first `len` bytes of `words` to `out`.
fn load(words: &[AtomicU64], len: usize, out: &mut Vec<u8>) {
    let mut left = len;
    for word in words {
        if left == 0 {
            break;
        }
        let bytes = word.load(Ordering::Relaxed).to_le_bytes();
        let take = left.min(8);
        out.extend_from_slice(&bytes[..take]);
        left -= take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(slots: usize) -> Vec<AtomicU64> {
        (0..words(slots)).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn records_of_every_size_come_out_as_they_went_in() {
        let words = memory(256);
        let producer = Slots::init(&words, 256).unwrap();
        let consumer = Slots::open(&words).unwrap();
        let mut position = 0;
        let mut out = Vec::new();
        for len in [0, 1, 7, 8, 111, 112, 113, 120, 232, 233, 1000, MAX_BODY] {
            let body: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            assert!(producer.push(position, KIND_MESSAGE, &body), "{len}");
            position += Slots::advance(&body);
            assert!(consumer.ready());
            assert_eq!(consumer.take(&mut out), Taken::Message);
            assert_eq!(out, body, "{len} bytes");
        }
        assert_eq!(consumer.take(&mut out), Taken::Nothing);
        assert!(producer.push(position, KIND_PLACEHOLDER, &[]));
        assert_eq!(consumer.take(&mut out), Taken::Placeholder);
        assert!(!producer.push(position + 1, KIND_MESSAGE, &vec![0; MAX_BODY + 1]));
    }

    #[test]
    fn a_full_ring_refuses_until_consumers_hand_slots_back() {
        let words = memory(256);
        let producer = Slots::init(&words, 256).unwrap();
        let consumer = Slots::open(&words).unwrap();
        let mut position = 0;
        while producer.push(position, KIND_MESSAGE, &[1; 200]) {
            position += 2;
        }
        assert_eq!(position, 256, "two slots a record fill 256 slots");
        let mut out = Vec::new();
        assert_eq!(consumer.take(&mut out), Taken::Message);
        assert!(producer.push(position, KIND_MESSAGE, &[2; 200]));
    }

    #[test]
    fn many_consumers_take_each_record_once_from_a_producer_thread() {
        const RECORDS: u32 = 100_000;
        let words = memory(256);
        let producer = Slots::init(&words, 256).unwrap();
        let taken = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let ring = Slots::open(&words).unwrap();
                    let mut out = Vec::new();
                    let mut mine = Vec::new();
                    loop {
                        match ring.take(&mut out) {
                            Taken::Message => {
                                let n = u32::from_le_bytes(out[..4].try_into().unwrap());
                                assert!(out[4..].iter().all(|&b| b == n as u8), "torn");
                                if n == u32::MAX {
                                    break;
                                }
                                mine.push(n);
                            }
                            Taken::Nothing | Taken::Busy => std::hint::spin_loop(),
                            other => panic!("{other:?}"),
                        }
                    }
                    taken.lock().unwrap().extend(mine);
                });
            }
            let mut position = 0;
            for n in (0..RECORDS).chain([u32::MAX; 3]) {
                let mut body = n.to_le_bytes().to_vec();
                body.resize(4 + (n as usize % 300), n as u8);
                while !producer.push(position, KIND_MESSAGE, &body) {
                    std::hint::spin_loop();
                }
                position += Slots::advance(&body);
            }
        });
        let mut taken = taken.into_inner().unwrap();
        taken.sort();
        assert_eq!(taken, (0..RECORDS).collect::<Vec<_>>());
    }

    #[test]
    fn a_scribbling_peer_is_refused_within_the_ring() {
        let words = memory(256);
        let producer = Slots::init(&words, 256).unwrap();
        let consumer = Slots::open(&words).unwrap();
        let mut out = Vec::new();
        // A length past what a span holds.
        assert!(producer.push(0, KIND_MESSAGE, &[1; 10]));
        words[HEADER_WORDS + 1].store(
            u64::from(KIND_MESSAGE) << 32 | u64::from(u32::MAX),
            Ordering::Relaxed,
        );
        assert_eq!(consumer.take(&mut out), Taken::Corrupt);
        // A kind that does not exist.
        words[HEADER_WORDS + 1].store(9 << 32 | 4, Ordering::Relaxed);
        assert_eq!(consumer.take(&mut out), Taken::Corrupt);
        // A span whose later slots were never published.
        words[HEADER_WORDS + 1].store(u64::from(KIND_MESSAGE) << 32 | 500, Ordering::Relaxed);
        assert_eq!(consumer.take(&mut out), Taken::Corrupt);
        // A head moved anywhere: every index is masked.
        words[W_HEAD].store(u64::MAX - 3, Ordering::Relaxed);
        assert_eq!(consumer.take(&mut out), Taken::Nothing);
        // A header that is not a ring, or of a size that is not its own.
        let other = memory(256);
        assert!(Slots::open(&other).is_none());
        other[W_MAGIC].store(MAGIC, Ordering::Relaxed);
        other[W_SLOTS].store(512, Ordering::Relaxed);
        assert!(Slots::open(&other).is_none());
        other[W_SLOTS].store(255, Ordering::Relaxed);
        assert!(Slots::open(&other).is_none());
    }

    #[test]
    fn the_doorbell_rings_once_per_arm() {
        let words = memory(256);
        let producer = Slots::init(&words, 256).unwrap();
        let consumer = Slots::open(&words).unwrap();
        assert!(!producer.take_waiting());
        consumer.arm();
        assert!(producer.take_waiting());
        assert!(!producer.take_waiting(), "cleared by the doorbell");
    }
}
