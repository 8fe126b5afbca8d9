use ipc_core::IpcMessage;
use std::fs::File;

#[derive(IpcMessage)]
struct Job {
    #[ipc(descriptor)]
    input: File,
}

fn main() {}
