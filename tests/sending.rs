//! The ways to send, across processes: a bare byte buffer in one copy, a
//! message sent by reference to several receivers, and a send that waits
//! no longer than it is told.

mod support;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ipc_core::{channel, Error, IpcMessage, SealedMemory};
use support::{close_in_child, fd_count, fork_child, inline_frame, send_raw, serial, temp_file};

#[test]
fn a_bare_byte_buffer_crosses_processes_at_every_size() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    // Inline, pooled, and past the pool (a fresh sealed memfd).
    let sizes = [0usize, 1, 100, 65_000, 70_000, 3 << 20, 40 << 20];
    let child = fork_child(|| {
        close_in_child(&rx);
        for (i, &len) in sizes.iter().enumerate() {
            let body: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            tx.send(body).unwrap();
        }
    });
    for (i, &len) in sizes.iter().enumerate() {
        let got = rx.recv().unwrap();
        assert_eq!(got.len(), len);
        assert!(
            got.iter().enumerate().all(|(b, &v)| v == (b * 7 + i) as u8),
            "{len} bytes came back different"
        );
    }
    child.join();
    drop((tx, rx));
    assert_eq!(fd_count(), before);
}

#[test]
fn a_bare_byte_buffer_keeps_the_wire_format_of_a_sequence_of_bytes() {
    let _serial = serial();
    // What postcard writes for a Vec<u8> through serde: a length, then the
    // bytes. The fast path reads and writes exactly that.
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let raw = tx.as_fd().try_clone_to_owned().unwrap();
    let body = postcard::to_allocvec(&(1..=200u8).collect::<Vec<u8>>()).unwrap();
    send_raw(&raw, &inline_frame(0, &body), &[]);
    assert_eq!(rx.recv().unwrap(), (1..=200).collect::<Vec<u8>>());
    // And what it sends, a peer that decodes with serde reads.
    tx.send(vec![9, 8, 7]).unwrap();
    let mut buf = [0u8; 64];
    let n = nix::sys::socket::recv(
        std::os::fd::AsRawFd::as_raw_fd(&rx.as_fd()),
        &mut buf,
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    assert_eq!(
        postcard::from_bytes::<Vec<u8>>(&buf[16..n]).unwrap(),
        [9, 8, 7]
    );
    // A body cut short, or with bytes behind it, is refused.
    send_raw(&raw, &inline_frame(0, &[5, 1, 2]), &[]);
    assert!(matches!(rx.recv(), Err(Error::Decode(_))));
    send_raw(&raw, &inline_frame(0, &[1, 1, 2]), &[]);
    assert!(matches!(rx.recv(), Err(Error::Decode(_))));
    tx.send(vec![1]).unwrap();
    assert_eq!(rx.recv().unwrap(), [1]);
}

/// A large message with a descriptor, fanned out to consumers.
#[derive(IpcMessage)]
struct Frame {
    pixels: Vec<u8>,
    log: File,
    palette: SealedMemory,
}

#[test]
fn one_message_sent_by_reference_reaches_two_processes_and_stays_with_the_sender() {
    let _serial = serial();
    let before = fd_count();
    let (to_a, from_a) = channel::<Frame>().unwrap();
    let (to_b, from_b) = channel::<Frame>().unwrap();
    let (report, reports) = channel::<(u8, u64, u8)>().unwrap();
    let consumer = |name: u8, rx: &ipc_core::Receiver<Frame>| {
        let frame = rx.recv().unwrap();
        let mut log = frame.log;
        log.seek(SeekFrom::Start(0)).unwrap();
        let mut text = String::new();
        log.read_to_string(&mut text).unwrap();
        let sum: u64 = frame.pixels.iter().map(|&p| p as u64).sum();
        report
            .send((name, sum + text.len() as u64, frame.palette[3]))
            .unwrap();
    };
    let a = fork_child(|| consumer(b'a', &from_a));
    let b = fork_child(|| consumer(b'b', &from_b));
    drop((from_a, from_b));

    let mut log = temp_file();
    log.write_all(b"frame 1").unwrap();
    let frame = Frame {
        pixels: vec![2; 64 << 20],
        log,
        palette: SealedMemory::from_slice(&[10u8, 20, 30, 40]).unwrap(),
    };
    to_a.send_ref(&frame).unwrap();
    to_b.send_ref(&frame).unwrap();
    let mut got = vec![reports.recv().unwrap(), reports.recv().unwrap()];
    got.sort();
    let expected = 2 * (64 << 20) + 7;
    assert_eq!(got, [(b'a', expected, 40), (b'b', expected, 40)]);
    // The sender's copy is whole and its descriptors open.
    assert_eq!(frame.pixels.len(), 64 << 20);
    assert!(frame.log.metadata().is_ok());
    assert_eq!(&frame.palette[..], [10, 20, 30, 40]);
    a.join();
    b.join();
    drop((frame, to_a, to_b, report, reports));
    assert_eq!(fd_count(), before);
}

#[test]
fn send_timeout_gives_up_on_a_receiver_that_reads_nothing() {
    let _serial = serial();
    let (tx, rx) = channel::<Vec<u8>>().unwrap();
    let (done, wait) = std::os::unix::net::UnixStream::pair().unwrap();
    // A receiving process that holds its end and never reads.
    let child = fork_child(|| {
        let _held = &rx;
        let _ = (&wait).read(&mut [0]);
    });
    drop(rx);
    // Small messages until the socket buffer is full.
    let full = loop {
        match tx.send_timeout(vec![1; 30_000], Duration::from_millis(100)) {
            Ok(()) => {}
            Err(e) => break e,
        }
    };
    assert!(matches!(full.error(), Error::Timeout), "{:?}", full.error());
    assert_eq!(full.into_inner().len(), 30_000);
    // A large body, waited for no longer either (the pool is idle, so it
    // goes pooled; the socket has no room for even its header).
    let started = Instant::now();
    let big = tx
        .send_timeout(vec![2; 5 << 20], Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(big.error(), Error::Timeout));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(big.into_inner().len(), 5 << 20);
    (&done).write_all(b"x").unwrap();
    child.join();
}

#[test]
fn a_typed_table_seals_in_one_call_and_compares_by_bytes() {
    let _serial = serial();
    let table: Vec<u32> = (0..1000).map(|i| i * i).collect();
    let (tx, rx) = channel::<SealedMemory>().unwrap();
    let (verdict, verdicts) = channel::<bool>().unwrap();
    let child = fork_child(|| {
        let got = rx.recv().unwrap();
        let own =
            SealedMemory::from_slice(&(0..1000u32).map(|i| i * i).collect::<Vec<_>>()).unwrap();
        verdict
            .send(got == own && got.as_slice_of::<u32>().unwrap()[999] == 998_001)
            .unwrap();
    });
    tx.send(SealedMemory::from_slice(&table).unwrap()).unwrap();
    assert!(verdicts.recv().unwrap());
    child.join();
    assert_ne!(
        SealedMemory::from_slice(&[1u16]).unwrap(),
        SealedMemory::from_slice(&[2u16]).unwrap()
    );
}
