use ipc_core::IpcMessage;

#[derive(IpcMessage)]
struct Borrowing<'a> {
    text: std::borrow::Cow<'a, str>,
}

fn main() {}
