//! Acting on everything a filter matches (`POST /v1/jobs/rerun`, `POST /v1/jobs/cancel` with a
//! `filter`), on the embedded default and on PostgreSQL + Redis: 30 failed jobs (a group the
//! directory does not have) among finished ones; the list's filters and count; a dry run; a
//! rerun by filter that acts on exactly the 30 and refuses the others with reasons; the bound;
//! a cancel by filter; validation; roles; Idempotency-Key; the audit entries.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Backend, TestApp, TestTenant, expect_problem};
use graph_emulator::{EmulatorConfig, EmulatorHandle, GroupSpec, SPE_E5_SKU_ID, Scenario};
use licensor::Roles;
use serde_json::{Value, json};

const FAILED: usize = 30;

fn scenario() -> Scenario {
    let base = Scenario::demo();
    let e5 = common::jobs::sku_of("SPE_E5", 1_000);
    Scenario {
        seed: 3131,
        users: 40,
        users_without_usage_location: 0.0,
        usage_location: "SE".into(),
        groups: vec![GroupSpec::new("Team", 5)],
        skus: vec![e5],
        ..base
    }
}

struct Setup {
    app: TestApp,
    emulator: EmulatorHandle,
    t: TestTenant,
}

impl Setup {
    async fn submit(&self, body: Value) -> String {
        let job = self.app.post_json("/v1/jobs", &self.t.admin, &body).await;
        job["id"].as_str().expect("job id").to_owned()
    }

    async fn wait(&self, id: &str) -> Value {
        self.app.wait_for_job(&self.t.viewer, id, 120).await
    }

    async fn job(&self, id: &str) -> Value {
        self.app
            .get_json(&format!("/v1/jobs/{id}"), &self.t.viewer)
            .await
    }

    async fn bulk(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.app
            .post(path, token)
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    async fn ok(&self, path: &str, token: &str, body: Value) -> Value {
        let resp = self.bulk(path, token, body).await;
        assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
        resp.json().await.unwrap()
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

    async fn audit(&self, action: &str) -> Vec<Value> {
        let page = self
            .app
            .get_json(
                &format!("/v1/audit?action={action}&limit=500"),
                &self.t.viewer,
            )
            .await;
        page["data"].as_array().cloned().unwrap_or_default()
    }

    async fn total(&self, query: &str) -> i64 {
        let page = self
            .app
            .get_json(
                &format!("/v1/jobs?{query}&count=true&limit=1"),
                &self.t.viewer,
            )
            .await;
        page["total"]
            .as_i64()
            .unwrap_or_else(|| panic!("a total: {page}"))
    }
}

fn ids(list: &Value) -> HashSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|v| v.as_str().expect("an id").to_owned())
        .collect()
}

fn rejected(outcome: &Value) -> Vec<(String, String)> {
    outcome["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["detail"].as_str().unwrap().len() > 10, "{r}");
            (
                r["job_id"].as_str().unwrap().to_owned(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn bulk_rerun_and_cancel_by_filter(backend: Backend) {
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(scenario()),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let Some(app) = TestApp::start_with(backend, Roles::ALL, "[jobs]\nbulk_max_jobs = 32\n").await
    else {
        emulator.shutdown().await;
        return;
    };
    let t = app.tenant("contoso").await;
    app.connect_directory(t.id, &emulator).await;
    let s = Setup { app, emulator, t };
    let team = s.app.group_id(&s.t.admin, "Team").await;
    let e5 = json!([{"sku_id": SPE_E5_SKU_ID}]);

    // Three finished jobs: assign, remove, assign.
    let mut finished_assign = HashSet::new();
    for body in [
        json!({"kind": "assign", "groups": [team], "add_licenses": e5}),
        json!({"kind": "remove", "groups": [team], "remove_licenses": [SPE_E5_SKU_ID]}),
        json!({"kind": "assign", "groups": [team], "add_licenses": e5}),
    ] {
        let kind = body["kind"].clone();
        let id = s.submit(body).await;
        let job = s.wait(&id).await;
        assert_eq!(job["status"], "finished", "{job}");
        s.app
            .assert_outcomes_true(&s.t.viewer, &id, &s.emulator.base_url())
            .await;
        if kind == "assign" {
            finished_assign.insert(id);
        }
    }
    // Thirty failed ones: a group the directory does not have.
    let ghost = uuid::Uuid::new_v4().to_string();
    let mut failed = HashSet::new();
    for _ in 0..FAILED {
        failed.insert(
            s.submit(json!({"kind": "assign", "groups": [ghost], "add_licenses": e5}))
                .await,
        );
    }
    for id in &failed {
        let job = s.wait(id).await;
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["error"]["code"], "group_not_found", "{job}");
    }

    // The list's filters and its count.
    assert_eq!(s.total("status=failed").await, FAILED as i64);
    assert_eq!(s.total("kind=assign").await, FAILED as i64 + 2);
    assert_eq!(s.total(&format!("group={ghost}")).await, FAILED as i64);
    assert_eq!(s.total(&format!("group={team}")).await, 3);
    let all = s.app.get_json("/v1/jobs?limit=500", &s.t.viewer).await;
    let newest = all["data"][0]["id"].as_str().unwrap().to_owned();
    let created = all["data"][0]["created_at"].as_str().unwrap().to_owned();
    let by_prefix = s
        .app
        .get_json(
            &format!("/v1/jobs?id_prefix={}&limit=500", &newest[..8]),
            &s.t.viewer,
        )
        .await;
    let found = by_prefix["data"].as_array().unwrap();
    assert!(
        found.iter().any(|j| j["id"] == newest.as_str()),
        "{by_prefix}"
    );
    assert!(
        found
            .iter()
            .all(|j| j["id"].as_str().unwrap().starts_with(&newest[..8])),
        "{by_prefix}"
    );
    let one = s
        .app
        .get_json(
            &format!("/v1/jobs?id_prefix={}", newest.replace('-', "")),
            &s.t.viewer,
        )
        .await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1, "{one}");
    let created_q = created.replace('+', "%2B");
    assert_eq!(s.total(&format!("created_after={created_q}")).await, 1);
    assert_eq!(
        s.total(&format!("created_before={created_q}")).await,
        FAILED as i64 + 2
    );
    for bad in [
        "id_prefix=xyz",
        "id_prefix=12",
        "group=Team",
        "created_before=yesterday",
    ] {
        let resp = s
            .app
            .get(&format!("/v1/jobs?{bad}"), &s.t.viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            400,
            "{bad}: {:?}",
            resp.text().await
        );
    }

    // Bad requests change nothing.
    let cases = [
        (json!({}), "ids_or_filter"),
        (
            json!({"job_ids": [newest], "filter": {"status": ["failed"]}}),
            "ids_or_filter",
        ),
        (json!({"filter": {}}), "empty_filter"),
        (
            json!({"filter": {"status": ["failed"], "created_before": "2026-01-01T00:00:00Z", "created_after": "2026-02-01T00:00:00Z"}}),
            "invalid_filter",
        ),
        (json!({"filter": {"status": ["broken"]}}), "invalid_body"),
        (json!({"filter": {"state": ["failed"]}}), "invalid_body"),
        (json!({"job_ids": []}), "invalid_job_ids"),
        (
            json!({"job_ids": vec![newest.clone(); 501]}),
            "invalid_job_ids",
        ),
        // The bound: 33 jobs match, one call acts on at most 32.
        (
            json!({"filter": {"status": ["failed", "finished"]}}),
            "too_many_jobs",
        ),
    ];
    for path in ["/v1/jobs/rerun", "/v1/jobs/cancel"] {
        for (body, code) in &cases {
            let resp = s.bulk(path, &s.t.operator, body.clone()).await;
            let problem = expect_problem(resp, 422, code).await;
            if *code == "too_many_jobs" {
                assert_eq!(problem["matched"], 33, "{problem}");
                assert_eq!(problem["max_jobs"], 32, "{problem}");
            }
        }
        // Viewers may not act.
        let resp = s
            .bulk(path, &s.t.viewer, json!({"filter": {"status": ["failed"]}}))
            .await;
        expect_problem(resp, 403, "forbidden").await;
    }
    assert_eq!(s.total("status=failed").await, FAILED as i64);
    assert!(s.audit("job.bulk_rerun").await.is_empty());
    assert!(s.audit("job.bulk_cancel").await.is_empty());

    // A dry run counts and changes nothing (an admin may act too).
    let dry = s
        .ok(
            "/v1/jobs/rerun",
            &s.t.admin,
            json!({"filter": {"status": ["failed"]}, "dry_run": true}),
        )
        .await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["matched"], FAILED);
    assert_eq!(dry["acted_on"], FAILED);
    assert_eq!(ids(&dry["acted_on_ids"]), failed);
    assert_eq!(s.total("status=failed").await, FAILED as i64);
    assert!(s.audit("job.bulk_rerun").await.is_empty());
    // A dry run of jobs the action would refuse says that nothing would be done: acted_on is
    // what the action would act on, the rest refused with the reason it would give.
    let finished_one = finished_assign.iter().next().unwrap().clone();
    let failed_one = failed.iter().next().unwrap().clone();
    for (path, id, code) in [
        ("/v1/jobs/rerun", &finished_one, "not_rerunnable"),
        ("/v1/jobs/cancel", &failed_one, "not_cancellable"),
    ] {
        let dry = s
            .ok(
                path,
                &s.t.operator,
                json!({"job_ids": [id], "dry_run": true}),
            )
            .await;
        assert_eq!(dry["dry_run"], true, "{dry}");
        assert_eq!(dry["matched"], 1, "{dry}");
        assert_eq!(dry["acted_on"], 0, "{path}: {dry}");
        assert_eq!(dry["acted_on_ids"], json!([]), "{dry}");
        assert_eq!(dry["refused"], 1, "{dry}");
        assert_eq!(rejected(&dry), [(id.clone(), code.to_owned())], "{dry}");
    }
    assert_eq!(s.total("status=failed").await, FAILED as i64);

    // Rerun by filter: every assign job matches; exactly the 30 failed ones are rerun, the two
    // finished ones are refused with the reason. A repeat with the same key replays the answer.
    let started = Instant::now();
    let send = || {
        s.app
            .post("/v1/jobs/rerun", &s.t.operator)
            .header("Idempotency-Key", "bulk-rerun-1")
            .json(&json!({"filter": {"kind": ["assign"]}}))
            .send()
    };
    let resp = send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let outcome: Value = resp.json().await.unwrap();
    println!(
        "rerun by filter of {FAILED} jobs answered in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(outcome["dry_run"], false);
    assert_eq!(outcome["matched"], FAILED + 2, "{outcome}");
    assert_eq!(outcome["acted_on"], FAILED, "{outcome}");
    assert_eq!(ids(&outcome["acted_on_ids"]), failed);
    assert_eq!(outcome["refused"], 2);
    let refused = rejected(&outcome);
    assert_eq!(
        refused
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<HashSet<_>>(),
        finished_assign
    );
    assert!(
        refused.iter().all(|(_, code)| code == "not_rerunnable"),
        "{refused:?}"
    );
    let replay = send().await.unwrap();
    assert_eq!(replay.status().as_u16(), 200);
    assert!(replay.headers().contains_key("idempotent-replayed"));
    assert_eq!(replay.json::<Value>().await.unwrap(), outcome);
    for id in &failed {
        let job = s.wait(id).await;
        assert_eq!(job["runs"], 2, "rerun once: {job}");
        assert_eq!(job["status"], "failed", "{job}");
    }
    for id in &finished_assign {
        let job = s.job(id).await;
        assert_eq!(
            (&job["runs"], &job["status"]),
            (&json!(1), &json!("finished")),
            "{job}"
        );
    }
    // One action-log entry for the call (not for the replay), plus one per job rerun.
    let whoami = s.app.get_json("/v1/tenant", &s.t.operator).await;
    let entries = s.audit("job.bulk_rerun").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry["actor_token_id"], whoami["token_id"], "{entry}");
    assert_eq!(
        entry["before"]["filter"],
        json!({"kind": ["assign"]}),
        "{entry}"
    );
    assert_eq!(entry["after"]["acted_on"], FAILED, "{entry}");
    assert_eq!(ids(&entry["after"]["acted_on_ids"]), failed);
    assert_eq!(entry["after"]["refused"], 2, "{entry}");
    assert_eq!(entry["after"]["refused_jobs"].as_array().unwrap().len(), 2);
    let per_job = s.audit("job.rerun").await;
    assert_eq!(per_job.len(), FAILED, "one entry per job rerun");

    // Cancel by filter: with a slow directory the rerun jobs are still waiting or in progress;
    // each of those is cancelled, the others are refused as not cancellable.
    s.faults(json!({"latency_ms": 1500})).await;
    let again = s
        .ok(
            "/v1/jobs/rerun",
            &s.t.operator,
            json!({"filter": {"status": ["failed"]}}),
        )
        .await;
    assert_eq!(again["acted_on"], FAILED, "{again}");
    let cancel = s
        .ok(
            "/v1/jobs/cancel",
            &s.t.operator,
            json!({"filter": {"kind": ["assign"]}}),
        )
        .await;
    let acted = ids(&cancel["acted_on_ids"]);
    let refused = rejected(&cancel);
    assert_eq!(cancel["matched"], FAILED + 2, "{cancel}");
    assert!(!acted.is_empty(), "{cancel}");
    assert_eq!(acted.len() + refused.len(), FAILED + 2, "{cancel}");
    assert!(acted.is_subset(&failed), "{cancel}");
    assert!(
        refused.iter().all(|(_, code)| code == "not_cancellable"),
        "{refused:?}"
    );
    let refused_ids: HashSet<String> = refused.into_iter().map(|(id, _)| id).collect();
    assert!(finished_assign.is_subset(&refused_ids));
    for id in &acted {
        assert_eq!(s.job(id).await["status"], "cancelled", "{id}");
    }
    let entries = s.audit("job.bulk_cancel").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["after"]["acted_on"], acted.len());
    // By ids: a finished job is refused, an unknown one is not found.
    let unknown = uuid::Uuid::now_v7().to_string();
    let finished_one = finished_assign.iter().next().unwrap().clone();
    let by_ids = s
        .ok(
            "/v1/jobs/cancel",
            &s.t.operator,
            json!({"job_ids": [finished_one, unknown]}),
        )
        .await;
    assert_eq!(by_ids["acted_on"], 0);
    let mut codes: Vec<String> = rejected(&by_ids).into_iter().map(|(_, c)| c).collect();
    codes.sort();
    assert_eq!(codes, ["not_cancellable", "not_found"]);

    // No job is left behind.
    s.faults(json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &failed {
        let job = s.wait(id).await;
        assert!(
            matches!(job["status"].as_str(), Some("failed" | "cancelled")),
            "{job}"
        );
        assert!(Instant::now() < deadline);
    }
    s.app.stop().await;
    s.emulator.shutdown().await;
}
on_both_backends!(bulk_rerun_and_cancel_by_filter);
