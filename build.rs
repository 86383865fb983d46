//! Writes the man page voltd(8) and the bash, zsh and fish completions from the command
//! line's own definitions (src/cli/args.rs), so they cover every command and flag and cannot
//! drift from what the binary accepts.
//!
//! They go to `man/` and `completions/` beside the binary (`target/release/` for a release
//! build), not only to `OUT_DIR`: `cargo deb` (Cargo.toml's `[package.metadata.deb]`) can
//! name files only at a fixed path under the profile directory, and `OUT_DIR` has a hash in
//! its name. Generating at build time, rather than with a `voltd` subcommand run after the
//! build, keeps plain `cargo deb` enough to make the whole package.

use std::error::Error;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};
use flate2::Compression;
use flate2::write::GzEncoder;

#[allow(dead_code)] // Only the definitions are used here, not the parsed values.
#[path = "src/cli/args.rs"]
mod args;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=src/cli/args.rs");
    // `sqlx::migrate!` embeds the migrations when voltd compiles; a build script that lists
    // them makes cargo compile voltd again when one is added or changed (as sqlx advises).
    println!("cargo::rerun-if-changed=migrations");
    let profile_dir = profile_dir()?;
    let man_dir = profile_dir.join("man");
    let completions_dir = profile_dir.join("completions");
    fs::create_dir_all(&man_dir)?;
    fs::create_dir_all(&completions_dir)?;
    write_man_page(&man_dir.join("voltd.8.gz"))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut args::Cli::command(), "voltd", &completions_dir)?;
    }
    Ok(())
}

/// `target/<profile>` (or `target/<triple>/<profile>`): `OUT_DIR` is `build/<package>-<hash>/out`
/// below it.
fn profile_dir() -> Result<PathBuf, Box<dyn Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let build_dir = out_dir.ancestors().nth(2);
    match build_dir.and_then(|dir| Some((dir.file_name()?, dir.parent()?))) {
        Some((name, profile_dir)) if name == "build" => Ok(profile_dir.to_path_buf()),
        _ => Err(format!(
            "OUT_DIR {} is not <profile>/build/<package>/out; cannot place the man page",
            out_dir.display()
        )
        .into()),
    }
}

/// One page for the whole program: the usual sections for `voltd` itself, then COMMANDS with
/// each command's synopsis and flags, then what the operator needs beyond the flags.
/// Gzipped, as Debian installs man pages (cargo deb compresses only files it does not build).
fn write_man_page(path: &Path) -> Result<(), Box<dyn Error>> {
    let mut cli = args::Cli::command().disable_help_subcommand(true);
    cli.build();
    let man = Man::new(cli.clone())
        .section("8")
        .source(format!("voltd {}", env!("CARGO_PKG_VERSION")))
        .manual("System Manager's Manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    page.write_all(DESCRIPTION.as_bytes())?;
    man.render_options_section(&mut page)?;
    page.write_all(b".SH COMMANDS\n")?;
    for command in cli.get_subcommands() {
        write_command(&mut page, command)?;
    }
    page.write_all(after_commands().as_bytes())?;
    let mut gzip = GzEncoder::new(fs::File::create(path)?, Compression::best());
    gzip.write_all(&page)?;
    gzip.finish()?;
    Ok(())
}

/// A subsection per command that runs something (`events list`, not `events`): its summary,
/// synopsis and flags, as clap_mangen renders them for a page of its own, minus the headings.
fn write_command(page: &mut Vec<u8>, command: &clap::Command) -> Result<(), Box<dyn Error>> {
    if command.has_subcommands() {
        for sub in command.get_subcommands() {
            write_command(page, sub)?;
        }
        return Ok(());
    }
    let name = command.get_bin_name().unwrap_or(command.get_name());
    let mut heading = Roff::new();
    heading.control("SS", [name]);
    if let Some(about) = command.get_about() {
        heading.text([roman(about.to_string())]);
    }
    heading.to_writer(page)?;
    // --config and --help are the same for every command: OPTIONS has them once.
    let mut own = command.clone();
    for shared in ["config", "help"] {
        if own.get_arguments().any(|arg| arg.get_id() == shared) {
            own = own.mut_arg(shared, |arg| arg.hide(true));
        }
    }
    let man = Man::new(own);
    let mut sections = Vec::new();
    man.render_synopsis_section(&mut sections)?;
    man.render_options_section(&mut sections)?;
    // Headings of a page of its own become paragraph breaks in a subsection.
    for line in String::from_utf8(sections)?.lines() {
        let line = if line.starts_with(".SH ") {
            ".PP"
        } else {
            line
        };
        writeln!(page, "{line}")?;
    }
    Ok(())
}

const DESCRIPTION: &str = r#".SH DESCRIPTION
\fBvoltd\fR receives the webhook events of the Volt SMS platform, stores each one durably
(SQLite or PostgreSQL) before it answers 200, logs it, and can forward it to other systems.
On start it serves the path of \fBserver.public_url\fR and registers that URL with Volt.
Without a command it runs the daemon.
.PP
The configuration is TOML: the file named by \fB\-\-config\fR, otherwise \fB$VOLTD_CONFIG\fR,
otherwise \fI./volt.toml\fR, otherwise \fI/etc/voltd/volt.toml\fR; then environment variables
\fBVOLT_\fISECTION\fB__\fIKEY\fR override single keys. Every command validates the whole
configuration first. Every command takes \fB\-\-config\fR and \fB\-h\fR, \fB\-\-help\fR.
"#;

/// The sections after COMMANDS that list terms: each a heading and (term, meaning) pairs.
const TERM_SECTIONS: [(&str, &[(&str, &str)]); 3] = [
    (
        "EXIT STATUS",
        &[
            (
                "0",
                "Success; for the daemon, a clean stop after SIGTERM or SIGINT.",
            ),
            (
                "78",
                "Configuration or credential error (EX_CONFIG): fix the configuration or the \
                 token; restarting does not help. The systemd unit does not restart on it.",
            ),
            ("1", "Anything else."),
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            (
                "VOLTD_CONFIG",
                "The configuration file when --config is not given.",
            ),
            (
                "VOLT_SECTION__KEY",
                "Overrides one configuration key, e.g. VOLT_SERVER__LISTEN=127.0.0.1:8081.",
            ),
            (
                "CREDENTIALS_DIRECTORY",
                "Set by systemd's LoadCredential=; a relative api.token_file is read from there.",
            ),
            ("RUST_LOG", "Overrides log.level."),
        ],
    ),
    (
        "FILES",
        &[
            ("/etc/voltd/volt.toml", "The service's configuration."),
            (
                "/etc/voltd/volt-token",
                "The Volt API token, mode 0600, handed to the service as a systemd credential.",
            ),
            (
                "/var/lib/voltd",
                "The service's state directory, with the SQLite database.",
            ),
            ("/usr/lib/systemd/system/voltd.service", "The systemd unit."),
        ],
    ),
];

fn after_commands() -> String {
    let mut roff = Roff::new();
    for (heading, terms) in TERM_SECTIONS {
        roff.control("SH", [heading]);
        // A tagged paragraph: the term in bold, its meaning indented below.
        for (term, meaning) in terms {
            roff.control("TP", None::<&str>)
                .text([bold(*term)])
                .text([roman(*meaning)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1), "),
        bold("systemd.exec"),
        roman("(5), and /usr/share/doc/voltd/README.md for every configuration key."),
    ]);
    roff.to_roff()
}
