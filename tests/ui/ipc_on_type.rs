use ipc_core::IpcMessage;

#[derive(IpcMessage)]
#[ipc(fd)]
struct Job {
    id: u64,
}

fn main() {}
