//! The declared connector against a real Tryton ERP (trytond 8.2 on SQLite, started per test):
//! the shipped `tryton` definition (REST, user-application key) and `tryton-rpc` (JSON-RPC,
//! session login). What huitong writes is read back through Tryton's own JSON-RPC, not through
//! huitong.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use huitong_connectors::declared::auth::Credentials;
use huitong_connectors::declared::{self, HttpConnector, ListOptions, Options};
use huitong_tests::erp::Tryton;
use secrecy::SecretString;
use serde_json::{Value, json};

fn rest(t: &Tryton) -> HttpConnector {
    t.rest_connector()
}

async fn all(c: &HttpConnector, entity: &str, page: u32) -> Vec<Value> {
    c.list(
        entity,
        ListOptions {
            since: None,
            page_size: Some(page),
        },
    )
    .map(|r| r.expect("record"))
    .collect()
    .await
}

fn decimal(v: &Value) -> String {
    v.get("decimal")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

#[tokio::test]
async fn parties_products_and_a_purchase_order_written_and_read_back_through_trytons_own_api() {
    let Some(t) = Tryton::start().await else {
        return;
    };
    let erp = rest(&t);

    // Seven parties, then the listing paged three at a time sees every party Tryton holds.
    let mut made = BTreeSet::new();
    for i in 1..=7 {
        let id = erp
            .create("party", json!({"name": format!("Customer {i}")}))
            .await
            .expect("create party");
        made.insert(id.parse::<i64>().unwrap());
    }
    let listed = all(&erp, "party", 3).await;
    let listed_ids: BTreeSet<i64> = listed.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(
        listed_ids.len(),
        listed.len(),
        "a record came twice: {listed:?}"
    );
    let own: Vec<i64> = serde_json::from_value(
        t.call("model.party.party.search", json!([[], 0, null, null]))
            .await,
    )
    .unwrap();
    assert_eq!(
        listed_ids,
        own.into_iter().collect(),
        "paging lost or repeated parties"
    );
    assert!(made.is_subset(&listed_ids));
    assert!(listed.len() > 7, "the company's own party is there too");
    assert!(
        listed
            .iter()
            .all(|p| p.get("name").is_some() && p.get("write_date").is_some())
    );

    // A supplier with an address.
    let supplier = erp
        .create(
            "party",
            json!({"name": "供应商 汇通 Supplier", "addresses": [["create", [{"street": "1 Road", "city": "Shanghai"}]]]}),
        )
        .await
        .expect("create supplier");
    let s = erp
        .get("party", &supplier)
        .await
        .unwrap()
        .expect("supplier");
    assert_eq!(s["name"], "供应商 汇通 Supplier");
    let address = s["addresses"][0]["id"].as_i64().expect("address id");
    assert_eq!(s["addresses"][0]["city"], "Shanghai");

    // A product (template + one variant).
    let template = erp
        .create(
            "product",
            json!({"name": "Widget", "type": "goods", "default_uom": t.unit_id, "purchasable": true,
                   "purchase_uom": t.unit_id, "products": [["create", [{"suffix_code": "W1"}]]]}),
        )
        .await
        .expect("create product");
    let p = erp
        .get("product", &template)
        .await
        .unwrap()
        .expect("product");
    let variant = p["products"][0]["id"].as_i64().expect("variant id");

    // A purchase order with two lines, quoted and confirmed through declared actions.
    let po = erp
        .create(
            "purchase",
            json!({
                "company": t.company_id, "party": supplier.parse::<i64>().unwrap(),
                "currency": t.currency_id, "warehouse": t.warehouse_id,
                "invoice_address": address, "invoice_method": "manual", "reference": "PO-HT-1",
                "lines": [["create", [
                    {"type": "line", "product": variant, "quantity": 3, "unit": t.unit_id, "unit_price": "1.25", "description": "widgets"},
                    {"type": "line", "product": variant, "quantity": 2, "unit": t.unit_id, "unit_price": "4.00", "description": "more widgets"}
                ]]]
            }),
        )
        .await
        .expect("create purchase");
    let state = erp
        .action("purchase", "quote", Some(&po), json!({}))
        .await
        .expect("quote");
    assert_eq!(state["state"], "quotation");
    erp.action("purchase", "confirm", Some(&po), json!({}))
        .await
        .expect("confirm");

    // Tryton's own API shows what huitong wrote.
    let own = t
        .call(
            "model.purchase.purchase.read",
            json!([
                [po.parse::<i64>().unwrap()],
                ["reference", "state", "party", "total_amount", "lines"]
            ]),
        )
        .await;
    let own = &own[0];
    assert_eq!(own["reference"], "PO-HT-1");
    assert_eq!(own["party"].as_i64(), Some(supplier.parse().unwrap()));
    assert!(
        ["confirmed", "processing"].contains(&own["state"].as_str().unwrap()),
        "{own}"
    );
    assert_eq!(decimal(&own["total_amount"]), "11.75");
    assert_eq!(own["lines"].as_array().map(Vec::len), Some(2));
    // And huitong reads the same back.
    let mine = erp.get("purchase", &po).await.unwrap().expect("purchase");
    assert_eq!(decimal(&mine["total_amount"]), "11.75");
    assert_eq!(mine["party"]["name"], "供应商 汇通 Supplier");

    // Update, seen through Tryton's own API.
    erp.update("party", &supplier, json!({"name": "Supplier renamed"}))
        .await
        .expect("update");
    let own = t
        .call(
            "model.party.party.read",
            json!([[supplier.parse::<i64>().unwrap()], ["name"]]),
        )
        .await;
    assert_eq!(own[0]["name"], "Supplier renamed");

    // A business error is permanent and carries Tryton's message; unknown ids are not found.
    let e = erp
        .create("purchase", json!({"reference": "no party"}))
        .await
        .expect_err("a purchase without a party");
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().starts_with("erp: "), "{e}");
    assert!(e.to_string().contains("Party"), "{e}");
    assert_eq!(erp.get("party", "999999").await.unwrap(), None);
    let gone = erp.create("party", json!({"name": "Temp"})).await.unwrap();
    erp.delete("party", &gone).await.expect("delete");
    erp.delete("party", &gone)
        .await
        .expect("a second delete finds it gone");
    let own = t
        .call(
            "model.party.party.search",
            json!([[["id", "=", gone.parse::<i64>().unwrap()]], 0, null, null]),
        )
        .await;
    assert_eq!(own, json!([]));
}

#[tokio::test]
async fn json_rpc_with_a_session_login_reuses_one_session() {
    let Some(t) = Tryton::start().await else {
        return;
    };
    let def = declared::resolve("tryton-rpc").expect("shipped definition");
    let erp = HttpConnector::new(
        def,
        Options {
            name: "erp-rpc".into(),
            base_url: t.base_url.clone(),
            params: Default::default(),
            credentials: Credentials {
                username: Some(t.admin_login.clone()),
                password: Some(SecretString::from(t.admin_password.clone())),
                ..Credentials::default()
            },
            allow_hosts: vec!["127.0.0.1".into()],
            retry: None,
        },
    )
    .expect("connector");
    for i in 1..=5 {
        erp.create("party", json!({"name": format!("RPC party {i}")}))
            .await
            .expect("create");
    }
    let listed = all(&erp, "party", 2).await;
    let own: Vec<i64> = serde_json::from_value(
        t.call("model.party.party.search", json!([[], 0, null, null]))
            .await,
    )
    .unwrap();
    let ids: BTreeSet<i64> = listed.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, own.into_iter().collect::<BTreeSet<_>>());
    let id = listed
        .iter()
        .find(|p| p["name"] == "RPC party 3")
        .map(|p| p["id"].to_string())
        .expect("created party listed");
    erp.update("party", &id, json!({"name": "RPC party three"}))
        .await
        .expect("update");
    assert_eq!(
        erp.get("party", &id).await.unwrap().expect("party")["name"],
        "RPC party three"
    );
    assert_eq!(erp.get("party", "999999").await.unwrap(), None);
    // One login served every call.
    assert_eq!(erp.token_fetches(), 1);

    // A wrong password: a clear, permanent error that names the connector, not the password.
    let def = declared::resolve("tryton-rpc").unwrap();
    let bad = HttpConnector::new(
        def,
        Options {
            name: "erp-rpc".into(),
            base_url: t.base_url.clone(),
            credentials: Credentials {
                username: Some(t.admin_login.clone()),
                password: Some(SecretString::from("wrong-pass-word".to_owned())),
                ..Credentials::default()
            },
            allow_hosts: vec!["127.0.0.1".into()],
            ..Options::default()
        },
    )
    .unwrap();
    let e = bad.get("party", "1").await.expect_err("refused");
    let text = e.to_string();
    assert!(text.starts_with("erp-rpc: "), "{text}");
    assert!(text.contains("login was refused"), "{text}");
    assert!(!text.contains("wrong-pass-word"), "{text}");
}

#[test]
fn connector_try_prints_the_first_records_raw_as_json_lines() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(t) = rt.block_on(Tryton::start()) else {
        return;
    };
    rt.block_on(async {
        for i in 1..=6 {
            t.call(
                "model.party.party.create",
                json!([[{"name": format!("Try {i}")}]]),
            )
            .await;
        }
    });
    let dir = tempfile_dir();
    let config = dir.join("huitong.toml");
    std::fs::write(
        &config,
        format!(
            "[connectors.erp]\nkind = \"http\"\ndefinition = \"tryton\"\nbase_url = \"{}\"\napi_key_env = \"TRYTON_API_KEY\"\nallow_hosts = [\"127.0.0.1\"]\n[connectors.erp.params]\ncompany = {}\n",
            t.base_url, t.company_id
        ),
    )
    .unwrap();
    let Some(bin) =
        huitong_tests::huitong_bin("connector_try_prints_the_first_records_raw_as_json_lines")
    else {
        return;
    };
    let out = std::process::Command::new(bin)
        .args([
            "--config",
            config.to_str().unwrap(),
            "connector",
            "try",
            "erp",
            "party",
            "--limit",
            "5",
        ])
        .env("TRYTON_API_KEY", &t.api_key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(
        lines.iter().all(|r| r["__name__"] == "party.party"),
        "{stdout}"
    );
    assert!(!stdout.contains(&t.api_key) && !stderr.contains(&t.api_key));
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("huitong-erp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn tryton_stopped_mid_run_is_retried_and_nothing_is_lost_or_doubled() {
    let Some(mut t) = Tryton::start().await else {
        return;
    };
    let erp = std::sync::Arc::new(rest(&t));
    erp.create("party", json!({"name": "Before the outage"}))
        .await
        .expect("create");
    t.stop().await;
    // Three creates while Tryton is down: each retries its refused connections…
    let pending: Vec<_> = (1..=3)
        .map(|i| {
            let erp = erp.clone();
            tokio::spawn(async move {
                // Own codes: Tryton on SQLite numbers parties created at once alike.
                erp.create(
                    "party",
                    json!({"name": format!("During the outage {i}"), "code": format!("OUT-{i}")}),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(pending.iter().all(|p| !p.is_finished()), "still retrying");
    // …and lands once Tryton is back.
    t.start_again().await;
    for p in pending {
        p.await.unwrap().expect("landed after the restart");
    }
    let names: Vec<String> = serde_json::from_value::<Vec<Value>>(
        t.call(
            "model.party.party.search_read",
            json!([
                [["name", "like", "During the outage%"]],
                0,
                null,
                null,
                ["name"]
            ]),
        )
        .await,
    )
    .unwrap()
    .into_iter()
    .map(|p| p["name"].as_str().unwrap().to_owned())
    .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        [
            "During the outage 1",
            "During the outage 2",
            "During the outage 3"
        ],
        "each exactly once"
    );
}

#[tokio::test]
async fn a_repeated_create_finds_the_first_record_instead_of_making_a_second() {
    let Some(t) = Tryton::start().await else {
        return;
    };
    let erp = rest(&t);
    let party = json!({"name": "Supplier A", "code": "SUP-A",
                       "addresses": [["create", [{"street": "1 Road", "city": "Shanghai"}]]]});
    let first = erp.create("party", party.clone()).await.unwrap();
    assert_eq!(erp.create("party", party).await.unwrap(), first);
    let supplier: i64 = first.parse().unwrap();
    let address = erp.get("party", &first).await.unwrap().unwrap()["addresses"][0]["id"]
        .as_i64()
        .unwrap();
    let order = json!({
        "company": t.company_id, "party": supplier, "currency": t.currency_id,
        "warehouse": t.warehouse_id, "invoice_address": address, "invoice_method": "manual",
        "reference": "PO-2026-0001"
    });
    let po = erp.create("purchase", order.clone()).await.unwrap();
    assert_eq!(erp.create("purchase", order.clone()).await.unwrap(), po);
    // Another reference is another purchase.
    let mut other = order;
    other["reference"] = json!("PO-2026-0002");
    assert_ne!(erp.create("purchase", other).await.unwrap(), po);
    let count = |model: &'static str, domain: Value| {
        let t = &t;
        async move {
            t.call(&format!("model.{model}.search_count"), json!([domain]))
                .await
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(
        count("party.party", json!([["code", "=", "SUP-A"]])).await,
        1
    );
    assert_eq!(
        count(
            "purchase.purchase",
            json!([["reference", "=", "PO-2026-0001"]])
        )
        .await,
        1
    );
}
