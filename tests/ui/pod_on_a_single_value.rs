use ipc_core::IpcMessage;

#[derive(IpcMessage)]
struct Sample {
    #[ipc(pod)]
    point: [f32; 3],
    #[ipc(pod)]
    weight: f64,
}

fn main() {}
