//! The shipped Tryton mappings (`mappings/files/tryton-{party,product,order}.yaml`) against a
//! real Tryton (trytond 8.2, started per test): a canonical record mapped `from_canonical` is a
//! body Tryton's REST API accepts (written through `HttpConnector` with the shipped `tryton`
//! definition), and what `get` reads back maps `to_canonical` to the same canonical record in
//! every field both carry. Fields the shipped definition does not read back (roles, tax id,
//! countries, salable, line units) are checked through Tryton's own JSON-RPC.

use std::collections::BTreeSet;

use huitong_connectors::declared::HttpConnector;
use huitong_mappings::{Mapping, MemoryResolver, shipped};
use huitong_tests::erp::Tryton;
use serde_json::{Value, json};

const SYSTEM: &str = "tryton";

fn rest(t: &Tryton) -> HttpConnector {
    t.rest_connector()
}

fn mapping(entity: &str) -> Mapping {
    match shipped::load(SYSTEM, entity) {
        Some(Ok(m)) => m,
        Some(Err(e)) => panic!("{e}"),
        None => panic!("no shipped mapping tryton-{entity}"),
    }
}

/// The id of the first record a JSON-RPC `create` made.
fn created(v: &Value) -> i64 {
    v[0].as_i64().unwrap_or_else(|| panic!("create gave {v}"))
}

/// Every field `back` and `original` both carry is equal, inside arrays of objects too (the
/// same number of elements, each compared the same way).
fn same_where_both_carry(original: &Value, back: &Value) {
    fn walk(path: &str, o: &Value, b: &Value) {
        match (o, b) {
            (Value::Object(o), Value::Object(b)) => {
                for (k, v) in o {
                    if let Some(w) = b.get(k) {
                        walk(&format!("{path}/{k}"), v, w);
                    }
                }
            }
            (Value::Array(o), Value::Array(b)) if o.iter().any(Value::is_object) => {
                assert_eq!(o.len(), b.len(), "{path}: {o:?} / {b:?}");
                for (i, (v, w)) in o.iter().zip(b).enumerate() {
                    walk(&format!("{path}/{i}"), v, w);
                }
            }
            _ => assert_eq!(o, b, "field {path}"),
        }
    }
    assert!(
        original.is_object() && back.is_object(),
        "{original} / {back}"
    );
    walk("", original, back);
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() >= 20
            && s.ends_with('Z')
            && s.as_bytes()[4] == b'-'
            && s.as_bytes()[10] == b'T'
            && s[..4].chars().all(|c| c.is_ascii_digit())
    })
}

#[tokio::test]
async fn canonical_party_product_and_order_written_through_the_shipped_mappings_read_back_the_same()
{
    let Some(t) = Tryton::start().await else {
        return;
    };
    round_trip(&t).await;
}

/// The same on PostgreSQL, where Tryton gives booleans as true/false (SQLite: 0/1).
#[tokio::test]
async fn the_same_round_trip_on_postgresql() {
    let Some(t) = Tryton::start_postgres().await else {
        return;
    };
    round_trip(&t).await;
}

async fn round_trip(t: &Tryton) {
    let erp = rest(t);

    // Tryton's reference records differ between databases: made through its own API, then
    // linked as an admin would (an xref file).
    let supplier_cat = created(
        &t.call(
            "model.party.category.create",
            json!([[{"name": "Supplier"}]]),
        )
        .await,
    );
    let customer_cat = created(
        &t.call(
            "model.party.category.create",
            json!([[{"name": "Customer"}]]),
        )
        .await,
    );
    let other_cat = created(
        &t.call("model.party.category.create", json!([[{"name": "VIP"}]]))
            .await,
    );
    let china = created(
        &t.call(
            "model.country.country.create",
            json!([[{"name": "China", "code": "CN"}]]),
        )
        .await,
    );
    let mut links = MemoryResolver::new();
    links.insert(
        "party_category",
        SYSTEM,
        &supplier_cat.to_string(),
        "supplier",
    );
    links.insert(
        "party_category",
        SYSTEM,
        &customer_cat.to_string(),
        "customer",
    );
    links.insert("country", SYSTEM, &china.to_string(), "CN");
    links.insert("unit", SYSTEM, &t.unit_id.to_string(), "u");
    links.insert("currency", SYSTEM, &t.currency_id.to_string(), "CNY");

    // ---- Party ------------------------------------------------------------------------------
    let party = json!({
        "id": "PARTY-HT-1",
        "name": "汇通 Supplier Ltd",
        "code": "SUP-HT-1",
        "roles": ["customer", "supplier"],
        "email": "buyer@supplier.example",
        "phone": "+862161234567",
        "addresses": [{
            "street": "1 Century Avenue\nTower 2",
            "city": "Shanghai",
            "postal_code": "200120",
            "country": "CN"
        }],
        "tax_id": "91310000MA1FL0000X",
        "active": true
    });
    let pm = mapping("party");
    let out = pm.from_canonical(&party, &links).expect("party maps");
    // Not linked to Tryton yet: a body for a new party, nothing unresolved but its own id.
    assert!(
        out.unresolved.iter().all(|u| u.id == "PARTY-HT-1"),
        "{:?}",
        out.unresolved
    );
    let body = &out.record;
    assert_eq!(body["name"], "汇通 Supplier Ltd");
    assert_eq!(body["code"], "SUP-HT-1");
    assert_eq!(body["email"], "buyer@supplier.example");
    assert_eq!(body["phone"], "+862161234567");
    assert_eq!(body["active"], true);
    assert_eq!(
        body["addresses"],
        json!([["create", [{"street": "1 Century Avenue\nTower 2", "city": "Shanghai",
                            "postal_code": "200120", "country": china}]]])
    );
    assert_eq!(
        body["identifiers"],
        json!([["create", [{"type": null, "code": "91310000MA1FL0000X"}]]])
    );
    assert_eq!(
        body["categories"],
        json!([["remove", []], ["add", [customer_cat, supplier_cat]]])
    );
    assert!(body.get("id").is_none(), "Tryton refuses an id: {body}");

    let party_id = erp
        .create("party", body.clone())
        .await
        .expect("Tryton accepts the mapped party");
    links.insert("party", SYSTEM, &party_id, "PARTY-HT-1");
    let raw = erp
        .get("party", &party_id)
        .await
        .unwrap()
        .expect("party read back");
    let back = pm.to_canonical(&raw, &links).expect("maps back");
    assert_eq!(back.key.as_deref(), Some(party_id.as_str()));
    assert!(back.unresolved.is_empty(), "{:?}", back.unresolved);
    let back = back.record;
    assert_eq!(back["id"], "PARTY-HT-1");
    assert_eq!(back["name"], party["name"]);
    assert_eq!(back["code"], party["code"]);
    assert_eq!(back["email"], party["email"]);
    assert_eq!(back["phone"], party["phone"]);
    assert_eq!(back["active"], true);
    // The shipped definition reads street, city and postal code (not the country).
    let address = &back["addresses"][0];
    assert_eq!(
        back["addresses"].as_array().map(Vec::len),
        Some(1),
        "{back}"
    );
    assert_eq!(address["street"], "1 Century Avenue\nTower 2");
    assert_eq!(address["city"], "Shanghai");
    assert_eq!(address["postal_code"], "200120");
    assert!(
        is_rfc3339_utc(&back["updated_at"]),
        "{}",
        back["updated_at"]
    );
    same_where_both_carry(&party, &back);
    let carried: BTreeSet<&str> = back
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "id",
        "name",
        "code",
        "email",
        "phone",
        "addresses",
        "active",
    ] {
        assert!(carried.contains(k), "{k} not read back: {back}");
    }
    // What the definition does not read, Tryton holds as the mapping wrote it.
    let own = t
        .call(
            "model.party.party.read",
            json!([
                [party_id.parse::<i64>().unwrap()],
                ["categories", "identifiers", "addresses"]
            ]),
        )
        .await;
    let cats: BTreeSet<i64> = serde_json::from_value(own[0]["categories"].clone()).unwrap();
    assert_eq!(cats, BTreeSet::from([supplier_cat, customer_cat]));
    let idents = t
        .call(
            "model.party.identifier.read",
            json!([own[0]["identifiers"], ["code"]]),
        )
        .await;
    assert_eq!(idents[0]["code"], "91310000MA1FL0000X");
    let addrs = t
        .call(
            "model.party.address.read",
            json!([own[0]["addresses"], ["country", "city"]]),
        )
        .await;
    assert_eq!(addrs[0]["country"].as_i64(), Some(china));
    let invoice_address = addrs[0]["id"].as_i64().expect("address id");

    // Once linked, the same mapping gives an update body Tryton accepts: no sub-records, no
    // fields Tryton freezes after creation; roles replaced (a category of no role stays).
    t.call(
        "model.party.party.write",
        json!([[party_id.parse::<i64>().unwrap()], {"categories": [["add", [other_cat]]]}]),
    )
    .await;
    let mut renamed = party.clone();
    renamed["name"] = json!("汇通 Supplier Ltd (renamed)");
    renamed["roles"] = json!(["supplier"]);
    let out = pm.from_canonical(&renamed, &links).expect("maps");
    assert!(out.unresolved.is_empty(), "{:?}", out.unresolved);
    assert_eq!(
        out.record,
        json!({"name": "汇通 Supplier Ltd (renamed)", "active": true,
               "categories": [["remove", [customer_cat]], ["add", [supplier_cat]]]})
    );
    erp.update("party", &party_id, out.record)
        .await
        .expect("Tryton accepts the mapped update");
    let own = t
        .call(
            "model.party.party.read",
            json!([[party_id.parse::<i64>().unwrap()], ["name", "categories"]]),
        )
        .await;
    assert_eq!(own[0]["name"], "汇通 Supplier Ltd (renamed)");
    let cats: BTreeSet<i64> = serde_json::from_value(own[0]["categories"].clone()).unwrap();
    assert_eq!(cats, BTreeSet::from([supplier_cat, other_cat]));

    // ---- Product ----------------------------------------------------------------------------
    // A template with two variants first, so the product's template and variant ids differ
    // (a line naming the template's id would name another product).
    t.call(
        "model.product.template.create",
        json!([[{"name": "Decoy", "type": "goods", "default_uom": t.unit_id,
                 "products": [["create", [{"suffix_code": "D1"}, {"suffix_code": "D2"}]]]}]]),
    )
    .await;
    let product = json!({
        "id": "PROD-HT-1",
        "name": "Widget 汇通",
        "code": "W-HT-1",
        "type": "goods",
        "unit": "u",
        "purchasable": true,
        "salable": true,
        "list_price": "12.5",
        "active": true
    });
    let prm = mapping("product");
    let out = prm.from_canonical(&product, &links).expect("product maps");
    assert!(
        out.unresolved.iter().all(|u| u.id == "PROD-HT-1"),
        "{:?}",
        out.unresolved
    );
    assert_eq!(
        out.record,
        json!({"name": "Widget 汇通", "code": "W-HT-1", "type": "goods",
               "default_uom": t.unit_id, "purchasable": true, "purchase_uom": t.unit_id,
               "salable": true, "sale_uom": t.unit_id, "list_price": "12.5", "active": true,
               "products": [["create", [{}]]]})
    );
    let template_id = erp
        .create("product", out.record)
        .await
        .expect("Tryton accepts the mapped product");
    links.insert("product", SYSTEM, &template_id, "PROD-HT-1");
    let raw = erp
        .get("product", &template_id)
        .await
        .unwrap()
        .expect("product read back");
    let variants = raw["products"].as_array().expect("variants");
    assert_eq!(variants.len(), 1, "{raw}");
    let variant_id = variants[0]["id"].as_i64().expect("variant id");
    assert_ne!(variant_id.to_string(), template_id, "{raw}");
    links.insert(
        "product_variant",
        SYSTEM,
        &variant_id.to_string(),
        "PROD-HT-1",
    );
    let back = prm.to_canonical(&raw, &links).expect("maps back");
    assert_eq!(back.key.as_deref(), Some(template_id.as_str()));
    assert!(back.unresolved.is_empty(), "{:?}", back.unresolved);
    let back = back.record;
    assert_eq!(back["id"], "PROD-HT-1");
    assert_eq!(back["name"], "Widget 汇通");
    assert_eq!(back["code"], "W-HT-1");
    assert_eq!(back["type"], "goods");
    assert_eq!(back["unit"], "u");
    assert_eq!(back["purchasable"], true);
    assert_eq!(back["list_price"], "12.5");
    same_where_both_carry(&product, &back);
    for k in [
        "id",
        "name",
        "code",
        "type",
        "unit",
        "purchasable",
        "list_price",
    ] {
        assert!(back.get(k).is_some(), "{k} not read back: {back}");
    }
    // The variant took the template's code (the SKU), and salable is set.
    assert_eq!(variants[0]["code"], "W-HT-1");
    let own = t
        .call(
            "model.product.template.read",
            json!([
                [template_id.parse::<i64>().unwrap()],
                ["salable", "sale_uom"]
            ]),
        )
        .await;
    // SQLite gives booleans as 0/1.
    assert!(
        own[0]["salable"] == json!(true) || own[0]["salable"] == json!(1),
        "{own}"
    );
    assert_eq!(own[0]["sale_uom"].as_i64(), Some(t.unit_id));

    // ---- Purchase order ---------------------------------------------------------------------
    let order = json!({
        "id": "ORDER-HT-1",
        "number": "PO-HT-2001",
        "supplier_id": "PARTY-HT-1",
        "status": "draft",
        "currency": "CNY",
        "total": "11.75",
        "lines": [
            {"product_id": "PROD-HT-1", "name": "widgets", "quantity": 3, "unit": "u", "unit_price": "1.25"},
            {"product_id": "PROD-HT-1", "name": "more widgets", "quantity": 2, "unit": "u", "unit_price": "4"}
        ]
    });
    let om = mapping("order");
    let out = om.from_canonical(&order, &links).expect("order maps");
    assert!(
        out.unresolved.iter().all(|u| u.id == "ORDER-HT-1"),
        "{:?}",
        out.unresolved
    );
    let party_num: i64 = party_id.parse().unwrap();
    assert_eq!(
        out.record,
        json!({
            "reference": "PO-HT-2001",
            "party": party_num,
            "currency": t.currency_id,
            "lines": [["create", [
                {"type": "line", "product": variant_id, "quantity": 3, "unit": t.unit_id,
                 "unit_price": "1.25", "description": "widgets"},
                {"type": "line", "product": variant_id, "quantity": 2, "unit": t.unit_id,
                 "unit_price": "4", "description": "more widgets"}
            ]]]
        })
    );
    let po = erp
        .create("purchase", out.record)
        .await
        .expect("Tryton accepts the mapped purchase");
    links.insert("order", SYSTEM, &po, "ORDER-HT-1");
    let read = async |erp: &HttpConnector| {
        let raw = erp
            .get("purchase", &po)
            .await
            .unwrap()
            .expect("purchase read back");
        let m = om.to_canonical(&raw, &links).expect("maps back");
        assert_eq!(m.key.as_deref(), Some(po.as_str()));
        assert!(m.unresolved.is_empty(), "{:?}", m.unresolved);
        m.record
    };
    let back = read(&erp).await;
    assert_eq!(back["id"], "ORDER-HT-1");
    // A draft has no number of Tryton's: the canonical number travelled as the reference.
    assert_eq!(back["number"], "PO-HT-2001");
    assert_eq!(back["reference"], "PO-HT-2001");
    assert_eq!(back["status"], "draft");
    assert_eq!(back["supplier_id"], "PARTY-HT-1");
    assert_eq!(back["currency"], "CNY");
    assert_eq!(back["total"], "11.75");
    let lines = back["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 2, "{back}");
    for (sent, got) in order["lines"].as_array().unwrap().iter().zip(lines) {
        assert_eq!(got["product_id"], "PROD-HT-1", "{got}");
        assert_eq!(got["name"], sent["name"], "{got}");
        assert_eq!(got["quantity"], sent["quantity"], "{got}");
        assert_eq!(got["unit_price"], sent["unit_price"], "{got}");
    }
    same_where_both_carry(&order, &back);
    // Line units are not read by the shipped definition: Tryton's own API.
    let own = t
        .call(
            "model.purchase.purchase.read",
            json!([[po.parse::<i64>().unwrap()], ["lines"]]),
        )
        .await;
    let own_lines = t
        .call(
            "model.purchase.line.read",
            json!([own[0]["lines"], ["unit", "product"]]),
        )
        .await;
    for l in own_lines.as_array().unwrap() {
        assert_eq!(l["unit"].as_i64(), Some(t.unit_id), "{l}");
        assert_eq!(l["product"].as_i64(), Some(variant_id), "{l}");
    }

    // The state is moved by actions, and read through the status table. Tryton wants an invoice
    // address to confirm, which a canonical order does not carry.
    erp.update("purchase", &po, json!({"invoice_address": invoice_address}))
        .await
        .expect("invoice address");
    erp.action("purchase", "quote", Some(&po), json!({}))
        .await
        .expect("quote");
    let quoted = read(&erp).await;
    assert_eq!(
        quoted["status"], "draft",
        "a quotation is not confirmed yet"
    );
    erp.action("purchase", "confirm", Some(&po), json!({}))
        .await
        .expect("confirm");
    let confirmed = read(&erp).await;
    assert_eq!(confirmed["status"], "confirmed");
    // Tryton numbered it; the canonical number was kept as the reference.
    let number = confirmed["number"].as_str().expect("number");
    assert!(!number.is_empty() && number != "PO-HT-2001", "{confirmed}");
    assert_eq!(confirmed["reference"], "PO-HT-2001");
    assert_eq!(confirmed["total"], "11.75");
    assert_eq!(confirmed["lines"], back["lines"]);
    assert!(
        is_rfc3339_utc(&confirmed["updated_at"]),
        "{}",
        confirmed["updated_at"]
    );
}
