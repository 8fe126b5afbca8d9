use ipc_core::IpcMessage;
use std::collections::LinkedList;
use std::fs::File;

// The derive walks Option, Vec, VecDeque, Box, Arc, Rc, HashMap, BTreeMap,
// arrays and tuples; a descriptor in any other container (this one, or
// SmallVec, IndexMap) must be an `Fd<T>`.
#[derive(IpcMessage)]
struct Batch {
    files: LinkedList<File>,
}

fn main() {}
