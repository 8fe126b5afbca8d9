use ipc_core::IpcMessage;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Like tokio's `UnixStream`: it owns a descriptor, but nothing rebuilds it
/// from one.
mod tokio_like {
    use super::*;

    pub struct UnixStream(pub OwnedFd);

    impl AsFd for UnixStream {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }
    }
}

#[derive(IpcMessage)]
struct Job {
    id: u64,
    stream: tokio_like::UnixStream,
}

fn main() {}
