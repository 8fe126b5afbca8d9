//! `#[derive(IpcMessage)]` for ipc-core; use it through `ipc_core::IpcMessage`,
//! where it is documented.
//!
//! The derive writes `Serialize` and `Deserialize` for the user's type by
//! way of a hidden serde `remote` shadow, each of whose fields travels
//! through a trait of `ipc_core::__private` chosen by its shape (`Serde`,
//! `Descriptor`, `Walk<Shape>`), so that a type that cannot travel is one
//! error with advice. It reads the input (`ast`, `attr`, `shape`), checks
//! it (`valid`), and writes code (`expand`), or, when the input is wrong,
//! the errors and a stub (`fallback`), so that one mistake reads as one
//! error. `structure` describes the type for the handshake that checks
//! both ends of a connection speak the same types.

mod ast;
mod attr;
mod expand;
mod fallback;
mod shape;
mod structure;
mod valid;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Writes the serde glue for a message type that holds descriptors: fields
/// of descriptor types (also inside std containers), `#[ipc(fd)]`,
/// `#[ipc(pod)]`, `#[ipc(serde)]`, numbers in one copy; see
/// `ipc_core::IpcMessage` for the full list.
///
/// # Examples
///
/// ```
/// use ipc_core::{channel, IpcMessage};
/// use std::collections::HashMap;
/// use std::fs::File;
///
/// #[derive(IpcMessage)]
/// enum Request {
///     Read { path: String },
///     Upload(File, Option<File>),
///     Batch(HashMap<String, Vec<File>>),
///     Samples(Vec<f32>),
///     Shutdown,
/// }
///
/// #[derive(IpcMessage)]
/// struct Envelope<T> {
///     id: u64,
///     #[ipc(fd)]
///     body: T,
/// }
///
/// let (tx, rx) = channel::<Request>()?;
/// tx.send(Request::Upload(File::open("/dev/null")?, None))?;
/// match rx.recv()? {
///     Request::Upload(file, none) => {
///         assert_eq!(file.metadata()?.len(), 0);
///         assert!(none.is_none());
///     }
///     _ => unreachable!(),
/// }
/// tx.send(Request::Samples(vec![0.5, -0.0, f32::MAX]))?;
/// assert!(matches!(rx.recv()?, Request::Samples(s) if s == [0.5, -0.0, f32::MAX]));
///
/// let (tx, rx) = channel::<Envelope<File>>()?;
/// tx.send(Envelope { id: 7, body: File::open("/dev/null")? })?;
/// assert_eq!(rx.recv()?.id, 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[proc_macro_derive(IpcMessage, attributes(ipc, serde))]
pub fn derive_ipc_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(|errors| fallback::expand(&input, errors))
        .into()
}
