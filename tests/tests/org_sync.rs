//! Org-chart sync end to end: a Feishu HQ (sandbox) synced to a DingTalk
//! subsidiary and a WeCom factory (sandboxes), through the real connectors,
//! mappings and store.

use std::path::Path;
use std::sync::Arc;

use huitong::config::{self, Config, Sources};
use huitong::queue::amqp::{AmqpOptions, AmqpQueue};
use huitong::queue::{Envelope, Handler, Outcome, Task};
use huitong::store::StepStatus;
use huitong::store::{self, Store};
use huitong::sync::{self, Action, RouteContext};
use huitong_connectors::fixture::OrgFixture;
use huitong_connectors::sandbox::{FaultSpec, Running};
use huitong_tests::org::{
    Delivering, calls_where, console, delivering, delivering_on, empty_org, feishu_hq, fixture,
    get, sandbox, temp_dir, wecom_corp,
};
use huitong_tests::service_url;
use reqwest::Method;

use serde_json::{Value, json};

/// The three vendors' sandboxes (serving while this lives) and their addresses.
struct Sandboxes {
    feishu: String,
    dingtalk: String,
    wecom: String,
    _running: [Running; 3],
}

async fn sandboxes(source: OrgFixture, dingtalk: OrgFixture, wecom: OrgFixture) -> Sandboxes {
    sandboxes_with(source, dingtalk, wecom, FaultSpec::none()).await
}

/// [`sandboxes`] that inject `faults`.
async fn sandboxes_with(
    source: OrgFixture,
    dingtalk: OrgFixture,
    wecom: OrgFixture,
    faults: FaultSpec,
) -> Sandboxes {
    let feishu = feishu_hq(source, faults.clone()).await;
    let mut o = huitong_connectors::dingtalk::sandbox::SandboxOptions::new(
        dingtalk,
        "dingsub",
        "sub-secret",
    );
    o.faults = faults.clone();
    let dingtalk = sandbox(o).await;
    let wecom = wecom_corp(wecom, "wwfactory", faults).await;
    Sandboxes {
        feishu: feishu.base.clone(),
        dingtalk: dingtalk.base.clone(),
        wecom: wecom.base.clone(),
        _running: [feishu, dingtalk, wecom],
    }
}

fn config(s: &Sandboxes, dir: &Path, extra_route: &str) -> Config {
    let db = format!("sqlite://{}", dir.join("huitong.db").display());
    config_on(s, dir, extra_route, &db)
}

/// [`config`] with the store at `db` (a sqlite:// or postgres:// URL).
fn config_on(s: &Sandboxes, dir: &Path, extra_route: &str, db: &str) -> Config {
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[database]
url = "{db}"

[connectors.hq]
kind = "feishu"
app_id = "cli_hq"
app_secret_env = "HQ_SECRET"
base_url = "{feishu}"

[connectors.sub]
kind = "dingtalk"
app_key = "dingsub"
app_secret_env = "SUB_SECRET"
base_url = "{dingtalk}"

[connectors.factory]
kind = "wecom"
corp_id = "wwfactory"
agent_id = 1000002
corp_secret_env = "FACTORY_SECRET"
base_url = "{wecom}"

[routes.org]
source = "hq"
targets = ["sub", "factory"]
{extra_route}
"#,
            feishu = s.feishu,
            dingtalk = s.dingtalk,
            wecom = s.wecom,
        ),
    )
    .unwrap();
    config::load(&Sources {
        file: Some(file),
        env: vec![
            ("HQ_SECRET".into(), "hq-secret".into()),
            ("SUB_SECRET".into(), "sub-secret".into()),
            ("FACTORY_SECRET".into(), "factory-secret".into()),
        ],
        overrides: vec![],
    })
    .unwrap()
}

/// Write calls (anything but GET) the sandbox has served.
async fn writes(base: &str) -> u64 {
    calls_where(base, |k| {
        !k.starts_with("GET ")
            && !k.to_ascii_lowercase().contains("token")
            && !k.contains("/list")
            && !k.contains("/get")
            && !k.contains("listsub")
    })
    .await
}

fn names(org: &Value, kind: &str) -> Vec<String> {
    let mut v: Vec<String> = org[kind]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn open_store(c: &Config) -> Arc<dyn Store> {
    store::open(&c.database).await.unwrap()
}

/// Sandboxes (the fixture in Feishu, empty DingTalk and WeCom), a config with the `org`
/// route (plus `extra_route` lines), its store and route context.
struct Setup {
    sb: Sandboxes,
    dir: std::path::PathBuf,
    store: Arc<dyn Store>,
    ctx: RouteContext,
    config: Config,
    dl: Delivering,
    _pg: Option<huitong_tests::PgDatabase>,
}

impl Setup {
    async fn new(source: &str, extra_route: &str) -> Setup {
        Setup::orgs(
            fixture(source),
            empty_org("子公司"),
            empty_org("工厂"),
            extra_route,
        )
        .await
    }

    /// Sandboxes seeded with these orgs (Feishu, DingTalk, WeCom), the `org` route plus
    /// `extra_route` lines, on SQLite and the embedded queue.
    async fn orgs(
        feishu: OrgFixture,
        dingtalk: OrgFixture,
        wecom: OrgFixture,
        extra_route: &str,
    ) -> Setup {
        Setup::orgs_with(feishu, dingtalk, wecom, extra_route, FaultSpec::none()).await
    }

    /// [`Setup::orgs`] whose sandboxes inject `faults`.
    async fn orgs_with(
        feishu: OrgFixture,
        dingtalk: OrgFixture,
        wecom: OrgFixture,
        extra_route: &str,
        faults: FaultSpec,
    ) -> Setup {
        let sb = sandboxes_with(feishu, dingtalk, wecom, faults).await;
        let dir = temp_dir("huitong-sync");
        let c = config(&sb, &dir, extra_route);
        let store = open_store(&c).await;
        let ctx = RouteContext::new(&c, "org").unwrap();
        let dl = delivering(&c, store.clone()).await;
        Setup {
            sb,
            dir,
            store,
            ctx,
            config: c,
            dl,
            _pg: None,
        }
    }

    /// The same on PostgreSQL and RabbitMQ (a queue prefix of its own), with two consumers
    /// per route sharing the steps as two huitong processes would; `None` when the services
    /// are not configured (and not required).
    async fn on_services(source: &str, test: &str) -> Option<Setup> {
        let pg_url = service_url("HUITONG_TEST_PG_URL", test)?;
        let amqp_url = service_url("HUITONG_TEST_AMQP_URL", test)?;
        let pg = huitong_tests::PgDatabase::create(&pg_url).await.unwrap();
        let sb = sandboxes(fixture(source), empty_org("子公司"), empty_org("工厂")).await;
        let dir = temp_dir("huitong-sync");
        let c = config_on(&sb, &dir, "", &pg.url);
        let store = open_store(&c).await;
        assert_eq!(store.backend(), "postgres");
        let ctx = RouteContext::new(&c, "org").unwrap();
        let queue: Arc<dyn huitong::queue::Queue> = Arc::new(
            AmqpQueue::connect(
                amqp_url.into(),
                AmqpOptions {
                    prefix: format!("test-{}.", uuid::Uuid::new_v4().simple()),
                    exchange: "huitong-test".into(),
                    ..AmqpOptions::default()
                },
            )
            .await
            .unwrap(),
        );
        queue.declare("deliver.org").await.unwrap();
        let dl = delivering_on(queue, &c, store.clone(), 2).await;
        Some(Setup {
            sb,
            dir,
            store,
            ctx,
            config: c,
            dl,
            _pg: Some(pg),
        })
    }

    /// Plan and apply once; every step must succeed.
    async fn sync_once(&self) -> sync::Plan {
        let plan = sync::plan(&self.ctx, &*self.store).await.unwrap();
        let report = sync::apply(
            &self.ctx,
            &plan,
            &*self.store,
            &*self.dl.queue,
            false,
            &|_, _| {},
        )
        .await
        .unwrap();
        assert!(report.errors.is_empty(), "{:#?}", report.errors);
        plan
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feishu_to_dingtalk_and_wecom_then_nothing_left_to_do() {
    let setup = Setup::new("small-org.json", "").await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);

    let plan = sync::plan(ctx, store).await.unwrap();
    println!("{}", sync::render_plan(&plan));
    for t in &plan.targets {
        assert!(t.conflicts.is_empty(), "{:?}", t.conflicts);
        let creates = t
            .steps
            .iter()
            .filter(|s| s.action == Action::Create)
            .count();
        assert_eq!(
            creates,
            2 + 20,
            "{}: 2 departments under the root and 20 people",
            t.target
        );
    }
    let report = sync::apply(ctx, &plan, store, &*setup.dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);

    let source = get(&format!("{}/_sandbox/org", sb.feishu)).await;
    for base in [&sb.dingtalk, &sb.wecom] {
        let org = get(&format!("{base}/_sandbox/org")).await;
        assert_eq!(names(&org, "users"), names(&source, "users"), "{base}");
        let mut expected = names(&source, "departments");
        expected.retain(|n| n != "总部");
        let mut got = names(&org, "departments");
        got.retain(|n| n != "子公司" && n != "工厂");
        assert_eq!(got, expected, "{base}");
    }

    // Nothing left: the second plan is empty and a second apply writes nothing.
    let again = sync::plan(ctx, store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));
    let before = (writes(&sb.dingtalk).await, writes(&sb.wecom).await);
    sync::apply(ctx, &again, store, &*setup.dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (writes(&sb.dingtalk).await, writes(&sb.wecom).await),
        before
    );
}

/// A vendor-neutral view of a sandbox's org: departments by name with their
/// parent's name and leaders, people by employee number with their department
/// names and active flag.
#[derive(Debug, PartialEq)]
struct OrgView {
    departments: std::collections::BTreeMap<String, (Option<String>, Vec<String>)>,
    people: std::collections::BTreeMap<String, (String, Vec<String>, bool)>,
}

fn view(org: &Value, root_name: &str) -> OrgView {
    let depts = org["departments"].as_array().cloned().unwrap_or_default();
    let users = org["users"].as_array().cloned().unwrap_or_default();
    let dept_name: std::collections::HashMap<String, String> = depts
        .iter()
        .map(|d| {
            let name = if d["parent"].is_null() {
                "ROOT".to_owned()
            } else {
                d["name"].as_str().unwrap_or("").to_owned()
            };
            (d["key"].as_str().unwrap_or("").to_owned(), name)
        })
        .collect();
    // WeCom keeps no employee number: huitong made it the new member's userid (the key).
    let number = |u: &Value| -> String {
        match u["employee_no"].as_str() {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => u["key"].as_str().unwrap_or("").to_owned(),
        }
    };
    let user_no: std::collections::HashMap<String, String> = users
        .iter()
        .map(|u| (u["key"].as_str().unwrap_or("").to_owned(), number(u)))
        .collect();
    let _ = root_name;
    let departments = depts
        .iter()
        .filter(|d| !d["parent"].is_null())
        .map(|d| {
            let parent = d["parent"].as_str().and_then(|p| dept_name.get(p)).cloned();
            let mut leaders: Vec<String> = d["leaders"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().and_then(|k| user_no.get(k)).cloned())
                        .collect()
                })
                .unwrap_or_default();
            leaders.sort();
            (
                d["name"].as_str().unwrap_or("").to_owned(),
                (parent, leaders),
            )
        })
        .collect();
    let people = users
        .iter()
        .map(|u| {
            let mut ds: Vec<String> = u["departments"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().and_then(|k| dept_name.get(k)).cloned())
                        .collect()
                })
                .unwrap_or_default();
            ds.sort();
            (
                number(u),
                (
                    u["name"].as_str().unwrap_or("").to_owned(),
                    ds,
                    u["active"].as_bool().unwrap_or(true),
                ),
            )
        })
        .collect();
    OrgView {
        departments,
        people,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_people_arrive_with_departments_membership_and_leaders() {
    three_hundred_people(&Setup::new("medium-org.json", "").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_people_over_rabbitmq_and_postgres_with_two_consumers() {
    let test = "org sync over rabbitmq and postgres";
    let Some(setup) = Setup::on_services("medium-org.json", test).await else {
        return;
    };
    three_hundred_people(&setup).await;
}

/// Feishu's 300 people -> DingTalk + WeCom: everything arrives (dependency order held across
/// consumers), every step went through the queue, and nothing is left to do.
async fn three_hundred_people(setup: &Setup) {
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    let plan = setup.sync_once().await;
    let steps: usize = plan.targets.iter().map(|t| t.steps.len()).sum();
    let run = &store.list_runs(Some("org"), 1).await.unwrap()[0];
    let rows = store.run_steps(&run.id, None).await.unwrap();
    let (first, second): (Vec<_>, Vec<_>) = rows.iter().partition(|r| (r.seq as usize) < steps);
    assert_eq!(first.len(), steps, "every step has its row");
    let unresolved = first
        .iter()
        .filter(|r| r.status == StepStatus::Unresolved)
        .count();
    assert!(
        first
            .iter()
            .all(|r| matches!(r.status, StepStatus::Done | StepStatus::Unresolved)),
        "{:?}",
        first.iter().find(|r| r.status != StepStatus::Done)
    );
    // Leaders and managers created later in the run: written once more, in a last wave.
    assert!(unresolved > 0);
    assert_eq!(second.len(), unresolved);
    assert!(
        second
            .iter()
            .all(|r| r.status == StepStatus::Done && r.action == "update")
    );

    let source = view(&get(&format!("{}/_sandbox/org", sb.feishu)).await, "");
    assert_eq!(source.people.len(), 300);
    for (base, can_disable) in [(&sb.wecom, true), (&sb.dingtalk, false)] {
        let target = view(&get(&format!("{base}/_sandbox/org")).await, "");
        assert_eq!(
            target.departments, source.departments,
            "{base}: departments, parents and leaders"
        );
        let mut expected = source.people.clone();
        if !can_disable {
            // DingTalk has no disabled state: people inactive in the source are not created there.
            expected.retain(|_, p| p.2);
        }
        assert_eq!(
            target.people, expected,
            "{base}: people, membership and status"
        );
    }
    let again = sync::plan(ctx, store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));
    let run = store.list_runs(Some("org"), 1).await.unwrap();
    assert_eq!(run[0].status, huitong::store::RunStatus::Succeeded);
    let active = source.people.values().filter(|p| p.2).count();
    assert!(active < 300, "the fixture has inactive people");
    assert_eq!(
        run[0].counts.get("create").copied(),
        Some((300 + 24 + active + 24) as i64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_threshold_blocks_a_plan_disabling_half_the_people_until_forced() {
    let setup = Setup::new("small-org.json", "").await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    setup.sync_once().await;

    // HR removes half the people in Feishu's console.
    let client = reqwest::Client::new();
    for i in 0..10 {
        let r = client
            .delete(format!("{}/_sandbox/org/users/u{i}", sb.feishu))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let plan = sync::plan(ctx, store).await.unwrap();
    let wecom = plan.targets.iter().find(|t| t.target == "factory").unwrap();
    assert_eq!(wecom.removals, 10);
    assert!(
        wecom
            .steps
            .iter()
            .filter(|s| s.action == Action::Disable)
            .count()
            == 10
    );
    let dingtalk = plan.targets.iter().find(|t| t.target == "sub").unwrap();
    assert!(
        dingtalk
            .steps
            .iter()
            .filter(|s| s.action == Action::Delete)
            .count()
            == 10,
        "DingTalk cannot disable"
    );

    let err = sync::apply(ctx, &plan, store, &*setup.dl.queue, false, &|_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            sync::SyncError::SafetyThreshold {
                removals: 10,
                people: 20,
                ..
            }
        ),
        "{err}"
    );
    let wecom_org = get(&format!("{}/_sandbox/org", sb.wecom)).await;
    assert_eq!(
        wecom_org["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["active"] == true)
            .count(),
        20,
        "nothing applied"
    );

    let report = sync::apply(ctx, &plan, store, &*setup.dl.queue, true, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let wecom_org = get(&format!("{}/_sandbox/org", sb.wecom)).await;
    let users = wecom_org["users"].as_array().unwrap();
    assert_eq!(users.len(), 20, "disabled, not deleted");
    assert_eq!(users.iter().filter(|u| u["active"] == true).count(), 10);
    let dingtalk_org = get(&format!("{}/_sandbox/org", sb.dingtalk)).await;
    assert_eq!(dingtalk_org["users"].as_array().unwrap().len(), 10);
    let again = sync::plan(ctx, store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_reconcile_fires_syncs_the_route_and_records_its_outcome() {
    use huitong_schedules::FireStatus;
    let sb = sandboxes(
        fixture("small-org.json"),
        empty_org("子公司"),
        empty_org("工厂"),
    )
    .await;
    let dir = temp_dir("huitong-sync");
    let sched = dir.join("schedules");
    std::fs::create_dir_all(&sched).unwrap();
    std::fs::write(
        sched.join("org.yaml"),
        "schedules:\n  - name: org-every-second\n    cron: \"* * * * * *\"\n    job: reconcile org\n    overlap: skip\n",
    )
    .unwrap();
    let mut c = config(&sb, &dir, "");
    c.schedules.dir = sched;
    let store = open_store(&c).await;
    let dl = delivering(&c, store.clone()).await;
    let handle =
        huitong::jobs::start_scheduler(&c, store.clone(), dl.queue.clone()).expect("one schedule");
    let mut done = None;
    for _ in 0..200 {
        let fires = store.recent_fires("org-every-second", 10).await.unwrap();
        if let Some(f) = fires.iter().find(|f| f.status == FireStatus::Succeeded) {
            done = Some(f.clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    handle.shutdown().await;
    let fire = done.expect("a fire succeeded");
    assert!(
        fire.detail.as_deref().unwrap_or("").contains("created"),
        "{fire:?}"
    );
    let org = get(&format!("{}/_sandbox/org", sb.wecom)).await;
    assert_eq!(org["users"].as_array().unwrap().len(), 20);
    let runs = store.list_runs(Some("org"), 10).await.unwrap();
    assert!(!runs.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_way_feishu_dingtalk_pair_settles_after_one_hop() {
    let setup = Setup::new(
        "small-org.json",
        "\n[routes.back]\nsource = \"sub\"\ntargets = [\"hq\"]\n",
    )
    .await;
    let (sb, c, store, dl) = (&setup.sb, &setup.config, setup.store.clone(), &setup.dl);
    let there = RouteContext::new(c, "org").unwrap();
    let back = RouteContext::new(c, "back").unwrap();
    let plan = sync::plan(&there, &*store).await.unwrap();
    sync::apply(&there, &plan, &*store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    // The way back finds the same people (through the xrefs) and nothing to change.
    let plan = sync::plan(&back, &*store).await.unwrap();
    assert!(
        plan.targets[0].conflicts.is_empty(),
        "{:?}",
        plan.targets[0].conflicts
    );
    assert!(plan.is_empty(), "{}", sync::render_plan(&plan));
    // A change made in DingTalk travels back to Feishu once, and then both ways are quiet.
    let org = get(&format!("{}/_sandbox/org", sb.dingtalk)).await;
    let key = org["users"][0]["key"].as_str().unwrap().to_owned();
    console(
        Method::PATCH,
        &format!("{}/_sandbox/org/users/{key}", sb.dingtalk),
        json!({"title": "新职位"}),
    )
    .await;
    let plan = sync::plan(&back, &*store).await.unwrap();
    assert_eq!(
        plan.targets[0].steps.len(),
        1,
        "{}",
        sync::render_plan(&plan)
    );
    sync::apply(&back, &plan, &*store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    let feishu = get(&format!("{}/_sandbox/org", sb.feishu)).await;
    let moved = feishu["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["title"] == "新职位")
        .count();
    assert_eq!(moved, 1, "the DingTalk edit reached Feishu");
    for ctx in [&there, &back, &there] {
        let p = sync::plan(ctx, &*store).await.unwrap();
        let steps: usize = p
            .targets
            .iter()
            .filter(|t| t.target != "factory")
            .map(|t| t.steps.len())
            .sum();
        assert_eq!(steps, 0, "{}", sync::render_plan(&p));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_deny_leaves_a_department_and_its_people_out() {
    let setup = Setup::new("small-org.json", "scope_deny = [\"销售*\"]\n").await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    let plan = sync::plan(ctx, store).await.unwrap();
    for t in &plan.targets {
        assert!(
            !t.steps.iter().any(|s| s.name == "销售部"),
            "{}",
            sync::render_plan(&plan)
        );
        let people = t.steps.iter().filter(|s| s.entity == sync::PERSON).count();
        assert_eq!(
            people,
            20 - 6,
            "the 6 people only in 销售部 are out of scope"
        );
    }
    let report = sync::apply(ctx, &plan, store, &*setup.dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let org = get(&format!("{}/_sandbox/org", sb.wecom)).await;
    assert_eq!(org["users"].as_array().unwrap().len(), 14);
    assert!(!names(&org, "departments").contains(&"销售部".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehired_person_comes_back_active_without_a_duplicate() {
    let setup = Setup::new("small-org.json", "").await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    setup.sync_once().await;
    let set_active = async |active: bool| {
        console(
            Method::PATCH,
            &format!("{}/_sandbox/org/users/u7", sb.feishu),
            json!({"active": active}),
        )
        .await;
    };
    let no = fixture("small-org.json")
        .users
        .iter()
        .find(|u| u.key == "u7")
        .unwrap()
        .employee_no
        .clone();
    let state = async |base: &str| -> Vec<bool> {
        let org = get(&format!("{base}/_sandbox/org")).await;
        org["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["employee_no"].as_str() == Some(&no) || u["key"].as_str() == Some(&no))
            .map(|u| u["active"].as_bool().unwrap_or(true))
            .collect()
    };
    set_active(false).await; // resigned
    setup.sync_once().await;
    assert_eq!(state(&sb.wecom).await, vec![false], "disabled in WeCom");
    assert_eq!(
        state(&sb.dingtalk).await,
        Vec::<bool>::new(),
        "removed from DingTalk"
    );
    set_active(true).await; // rehired
    setup.sync_once().await;
    assert_eq!(
        state(&sb.wecom).await,
        vec![true],
        "the same WeCom member, active again"
    );
    assert_eq!(
        state(&sb.dingtalk).await,
        vec![true],
        "back in DingTalk, once"
    );
    let again = sync::plan(ctx, store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));
}

/// The system of record decides who writes what on a two-way pair: Feishu owns people (creates,
/// names, …) but DingTalk owns their titles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_of_record_decides_which_side_writes_each_field() {
    let sb = sandboxes(
        fixture("small-org.json"),
        empty_org("子公司"),
        empty_org("工厂"),
    )
    .await;
    let dir = temp_dir("huitong-sync");
    let sor =
        "system_of_record = { person = \"hq\", department = \"hq\", \"person.title\" = \"sub\" }";
    let c = config(
        &sb,
        &dir,
        &format!("{sor}\n[routes.back]\nsource = \"sub\"\ntargets = [\"hq\"]\n{sor}\n"),
    );
    assert_eq!(c.routes["org"].owner("person", Some("title")), Some("sub"));
    assert_eq!(c.routes["org"].owner("person", Some("name")), Some("hq"));
    let store = open_store(&c).await;
    let dl = delivering(&c, store.clone()).await;
    let there = RouteContext::new(&c, "org").unwrap();
    let back = RouteContext::new(&c, "back").unwrap();
    let plan = sync::plan(&there, &*store).await.unwrap();
    let report = sync::apply(&there, &plan, &*store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let person = async |base: &str, no: &str| -> Value {
        let org = get(&format!("{base}/_sandbox/org")).await;
        org["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["employee_no"] == no)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let patch = async |base: &str, key: &str, body: Value| {
        console(
            Method::PATCH,
            &format!("{base}/_sandbox/org/users/{key}"),
            body,
        )
        .await;
    };
    // A title changed in Feishu is not Feishu's to spread.
    patch(&sb.feishu, "u1", json!({"title": "飞书改的职位"})).await;
    let p = sync::plan(&there, &*store).await.unwrap();
    let sub = p.targets.iter().find(|t| t.target == "sub").unwrap();
    assert!(sub.steps.is_empty(), "{}", sync::render_plan(&p));
    // A title changed in DingTalk travels to Feishu; a name changed there does not.
    let dt_key = person(&sb.dingtalk, "E000001").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    patch(
        &sb.dingtalk,
        &dt_key,
        json!({"title": "钉钉改的职位", "name": "钉钉改的名字"}),
    )
    .await;
    let p = sync::plan(&back, &*store).await.unwrap();
    let steps = &p.targets[0].steps;
    assert_eq!(steps.len(), 1, "{}", sync::render_plan(&p));
    assert_eq!(
        steps[0].changes.keys().collect::<Vec<_>>(),
        vec!["title"],
        "only the field DingTalk owns"
    );
    sync::apply(&back, &p, &*store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    let f = person(&sb.feishu, "E000001").await;
    assert_eq!(f["title"], "钉钉改的职位");
    assert_ne!(f["name"], "钉钉改的名字", "Feishu owns names");
    // The owner of names puts DingTalk's name back, and leaves DingTalk's title alone.
    let p = sync::plan(&there, &*store).await.unwrap();
    let sub = p.targets.iter().find(|t| t.target == "sub").unwrap();
    assert_eq!(sub.steps.len(), 1, "{}", sync::render_plan(&p));
    assert_eq!(
        sub.steps[0].changes.keys().collect::<Vec<_>>(),
        vec!["name"]
    );
    sync::apply(&there, &p, &*store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    let d = person(&sb.dingtalk, "E000001").await;
    assert_eq!(d["name"], f["name"]);
    assert_eq!(
        d["title"], "钉钉改的职位",
        "the owner's title survives the write"
    );
    // A person created in DingTalk is not created in Feishu: Feishu owns people.
    console(Method::POST, &format!("{}/_sandbox/org/users", sb.dingtalk), json!({"key": "dt-new", "name": "钉钉新人", "email": "new@sub.example.cn",
            "mobile": "13900000000", "employee_no": "S000001", "title": "临时工",
            "departments": [person(&sb.dingtalk, "E000001").await["departments"][0]], "active": true})).await;
    let p = sync::plan(&back, &*store).await.unwrap();
    assert!(
        !p.targets[0]
            .steps
            .iter()
            .any(|s| s.action == Action::Create),
        "{}",
        sync::render_plan(&p)
    );
    // Both ways quiet now.
    for ctx in [&there, &back] {
        let p = sync::plan(ctx, &*store).await.unwrap();
        let steps: usize = p
            .targets
            .iter()
            .filter(|t| t.target != "factory")
            .map(|t| t.steps.len())
            .sum();
        assert_eq!(steps, 0, "{}", sync::render_plan(&p));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The other direction: a DingTalk org into an empty Feishu (Feishu requires an employee type
/// on create, which DingTalk does not carry: the connector sends "regular").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dingtalk_org_arrives_in_an_empty_feishu() {
    dingtalk_org_into_empty_feishu(FaultSpec::none()).await;
}

/// Feishu carries out a fifth of the calls and loses the reply: its `client_token` (the
/// canonical id) makes every retried create return the first record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dingtalk_org_arrives_in_a_feishu_that_loses_replies() {
    let calls = dingtalk_org_into_empty_feishu(FaultSpec::parse("lost=20%,seed=5").unwrap()).await;
    assert!(
        calls["faults"]["lost"].as_u64().unwrap_or(0) >= 2,
        "{calls}"
    );
}

/// Applies the small org from DingTalk to an empty Feishu (all sandboxes injecting `faults`)
/// and checks Feishu ends up the same, with nothing left to do; returns Feishu's
/// `/_sandbox/calls`.
async fn dingtalk_org_into_empty_feishu(faults: FaultSpec) -> Value {
    let setup = Setup::orgs_with(
        empty_org("总部"),
        fixture("small-org.json"),
        empty_org("工厂"),
        "\n[routes.up]\nsource = \"sub\"\ntargets = [\"hq\"]\n",
        faults,
    )
    .await;
    let (sb, c, store, dl) = (&setup.sb, &setup.config, setup.store.clone(), &setup.dl);
    let up = RouteContext::new(c, "up").unwrap();
    let plan = sync::plan(&up, &*store).await.unwrap();
    assert!(
        plan.targets[0].conflicts.is_empty(),
        "{:?}",
        plan.targets[0].conflicts
    );
    let report = sync::apply(&up, &plan, &*store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let feishu = get(&format!("{}/_sandbox/org", sb.feishu)).await;
    let dingtalk = get(&format!("{}/_sandbox/org", sb.dingtalk)).await;
    assert_eq!(names(&feishu, "users"), names(&dingtalk, "users"));
    assert_eq!(names(&feishu, "users").len(), 20);
    assert_eq!(
        names(&feishu, "departments"),
        names(&dingtalk, "departments")
    );
    let again = sync::plan(&up, &*store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));
    get(&format!("{}/_sandbox/calls", sb.feishu)).await
}

/// WeCom nests departments at most 15 levels deep: deeper ones (and people only there) are
/// conflicts in the plan, not failures at apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departments_deeper_than_the_target_allows_are_conflicts_not_failures() {
    let mut departments =
        vec![json!({"key": "root", "name": "总部", "parent": null, "order": 0, "leaders": []})];
    for level in 2..=17 {
        let parent = if level == 2 {
            "root".to_owned()
        } else {
            format!("l{}", level - 1)
        };
        // Level 15 is led by someone only in level 16, whom WeCom cannot hold: a reference
        // that can never be written must not be planned again and again.
        let leaders = if level == 15 {
            json!(["bb"])
        } else {
            json!([])
        };
        departments.push(
            json!({"key": format!("l{level}"), "name": format!("第{level}层"),
            "parent": parent, "order": 0, "leaders": leaders}),
        );
    }
    let person = |key: &str, dept: &str, no: &str| {
        json!({"key": key, "name": format!("员工{key}"), "email": format!("{key}@example.cn"),
            "mobile": format!("1380000{:04}", no.len() * 100 + key.len()), "employee_no": no,
            "title": "工程师", "departments": [dept], "active": true})
    };
    let mut both = person("dddd", "l15", "E4");
    both["departments"] = json!(["l16", "l15"]);
    let deep: OrgFixture = serde_json::from_value(json!({
        "departments": departments,
        "users": [person("a", "l15", "E1"), person("bb", "l16", "E2"), person("ccc", "l17", "E3"), both]
    }))
    .unwrap();
    let setup = Setup::orgs(deep, empty_org("子公司"), empty_org("工厂"), "").await;
    let (sb, c, store, dl) = (&setup.sb, &setup.config, setup.store.clone(), &setup.dl);
    let ctx = RouteContext::new(c, "org").unwrap();
    let plan = sync::plan(&ctx, &*store).await.unwrap();
    let wecom = plan.targets.iter().find(|t| t.target == "factory").unwrap();
    let too_deep: Vec<&sync::Conflict> = wecom
        .conflicts
        .iter()
        .filter(|c| c.kind == "too_deep")
        .collect();
    assert_eq!(too_deep.len(), 3, "{:#?}", wecom.conflicts);
    assert!(
        too_deep[0]
            .detail
            .contains("\"第16层\" would be at level 16"),
        "{:?}",
        too_deep[0]
    );
    assert!(
        too_deep[1]
            .detail
            .contains("\"第17层\" would be at level 17"),
        "{:?}",
        too_deep[1]
    );
    assert_eq!(
        too_deep[2].records.len(),
        2,
        "the people in levels 16 and 17"
    );
    // DingTalk has no such limit: everything goes there.
    let dingtalk = plan.targets.iter().find(|t| t.target == "sub").unwrap();
    assert!(dingtalk.conflicts.is_empty(), "{:#?}", dingtalk.conflicts);
    let report = sync::apply(&ctx, &plan, &*store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let org = get(&format!("{}/_sandbox/org", sb.wecom)).await;
    assert_eq!(org["departments"].as_array().unwrap().len(), 15);
    assert_eq!(
        org["users"].as_array().unwrap().len(),
        2,
        "the one at level 15, and the one in levels 15 and 16 (in 15 only)"
    );
    // Nothing left to do but the same conflicts: the deep department is not wanted again.
    let again = sync::plan(&ctx, &*store).await.unwrap();
    let wecom = again
        .targets
        .iter()
        .find(|t| t.target == "factory")
        .unwrap();
    assert!(wecom.steps.is_empty(), "{}", sync::render_plan(&again));
    assert_eq!(wecom.conflicts.len(), 3);
}

/// A person whose email changed stays the same person everywhere (linked by xref, not by the
/// old email) and the new address reaches both targets; a renamed department is renamed, not
/// recreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_email_and_a_renamed_department_update_in_place() {
    let setup = Setup::new("small-org.json", "").await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    setup.sync_once().await;
    console(
        Method::PATCH,
        &format!("{}/_sandbox/org/users/u4", sb.feishu),
        json!({"email": "renamed.person@example.cn"}),
    )
    .await;
    console(
        Method::PATCH,
        &format!("{}/_sandbox/org/departments/d2", sb.feishu),
        json!({"name": "售后服务部"}),
    )
    .await;
    let plan = setup.sync_once().await;
    for t in &plan.targets {
        let kinds: Vec<(sync::Action, sync::Entity)> =
            t.steps.iter().map(|s| (s.action, s.entity)).collect();
        assert_eq!(
            kinds,
            vec![
                (Action::Update, sync::DEPARTMENT),
                (Action::Update, sync::PERSON)
            ],
            "{}",
            sync::render_plan(&plan)
        );
        let person = &t.steps[1];
        assert_eq!(
            person.changes["email"].new,
            json!("renamed.person@example.cn")
        );
        assert!(person.target_id.is_some());
    }
    let no = fixture("small-org.json")
        .users
        .iter()
        .find(|u| u.key == "u4")
        .unwrap()
        .employee_no
        .clone();
    for base in [&sb.dingtalk, &sb.wecom] {
        let org = get(&format!("{base}/_sandbox/org")).await;
        let same: Vec<&Value> = org["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["employee_no"] == no.as_str() || u["key"] == no.as_str())
            .collect();
        assert_eq!(same.len(), 1, "one person, not a second one: {base}");
        assert_eq!(same[0]["email"], "renamed.person@example.cn");
        assert_eq!(org["users"].as_array().unwrap().len(), 20);
        let depts = names(&org, "departments");
        assert!(depts.contains(&"售后服务部".to_owned()), "{depts:?}");
        assert!(!depts.contains(&"售后部".to_owned()), "{depts:?}");
        assert_eq!(depts.len(), 3);
    }
    let again = sync::plan(ctx, store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));
}

/// One step delivered by hand to a fresh handler, as the queue would (again).
async fn deliver(setup: &Setup, run_id: &str, seq: i64, step: &sync::Step) -> Outcome {
    deliver_to(setup, "sub", run_id, seq, step).await
}

async fn deliver_to(
    setup: &Setup,
    target: &str,
    run_id: &str,
    seq: i64,
    step: &sync::Step,
) -> Outcome {
    let handler = sync::StepHandler::new(
        Arc::new(RouteContext::new(&setup.config, "org").unwrap()),
        setup.store.clone(),
        0,
    );
    let envelope = Envelope::new(
        target,
        Task::ApplyStepV1 {
            route: "org".into(),
            run_id: run_id.to_owned(),
            target: target.into(),
            seq,
            step: sync::WireStep::of(step),
        },
    );
    handler.handle(&envelope).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_step_is_never_written_twice() {
    let setup = Setup::new("small-org.json", "").await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    setup.sync_once().await;
    // One new hire in Feishu: the next plan creates one person in DingTalk.
    console(Method::POST, &format!("{}/_sandbox/org/users", sb.feishu), json!({"key": "u901", "name": "新同事", "email": "u901@example.cn",
            "mobile": "13900000901", "employee_no": "E000901", "departments": ["d1"], "active": true})).await;
    let plan = sync::plan(ctx, store).await.unwrap();
    let sub = plan.targets.iter().find(|t| t.target == "sub").unwrap();
    assert_eq!(sub.steps.len(), 1, "{}", sync::render_plan(&plan));
    let create = &sub.steps[0];
    assert_eq!(create.action, Action::Create);
    let run = store.start_run("org", "reconcile", 1).await.unwrap();
    let count = async || user_count_with(&sb.dingtalk, "E000901").await;

    assert_eq!(deliver(&setup, &run.id, 0, create).await, Outcome::Ok);
    assert_eq!(count().await, 1, "the first delivery creates");
    let before = writes(&sb.dingtalk).await;
    assert_eq!(deliver(&setup, &run.id, 0, create).await, Outcome::Ok);
    assert_eq!(
        writes(&sb.dingtalk).await,
        before,
        "a finished step is skipped"
    );

    // The handler died after the vendor's create, before it recorded the link and the step.
    // DingTalk takes the create's key as the userid: repeating the create finds the first one.
    let linked = async |target: &str| {
        store
            .find_by_canonical(sync::PERSON, target, &create.canonical_id)
            .await
            .unwrap()
            .map(|x| x.external_id)
    };
    let crash = async |target: &str, seq: i64| {
        let tid = linked(target).await.unwrap();
        store.unlink(sync::PERSON, target, &tid).await.unwrap();
        store
            .finish_step(&run.id, seq, StepStatus::Started, None, 2)
            .await
            .unwrap();
        tid
    };
    let tid = crash("sub", 0).await;
    assert_eq!(deliver(&setup, &run.id, 0, create).await, Outcome::Ok);
    assert_eq!(count().await, 1, "never created twice");
    assert_eq!(
        linked("sub").await,
        Some(tid),
        "the first record, linked again"
    );
    let rows = store.run_steps(&run.id, None).await.unwrap();
    assert_eq!(rows[0].status, StepStatus::Done);

    // WeCom takes no key, but the userid the mapping chose (the employee number): the repeated
    // create is refused as existing, and the member under that userid with the same mobile and
    // email is the one the first attempt made.
    let create_wc = &plan
        .targets
        .iter()
        .find(|t| t.target == "factory")
        .unwrap()
        .steps[0];
    assert_eq!(create_wc.action, Action::Create);
    let wecom_count = async || {
        user_count_with(&sb.wecom, "E000901").await
            + get(&format!("{}/_sandbox/org", sb.wecom)).await["users"]
                .as_array()
                .map(|a| a.iter().filter(|u| u["key"] == "E000901").count())
                .unwrap_or(0)
    };
    assert_eq!(
        deliver_to(&setup, "factory", &run.id, 1, create_wc).await,
        Outcome::Ok
    );
    assert_eq!(wecom_count().await, 1);
    let wc_tid = crash("factory", 1).await;
    assert_eq!(
        deliver_to(&setup, "factory", &run.id, 1, create_wc).await,
        Outcome::Ok
    );
    assert_eq!(wecom_count().await, 1, "never created twice");
    assert_eq!(linked("factory").await, Some(wc_tid));
    let row = &store.run_steps(&run.id, None).await.unwrap()[1];
    assert_eq!(row.status, StepStatus::Done, "{row:?}");
    let next = sync::plan(ctx, store).await.unwrap();
    assert!(next.is_empty(), "{}", sync::render_plan(&next));

    // A step of a run that is no longer running (superseded, interrupted) is dropped.
    store
        .finish_run(
            &run.id,
            huitong::store::RunStatus::Interrupted,
            &Default::default(),
            None,
            3,
        )
        .await
        .unwrap();
    let wecom_writes = writes(&sb.wecom).await;
    assert_eq!(
        deliver_to(&setup, "factory", &run.id, 2, create_wc).await,
        Outcome::Ok
    );
    assert_eq!(store.run_steps(&run.id, None).await.unwrap().len(), 2);
    assert_eq!(writes(&sb.wecom).await, wecom_writes);
}

/// A run planned before another run's step made the record (a step of an older, killed apply
/// still queued when the new plan read the target): its create updates that record instead of
/// making a second one — on DingTalk (keyed creates) and on WeCom (no key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_create_updates_the_record_another_run_made() {
    let setup = Setup::new("small-org.json", "").await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    setup.sync_once().await;
    console(Method::POST, &format!("{}/_sandbox/org/users", sb.feishu), json!({"key": "u902", "name": "新同事", "email": "u902@example.cn",
            "mobile": "13900000902", "employee_no": "E000902", "departments": ["d1"], "active": true})).await;
    let plan = sync::plan(ctx, store).await.unwrap();
    let create_of = |target: &str| {
        let steps = &plan
            .targets
            .iter()
            .find(|t| t.target == target)
            .unwrap()
            .steps;
        assert_eq!(steps.len(), 1, "{}", sync::render_plan(&plan));
        assert_eq!(steps[0].action, Action::Create);
        steps[0].clone()
    };
    let (create_dt, create_wc) = (create_of("sub"), create_of("factory"));
    let older = store.start_run("org", "reconcile", 1).await.unwrap();
    assert_eq!(deliver(&setup, &older.id, 0, &create_dt).await, Outcome::Ok);
    assert_eq!(
        deliver_to(&setup, "factory", &older.id, 1, &create_wc).await,
        Outcome::Ok
    );

    let newer = store.start_run("org", "reconcile", 2).await.unwrap();
    let creates = async |base: &str| calls_where(base, |k| k.contains("user/create")).await;
    let updates = async |base: &str| calls_where(base, |k| k.contains("user/update")).await;
    let before = (
        creates(&sb.dingtalk).await,
        updates(&sb.dingtalk).await,
        creates(&sb.wecom).await,
        updates(&sb.wecom).await,
    );
    assert_eq!(deliver(&setup, &newer.id, 0, &create_dt).await, Outcome::Ok);
    assert_eq!(
        deliver_to(&setup, "factory", &newer.id, 1, &create_wc).await,
        Outcome::Ok
    );
    assert_eq!(
        (
            creates(&sb.dingtalk).await,
            updates(&sb.dingtalk).await,
            creates(&sb.wecom).await,
            updates(&sb.wecom).await
        ),
        (before.0, before.1 + 1, before.2, before.3 + 1),
        "one update each, no create"
    );
    assert_eq!(user_count_with(&sb.dingtalk, "E000902").await, 1);
    let wecom = get(&format!("{}/_sandbox/org", sb.wecom)).await;
    let in_wecom = wecom["users"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|u| u["key"] == "E000902" || u["employee_no"] == "E000902")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(in_wecom, 1);
    let rows = store.run_steps(&newer.id, None).await.unwrap();
    assert!(
        rows.iter().all(|r| r.status == StepStatus::Done),
        "{rows:?}"
    );
    let again = sync::plan(ctx, store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));
}

/// Targets that carry out a tenth of the calls and then lose the reply (a gateway timing out
/// after the write committed): the connectors retry, and a retried create finds the record its
/// first attempt made — DingTalk people by the key as userid, DingTalk and WeCom departments by
/// name under the parent, WeCom members by the userid chosen for them. Every record arrives
/// once and no step fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_losing_replies_still_get_every_record_once() {
    let setup = Setup::orgs_with(
        fixture("medium-org.json"),
        empty_org("子公司"),
        empty_org("工厂"),
        "",
        FaultSpec::parse("lost=10%,seed=11").unwrap(),
    )
    .await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    setup.sync_once().await;
    let lost = |calls: &Value| calls["faults"]["lost"].as_u64().unwrap_or(0);
    for base in [&sb.dingtalk, &sb.wecom] {
        let calls = get(&format!("{base}/_sandbox/calls")).await;
        assert!(lost(&calls) >= 10, "replies lost at {base}: {calls}");
    }
    let source = fixture("medium-org.json");
    let once = |org: &Value, kind: &str, key: &str| {
        let mut all: Vec<String> = org[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].to_string())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        (n, all.len())
    };
    let dt = get(&format!("{}/_sandbox/org", sb.dingtalk)).await;
    let active = source.users.iter().filter(|u| u.active).count();
    assert_eq!(once(&dt, "users", "employee_no"), (active, active));
    let wc = get(&format!("{}/_sandbox/org", sb.wecom)).await;
    let n = source.users.len();
    assert_eq!(once(&wc, "users", "mobile"), (n, n));
    let depts = source.departments.len();
    for org in [&dt, &wc] {
        let names: Vec<String> = org["departments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| format!("{}/{}", d["parent"], d["name"]))
            .collect();
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!((names.len(), distinct.len()), (depts, depts), "{names:?}");
    }
    let again = sync::plan(ctx, store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));

    // Leavers: deleted in DingTalk, disabled in WeCom — a delete whose reply was lost finds the
    // record gone when retried, and that is done, not a failure.
    let leavers: Vec<&str> = source
        .users
        .iter()
        .filter(|u| u.active)
        .take(8)
        .map(|u| u.key.as_str())
        .collect();
    for key in &leavers {
        console(
            Method::PATCH,
            &format!("{}/_sandbox/org/users/{key}", sb.feishu),
            json!({"active": false}),
        )
        .await;
    }
    setup.sync_once().await;
    let dt = get(&format!("{}/_sandbox/org", sb.dingtalk)).await;
    let left = active - leavers.len();
    assert_eq!(once(&dt, "users", "employee_no"), (left, left));
    let wc = get(&format!("{}/_sandbox/org", sb.wecom)).await;
    let still_active = wc["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["active"] == true)
        .count();
    assert_eq!(still_active, left);
    let again = sync::plan(ctx, store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));
}

/// How many people of a sandbox have this employee number.
async fn user_count_with(base: &str, employee_no: &str) -> usize {
    get(&format!("{base}/_sandbox/org")).await["users"]
        .as_array()
        .map(|a| a.iter().filter(|u| u["employee_no"] == employee_no).count())
        .unwrap_or(0)
}

/// Whether an event naming `named` needs the whole route reconciled (no per-record plan).
async fn whole_route(
    ctx: &RouteContext,
    store: &dyn Store,
    named: &[(sync::Entity, String)],
) -> bool {
    sync::plan_records(ctx, store, named)
        .await
        .unwrap()
        .is_none()
}

/// The source (Feishu) id of the fixture person with this key, through the links huitong keeps.
async fn source_id(store: &dyn Store, key: &str) -> String {
    let no = fixture("small-org.json")
        .users
        .iter()
        .find(|u| u.key == key)
        .unwrap()
        .employee_no
        .clone();
    let records = store.list_records(sync::PERSON, None, 1000).await.unwrap();
    let person = records
        .iter()
        .find(|r| r.data["employee_no"] == no.as_str())
        .unwrap();
    store
        .find_by_canonical(sync::PERSON, "hq", &person.id)
        .await
        .unwrap()
        .unwrap()
        .external_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_about_people_changed_in_place_is_planned_record_by_record() {
    let setup = Setup::new("small-org.json", "").await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    setup.sync_once().await;
    let u5 = source_id(store, "u5").await;
    let patch = async |key: &str, body: Value| {
        console(
            Method::PATCH,
            &format!("{}/_sandbox/org/users/{key}", sb.feishu),
            body,
        )
        .await;
    };
    let named = |ids: &[&str]| -> Vec<(sync::Entity, String)> {
        ids.iter()
            .map(|i| (sync::PERSON, (*i).to_owned()))
            .collect()
    };

    // Unchanged: a plan with nothing to do (not a full reconcile).
    let p = sync::plan_records(ctx, store, &named(&[&u5]))
        .await
        .unwrap();
    assert!(
        p.as_ref()
            .is_some_and(|p| p.is_empty() && p.kind == sync::PlanKind::Live)
    );

    // Renamed and moved to another existing department: one update per target, the only
    // records read being that person on each side.
    patch("u5", json!({"name": "改名", "departments": ["d1"]})).await;
    let p = sync::plan_records(ctx, store, &named(&[&u5]))
        .await
        .unwrap()
        .expect("planned record by record");
    assert_eq!(p.records_read, 3);
    for t in &p.targets {
        assert_eq!(t.steps.len(), 1, "{}", sync::render_plan(&p));
        assert_eq!(t.steps[0].action, Action::Move);
        assert_eq!(t.steps[0].changes["name"].new, json!("改名"));
    }
    // The same steps the full plan makes.
    let full = sync::plan(ctx, store).await.unwrap();
    for (a, b) in p.targets.iter().zip(&full.targets) {
        let key = |s: &sync::Step| (s.action, s.canonical_id.clone(), s.target_id.clone());
        assert_eq!(
            a.steps.iter().map(key).collect::<Vec<_>>(),
            b.steps.iter().map(key).collect::<Vec<_>>()
        );
        assert_eq!(
            serde_json::to_value(&a.steps[0].changes).unwrap(),
            serde_json::to_value(&b.steps[0].changes).unwrap()
        );
    }
    let report = sync::apply(ctx, &p, store, &*setup.dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(sync::plan(ctx, store).await.unwrap().is_empty());

    // A department renamed in place.
    let d2 = store
        .find_by_canonical(sync::DEPARTMENT, "hq", &{
            let records = store
                .list_records(sync::DEPARTMENT, None, 100)
                .await
                .unwrap();
            records
                .iter()
                .find(|r| r.data["name"] == "售后部")
                .unwrap()
                .id
                .clone()
        })
        .await
        .unwrap()
        .unwrap()
        .external_id;
    console(
        Method::PATCH,
        &format!("{}/_sandbox/org/departments/d2", sb.feishu),
        json!({"name": "售后服务部"}),
    )
    .await;
    let p = sync::plan_records(ctx, store, &[(sync::DEPARTMENT, d2)])
        .await
        .unwrap()
        .expect("a department renamed in place");
    for t in &p.targets {
        let steps: Vec<_> = t.steps.iter().map(|s| (s.action, s.entity)).collect();
        assert_eq!(steps, [(Action::Update, sync::DEPARTMENT)]);
        assert_eq!(t.steps[0].changes["name"].new, json!("售后服务部"));
    }
    sync::apply(ctx, &p, store, &*setup.dl.queue, false, &|_, _| {})
        .await
        .unwrap();

    // A leaver: disabled in WeCom, deleted in DingTalk (no disabled state there) — a removal,
    // under the route's safety threshold (5 %: one of the 20 people).
    let u6 = source_id(store, "u6").await;
    patch("u6", json!({"active": false})).await;
    let p = sync::plan_records(ctx, store, &named(&[&u6]))
        .await
        .unwrap()
        .expect("one leaver is planned record by record");
    let actions: Vec<_> = p
        .targets
        .iter()
        .map(|t| {
            (
                t.target.as_str(),
                t.steps.iter().map(|s| s.action).collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("sub", vec![Action::Delete]),
            ("factory", vec![Action::Disable])
        ]
    );
    let report = sync::apply(ctx, &p, store, &*setup.dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(sync::plan(ctx, store).await.unwrap().is_empty());
    // A second leaver within the hour would make 10 % of the people: the whole route decides.
    let u7 = source_id(store, "u7").await;
    patch("u7", json!({"active": false})).await;
    assert!(whole_route(ctx, store, &named(&[&u7])).await);

    // What needs the whole route: a person not linked yet, a person moved into a department
    // the targets do not have yet.
    assert!(whole_route(ctx, store, &named(&["ou_unknown"])).await);
    console(
        Method::POST,
        &format!("{}/_sandbox/org/departments", sb.feishu),
        json!({"key": "d9", "name": "新部门", "parent": "d0", "order": 9, "leaders": []}),
    )
    .await;
    patch("u5", json!({"departments": ["d9"]})).await;
    assert!(whole_route(ctx, store, &named(&[&u5])).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_route_is_never_planned_record_by_record() {
    let setup = Setup::new("small-org.json", "scope_deny = [\"销售*\"]\n").await;
    let store = &*setup.store;
    setup.sync_once().await;
    let u5 = source_id(store, "u5").await; // in scope (售后部)
    let named = [(sync::PERSON, u5)];
    assert!(whole_route(&setup.ctx, store, &named).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_the_vendor_refuses_fails_alone_and_the_run_says_which() {
    let setup = Setup::new("small-org.json", "").await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    // Feishu takes a name longer than WeCom's 64 characters (60112 invalid name).
    console(
        Method::PATCH,
        &format!("{}/_sandbox/org/users/u7", sb.feishu),
        json!({"name": "长".repeat(70)}),
    )
    .await;
    let plan = sync::plan(ctx, store).await.unwrap();
    let creates = plan.count(Action::Create) as i64;
    let report = sync::apply(ctx, &plan, store, &*setup.dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    let refused: Vec<&String> = report
        .errors
        .iter()
        .filter(|e| e.starts_with("factory person"))
        .collect();
    assert_eq!(refused.len(), 1, "{:#?}", report.errors);
    assert!(refused[0].contains("60112"), "{}", refused[0]);
    let failed = report.errors.len() as i64;
    assert_eq!(report.counts.get("failed"), Some(&failed));
    assert_eq!(report.counts.get("create"), Some(&(creates - failed)));
    let run = store.get_run(&report.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, huitong::store::RunStatus::Failed);
    assert_eq!(run.error.as_ref(), report.errors.first());
    // Everyone else arrived.
    let wecom = get(&format!("{}/_sandbox/org", sb.wecom)).await;
    assert_eq!(wecom["users"].as_array().unwrap().len(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_new_people_sharing_a_mobile_are_a_conflict_not_a_refused_create() {
    let setup = Setup::new("small-org.json", "").await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    let people = fixture("small-org.json").users;
    let mobile = people
        .iter()
        .find(|u| u.key == "u8")
        .unwrap()
        .mobile
        .clone();
    console(
        Method::PATCH,
        &format!("{}/_sandbox/org/users/u7", sb.feishu),
        json!({"mobile": mobile}),
    )
    .await;
    let plan = sync::plan(ctx, store).await.unwrap();
    for t in &plan.targets {
        let dup: Vec<&sync::Conflict> = t
            .conflicts
            .iter()
            .filter(|c| c.kind == "duplicate_mobile")
            .collect();
        assert_eq!(dup.len(), 1, "{}: {:?}", t.target, t.conflicts);
        assert_eq!(dup[0].records.len(), 2, "both claimants: {:?}", dup[0]);
        let creates = t
            .steps
            .iter()
            .filter(|s| s.action == Action::Create && s.entity == sync::PERSON)
            .count();
        assert_eq!(creates, 18, "{}", t.target);
    }
    let report = sync::apply(ctx, &plan, store, &*setup.dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    // Fixed in the source: the next plan creates them both.
    console(
        Method::PATCH,
        &format!("{}/_sandbox/org/users/u7", sb.feishu),
        json!({"mobile": "13900000777"}),
    )
    .await;
    let plan = setup.sync_once().await;
    assert!(plan.targets.iter().all(|t| t.conflicts.is_empty()));
    let wecom = get(&format!("{}/_sandbox/org", sb.wecom)).await;
    assert_eq!(wecom["users"].as_array().unwrap().len(), 20);
}

/// WeCom people say which departments they lead, and WeCom's user API sets leadership from the
/// person: from one WeCom corp to another, the departments' leaders arrive with their people,
/// with no second write of the departments — and the result is the same org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_set_by_their_own_people_need_no_second_write_of_the_department() {
    let sb = sandboxes(
        empty_org("总部"),
        empty_org("子公司"),
        fixture("medium-org.json"),
    )
    .await;
    // A second WeCom corp, empty.
    let plant_sandbox = wecom_corp(empty_org("二厂"), "wwplant", FaultSpec::none()).await;
    let plant = plant_sandbox.base.clone();
    let dir = temp_dir("huitong-sync");
    let c = config(
        &sb,
        &dir,
        &format!(
            "\n[connectors.plant]\nkind = \"wecom\"\ncorp_id = \"wwplant\"\nagent_id = 1000002\n\
             corp_secret_env = \"FACTORY_SECRET\"\nbase_url = \"{plant}\"\n\
             [routes.across]\nsource = \"factory\"\ntargets = [\"plant\"]\n"
        ),
    );
    let store = open_store(&c).await;
    let dl = delivering(&c, store.clone()).await;
    let across = RouteContext::new(&c, "across").unwrap();
    let plan = sync::plan(&across, &*store).await.unwrap();
    assert!(
        plan.targets[0].conflicts.is_empty(),
        "{:?}",
        plan.targets[0].conflicts
    );
    let changes = plan.targets[0]
        .steps
        .iter()
        .filter(|s| s.action != Action::Link)
        .count() as u64;
    let before = writes(&plant).await;
    let report = sync::apply(&across, &plan, &*store, &*dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert_eq!(
        writes(&plant).await - before,
        changes,
        "one write per change, no department written twice: {}",
        get(&format!("{plant}/_sandbox/calls")).await["calls"]
    );
    // WeCom keeps no employee number (new members get derived userids): leaders by name.
    let leaders = |org: Value| -> std::collections::BTreeMap<String, Vec<String>> {
        let name_of: std::collections::HashMap<String, String> = org["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["key"].as_str().unwrap().to_owned(),
                    u["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        org["departments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| !d["parent"].is_null())
            .map(|d| {
                let mut ls: Vec<String> = d["leaders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| name_of[l.as_str().unwrap()].clone())
                    .collect();
                ls.sort();
                (d["name"].as_str().unwrap().to_owned(), ls)
            })
            .collect()
    };
    let source = leaders(get(&format!("{}/_sandbox/org", sb.wecom)).await);
    assert_eq!(source.len(), 24);
    assert!(
        source.values().all(|l| !l.is_empty()),
        "every department has a leader"
    );
    assert_eq!(leaders(get(&format!("{plant}/_sandbox/org")).await), source);
    let again = sync::plan(&across, &*store).await.unwrap();
    assert!(again.is_empty(), "{}", sync::render_plan(&again));
    let _ = std::fs::remove_dir_all(dir);
}

/// A new hire as the sandboxes' consoles take it (a fixture entry).
fn hire(key: &str, name: &str, email: &str, mobile: &str, employee_no: &str, dept: &str) -> Value {
    json!({"key": key, "name": name, "en_name": "", "email": email, "mobile": mobile,
        "employee_no": employee_no, "title": "", "departments": [dept], "active": true,
        "gender": "female", "hired_at": "2026-12-01"})
}

/// Sync never guesses: a source record that no longer maps, a new hire two unlinked target
/// people could be, and a new hire whose mobile an unlinked target person holds are each a
/// conflict; nothing is linked, created or removed for them, and apply writes only the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_never_guesses_and_writes_nothing_for_a_conflict() {
    // Mobile is not a match rule here: a target person holding a new hire's mobile is not them.
    let setup = Setup::new("small-org.json", r#"match = ["employee_no", "email"]"#).await;
    let (sb, store, ctx) = (&setup.sb, &*setup.store, &setup.ctx);
    setup.sync_once().await;
    let feishu = |path: &str| format!("{}/_sandbox/org/{path}", sb.feishu);
    // (1) u5's mobile no longer maps (10 digits): a mapping_error — and u5 has not left.
    console(
        Method::PATCH,
        &feishu("users/u5"),
        json!({"mobile": "1312677216"}),
    )
    .await;
    // (2) DingTalk has two unlinked people with the new hire's email: ambiguous.
    let twin = "twin@example.cn";
    console(
        Method::POST,
        &feishu("users"),
        hire("hire-a", "甲新", twin, "13900000001", "E900001", "d1"),
    )
    .await;
    for (key, mobile) in [("twin-1", "13900000011"), ("twin-2", "13900000012")] {
        console(
            Method::POST,
            &format!("{}/_sandbox/org/users", sb.dingtalk),
            hire(key, "双胞胎", twin, mobile, key, "root"),
        )
        .await;
    }
    // (3) WeCom has an unlinked person holding the next hire's mobile: WeCom would refuse a
    // second one.
    console(
        Method::POST,
        &feishu("users"),
        hire(
            "hire-b",
            "乙新",
            "b@example.cn",
            "13900000002",
            "E900002",
            "d1",
        ),
    )
    .await;
    console(
        Method::POST,
        &format!("{}/_sandbox/org/users", sb.wecom),
        hire(
            "holder",
            "持有人",
            "holder@example.cn",
            "13900000002",
            "W900002",
            "root",
        ),
    )
    .await;

    let plan = sync::plan(ctx, store).await.unwrap();
    let rendered = sync::render_plan(&plan);
    let u5 = "周曦霞";
    for t in &plan.targets {
        let kinds: Vec<String> = t.conflicts.iter().map(|c| c.kind.to_string()).collect();
        assert!(kinds.contains(&"mapping_error".to_owned()), "{rendered}");
        assert!(
            t.steps.iter().all(|s| s.name != u5),
            "{}: nothing is written or removed for a record that did not map:\n{rendered}",
            t.target
        );
        let (conflict, name, other) = if t.target == "sub" {
            ("ambiguous_match", "甲新", "乙新")
        } else {
            ("duplicate_mobile", "乙新", "甲新")
        };
        let c = t.conflicts.iter().find(|c| c.kind == conflict);
        assert!(c.is_some(), "{}: no {conflict}:\n{rendered}", t.target);
        assert!(
            t.steps.iter().all(|s| s.name != name),
            "{}: no link or create for {name}:\n{rendered}",
            t.target
        );
        // The other hire is no conflict there: created.
        let creates: Vec<&str> = t
            .steps
            .iter()
            .filter(|s| s.action == Action::Create)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(creates, [other], "{}:\n{rendered}", t.target);
        assert_eq!(t.steps.len(), 1, "{}:\n{rendered}", t.target);
    }
    let before = (writes(&sb.dingtalk).await, writes(&sb.wecom).await);
    let report = sync::apply(ctx, &plan, store, &*setup.dl.queue, false, &|_, _| {})
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    // One write per target: the other hire's create. Nothing for the conflicts.
    assert_eq!(
        (writes(&sb.dingtalk).await, writes(&sb.wecom).await),
        (before.0 + 1, before.1 + 1)
    );
    for base in [&sb.dingtalk, &sb.wecom] {
        let org = get(&format!("{base}/_sandbox/org")).await;
        let u = org["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == u5)
            .unwrap_or_else(|| panic!("{base}: {u5} is still there"));
        assert_eq!(u["active"], true, "{base}: {u5} was not disabled");
    }
}
