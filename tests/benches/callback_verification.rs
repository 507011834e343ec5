//! WeCom's callback URL verification through the hub (not a test): WeCom wants the decrypted
//! `echostr` back within 1 s. A wall-clock bound asserted in a test only measures how busy the
//! machine is; here the verification's latency is reported against a baseline taken in the same
//! run on the same server — `GET /healthz`, the same HTTP stack without signature or crypto —
//! as a ratio, with the absolute figures next to WeCom's budget.
//!
//! `cargo bench -p huitong-tests --bench callback_verification` (or, without a release build,
//! `cargo test -p huitong-tests --bench callback_verification`); `BENCH_N` requests of each kind
//! (default 300), interleaved.

use std::time::{Duration, Instant};

use huitong::app::App;
use huitong::config::{self, Sources};
use huitong_connectors::wxbiz::WxBizMsgCrypt;

const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const TOKEN: &str = "wccallbacktoken";
const CORP: &str = "ww0123456789abcdef";
const BUDGET: Duration = Duration::from_secs(1);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = std::env::temp_dir().join(format!("huitong-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"sqlite://{}/huitong.db\"\n\
             [connectors.wc]\nkind = \"wecom\"\ncorp_id = \"{CORP}\"\nagent_id = 1000002\n\
             corp_secret_env = \"T_WC_SECRET\"\ntoken_env = \"T_WC_TOKEN\"\nencoding_aes_key_env = \"T_WC_AES_KEY\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let config = config::load(&Sources {
        file: Some(file),
        env: vec![
            ("T_WC_SECRET".into(), "wc-corp-secret".into()),
            ("T_WC_TOKEN".into(), TOKEN.into()),
            ("T_WC_AES_KEY".into(), AES_KEY.into()),
        ],
        overrides: vec![],
    })
    .unwrap_or_else(|e| panic!("config: {e}"));
    let app = App::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.serve(listener, async {
        let _ = rx.await;
    }));

    let crypt = WxBizMsgCrypt::new(TOKEN.to_owned().into(), &AES_KEY.to_owned().into()).unwrap();
    let http = reqwest::Client::new();
    let verify_url = format!("{base}/callbacks/wecom/wc");
    let health_url = format!("{base}/healthz");
    let verify = async |i: usize| {
        let plain = format!("73902154482621{i:05}");
        let echostr = crypt.encrypt(plain.as_bytes(), CORP);
        let ts = chrono::Utc::now().timestamp().to_string();
        let nonce = format!("{}", 1_372_623_149 + i);
        let sig = crypt.signature(&ts, &nonce, &echostr);
        let started = Instant::now();
        let r = http
            .get(&verify_url)
            .query(&[
                ("msg_signature", sig.as_str()),
                ("timestamp", ts.as_str()),
                ("nonce", nonce.as_str()),
                ("echostr", echostr.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), plain.as_bytes());
        started.elapsed()
    };
    let health = async || {
        let started = Instant::now();
        let r = http.get(&health_url).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let _ = r.bytes().await.unwrap();
        started.elapsed()
    };

    // Warm up (connections, token caches), then interleave so both see the same conditions.
    for i in 0..20 {
        verify(i).await;
        health().await;
    }
    let mut v = Vec::with_capacity(n);
    let mut h = Vec::with_capacity(n);
    for i in 0..n {
        v.push(verify(100 + i).await);
        h.push(health().await);
    }
    v.sort();
    h.sort();
    let (v50, v99, vmax) = (percentile(&v, 0.5), percentile(&v, 0.99), v[n - 1]);
    let (h50, h99) = (percentile(&h, 0.5), percentile(&h, 0.99));
    println!("callback_verification: {n} requests of each kind, interleaved");
    println!(
        "  baseline GET /healthz        p50 {:8.3} ms  p99 {:8.3} ms",
        ms(h50),
        ms(h99)
    );
    println!(
        "  WeCom URL verification      p50 {:8.3} ms  p99 {:8.3} ms  max {:8.3} ms",
        ms(v50),
        ms(v99),
        ms(vmax)
    );
    println!(
        "  ratio verification/baseline p50 {:8.2}      p99 {:8.2}",
        v50.as_secs_f64() / h50.as_secs_f64().max(1e-9),
        v99.as_secs_f64() / h99.as_secs_f64().max(1e-9)
    );
    println!(
        "  WeCom's budget {} ms: p99 uses {:.2}% of it",
        BUDGET.as_millis(),
        100.0 * v99.as_secs_f64() / BUDGET.as_secs_f64()
    );

    let _ = stop.send(());
    let _ = served.await;
    let _ = std::fs::remove_dir_all(dir);
}
