//! An admin's own mapping drives a route: the WeCom factory keeps job titles in English in
//! `alias` (a field renamed, through a value table of the admin's), not in `position`. Plan,
//! apply and echo use it; the route settles; `serve`'s reload picks up an edited file and
//! refuses one that does not compile, keeping the mapping in use.

use std::path::Path;
use std::sync::Arc;

use huitong::config::Config;
use huitong::store::{self, Store};
use huitong::sync::{self, Action, RouteContext};
use huitong_connectors::sandbox::FaultSpec;
use huitong_tests::org::{
    Delivering, HQ_FACTORY_SECRETS, delivering, empty_org, feishu_hq, fixture, get, hq_to_factory,
    load_config, temp_dir, wecom_corp, within,
};
use serde_json::Value;

/// The shipped WeCom person mapping, edited as an admin would: `title` <-> `alias` through the
/// `titles` table; `position` and the English name no longer mapped.
fn admin_mapping(accountant: &str, also: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mappings/files/wecom-person.yaml");
    let shipped =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let shipped = shipped.as_str();
    let titles = format!(
        "  titles:\n    专员: Specialist\n    主管: Supervisor\n    会计: {accountant}\n    助理: Assistant\n    \
         客服: Customer service\n    总监: Director\n    采购员: Buyer\n    高级工程师: Senior engineer\n{also}"
    );
    let edited = shipped
        .replace("tables:\n", &format!("tables:\n{titles}"))
        .replace(
            "  - field: en_name\n    expr: .alias\n",
            "",
        )
        .replace(
            "  - field: title\n    expr: .position\n",
            "  - field: title\n    expr: .alias | select(. != \"\") // empty | rtable(\"titles\")\n",
        )
        .replace("  - field: alias\n    expr: .en_name\n", "")
        .replace(
            "  - field: position\n    expr: .title\n",
            "  - field: alias\n    expr: .title | table(\"titles\")\n",
        );
    assert_ne!(
        edited, shipped,
        "the shipped mapping changed: update this test's edits"
    );
    assert!(edited.contains("rtable(\"titles\")") && edited.contains("table(\"titles\")"));
    edited
}

fn users_by_employee_no(org: &Value) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = org["users"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| {
                    let s = |k: &str| u[k].as_str().unwrap_or_default().to_owned();
                    (s("employee_no"), s("title"), s("en_name"))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

async fn sync_once(ctx: &RouteContext, store: &dyn Store, dl: &Delivering) -> sync::Plan {
    let plan = sync::plan(ctx, store).await.unwrap();
    let report = sync::apply(ctx, &plan, store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    plan
}

async fn store_arc(config: &Config) -> Arc<dyn Store> {
    store::open(&config.database).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_uses_the_admins_mapping_settles_and_reloads_an_edited_file() {
    let feishu = feishu_hq(fixture("small-org.json"), FaultSpec::none()).await;
    let wecom = wecom_corp(empty_org("工厂"), "wwfactory", FaultSpec::none()).await;
    let dir = temp_dir("huitong-admin-mapping");
    let mapping = dir.join("acme-wecom-person.yaml");
    std::fs::write(&mapping, admin_mapping("Accountant", "")).unwrap();
    // The factory's person mapping is the admin's file; its departments name a shipped one.
    let own = format!(
        "\n[connectors.factory.mappings]\nperson = \"{}\"\ndepartment = \"wecom-department\"\n",
        mapping.display()
    );
    let config = load_config(
        hq_to_factory(&dir, &feishu.base, &wecom.base, &own),
        HQ_FACTORY_SECRETS,
    );
    let store = store_arc(&config).await;
    let ctx = RouteContext::new(&config, "org").unwrap();
    let dl = delivering(&config, store.clone()).await;

    // Plan and apply: WeCom holds the English titles in `alias` (the sandbox shows it as the
    // English name), and nothing in `position` (its title).
    let first = sync_once(&ctx, &*store, &dl).await;
    assert_eq!(first.count(Action::Create), 2 + 20);
    let source = get(&format!("{}/_sandbox/org", feishu.base)).await;
    let factory = get(&format!("{}/_sandbox/org", wecom.base)).await;
    let got = users_by_employee_no(&factory);
    assert_eq!(got.len(), 20);
    let accountants: Vec<&str> = source["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["title"] == "会计")
        .filter_map(|u| u["employee_no"].as_str())
        .collect();
    assert!(!accountants.is_empty(), "the fixture has accountants");
    for (no, title, alias) in &got {
        assert_eq!(title, "", "{no}: nothing written to position");
        assert!(!alias.is_empty(), "{no}: the title went to alias");
        if accountants.contains(&no.as_str()) {
            assert_eq!(alias, "Accountant", "{no}");
        }
    }

    // Settled: read back through the admin's mapping, every title equals the source's.
    let again = sync::plan(&ctx, &*store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));

    // The admin edits the table: accountants are now "Bookkeeper" in WeCom (what WeCom holds
    // today still reads, as 会计师). The next plan, after a reload, updates the accountants only.
    std::fs::write(
        &mapping,
        admin_mapping("Bookkeeper", "    会计师: Accountant\n"),
    )
    .unwrap();
    let endpoint = ctx.targets[0].clone();
    // `serve`'s watch on the files (every 2 s) swaps the mapping in the connector's instance.
    let watch = huitong::jobs::start_mapping_reload(&config).expect("a mapping file to watch");
    let before = endpoint.mappings();
    within(15, "serve reloaded the edited mapping", async || {
        // A file system with a coarse clock may show the same modification time at first.
        let _ = filetime_bump(&mapping);
        !Arc::ptr_eq(&before, &endpoint.mappings())
    })
    .await;
    watch.abort();
    let updated = sync_once(&ctx, &*store, &dl).await;
    assert_eq!(
        updated.count(Action::Update),
        accountants.len(),
        "{}",
        sync::render_plan(&updated)
    );
    let factory = get(&format!("{}/_sandbox/org", wecom.base)).await;
    for (no, _, alias) in users_by_employee_no(&factory) {
        if accountants.contains(&no.as_str()) {
            assert_eq!(alias, "Bookkeeper", "{no}");
        }
    }
    assert!(sync::plan(&ctx, &*store).await.unwrap().is_empty());

    // A broken edit is refused with its file and line; the mapping in use stays.
    std::fs::write(
        &mapping,
        "system: wecom\nentity: person\nkey: .userid\nto_canonical:\n  - field: [\n",
    )
    .unwrap();
    let _ = filetime_bump(&mapping);
    let r = endpoint.reload();
    assert!(r.replaced.is_empty());
    assert_eq!(r.refused.len(), 1, "{r:?}");
    assert!(
        r.refused[0].contains("acme-wecom-person.yaml:"),
        "names the file and line: {}",
        r.refused[0]
    );
    assert!(
        sync::plan(&ctx, &*store).await.unwrap().is_empty(),
        "still planned with the mapping in use"
    );

    // And `config check`'s loader refuses the broken file, naming it.
    let err = huitong::config::load(&huitong::config::Sources {
        file: Some(dir.join("huitong.toml")),
        env: HQ_FACTORY_SECRETS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        overrides: vec![],
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("connectors.factory.mappings.person")
            && err.contains("acme-wecom-person.yaml:"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Moves the file's modification time on by a second, so a reload sees the edit even where
/// the clock is coarse.
fn filetime_bump(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::options().append(true).open(path)?;
    let m = f.metadata()?.modified()?;
    f.set_modified(m + std::time::Duration::from_secs(1))
}
