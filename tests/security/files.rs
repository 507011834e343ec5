//! Finding 5: unbounded reads of files. `config check --config /dev/zero`, or a `*_file`
//! secret pointing at it, read until killed (6 GB); a FIFO blocked for ever.

use std::path::{Path, PathBuf};
use std::time::Duration;

use huitong::config::{self, Config, ConfigError, Sources};
use huitong_tests::org::temp_dir;

/// Generous: a refusal takes microseconds; this only turns a hang into a failure.
const BOUND: Duration = Duration::from_secs(20);

/// `config::load` of `file` with `env`, on a thread of its own; panics if it does not return
/// within `BOUND` (the reading thread is left behind).
fn load(file: &Path, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let sources = Sources {
        file: Some(file.to_owned()),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        overrides: vec![],
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(config::load(&sources));
    });
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("loading {} did not return within {BOUND:?}", file.display()))
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A device, a FIFO nobody writes to, and a directory. The device is `/dev/null` here, not
/// `/dev/zero`: a regression must fail this test, not read until the machine runs out of
/// memory; `/dev/zero` itself is read by a child process under a memory limit below.
fn not_regular_files(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let sub = dir.join("a-directory");
    std::fs::create_dir_all(&sub).unwrap();
    vec![
        (PathBuf::from("/dev/null"), "a character device"),
        (fifo, "a FIFO"),
        (sub, "a directory"),
    ]
}

#[test]
fn a_configuration_file_that_is_not_a_regular_file_is_refused() {
    let dir = temp_dir("huitong-security-files");
    for (path, what) in not_regular_files(&dir) {
        let err = load(&path, &[]).expect_err("loaded");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(what), "{text}");
        assert!(text.contains("not a regular file"), "{text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_secret_file_that_is_not_a_regular_file_is_refused() {
    let dir = temp_dir("huitong-security-files");
    for (path, what) in not_regular_files(&dir) {
        let file = dir.join("huitong.toml");
        std::fs::write(
            &file,
            format!(
                "[connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_1\"\napp_secret_file = \"{}\"\n",
                path.display()
            ),
        )
        .unwrap();
        let err = load(&file, &[]).expect_err("loaded");
        let text = err.to_string();
        assert!(text.contains("connectors.hq.app_secret"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(what), "{text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn oversized_configuration_and_secret_files_are_refused() {
    let dir = temp_dir("huitong-security-files");
    // 2 MiB of comments: valid TOML, over the 1 MiB cap.
    let big = dir.join("big.toml");
    std::fs::write(&big, "# padding\n".repeat(200 * 1024)).unwrap();
    let text = load(&big, &[]).expect_err("loaded").to_string();
    assert!(text.contains(&big.display().to_string()), "{text}");
    assert!(text.contains("larger than the limit"), "{text}");

    // A 100 KB "secret", over the 64 KiB cap; its content is never printed.
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cr3t".repeat(20_000)).unwrap();
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"postgres://u@db/x\"\npassword_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let text = load(&file, &[]).expect_err("loaded").to_string();
    assert!(text.contains("database.password_file"), "{text}");
    assert!(text.contains("larger than the limit"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `huitong config check` with `args`, in a child limited to 4 GB of memory (a regression
/// reads `/dev/zero` until that limit instead of until the machine's); its exit code and
/// standard error.
async fn config_check(bin: &Path, dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["config", "check"];
    all.extend_from_slice(args);
    huitong(bin, dir, &all).await
}

/// `huitong ARGS` under a 4 GB memory limit, bounded in time: its exit code and stderr.
async fn huitong(bin: &Path, dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4000000 && exec \"$0\" \"$@\"")
        .arg(bin)
        .args(args)
        .current_dir(dir)
        .env("HUITONG_SCHEDULES_DIR", dir.join("none"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(BOUND, run)
        .await
        .unwrap_or_else(|_| panic!("huitong {args:?} ran for {BOUND:?}"))
        .unwrap();
    // stderr, then stdout (`mapping check` reports each file on stdout).
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    )
}

/// The commands as reported: `huitong config check --config /dev/zero`, and a secret file
/// pointing at it, end at once with exit code 2 and an error naming the file.
#[tokio::test]
async fn config_check_of_dev_zero_is_refused() {
    let Some(bin) = crate::huitong_bin("config_check_of_dev_zero_is_refused") else {
        return;
    };
    let dir = temp_dir("huitong-security-files");
    let (code, stderr) = config_check(&bin, &dir, &["--config", "/dev/zero"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/dev/zero"), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");

    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        "[connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_1\"\napp_secret_file = \"/dev/zero\"\n",
    )
    .unwrap();
    let (code, stderr) = config_check(&bin, &dir, &["--config", &file.display().to_string()]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("connectors.hq.app_secret_file"), "{stderr}");
    assert!(stderr.contains("/dev/zero"), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Mapping files and sample records are files too: `mapping check /dev/zero`, a sample record
/// read from it, and a connector's mapping file pointing at it end at once with an error naming
/// the file.
#[tokio::test]
async fn mapping_files_and_samples_of_dev_zero_are_refused() {
    let Some(bin) = crate::huitong_bin("mapping_files_and_samples_of_dev_zero_are_refused") else {
        return;
    };
    let dir = temp_dir("huitong-security-files");
    let (code, output) = huitong(&bin, &dir, &["mapping", "check", "/dev/zero"]).await;
    assert_ne!(code, Some(0), "{output}");
    assert!(
        output.contains("/dev/zero") && output.contains("not a regular file"),
        "{output}"
    );
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mappings/files/wecom-person.yaml")
        .display()
        .to_string();
    let (code, stderr) = huitong(
        &bin,
        &dir,
        &["mapping", "preview", &shipped, "--sample", "/dev/zero"],
    )
    .await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("/dev/zero") && stderr.contains("not a regular file"),
        "{stderr}"
    );

    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        "[connectors.factory]\nkind = \"wecom\"\ncorp_id = \"ww1\"\nagent_id = 1000002\n\
         corp_secret_env = \"S\"\n[connectors.factory.mappings]\nperson = \"/dev/zero\"\n",
    )
    .unwrap();
    let (code, stderr) = config_check(&bin, &dir, &["--config", &file.display().to_string()]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("connectors.factory.mappings.person"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/dev/zero") && stderr.contains("not a regular file"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn org_fixtures_and_connector_definitions_of_dev_zero_are_refused() {
    let Some(bin) =
        crate::huitong_bin("org_fixtures_and_connector_definitions_of_dev_zero_are_refused")
    else {
        return;
    };
    let dir = temp_dir("huitong-security-files");
    let (code, output) = huitong(&bin, &dir, &["connector", "check", "/dev/zero"]).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("/dev/zero") && output.contains("not a regular file"),
        "{output}"
    );
    let (code, output) = huitong(
        &bin,
        &dir,
        &[
            "sandbox",
            "wecom",
            "--org",
            "/dev/zero",
            "--corp-id",
            "ww1",
            "--corp-secret",
            "s",
            "--agent-id",
            "1",
        ],
    )
    .await;
    assert_ne!(code, Some(0), "{output}");
    assert!(
        output.contains("/dev/zero") && output.contains("not a regular file"),
        "{output}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
