//! The harness of the ERP tests works: a real Tryton (REST with the API key, its own JSON-RPC,
//! stopped and started again) and a real OAuth2 server with its protected REST service.
//! Skipped without the services (see tests/src/erp.rs), failing with HUITONG_TEST_REQUIRE_SERVICES=1.

use huitong_tests::erp::{OAuth2Service, Tryton};
use serde_json::{Value, json};

#[tokio::test]
async fn tryton_serves_rest_with_the_api_key_and_json_rpc() {
    let started = std::time::Instant::now();
    let Some(mut tryton) = Tryton::start().await else {
        return;
    };
    println!("Tryton started and seeded in {:?}", started.elapsed());
    let http = reqwest::Client::new();

    // Written through REST with admin's key...
    let res = http
        .post(format!("{}?f=name", tryton.rest_url("party.party")))
        .bearer_auth(&tryton.api_key)
        .json(&json!({"name": "Supplier 甲"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_i64().expect("an id");
    assert_eq!(created["name"], "Supplier 甲");

    // ...read back through Tryton's own JSON-RPC.
    let found = tryton
        .call(
            "model.party.party.search_read",
            json!([[["id", "=", id]], 0, null, null, ["name"]]),
        )
        .await;
    assert_eq!(found[0]["name"], "Supplier 甲");
    let err = tryton
        .rpc("model.party.party.read", json!([[999_999], ["name"]]))
        .await
        .unwrap_err();
    assert_eq!(err[0], "UserError", "{err}");

    // A REST list with a domain, and paging with Range (end exclusive, 200 + Content-Range).
    let domain = Tryton::domain_param(&json!([["name", "=", "Supplier 甲"]]));
    let res = http
        .get(tryton.rest_url("party.party"))
        .query(&[("d", domain.as_str()), ("f", "name")])
        .header("Range", "records=0-10")
        .bearer_auth(&tryton.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-range"], "records 0-1/1");
    let list: Value = res.json().await.unwrap();
    assert_eq!(
        list,
        json!([{"id": id, "__name__": "party.party", "name": "Supplier 甲"}])
    );

    // The seeded company is admin's: purchases are readable in it.
    let res = http
        .get(tryton.rest_url("purchase.purchase"))
        .header(
            "X-Tryton-Context",
            Tryton::context_header(&json!({"company": tryton.company_id})),
        )
        .bearer_auth(&tryton.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let res = http
        .get(tryton.rest_url("party.party"))
        .bearer_auth("not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Stopped, it refuses connections; started again, the same data is there.
    tryton.stop().await;
    assert!(
        http.get(tryton.rest_url("party.party"))
            .send()
            .await
            .is_err(),
        "a stopped Tryton answered"
    );
    let started = std::time::Instant::now();
    tryton.start_again().await;
    println!("Tryton started again in {:?}", started.elapsed());
    let res = http
        .get(format!("{}/{id}?f=name", tryton.rest_url("party.party")))
        .bearer_auth(&tryton.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        tryton
            .call("model.party.party.read", json!([[id], ["name"]]))
            .await[0]["name"],
        "Supplier 甲"
    );
}

#[tokio::test]
async fn oauth2_tokens_open_the_protected_api_once_fetched() {
    let Some(oauth) = OAuth2Service::start(600).await else {
        return;
    };
    let http = reqwest::Client::new();

    let res = http
        .post(&oauth.token_url)
        .basic_auth(&oauth.client_id, Some(&oauth.client_secret))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=orders%3Aread")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let grant: Value = res.json().await.unwrap();
    assert_eq!(grant["token_type"], "Bearer");
    assert_eq!(grant["expires_in"], 600);
    let token = grant["access_token"].as_str().unwrap();

    for page in 1..=2 {
        let res = http
            .get(format!("{}/orders", oauth.api_url))
            .query(&[("page", page), ("per_page", 2)])
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["total"], 3);
        assert_eq!(
            body["data"].as_array().unwrap().len(),
            if page == 1 { 2 } else { 1 }
        );
    }

    let res = http
        .get(format!("{}/orders", oauth.api_url))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let challenge = res.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");

    let res = http
        .post(&oauth.token_url)
        .basic_auth(&oauth.client_id, Some("wrong"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let stats = oauth.stats().await;
    assert_eq!(stats["tokens_issued"], 1, "{stats}");
    assert_eq!(stats["api_calls"], 3, "{stats}");
    assert_eq!(stats["unauthorized"], 1, "{stats}");
}

#[tokio::test]
async fn oauth2_tokens_expire_after_their_ttl() {
    // Expiry times are whole seconds: a token of ttl 3 lives between 2 and 3 s.
    let Some(oauth) = OAuth2Service::start(3).await else {
        return;
    };
    let http = reqwest::Client::new();
    let fetched = std::time::Instant::now();
    let token = oauth.token().await;
    let get = || {
        http.get(format!("{}/orders/1", oauth.api_url))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(3200).saturating_sub(fetched.elapsed()))
        .await;
    let res = get().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn tryton_on_postgres_takes_concurrent_creates() {
    let Some(tryton) = Tryton::start_postgres().await else {
        return;
    };
    let http = reqwest::Client::new();
    // Each party gets its code from Tryton's sequence: on PostgreSQL a real one.
    let creates: Vec<_> = (0..8)
        .map(|i| {
            let request = http
                .post(tryton.rest_url("party.party"))
                .bearer_auth(&tryton.api_key)
                .json(&json!({"name": format!("Concurrent {i}")}));
            tokio::spawn(async move {
                let res = request.send().await.unwrap();
                (res.status(), res.text().await.unwrap())
            })
        })
        .collect();
    for create in creates {
        let (status, body) = create.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let count = tryton
        .call(
            "model.party.party.search_count",
            json!([[["name", "like", "Concurrent %"]]]),
        )
        .await;
    assert_eq!(count, 8);
}
