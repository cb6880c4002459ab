//! Group license jobs against the directory emulator: a running licensor whose tenant's directory
//! is a seeded emulator ([`Setup`], [`setup`], [`setup_with`], the default [`scenario`]), and
//! the helpers the job tests share — waiting for a job's preview, pause or expiry sweep, reading
//! its members, and what the emulator holds.

use std::time::Duration;

use graph_emulator::{EmulatorConfig, EmulatorHandle, GroupSpec, Scenario, SkuSpec};
use licensor::Roles;
use licensor_core::entities::job_item;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use super::{Backend, TestApp};

/// 1,200 users, 3% without usage location. `Staff` (the first 1,000 users), `Sales` (250 drawn
/// from all users, so it shares members with Staff), `E5 Pilot` (40 users holding SPE_E5
/// through the group). SPE_E5 has 700 units, so an assign to Staff runs out part-way.
pub fn scenario() -> Scenario {
    let sku = sku_of;
    Scenario {
        seed: 4242,
        users: 1_200,
        users_without_usage_location: 0.03,
        usage_location: "SE".into(),
        groups: vec![
            GroupSpec {
                leading_users: true,
                ..GroupSpec::new("Staff", 1_000)
            },
            GroupSpec::new("Sales", 250),
            GroupSpec {
                licenses: vec!["SPE_E5".into()],
                ..GroupSpec::new("E5 Pilot", 40)
            },
        ],
        skus: vec![
            sku("ENTERPRISEPACK", 5_000),
            sku("SPE_E5", 700),
            sku("EXCHANGESTANDARD", 0),
        ],
        ..Scenario::demo()
    }
}

pub struct Setup {
    pub app: TestApp,
    /// The tenant `contoso`, connected to [`Setup::emulator`].
    pub tenant_id: uuid::Uuid,
    pub emulator: EmulatorHandle,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
    pub http: reqwest::Client,
}

pub async fn setup(backend: Backend, extra: &str) -> Option<Setup> {
    setup_with(backend, extra, scenario()).await
}

pub async fn setup_with(backend: Backend, extra: &str, scenario: Scenario) -> Option<Setup> {
    let emulator = graph_emulator::spawn(EmulatorConfig {
        scenario: Some(scenario),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let app = TestApp::start_with(backend, Roles::ALL, extra).await?;
    let tenant = app.tenant("contoso").await;
    app.connect_directory(tenant.id, &emulator).await;
    Some(Setup {
        tenant_id: tenant.id,
        emulator,
        admin: tenant.admin,
        operator: tenant.operator,
        viewer: tenant.viewer,
        http: app.http.clone(),
        app,
    })
}

impl Setup {
    /// The tenant's id and tokens, as the browser scripts take them.
    pub fn tenant(&self) -> super::TestTenant {
        super::TestTenant {
            id: self.tenant_id,
            admin: self.admin.clone(),
            operator: self.operator.clone(),
            viewer: self.viewer.clone(),
        }
    }

    pub async fn submit(&self, body: Value) -> Value {
        let resp = self
            .app
            .post("/v1/jobs", &self.admin)
            .json(&body)
            .send()
            .await
            .expect("submit");
        assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let job: Value = resp.json().await.unwrap();
        assert_eq!(
            location,
            format!("/v1/jobs/{}", job["id"].as_str().unwrap())
        );
        assert_eq!(job["status"], "queued");
        job
    }

    /// Submit a job, wait for its end and check every item's outcome against the directory.
    pub async fn run(&self, body: Value) -> Value {
        let job = self.submit(body).await;
        self.wait(job["id"].as_str().unwrap()).await
    }

    /// Wait for a job's end and check every item's outcome against the directory.
    pub async fn wait(&self, id: &str) -> Value {
        let job = self.app.wait_for_job(&self.admin, id, 120).await;
        self.truth(id).await;
        job
    }

    /// Every item's outcome against the emulator's state of its member.
    pub async fn truth(&self, id: &str) -> usize {
        self.app
            .assert_outcomes_true(&self.viewer, id, &self.emulator.base_url())
            .await
    }

    /// Change a user's direct licenses in the directory, as another administrator would.
    pub async fn change_licenses(&self, user_id: &str, add: &[&str], remove: &[&str]) {
        let add: Vec<Value> = add
            .iter()
            .map(|s| json!({"skuId": s, "disabledPlans": []}))
            .collect();
        let resp = self
            .http
            .post(format!(
                "{}/_emulator/users/{user_id}/licenses",
                self.emulator.base_url()
            ))
            .json(&json!({"addLicenses": add, "removeLicenses": remove}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "{:?}", resp.text().await);
    }

    pub async fn faults(&self, faults: Value) {
        let resp = self
            .http
            .put(format!("{}/_emulator/faults", self.emulator.base_url()))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }

    /// The emulator's first `n` users, in directory order.
    pub async fn first_users(&self, n: usize) -> Value {
        self.http
            .get(format!(
                "{}/_emulator/users?offset=0&limit={n}",
                self.emulator.base_url()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Cancel job `id` as the operator: asserts 200 and returns the job as the cancel answered.
    pub async fn cancel(&self, id: &str) -> Value {
        let resp = self
            .app
            .post(&format!("/v1/jobs/{id}/cancel"), &self.operator)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.unwrap()
    }

    pub async fn job(&self, id: &str) -> Value {
        self.app
            .get_json(&format!("/v1/jobs/{id}"), &self.viewer)
            .await
    }

    /// The emulator's view of a user.
    pub async fn user(&self, id: &str) -> Value {
        self.emulator_json(&format!("users/{id}")).await
    }

    /// `GET /_emulator/{path}` as JSON.
    pub async fn emulator_json(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/_emulator/{path}", self.emulator.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn emulator_patch(&self, path: &str, body: Value) {
        let resp = self
            .http
            .patch(format!("{}/_emulator/{path}", self.emulator.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "{path}");
    }

    pub async fn stats(&self) -> Value {
        self.emulator_json("stats").await
    }

    /// Delete user `id` in the emulator, as an administrator would behind licensor's back.
    pub async fn delete_user(&self, id: &str) {
        let resp = self
            .http
            .delete(format!("{}/_emulator/users/{id}", self.emulator.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "delete {id}");
    }

    pub async fn finish(self) {
        self.app.stop().await;
        self.emulator.shutdown().await;
    }
}

/// Whether the emulator's user holds `sku` directly / through a group.
pub fn holds(user: &Value, sku: &str) -> (bool, bool) {
    let states = user["licenseAssignmentStates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let direct = states
        .iter()
        .any(|s| s["skuId"] == sku && s["assignedByGroup"].is_null());
    let inherited = states
        .iter()
        .any(|s| s["skuId"] == sku && !s["assignedByGroup"].is_null());
    (direct, inherited)
}

/// The code of an item's error (`""` without one).
pub fn code(item: &Value) -> &str {
    item["error"]["code"].as_str().unwrap_or_default()
}

/// Move every due time of a job's members to just now, as if its time were up.
pub async fn make_due(s: &Setup, job_id: &str) {
    let id: uuid::Uuid = job_id.parse().unwrap();
    job_item::Entity::update_many()
        .col_expr(
            job_item::Column::DueAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(job_item::Column::JobId.eq(id))
        .filter(job_item::Column::DueAt.is_not_null())
        .exec(&s.app.db)
        .await
        .unwrap();
}

/// A job's members, straight from the database.
pub async fn item_rows(s: &Setup, job_id: &str) -> Vec<job_item::Model> {
    let id: uuid::Uuid = job_id.parse().unwrap();
    job_item::Entity::find()
        .filter(job_item::Column::JobId.eq(id))
        .all(&s.app.db)
        .await
        .unwrap()
}

/// Wait until the expiry sweep has dealt with a job's members that came due: none is due any
/// more (the sweep runs every second).
pub async fn wait_swept(s: &Setup, job_id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let now = chrono::Utc::now();
    loop {
        let due = item_rows(s, job_id)
            .await
            .into_iter()
            .filter(|i| i.due_at.is_some_and(|d| d <= now))
            .count();
        if due == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{due} members still due"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The removal jobs created for the temporary assign `parent`.
pub async fn removals_of(s: &Setup, parent: &str) -> Vec<Value> {
    list_jobs(s, "kind=remove")
        .await
        .into_iter()
        .filter(|r| r["parent_job_id"] == parent)
        .collect()
}

/// The first page of jobs matching `query`, as the viewer sees them.
pub async fn list_jobs(s: &Setup, query: &str) -> Vec<Value> {
    let page = s
        .app
        .get_json(&format!("/v1/jobs?{query}"), &s.viewer)
        .await;
    page["data"].as_array().cloned().unwrap_or_default()
}

/// Wait until no member of the job is pending; the job as it is then.
pub async fn settled(s: &Setup, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let j = s.job(id).await;
        if j["progress"]["pending"] == 0 {
            return j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "members left pending: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The demo scenario's SKU `part` with `enabled` units.
pub fn sku_of(part: &str, enabled: u32) -> SkuSpec {
    let mut s: SkuSpec = Scenario::demo()
        .skus
        .iter()
        .find(|s| s.sku_part_number == part)
        .cloned()
        .expect("demo SKU");
    s.enabled = enabled;
    s
}

/// Poll a preview until it has left `queued` and `running`.
pub async fn wait_previewed(s: &Setup, id: &str) -> Value {
    let job = s.app.wait_until_settled(&s.viewer, id, 120).await;
    assert_eq!(job["status"], "previewed", "{job}");
    job
}

/// The status and code an item's prediction says it will end with.
pub fn predicted(item: &Value) -> (&str, &str) {
    let p = &item["prediction"];
    let status = match p["outcome"].as_str() {
        Some("would_succeed") => "succeeded",
        Some("would_skip") => "skipped",
        Some("would_fail") => "failed",
        other => panic!("no prediction ({other:?}): {item}"),
    };
    (status, p["code"].as_str().unwrap_or_default())
}

/// After a launched preview ended: every member ended exactly as predicted.
pub async fn assert_as_predicted(s: &Setup, id: &str) -> usize {
    let items = s.app.all_items(&s.viewer, id).await;
    for item in &items {
        let (status, code) = predicted(item);
        assert_eq!(
            (
                item["status"].as_str().unwrap_or_default(),
                self::code(item)
            ),
            (status, code),
            "predicted {} but got {item}",
            item["prediction"]
        );
    }
    items.len()
}

/// Launch the preview `id` with `token`: the answer, whatever its status.
pub async fn launch(s: &Setup, id: &str, token: &str) -> reqwest::Response {
    s.app
        .post_empty(&format!("/v1/jobs/{id}/launch"), token)
        .await
}

/// Poll a job until it is `paused` (its canary failed too often); panics if it ends otherwise.
pub async fn wait_paused(s: &Setup, id: &str) -> Value {
    let job = s.app.wait_until_settled(&s.viewer, id, 120).await;
    assert_eq!(
        job["status"], "paused",
        "the job ended without pausing: {job}"
    );
    job
}

/// License assignment calls so far (every answer counted, inside `$batch` too): one per member
/// written (a member without usage location also gets a user update before it).
pub fn assign_calls(stats: &Value) -> u64 {
    stats["requests"]
        .as_object()
        .map(|routes| {
            routes
                .iter()
                .filter(|(route, _)| route.ends_with("/assignLicense"))
                .flat_map(|(_, by)| by.as_object().into_iter().flat_map(|m| m.values()))
                .map(|n| n.as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}
