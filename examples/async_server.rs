//! An async daemon on a `Listener` that serves many client processes at
//! once, handing each an open file or a sealed shared memory region per
//! request.
//!
//! ```text
//! cargo run --release --features tokio --example async_server
//! ```
//!
//! The server binds an abstract-namespace address, starts client processes
//! (this program re-run with the argument `client`), and serves every
//! connection in a task of its own: it checks the client's credentials,
//! then answers each request with a descriptor. Clients are plain blocking
//! programs; only the server is async.
//!
//! A server must outlive its bad clients: two more processes connect and
//! misbehave (one says nothing, one speaks other message types). Each is
//! refused, logged, and costs the honest clients nothing.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ipc_core::tokio::{AsyncConnection, AsyncListener};
use ipc_core::{Connection, Error, IpcMessage, Listener, SealedMemory};

const CLIENTS: usize = 8;
const REQUESTS: usize = 50;

#[derive(IpcMessage)]
enum Request {
    /// An open file from the server's directory, which clients cannot name.
    File { name: String },
    /// A sealed region of `len` bytes of the server's data.
    Memory { len: usize },
}

#[derive(IpcMessage)]
enum Response {
    File(File),
    Memory(SealedMemory),
    Refused(String),
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Failure> {
    match std::env::args().nth(1).as_deref() {
        Some("client") => return client(),
        Some("silent") => return silent(),
        Some("foreign") => return foreign(),
        _ => {}
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(server())
}

async fn server() -> Result<(), Failure> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("async-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for i in 0..4 {
        std::fs::write(
            dir.join(format!("doc-{i}.txt")),
            format!("document {i}\n").repeat(100),
        )?;
    }
    let addr = format!("@ipc-core-async-server-{}", std::process::id());
    let mut listener = Listener::<Response, Request>::bind(&addr)?;
    // A peer that connects and says nothing is dropped after this long.
    listener.set_greeting_timeout(Duration::from_millis(500));
    let listener = AsyncListener::new(listener)?;
    println!("server:  listening at {addr}");

    let exe = std::env::current_exe()?;
    let spawn = |role: &str| {
        Command::new(&exe)
            .arg(role)
            .env("SERVER_ADDR", &addr)
            .spawn()
    };
    let rogues = [spawn("silent")?, spawn("foreign")?];
    let mut children = Vec::new();
    for _ in 0..CLIENTS {
        children.push(spawn("client")?);
    }

    // Every connection gets a task; a peer that fails to greet, or speaks
    // other types, is one error of `accept`: logged, and the loop goes on.
    let mut sessions = tokio::task::JoinSet::new();
    let mut refused = 0;
    while sessions.len() < CLIENTS || refused < rogues.len() {
        match listener.accept().await {
            Ok(conn) => {
                sessions.spawn(serve(conn, dir.clone()));
            }
            Err(e) => {
                refused += 1;
                println!("server:  refused a peer: {e}");
            }
        }
    }
    let mut served = 0;
    while let Some(session) = sessions.join_next().await {
        match session? {
            Ok(requests) => served += requests,
            // One client's failure ends its session, not the server.
            Err(e) => println!("server:  a session failed: {e}"),
        }
    }
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("a client failed: {status}").into());
        }
    }
    for mut rogue in rogues {
        rogue.wait()?;
    }
    std::fs::remove_dir_all(&dir)?;
    println!(
        "server:  served {served} requests from {CLIENTS} client processes at once in {:.0?}, each answer a descriptor",
        started.elapsed()
    );
    Ok(())
}

/// Serves one client until it hangs up; returns how many requests it made.
async fn serve(conn: AsyncConnection<Response, Request>, dir: PathBuf) -> Result<usize, Failure> {
    let peer = conn.get_ref().peer_credentials()?;
    if peer.uid() != nix::unistd::geteuid().as_raw() {
        conn.send(Response::Refused("other users are not served".into()))
            .await?;
        return Ok(0);
    }
    let mut served = 0;
    loop {
        let request = match conn.recv().await {
            Ok(request) => request,
            Err(Error::Disconnected) => break,
            Err(e) => return Err(e.into()),
        };
        let response = match request {
            Request::File { name } if !name.contains('/') => match File::open(dir.join(&name)) {
                Ok(file) => Response::File(file),
                Err(e) => Response::Refused(format!("{name}: {e}")),
            },
            Request::File { name } => Response::Refused(format!("{name}: not a plain name")),
            Request::Memory { len } if len <= 1 << 20 => {
                let mut region = ipc_core::SharedMemory::new(len)?;
                for (i, b) in region.iter_mut().enumerate() {
                    *b = (i % 251) as u8;
                }
                Response::Memory(region.seal()?)
            }
            Request::Memory { len } => Response::Refused(format!("{len} bytes is too much")),
        };
        conn.send(response).await?;
        served += 1;
    }
    println!(
        "server:  client pid {} made {served} requests and left",
        peer.pid()
    );
    Ok(served)
}

fn client() -> Result<(), Failure> {
    let addr = std::env::var("SERVER_ADDR")?;
    let server = Connection::<Request, Response>::connect(addr)?;
    for i in 0..REQUESTS {
        let request = if i % 2 == 0 {
            Request::File {
                name: format!("doc-{}.txt", i % 4),
            }
        } else {
            Request::Memory {
                len: 4096 * (1 + i % 3),
            }
        };
        server.send(request)?;
        match server.recv()? {
            Response::File(mut file) => {
                let mut text = String::new();
                file.read_to_string(&mut text)?;
                assert!(text.starts_with(&format!("document {}", i % 4)));
            }
            Response::Memory(region) => {
                assert_eq!(region.len(), 4096 * (1 + i % 3));
                assert!(region
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == (i % 251) as u8));
            }
            Response::Refused(why) => return Err(why.into()),
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// A peer that connects and never greets, until the server drops it.
fn silent() -> Result<(), Failure> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let addr = std::env::var("SERVER_ADDR")?;
    let name = addr.trim_start_matches('@');
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::empty(),
        None,
    )?;
    connect(fd.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
    // Reads the server's greeting, then the end: the server hung up.
    let mut buf = [0; 4096];
    while nix::sys::socket::recv(
        fd.as_raw_fd(),
        &mut buf,
        nix::sys::socket::MsgFlags::empty(),
    )? > 0
    {}
    Ok(())
}

/// A peer built for other message types: refused at the greeting, on both
/// sides, before any message is misread.
fn foreign() -> Result<(), Failure> {
    let addr = std::env::var("SERVER_ADDR")?;
    match Connection::<u64, u64>::connect(addr) {
        Err(Error::TypeMismatch { .. }) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(_) => Err("a server of other types accepted this client".into()),
    }
}
