//! The ring lane: messages without descriptors through a ring in memory
//! shared with the receiving side, past the kernel's work per datagram.
//!
//! Each sending process writes a ring of its own into a socket's peer
//! ([`outbound`]); the receiving end reads every ring offered to it, and
//! its socket ([`inbound`]); the ring itself is [`slots`]. Per sending
//! process, the receiver sees one order across the lanes: a message that
//! cannot be a ring record (it carries descriptors, or its body is over 15
//! KiB) goes on the sender's private socket, and a placeholder record
//! keeps its place. A receiver about to sleep arms the rings; the next
//! record sends a wake datagram on the socket, so a blocking receive, a
//! [`Select`](crate::Select) and tokio all wait on the one socket they
//! know.

pub(crate) mod inbound;
pub(crate) mod outbound;
pub(crate) mod slots;

pub(crate) use inbound::{Inbound, Took};
pub(crate) use outbound::Outbound;

/// Whether a message body without descriptors fits one ring record.
#[inline]
pub(crate) fn fits(body: &[u8]) -> bool {
    body.len() <= slots::MAX_BODY
}

/// Takes records, as a receiving end does, from a ring whose head word is
/// the first 8 bytes of `data` and whose slots hold the rest (zero past
/// its end): how many it took before it found nothing, or the ring broken.
/// The fuzz target's entry: whatever the memory holds, the take neither
/// panics nor runs on, and no body is longer than a record's.
pub(crate) fn take_from(data: &[u8]) -> usize {
    use std::sync::atomic::{AtomicU64, Ordering};

    let words: Vec<AtomicU64> = (0..slots::words(slots::SLOTS))
        .map(|_| AtomicU64::new(0))
        .collect();
    let seed = slots::Slots::init(&words, slots::SLOTS);
    if seed.is_none() {
        return 0;
    }
    let (head, rest) = data.split_at(data.len().min(8));
    let word = |bytes: &[u8]| {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(word)
    };
    words[slots::W_HEAD].store(word(head), Ordering::Relaxed);
    for (i, chunk) in rest.chunks(8).enumerate() {
        if let Some(slot) = words.get(slots::HEADER_WORDS + i) {
            slot.store(word(chunk), Ordering::Relaxed);
        }
    }
    let Some(ring) = slots::Slots::open(&words) else {
        return 0;
    };
    let mut body = Vec::new();
    let mut taken = 0;
    for _ in 0..slots::SLOTS {
        match ring.take(&mut body) {
            slots::Taken::Message | slots::Taken::Placeholder => {
                assert!(body.len() <= slots::MAX_BODY, "a body past a record's");
                taken += 1;
            }
            _ => break,
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::take_from;

    /// A slot of the fuzz layout: its sequence word, kind and length, body.
    fn slot(seq: u64, kind: u64, len: u64, body: &[u8]) -> Vec<u8> {
        let mut slot = seq.to_le_bytes().to_vec();
        slot.extend((kind << 32 | len).to_le_bytes());
        slot.extend(body);
        slot.resize(128, 0);
        slot
    }

    #[test]
    fn the_fuzz_layout_reads_records_and_stops_at_what_no_sender_writes() {
        let head = 0u64.to_le_bytes().to_vec();
        let two = [head.clone(), slot(1, 1, 3, b"abc"), slot(2, 2, 0, b"")].concat();
        assert_eq!(take_from(&two), 2);
        let unknown = [head.clone(), slot(1, 9, 3, b"abc")].concat();
        assert_eq!(take_from(&unknown), 0);
        let huge = [head.clone(), slot(1, 1, 1 << 31, b"")].concat();
        assert_eq!(take_from(&huge), 0);
        let torn = [head, slot(1, 1, 200, &[7; 112]), slot(0, 0, 0, b"")].concat();
        assert_eq!(take_from(&torn), 0);
    }
}
