//! Org sync with a real Tryton as the route's source: its employees (company.employee, the
//! person on the party) planned and applied into a WeCom sandbox through the same plan/apply
//! and queue as every vendor, then nothing left to do.

use std::sync::Arc;

use huitong::store::{self, Store};
use huitong::sync;
use huitong_connectors::sandbox::FaultSpec;
use huitong_tests::erp::Tryton;
use huitong_tests::org::{delivering, empty_org, get, load_config, temp_dir, user, wecom_corp};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tryton_employees_arrive_in_wecom_with_their_managers() {
    let Some(t) = Tryton::start().await else {
        return;
    };
    // Three employees: a director, and two who report to her.
    let mut employees = Vec::new();
    for (name, code, email, phone) in [
        ("赵敏", "E-001", "zhao.min@example.cn", "13800000001"),
        ("钱进", "E-002", "qian.jin@example.cn", "13800000002"),
        ("孙丽", "E-003", "sun.li@example.cn", "13800000003"),
    ] {
        let party = t
            .call(
                "model.party.party.create",
                json!([[{"name": name, "code": code, "contact_mechanisms": [["create", [
                    {"type": "email", "value": email}, {"type": "mobile", "value": phone}
                ]]]}]]),
            )
            .await[0]
            .as_i64()
            .unwrap();
        let supervisor = employees.first().copied();
        let e = t
            .call(
                "model.company.employee.create",
                json!([[{"party": party, "company": t.company_id, "supervisor": supervisor}]]),
            )
            .await[0]
            .as_i64()
            .unwrap();
        employees.push(e);
    }

    let wecom = wecom_corp(empty_org("工厂"), "wwfactory", FaultSpec::none()).await;
    let dir = temp_dir("huitong-erp-org");
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n\n\
             [connectors.erp]\nkind = \"http\"\ndefinition = \"tryton\"\nbase_url = \"{erp}\"\n\
             api_key_env = \"TRYTON_API_KEY\"\nallow_hosts = [\"127.0.0.1\"]\n\
             [connectors.erp.params]\ncompany = {company}\n\n\
             [connectors.factory]\nkind = \"wecom\"\ncorp_id = \"wwfactory\"\nagent_id = 1000002\n\
             corp_secret_env = \"FACTORY_SECRET\"\nbase_url = \"{wecom}\"\n\n\
             [routes.org]\nsource = \"erp\"\ntargets = [\"factory\"]\n",
            db = dir.join("huitong.db").display(),
            erp = t.base_url,
            company = t.company_id,
            wecom = wecom.base,
        ),
    )
    .unwrap();
    let config = load_config(
        file,
        &[
            ("TRYTON_API_KEY", t.api_key.as_str()),
            ("FACTORY_SECRET", "factory-secret"),
        ],
    );
    let store: Arc<dyn Store> = store::open(&config.database).await.unwrap();
    let ctx = sync::RouteContext::new(&config, "org").unwrap();
    let dl = delivering(&config, store.clone()).await;

    let plan = sync::plan(&ctx, &*store).await.unwrap();
    println!("{}", sync::render_plan(&plan));
    assert_eq!(plan.conflicts(), 0, "{}", sync::render_plan(&plan));
    let creates = plan.targets[0]
        .steps
        .iter()
        .filter(|s| s.action == sync::Action::Create)
        .count();
    assert_eq!(creates, 3, "{}", sync::render_plan(&plan));
    let report = sync::apply(&ctx, &plan, &*store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);

    let org = get(&format!("{}/_sandbox/org", wecom.base)).await;
    let director = user(&org, "E-001").expect("E-001 in WeCom");
    assert_eq!(director["name"], "赵敏");
    assert_eq!(director["email"], "zhao.min@example.cn");
    assert_eq!(director["mobile"], "13800000001");
    for code in ["E-002", "E-003"] {
        let u = user(&org, code).unwrap_or_else(|| panic!("{code} in WeCom: {org}"));
        assert_eq!(
            u["wecom"]["extra"]["direct_leader"][0], director["key"],
            "{u}"
        );
        assert_eq!(
            u["departments"],
            json!(["root"]),
            "placed in the company's (root) department: {u}"
        );
    }

    let again = sync::plan(&ctx, &*store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));
    let _ = std::fs::remove_dir_all(dir);
}
