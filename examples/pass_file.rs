//! A parent and a forked child pass an open file and a socket.
//!
//! The child opens a file the parent could not name (it is already
//! unlinked) and one end of a fresh socket pair, and sends both inside one
//! message. The parent reads the file through the received descriptor and
//! talks to the child over the received socket.
//!
//! ```text
//! cargo run --release --example pass_file
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::os::unix::net::UnixStream;

use ipc_core::{Connection, Fd};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use serde::{Deserialize, Serialize};

/// What the child hands the parent.
#[derive(Serialize, Deserialize)]
struct Handover {
    note: String,
    file: Fd<File>,
    socket: Fd<UnixStream>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (parent, child) = Connection::<(), Handover>::pair()?;

    // SAFETY: this program has one thread, so the child starts with every
    // lock free; it runs to `exit` without returning into main's frames.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(parent);
            run_child(child)?;
            std::process::exit(0);
        }
        ForkResult::Parent { child: pid } => {
            drop(child);
            let handover = parent.recv()?;
            println!("parent: received \"{}\"", handover.note);

            let mut text = String::new();
            let mut file = handover.file.into_inner();
            file.rewind()?;
            file.read_to_string(&mut text)?;
            println!("parent: the file says {:?}", text.trim_end());

            let socket = handover.socket.into_inner();
            writeln!(&socket, "ping from the parent")?;
            let mut line = String::new();
            BufReader::new(&socket).read_line(&mut line)?;
            println!("parent: the child answered {:?}", line.trim_end());

            waitpid(pid, None)?;
            println!("parent: child {pid} exited; done");
        }
    }
    Ok(())
}

fn run_child(to_parent: Connection<Handover, ()>) -> Result<(), Box<dyn std::error::Error>> {
    // A file that exists only as an open descriptor.
    let path = std::env::temp_dir().join(format!("pass-file-{}", std::process::id()));
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    writeln!(
        file,
        "written by child {} into an unlinked file",
        std::process::id()
    )?;

    let (ours, theirs) = UnixStream::pair()?;
    to_parent.send(Handover {
        note: "a file and a socket".into(),
        file: Fd::new(file),
        socket: Fd::new(theirs),
    })?;

    let mut line = String::new();
    BufReader::new(&ours).read_line(&mut line)?;
    println!("child:  got {:?} over the socket", line.trim_end());
    writeln!(&ours, "pong from the child")?;
    Ok(())
}
