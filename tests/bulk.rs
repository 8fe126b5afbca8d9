//! Containers of numbers in one copy: every element type round-trips across
//! processes bit for bit, the wire is little endian, and hostile bytes
//! (lengths that are no whole number of elements, an invalid `bool` or
//! `char`) are refused with a decode error while the channel goes on.

mod support;

use std::os::fd::OwnedFd;

use ipc_core::{channel, Connection, Error, IpcMessage};
use support::{close_in_child, fd_count, fork_child, serial};

#[derive(IpcMessage, Debug, Clone, PartialEq)]
struct Numbers {
    u16s: Vec<u16>,
    u32s: Vec<u32>,
    u64s: Vec<u64>,
    u128s: Vec<u128>,
    i8s: Vec<i8>,
    i16s: Vec<i16>,
    i32s: Vec<i32>,
    i64s: Vec<i64>,
    i128s: Vec<i128>,
    bools: Vec<bool>,
    chars: Vec<char>,
    boxed: Box<[u32]>,
    array: [i16; 3],
    chars4: [char; 2],
    maybe: Option<Vec<u64>>,
    rows: Vec<Vec<i32>>,
    pair: (Vec<u16>, String),
}

/// Floats compare by bits: NaN payloads and -0.0 must survive.
#[derive(IpcMessage, Debug, Clone)]
struct Floats {
    f32s: Vec<f32>,
    f64s: Vec<f64>,
    boxed: Box<[f64]>,
    array: [f32; 4],
}

fn numbers(len: usize) -> Numbers {
    Numbers {
        u16s: (0..len).map(|i| i as u16).chain([u16::MAX]).collect(),
        u32s: (0..len).map(|i| i as u32 * 7).chain([u32::MAX]).collect(),
        u64s: (0..len)
            .map(|i| (i as u64) << 33)
            .chain([u64::MAX])
            .collect(),
        u128s: vec![0, 1, u128::MAX, u128::MAX / 3],
        i8s: vec![i8::MIN, -1, 0, i8::MAX],
        i16s: (0..len)
            .map(|i| (i as i16).wrapping_neg())
            .chain([i16::MIN])
            .collect(),
        i32s: vec![i32::MIN, -1, 0, 1, i32::MAX],
        i64s: (0..len)
            .map(|i| (i as i64).wrapping_mul(-1_000_003))
            .collect(),
        i128s: vec![i128::MIN, -1, i128::MAX],
        bools: (0..len).map(|i| i % 3 == 0).collect(),
        chars: "aé€😀".chars().chain(['\0', char::MAX]).collect(),
        boxed: (0..len as u32).collect(),
        array: [i16::MIN, 0, i16::MAX],
        chars4: ['x', char::MAX],
        maybe: Some(vec![u64::MAX, 0]),
        rows: vec![vec![], vec![1, -2, 3]],
        pair: (vec![1, 2, 3], "pair".into()),
    }
}

fn empty() -> Numbers {
    Numbers {
        u16s: vec![],
        u32s: vec![],
        u64s: vec![],
        u128s: vec![],
        i8s: vec![],
        i16s: vec![],
        i32s: vec![],
        i64s: vec![],
        i128s: vec![],
        bools: vec![],
        chars: vec![],
        boxed: Box::new([]),
        array: [0; 3],
        chars4: ['\0'; 2],
        maybe: None,
        rows: vec![],
        pair: (vec![], String::new()),
    }
}

fn floats() -> Floats {
    let odd_nan32 = f32::from_bits(0x7fc0_1234);
    let odd_nan64 = f64::from_bits(0xfff8_0000_dead_beef);
    Floats {
        f32s: vec![
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            odd_nan32,
            f32::MIN_POSITIVE,
            1.5,
        ],
        f64s: vec![
            -0.0,
            odd_nan64,
            f64::MAX,
            f64::EPSILON,
            std::f64::consts::PI,
        ],
        boxed: vec![f64::NAN, -0.0].into_boxed_slice(),
        array: [-0.0, odd_nan32, 1.0, f32::MIN],
    }
}

fn float_bits(f: &Floats) -> (Vec<u32>, Vec<u64>, Vec<u64>, Vec<u32>) {
    (
        f.f32s.iter().map(|x| x.to_bits()).collect(),
        f.f64s.iter().map(|x| x.to_bits()).collect(),
        f.boxed.iter().map(|x| x.to_bits()).collect(),
        f.array.iter().map(|x| x.to_bits()).collect(),
    )
}

#[test]
fn every_element_type_round_trips_across_processes() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<Numbers>().unwrap();
    let (ftx, frx) = channel::<Floats>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        close_in_child(&frx);
        tx.send(empty()).unwrap();
        tx.send(numbers(5)).unwrap();
        // Large enough to travel out of line.
        tx.send(numbers(300_000)).unwrap();
        ftx.send(floats()).unwrap();
    });
    drop((tx, ftx));
    assert_eq!(rx.recv().unwrap(), empty());
    assert_eq!(rx.recv().unwrap(), numbers(5));
    let large = rx.recv().unwrap();
    assert_eq!(large.u64s.len(), 300_001);
    assert_eq!(large, numbers(300_000));
    assert_eq!(float_bits(&frx.recv().unwrap()), float_bits(&floats()));
    child.join();
    drop((rx, frx));
    assert_eq!(fd_count(), before);
}

#[derive(IpcMessage, Debug, PartialEq)]
struct Few {
    words: Vec<u32>,
    flags: Vec<bool>,
    letters: Vec<char>,
    triple: [u16; 3],
}

/// `Few` as plain serde reads it: each container one byte string.
type FewOnTheWire = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

fn wire(words: &[u8], flags: &[u8], letters: &[u8], triple: &[u8]) -> FewOnTheWire {
    (words.into(), flags.into(), letters.into(), triple.into())
}

#[test]
fn the_wire_is_little_endian_bytes_and_hostile_bytes_are_refused() {
    let _serial = serial();
    let (tx, rx) = Connection::<Few, Few>::pair().unwrap();
    let rx = Connection::<FewOnTheWire, FewOnTheWire>::from(OwnedFd::from(rx));
    tx.send(Few {
        words: vec![1, 0x0102_0304],
        flags: vec![true, false],
        letters: vec!['A', '€'],
        triple: [1, 2, 0xfffe],
    })
    .unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        wire(
            &[1, 0, 0, 0, 4, 3, 2, 1],
            &[1, 0],
            &[0x41, 0, 0, 0, 0xac, 0x20, 0, 0],
            &[1, 0, 2, 0, 0xfe, 0xff],
        )
    );

    let good = wire(&[7, 0, 0, 0], &[1], &[0x41, 0, 0, 0], &[0; 6]);
    // The first messages set up the ring lane (and its descriptors).
    for _ in 0..4 {
        rx.send(good.clone()).unwrap();
        tx.recv().unwrap();
    }
    let before = fd_count();
    let hostile = [
        wire(&[7, 0, 0], &[1], &[0x41, 0, 0, 0], &[0; 6]),
        wire(&[7, 0, 0, 0], &[2], &[0x41, 0, 0, 0], &[0; 6]),
        wire(&[7, 0, 0, 0], &[1], &[0x00, 0xd8, 0, 0], &[0; 6]),
        wire(&[7, 0, 0, 0], &[1], &[0, 0, 0x11, 0], &[0; 6]),
        wire(&[7, 0, 0, 0], &[1], &[0x41, 0, 0, 0, 0x42], &[0; 6]),
        wire(&[7, 0, 0, 0], &[1], &[0x41, 0, 0, 0], &[0; 4]),
        wire(&[7, 0, 0, 0], &[1], &[0x41, 0, 0, 0], &[0; 8]),
        wire(&[7, 0, 0, 0], &[1], &[0x41, 0, 0, 0], &[0; 5]),
    ];
    for bytes in hostile {
        rx.send(bytes.clone()).unwrap();
        match tx.recv() {
            Err(Error::Decode(_)) => {}
            other => panic!("{bytes:?} was not refused: {other:?}"),
        }
        // The channel goes on.
        rx.send(good.clone()).unwrap();
        assert_eq!(
            tx.recv().unwrap(),
            Few {
                words: vec![7],
                flags: vec![true],
                letters: vec!['A'],
                triple: [0; 3],
            }
        );
    }
    assert_eq!(fd_count(), before);
}

/// A plain-old-data record, carried as its bytes in this host's layout.
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Point {
    x: f32,
    y: f32,
    id: u32,
}

#[derive(IpcMessage, Debug, PartialEq)]
struct Path {
    #[ipc(pod)]
    points: Vec<Point>,
    #[ipc(pod)]
    boxed: Box<[Point]>,
    #[ipc(pod)]
    corners: [Point; 2],
}

fn point(i: u32) -> Point {
    Point {
        x: i as f32,
        y: -(i as f32),
        id: i,
    }
}

#[test]
fn pod_fields_travel_as_their_bytes() {
    let _serial = serial();
    let (tx, rx) = channel::<Path>().unwrap();
    let path = || Path {
        points: (0..100_000).map(point).collect(),
        boxed: vec![point(1)].into_boxed_slice(),
        corners: [point(2), point(3)],
    };
    let child = fork_child(|| {
        close_in_child(&rx);
        tx.send(path()).unwrap();
    });
    drop(tx);
    assert_eq!(rx.recv().unwrap(), path());
    child.join();

    // On the wire: a byte string of the records; a length that is not a
    // whole number of records is refused.
    type PathOnTheWire = (Vec<u8>, Vec<u8>, Vec<u8>);
    let (path_end, raw) = Connection::<Path, Path>::pair().unwrap();
    let raw = Connection::<PathOnTheWire, PathOnTheWire>::from(OwnedFd::from(raw));
    path_end
        .send(Path {
            points: vec![point(1)],
            boxed: Box::new([]),
            corners: [point(2), point(3)],
        })
        .unwrap();
    let (points, boxed, corners) = raw.recv().unwrap();
    assert_eq!(points, bytemuck::bytes_of(&point(1)));
    assert!(boxed.is_empty());
    assert_eq!(corners.len(), 24);
    for hostile in [
        (vec![0; 13], vec![], vec![0; 24]),
        (vec![0; 12], vec![], vec![0; 23]),
        (vec![0; 12], vec![], vec![0; 36]),
    ] {
        raw.send(hostile).unwrap();
        assert!(matches!(path_end.recv(), Err(Error::Decode(_))));
    }
    raw.send((vec![0; 12], vec![], vec![0; 24])).unwrap();
    assert_eq!(path_end.recv().unwrap().points, [point(0)]);
}
