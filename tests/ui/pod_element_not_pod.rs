use ipc_core::IpcMessage;

struct Point {
    x: f32,
    y: f32,
}

#[derive(IpcMessage)]
struct Path {
    #[ipc(pod)]
    points: Vec<Point>,
}

fn main() {}
