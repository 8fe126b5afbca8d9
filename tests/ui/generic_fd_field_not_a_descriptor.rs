use ipc_core::{channel, IpcMessage};

#[derive(IpcMessage)]
struct Envelope<T> {
    id: u64,
    #[ipc(fd)]
    body: T,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (tx, _rx) = channel()?;
    tx.send(Envelope { id: 1, body: 7u32 })?;
    Ok(())
}
