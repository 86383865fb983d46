//! Loading any `volt.toml` never panics, and settings it accepts print (as `check-config`
//! does) to TOML that loads back.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use voltd::config::Settings;

fuzz_target!(|text: &str| {
    let path = Path::new("/etc/voltd/volt.toml");
    let Ok(settings) = Settings::from_toml(path, text, []) else {
        return;
    };
    let view = settings
        .check_config_view()
        .unwrap_or_else(|error| panic!("accepted settings do not print: {error}"));
    if let Err(error) = Settings::from_toml(path, &view, []) {
        panic!("check-config's view does not load back: {error}\n{view}");
    }
});
