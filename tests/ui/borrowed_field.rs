use ipc_core::IpcMessage;

#[derive(IpcMessage)]
struct Greeting {
    id: u64,
    name: &'static str,
}

fn main() {}
