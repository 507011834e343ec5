//! Connector telemetry carries where it came from: a vendor call made while a step is
//! delivered logs inside the `deliver` span, with the route, the run and the trace — so an
//! operator can tie a vendor's error to the run that met it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use huitong::store;
use huitong::sync::{self, RouteContext};
use huitong_connectors::sandbox::FaultSpec;
use huitong_tests::org::{
    HQ_FACTORY_SECRETS, delivering, empty_org, feishu_hq, fixture, hq_to_factory, load_config,
    temp_dir, wecom_corp,
};
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

    let feishu = feishu_hq(fixture("small-org.json"), FaultSpec::none()).await;
    // WeCom answers some writes with a 5xx: each failed call is logged, then retried.
    let faults = FaultSpec::parse("5xx=20%,seed=11").unwrap();
    let wecom = wecom_corp(empty_org("工厂"), "wwfactory", faults).await;
    let dir = temp_dir("huitong-spans");
    let config = load_config(
        hq_to_factory(&dir, &feishu.base, &wecom.base, ""),
        HQ_FACTORY_SECRETS,
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
