//! `huitong sandbox <vendor>`: a vendor's API emulator, for trying mappings and
//! routes offline (and for the tests and `huitong demo`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::sandbox::FaultSpec;
use secrecy::SecretString;

#[derive(Subcommand)]
pub enum SandboxCommand {
    /// Feishu / Lark (open-apis, events, long connection).
    Feishu(FeishuArgs),
    /// DingTalk (oapi + api v1.0 hosts, HTTP push, Stream gateway).
    Dingtalk(DingTalkArgs),
    /// WeCom / 企业微信 (cgi-bin, encrypted XML callbacks).
    Wecom(WecomArgs),
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
    /// Org fixture (see shared/fixtures/README.md).
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

fn faults(common: &Common) -> anyhow::Result<FaultSpec> {
    match &common.faults {
        None => Ok(FaultSpec::none()),
        Some(s) => FaultSpec::parse(s).map_err(|e| anyhow::anyhow!("--faults: {e}")),
    }
}

async fn listener(common: &Common) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(&common.listen)
        .await
        .with_context(|| format!("cannot listen on {}", common.listen))
}

pub async fn run(command: &SandboxCommand) -> anyhow::Result<ExitCode> {
    match command {
        SandboxCommand::Feishu(a) => {
            let org = org(&a.common)?;
            let (users, departments) = (org.users.len(), org.departments.len());
            let mut opts = huitong_connectors::feishu::sandbox::SandboxOptions::new(
                org,
                &a.app_id,
                &a.app_secret,
            );
            opts.encrypt_key = a.encrypt_key.clone().map(SecretString::from);
            opts.verification_token = a.verification_token.clone().map(SecretString::from);
            opts.event_url = a.common.event_url.clone();
            opts.faults = faults(&a.common)?;
            opts.rate_limits = !a.common.no_rate_limits;
            opts.enforce_rate_limits = a.common.enforce_rate_limits;
            let l = listener(&a.common).await?;
            let addr = l.local_addr()?;
            println!(
                "feishu sandbox on http://{addr} (app {}, {users} users, {departments} departments); /_sandbox/org shows its state",
                a.app_id
            );
            huitong_connectors::feishu::sandbox::serve(l, opts, crate::shutdown_signal())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Dingtalk(a) => {
            if a.common.event_url.is_some() && a.aes_key.is_none() {
                anyhow::bail!(
                    "--event-url needs --aes-key and --token: DingTalk encrypts every push"
                );
            }
            let org = org(&a.common)?;
            let (users, departments) = (org.users.len(), org.departments.len());
            let mut opts = huitong_connectors::dingtalk::sandbox::SandboxOptions::new(
                org,
                &a.app_key,
                &a.app_secret,
            );
            opts.aes_key = a.aes_key.clone().map(SecretString::from);
            opts.token = a.token.clone().map(SecretString::from);
            opts.event_url = a.common.event_url.clone();
            opts.faults = faults(&a.common)?;
            opts.rate_limits = !a.common.no_rate_limits;
            opts.enforce_rate_limits = a.common.enforce_rate_limits;
            let l = listener(&a.common).await?;
            let addr = l.local_addr()?;
            println!(
                "dingtalk sandbox on http://{addr} (app {}, {users} users, {departments} departments); /_sandbox/org shows its state",
                a.app_key
            );
            huitong_connectors::dingtalk::sandbox::serve(l, opts, crate::shutdown_signal())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Wecom(a) => {
            if a.common.event_url.is_some() && a.encoding_aes_key.is_none() {
                anyhow::bail!(
                    "--event-url needs --token and --encoding-aes-key: WeCom encrypts every callback"
                );
            }
            let org = org(&a.common)?;
            let (users, departments) = (org.users.len(), org.departments.len());
            let mut opts = huitong_connectors::wecom::sandbox::SandboxOptions::new(
                org,
                &a.corp_id,
                &a.corp_secret,
                a.agent_id,
            );
            opts.token = a.token.clone().map(SecretString::from);
            opts.encoding_aes_key = a.encoding_aes_key.clone().map(SecretString::from);
            opts.event_url = a.common.event_url.clone();
            opts.faults = faults(&a.common)?;
            opts.rate_limits = !a.common.no_rate_limits;
            opts.enforce_rate_limits = a.common.enforce_rate_limits;
            let l = listener(&a.common).await?;
            let addr = l.local_addr()?;
            println!(
                "wecom sandbox on http://{addr} (corp {}, {users} users, {departments} departments); /_sandbox/org shows its state",
                a.corp_id
            );
            huitong_connectors::wecom::sandbox::serve(l, opts, crate::shutdown_signal())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
