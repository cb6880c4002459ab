//! Webhooks end to end, on the embedded default and on PostgreSQL + Redis: a local receiver
//! (axum on 127.0.0.1:0) checks every delivery's signature with the Standard Webhooks reference
//! implementation (the `standardwebhooks` crate), while jobs against the directory emulator end
//! `finished`, `finished_with_exception` and `cancelled`. Two endpoints with different event
//! filters each get every event they asked for exactly once; a receiver answering 500 three
//! times is delivered on the fourth attempt and the log shows 4 attempts; a redeliver sends the
//! same message again; URLs outside the allowed schemes and hosts, roles and other tenants are
//! refused.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use common::{Backend, TestApp, expect_problem};
use graph_emulator::{
    ENTERPRISEPACK_SKU_ID, EmulatorConfig, EmulatorHandle, GroupSpec, SPE_E5_SKU_ID, Scenario,
};
use licensor::Roles;
use serde_json::{Value, json};

/// 400 users, all with a usage location. `Small` (the first 20 users), `Others` (300 drawn from
/// all users). SPE_E5 has 10 units, so assigning it to Small ends finished with exception.
fn scenario() -> Scenario {
    let base = Scenario::demo();
    let sku = common::jobs::sku_of;
    Scenario {
        seed: 2121,
        users: 400,
        users_without_usage_location: 0.0,
        usage_location: "SE".into(),
        groups: vec![
            GroupSpec {
                leading_users: true,
                ..GroupSpec::new("Small", 20)
            },
            GroupSpec::new("Others", 300),
        ],
        skus: vec![sku("ENTERPRISEPACK", 5_000), sku("SPE_E5", 10)],
        ..base
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    hook: String,
    id: String,
    body: Value,
    valid: bool,
    answered: u16,
}

#[derive(Default)]
struct ReceiverState {
    /// Signing secret per hook name (the path the endpoint posts to).
    secrets: HashMap<String, String>,
    /// How many more requests to a hook are answered 500.
    fail: HashMap<String, usize>,
    got: Vec<Got>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<ReceiverState>>);

async fn receive(
    State(r): State<Receiver>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut s = r.0.lock().unwrap();
    // An implementation independent of licensor's: the Standard Webhooks reference library.
    let valid = s.secrets.get(&hook).is_some_and(|secret| {
        standardwebhooks::Webhook::new(secret)
            .expect("secret in the whsec_ form")
            .verify(&body, &headers)
            .is_ok()
    });
    let answered = match s.fail.get_mut(&hook) {
        Some(n) if *n > 0 => {
            *n -= 1;
            500
        }
        _ => 200,
    };
    s.got.push(Got {
        hook,
        id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        valid,
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

impl Receiver {
    async fn start() -> (Receiver, String, tokio::task::JoinHandle<()>) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/hooks/{hook}", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (receiver, url, task)
    }

    fn got(&self, hook: &str) -> Vec<Got> {
        let s = self.0.lock().unwrap();
        s.got.iter().filter(|g| g.hook == hook).cloned().collect()
    }
}

struct Setup {
    app: TestApp,
    emulator: EmulatorHandle,
    admin: String,
    operator: String,
    viewer: String,
}

impl Setup {
    async fn submit(&self, body: Value) -> String {
        let resp = self
            .app
            .post("/v1/jobs", &self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
        let job: Value = resp.json().await.unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    /// Wait for the job's end and check every item's outcome against the directory.
    async fn wait(&self, id: &str) -> Value {
        let job = self.app.wait_for_job(&self.admin, id, 120).await;
        self.app
            .assert_outcomes_true(&self.viewer, id, &self.emulator.base_url())
            .await;
        job
    }

    async fn faults(&self, faults: Value) {
        let resp = self
            .app
            .http
            .put(format!("{}/_emulator/faults", self.emulator.base_url()))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }

    /// Every delivery of an endpoint, newest first.
    async fn deliveries(&self, hook_id: &str) -> Vec<Value> {
        let path = format!("/v1/webhooks/{hook_id}/deliveries?limit=500");
        self.app.list(&path, &self.admin).await
    }

    /// Wait until the endpoint has `n` deliveries, none pending.
    async fn settled(&self, hook_id: &str, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.deliveries(hook_id).await;
            if list.len() == n && list.iter().all(|d| d["status"] != "pending") {
                return list;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deliveries of {hook_id} not settled: {list:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The deliveries a hook answered 200, per job and run: each must be there once.
fn delivered_once(got: &[Got]) -> HashMap<(String, i64, String), usize> {
    let mut seen = HashMap::new();
    for g in got.iter().filter(|g| g.answered == 200) {
        let job = &g.body["data"]["job"];
        *seen
            .entry((
                job["id"].as_str().unwrap().to_owned(),
                job["run"].as_i64().unwrap(),
                g.body["type"].as_str().unwrap().to_owned(),
            ))
            .or_insert(0) += 1;
    }
    seen
}

async fn webhooks_deliver_every_event_once(backend: Backend) {
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(scenario()),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let Some(app) = TestApp::start_with(
        backend,
        Roles::ALL,
        "[jobs]\nchunk_size = 20\nlanes_per_job = 1\n[webhooks]\nallow_http_hosts = [\"127.0.0.1\"]\nretry_base_ms = 100\ntimeout_secs = 5\n",
    )
    .await
    else {
        return;
    };
    let tenant = app.tenant("contoso").await;
    app.connect_directory(tenant.id, &emulator).await;
    let s = Setup {
        app,
        emulator,
        admin: tenant.admin,
        operator: tenant.operator,
        viewer: tenant.viewer,
    };
    let (receiver, base, receiver_task) = Receiver::start().await;

    // Two endpoints with different event filters.
    let mut hooks = HashMap::new();
    for (name, events) in [
        (
            "all",
            json!([
                "job.finished",
                "job.finished_with_exception",
                "job.failed",
                "job.cancelled"
            ]),
        ),
        (
            "trouble",
            json!(["job.finished_with_exception", "job.cancelled"]),
        ),
    ] {
        let resp = s
            .app
            .post("/v1/webhooks", &s.admin)
            .json(&json!({"url": format!("{base}/hooks/{name}"), "events": events, "description": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let created: Value = resp.json().await.unwrap();
        assert_eq!(
            location,
            Some(format!("/v1/webhooks/{}", created["id"].as_str().unwrap())),
            "a created endpoint's answer names its URL"
        );
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(
            secret.starts_with("whsec_") && secret.len() > 40,
            "{created}"
        );
        assert_eq!(created["enabled"], true);
        let id = created["id"].as_str().unwrap().to_owned();
        let shown = s
            .app
            .get_json(&format!("/v1/webhooks/{id}"), &s.admin)
            .await;
        assert!(
            shown.get("secret").is_none(),
            "the secret is shown once: {shown}"
        );
        assert_eq!(shown["events"], events);
        receiver
            .0
            .lock()
            .unwrap()
            .secrets
            .insert(name.to_owned(), secret);
        hooks.insert(name, id);
    }
    let (all, trouble) = (hooks["all"].clone(), hooks["trouble"].clone());

    let small = s.app.group_id(&s.admin, "Small").await;
    let others = s.app.group_id(&s.admin, "Others").await;
    // Finished.
    let finished = s
        .submit(json!({"kind": "assign", "groups": [small], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}]}))
        .await;
    assert_eq!(s.wait(&finished).await["status"], "finished");
    // Finished with exception: 10 units for 20 members.
    let partly = s
        .submit(json!({"kind": "assign", "groups": [small], "add_licenses": [{"sku_id": SPE_E5_SKU_ID}]}))
        .await;
    let partly_job = s.wait(&partly).await;
    assert_eq!(partly_job["status"], "finished_with_exception");
    // Cancelled while it runs, on a slow directory.
    s.faults(json!({"latency_ms": 200})).await;
    let cancelled = s
        .submit(json!({"kind": "remove", "groups": [others], "remove_licenses": [ENTERPRISEPACK_SKU_ID]}))
        .await;
    // Cancel once members are being worked, so a chunk is in flight at the cancel.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let j = s
            .app
            .get_json(&format!("/v1/jobs/{cancelled}"), &s.viewer)
            .await;
        if j["progress"]["succeeded"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = s
        .app
        .post(&format!("/v1/jobs/{cancelled}/cancel"), &s.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    // In-flight members finish; then the job's items are all settled.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let j = s
            .app
            .get_json(&format!("/v1/jobs/{cancelled}"), &s.viewer)
            .await;
        assert_eq!(j["status"], "cancelled");
        if j["progress"]["pending"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.wait(&cancelled).await;
    s.faults(json!({})).await;
    // The cancelled run's counts are every member's outcome, the in-flight ones included.
    let job = s
        .app
        .get_json(&format!("/v1/jobs/{cancelled}"), &s.viewer)
        .await;
    let runs = s
        .app
        .get_json(&format!("/v1/jobs/{cancelled}/runs"), &s.viewer)
        .await;
    let run = &runs["data"][0];
    assert_eq!(run["status"], "cancelled", "{runs}");
    assert!(run["finished_at"].is_string(), "{runs}");
    for n in ["total", "succeeded", "failed", "skipped"] {
        assert_eq!(run[n], job["progress"][n], "{n}: {runs} vs {job}");
    }
    assert!(job["progress"]["skipped"].as_i64().unwrap() > 0, "{job}");
    // Its activity counts every outcome, the members the cancel skipped included.
    let path = format!("/v1/jobs/{cancelled}/activity?limit=500");
    let activity = s.app.list(&path, &s.viewer).await;
    for n in ["succeeded", "failed", "skipped"] {
        let sum: i64 = activity.iter().map(|m| m[n].as_i64().unwrap()).sum();
        assert_eq!(
            sum,
            job["progress"][n].as_i64().unwrap(),
            "{n}: {activity:?}"
        );
    }

    // "all" gets the three events, "trouble" two; each once, signed, with the job's facts.
    let all_log = s.settled(&all, 3).await;
    let trouble_log = s.settled(&trouble, 2).await;
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expected = |jobs: &[(&str, &str)]| -> HashMap<(String, i64, String), usize> {
        jobs.iter()
            .map(|(id, event)| ((id.to_string(), 1, event.to_string()), 1))
            .collect()
    };
    assert_eq!(
        delivered_once(&receiver.got("all")),
        expected(&[
            (&finished, "job.finished"),
            (&partly, "job.finished_with_exception"),
            (&cancelled, "job.cancelled"),
        ])
    );
    assert_eq!(
        delivered_once(&receiver.got("trouble")),
        expected(&[
            (&partly, "job.finished_with_exception"),
            (&cancelled, "job.cancelled"),
        ])
    );
    for (hook, log) in [("all", &all_log), ("trouble", &trouble_log)] {
        let got = receiver.got(hook);
        assert_eq!(got.len(), log.len(), "one request per delivery: {got:#?}");
        for g in &got {
            assert!(g.valid, "signature of {g:?}");
            let d = log
                .iter()
                .find(|d| d["id"] == g.id.as_str())
                .unwrap_or_else(|| panic!("webhook-id {} is a delivery: {log:#?}", g.id));
            assert_eq!(d["status"], "delivered", "{d}");
            assert_eq!(d["attempts"], 1, "{d}");
            assert_eq!(d["last_status_code"], 200, "{d}");
            assert_eq!(d["event"], g.body["type"]);
            assert!(d["next_attempt_at"].is_null(), "{d}");
            // The message carries the job as the API shows it at its end.
            let job_id = g.body["data"]["job"]["id"].as_str().unwrap();
            assert_eq!(d["job_id"], job_id);
            let job = s
                .app
                .get_json(&format!("/v1/jobs/{job_id}"), &s.viewer)
                .await;
            let sent = &g.body["data"]["job"];
            assert_eq!(sent["status"], job["status"], "{g:?}");
            assert_eq!(sent["kind"], job["kind"]);
            assert_eq!(sent["runs"], job["runs"]);
            assert_eq!(g.body["data"]["links"]["job"], format!("/v1/jobs/{job_id}"));
            assert_eq!(
                g.body["data"]["links"]["report"],
                format!("/v1/jobs/{job_id}/report")
            );
            // A cancelled job's event waits for the members in flight at the cancel to be
            // recorded: its counts are final too.
            assert_eq!(sent["progress"], job["progress"], "{g:?}");
            let failed: i64 = sent["error_codes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["count"].as_i64().unwrap())
                .sum();
            assert_eq!(
                failed,
                sent["progress"]["failed"].as_i64().unwrap(),
                "{g:?}"
            );
        }
    }
    let partly_sent = receiver
        .got("trouble")
        .into_iter()
        .find(|g| g.body["type"] == "job.finished_with_exception")
        .unwrap();
    assert_eq!(
        partly_sent.body["data"]["job"]["error_codes"],
        json!([{"code": "count_violation", "count": 10}]),
        "{:?}",
        partly_sent.body
    );

    // The receiver answers 500 three times: a rerun's end (a new event) is delivered on the
    // fourth attempt, and the log shows 4 attempts.
    receiver.0.lock().unwrap().fail.insert("all".into(), 3);
    let resp = s
        .app
        .post(&format!("/v1/jobs/{partly}/rerun"), &s.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let rerun = s.wait(&partly).await;
    assert_eq!(rerun["status"], "finished_with_exception");
    assert_eq!(rerun["runs"], 2);
    let all_log = s.settled(&all, 4).await;
    let retried = all_log
        .iter()
        .find(|d| d["job_id"] == partly.as_str() && d["run"] == 2)
        .unwrap_or_else(|| panic!("the rerun's event: {all_log:#?}"));
    assert_eq!(retried["status"], "delivered", "{retried}");
    assert_eq!(retried["attempts"], 4, "{retried}");
    assert_eq!(retried["last_status_code"], 200);
    let codes: Vec<Value> = retried["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, [json!(500), json!(500), json!(500), json!(200)]);
    assert_eq!(retried["attempt_log"][0]["error"], "answered 500");
    let got = receiver.got("all");
    let tries: Vec<&Got> = got
        .iter()
        .filter(|g| g.id == retried["id"].as_str().unwrap())
        .collect();
    assert_eq!(tries.len(), 4, "{tries:#?}");
    assert!(tries.iter().all(|g| g.valid), "every attempt is signed");
    s.settled(&trouble, 3).await;
    let mut once = expected(&[
        (&partly, "job.finished_with_exception"),
        (&cancelled, "job.cancelled"),
    ]);
    once.insert((partly.clone(), 2, "job.finished_with_exception".into()), 1);
    assert_eq!(delivered_once(&receiver.got("trouble")), once);
    let failed_list = s
        .app
        .get_json(
            &format!("/v1/webhooks/{all}/deliveries?status=failed,pending"),
            &s.admin,
        )
        .await;
    assert_eq!(failed_list["data"], json!([]));
    // A cursor of the delivered ones reads on only among them: sent with another status, or
    // none, it is refused naming the filter rather than read as a position there.
    let deliveries = format!("/v1/webhooks/{all}/deliveries");
    let delivered = s
        .app
        .get_json(&format!("{deliveries}?status=delivered&limit=1"), &s.admin)
        .await;
    let cursor = delivered["next_cursor"].as_str().unwrap();
    let next = s
        .app
        .get_json(
            &format!("{deliveries}?status=delivered&limit=1&cursor={cursor}"),
            &s.admin,
        )
        .await;
    assert_eq!(next["data"][0]["status"], "delivered", "{next}");
    for other in ["status=failed&", ""] {
        let path = format!("{deliveries}?{other}cursor={cursor}");
        let refusal = common::other_filters("status");
        s.app.expect_cursor_refused(&path, &s.admin, &refusal).await;
    }

    // Redeliver sends the same message (same webhook-id) again.
    let first = trouble_log
        .iter()
        .find(|d| d["job_id"] == cancelled.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = s
        .app
        .post(
            &format!("/v1/webhooks/{trouble}/deliveries/{first}/redeliver"),
            &s.admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while receiver
        .got("trouble")
        .iter()
        .filter(|g| g.id == first)
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "redelivery did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = s.settled(&trouble, 3).await;
    let again = log.iter().find(|d| d["id"] == first.as_str()).unwrap();
    assert_eq!(again["attempts"], 2, "{again}");
    assert_eq!(again["status"], "delivered");
    assert!(receiver.got("trouble").iter().all(|g| g.valid));

    // Metrics.
    let metrics = s.app.text("/metrics").await;
    for line in [
        "licensor_webhook_deliveries_total{outcome=\"delivered\"}",
        "licensor_webhook_deliveries_total{outcome=\"retrying\"}",
        "licensor_webhook_deliveries_total{outcome=\"failed\"}",
        "licensor_webhook_deliveries_pending 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let retrying: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("licensor_webhook_deliveries_total{outcome=\"retrying\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(retrying >= 3.0, "{retrying}");

    // Rotate, disable, delete; each is in the audit log.
    let rotated = s
        .app
        .post_json(
            &format!("/v1/webhooks/{trouble}/rotate-secret"),
            &s.admin,
            &json!({}),
        )
        .await;
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_"));
    assert_ne!(new_secret, receiver.0.lock().unwrap().secrets["trouble"]);
    let resp = s
        .app
        .http
        .patch(format!("{}/v1/webhooks/{all}", s.app.url))
        .bearer_auth(&s.admin)
        .json(&json!({"enabled": false, "description": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let patched: Value = resp.json().await.unwrap();
    assert_eq!(patched["enabled"], false);
    assert!(patched["description"].is_null());
    let resp = s
        .app
        .http
        .delete(format!("{}/v1/webhooks/{trouble}", s.app.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    expect_problem(
        s.app
            .get(&format!("/v1/webhooks/{trouble}"), &s.admin)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let audit = s
        .app
        .get_json("/v1/audit?target_type=webhook&limit=100", &s.admin)
        .await;
    let mut actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "webhook.created",
            "webhook.created",
            "webhook.deleted",
            "webhook.secret_rotated",
            "webhook.updated"
        ]
    );
    assert!(
        !audit.to_string().contains("whsec_"),
        "no secret in the audit log"
    );

    // A disabled endpoint gets nothing more.
    let before = receiver.got("all").len();
    let again = s
        .submit(json!({"kind": "assign", "groups": [small], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}]}))
        .await;
    s.wait(&again).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.got("all").len(), before);
    assert_eq!(s.deliveries(&all).await.len(), 4);

    receiver_task.abort();
    s.app.stop().await;
    s.emulator.shutdown().await;
}
on_both_backends!(webhooks_deliver_every_event_once);

/// URLs outside the allowed schemes and hosts, bad bodies, roles and other tenants: refused,
/// nothing changed.
async fn webhooks_refuse_what_is_not_allowed(backend: Backend) {
    let Some(app) = TestApp::start_with(
        backend,
        Roles::ALL,
        "[webhooks]\nallow_http_hosts = [\"127.0.0.1\", \"localhost\"]\n",
    )
    .await
    else {
        return;
    };
    let a = app.tenant("contoso").await;
    let b = app.tenant("fabrikam").await;
    let create = |token: &str, body: Value| app.post("/v1/webhooks", token).json(&body).send();
    for url in [
        "ftp://127.0.0.1/hook",
        "http://example.com/hook",
        "not a url",
        "https://user:secret@example.com/hook",
        "file:///etc/passwd",
        "",
        // Internal addresses (server-side request forgery), over https too.
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/hook",
        "https://[::1]:8443/hook",
        "https://127.0.0.2/hook",
    ] {
        let resp = create(&a.admin, json!({"url": url, "events": ["job.finished"]}))
            .await
            .unwrap();
        expect_problem(resp, 422, "webhook_url_not_allowed").await;
    }
    let resp = create(
        &a.admin,
        json!({"url": "https://hooks.example.com/x", "events": []}),
    )
    .await
    .unwrap();
    expect_problem(resp, 422, "invalid_events").await;
    // A canary's pause ends no run: there is no `job.paused` event to subscribe to.
    let resp = create(
        &a.admin,
        json!({"url": "https://hooks.example.com/x", "events": ["job.paused"]}),
    )
    .await
    .unwrap();
    expect_problem(resp, 422, "invalid_body").await;
    let resp = create(
        &a.admin,
        json!({"url": "https://hooks.example.com/x", "events": ["job.failed"], "description": "x".repeat(501)}),
    )
    .await
    .unwrap();
    expect_problem(resp, 422, "invalid_description").await;
    for token in [&a.operator, &a.viewer] {
        let resp = create(
            token,
            json!({"url": "https://hooks.example.com/x", "events": ["job.failed"]}),
        )
        .await
        .unwrap();
        expect_problem(resp, 403, "forbidden").await;
        expect_problem(
            app.get("/v1/webhooks", token).send().await.unwrap(),
            403,
            "forbidden",
        )
        .await;
    }
    let list = app.get_json("/v1/webhooks", &a.admin).await;
    assert_eq!(list["data"], json!([]), "nothing was created");

    // http:// to an allowed host, and https:// anywhere.
    let local = app
        .post_json(
            "/v1/webhooks",
            &a.admin,
            &json!({"url": "http://localhost:9/hook", "events": ["job.failed"]}),
        )
        .await;
    let id = local["id"].as_str().unwrap();
    app.post_json(
        "/v1/webhooks",
        &a.admin,
        &json!({"url": "https://hooks.example.com/x", "events": ["job.finished", "job.finished"]}),
    )
    .await;
    let list = app.get_json("/v1/webhooks?limit=1", &a.admin).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["events"], json!(["job.finished"]));
    let next = list["next_cursor"].as_str().unwrap();
    let rest = app
        .get_json(&format!("/v1/webhooks?limit=1&cursor={next}"), &a.admin)
        .await;
    assert_eq!(rest["data"][0]["id"], id);

    // An update is checked as a creation is.
    let resp = app
        .http
        .patch(format!("{}/v1/webhooks/{id}", app.url))
        .bearer_auth(&a.admin)
        .json(&json!({"url": "http://example.com/hook"}))
        .send()
        .await
        .unwrap();
    expect_problem(resp, 422, "webhook_url_not_allowed").await;
    assert_eq!(
        app.get_json(&format!("/v1/webhooks/{id}"), &a.admin).await["url"],
        "http://localhost:9/hook"
    );

    // Another tenant's endpoint is not found, whatever is asked of it.
    let delivery = uuid::Uuid::now_v7();
    for resp in [
        app.get(&format!("/v1/webhooks/{id}"), &b.admin)
            .send()
            .await
            .unwrap(),
        app.get(&format!("/v1/webhooks/{id}/deliveries"), &b.admin)
            .send()
            .await
            .unwrap(),
        app.post(&format!("/v1/webhooks/{id}/rotate-secret"), &b.admin)
            .send()
            .await
            .unwrap(),
        app.post(
            &format!("/v1/webhooks/{id}/deliveries/{delivery}/redeliver"),
            &b.admin,
        )
        .send()
        .await
        .unwrap(),
        app.http
            .patch(format!("{}/v1/webhooks/{id}", app.url))
            .bearer_auth(&b.admin)
            .json(&json!({"enabled": false}))
            .send()
            .await
            .unwrap(),
        app.http
            .delete(format!("{}/v1/webhooks/{id}", app.url))
            .bearer_auth(&b.admin)
            .send()
            .await
            .unwrap(),
    ] {
        expect_problem(resp, 404, "not_found").await;
    }
    assert_eq!(
        app.get_json("/v1/webhooks", &b.admin).await["data"],
        json!([])
    );
    // An unknown delivery of one's own endpoint, and roles on the delivery routes.
    expect_problem(
        app.post(
            &format!("/v1/webhooks/{id}/deliveries/{delivery}/redeliver"),
            &a.admin,
        )
        .send()
        .await
        .unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_problem(
        app.get(&format!("/v1/webhooks/{id}/deliveries"), &a.operator)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    expect_problem(
        app.get(
            &format!("/v1/webhooks/{id}/deliveries?status=lost"),
            &a.admin,
        )
        .send()
        .await
        .unwrap(),
        400,
        "invalid_query",
    )
    .await;
    assert_eq!(
        app.get_json(&format!("/v1/webhooks/{id}"), &a.admin).await["enabled"],
        true,
        "the other tenant changed nothing"
    );
    app.stop().await;
}
on_both_backends!(webhooks_refuse_what_is_not_allowed);

/// `licensor webhooks …` against a running licensor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_from_the_command_line() {
    let app = TestApp::start(Backend::Embedded).await.expect("embedded");
    let t = app.tenant("contoso").await;
    let cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_licensor"));
        cmd.arg("webhooks")
            .args(args)
            .env("LICENSOR_URL", &app.url)
            .env("LICENSOR_TOKEN", &t.admin)
            .env_remove("LICENSOR_CONFIG");
        async move {
            let out = cmd.output().await.expect("run licensor");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, out, err) = cli(&[
        "create",
        "https://hooks.example.com/licensor",
        "--event",
        "job.finished,job.failed",
        "--event",
        "job.cancelled",
    ])
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("signing secret (shown once): whsec_"), "{out}");
    let id = out
        .split_whitespace()
        .nth(1)
        .expect("webhook <id> created")
        .to_owned();
    let (code, out, _) = cli(&["list"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&id) && out.contains("job.finished,job.failed,job.cancelled"),
        "{out}"
    );
    let (code, out, _) = cli(&["deliveries", &id]).await;
    assert_eq!(code, Some(0));
    assert!(out.starts_with("ID"), "{out}");
    let (code, _, err) = cli(&["create", "http://example.com/x", "--event", "job.failed"]).await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: webhook_url_not_allowed: "), "{err}");
    let (code, _, err) = cli(&["redeliver", &id, &uuid::Uuid::now_v7().to_string()]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("not_found"), "{err}");
    let (code, out, _) = cli(&["delete", &id]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        app.get_json("/v1/webhooks", &t.admin).await["data"],
        json!([])
    );
    app.stop().await;
}

/// A delivery whose queue message was lost (here: the queue emptied before any worker ran) is
/// queued again by the reconciler of the next worker that starts, and delivered once.
async fn lost_delivery_message_is_reconciled(backend: Backend) {
    let extra = "[jobs]\nstall_secs = 5\n[webhooks]\nallow_http_hosts = [\"127.0.0.1\"]\nretry_base_ms = 100\n";
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(scenario()),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    // The API alone: the cancel records the event and queues it, but no worker takes it.
    let Some(app) = TestApp::start_with(backend, Roles::API, extra).await else {
        return;
    };
    let t = app.tenant("contoso").await;
    app.connect_directory(t.id, &emulator).await;
    let (receiver, base, receiver_task) = Receiver::start().await;
    let created = app
        .post_json(
            "/v1/webhooks",
            &t.admin,
            &json!({"url": format!("{base}/hooks/lost"), "events": ["job.cancelled"]}),
        )
        .await;
    receiver.0.lock().unwrap().secrets.insert(
        "lost".into(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    let hook = created["id"].as_str().unwrap();
    let small = app.group_id(&t.admin, "Small").await;
    let job = app
        .post_json(
            "/v1/jobs",
            &t.admin,
            &json!({"kind": "remove", "groups": [small], "remove_licenses": [ENTERPRISEPACK_SKU_ID]}),
        )
        .await;
    let job_id = job["id"].as_str().unwrap();
    let cancelled = app
        .post_json(
            &format!("/v1/jobs/{job_id}/cancel"),
            &t.operator,
            &json!({}),
        )
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    // The queue loses every message (the job's and the delivery's).
    match &app.queue {
        licensor_core::queue::Queue::Sqlite { pool, .. } => {
            assert!(app.queue.depth().await.unwrap() >= 2);
            sea_orm::sqlx::query("DELETE FROM Jobs")
                .execute(pool)
                .await
                .unwrap();
        }
        licensor_core::queue::Queue::Redis { .. } => {
            let ns = app.data.redis.as_ref().unwrap();
            // apalis-redis holds pushed tasks in its scheduled set and their data hash.
            let keys = ns.keys();
            assert!(keys.len() >= 2, "{keys:?}");
            let client = redis::Client::open(ns.url.as_str()).unwrap();
            let mut conn = client.get_connection().unwrap();
            let _: () = redis::cmd("DEL").arg(keys).query(&mut conn).unwrap();
        }
        licensor_core::queue::Queue::Local(_) => unreachable!("a test app's queue is shared"),
    }
    assert_eq!(app.queue.depth().await, Some(0));
    if let Some(ns) = &app.data.redis {
        assert_eq!(ns.keys(), Vec::<String>::new());
    }
    let pending = app
        .get_json(&format!("/v1/webhooks/{hook}/deliveries"), &t.admin)
        .await;
    assert_eq!(pending["data"][0]["status"], "pending", "{pending}");
    assert_eq!(pending["data"][0]["attempts"], 0);
    // Once it is overdue by jobs.stall_secs, a worker that starts queues it again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let worker = licensor::Application::build(app.data.settings(extra), Roles::WORKER)
        .await
        .expect("worker starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = app
            .get_json(&format!("/v1/webhooks/{hook}/deliveries"), &t.admin)
            .await;
        if log["data"][0]["status"] == "delivered" {
            assert_eq!(log["data"][0]["attempts"], 1, "{log}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not delivered: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.got("lost");
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].valid);
    assert_eq!(got[0].body["type"], "job.cancelled");
    assert_eq!(got[0].body["data"]["job"]["id"], job_id);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("worker stops")
        .unwrap()
        .unwrap();
    receiver_task.abort();
    app.stop().await;
    emulator.shutdown().await;
}
on_both_backends!(lost_delivery_message_is_reconciled);
