//! The shipped Tryton mappings (`files/tryton-{party,product,order}.yaml`) on Tryton's record
//! shapes, without a Tryton (the round trip through a real one is
//! `tests/tests/erp_mappings.rs`): both forms of a many-to-one (id, or object with a dotted
//! `f=`), booleans as 0/1 (SQLite) or true/false (PostgreSQL), Decimal and datetime objects,
//! create and update bodies, and references that are never invented.

use huitong_mappings::{Direction, LoadOptions, Mapping, MemoryResolver, shipped};
use serde_json::{Value, json};

fn mapping(entity: &str) -> Mapping {
    match shipped::load("tryton", entity) {
        Some(Ok(m)) => m,
        Some(Err(e)) => panic!("{e}"),
        None => panic!("no shipped mapping tryton-{entity}"),
    }
}

fn sample(entity: &str) -> Value {
    let path = format!(
        "{}/samples/tryton-{entity}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn links() -> MemoryResolver {
    let mut r = MemoryResolver::new();
    for (entity, ext, can) in [
        ("party", "2", "PARTY-1"),
        ("party_category", "1", "supplier"),
        ("party_category", "2", "customer"),
        ("country", "1", "CN"),
        ("unit", "1", "u"),
        ("currency", "1", "CNY"),
        ("product", "1", "PROD-1"),
        ("product_variant", "7", "PROD-1"),
        ("order", "1", "ORDER-1"),
    ] {
        r.insert(entity, "tryton", ext, can);
    }
    r
}

#[test]
fn party_reads_both_shapes_and_writes_a_create_or_an_update_body() {
    let m = mapping("party");
    let r = links();
    let c = m.to_canonical(&sample("party"), &r).expect("maps");
    assert_eq!(c.key.as_deref(), Some("2"));
    assert_eq!(
        c.record,
        json!({"id": "PARTY-1", "name": "汇通 Supplier Ltd", "code": "SUP-1",
               "roles": ["customer", "supplier"], "email": "buyer@example.test",
               "phone": "+862161234567", "tax_id": "91310000MA1FL0000X", "active": true,
               "addresses": [{"street": "1 Road\nBuilding 2", "city": "Shanghai",
                              "postal_code": "200000", "country": "CN"}],
               "updated_at": "2026-12-07T20:37:35.917274Z"})
    );

    // Dotted fields (f=categories.name, f=addresses.country.code), PostgreSQL booleans, an
    // unlinked category, "" for no e-mail, a whole-second write date.
    let rich = json!({"id": 9, "name": "P", "active": false, "email": "", "phone": "",
        "categories": [{"id": 2, "name": "Customer"}, {"id": 5, "name": "VIP"}],
        "addresses": [{"id": 3, "city": "Beijing", "street": "", "country": {"id": 1, "code": "CN"}}],
        "write_date": {"__class__": "datetime", "year": 2027, "month": 1, "day": 2,
                       "hour": 3, "minute": 4, "second": 5, "microsecond": 0}});
    let c = m.to_canonical(&rich, &r).expect("maps");
    assert_eq!(
        c.record,
        json!({"id": null, "name": "P", "active": false, "roles": ["customer"],
               "addresses": [{"city": "Beijing", "country": "CN"}],
               "updated_at": "2027-01-02T03:04:05Z"})
    );

    // Not linked: a create body, sub-records as [["create", …]].
    let new = json!({"id": "PARTY-NEW", "name": "New", "code": "N1", "email": "a@b.example",
        "phone": "+8613800000000", "roles": ["supplier"], "tax_id": "X1",
        "addresses": [{"street": "1 Road", "city": "Shanghai", "country": "CN"},
                      {"city": "Atlantis", "country": "AQ"}]});
    let w = m.from_canonical(&new, &r).expect("maps");
    assert_eq!(w.key, None, "a Tryton body carries no id");
    assert_eq!(
        w.record,
        json!({"name": "New", "code": "N1", "email": "a@b.example", "phone": "+8613800000000",
               "addresses": [["create", [{"street": "1 Road", "city": "Shanghai", "country": 1},
                                         {"city": "Atlantis"}]]],
               "identifiers": [["create", [{"type": null, "code": "X1"}]]],
               "categories": [["remove", [2]], ["add", [1]]]})
    );
    let missing: Vec<(&str, &str)> = w
        .unresolved
        .iter()
        .map(|u| (u.entity.as_str(), u.id.as_str()))
        .filter(|(_, id)| *id != "PARTY-NEW")
        .collect();
    assert_eq!(missing, [("country", "AQ")], "no country id is invented");

    // Linked: an update body, without what Tryton freezes or keeps in sub-records.
    let mut linked = new.clone();
    linked["id"] = json!("PARTY-1");
    let w = m.from_canonical(&linked, &r).expect("maps");
    assert_eq!(
        w.record,
        json!({"name": "New", "categories": [["remove", [2]], ["add", [1]]]})
    );
}

#[test]
fn product_reads_the_template_and_creates_one_variant() {
    let m = mapping("product");
    let r = links();
    let c = m.to_canonical(&sample("product"), &r).expect("maps");
    assert_eq!(
        c.record,
        json!({"id": "PROD-1", "name": "Widget", "code": "W-100", "type": "goods", "unit": "u",
               "purchasable": true, "list_price": "12.5"})
    );
    // No template code: the only variant's code; assets are goods; an object unit.
    let v = json!({"id": 4, "name": "Laptop", "code": null, "type": "assets", "salable": true,
        "default_uom": {"id": 1, "symbol": "u"}, "products": [{"id": 8, "code": "LT-1"}],
        "list_price": {"__class__": "Decimal", "decimal": "999.9900"}});
    let c = m.to_canonical(&v, &r).expect("maps");
    assert_eq!(
        c.record,
        json!({"id": null, "name": "Laptop", "code": "LT-1", "type": "goods", "unit": "u",
               "salable": true, "list_price": "999.9900"})
    );

    let new = json!({"id": "PROD-NEW", "name": "Consulting", "type": "service", "unit": "u",
        "salable": true, "purchasable": false, "list_price": "100"});
    let w = m.from_canonical(&new, &r).expect("maps");
    assert_eq!(
        w.record,
        json!({"name": "Consulting", "type": "service", "default_uom": 1, "salable": true,
               "sale_uom": 1, "purchasable": false, "list_price": "100",
               "products": [["create", [{}]]]})
    );
    let mut linked = new;
    linked["id"] = json!("PROD-1");
    let w = m.from_canonical(&linked, &r).expect("maps");
    assert!(w.record.get("products").is_none(), "{}", w.record);
}

#[test]
fn order_status_number_lines_and_the_variant_of_a_product() {
    let m = mapping("order");
    let r = links();
    let mut po = sample("order");
    po["lines"][0]["product"] = json!(7);
    po["lines"][1]["product"] = json!(1); // a variant nobody linked (the template's id)
    po["lines"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": 3, "type": "comment", "description": "note", "quantity": null}));
    let c = m.to_canonical(&po, &r).expect("maps");
    assert_eq!(
        c.record,
        json!({"id": "ORDER-1", "number": "1", "reference": "PO-HT-7", "supplier_id": "PARTY-1",
               "status": "confirmed", "currency": "CNY", "total": "11.75",
               "updated_at": "2026-12-07T20:38:05Z",
               "lines": [{"product_id": "PROD-1", "name": "widgets", "quantity": 3, "unit_price": "1.25"},
                         {"name": "more widgets", "quantity": 2, "unit_price": "4.00"}]})
    );
    assert_eq!(c.unresolved.len(), 1, "{:?}", c.unresolved);
    assert_eq!(c.unresolved[0].entity, "product_variant");

    for (state, status) in [
        ("draft", "draft"),
        ("quotation", "draft"),
        ("confirmed", "confirmed"),
        ("processing", "confirmed"),
        ("done", "completed"),
        ("cancelled", "cancelled"),
    ] {
        let d = json!({"id": 5, "state": state, "number": null, "reference": "R-5",
                       "party": 2, "lines": []});
        let c = m.to_canonical(&d, &r).expect("maps");
        assert_eq!(c.record["status"], status, "{state}");
        assert_eq!(
            c.record["number"], "R-5",
            "a draft's number is its reference"
        );
    }

    let new = json!({"id": "ORDER-NEW", "number": "PO-9", "status": "confirmed",
        "supplier_id": "PARTY-1", "currency": "CNY",
        "lines": [{"product_id": "PROD-1", "name": "w", "quantity": 2, "unit": "u", "unit_price": "3"},
                  {"product_id": "PROD-UNLINKED", "name": "x", "quantity": 1}]});
    let w = m.from_canonical(&new, &r).expect("maps");
    assert_eq!(
        w.record,
        json!({"reference": "PO-9", "party": 2, "currency": 1,
               "lines": [["create", [
                   {"type": "line", "product": 7, "quantity": 2, "unit": 1, "unit_price": "3", "description": "w"},
                   {"type": "line", "quantity": 1, "description": "x"}]]]}),
        "no state (moved by actions), the variant's id, nothing invented"
    );
    let mut linked = new;
    linked["id"] = json!("ORDER-1");
    linked["reference"] = json!("SUP-REF");
    let w = m.from_canonical(&linked, &r).expect("maps");
    assert_eq!(
        w.record,
        json!({"reference": "SUP-REF", "party": 2, "currency": 1})
    );
}

/// The compiled evaluator and jaq's interpreter agree on the samples, both directions.
#[test]
fn compiled_and_jaq_only_agree_on_the_tryton_samples() {
    let r = links();
    let jaq_only = LoadOptions {
        jaq_only: true,
        ..LoadOptions::default()
    };
    for entity in ["party", "product", "order"] {
        let name = format!("tryton-{entity}.yaml");
        let text = shipped::FILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .unwrap();
        let fast = Mapping::from_str(&name, text).unwrap();
        let slow = Mapping::from_str_with(&name, text, &jaq_only).unwrap();
        let rec = sample(entity);
        let a = fast.apply(Direction::ToCanonical, &rec, &r).expect("maps");
        let b = slow.apply(Direction::ToCanonical, &rec, &r).expect("maps");
        assert_eq!(a, b, "{name}");
        for canonical in [a.record.clone(), {
            let mut c = a.record.clone();
            c["id"] = json!("NEW");
            c
        }] {
            let a = fast.apply(Direction::FromCanonical, &canonical, &r);
            let b = slow.apply(Direction::FromCanonical, &canonical, &r);
            assert_eq!(a, b, "{name} from {canonical}");
        }
    }
}
