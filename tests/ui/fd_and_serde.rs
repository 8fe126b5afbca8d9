use ipc_core::IpcMessage;
use std::fs::File;

#[derive(IpcMessage)]
struct Job {
    #[ipc(fd, serde)]
    input: File,
}

fn main() {}
