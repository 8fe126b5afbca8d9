//! A privilege-separated worker pool: a broker process opens files and
//! creates sealed shared memory on behalf of workers that never open a path
//! themselves.
//!
//! ```text
//! cargo run --release --example worker_pool
//! ```
//!
//! The broker writes a set of input files, spawns its workers (this program
//! re-run with the argument `worker`), checks each worker's credentials, and
//! hands every worker a sealed table of weights it can trust not to change.
//! Then it opens each input file and sends the open `File` inside a job,
//! together with a `Sender` for the result. Workers read through the
//! descriptor they were given, and answer on the sender the job carried.
//! The broker waits on the results and on every worker at once with
//! `Select`, so a worker that dies is noticed and its jobs go to the others:
//! halfway through, the broker kills one worker with SIGKILL to show it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ipc_core::{channel, process, Connection, Error, IpcMessage, SealedMemory, Select, Sender};

const WORKERS: usize = 4;
const FILES: usize = 240;
const FILE_WORDS: usize = 40_000;
/// Jobs each worker holds at once, so it never waits for the broker.
const IN_FLIGHT: usize = 2;

/// What the broker tells a worker.
#[derive(IpcMessage)]
enum Order {
    /// Weights per byte value, sealed: the worker can trust them.
    Setup {
        worker: usize,
        weights: SealedMemory,
    },
    /// One input to analyse, opened by the broker.
    Work(Job),
}

#[derive(IpcMessage)]
struct Job {
    id: usize,
    input: File,
    reply: Sender<Outcome>,
}

#[derive(IpcMessage, Debug)]
struct Outcome {
    id: usize,
    worker: usize,
    bytes: u64,
    lines: u64,
    words: u64,
    score: u64,
}

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    if std::env::args().nth(1).as_deref() == Some("worker") {
        return worker();
    }
    broker()
}

/// A worker: takes up the connection to the broker and serves it until the
/// broker hangs up.
fn worker() -> Result<(), Failure> {
    let broker = process::parent::<(), Order>()?;
    let Order::Setup { worker, weights } = broker.recv()? else {
        return Err("the broker must send the weights first".into());
    };
    let weights: &[u32] = weights.as_slice_of()?;
    let mut buf = Vec::new();
    loop {
        let job = match broker.recv() {
            Ok(Order::Work(job)) => job,
            Ok(Order::Setup { .. }) => return Err("set up twice".into()),
            Err(Error::Disconnected) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        buf.clear();
        (&job.input).read_to_end(&mut buf)?;
        let mut outcome = Outcome {
            id: job.id,
            worker,
            bytes: buf.len() as u64,
            lines: 0,
            words: 0,
            score: 0,
        };
        let mut in_word = false;
        for &b in &buf {
            outcome.score += u64::from(weights[b as usize]);
            outcome.lines += u64::from(b == b'\n');
            let letter = b.is_ascii_alphanumeric();
            outcome.words += u64::from(letter && !in_word);
            in_word = letter;
        }
        job.reply.send(outcome)?;
    }
}

struct Worker {
    child: Child,
    connection: Connection<Order, ()>,
    pending: Vec<usize>,
    done: usize,
}

fn broker() -> Result<(), Failure> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("worker-pool-{}", std::process::id()));
    let inputs = write_inputs(&dir)?;
    let total_bytes: u64 = inputs
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "broker:  wrote {FILES} input files ({:.1} MB) in {:.0?}",
        total_bytes as f64 / 1e6,
        started.elapsed()
    );

    // Weights the workers must be able to trust: sealed before they see them.
    let table: Vec<u32> = (0..256u32)
        .map(|b| {
            if (b as u8).is_ascii_alphabetic() {
                b % 7 + 1
            } else {
                0
            }
        })
        .collect();
    let weights = SealedMemory::new(bytemuck::cast_slice(&table))?;

    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    for id in 0..WORKERS {
        let (child, connection) = process::spawn::<Order, ()>(Command::new(&exe).arg("worker"))?;
        // Who greeted on the child's end, as the kernel vouches for it: the
        // child itself, with the uid it runs as now.
        let peer = connection.peer_credentials()?;
        if peer.pid() as u32 != child.id() {
            return Err(format!("worker {id} is not the process spawned; refusing it").into());
        }
        // A broker serves only workers of its own user.
        if peer.uid() != nix::unistd::geteuid().as_raw() {
            return Err(format!("worker {id} runs as uid {}; refusing it", peer.uid()).into());
        }
        connection.send(Order::Setup {
            worker: id,
            weights: weights.try_clone()?,
        })?;
        println!(
            "broker:  worker {id} is pid {} (uid {}, pidfd: {})",
            child.id(),
            peer.uid(),
            peer.pidfd().is_some()
        );
        workers.push(Worker {
            child,
            connection,
            pending: Vec::new(),
            done: 0,
        });
    }

    let (reply, results) = channel::<Outcome>()?;
    let mut select = Select::new()?;
    const RESULTS: usize = usize::MAX;
    select.register(&results, RESULTS)?;
    for (id, w) in workers.iter().enumerate() {
        select.register(&w.connection, id)?;
    }

    let mut queue: VecDeque<usize> = (0..inputs.len()).collect();
    let mut alive: Vec<bool> = vec![true; WORKERS];
    for w in &mut workers {
        for _ in 0..IN_FLIGHT {
            dispatch(w, &mut queue, &inputs, &reply)?;
        }
    }

    let mut totals = Outcome {
        id: 0,
        worker: 0,
        bytes: 0,
        lines: 0,
        words: 0,
        score: 0,
    };
    let mut finished = 0;
    let mut next_report = FILES / 10;
    let mut killed = false;
    let mut completed = vec![false; inputs.len()];
    while finished < inputs.len() {
        let ready = select.wait(Some(Duration::from_secs(30)))?.to_vec();
        for token in ready {
            if token == RESULTS {
                while let Ok(outcome) = results.try_recv() {
                    let w = &mut workers[outcome.worker];
                    w.pending.retain(|&id| id != outcome.id);
                    // A job requeued from a dying worker may be answered twice.
                    if std::mem::replace(&mut completed[outcome.id], true) {
                        continue;
                    }
                    w.done += 1;
                    totals.bytes += outcome.bytes;
                    totals.lines += outcome.lines;
                    totals.words += outcome.words;
                    totals.score += outcome.score;
                    finished += 1;
                    dispatch(w, &mut queue, &inputs, &reply)?;
                }
                if finished >= inputs.len() / 2 && alive[WORKERS - 1] && !killed {
                    // Show what a crash looks like from here: the broker
                    // notices through Select and hands the jobs on.
                    killed = true;
                    eprintln!(
                        "broker:  sending SIGKILL to worker {} halfway through",
                        WORKERS - 1
                    );
                    workers[WORKERS - 1].child.kill()?;
                }
                if finished >= next_report {
                    let filled = finished * 30 / inputs.len();
                    eprintln!(
                        "broker:  [{}{}] {finished}/{} files, {:.1} MB",
                        "#".repeat(filled),
                        ".".repeat(30 - filled),
                        inputs.len(),
                        totals.bytes as f64 / 1e6
                    );
                    next_report += FILES / 10;
                }
            } else if alive[token] {
                // Workers send nothing on their connection but their
                // greeting, which the first receive reads and checks; after
                // it, the connection is readable only when the worker is gone.
                match workers[token].connection.try_recv() {
                    Err(Error::Empty) => continue,
                    Err(Error::Disconnected) => {}
                    Ok(()) => return Err("a worker spoke out of turn".into()),
                    Err(e) => return Err(e.into()),
                }
                alive[token] = false;
                let w = &mut workers[token];
                select.deregister(&w.connection)?;
                eprintln!(
                    "broker:  worker {token} died; {} of its jobs go to the others",
                    w.pending.len()
                );
                queue.extend(w.pending.drain(..));
                for other in workers
                    .iter_mut()
                    .zip(&alive)
                    .filter(|(_, a)| **a)
                    .map(|(w, _)| w)
                {
                    dispatch(other, &mut queue, &inputs, &reply)?;
                }
            }
        }
    }

    let elapsed = started.elapsed();
    for (id, mut w) in workers.into_iter().enumerate() {
        // Hanging up tells the worker to finish.
        drop(w.connection);
        let status = w.child.wait()?;
        println!(
            "broker:  worker {id} analysed {:>3} files and exited with {status}",
            w.done
        );
    }
    std::fs::remove_dir_all(&dir)?;
    println!(
        "broker:  {} files, {:.1} MB, {} lines, {} words, score {} in {:.2?} ({:.0} MB/s); workers never opened a file",
        inputs.len(),
        totals.bytes as f64 / 1e6,
        totals.lines,
        totals.words,
        totals.score,
        elapsed,
        totals.bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Opens the next queued input on the worker's behalf and sends it.
fn dispatch(
    w: &mut Worker,
    queue: &mut VecDeque<usize>,
    inputs: &[PathBuf],
    reply: &Sender<Outcome>,
) -> Result<(), Failure> {
    if w.pending.len() >= IN_FLIGHT {
        return Ok(());
    }
    let Some(id) = queue.pop_front() else {
        return Ok(());
    };
    let input = File::open(&inputs[id])?;
    match w.connection.send(Order::Work(Job {
        id,
        input,
        reply: reply.clone(),
    })) {
        Ok(()) => w.pending.push(id),
        // The worker is gone; Select will report it, and its jobs are requeued.
        Err(e) if matches!(e.error(), Error::Disconnected) => queue.push_front(id),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Writes the input files: lines of pseudo-random words.
fn write_inputs(dir: &PathBuf) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..FILES)
        .map(|i| {
            let path = dir.join(format!("input-{i:03}.txt"));
            let mut out = BufWriter::new(File::create(&path)?);
            for w in 0..FILE_WORDS {
                let r = next();
                let len = 2 + (r % 9) as usize;
                let word: String = (0..len)
                    .map(|k| (b'a' + ((r >> (k * 5)) % 26) as u8) as char)
                    .collect();
                out.write_all(word.as_bytes())?;
                out.write_all(if w % 12 == 11 { b"\n" } else { b" " })?;
            }
            out.flush()?;
            Ok(path)
        })
        .collect()
}
