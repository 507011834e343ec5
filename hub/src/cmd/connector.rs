//! `huitong connector check|try`: declarative (http) connector definitions, offline and live.

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;
use futures_util::StreamExt;
use huitong::config::Config;
use huitong_connectors::declared;

#[derive(Subcommand)]
pub enum ConnectorCommand {
    /// Check connector definitions (a shipped one by name, such as `tryton`, or a YAML file):
    /// every problem is named with its file, line and key; exit 2 if any.
    Check {
        #[arg(required = true, value_name = "DEFINITION")]
        definitions: Vec<String>,
    },
    /// List the first records of an entity of a configured http connector, live, as JSON
    /// lines exactly as the system returned them.
    Try {
        /// The connector's name in the configuration (`[connectors.NAME]`).
        connector: String,
        /// An entity its definition declares (e.g. `party`).
        entity: String,
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
}

/// `connector check`: no configuration needed.
pub fn check(definitions: &[String]) -> ExitCode {
    let mut ok = true;
    for d in definitions {
        match declared::resolve(d) {
            Ok(def) => println!(
                "{d}: OK ({}, {} auth, entities: {})",
                match def.transport {
                    declared::definition::Transport::Rest => "rest",
                    declared::definition::Transport::JsonRpc { .. } => "jsonrpc",
                    declared::definition::Transport::Tryton { .. } => "tryton json-rpc",
                },
                def.auth.kind(),
                def.entities.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            Err(e) => {
                ok = false;
                eprintln!("{e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// `connector try`.
pub async fn try_list(config: Config, connector: &str, entity: &str, limit: usize) -> ExitCode {
    let Some(c) = config.connectors.get(connector) else {
        eprintln!(
            "no connector {connector:?} in the configuration (connectors: {})",
            config
                .connectors
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    };
    if c.kind.as_str() != "http" {
        eprintln!(
            "connector {connector:?} is a {} connector; `connector try` lists entities of http (declared) connectors",
            c.kind.as_str()
        );
        return ExitCode::from(2);
    }
    let conn = match declared::vendor::connector(&c.vendor_settings()) {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = conn.definition().entity(entity) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let page = u32::try_from(limit.max(1)).unwrap_or(u32::MAX);
    let mut records = conn.list(
        entity,
        declared::ListOptions {
            since: None,
            page_size: Some(page),
        },
    );
    let mut out = std::io::stdout().lock();
    let mut n = 0usize;
    while n < limit {
        match records.next().await {
            None => break,
            Some(Ok(r)) => {
                n += 1;
                if writeln!(out, "{r}").is_err() {
                    return ExitCode::from(1);
                }
            }
            Some(Err(e)) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
