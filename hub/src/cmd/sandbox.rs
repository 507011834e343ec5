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
    /// Fault injection, e.g. "5xx=5%,429=2%x10,token=1%,slow=10%@300ms,seed=7".
    #[arg(long, value_name = "SPEC")]
    faults: Option<String>,
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
    }
}
