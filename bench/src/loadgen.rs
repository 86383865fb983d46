//! Closed-loop HTTP/1.1 load generator for voltd's webhook endpoint.
//!
//! Each connection sends one request, waits for its answer, and sends the next, until the
//! deadline; a request already sent when the deadline passes is still waited for, so every
//! event the server acknowledged is counted and the bench can compare it with the rows stored.
//! Requests are pre-built bytes whose fixed-width message id is patched in place, so the
//! generator spends as little of the shared CPUs as possible.
//!
//! Message ids are random and UUID-shaped by default, as Volt's opaque ids are to voltd: each
//! new event's dedup key lands anywhere in key order. `--ids sequential` numbers them per
//! connection instead (64 counters appending into 64 regions of key order), which flatters
//! any store that indexes the key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection that cannot get an answer for this long counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Both id forms are this wide, so one template serves either: a UUID's 36 characters.
const ID_WIDTH: usize = 36;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`, from a generator seeded per connection and run.
    Random,
    /// The connection's own counter, zero-padded.
    Sequential,
}

struct Options {
    addr: SocketAddr,
    path: String,
    connections: usize,
    duration: Duration,
    run_id: String,
    ids: Ids,
    /// With `--events N`, the run ends once N requests have been sent (or at `duration`).
    events: Option<u64>,
}

#[derive(Default)]
struct Tally {
    /// Answered 200 with `"status":"stored"`: a new row.
    stored: u64,
    /// Answered 200 with anything else (a duplicate would mean the ids were not unique).
    other_ok: u64,
    /// Answered 503: refused under load, nothing stored.
    unavailable: u64,
    other_status: u64,
    /// Sent, but the connection failed before an answer: stored or not, we cannot know.
    transport_errors: u64,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.stored += other.stored;
        self.other_ok += other.other_ok;
        self.unavailable += other.unavailable;
        self.other_status += other.other_status;
        self.transport_errors += other.transport_errors;
        self.latencies_us.extend(other.latencies_us);
    }
}

fn parse_options() -> Result<Options, String> {
    let mut addr = None;
    let mut path = None;
    let mut connections = None;
    let mut duration = Duration::from_secs(10);
    let mut run_id = String::from("run");
    let mut events = None;
    let mut ids = Ids::Random;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().map_err(|e| format!("--addr: {e}"))?),
            "--path" => path = Some(value),
            "--connections" => {
                connections = Some(value.parse().map_err(|e| format!("--connections: {e}"))?)
            }
            "--seconds" => {
                let secs: f64 = value.parse().map_err(|e| format!("--seconds: {e}"))?;
                duration = Duration::from_secs_f64(secs);
            }
            "--run-id" => run_id = value,
            "--events" => events = Some(value.parse().map_err(|e| format!("--events: {e}"))?),
            "--ids" => {
                ids = match value.as_str() {
                    "random" => Ids::Random,
                    "sequential" => Ids::Sequential,
                    _ => return Err("--ids must be random or sequential".into()),
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    let addr: SocketAddr = addr.ok_or("--addr is required")?;
    if !addr.ip().is_loopback() {
        return Err("--addr must be a loopback address".into());
    }
    Ok(Options {
        addr,
        path: path.ok_or("--path is required")?,
        connections: connections.ok_or("--connections is required")?,
        duration,
        run_id,
        ids,
        events,
    })
}

/// A ~300-byte body shaped like Volt's `message.received`, and where its message id is.
/// Sequential ids start with the run, level and connection, so that they stay unique across
/// the levels of one benchmark; random ids are the UUID alone.
fn request_template(options: &Options, connection: usize) -> (Vec<u8>, usize) {
    let id_prefix = match options.ids {
        Ids::Random => String::new(),
        Ids::Sequential => format!(
            "bench-{}-c{}-n{connection:05}-",
            options.run_id, options.connections
        ),
    };
    let placeholder = "0".repeat(ID_WIDTH);
    let body = format!(
        concat!(
            r#"{{"payload":{{"event_type":"message.received","id":"{prefix}{placeholder}","#,
            r#""direction":"inbound","from_number":"+15555550123","to_number":"+15555550145","#,
            r#""text":"Yes, please confirm my appointment for Thursday at 10am. Thanks!","#,
            r#""type":"SMS","status":"received","error_code":null,"#,
            r#""created_at":"2026-11-26T12:00:00.000Z"}}}}"#
        ),
        prefix = id_prefix,
        placeholder = placeholder,
    );
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        options.path,
        options.addr,
        body.len()
    );
    let id_at = head.len() + body.find(&placeholder).expect("the id is in the body");
    let mut request = head.into_bytes();
    request.extend_from_slice(body.as_bytes());
    (request, id_at)
}

fn write_counter(slot: &mut [u8], mut n: u64) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// SplitMix64: a few instructions an id, and 128 distinct-looking bits from two calls. Not
/// for secrets; the ids only have to be unique and scattered.
struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded from the run, the level and the connection, so that no two connections of one
    /// benchmark share a sequence.
    fn for_connection(options: &Options, connection: usize) -> Self {
        let mut seed = 0xcbf2_9ce4_8422_2325_u64;
        let text = format!("{}/{}/{connection}", options.run_id, options.connections);
        for byte in text.bytes() {
            seed = (seed ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A version-4 UUID's text form of 128 random bits.
fn write_uuid(slot: &mut [u8], random: &mut SplitMix64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = (u128::from(random.next()) << 64) | u128::from(random.next());
    let mut nibbles = (0..32).rev().map(|i| (bits >> (i * 4)) as usize & 0xf);
    for (at, byte) in slot.iter_mut().enumerate() {
        *byte = match at {
            8 | 13 | 18 | 23 => b'-',
            14 => b'4',
            19 => HEX[8 | (nibbles.next().unwrap_or(0) & 3)],
            _ => HEX[nibbles.next().unwrap_or(0)],
        };
    }
}

enum Answer {
    Status { code: u16, stored: bool },
}

/// Read one response (status line, headers, `Content-Length` body) from the connection.
/// `buffer` may hold bytes of the next response afterwards; none are expected (no pipelining).
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<Answer> {
    buffer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end])
                .map_err(|_| std::io::Error::other("response head is not UTF-8"))?;
            let code: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other("no status code"))?;
            let length: usize = head
                .split("\r\n")
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            let body_start = end + 4;
            while buffer.len() < body_start + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            let body = &buffer[body_start..body_start + length];
            let stored = find(body, br#""status":"stored""#).is_some();
            return Ok(Answer::Status { code, stored });
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn drive(
    addr: SocketAddr,
    mut request: Vec<u8>,
    id_at: usize,
    mut ids: Option<SplitMix64>,
    start: Instant,
    deadline: Instant,
    budget: Arc<AtomicU64>,
) -> Tally {
    let mut tally = Tally::default();
    let mut buffer = Vec::with_capacity(4096);
    let mut stream = None;
    let mut sequence = 0u64;
    tokio::time::sleep_until(start.into()).await;
    while Instant::now() < deadline {
        // Each request takes one from the shared budget; none left ends the connection.
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_err()
        {
            break;
        }
        let connection = match stream.as_mut() {
            Some(connection) => connection,
            None => match TcpStream::connect(addr).await {
                Ok(connection) => {
                    connection.set_nodelay(true).ok();
                    stream.insert(connection)
                }
                Err(_) => {
                    tally.transport_errors += 1;
                    // Back off so a refused connection does not spin until the deadline.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let id = &mut request[id_at..id_at + ID_WIDTH];
        match ids.as_mut() {
            Some(random) => write_uuid(id, random),
            None => write_counter(id, sequence),
        }
        sequence += 1;
        let sent = Instant::now();
        let exchange = async {
            connection.write_all(&request).await?;
            read_response(connection, &mut buffer).await
        };
        match tokio::time::timeout(RESPONSE_TIMEOUT, exchange).await {
            Ok(Ok(Answer::Status { code, stored })) => {
                let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                tally.latencies_us.push(micros);
                match (code, stored) {
                    (200, true) => tally.stored += 1,
                    (200, false) => tally.other_ok += 1,
                    (503, _) => tally.unavailable += 1,
                    _ => tally.other_status += 1,
                }
            }
            Ok(Err(_)) | Err(_) => {
                tally.transport_errors += 1;
                stream = None;
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!(
                "loadgen: {e}\nusage: loadgen --addr 127.0.0.1:PORT --path /PATH --connections N \
                 [--seconds 10] [--events N] [--run-id ID] [--ids random|sequential]"
            );
            std::process::exit(2);
        }
    };
    // One thread: on a small machine every core the generator takes is one the server lacks.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tally = runtime.block_on(async {
        // Connect-time setup happens before the clock starts.
        let start = Instant::now() + Duration::from_millis(200);
        let deadline = start + options.duration;
        let budget = Arc::new(AtomicU64::new(options.events.unwrap_or(u64::MAX)));
        let tasks: Vec<_> = (0..options.connections)
            .map(|c| {
                let (request, id_at) = request_template(&options, c);
                let ids =
                    (options.ids == Ids::Random).then(|| SplitMix64::for_connection(&options, c));
                tokio::spawn(drive(
                    options.addr,
                    request,
                    id_at,
                    ids,
                    start,
                    deadline,
                    budget.clone(),
                ))
            })
            .collect();
        let mut tally = Tally::default();
        for task in tasks {
            tally.merge(task.await.expect("connection task"));
        }
        (tally, start.elapsed())
    });
    let (mut tally, elapsed) = tally;
    tally.latencies_us.sort_unstable();
    let seconds = elapsed.as_secs_f64();
    // key=value, one per line, for bench/ingest.sh.
    println!("connections={}", options.connections);
    println!("seconds={seconds:.3}");
    println!("stored={}", tally.stored);
    println!("other_ok={}", tally.other_ok);
    println!("unavailable={}", tally.unavailable);
    println!("other_status={}", tally.other_status);
    println!("transport_errors={}", tally.transport_errors);
    println!(
        "ok_per_sec={:.0}",
        (tally.stored + tally.other_ok) as f64 / seconds
    );
    println!("p50_ms={:.2}", percentile(&tally.latencies_us, 50.0));
    println!("p99_ms={:.2}", percentile(&tally.latencies_us, 99.0));
    println!("max_ms={:.2}", percentile(&tally.latencies_us, 100.0));
}
