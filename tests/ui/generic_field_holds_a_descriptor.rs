use ipc_core::{channel, IpcMessage};
use std::fs::File;

#[derive(IpcMessage)]
struct Envelope<T> {
    id: u64,
    body: T,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (tx, _rx) = channel()?;
    tx.send(Envelope {
        id: 1,
        body: File::open("/dev/null")?,
    })?;
    Ok(())
}
