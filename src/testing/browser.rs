//! The browser tests: Debian's `chromium` driven headless through `chromedriver` (package
//! `chromium-driver`), both found on `PATH`.
//!
//! The rule, as for PostgreSQL: asked for (`VOLTD_TEST_BROWSER` set, or `CI=true`), they
//! run, and a missing browser fails them; not asked for, they run when both programs are
//! installed and are skipped, with one line saying so, when they are not.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const VARIABLE: &str = "VOLTD_TEST_BROWSER";

/// The programs the browser tests run.
#[derive(Debug, Clone)]
pub struct Browser {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// The browser, when this test binary runs its browser tests; decided once. When they must
/// run but cannot, every one of them fails with the reason.
pub fn find() -> Option<&'static Browser> {
    static DECISION: OnceLock<Result<Option<Browser>, String>> = OnceLock::new();
    match DECISION.get_or_init(decide) {
        Ok(browser) => browser.as_ref(),
        Err(why) => panic!("{why}"),
    }
}

fn decide() -> Result<Option<Browser>, String> {
    let found = on_path("chromium").zip(on_path("chromedriver"));
    if let Some((chromium, chromedriver)) = found {
        return Ok(Some(Browser {
            chromium,
            chromedriver,
        }));
    }
    let asked_by = if std::env::var_os(VARIABLE).is_some() {
        Some("VOLTD_TEST_BROWSER is set")
    } else if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        Some("CI=true")
    } else {
        None
    };
    const INSTALL: &str = "apt-get install chromium chromium-driver";
    match asked_by {
        Some(asked_by) => Err(format!(
            "the browser tests must run ({asked_by}), but chromium or chromedriver is not on \
             PATH; install them: {INSTALL}"
        )),
        None => {
            let _ = writeln!(
                std::io::stderr(),
                "Browser tests skipped: chromium or chromedriver not on PATH ({INSTALL}); set \
                 {VARIABLE}=1 (or CI=true) to require them"
            );
            Ok(None)
        }
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
