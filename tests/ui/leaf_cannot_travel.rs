use ipc_core::IpcMessage;
use std::fs::File;
use std::time::Instant;

#[derive(IpcMessage)]
struct Job {
    inputs: Vec<(Instant, File)>,
}

fn main() {}
