//! The daemon's stderr, written in batches: one `write(2)` carries every line of the last
//! couple of milliseconds.
//!
//! Every event is logged, and a `write(2)` per line was a twentieth of the daemon's CPU time
//! under load (bench/RESULTS.md). Here a line is appended to a buffer in memory, and a thread
//! of its own writes the buffer out: at once when it was idle, so a lone line is not held
//! back, and then no sooner than [`GATHER`] later, so that under load the lines of that time
//! go out together. Nothing is dropped: past [`MAX_BUFFERED`] a logging thread writes the
//! buffer out itself, in order, before it goes on. [`flush`] writes what is left, for
//! shutdown, a panic and `exit`.
//!
//! Rejected: `tracing-appender`'s non-blocking writer, which hands each line to its thread
//! over a channel and wakes that thread for it: a wake-up costs the logging thread as much
//! as the `write(2)` it replaces, and the lines still go out one by one.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writing thread gathers lines after each write. Also the most a line waits
/// while lines arrive, and so the most a `kill -9` can lose of the log.
const GATHER: Duration = Duration::from_millis(2);
/// Bytes held before a logging thread stops to write them itself (stderr is not taking them).
const MAX_BUFFERED: usize = 1 << 20;

/// Where the lines go: stderr in the daemon, a pipe of its own in tests.
type Output = Box<dyn Write + Send>;

struct Shared {
    pending: Mutex<Pending>,
    /// Bytes held before a logging thread writes them itself: [`MAX_BUFFERED`], or none when
    /// there is no writing thread.
    limit: usize,
    /// Signalled when lines arrive while the writing thread waits for some.
    arrived: Condvar,
    /// Held while taking the pending lines and writing them, so batches keep their order.
    output: Mutex<Output>,
}

impl Shared {
    fn new(output: Output, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            pending: Mutex::new(Pending::default()),
            limit,
            arrived: Condvar::new(),
            output: Mutex::new(output),
        })
    }
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// The writing thread is waiting on `arrived` (only then is it worth a wake-up).
    idle: bool,
}

/// The daemon's stderr writer; see the module documentation.
#[derive(Clone)]
pub struct BufferedStderr(Arc<Shared>);

/// The buffer whose lines [`flush`] writes out: the daemon's one.
static INSTALLED: OnceLock<BufferedStderr> = OnceLock::new();

impl BufferedStderr {
    /// The process's buffered stderr, with its writing thread started on first use.
    pub fn install() -> Self {
        INSTALLED
            .get_or_init(|| Self::start(Box::new(std::io::stderr())))
            .clone()
    }

    fn start(output: Output) -> Self {
        let shared = Shared::new(output, MAX_BUFFERED);
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("voltd-log".into())
            .spawn(move || write_out_forever(&writer))
            .map(|_| Self(shared))
            // Without the thread, each line is written by whoever logs it, as plain stderr.
            .unwrap_or_else(|_| Self(Shared::new(Box::new(std::io::stderr()), 0)))
    }

    fn append(&self, line: &[u8]) {
        let mut pending = lock(&self.0.pending);
        pending.lines.extend_from_slice(line);
        let full = pending.lines.len() >= self.0.limit;
        let wake = std::mem::take(&mut pending.idle);
        drop(pending);
        if wake {
            self.0.arrived.notify_one();
        }
        if full {
            write_pending(&self.0);
        }
    }
}

/// Write out every line logged so far (by the installed buffer; nothing if there is none).
pub fn flush() {
    if let Some(buffer) = INSTALLED.get() {
        write_pending(&buffer.0);
    }
}

fn write_out_forever(shared: &Shared) {
    loop {
        {
            let mut pending = lock(&shared.pending);
            while pending.lines.is_empty() {
                pending.idle = true;
                pending = shared
                    .arrived
                    .wait(pending)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        write_pending(shared);
        std::thread::sleep(GATHER);
    }
}

fn write_pending(shared: &Shared) {
    let mut output = lock(&shared.output);
    let lines = std::mem::take(&mut lock(&shared.pending).lines);
    if lines.is_empty() {
        return;
    }
    // Nowhere else to report a failed write to stderr; the lines are gone either way.
    let _ = output.write_all(&lines);
    let _ = output.flush();
}

/// A thread that panicked while logging leaves plain bytes behind, still fit to write.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Write for BufferedStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader};
    use std::sync::mpsc::Receiver;

    use super::*;

    /// A buffer writing into a pipe, and the first `lines` lines read from that pipe.
    fn into_pipe(lines: usize) -> (BufferedStderr, Receiver<Vec<String>>) {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        let (send, read) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let read = BufReader::new(reader)
                .lines()
                .take(lines)
                .map(|line| line.expect("a line"))
                .collect();
            let _ = send.send(read);
        });
        (BufferedStderr::start(Box::new(writer)), read)
    }

    /// What `reading` read, failing if the lines do not all arrive within a while.
    fn arrived(reading: &Receiver<Vec<String>>) -> Vec<String> {
        reading
            .recv_timeout(Duration::from_secs(10))
            .expect("the lines arrive within 10 s")
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let (mut buffer, reading) = into_pipe(1);
        buffer.write_all(b"one line\n").unwrap();
        assert_eq!(arrived(&reading), ["one line"]);
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_in_each_threads_order() {
        let (buffer, reading) = into_pipe(4 * 5_000);
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let mut buffer = buffer.clone();
                std::thread::spawn(move || {
                    // One write a line, as the subscriber makes: each write is kept whole.
                    for n in 0..5_000 {
                        let line = format!("thread {thread} line {n}\n");
                        buffer.write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_in_order(&arrived(&reading), 4);
    }

    #[test]
    fn lines_held_up_by_a_stalled_output_are_all_written_in_order_once_it_moves() {
        let line_bytes = 64;
        let lines = 2 * MAX_BUFFERED / line_bytes;
        let (buffer, reading) = into_pipe(lines);
        // A stalled stderr: neither the writing thread nor a full buffer's logger can write.
        let stalled = lock(&buffer.0.output);
        let mut logger = buffer.clone();
        let logging = std::thread::spawn(move || {
            for n in 0..lines {
                let line = format!("thread 0 line {n:0width$}\n", width = line_bytes - 15);
                logger.write_all(line.as_bytes()).unwrap();
            }
        });
        while lock(&buffer.0.pending).lines.len() < MAX_BUFFERED {
            assert!(
                !logging.is_finished(),
                "the logger went on past a full buffer"
            );
            std::thread::yield_now();
        }
        drop(stalled);
        logging.join().unwrap();
        assert_in_order(&arrived(&reading), 1);
    }

    /// `lines` are `thread T line N`, each thread's N counting up from 0 with none missing.
    fn assert_in_order(lines: &[String], threads: usize) {
        let mut next = vec![0usize; threads];
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            let thread: usize = words[1].parse().unwrap();
            assert_eq!(words[3].parse::<usize>().unwrap(), next[thread], "{line}");
            next[thread] += 1;
        }
        assert_eq!(next.iter().sum::<usize>(), lines.len());
    }
}
