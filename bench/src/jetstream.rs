//! The JetStream stream a `nats` run of bench/forward.sh forwards to, managed here so the
//! bench needs no `nats` command-line tool:
//!
//!   jetstream create URL STREAM SUBJECT   a file-backed stream capturing SUBJECT
//!   jetstream count URL STREAM            prints how many messages it holds
//!   jetstream delete URL STREAM
//!
//! `count` is run every 50 ms until the stream holds every event, so it does one request on
//! one connection and nothing else.

use async_nats::jetstream::{self, stream};

const USAGE: &str =
    "usage: jetstream create URL STREAM SUBJECT | count URL STREAM | delete URL STREAM";

type Error = Box<dyn std::error::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Err(error) = run(&args).await {
        eprintln!("jetstream: {error}");
        std::process::exit(1);
    }
}

async fn run(args: &[&str]) -> Result<(), Error> {
    let (command, url, name, rest) = match args {
        [command, url, name, rest @ ..] => (*command, *url, *name, rest),
        _ => return Err(USAGE.into()),
    };
    let connect = async_nats::connect(url);
    let context = jetstream::new(connect.await.map_err(|e| format!("{url}: {e}"))?);
    match (command, rest) {
        ("create", [subject]) => {
            let config = stream::Config {
                name: name.to_owned(),
                subjects: vec![(*subject).to_owned()],
                storage: stream::StorageType::File,
                ..Default::default()
            };
            context.create_stream(config).await?;
        }
        ("count", []) => {
            let stream = context.get_stream(name).await?;
            println!("{}", stream.cached_info().state.messages);
        }
        ("delete", []) => {
            context.delete_stream(name).await?;
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}
