//! Command line: parse, load configuration, run one command, map errors to exit codes.

mod args;
mod deliveries;
mod display;
mod events;
mod replay;
mod run;
mod send_test;
mod tail;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use self::args::{Cli, Command};
use crate::config::{ConfigError, Settings};
use crate::error_chain::ErrorChain;
use crate::ops::log_buffer;
use crate::receiver::signatures::{PublicKeyError, SignatureCheck};
use crate::receiver::tls::{ReloadableCert, TlsError};
use crate::store::{InvalidPostgresUrl, Store};
use crate::ui::UiPasswordError;
use crate::volt::VoltError;
use crate::volt::registration::RegistrationError;
use crate::volt::token::{self, TokenError};

/// sysexits.h EX_CONFIG: configuration or credential error; systemd units use it with
/// `RestartPreventExitStatus=` so a bad config is not restarted in a loop.
pub const EXIT_CONFIG: u8 = 78;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = execute(cli);
    // The last log lines come before the error, and before the process ends.
    log_buffer::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader has gone (`voltd events list | head`): nothing is left to say to it.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voltd: error: {}", ErrorChain(e.as_ref()));
            ExitCode::from(exit_code(&e))
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Run);
    let settings = Settings::load(cli.config.as_deref())?;
    Store::check_url(&settings.storage.url)?;
    let system = actix_web::rt::System::new();
    match command {
        Command::Run => {
            let token = token::load(&settings.api)?;
            system.block_on(run::daemon(settings, token))
        }
        Command::CheckConfig => check_config(&settings),
        Command::Migrate => system.block_on(async {
            let store = open_store(&settings).await?;
            store.close().await;
            print_line(format_args!(
                "Migrations applied to {}",
                crate::config::redacted_url(&settings.storage.url)
            ))
        }),
        Command::Register => {
            let token = token::load(&settings.api)?.ok_or(TokenError::NotConfigured)?;
            system.block_on(run::register_once(settings, token))
        }
        Command::Events(command) => system.block_on(events::execute(command, settings)),
        Command::Deliveries(command) => system.block_on(deliveries::execute(command, settings)),
        Command::SendTestEvent { event_type } => {
            system.block_on(send_test::execute(event_type, settings))
        }
    }
}

/// Read everything `run` would read before it starts (the token file, Volt's public key, the
/// sinks' files, the TLS files), then print the warnings and the effective configuration.
fn check_config(settings: &Settings) -> anyhow::Result<()> {
    token::load(&settings.api)?;
    SignatureCheck::load(&settings.verify)?;
    crate::forward::check_files(&settings.forward)?;
    if let Some(files) = settings.server.tls() {
        ReloadableCert::load(files.cert, files.key)?;
    }
    for warning in settings.warnings() {
        eprintln!("warning: {warning}");
    }
    print_line(settings.check_config_view()?.trim_end())
}

/// Open the store and bring its schema up to date.
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::open(&settings.storage.url).await?;
    store.migrate().await?;
    Ok(store)
}

/// Open the store for a command that inspects it: it must exist already.
async fn open_existing_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::open_existing(&settings.storage.url).await?;
    store.migrate().await?;
    Ok(store)
}

/// Write one line of command output; a failed write is an error, never a panic.
fn print_line(line: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// 78 for configuration and credential errors, 1 for everything else.
fn exit_code(error: &anyhow::Error) -> u8 {
    let config_or_credential = error.chain().any(|cause| {
        cause.is::<ConfigError>()
            || cause.is::<TokenError>()
            || cause.is::<PublicKeyError>()
            || cause.is::<InvalidPostgresUrl>()
            || cause.is::<TlsError>()
            || cause.is::<crate::forward::SinkFileError>()
            || cause.is::<UiPasswordError>()
            || cause
                .downcast_ref::<VoltError>()
                .is_some_and(VoltError::is_credential)
            || cause
                .downcast_ref::<RegistrationError>()
                .is_some_and(RegistrationError::is_credential)
    });
    if config_or_credential { EXIT_CONFIG } else { 1 }
}

#[cfg(test)]
mod tests {
    use sqlx::migrate::MigrateError;

    use super::*;
    use crate::store::StoreError;

    fn last_line(error: impl Into<anyhow::Error>) -> String {
        ErrorChain(error.into().as_ref()).to_string()
    }

    #[test]
    fn each_cause_is_said_once() {
        // sqlx's migration error repeats its cause in its own text and returns it as the
        // source too.
        let repeating = MigrateError::Execute(sqlx::Error::Protocol("no schema selected".into()));
        let line = last_line(StoreError::Migrate(repeating));
        assert!(
            line.starts_with("cannot apply database migrations (the database user must"),
            "{line}"
        );
        assert!(
            line.ends_with(
                "TO the user): while executing migrations: encountered unexpected or invalid \
                 data: no schema selected"
            ),
            "{line}"
        );
        assert_eq!(line.matches("no schema selected").count(), 1, "{line}");
    }

    #[test]
    fn a_store_error_names_its_cause_once_after_the_advice() {
        let cause = "Permission denied (os error 13)";
        let error = StoreError::Open {
            url: "sqlite:///var/lib/voltd/voltd.db".into(),
            source: sqlx::Error::Io(std::io::Error::from_raw_os_error(13)),
        };
        let line = last_line(anyhow::Error::new(error).context("cannot start"));
        assert_eq!(
            line,
            format!(
                "cannot start: cannot open the store at sqlite:///var/lib/voltd/voltd.db (check \
                 that the directory exists and that the voltd user may write to it): error \
                 communicating with database: {cause}"
            )
        );
    }

    #[test]
    fn credential_and_configuration_errors_exit_78() {
        let refused = RegistrationError::Refused {
            api_url: "https://volt.example/graphql".parse().unwrap(),
            source: VoltError::Unauthorized {
                answer: crate::volt::VoltAnswer {
                    status: actix_web::http::StatusCode::UNAUTHORIZED,
                    said: crate::volt::VoltSaid::Body(String::new()),
                },
            },
        };
        assert_eq!(exit_code(&refused.into()), EXIT_CONFIG);
        let no_certificate = TlsError::NoCertificate {
            path: "cert.pem".into(),
        };
        let wrapped = anyhow::Error::new(no_certificate).context("cannot serve");
        assert_eq!(exit_code(&wrapped), EXIT_CONFIG);
        let failed = StoreError::Query(sqlx::Error::PoolTimedOut);
        assert_eq!(exit_code(&failed.into()), 1);
    }
}
