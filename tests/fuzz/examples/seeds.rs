//! Writes the seed corpora under `tests/fuzz/corpus/<target>/`: valid callbacks signed and
//! encrypted with the test keys (`huitong_fuzz::keys`), vendor frames, the shipped mapping
//! files and the default configuration. Deterministic: rerun it after changing a layout and
//! commit what changes.
//!
//! `scripts/fuzz seeds`. It is built like the targets (the same instrumented dependencies), so it
//! is a libFuzzer binary too: it writes the seeds when libFuzzer initialises it, and exits.
#![no_main]

use std::path::{Path, PathBuf};

use huitong_connectors::dingtalk::events as dt;
use huitong_connectors::feishu::events as fs;
use huitong_connectors::feishu::ws::{Frame, Header, METHOD_CONTROL, METHOD_DATA};
use huitong_connectors::wecom::events as wc;
use huitong_connectors::wxbiz::WxBizMsgCrypt;
use huitong_fuzz::join;
use huitong_fuzz::keys::*;
use prost::Message as _;
use serde_json::{Value, json};

struct Out {
    root: PathBuf,
}

impl Out {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus folder");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
}

fn feishu_envelope(id: &str, token: &str) -> Value {
    json!({"schema": "2.0", "header": {"event_id": id, "event_type": "contact.user.created_v3",
        "create_time": "1700000000000", "token": token, "app_id": "cli_fuzz", "tenant_key": "tk"},
        "event": {"object": {"open_id": "ou_1", "name": "张三"}}})
}

fn feishu(out: &Out) {
    let t = "feishu_callback";
    let vt = FEISHU_VERIFICATION_TOKEN;
    let event = feishu_envelope("e1", vt);
    let dept = json!({"schema": "2.0", "header": {"event_id": "e2",
        "event_type": "contact.department.updated_v3", "create_time": 1700000000000i64,
        "token": vt}, "event": {"object": {"open_department_id": "od_1"}}});
    let legacy = json!({"uuid": "u1", "token": vt, "ts": "1700000000.1",
        "type": "event_callback", "event": {"type": "message"}});
    let challenge = json!({"challenge": "abc", "token": vt, "type": "url_verification"});
    // 0: a signed, encrypted event as Feishu sends it.
    let (h, body) = fs::build_callback(Some(FEISHU_ENCRYPT_KEY), &event, FEISHU_NOW, "n1");
    let hv: Vec<&[u8]> = h.iter().map(|(_, v)| v.as_bytes()).collect();
    out.put(t, "0-signed-event", &join(0, &[hv[0], hv[1], hv[2], &body]));
    // 1: the unsigned, encrypted challenge.
    let enc = fs::encrypt_with_iv(
        FEISHU_ENCRYPT_KEY,
        RANDOM16,
        challenge.to_string().as_bytes(),
    );
    let body = json!({ "encrypt": enc }).to_string();
    out.put(t, "1-unsigned-challenge", &join(1, &[body.as_bytes()]));
    // 2: an encrypted body, signed by the harness.
    let enc = fs::encrypt_with_iv(FEISHU_ENCRYPT_KEY, RANDOM16, event.to_string().as_bytes());
    let body = json!({ "encrypt": enc }).to_string();
    out.put(t, "2-body", &join(2, &[body.as_bytes()]));
    // 3, 4: plaintexts, encrypted (and signed) by the harness.
    for (name, v) in [
        ("event", &event),
        ("dept", &dept),
        ("legacy", &legacy),
        ("challenge", &challenge),
    ] {
        out.put(
            t,
            &format!("3-{name}"),
            &join(3, &[v.to_string().as_bytes()]),
        );
    }
    out.put(
        t,
        "4-challenge",
        &join(4, &[challenge.to_string().as_bytes()]),
    );
    // 5: plaintext mode.
    for (name, v) in [
        ("event", &event),
        ("legacy", &legacy),
        ("challenge", &challenge),
    ] {
        out.put(
            t,
            &format!("5-{name}"),
            &join(5, &[v.to_string().as_bytes()]),
        );
    }

    // Long-connection frames.
    let t = "feishu_long_connection";
    // A flag byte (1: hang up after the frame), then the frame.
    let frame = |method: i32, headers: &[(&str, &str)], payload: Option<&[u8]>| {
        let mut out = vec![0u8];
        out.extend(
            Frame {
                seq_id: 1,
                log_id: 2,
                service: 7,
                method,
                headers: headers
                    .iter()
                    .map(|(k, v)| Header {
                        key: (*k).into(),
                        value: (*v).into(),
                    })
                    .collect(),
                payload_encoding: None,
                payload_type: None,
                payload: payload.map(<[u8]>::to_vec),
                log_id_new: Some("log".into()),
            }
            .encode_to_vec(),
        );
        out
    };
    let pong = json!({"PingInterval": 120, "ReconnectCount": -1, "ReconnectInterval": 120,
        "ReconnectNonce": 30});
    out.put(
        t,
        "pong",
        &frame(
            METHOD_CONTROL,
            &[("type", "pong")],
            Some(pong.to_string().as_bytes()),
        ),
    );
    out.put(t, "ping", &frame(METHOD_CONTROL, &[("type", "ping")], None));
    let mut hang_up = frame(
        METHOD_CONTROL,
        &[("type", "pong")],
        Some(pong.to_string().as_bytes()),
    );
    hang_up[0] = 1;
    out.put(t, "pong-then-hang-up", &hang_up);
    let ev = feishu_envelope("e1", "").to_string();
    let hdrs = [
        ("type", "event"),
        ("message_id", "m1"),
        ("sum", "1"),
        ("seq", "0"),
        ("trace_id", "t"),
    ];
    out.put(t, "event", &frame(METHOD_DATA, &hdrs, Some(ev.as_bytes())));
    let (a, b) = ev.as_bytes().split_at(ev.len() / 2);
    out.put(
        t,
        "fragment-0",
        &frame(
            METHOD_DATA,
            &[
                ("type", "event"),
                ("message_id", "m2"),
                ("sum", "2"),
                ("seq", "0"),
            ],
            Some(a),
        ),
    );
    out.put(
        t,
        "fragment-1",
        &frame(
            METHOD_DATA,
            &[
                ("type", "event"),
                ("message_id", "m2"),
                ("sum", "2"),
                ("seq", "1"),
            ],
            Some(b),
        ),
    );
    out.put(
        t,
        "card",
        &frame(
            METHOD_DATA,
            &[("type", "card"), ("message_id", "m3")],
            Some(b"{}"),
        ),
    );
}

fn dingtalk(out: &Out) {
    let t = "dingtalk_callback";
    let crypt = WxBizMsgCrypt::new(
        DINGTALK_TOKEN.to_string().into(),
        &DINGTALK_AES_KEY.to_string().into(),
    )
    .expect("the test key");
    let user = json!({"EventType": "user_add_org", "eventId": "e1", "userId": ["u1", "u2"],
        "CorpId": "dingcorp", "TimeStamp": "1700000000000"});
    let legacy =
        json!({"EventType": "user_modify_org", "UserId": ["u1"], "TimeStamp": 1700000000000i64});
    let dept = json!({"EventType": "org_dept_create", "eventId": "e2", "deptId": [5, "6"]});
    let check = json!({"EventType": "check_url"});
    let suite = json!({"EventType": "check_create_suite_url", "Random": "LPIdSnlF",
        "TestSuiteKey": "suite4xxxxxxxxxxxxxxx"});
    let ts = DINGTALK_NOW.to_string();
    let (q, body) = dt::build_callback(&crypt, DINGTALK_OWNER_KEY, &user, &ts, "nonce");
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_bytes())
            .unwrap_or_default()
    };
    out.put(
        t,
        "0-signed-event",
        &join(
            0,
            &[get("msg_signature"), get("timestamp"), get("nonce"), &body],
        ),
    );
    let enc = crypt.encrypt_with(user.to_string().as_bytes(), DINGTALK_OWNER_KEY, &RANDOM16);
    out.put(t, "1-encrypt", &join(1, &[enc.as_bytes()]));
    out.put(
        t,
        "2-event",
        &join(
            2,
            &[DINGTALK_OWNER_KEY.as_bytes(), user.to_string().as_bytes()],
        ),
    );
    for (name, v) in [
        ("user", &user),
        ("legacy", &legacy),
        ("dept", &dept),
        ("check-url", &check),
        ("suite", &suite),
    ] {
        out.put(
            t,
            &format!("3-{name}"),
            &join(3, &[v.to_string().as_bytes()]),
        );
    }
    let reply = dt::encrypted_reply(&crypt, DINGTALK_OWNER_KEY, "success");
    out.put(t, "4-reply", &join(4, &[&reply.body]));

    let t = "dingtalk_stream";
    let data = json!({"timeStamp": "1", "userId": ["u1"]}).to_string();
    let frames = [
        (
            "event",
            json!({"specVersion": "1.0", "type": "EVENT", "headers": {"topic": "*",
            "messageId": "m1", "eventType": "user_add_org", "eventId": "e1", "eventCorpId": "dingcorp",
            "eventBornTime": "1700000000000", "contentType": "application/json"}, "data": data}),
        ),
        (
            "callback",
            json!({"specVersion": "1.0", "type": "CALLBACK", "headers": {
            "topic": "/v1.0/im/bot/messages/get", "messageId": "m2", "time": "1700000000000"},
            "data": json!({"text": {"content": "hi"}, "msgtype": "text"}).to_string()}),
        ),
        (
            "ping",
            json!({"specVersion": "1.0", "type": "SYSTEM", "headers": {"topic": "ping",
            "messageId": "m3"}, "data": "{\"opaque\":\"x\"}"}),
        ),
        (
            "disconnect",
            json!({"specVersion": "1.0", "type": "SYSTEM", "headers": {
            "topic": "disconnect", "messageId": "m4"}, "data": "{\"reason\":\"bye\"}"}),
        ),
        (
            "other",
            json!({"type": "OTHER", "headers": {}, "data": null}),
        ),
    ];
    for (name, f) in frames {
        out.put(t, name, f.to_string().as_bytes());
    }
}

fn wecom(out: &Out) {
    let t = "wecom_callback";
    let crypt = WxBizMsgCrypt::new(
        WECOM_TOKEN.to_string().into(),
        &WECOM_AES_KEY.to_string().into(),
    )
    .expect("the test key");
    let text = format!(
        "<xml><ToUserName><![CDATA[{WECOM_CORP_ID}]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 &amp; <b>]]></Content><MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>"
    );
    let user = format!(
        "<xml><ToUserName><![CDATA[{WECOM_CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event><ChangeType>create_user</ChangeType><UserID><![CDATA[zhangsan]]></UserID><Department><![CDATA[1,2]]></Department><ExtAttr><Item><Name>a</Name><Value>1</Value></Item><Item><Name>b</Name><Value>2</Value></Item></ExtAttr></xml>"
    );
    let party = format!(
        "<xml><ToUserName><![CDATA[{WECOM_CORP_ID}]]></ToUserName><FromUserName>sys</FromUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>update_party</ChangeType><Id>2</Id><Name>R&amp;D</Name><ParentId>1</ParentId></xml>"
    );
    let enter = "<xml><MsgType>event</MsgType><Event>enter_agent</Event><CreateTime>1</CreateTime><FromUserName>u</FromUserName></xml>".to_string();
    let (q, body) = wc::build_callback(
        &crypt,
        WECOM_CORP_ID,
        Some(1_000_002),
        &user,
        WECOM_NOW,
        "nonce",
    );
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_bytes())
            .unwrap_or_default()
    };
    out.put(
        t,
        "0-signed-event",
        &join(
            0,
            &[
                get("msg_signature"),
                get("timestamp"),
                get("nonce"),
                b"",
                body.as_bytes(),
            ],
        ),
    );
    let echostr = crypt.encrypt_with(b"1288432023552776189", WECOM_CORP_ID, &RANDOM16);
    let sig = crypt.signature(&WECOM_NOW.to_string(), "nonce", &echostr);
    out.put(
        t,
        "0-verification",
        &join(
            0,
            &[
                sig.as_bytes(),
                WECOM_NOW.to_string().as_bytes(),
                b"nonce",
                echostr.as_bytes(),
                b"",
            ],
        ),
    );
    out.put(t, "1-echostr", &join(1, &[echostr.as_bytes()]));
    let enc = crypt.encrypt_with(text.as_bytes(), WECOM_CORP_ID, &RANDOM16);
    out.put(t, "2-encrypt", &join(2, &[enc.as_bytes()]));
    for (name, x) in [
        ("text", &text),
        ("user", &user),
        ("party", &party),
        ("enter", &enter),
    ] {
        out.put(
            t,
            &format!("3-{name}"),
            &join(3, &[WECOM_CORP_ID.as_bytes(), x.as_bytes()]),
        );
    }

    let t = "wecom_xml";
    for (name, x) in [
        ("text", &text),
        ("user", &user),
        ("party", &party),
        ("envelope", &body),
    ] {
        out.put(t, name, x.as_bytes());
    }
    out.put(
        t,
        "refs",
        b"<?xml version=\"1.0\"?><!-- c --><xml><A>&#x4e2d;&#25991;&lt;&gt;</A><B/><B>x</B></xml>",
    );
}

fn mappings(out: &Out, repo: &Path) {
    let t = "mapping_load";
    let dir = repo.join("mappings/files");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("mappings/files")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("mapping")
            .to_owned();
        out.put(t, &name, &std::fs::read(&f).expect("a shipped mapping"));
    }

    let t = "mapping_fromjson";
    let seeds: [(&str, &[u8]); 8] = [
        (
            "object",
            br#"{"parent":"p1","a":[1,2.5,"x",{"b":null}],"t":true}"#,
        ),
        ("array", b"[1,2,[3,[4]]]"),
        ("string", br#""\u4e2d\ud83d\ude00\n""#),
        ("number", b"-1.5e300"),
        ("big", b"123456789012345678901234567890"),
        (
            "record",
            br#"{"id":"1","s":"{\"parent\":\"p\"}","other":[1,2]}"#,
        ),
        ("dup", br#"{"id":"1","id":"2","s":"3"}"#),
        ("deep", &[b'['; 130]),
    ];
    for (name, s) in seeds {
        out.put(t, name, s);
    }
}

fn config(out: &Out, repo: &Path) {
    let t = "config_load";
    out.put(
        t,
        "default",
        &std::fs::read(repo.join("hub/huitong.toml")).expect("hub/huitong.toml"),
    );
    let three = "[database]\nurl = \"sqlite://data/huitong.db\"\n\n[connectors.hq]\nkind = \"feishu\"\n\
        app_id = \"cli_1\"\napp_secret_env = \"S\"\nencrypt_key_env = \"K\"\nverification_token_env = \"T\"\n\
        events = \"push\"\n\n[connectors.sub]\nkind = \"dingtalk\"\napp_key = \"ding1\"\napp_secret_env = \"S\"\n\
        base_url = \"http://127.0.0.1:9\"\n\n[connectors.f]\nkind = \"wecom\"\ncorp_id = \"ww1\"\nagent_id = 1000002\n\
        corp_secret_env = \"S\"\n\n[connectors.f.mappings]\nperson = \"wecom-person\"\n\n[routes.org]\nsource = \"hq\"\n\
        targets = [\"sub\", \"f\"]\nmatch = [\"employee_no\", \"email\", \"mobile\"]\n\0S=x\nK=k\nT=t\n";
    out.put(t, "three-vendors", three.as_bytes());
    let env = "[server]\nlisten = \"127.0.0.1:8080\"\n\0HUITONG_SERVER_LISTEN=0.0.0.0:1\nHUITONG_QUEUE_PREFETCH=7\nHUITONG_LOG_FORMAT=json\n";
    out.put(t, "env", env.as_bytes());
}

libfuzzer_sys::fuzz_target!(init: write_and_exit(), |_data: &[u8]| {});

fn write_and_exit() {
    write();
    std::process::exit(0);
}

fn write() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz.join("../..");
    let out = Out {
        root: fuzz.join("corpus"),
    };
    feishu(&out);
    dingtalk(&out);
    wecom(&out);
    mappings(&out, &repo);
    config(&out, &repo);
    println!("seeds written under {}", out.root.display());
}
