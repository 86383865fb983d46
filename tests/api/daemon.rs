//! The real `voltd` binary as a child process, for what only a process can show: signals,
//! exit codes, logs.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::{TestConfig, WEBHOOK_PATH, dead_port, poll_until};

pub struct Daemon {
    pub config: TestConfig,
    pub address: SocketAddr,
    child: Child,
    log_path: PathBuf,
    starts: u32,
    /// A command (and its arguments) that runs voltd, such as `setpriv ...`; empty for none.
    wrapper: Vec<String>,
}

impl Daemon {
    /// Write the configuration for a free port and start `voltd run`; stdout and stderr go to a file.
    pub fn spawn(config: TestConfig) -> Self {
        Self::spawn_wrapped(config, &[])
    }

    /// As [`Daemon::spawn`], with voltd run by `wrapper` (a program and its arguments).
    pub fn spawn_wrapped(config: TestConfig, wrapper: &[&str]) -> Self {
        let port = dead_port();
        config.write(port);
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let log_path = config.dir.path().join("voltd-0.log");
        let wrapper: Vec<String> = wrapper.iter().map(|arg| (*arg).to_owned()).collect();
        let child = start(&config, &log_path, &wrapper);
        Self {
            config,
            address,
            child,
            log_path,
            starts: 1,
            wrapper,
        }
    }

    /// Start the binary again on the same configuration and database (after it exited).
    pub fn restart(&mut self) {
        self.log_path = self
            .config
            .dir
            .path()
            .join(format!("voltd-{}.log", self.starts));
        self.starts += 1;
        self.child = start(&self.config, &self.log_path, &self.wrapper);
    }

    pub fn webhook_url(&self) -> String {
        format!("http://{}{WEBHOOK_PATH}", self.address)
    }

    /// Everything this run logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub async fn wait_until_listening(&mut self) {
        let address = self.address;
        let log_path = self.log_path.clone();
        let child = &mut self.child;
        poll_until("voltd to accept connections", || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("voltd exited with {status} before listening:\n{log}");
            }
            let up = TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok();
            std::future::ready(up.then_some(()))
        })
        .await;
    }

    pub async fn wait_for_log(&self, needle: &str) {
        poll_until(&format!("{needle:?} in the log"), || {
            std::future::ready(self.log().contains(needle).then_some(()))
        })
        .await;
    }

    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id().try_into().expect("pid fits in i32"));
        kill(pid, signal).expect("signal voltd");
    }

    /// The exit code once it exits; `None` when killed by a signal.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let child = &mut self.child;
        let status = poll_until("voltd to exit", || {
            std::future::ready(child.try_wait().expect("wait for voltd"))
        })
        .await;
        status.code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start(config: &TestConfig, log_path: &PathBuf, wrapper: &[String]) -> Child {
    let log = File::create(log_path).expect("create the log file");
    let voltd = env!("CARGO_BIN_EXE_voltd");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(voltd);
            command
        }
        None => Command::new(voltd),
    };
    command
        .env_clear()
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .current_dir(config.dir.path())
        .arg("--config")
        .arg(config.config_path())
        .arg("run")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("share the log file"))
        .stderr(log)
        .spawn()
        .expect("start voltd")
}
