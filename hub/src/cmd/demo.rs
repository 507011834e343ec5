//! `huitong demo`: the whole journey on a bare machine. Three vendor sandboxes
//! (HQ on Feishu, a subsidiary on DingTalk that already has three of HQ's
//! people, an empty factory on WeCom), huitong on SQLite with the embedded
//! queue, the plan, the apply, then a new hire entered in Feishu's console
//! arriving in DingTalk and WeCom through Feishu's signed callback.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use huitong::app::App;
use huitong::config::{self, Sources};
use huitong::sync::{self, Action, RouteContext};
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::sandbox::Running;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const HQ_ORG: &str = include_str!("../../demo/hq-org.json");
const SUB_ORG: &str = include_str!("../../demo/subsidiary-org.json");
const FACTORY_ORG: &str = include_str!("../../demo/factory-org.json");

// Demo credentials of the sandboxes (not secrets of any real system).
const HQ_SECRET: &str = "demo-feishu-app-secret";
const HQ_ENCRYPT_KEY: &str = "demo-feishu-encrypt-key";
const HQ_TOKEN: &str = "demo-feishu-verification-token";
const SUB_SECRET: &str = "demo-dingtalk-app-secret";
const FACTORY_SECRET: &str = "demo-wecom-corp-secret";

#[derive(Args)]
pub struct DemoArgs {
    /// Run the tour once and exit: 0 only if every step checked out.
    #[arg(long)]
    once: bool,
    /// Where huitong listens (falls back to a free port if taken).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: String,
    /// Folder for the demo's database and configuration (recreated on each run).
    #[arg(long, default_value = "data/demo", value_name = "DIR")]
    data: PathBuf,
}

fn fixture(text: &str, what: &str) -> anyhow::Result<OrgFixture> {
    serde_json::from_str(text).with_context(|| format!("the embedded {what} fixture"))
}

async fn bind_any(addr: &str) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) => {
            eprintln!("note: {addr} is not available ({e}); using a free port");
            Ok(TcpListener::bind("127.0.0.1:0").await?)
        }
    }
}

async fn org(client: &reqwest::Client, base: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(format!("{base}/_sandbox/org"))
        .send()
        .await?
        .json()
        .await?)
}

fn has_user(org: &Value, employee_no: &str, name: &str) -> bool {
    org["users"].as_array().is_some_and(|a| {
        a.iter().any(|u| {
            (u["employee_no"].as_str() == Some(employee_no)
                || u["key"].as_str() == Some(employee_no))
                && u["name"].as_str() == Some(name)
        })
    })
}

fn count(org: &Value, kind: &str) -> usize {
    org[kind].as_array().map_or(0, Vec::len)
}

/// The demo's secrets, each in a file beside its configuration (readable by the owner only),
/// so that the printed commands work as pasted: (file name, config key, value).
const SECRETS: [(&str, &str, &str); 5] = [
    ("hq-app-secret", "app_secret_file", HQ_SECRET),
    ("hq-encrypt-key", "encrypt_key_file", HQ_ENCRYPT_KEY),
    ("hq-verification-token", "verification_token_file", HQ_TOKEN),
    ("subsidiary-app-secret", "app_secret_file", SUB_SECRET),
    ("factory-corp-secret", "corp_secret_file", FACTORY_SECRET),
];

fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{value}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn write_config(dir: &Path, feishu: &str, dingtalk: &str, wecom: &str) -> anyhow::Result<PathBuf> {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)
        .with_context(|| format!("cannot create {}", secrets.display()))?;
    let mut lines = Vec::new();
    for (name, key, value) in SECRETS {
        let path = secrets.join(name);
        write_secret(&path, value)?;
        // TOML basic string: the path with `\` and `"` escaped.
        let quoted = path
            .display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        lines.push(format!("{key} = \"{quoted}\""));
    }
    let [hq_secret, hq_key, hq_token, sub_secret, factory_secret] = &lines[..] else {
        bail!("the demo has five secrets");
    };
    let file = dir.join("huitong.toml");
    let text = format!(
        r#"# Written by `huitong demo`: three sandboxes and one route. The sandboxes' demo
# credentials are in secrets/ beside this file.
[database]
url = "sqlite://{db}"

[connectors.hq]
kind = "feishu"
app_id = "cli_demo_hq"
{hq_secret}
{hq_key}
{hq_token}
base_url = "{feishu}"

[connectors.subsidiary]
kind = "dingtalk"
app_key = "dingdemosub"
{sub_secret}
base_url = "{dingtalk}"

[connectors.factory]
kind = "wecom"
corp_id = "wwdemofactory"
agent_id = 1000002
{factory_secret}
base_url = "{wecom}"

[routes.org]
source = "hq"
targets = ["subsidiary", "factory"]
match = ["employee_no", "email", "mobile"]
"#,
        db = dir.join("huitong.db").display()
    );
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(file)
}

/// `s` as one shell word (single-quoted unless it is plainly safe).
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// How to call this very binary from the current directory: `huitong` when that is what
/// PATH finds, else its path (relative when below the current directory, as after
/// `cargo run`: `target/debug/huitong`).
fn this_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "huitong".to_owned();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .filter_map(|d| std::fs::canonicalize(d.join("huitong")).ok())
            .next()
            .is_some_and(|found| found == exe)
    });
    if on_path {
        return "huitong".to_owned();
    }
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| std::fs::canonicalize(cwd).ok())
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| exe.clone());
    shell_word(&shown.display().to_string())
}

pub async fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.data;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot reset {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };

    println!("huitong demo — one org chart across Feishu, DingTalk and WeCom\n");
    // 1. huitong's address first: Feishu calls it back.
    let hub_listener = bind_any(&args.listen).await?;
    let hub = format!("http://{}", hub_listener.local_addr()?);

    // 2. The three vendors.
    let hq_org = fixture(HQ_ORG, "HQ")?;
    let (hq_people, hq_depts) = (hq_org.users.len(), hq_org.departments.len());
    let mut o =
        huitong_connectors::feishu::sandbox::SandboxOptions::new(hq_org, "cli_demo_hq", HQ_SECRET);
    o.encrypt_key = Some(HQ_ENCRYPT_KEY.to_owned().into());
    o.verification_token = Some(HQ_TOKEN.to_owned().into());
    o.event_url = Some(format!("{hub}/callbacks/feishu/hq"));
    o.event_retry_delays = vec![
        Duration::from_secs(1),
        Duration::from_secs(5),
        Duration::from_secs(15),
    ];
    let hq_sandbox = Running::start(o).await?;
    let sub_sandbox = Running::start(huitong_connectors::dingtalk::sandbox::SandboxOptions::new(
        fixture(SUB_ORG, "subsidiary")?,
        "dingdemosub",
        SUB_SECRET,
    ))
    .await?;
    let factory_sandbox = Running::start(huitong_connectors::wecom::sandbox::SandboxOptions::new(
        fixture(FACTORY_ORG, "factory")?,
        "wwdemofactory",
        FACTORY_SECRET,
        1000002,
    ))
    .await?;
    let (feishu, dingtalk, wecom) = (
        hq_sandbox.base.clone(),
        sub_sandbox.base.clone(),
        factory_sandbox.base.clone(),
    );
    // They stop when dropped, with huitong.
    let sandboxes = [hq_sandbox, sub_sandbox, factory_sandbox];
    println!("1. sandboxes running");
    println!(
        "   Feishu   (HQ, {hq_people} people in {hq_depts} departments)   {feishu}/_sandbox/org"
    );
    println!("   DingTalk (subsidiary, 3 of HQ's people already there)  {dingtalk}/_sandbox/org");
    println!("   WeCom    (factory, empty)                              {wecom}/_sandbox/org");

    // 3. huitong itself, on SQLite and the embedded queue.
    let file = write_config(&dir, &feishu, &dingtalk, &wecom)?;
    let config = config::load(&Sources {
        file: Some(file.clone()),
        env: vec![],
        overrides: vec![],
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = App::start(config.clone()).await?;
    let store = app.store.clone();
    let ingress = huitong::jobs::start_ingress(&config, store.clone(), app.queue.clone()).await?;
    let deliveries = huitong::jobs::start_deliveries(&config, store.clone(), &*app.queue).await?;
    let queue = app.queue.clone();
    tokio::spawn(app.serve(hub_listener, until(stop_rx.clone())));
    println!(
        "\n2. huitong running on {hub} (SQLite {}, embedded queue)",
        dir.join("huitong.db").display()
    );

    // 4. Plan.
    let ctx = RouteContext::new(&config, "org")?;
    let plan = sync::plan(&ctx, &*store)
        .await?
        .run_as(sync::run_kind::APPLY);
    println!("\n3. huitong sync plan org\n");
    print!("{}", sync::render_plan(&plan));
    let conflicts: usize = plan.targets.iter().map(|t| t.conflicts.len()).sum();
    let linked = plan.count(Action::Link);
    let people_linked = plan
        .targets
        .iter()
        .flat_map(|t| &t.steps)
        .filter(|s| s.link_first && s.entity == sync::PERSON)
        .count();

    // 5. Apply.
    let started = Instant::now();
    let report = sync::apply(&ctx, &plan, &*store, &*queue, false, &|_, _| {}).await?;
    println!(
        "\n4. huitong sync apply org: {} created, {} linked, {} updated in {:.1} s ({} failed)",
        plan.count(Action::Create),
        linked,
        plan.count(Action::Update) + plan.count(Action::Move),
        started.elapsed().as_secs_f64(),
        report.errors.len()
    );
    let mut problems = Vec::new();
    for e in &report.errors {
        problems.push(format!("apply: {e}"));
    }
    if conflicts > 0 {
        problems.push(format!("the plan had {conflicts} conflicts"));
    }
    let client = reqwest::Client::new();
    for (name, base) in [("DingTalk", &dingtalk), ("WeCom", &wecom)] {
        let o = org(&client, base).await?;
        if count(&o, "users") != hq_people {
            problems.push(format!(
                "{name} has {} people, HQ has {hq_people}",
                count(&o, "users")
            ));
        }
    }
    let again = sync::plan(&ctx, &*store).await?;
    if !again.is_empty() {
        problems.push("a second plan right after apply is not empty".into());
    }

    // 6. A change in Feishu's console travels live.
    println!("\n5. an HR admin adds a new hire in Feishu's console …");
    let hire = json!({"key": "demo-new-hire", "name": "林新", "en_name": "Lin Xin", "email": "lin.xin@example.cn",
        "mobile": "13900009999", "employee_no": "E009999", "title": "工程师", "departments": ["d1"],
        "active": true, "gender": "female", "hired_at": "2026-11-30"});
    let changed = Instant::now();
    let r = client
        .post(format!("{feishu}/_sandbox/org/users"))
        .json(&hire)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!(
            "the Feishu console refused the new hire: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let mut arrived = Vec::new();
    for (name, base) in [("DingTalk", &dingtalk), ("WeCom", &wecom)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if has_user(&org(&client, base).await?, "E009999", "林新") {
                let secs = changed.elapsed().as_secs_f64();
                println!("   … arrived in {name} after {secs:.1} s");
                arrived.push(secs);
                break;
            }
            if Instant::now() > deadline {
                problems.push(format!("the new hire did not reach {name} within 30 s"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Every command printed here works when pasted (tested): the secrets are in files.
    let huitong = format!(
        "{} --config {}",
        this_command(),
        shell_word(&file.display().to_string())
    );
    if args.once {
        // The sandboxes and huitong stop with this process: no URLs that would be dead.
        println!(
            "\nWhere to look next (the URLs above were live during the tour; the sandboxes and huitong stopped with it):"
        );
    } else {
        println!("\nWhere to look next (while the demo runs):");
        println!("   {hub}/healthz  {hub}/readyz  {hub}/metrics");
        println!(
            "   {feishu}/_sandbox/org (edit it: POST {feishu}/_sandbox/org/users with a JSON user, \
             PATCH/DELETE {feishu}/_sandbox/org/users/<key>)"
        );
        println!("   {dingtalk}/_sandbox/org   {wecom}/_sandbox/org");
        println!("   {huitong} sync plan org");
    }
    println!(
        "   {huitong} sync runs   (the apply, then the reconcile the new hire's event started, with their counts)"
    );
    let ok = problems.is_empty();
    if args.once || !ok {
        ingress.shutdown().await;
        for d in deliveries {
            d.shutdown().await;
        }
        let _ = stop.send(true);
        drop(sandboxes);
        for p in &problems {
            eprintln!("problem: {p}");
        }
        if ok {
            println!(
                "\ndemo OK: synced {} departments and {hq_people} people from Feishu to DingTalk and WeCom \
                 ({people_linked} people already in DingTalk linked by employee number); a new hire reached both in {:.1} s",
                hq_depts,
                arrived.iter().cloned().fold(0.0, f64::max)
            );
            return Ok(ExitCode::SUCCESS);
        }
        println!("\ndemo FAILED: {} problem(s), listed above", problems.len());
        return Ok(ExitCode::FAILURE);
    }
    println!("\nRunning; edit the Feishu org and watch the others follow. Ctrl-C to stop.");
    crate::shutdown_signal().await;
    ingress.shutdown().await;
    for d in deliveries {
        d.shutdown().await;
    }
    let _ = stop.send(true);
    drop(sandboxes);
    Ok(ExitCode::SUCCESS)
}
