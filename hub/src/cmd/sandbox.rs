//! `huitong sandbox <vendor>`: a vendor's API emulator, for trying mappings and
//! routes offline (and for the tests and `huitong demo`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::sandbox::{FaultSpec, VendorSandbox};
use secrecy::SecretString;

/// `huitong sandbox --help`: the console endpoints (connectors/README.md, "The sandbox contract",
/// has each with a body example; `tests/cli.rs` checks that both list the same ones).
pub const LONG_ABOUT: &str = "\
Run a vendor's API emulator seeded from an org fixture (tests/fixtures/README.md).

Each sandbox serves its vendor's API and, on the same address, a console under /_sandbox/.
Bodies are JSON; users and departments are fixture entries. Every change to the org emits the
vendor's event. Each endpoint with a body example: connectors/README.md, \"The sandbox contract\".

  GET    /_sandbox/org                    the org, each entry with its vendor ids
  GET    /_sandbox/calls                  API calls, faults and rate windows per endpoint
  GET    /_sandbox/messages               messages sent through the API
  GET    /_sandbox/events                 events emitted and their delivery
  POST   /_sandbox/org/users              add a user: a fixture entry, key included (201)
  PATCH  /_sandbox/org/users/{key}        change the fields given (200)
  DELETE /_sandbox/org/users/{key}        remove the user (204)
  POST   /_sandbox/org/departments        add a department: a fixture entry, key included (201)
  PATCH  /_sandbox/org/departments/{key}  change the fields given (200)
  DELETE /_sandbox/org/departments/{key}  remove the department (204)
  POST   /_sandbox/tokens/expire          every access token expires now (204)
  POST   /_sandbox/im/receive             Feishu: {\"from\": key, \"text\"}, a user messages the bot
  POST   /_sandbox/robot/receive          DingTalk: {\"from\", \"text\"}, a message to the robot
  GET    /_sandbox/stream                 DingTalk: Stream connections, acks, pending
  POST   /_sandbox/stream/disconnect      DingTalk: close every Stream connection
  POST   /_sandbox/message/receive        WeCom: {\"from\", \"text\"}, a member messages the app

Example:
  huitong sandbox wecom --listen 127.0.0.1:9001 --org tests/fixtures/small-org.json \\
    --corp-id ww1 --corp-secret sandbox-secret --agent-id 1000002
  curl -s -X POST http://127.0.0.1:9001/_sandbox/org/users \\
    -d '{\"key\": \"hire-1\", \"name\": \"林晓\", \"email\": \"lin.xiao@example.cn\", \"departments\": [\"d1\"]}'";

#[derive(Subcommand)]
pub enum SandboxCommand {
    /// Feishu / Lark (open-apis, events, long connection).
    Feishu(FeishuArgs),
    /// DingTalk (oapi + api v1.0 hosts, HTTP push, Stream gateway).
    Dingtalk(DingTalkArgs),
    /// WeCom / 企业微信 (cgi-bin, encrypted XML callbacks).
    Wecom(WecomArgs),
    /// A generated org fixture (deterministic: same arguments, same bytes).
    Fixture(crate::cmd::fixture::FixtureArgs),
}

#[derive(Args)]
pub struct DingTalkArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_name = "KEY")]
    app_key: String,
    #[arg(long, value_name = "SECRET")]
    app_secret: String,
    /// 43-character callback AES key (with --token; needed for --event-url).
    #[arg(long, value_name = "AES_KEY", requires = "token")]
    aes_key: Option<String>,
    #[arg(long, value_name = "TOKEN", requires = "aes_key")]
    token: Option<String>,
}

#[derive(Args)]
pub struct WecomArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_name = "CORP_ID")]
    corp_id: String,
    #[arg(long, value_name = "SECRET")]
    corp_secret: String,
    #[arg(long, value_name = "N")]
    agent_id: i64,
    #[arg(long, value_name = "TOKEN", requires = "encoding_aes_key")]
    token: Option<String>,
    /// 43-character EncodingAESKey (with --token; needed for --event-url).
    #[arg(long, value_name = "KEY", requires = "token")]
    encoding_aes_key: Option<String>,
}

#[derive(Args)]
pub struct Common {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001", value_name = "ADDR")]
    listen: String,
    /// Org fixture (see `tests/fixtures/README.md`).
    #[arg(long, value_name = "FILE")]
    org: PathBuf,
    /// Where the sandbox POSTs the vendor's events.
    #[arg(long, value_name = "URL")]
    event_url: Option<String>,
    /// Fault injection, e.g. "5xx=5%,429=2%x10,token=1%,slow=10%@300ms,lost=1%,seed=7"
    /// (`lost`: the call is carried out but answered with a server error).
    #[arg(long, value_name = "SPEC")]
    faults: Option<String>,
    /// Refuse a call that would exceed the vendor's published limit for its API in a sliding
    /// window, with the vendor's own over-limit reply (Feishu 429/99991400, DingTalk 90018 or
    /// 403 QpsLimitForAppkeyAndApi, WeCom 45009). Every call is metered either way: see
    /// `GET /_sandbox/calls` → "windows".
    #[arg(long)]
    enforce_rate_limits: bool,
    /// Turn off the sandbox's built-in approximate limits too (token buckets, fixed minute
    /// windows, WeCom's 300 concurrent calls, robot limits): nothing is refused for its rate,
    /// calls are only metered. Not with --enforce-rate-limits.
    #[arg(long, conflicts_with = "enforce_rate_limits")]
    no_rate_limits: bool,
}

#[derive(Args)]
pub struct FeishuArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_name = "ID")]
    app_id: String,
    #[arg(long, value_name = "SECRET")]
    app_secret: String,
    #[arg(long, value_name = "KEY")]
    encrypt_key: Option<String>,
    #[arg(long, value_name = "TOKEN")]
    verification_token: Option<String>,
}

fn org(common: &Common) -> anyhow::Result<OrgFixture> {
    OrgFixture::load(&common.org).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Every vendor's sandbox, one path: the common flags onto its options, then bind, say where
/// it listens and serve until Ctrl-C.
async fn serve<S: VendorSandbox>(mut opts: S, common: &Common) -> anyhow::Result<ExitCode> {
    opts.event_url = common.event_url.clone();
    opts.faults = match &common.faults {
        None => FaultSpec::none(),
        Some(s) => FaultSpec::parse(s).map_err(|e| anyhow::anyhow!("--faults: {e}"))?,
    };
    opts.rate_limits = !common.no_rate_limits;
    opts.enforce_rate_limits = common.enforce_rate_limits;
    opts.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (users, departments) = (opts.org.users.len(), opts.org.departments.len());
    let l = tokio::net::TcpListener::bind(&common.listen)
        .await
        .with_context(|| format!("cannot listen on {}", common.listen))?;
    let addr = l.local_addr()?;
    println!(
        "{} sandbox on http://{addr} ({}, {users} users, {departments} departments); /_sandbox/org shows its state",
        S::VENDOR,
        opts.app_label()
    );
    opts.serve(l, crate::shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}

pub async fn run(command: &SandboxCommand) -> anyhow::Result<ExitCode> {
    use huitong_connectors::{dingtalk, feishu, wecom};
    match command {
        SandboxCommand::Feishu(a) => {
            let mut o =
                feishu::sandbox::SandboxOptions::new(org(&a.common)?, &a.app_id, &a.app_secret);
            o.encrypt_key = a.encrypt_key.clone().map(SecretString::from);
            o.verification_token = a.verification_token.clone().map(SecretString::from);
            serve(o, &a.common).await
        }
        SandboxCommand::Dingtalk(a) => {
            let mut o =
                dingtalk::sandbox::SandboxOptions::new(org(&a.common)?, &a.app_key, &a.app_secret);
            o.aes_key = a.aes_key.clone().map(SecretString::from);
            o.token = a.token.clone().map(SecretString::from);
            serve(o, &a.common).await
        }
        SandboxCommand::Wecom(a) => {
            let mut o = wecom::sandbox::SandboxOptions::new(
                org(&a.common)?,
                &a.corp_id,
                &a.corp_secret,
                a.agent_id,
            );
            o.token = a.token.clone().map(SecretString::from);
            o.encoding_aes_key = a.encoding_aes_key.clone().map(SecretString::from);
            serve(o, &a.common).await
        }
        SandboxCommand::Fixture(a) => crate::cmd::fixture::run(a),
    }
}
