//! Descriptors crossing processes inside messages: files, channel ends,
//! the 253-descriptor ceiling, close-on-exec, and no leaks.

mod support;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::fs::MetadataExt;

use ipc_core::{channel, Error, Fd, Receiver, Sender};
use serde::{Deserialize, Serialize};
use support::{close_in_child, fd_count, fork_child, is_cloexec, is_open, serial, temp_file};

#[test]
fn a_file_sent_by_a_child_is_the_same_open_file_in_the_parent() {
    let _serial = serial();
    let before = fd_count();
    let dir = std::env::temp_dir().join(format!("ipc-core-fd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shared.txt");
    let (tx, rx) = channel::<Fd<File>>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(b"hello").unwrap();
        tx.send(Fd::new(file)).unwrap();
    });
    drop(tx);
    let mut file = rx.recv().unwrap().into_inner();
    child.join();

    let on_disk = std::fs::metadata(&path).unwrap();
    let got = file.metadata().unwrap();
    assert_eq!(
        (got.st_dev(), got.st_ino()),
        (on_disk.st_dev(), on_disk.st_ino())
    );
    // The offset is shared with the child's open file description: it sits
    // where the child's write left it.
    assert_eq!(file.stream_position().unwrap(), 5);
    file.write_all(b" world").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello world");
    assert!(is_cloexec(&file), "received descriptors are close-on-exec");

    drop(file);
    drop(rx);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(fd_count(), before);
}

#[derive(Serialize, Deserialize)]
struct Request {
    question: String,
    reply: Sender<String>,
}

#[test]
fn a_sender_inside_a_message_is_used_by_the_other_process() {
    let _serial = serial();
    let before = fd_count();
    let (requests, requests_rx) = channel::<Request>().unwrap();
    let child = fork_child(|| {
        close_in_child(&requests);
        for request in requests_rx.iter() {
            let request = request.unwrap();
            request.reply.send(request.question.to_uppercase()).unwrap();
        }
    });
    drop(requests_rx);
    for word in ["one", "two", "three"] {
        let (reply, replies) = channel().unwrap();
        requests
            .send(Request {
                question: word.to_string(),
                reply,
            })
            .unwrap();
        assert_eq!(replies.recv().unwrap(), word.to_uppercase());
        // The child dropped its copy of the reply sender with the request.
        assert!(matches!(replies.recv(), Err(Error::Disconnected)));
    }
    drop(requests);
    child.join();
    assert_eq!(fd_count(), before);
}

#[test]
fn a_receiver_and_a_connection_travel_too() {
    let _serial = serial();
    let (tx, rx) = channel::<(Receiver<u32>, ipc_core::Connection<u32, u32>)>().unwrap();
    let (inner_tx, inner_rx) = channel::<u32>().unwrap();
    let (ours, theirs) = ipc_core::Connection::<u32, u32>::pair().unwrap();
    let child = fork_child(|| {
        close_in_child(&tx);
        close_in_child(&inner_rx);
        close_in_child(&theirs);
        let (numbers, conn) = rx.recv().unwrap();
        let n = numbers.recv().unwrap();
        conn.send(n * 2).unwrap();
    });
    drop(rx);
    tx.send((inner_rx, theirs)).unwrap();
    inner_tx.send(21).unwrap();
    assert_eq!(ours.recv().unwrap(), 42);
    child.join();
}

#[test]
fn two_hundred_fifty_three_descriptors_pass_and_254_are_refused_whole() {
    let _serial = serial();
    let before = fd_count();
    let (tx, rx) = channel::<Vec<Fd<OwnedFd>>>().unwrap();
    let child = fork_child(|| {
        close_in_child(&rx);
        let files: Vec<Fd<OwnedFd>> = support::dev_nulls(253).into_iter().map(Fd::new).collect();
        tx.send(files).unwrap();

        let files: Vec<Fd<OwnedFd>> = support::dev_nulls(254).into_iter().map(Fd::new).collect();
        let raws: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
        let err = tx.send(files).unwrap_err();
        assert!(
            matches!(
                err.error(),
                Error::TooManyDescriptors {
                    count: 254,
                    max: 253
                }
            ),
            "{err:?}"
        );
        assert!(err.error().to_string().contains("another message"));
        let back = err.into_inner();
        assert_eq!(back.len(), 254);
        assert!(
            raws.iter().all(|&fd| is_open(fd)),
            "every descriptor still open"
        );
        tx.send(Vec::new()).unwrap();
    });
    drop(tx);
    let got = rx.recv().unwrap();
    assert_eq!(got.len(), 253);
    let mut inodes: Vec<u64> = got
        .iter()
        .map(|f| {
            File::from(f.as_fd().try_clone_to_owned().unwrap())
                .metadata()
                .unwrap()
                .st_ino()
        })
        .collect();
    inodes.dedup();
    assert_eq!(inodes.len(), 1, "all are /dev/null");
    assert!(got.iter().all(|f| is_cloexec(&**f)));
    drop(got);
    // Nothing of the refused message arrived; the next one did.
    assert_eq!(rx.recv().unwrap().len(), 0);
    child.join();
    drop(rx);
    assert_eq!(fd_count(), before);
}

#[test]
fn descriptor_count_is_unchanged_after_thousands_of_messages() {
    let _serial = serial();
    let (tx, rx) = channel::<(u32, Fd<File>, Option<Fd<OwnedFd>>)>().unwrap();
    let before = fd_count();
    let child = fork_child(|| {
        close_in_child(&rx);
        let mut file = temp_file();
        file.write_all(b"payload").unwrap();
        for i in 0..3000u32 {
            let extra =
                (i % 2 == 0).then(|| Fd::new(OwnedFd::from(File::open("/dev/null").unwrap())));
            tx.send((i, Fd::new(file.try_clone().unwrap()), extra))
                .unwrap();
        }
    });
    // The parent keeps `tx` until the child is done, so the count below is
    // measured with the same descriptors open as `before`.
    for i in 0..3000u32 {
        let (n, file, extra) = rx.recv().unwrap();
        assert_eq!(n, i);
        assert_eq!(extra.is_some(), i % 2 == 0);
        let mut text = String::new();
        (&*file).seek(SeekFrom::Start(0)).unwrap();
        (&*file).read_to_string(&mut text).unwrap();
        assert_eq!(text, "payload");
    }
    child.join();
    assert_eq!(fd_count(), before);
}

#[test]
fn a_failed_send_hands_back_the_message_with_descriptors_open() {
    let _serial = serial();
    let (tx, rx) = channel::<(String, Fd<File>)>().unwrap();
    drop(rx);
    let before = fd_count();
    let file = File::open("/dev/null").unwrap();
    let raw = file.as_raw_fd();
    let err = tx.send(("keep".into(), Fd::new(file))).unwrap_err();
    assert!(matches!(err.error(), Error::Disconnected));
    let (text, file) = err.into_inner();
    assert_eq!(text, "keep");
    assert_eq!(file.as_raw_fd(), raw);
    assert!(is_open(raw));
    assert_eq!(
        fd_count(),
        before + 1,
        "only the file is open, nothing else"
    );
    drop(file);
    assert_eq!(fd_count(), before);
}

#[test]
fn a_descriptor_serialized_outside_a_send_is_an_error() {
    let _serial = serial();
    let fd = Fd::new(File::open("/dev/null").unwrap());
    assert!(postcard::to_allocvec(&fd).is_err());
    let (tx, _rx) = channel::<u8>().unwrap();
    assert!(postcard::to_allocvec(&tx).is_err());
}
