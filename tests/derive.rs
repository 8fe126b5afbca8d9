//! `#[derive(IpcMessage)]` across processes: every recognised descriptor
//! type arrives and works in the other process, also inside std
//! containers; enums, generics, nesting, attributes; failed sends give
//! everything back; the handshake sees changes in nested types.

mod support;

// Shadow the names generated code must not rely on: it names only
// `::ipc_core::__private` paths and `::core`.
#[allow(dead_code)]
mod serde {}
#[allow(dead_code)]
type Result = ();

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::rc::Rc;
use std::sync::Arc;

use ipc_core::{channel, Connection, Error, IpcMessage, Sender};
use support::{close_in_child, fd_count, fork_child, is_open, serial, temp_file};

#[derive(IpcMessage)]
struct Kit {
    note: String,
    counts: HashMap<String, u32>,
    file: File,
    raw: OwnedFd,
    listener: UnixListener,
    stream: UnixStream,
    datagram: UnixDatagram,
    tcp_listener: TcpListener,
    tcp: TcpStream,
    udp: UdpSocket,
    memfd: memfd::Memfd,
    maybe: Option<File>,
    absent: Option<File>,
    many: Vec<OwnedFd>,
    boxed: Box<File>,
    array: [OwnedFd; 2],
    pair: (String, File),
    nested: Vec<(u8, Option<Box<File>>)>,
    reply: Sender<String>,
}

fn file_with(text: &str) -> File {
    let mut file = temp_file();
    file.write_all(text.as_bytes()).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file
}

fn read_all(mut file: impl Read) -> String {
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn every_recognised_descriptor_type_works_in_the_other_process() {
    let _serial = serial();
    let before = fd_count();
    let socket_path =
        std::env::temp_dir().join(format!("ipc-core-derive-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket_path);

    let (kits, kit_rx) = channel::<Kit>().unwrap();
    let (reply, replies) = channel::<String>().unwrap();

    let listener = UnixListener::bind(&socket_path).unwrap();
    let (stream, stream_peer) = UnixStream::pair().unwrap();
    let (datagram, datagram_peer) = UnixDatagram::pair().unwrap();
    let tcp_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_listener_addr = tcp_listener.local_addr().unwrap();
    let tcp_server = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_client = TcpStream::connect(tcp_server.local_addr().unwrap()).unwrap();
    let (tcp, _) = tcp_server.accept().unwrap();
    drop(tcp_server);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let memfd = memfd::MemfdOptions::default().create("kit").unwrap();
    memfd.as_file().write_all(b"in memory").unwrap();

    let child = fork_child(|| {
        close_in_child(&kits);
        close_in_child(&stream_peer);
        close_in_child(&datagram_peer);
        close_in_child(&tcp_client);
        let kit = kit_rx.recv().unwrap();
        assert_eq!(kit.note, "kit");
        assert_eq!(kit.counts["a"], 1);
        assert_eq!(read_all(&kit.file), "plain file");
        assert_eq!(read_all(File::from(kit.raw)), "raw descriptor");
        let (conn, _) = kit.listener.accept().unwrap();
        assert_eq!(read_all(conn), "unix client");
        let mut line = [0; 11];
        (&kit.stream).read_exact(&mut line).unwrap();
        assert_eq!(&line, b"over stream");
        (&kit.stream).write_all(b"back").unwrap();
        let mut buf = [0; 64];
        let n = kit.datagram.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"one datagram");
        let (conn, _) = kit.tcp_listener.accept().unwrap();
        assert_eq!(read_all(conn), "tcp client");
        assert_eq!(read_all(&kit.tcp), "tcp stream");
        let (n, _) = kit.udp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"udp datagram");
        let mut text = String::new();
        kit.memfd.as_file().seek(SeekFrom::Start(0)).unwrap();
        kit.memfd.as_file().read_to_string(&mut text).unwrap();
        assert_eq!(text, "in memory");
        assert_eq!(read_all(kit.maybe.unwrap()), "maybe");
        assert!(kit.absent.is_none());
        assert_eq!(kit.many.len(), 3);
        assert_eq!(read_all(&*kit.boxed), "boxed");
        assert_eq!(kit.array.len(), 2);
        assert_eq!(kit.pair.0, "pair");
        assert_eq!(read_all(&kit.pair.1), "paired");
        assert_eq!(kit.nested.len(), 2);
        assert!(kit.nested[0].1.is_none());
        assert_eq!(read_all(&**kit.nested[1].1.as_ref().unwrap()), "deep");
        kit.reply.send("all used".into()).unwrap();
    });
    drop(kit_rx);

    let kit = Kit {
        note: "kit".into(),
        counts: HashMap::from([("a".to_string(), 1)]),
        file: file_with("plain file"),
        raw: OwnedFd::from(file_with("raw descriptor")),
        listener,
        stream,
        datagram,
        tcp_listener,
        tcp,
        udp,
        memfd,
        maybe: Some(file_with("maybe")),
        absent: None,
        many: support::dev_nulls(3),
        boxed: Box::new(file_with("boxed")),
        array: [
            support::dev_nulls(1).remove(0),
            support::dev_nulls(1).remove(0),
        ],
        pair: ("pair".into(), file_with("paired")),
        nested: vec![(0, None), (1, Some(Box::new(file_with("deep"))))],
        reply,
    };
    kits.send(kit).unwrap();

    // The parent plays the other side of every socket the child now holds.
    let mut client = UnixStream::connect(&socket_path).unwrap();
    client.write_all(b"unix client").unwrap();
    drop(client);
    (&stream_peer).write_all(b"over stream").unwrap();
    let mut back = [0; 4];
    (&stream_peer).read_exact(&mut back).unwrap();
    assert_eq!(&back, b"back");
    datagram_peer.send(b"one datagram").unwrap();
    let mut client = TcpStream::connect(tcp_listener_addr).unwrap();
    client.write_all(b"tcp client").unwrap();
    drop(client);
    (&tcp_client).write_all(b"tcp stream").unwrap();
    drop(tcp_client);
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"udp datagram", udp_addr)
        .unwrap();

    assert_eq!(replies.recv().unwrap(), "all used");
    child.join();
    drop((stream_peer, datagram_peer, kits, replies));
    std::fs::remove_file(&socket_path).unwrap();
    assert_eq!(fd_count(), before);
}

#[derive(IpcMessage, Debug)]
enum Request {
    Open { path: String, reply: Sender<Reply> },
    Upload(File, Option<UnixStream>),
    Tagged(#[ipc(fd)] Descriptor, u32),
    Shutdown,
}

/// A descriptor type the derive does not know by name.
type Descriptor = OwnedFd;

#[derive(IpcMessage, Debug)]
struct Reply {
    file: File,
    size: u64,
}

#[test]
fn enums_with_every_variant_kind_cross_processes() {
    let _serial = serial();
    let before = fd_count();
    let (requests, requests_rx) = channel::<Request>().unwrap();
    let child = fork_child(|| {
        close_in_child(&requests);
        let mut seen = Vec::new();
        for request in requests_rx.iter() {
            match request.unwrap() {
                Request::Open { path, reply } => {
                    let file = File::open(&path).unwrap();
                    let size = file.metadata().unwrap().len();
                    reply.send(Reply { file, size }).unwrap();
                    seen.push("open");
                }
                Request::Upload(file, stream) => {
                    assert_eq!(read_all(file), "upload");
                    (&stream.unwrap()).write_all(b"got it").unwrap();
                    seen.push("upload");
                }
                Request::Tagged(fd, tag) => {
                    assert_eq!(tag, 9);
                    assert_eq!(read_all(File::from(fd)), "tagged");
                    seen.push("tagged");
                }
                Request::Shutdown => {
                    seen.push("shutdown");
                    break;
                }
            }
        }
        assert_eq!(seen, ["open", "upload", "tagged", "shutdown"]);
    });
    drop(requests_rx);

    let (reply, replies) = channel().unwrap();
    requests
        .send(Request::Open {
            path: "/proc/self/exe".into(),
            reply,
        })
        .unwrap();
    let Reply { file, size } = replies.recv().unwrap();
    assert!(size > 0);
    assert_eq!(file.metadata().unwrap().len(), size);

    let (ours, theirs) = UnixStream::pair().unwrap();
    requests
        .send(Request::Upload(file_with("upload"), Some(theirs)))
        .unwrap();
    assert_eq!(read_all(&ours), "got it");
    requests
        .send(Request::Tagged(OwnedFd::from(file_with("tagged")), 9))
        .unwrap();
    requests.send(Request::Shutdown).unwrap();
    child.join();
    drop((requests, replies, file, ours));
    assert_eq!(fd_count(), before);
}

#[derive(IpcMessage, Debug, PartialEq)]
struct Envelope<T> {
    id: u64,
    body: T,
}

#[derive(IpcMessage)]
struct WithFiles<T, const N: usize> {
    label: T,
    files: [Option<File>; N],
    rest: Vec<(T, File)>,
}

#[derive(IpcMessage)]
struct Unit;

#[derive(IpcMessage)]
struct Tuple(u8, File);

#[derive(IpcMessage)]
struct Outer {
    inner: Envelope<Tuple>,
    units: Vec<Unit>,
    #[serde(rename = "renamed")]
    #[ipc(serde)]
    file: NotAFile,
}

/// A type of the user's that only shares a name with a descriptor type.
#[derive(::serde::Serialize, ::serde::Deserialize, Debug, PartialEq)]
#[serde(crate = "::serde")]
struct NotAFile {
    name: String,
}

#[test]
fn generic_nested_and_attributed_messages_cross_processes() {
    let _serial = serial();
    let (envelopes, envelopes_rx) = channel::<Envelope<Vec<String>>>().unwrap();
    let (with_files, with_files_rx) = channel::<WithFiles<String, 3>>().unwrap();
    let (outers, outers_rx) = channel::<Outer>().unwrap();
    let child = fork_child(|| {
        let e = envelopes_rx.recv().unwrap();
        assert_eq!(
            e,
            Envelope {
                id: 1,
                body: vec!["a".to_string()]
            }
        );
        let w = with_files_rx.recv().unwrap();
        assert_eq!(w.label, "files");
        assert!(w.files[0].is_some() && w.files[1].is_none() && w.files[2].is_some());
        assert_eq!(read_all(w.files[2].as_ref().unwrap()), "third");
        assert_eq!(w.rest.len(), 1);
        assert_eq!(w.rest[0].0, "rest");
        assert_eq!(read_all(&w.rest[0].1), "rest file");
        let o = outers_rx.recv().unwrap();
        assert_eq!(o.inner.id, 7);
        assert_eq!(o.inner.body.0, 8);
        assert_eq!(read_all(&o.inner.body.1), "inner");
        assert_eq!(o.units.len(), 2);
        assert_eq!(o.file, NotAFile { name: "x".into() });
    });
    envelopes
        .send(Envelope {
            id: 1,
            body: vec!["a".to_string()],
        })
        .unwrap();
    with_files
        .send(WithFiles {
            label: "files".to_string(),
            files: [Some(file_with("first")), None, Some(file_with("third"))],
            rest: vec![("rest".to_string(), file_with("rest file"))],
        })
        .unwrap();
    outers
        .send(Outer {
            inner: Envelope {
                id: 7,
                body: Tuple(8, file_with("inner")),
            },
            units: vec![Unit, Unit],
            file: NotAFile { name: "x".into() },
        })
        .unwrap();
    child.join();
}

#[test]
fn a_failed_send_of_a_derived_message_keeps_its_descriptors_open() {
    let _serial = serial();
    let (tx, rx) = channel::<Request>().unwrap();
    drop(rx);
    let before = fd_count();
    let file = file_with("kept");
    let raw = file.as_raw_fd();
    let (_ours, theirs) = UnixStream::pair().unwrap();
    let stream_raw = theirs.as_raw_fd();
    let err = tx.send(Request::Upload(file, Some(theirs))).unwrap_err();
    assert!(matches!(err.error(), Error::Disconnected));
    let Request::Upload(file, stream) = err.into_inner() else {
        panic!("the same message comes back")
    };
    assert_eq!(file.as_raw_fd(), raw);
    assert_eq!(stream.as_ref().map(AsRawFd::as_raw_fd), Some(stream_raw));
    assert!(is_open(raw) && is_open(stream_raw));
    assert_eq!(read_all(file), "kept");
    drop(stream);
    assert_eq!(
        fd_count(),
        before + 1,
        "only `_ours` is left of what this test opened"
    );
}

#[test]
fn a_memfd_field_refuses_a_descriptor_that_is_not_a_memfd() {
    let _serial = serial();

    #[derive(IpcMessage)]
    struct Fake {
        raw: OwnedFd,
    }
    #[derive(IpcMessage)]
    struct Real {
        memfd: memfd::Memfd,
    }
    let (tx, rx) = Connection::<Fake, ()>::pair().unwrap();
    let rx = Connection::<(), Real>::from(OwnedFd::from(rx));
    let before = fd_count();
    tx.send(Fake {
        raw: support::dev_nulls(1).remove(0),
    })
    .unwrap();
    match rx.recv() {
        Err(Error::Descriptor(why)) => assert!(why.contains("not a memfd"), "{why}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    assert_eq!(fd_count(), before);
}

mod v1 {
    #[derive(ipc_core::IpcMessage)]
    pub struct Job {
        pub id: u64,
        pub input: std::fs::File,
    }
}

mod same_as_v1 {
    #[derive(ipc_core::IpcMessage)]
    pub struct Job {
        pub id: u64,
        pub input: std::fs::File,
    }
}

mod v2 {
    #[derive(ipc_core::IpcMessage)]
    pub struct Job {
        pub id: u64,
        pub input: Option<std::fs::File>,
    }
}

/// Connects a listener speaking `A` to a client speaking `B` and returns
/// what each side said.
fn handshake<A: IpcMessage, B: IpcMessage>() -> (ipc_core::Result<()>, ipc_core::Result<()>) {
    let name = format!(
        "@ipc-core-fingerprint-{}-{}",
        std::process::id(),
        std::any::type_name::<B>()
    );
    let listener = ipc_core::Listener::<(), A>::bind(&name).unwrap();
    let client = std::thread::spawn(move || Connection::<B, ()>::connect(&name).map(drop));
    let server = listener.accept().map(drop);
    (server, client.join().unwrap())
}

#[test]
fn a_changed_field_changes_the_handshake_and_an_equal_type_passes_it() {
    let _serial = serial();
    let (server, client) = handshake::<v1::Job, same_as_v1::Job>();
    assert!(server.is_ok() && client.is_ok(), "{server:?} {client:?}");
    let (server, client) = handshake::<v1::Job, v2::Job>();
    for side in [server, client] {
        match side {
            Err(Error::TypeMismatch { ours, theirs }) => {
                assert_ne!(ours, theirs);
                assert!(
                    ours.contains("input:") && theirs.contains("input:"),
                    "{ours} / {theirs}"
                );
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }
}

#[derive(IpcMessage, Debug, PartialEq)]
struct Blob {
    name: String,
    data: Vec<u8>,
    parts: Option<Vec<Vec<u8>>>,
}

#[test]
fn byte_vectors_travel_as_bytes_and_read_the_same_as_plain_serde() {
    let _serial = serial();
    let (tx, rx) = channel::<Blob>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        // Small, and large enough to travel out of line.
        for len in [3usize, 200_000] {
            tx.send(Blob {
                name: format!("blob {len}"),
                data: (0..len).map(|i| i as u8).collect(),
                parts: Some(vec![vec![1, 2], vec![]]),
            })
            .unwrap();
        }
    });
    for len in [3usize, 200_000] {
        let blob = rx.recv().unwrap();
        assert_eq!(blob.name, format!("blob {len}"));
        assert_eq!(blob.data, (0..len).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!(blob.parts, Some(vec![vec![1, 2], vec![]]));
    }
    child.join();

    // The wire is postcard's either way: a plain serde tuple of the same
    // shape reads a derived Blob, and the other way round.
    let (tx, rx) = Connection::<Blob, Blob>::pair().unwrap();
    let rx = Connection::<
        (String, Vec<u8>, Option<Vec<Vec<u8>>>),
        (String, Vec<u8>, Option<Vec<Vec<u8>>>),
    >::from(OwnedFd::from(rx));
    let blob = || Blob {
        name: "n".into(),
        data: vec![9; 70],
        parts: None,
    };
    tx.send(blob()).unwrap();
    let (name, data, parts) = rx.recv().unwrap();
    assert_eq!((name.as_str(), data, parts), ("n", vec![9; 70], None));
    rx.send(("n".into(), vec![9; 70], None)).unwrap();
    assert_eq!(tx.recv().unwrap(), blob());
}

#[derive(IpcMessage, Debug)]
struct Keys {
    id: [u8; 32],
    tag: Option<[u8; 4]>,
    list: Vec<[u8; 2]>,
    nested: [[u8; 3]; 2],
    empty: [u8; 0],
    file: Option<File>,
}

fn keys() -> Keys {
    Keys {
        id: std::array::from_fn(|i| i as u8),
        tag: Some(*b"tag!"),
        list: vec![[1, 2], [3, 4]],
        nested: [[5, 6, 7], [8, 9, 10]],
        empty: [],
        file: None,
    }
}

/// `Keys` without its file.
fn arrays(k: &Keys) -> impl PartialEq + std::fmt::Debug + '_ {
    (&k.id, &k.tag, &k.list, &k.nested, &k.empty)
}

/// `Keys` as plain serde reads it: each byte array a byte string.
type KeysOnTheWire = (
    Vec<u8>,
    Option<Vec<u8>>,
    Vec<Vec<u8>>,
    [Vec<u8>; 2],
    Vec<u8>,
    Option<u32>,
);

#[test]
fn byte_arrays_travel_as_byte_strings_and_wrong_lengths_are_refused() {
    let _serial = serial();
    let (tx, rx) = channel::<Keys>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        tx.send(keys()).unwrap();
        tx.send(Keys {
            file: Some(file_with("beside the arrays")),
            ..keys()
        })
        .unwrap();
    });
    let expected = keys();
    let plain = rx.recv().unwrap();
    assert_eq!(arrays(&plain), arrays(&expected));
    assert!(plain.file.is_none());
    let with_file = rx.recv().unwrap();
    assert_eq!(arrays(&with_file), arrays(&expected));
    assert_eq!(read_all(with_file.file.unwrap()), "beside the arrays");
    child.join();

    // On the wire each array is a length and its bytes, as a `Vec<u8>` is.
    let (tx, rx) = Connection::<Keys, Keys>::pair().unwrap();
    let rx = Connection::<KeysOnTheWire, KeysOnTheWire>::from(OwnedFd::from(rx));
    tx.send(keys()).unwrap();
    let (id, tag, list, nested, empty, file) = rx.recv().unwrap();
    assert_eq!(id, (0..32).collect::<Vec<u8>>());
    assert_eq!(tag.as_deref(), Some(&b"tag!"[..]));
    assert_eq!(list, [vec![1, 2], vec![3, 4]]);
    assert_eq!(nested, [vec![5, 6, 7], vec![8, 9, 10]]);
    assert!(empty.is_empty() && file.is_none());

    // A peer that sends one byte too few or too many is refused, and the
    // channel goes on. (The first messages set up the ring lane, and its
    // descriptors, before the count.)
    let good = || {
        (
            vec![7; 32],
            None,
            vec![],
            [vec![0; 3], vec![0; 3]],
            vec![],
            None,
        )
    };
    for _ in 0..4 {
        rx.send(good()).unwrap();
        assert_eq!(tx.recv().unwrap().id, [7; 32]);
    }
    let before = fd_count();
    for id in [vec![0u8; 31], vec![0u8; 33]] {
        rx.send((id, None, vec![], [vec![0; 3], vec![0; 3]], vec![], None))
            .unwrap();
        match tx.recv() {
            Err(Error::Decode(_)) => {}
            other => panic!("a wrong length was accepted: {other:?}"),
        }
    }
    rx.send(good()).unwrap();
    assert_eq!(tx.recv().unwrap().id, [7; 32]);
    assert_eq!(fd_count(), before);
}

mod as_number {
    use ipc_core::__private::serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 4], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(u32::from_le_bytes(*bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 4], D::Error> {
        u32::deserialize(deserializer).map(u32::to_le_bytes)
    }
}

#[derive(IpcMessage, Debug, PartialEq)]
struct PlainArrays {
    #[ipc(serde)]
    tuple: [u8; 4],
    #[serde(with = "as_number")]
    number: [u8; 4],
}

#[test]
fn byte_arrays_keep_plain_serde_when_asked() {
    let (tx, rx) = Connection::<PlainArrays, PlainArrays>::pair().unwrap();
    let rx = Connection::<([u8; 4], u32), ([u8; 4], u32)>::from(OwnedFd::from(rx));
    let value = PlainArrays {
        tuple: [1, 2, 3, 4],
        number: 7u32.to_le_bytes(),
    };
    tx.send(value).unwrap();
    assert_eq!(rx.recv().unwrap(), ([1, 2, 3, 4], 7));
}

/// The std containers the derive walks, with no attribute.
#[derive(IpcMessage)]
struct Containers {
    by_name: HashMap<String, File>,
    ordered: BTreeMap<u32, OwnedFd>,
    grouped: HashMap<String, Vec<File>>,
    shared: Arc<File>,
    local: Rc<File>,
    queue: VecDeque<File>,
    sliced: Box<[File]>,
    nested: Option<BTreeMap<String, (u8, Arc<File>)>>,
    empty: HashMap<u8, File>,
}

#[test]
fn std_containers_of_descriptors_cross_processes() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<Containers>().unwrap();
    let (done, done_rx) = channel::<String>().unwrap();
    let child = fork_child(|| {
        close_in_child(&tx);
        let c = rx.recv().unwrap();
        assert_eq!(c.by_name.len(), 2);
        assert_eq!(read_all(&c.by_name["a"]), "map a");
        assert_eq!(read_all(&c.by_name["b"]), "map b");
        assert_eq!(
            c.ordered.keys().copied().collect::<Vec<_>>(),
            [1, 2],
            "a BTreeMap keeps its keys"
        );
        assert_eq!(read_all(File::from(c.ordered[&2].try_clone().unwrap())), "");
        assert_eq!(c.grouped["g"].len(), 2);
        assert_eq!(read_all(&c.grouped["g"][1]), "group 1");
        assert_eq!(read_all(&*c.shared), "shared");
        assert_eq!(Arc::strong_count(&c.shared), 1, "a fresh Arc on receipt");
        assert_eq!(read_all(&*c.local), "local");
        assert_eq!(c.queue.len(), 2);
        assert_eq!(read_all(&c.queue[0]), "front");
        assert_eq!(read_all(&c.sliced[2]), "slice 2");
        let nested = c.nested.as_ref().unwrap();
        assert_eq!(nested["n"].0, 5);
        assert_eq!(read_all(&*nested["n"].1), "nested");
        assert!(c.empty.is_empty());
        done.send("checked".into()).unwrap();
    });
    drop((rx, done));

    let shared = Arc::new(file_with("shared"));
    let keep = Arc::clone(&shared);
    let containers = Containers {
        by_name: HashMap::from([
            ("a".to_string(), file_with("map a")),
            ("b".to_string(), file_with("map b")),
        ]),
        ordered: BTreeMap::from([
            (2, support::dev_nulls(1).remove(0)),
            (1, support::dev_nulls(1).remove(0)),
        ]),
        grouped: HashMap::from([(
            "g".to_string(),
            vec![file_with("group 0"), file_with("group 1")],
        )]),
        // Sending needs only `&T`: the sender keeps its other handle.
        shared,
        local: Rc::new(file_with("local")),
        queue: VecDeque::from([file_with("front"), file_with("back")]),
        sliced: vec![
            file_with("slice 0"),
            file_with("slice 1"),
            file_with("slice 2"),
        ]
        .into_boxed_slice(),
        nested: Some(BTreeMap::from([(
            "n".to_string(),
            (5, Arc::new(file_with("nested"))),
        )])),
        empty: HashMap::new(),
    };
    tx.send(containers).unwrap();
    assert_eq!(done_rx.recv().unwrap(), "checked");
    assert_eq!(
        read_all(&*keep),
        "",
        "the sender's Arc is the same open file, read to its end"
    );
    child.join();
    drop((tx, done_rx, keep));
    assert_eq!(fd_count(), before);
}

/// A generic field that always holds a descriptor.
#[derive(IpcMessage)]
struct Carrying<T> {
    id: u64,
    #[ipc(fd)]
    body: T,
    #[ipc(fd)]
    spare: Option<T>,
}

#[test]
fn generic_descriptor_fields_cross_processes() {
    let _serial = serial();
    let before = fd_count();
    let (files, files_rx) = channel::<Carrying<File>>().unwrap();
    let (raws, raws_rx) = channel::<Carrying<OwnedFd>>().unwrap();
    let child = fork_child(|| {
        close_in_child(&files);
        close_in_child(&raws);
        let f = files_rx.recv().unwrap();
        assert_eq!(f.id, 1);
        assert_eq!(read_all(&f.body), "generic file");
        assert!(f.spare.is_none());
        let r = raws_rx.recv().unwrap();
        assert_eq!(r.id, 2);
        assert_eq!(read_all(File::from(r.body)), "generic fd");
        assert_eq!(read_all(File::from(r.spare.unwrap())), "spare fd");
    });
    drop((files_rx, raws_rx));
    files
        .send(Carrying {
            id: 1,
            body: file_with("generic file"),
            spare: None,
        })
        .unwrap();
    raws.send(Carrying {
        id: 2,
        body: OwnedFd::from(file_with("generic fd")),
        spare: Some(OwnedFd::from(file_with("spare fd"))),
    })
    .unwrap();
    child.join();
    drop((files, raws));
    assert_eq!(fd_count(), before);
}

/// A module of message types whose nested `Inner` counts in `$count`:
/// two modules differ only inside a nested derived type.
macro_rules! nested_version {
    ($module:ident, $count:ty) => {
        mod $module {
            #[derive(ipc_core::IpcMessage)]
            pub struct Inner {
                pub count: $count,
            }
            #[derive(ipc_core::IpcMessage)]
            pub struct Job {
                pub id: u64,
                pub inner: Inner,
                pub list: Vec<Inner>,
            }
            #[derive(ipc_core::IpcMessage)]
            pub struct Envelope<T> {
                pub body: T,
            }
        }
    };
}

nested_version!(nested_v1, u32);
nested_version!(nested_same_as_v1, u32);
nested_version!(nested_v2, u64);

/// A recursive type: the description names it where it comes again.
#[derive(IpcMessage)]
enum Tree {
    Leaf(u8),
    Node(Box<Tree>, Vec<Tree>),
}

fn assert_mismatch(sides: (ipc_core::Result<()>, ipc_core::Result<()>), inside: &str) {
    let (server, client) = sides;
    for side in [server, client] {
        match side {
            Err(Error::TypeMismatch { ours, theirs }) => {
                assert_ne!(ours, theirs);
                assert!(
                    ours.contains(inside) || theirs.contains(inside),
                    "{ours} / {theirs}"
                );
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }
}

#[test]
fn a_change_inside_a_nested_type_changes_the_handshake() {
    let _serial = serial();
    let (server, client) = handshake::<nested_v1::Job, nested_same_as_v1::Job>();
    assert!(server.is_ok() && client.is_ok(), "{server:?} {client:?}");
    assert_mismatch(
        handshake::<nested_v1::Job, nested_v2::Job>(),
        "struct Inner{count:u64,}",
    );

    // A generic type is described as instantiated.
    let (server, client) = handshake::<
        nested_v1::Envelope<nested_v1::Inner>,
        nested_same_as_v1::Envelope<nested_same_as_v1::Inner>,
    >();
    assert!(server.is_ok() && client.is_ok(), "{server:?} {client:?}");
    assert_mismatch(
        handshake::<nested_v1::Envelope<nested_v1::Inner>, nested_v2::Envelope<nested_v2::Inner>>(),
        "struct Envelope<T>{body:struct Inner{count:u64,},}",
    );

    // A recursive type ends, and matches itself.
    let (server, client) = handshake::<Tree, Tree>();
    assert!(server.is_ok() && client.is_ok(), "{server:?} {client:?}");
}
