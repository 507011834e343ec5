//! `huitong connector check|try` and http connector tables in `config check`, offline: broken
//! definitions, the SSRF guard and missing credentials. The live side (Tryton, OAuth2) is in
//! tests/tests/erp_*.rs.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_huitong");

fn huitong(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("HUITONG_") {
            c.env_remove(k);
        }
    }
    c.args(args).output().unwrap()
}

const BROKEN: &str = "\
name: broken
transport: soap
colour: blue
auth:
  type: oauth2
  scopes: read
entities:
  party:
    list:
      path: /absolute/path
      records: '.[] | '
      paging: {style: offset, size: 0}
    get:
      path: model/{nope}
      verb: GET
  order:
    create:
      path: orders
      body: '{a: $undefined}'
";

#[test]
fn shipped_definitions_check_ok() {
    let dir = tempfile::tempdir().unwrap();
    let out = huitong(dir.path(), &["connector", "check", "tryton", "tryton-rpc"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "tryton: OK (rest, bearer auth, entities: company, employee, party, product, purchase)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("tryton-rpc: OK (tryton json-rpc, session auth"),
        "{stdout}"
    );
}

#[test]
fn a_broken_definition_is_reported_whole_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.yaml"), BROKEN).unwrap();
    let out = huitong(dir.path(), &["connector", "check", "broken.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for line in [
        "broken.yaml:2: `transport`: expected rest, jsonrpc or tryton, got \"soap\"",
        "broken.yaml:3: `colour`: unknown key",
        "broken.yaml:6: `auth.scopes`: expected a list of scope names",
        "broken.yaml:10: `entities.party.list.path`: a path is relative to the connector's base URL",
        "broken.yaml:11: `entities.party.list.records`: bad jq",
        "broken.yaml:12: `entities.party.list.paging.size`: expected a whole number from 1 to 10000, got 0",
        "broken.yaml:14: `entities.party.get.path`: unknown placeholder {nope}",
        "broken.yaml:15: `entities.party.get.verb`: unknown key",
        "broken.yaml:19: `entities.order.create.body`: bad jq: jq error: undefined variable `$undefined`",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert_eq!(err.lines().count(), 9, "{err}");
    // A definition without auth says so (auth is never assumed).
    std::fs::write(
        dir.path().join("no-auth.yaml"),
        "name: x\nentities:\n  a:\n    get: {path: 'a/{id}'}\n",
    )
    .unwrap();
    let out = huitong(dir.path(), &["connector", "check", "no-auth.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-auth.yaml:0: `auth` is missing (say `auth: {type: none}`"),
        "{err}"
    );
    // Not a file, and an unknown shipped name.
    let out = huitong(
        dir.path(),
        &["connector", "check", "/dev/zero", "no-such-system"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/zero:0: cannot read: not a regular file"),
        "{err}"
    );
    assert!(
        err.contains("no shipped definition \"no-such-system\" (shipped: tryton, tryton-rpc)"),
        "{err}"
    );
}

fn erp_config(dir: &Path, base_url: &str, extra: &str) -> std::path::PathBuf {
    let key = dir.join("key");
    std::fs::write(&key, "k3y-value-never-printed").unwrap();
    let file = dir.join("huitong.toml");
    std::fs::write(
        &file,
        format!(
            "[connectors.erp]\nkind = \"http\"\ndefinition = \"tryton\"\nbase_url = \"{base_url}\"\napi_key_file = \"{}\"\n{extra}[connectors.erp.params]\ncompany = 1\n",
            key.display()
        ),
    )
    .unwrap();
    file
}

/// `huitong --config CONFIG connector try erp party --limit 1`.
fn try_one_party(dir: &Path, config: &str) -> Output {
    huitong(
        dir,
        &[
            "--config",
            config,
            "connector",
            "try",
            "erp",
            "party",
            "--limit",
            "1",
        ],
    )
}

#[test]
fn private_and_metadata_addresses_are_refused_unless_allow_listed() {
    let dir = tempfile::tempdir().unwrap();
    for base in [
        "http://10.0.0.1/erp/",
        "http://169.254.169.254/latest/",
        "http://127.0.0.1:9/huitong/",
    ] {
        let file = erp_config(dir.path(), base, "");
        let config = file.to_str().unwrap();
        let out = huitong(dir.path(), &["config", "check", "--config", config]);
        assert_eq!(out.status.code(), Some(2), "{base}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("connectors.erp.base_url"), "{err}");
        assert!(err.contains("refused"), "{err}");
        assert!(!err.contains("k3y-value"), "{err}");
        // `connector try` refuses before any connection.
        let out = try_one_party(dir.path(), config);
        assert_ne!(out.status.code(), Some(0), "{base}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refused"), "{err}");
    }
    // A name that resolves to loopback is refused at connection time.
    let file = erp_config(dir.path(), "http://localhost:9/huitong/", "");
    let config = file.to_str().unwrap();
    let out = try_one_party(dir.path(), config);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused to connect to localhost") && err.contains("loopback"),
        "{err}"
    );
    // Allow-listed in the connector table: accepted by config check.
    let file = erp_config(
        dir.path(),
        "http://127.0.0.1:9/huitong/",
        "allow_hosts = [\"127.0.0.1\"]\n",
    );
    let out = huitong(
        dir.path(),
        &["config", "check", "--config", file.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_check_names_missing_credentials_params_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huitong.toml");
    std::fs::write(
        &file,
        "[connectors.erp]\nkind = \"http\"\ndefinition = \"tryton\"\nbase_url = \"https://erp.example.test/db/\"\nflavour = 1\n\
         [connectors.erp.params]\nregion = \"cn\"\n\
         [connectors.crm]\nkind = \"http\"\ndefinition = \"tryton-rpc\"\nbase_url = \"https://crm.example.test/db/\"\n",
    )
    .unwrap();
    let out = huitong(
        dir.path(),
        &["config", "check", "--config", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connectors.erp.flavour"), "{err}");
    assert!(
        err.contains("connectors.erp.api_key") && err.contains("authenticates with bearer"),
        "{err}"
    );
    assert!(err.contains("connectors.crm.password"), "{err}");
    assert!(err.contains("connectors.crm.username"), "{err}");
}

#[test]
fn a_route_through_an_own_definition_needs_its_mappings_named() {
    let dir = tempfile::tempdir().unwrap();
    let def = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/http/orders-api.yaml");
    std::fs::write(dir.path().join("key"), "s3cret").unwrap();
    let config = |mappings: &str| {
        format!(
            "[connectors.crm]\nkind = \"http\"\ndefinition = \"{}\"\nbase_url = \"https://crm.example.test/\"\n\
             client_id = \"x\"\nclient_secret_file = \"key\"\ntoken_url = \"https://crm.example.test/token\"\n{mappings}\
             [connectors.factory]\nkind = \"wecom\"\ncorp_id = \"ww1\"\nagent_id = 1\ncorp_secret_file = \"key\"\n\
             [routes.org]\nsource = \"crm\"\ntargets = [\"factory\"]\n",
            def.display()
        )
    };
    let file = dir.path().join("huitong.toml");
    std::fs::write(&file, config("")).unwrap();
    let out = huitong(
        dir.path(),
        &["config", "check", "--config", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for entity in ["person", "department"] {
        assert!(
            err.contains(&format!("`connectors.crm.mappings.{entity}`: connector \"crm\" uses its own definition, which ships no mappings")),
            "{err}"
        );
    }
    // Named (here the shipped WeCom ones stand in for the admin's files): accepted.
    std::fs::write(
        &file,
        config("[connectors.crm.mappings]\nperson = \"wecom-person\"\ndepartment = \"wecom-department\"\n"),
    )
    .unwrap();
    let out = huitong(
        dir.path(),
        &["config", "check", "--config", file.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
