//! The hub's configuration loader (`huitong::config::load`): the `--config` TOML file over the
//! built-in default, and the `HUITONG_*` environment layer.
//!
//! Input: `toml text [\0 NAME=VALUE\n…]` — the file's bytes, then (after a NUL) environment
//! variables, one per line. The file is written to a temporary path and loaded as `--config`
//! would be (secrets' `*_env` names are looked up in that environment only). Never panics.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use huitong::config::{Sources, load};
use libfuzzer_sys::fuzz_target;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        std::env::temp_dir().join(format!("huitong-fuzz-config-{}.toml", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let file = parts.next().unwrap_or_default();
    let env = parts
        .next()
        .map(|e| {
            String::from_utf8_lossy(e)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    std::fs::write(path(), file).expect("write the temporary config file");
    let sources = Sources {
        file: Some(path().clone()),
        env,
        overrides: Vec::new(),
    };
    let loaded = load(&sources);
    let _ = std::fs::remove_file(path());
    match loaded {
        Ok(config) => drop(config),
        // Every problem names its origin and key.
        Err(e) => assert!(!e.problems.is_empty(), "an error without problems"),
    }
});
