//! Connector telemetry carries where it came from: a vendor call made while a step is
//! delivered logs inside the `deliver` span, with the route, the run and the trace — so an
//! operator can tie a vendor's error to the run that met it.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use huitong::store;
use huitong::sync::{self, RouteContext};
use huitong_connectors::sandbox::FaultSpec;
use huitong_tests::org::{delivering, empty_org, fixture, load_config, sandbox, temp_dir};
use serde_json::Value;

/// The log lines written, one JSON object each.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_config(dir: &Path, feishu: &str, wecom: &str) -> std::path::PathBuf {
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n\n[connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_hq\"\n\
             app_secret_env = \"HQ_SECRET\"\nbase_url = \"{feishu}\"\n\n[connectors.factory]\nkind = \"wecom\"\n\
             corp_id = \"wwfactory\"\nagent_id = 1000002\ncorp_secret_env = \"FACTORY_SECRET\"\nbase_url = \"{wecom}\"\n\n\
             [routes.org]\nsource = \"hq\"\ntargets = [\"factory\"]\n",
            db = dir.join("huitong.db").display(),
        ),
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_call_during_a_step_logs_with_its_route_run_and_trace() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .json()
        .with_span_list(true)
        .with_current_span(true)
        .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with_writer(move || writer.clone())
        .init();

    let mut o = huitong_connectors::feishu::sandbox::SandboxOptions::new(
        fixture("small-org.json"),
        "cli_hq",
        "hq-secret",
    );
    o.rate_limits = false;
    let feishu = sandbox(o).await;
    // WeCom answers some writes with a 5xx: each failed call is logged, then retried.
    let mut o = huitong_connectors::wecom::sandbox::SandboxOptions::new(
        empty_org("工厂"),
        "wwfactory",
        "factory-secret",
        1000002,
    );
    o.faults = FaultSpec::parse("5xx=20%,seed=11").unwrap();
    let wecom = sandbox(o).await;
    let dir = temp_dir("huitong-spans");
    let config = load_config(
        write_config(&dir, &feishu.base, &wecom.base),
        &[
            ("HQ_SECRET", "hq-secret"),
            ("FACTORY_SECRET", "factory-secret"),
        ],
    );
    let store = store::open(&config.database).await.unwrap();
    let ctx = RouteContext::new(&config, "org").unwrap();
    let dl = delivering(&config, store.clone()).await;
    let plan = sync::plan(&ctx, &*store).await.unwrap();
    let report = sync::apply(&ctx, &plan, &*store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();

    let text = capture.0.lock().map(|b| b.clone()).unwrap_or_default();
    let lines: Vec<Value> = String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let failed: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["fields"]["message"] == "vendor call failed" && l["fields"]["vendor"] == "wecom"
        })
        .collect();
    assert!(!failed.is_empty(), "the faults made some WeCom calls fail");
    // Every one of them was made while a step of this run was delivered.
    for l in &failed {
        let deliver = l["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "deliver"));
        let Some(deliver) = deliver else {
            panic!("a vendor call logged outside a deliver span: {l}");
        };
        assert_eq!(deliver["route"], "org", "{l}");
        assert_eq!(deliver["run"], report.run_id.as_str(), "{l}");
        assert_eq!(deliver["target"], "factory", "{l}");
        assert!(
            deliver["trace"].as_str().is_some_and(|t| t.len() >= 16),
            "{l}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
