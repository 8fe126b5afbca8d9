use ipc_core::IpcMessage;

#[derive(IpcMessage)]
union Bits {
    word: u32,
    bytes: [u8; 4],
}

fn main() {}
