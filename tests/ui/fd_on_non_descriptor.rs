use ipc_core::IpcMessage;

#[derive(IpcMessage)]
struct Job {
    #[ipc(fd)]
    count: u32,
}

fn main() {}
