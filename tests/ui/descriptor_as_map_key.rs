use ipc_core::IpcMessage;
use std::collections::HashMap;
use std::fs::File;

#[derive(IpcMessage)]
struct Index {
    by_file: HashMap<File, String>,
}

fn main() {}
