//! The webhook verifier checked by code we did not write: signatures made by the official
//! `standardwebhooks` library and by `svix` (PyPI, tests/services/webhooks/sign.py) verify, and
//! every tampering is refused with the right cause; what huitong signs, both libraries accept.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use axum::http::HeaderMap;
use base64::Engine as _;
use huitong::hooks::verify::{Scheme, VerifyError, sign_standard, verify};
use serde_json::{Value, json};

struct Libs {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Libs {
    fn start() -> Option<Libs> {
        let python = huitong_tests::service_url("HUITONG_TEST_PYTHON", "hooks_verify")?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/services/webhooks/sign.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python");
        Some(Libs {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            _child: child,
        })
    }

    fn ask(&mut self, req: Value) -> Value {
        writeln!(self.stdin, "{req}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

fn headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("webhook-id", id.parse().unwrap());
    h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
    h.insert("webhook-signature", sig.parse().unwrap());
    h
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn signatures_of_the_official_libraries_verify_and_every_tampering_is_refused() {
    let Some(mut libs) = Libs::start() else {
        return;
    };
    let scheme = Scheme::preset("standard-webhooks").unwrap();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"acme-supplier-signing-key-0001")
    );
    let other = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"somebody-else-entirely-000002")
    );
    let key = scheme.key(&secret).unwrap();
    let bodies = [
        r#"{"type":"order.created","order":{"no":"PO-2026-0001","supplier_code":"SUP-A","lines":[{"sku":"M3","name":"螺丝 M3","qty":1000,"unit_price":"0.05"}]}}"#.to_owned(),
        "{}".to_owned(),
        " {\n  \"spaces\" : true }\n".to_owned(),
        format!("{{\"big\":\"{}\"}}", "汇".repeat(5000)),
    ];
    let t = now();
    for (i, body) in bodies.iter().enumerate() {
        let id = format!("msg_{i}");
        let signed = libs
            .ask(json!({"op": "sign", "secret": secret, "id": id, "timestamp": t, "body": body}));
        for lib in ["standardwebhooks", "svix"] {
            let sig = signed[lib].as_str().unwrap();
            let v = verify(&scheme, &key, &headers(&id, t, sig), body.as_bytes(), now())
                .unwrap_or_else(|e| panic!("{lib} #{i}: {e}"));
            assert_eq!(v.id.as_deref(), Some(id.as_str()));
            // One byte more in the body, another id, another timestamp: refused.
            let mut tampered = body.clone().into_bytes();
            tampered.push(b' ');
            assert_eq!(
                verify(&scheme, &key, &headers(&id, t, sig), &tampered, now()),
                Err(VerifyError::BadSignature),
                "{lib}"
            );
            assert_eq!(
                verify(
                    &scheme,
                    &key,
                    &headers("msg_other", t, sig),
                    body.as_bytes(),
                    now()
                ),
                Err(VerifyError::BadSignature)
            );
            assert_eq!(
                verify(
                    &scheme,
                    &key,
                    &headers(&id, t + 1, sig),
                    body.as_bytes(),
                    now()
                ),
                Err(VerifyError::BadSignature)
            );
        }
        // Signed with another secret: refused; both signatures sent (rotation): accepted.
        let wrong = libs
            .ask(json!({"op": "sign", "secret": other, "id": id, "timestamp": t, "body": body}));
        let wrong = wrong["svix"].as_str().unwrap().to_owned();
        assert_eq!(
            verify(
                &scheme,
                &key,
                &headers(&id, t, &wrong),
                body.as_bytes(),
                now()
            ),
            Err(VerifyError::BadSignature)
        );
        let both = format!("{wrong} {}", signed["standardwebhooks"].as_str().unwrap());
        assert!(
            verify(
                &scheme,
                &key,
                &headers(&id, t, &both),
                body.as_bytes(),
                now()
            )
            .is_ok()
        );
    }
    // Stale and future timestamps, each signed correctly by the library.
    for (ts, stale) in [(t - 400, true), (t + 400, false)] {
        let body = "{}";
        let signed = libs.ask(
            json!({"op": "sign", "secret": secret, "id": "msg_t", "timestamp": ts, "body": body}),
        );
        let r = verify(
            &scheme,
            &key,
            &headers("msg_t", ts, signed["svix"].as_str().unwrap()),
            body.as_bytes(),
            now(),
        );
        match r {
            Err(VerifyError::Stale(_)) if stale => {}
            Err(VerifyError::Future(_)) if !stale => {}
            other => panic!("timestamp {ts} (now {t}): {other:?}"),
        }
    }
    // What huitong signs (acknowledgements), both libraries verify.
    let body = r#"{"type":"order.landed","order":{"no":"PO-2026-0001","erp_number":"P0001"}}"#;
    let sig = sign_standard(&key, "msg_ack_1", t, body.as_bytes());
    let checked = libs.ask(json!({"op": "verify", "secret": secret, "id": "msg_ack_1", "timestamp": t, "body": body, "signature": sig}));
    assert_eq!(checked, json!({"standardwebhooks": true, "svix": true}));
    let checked = libs.ask(json!({"op": "verify", "secret": other, "id": "msg_ack_1", "timestamp": t, "body": body, "signature": sig}));
    assert_eq!(checked, json!({"standardwebhooks": false, "svix": false}));
}
