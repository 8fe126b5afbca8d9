//! `#[derive(IpcMessage)]` for ipc-core.
