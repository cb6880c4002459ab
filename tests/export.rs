//! Export Results end to end, on the embedded default and on PostgreSQL + Redis: every member of
//! the selected groups (nested ones with `transitive`) in CSV, JSON and XLSX, read back with
//! Python's csv/json and openpyxl and checked row by row against the emulator's directory;
//! delivery to the emulator's drive (one request, and an upload session in chunks) and to a
//! local S3-compatible server (moto's server mode), read back equal to the download; a drive
//! that answers 403 and a bucket that does not exist fail the job with their codes, and a
//! rerun after fixing delivers.
//!
//! Needs `python3` with `openpyxl`, and `moto_server` (`pip install "moto[server]"`) for S3;
//! outside CI a missing one skips with a notice, with CI=true it fails.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::time::Duration;

use common::{Backend, Processes};
use graph_emulator::{ENTERPRISEPACK_SKU_ID, Scenario};
use serde_json::{Value, json};

use licensor_core::jobs::export::COLUMNS;

/// Small drive uploads: files above 64 KiB go through an upload session in 320 KiB chunks.
const DRIVE_LIMITS: &str =
    "[directory]\ndrive_simple_upload_max_bytes = 65536\ndrive_upload_chunk_bytes = 327680\n";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Python with openpyxl, or `None` (outside CI) when it is missing.
fn python_reader() -> Option<()> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import csv, json, openpyxl"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(());
    }
    assert!(
        !in_ci(),
        "python3 with openpyxl is needed: pip install openpyxl"
    );
    eprintln!("NOTICE: skipping the export readers check: pip install openpyxl");
    None
}

/// Every row of an export file as read by Python, in [`COLUMNS`] order, cells as text.
const READ_EXPORT: &str = r#"
import csv, json, sys
path, fmt, columns = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
if fmt == "csv":
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == columns, reader.fieldnames
        rows = list(reader)
elif fmt == "json":
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
else:
    import openpyxl
    ws = openpyxl.load_workbook(path, read_only=True).active
    it = ws.iter_rows(values_only=True)
    head = list(next(it))
    assert head == columns, head
    rows = [dict(zip(head, r)) for r in it]
def cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
print(json.dumps([[cell(r.get(c)) for c in columns] for r in rows]))
"#;

fn read_export(path: &std::path::Path, format: &str) -> Vec<Vec<String>> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            READ_EXPORT,
            path.to_str().unwrap(),
            format,
            &COLUMNS.join(","),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The job tests' set-up on the demo scenario, with the export's own helpers.
struct Setup(common::jobs::Setup);

impl std::ops::Deref for Setup {
    type Target = common::jobs::Setup;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

async fn setup(backend: Backend) -> Option<Setup> {
    common::jobs::setup_with(backend, DRIVE_LIMITS, Scenario::demo())
        .await
        .map(Setup)
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

    async fn run(&self, body: Value) -> Value {
        let id = self.submit(body).await;
        self.app.wait_for_job(&self.admin, &id, 180).await
    }

    async fn rerun(&self, id: &str) -> Value {
        let resp = self
            .app
            .post(&format!("/v1/jobs/{id}/rerun"), &self.operator)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
        self.app.wait_for_job(&self.admin, id, 180).await
    }

    async fn download(&self, id: &str) -> Vec<u8> {
        let resp = self
            .app
            .get(&format!("/v1/jobs/{id}/export"), &self.viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.bytes().await.unwrap().to_vec()
    }

    fn emu(&self, path: &str) -> String {
        format!("{}{path}", self.emulator.base_url())
    }

    async fn emu_json(&self, path: &str) -> Value {
        let resp = self.http.get(self.emu(path)).send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    async fn emu_send(&self, method: reqwest::Method, path: &str, body: Value) {
        let resp = self
            .http
            .request(method, self.emu(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }

    /// The user members of a group straight from Graph (with the tenant's app credentials).
    async fn graph_members(&self, token: &str, group: &str, cast: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(format!(
            "{}/groups/{group}/members/{cast}?$top=999",
            self.emulator.graph_url()
        ));
        while let Some(url) = next.take() {
            let page: Value = self
                .http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            out.extend(page["value"].as_array().cloned().unwrap_or_default());
            next = page["@odata.nextLink"].as_str().map(str::to_owned);
        }
        out
    }

    async fn graph_token(&self) -> String {
        let v: Value = self
            .http
            .post(self.emulator.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.emulator.client_id()),
                ("client_secret", &self.emulator.client_secret()),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    async fn finish(self) {
        self.0.finish().await;
    }
}

/// The rows the directory says an export of `groups` (with nested groups) must have, without
/// `exported_at`, as a multiset.
async fn expected_rows(s: &Setup, groups: &[&str]) -> BTreeMap<Vec<String>, usize> {
    let summary = s.emu_json("/_emulator/scenario").await;
    let group_names: HashMap<String, String> = summary["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["id"].as_str().unwrap().to_owned(),
                g["displayName"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut parts = HashMap::new();
    let mut plans = HashMap::new();
    for sku in summary["skus"].as_array().unwrap() {
        parts.insert(
            sku["skuId"].as_str().unwrap().to_owned(),
            sku["skuPartNumber"].as_str().unwrap().to_owned(),
        );
        for p in sku["servicePlans"].as_array().unwrap() {
            plans.insert(
                p["servicePlanId"].as_str().unwrap().to_owned(),
                p["servicePlanName"].as_str().unwrap().to_owned(),
            );
        }
    }
    let token = s.graph_token().await;
    // Member → (selected group, the nested group it was reached through); the first path
    // found breadth-first wins, as a member is listed once.
    let mut members: Vec<(String, String, Option<String>)> = Vec::new();
    let mut seen_users = HashSet::new();
    for &group in groups {
        let mut queue = std::collections::VecDeque::from([(group.to_owned(), None)]);
        let mut seen_groups = HashSet::from([group.to_owned()]);
        while let Some((g, through)) = queue.pop_front() {
            for u in s.graph_members(&token, &g, "microsoft.graph.user").await {
                let id = u["id"].as_str().unwrap().to_owned();
                if seen_users.insert(id.clone()) {
                    members.push((id, group.to_owned(), through.clone()));
                }
            }
            for n in s.graph_members(&token, &g, "microsoft.graph.group").await {
                let id = n["id"].as_str().unwrap().to_owned();
                if seen_groups.insert(id.clone()) {
                    queue.push_back((id.clone(), Some(id)));
                }
            }
        }
    }
    let mut rows = BTreeMap::new();
    for (user_id, group, through) in members {
        let u = s.emu_json(&format!("/_emulator/users/{user_id}")).await;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let base = vec![
            group_names[&group].clone(),
            group.clone(),
            user_id.clone(),
            text(&u["userPrincipalName"]),
            text(&u["displayName"]),
            u["accountEnabled"].as_bool().unwrap().to_string(),
            text(&u["usageLocation"]),
        ];
        let (through_name, through_id) = match &through {
            Some(id) => (group_names[id].clone(), id.clone()),
            None => (String::new(), String::new()),
        };
        let licenses = u["assignedLicenses"].as_array().unwrap();
        let mut push = |cells: [String; 5]| {
            let mut row = base.clone();
            row.extend(cells);
            row.push(through_name.clone());
            row.push(through_id.clone());
            *rows.entry(row).or_insert(0) += 1;
        };
        if licenses.is_empty() {
            // A member holding none: said in `assigned_by`, the other license cells empty.
            push([
                String::new(),
                String::new(),
                "none".to_owned(),
                String::new(),
                String::new(),
            ]);
        }
        for l in licenses {
            let sku = text(&l["skuId"]);
            let states: Vec<&Value> = u["licenseAssignmentStates"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|st| st["skuId"] == sku.as_str())
                .collect();
            let direct = states.iter().any(|st| st["assignedByGroup"].is_null());
            let by_groups: Vec<String> = states
                .iter()
                .filter_map(|st| st["assignedByGroup"].as_str())
                .map(|g| group_names[g].clone())
                .collect();
            let by = match (direct, by_groups.is_empty()) {
                (true, true) => "direct",
                (false, _) => "group",
                (true, false) => "both",
            };
            let mut disabled: Vec<String> = l["disabledPlans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| plans[p.as_str().unwrap()].clone())
                .collect();
            disabled.sort();
            push([
                parts[&sku].clone(),
                sku.clone(),
                by.to_owned(),
                by_groups.join("; "),
                disabled.join("; "),
            ]);
        }
    }
    rows
}

/// The rows of a file without `exported_at` (checked to be one RFC 3339 time for all).
fn without_time(rows: Vec<Vec<String>>, format: &str) -> BTreeMap<Vec<String>, usize> {
    let times: HashSet<&String> = rows.iter().map(|r| &r[COLUMNS.len() - 1]).collect();
    assert_eq!(times.len(), 1, "{format}: one export time: {times:?}");
    let t = times.into_iter().next().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{t}");
    let mut out = BTreeMap::new();
    for mut r in rows {
        r.pop();
        *out.entry(r).or_insert(0) += 1;
    }
    out
}

async fn every_member_in_every_format(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    if python_reader().is_none() {
        s.finish().await;
        return;
    }
    let engineering = s.app.group_id(&s.admin, "Engineering").await;
    let platform = s.app.group_id(&s.admin, "Platform Team").await;
    let pilot = s.app.group_id(&s.admin, "Licensed Pilot").await;
    // Direct licenses with a plan switched off for the nested team, the pilot's ENTERPRISEPACK
    // through their group (one of them also directly), and two disabled accounts.
    let summary = s.emu_json("/_emulator/scenario").await;
    let plan = summary["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["skuId"] == ENTERPRISEPACK_SKU_ID)
        .unwrap()["servicePlans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["servicePlanName"] == "MCOSTANDARD")
        .unwrap()["servicePlanId"]
        .clone();
    let assign = s
        .run(json!({"kind": "assign", "groups": [platform], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID, "disabled_plans": [plan]}], "usage_location": "SE"}))
        .await;
    assert_eq!(assign["status"], "finished", "{assign}");
    let token = s.graph_token().await;
    // One pilot member also gets it directly, as an administrator would in the directory.
    let pilot_member = s
        .graph_members(&token, &pilot, "microsoft.graph.user")
        .await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = s
        .http
        .post(format!(
            "{}/users/{pilot_member}/assignLicense",
            s.emulator.graph_url()
        ))
        .bearer_auth(&token)
        .json(&json!({"addLicenses": [{"skuId": ENTERPRISEPACK_SKU_ID, "disabledPlans": [plan]}], "removeLicenses": []}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let some: Vec<String> = s
        .graph_members(&token, &engineering, "microsoft.graph.user")
        .await
        .iter()
        .take(2)
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &some {
        s.emu_send(
            reqwest::Method::PATCH,
            &format!("/_emulator/users/{id}"),
            json!({"accountEnabled": false}),
        )
        .await;
    }

    let expected = expected_rows(&s, &[&engineering, &pilot]).await;
    let members: usize = expected.keys().map(|r| &r[2]).collect::<HashSet<_>>().len();
    assert!(
        members > 1_200,
        "Engineering with its nested team: {members}"
    );
    let unlicensed = expected.keys().filter(|r| r[8].is_empty()).count();
    assert!(
        unlicensed > 1_000,
        "members without a license: {unlicensed}"
    );
    assert!(
        expected.keys().all(|r| r[8].is_empty() == (r[9] == "none")),
        "`assigned_by` is `none` exactly where no SKU is named"
    );
    for by in ["direct", "group", "both"] {
        assert!(expected.keys().any(|r| r[9] == by), "some held {by}");
    }
    assert!(expected.keys().any(|r| r[12] == "Platform Team"));
    assert!(expected.keys().any(|r| r[5] == "false"));
    assert!(expected.keys().any(|r| !r[11].is_empty()));

    let dir = tempfile::tempdir().unwrap();
    for format in ["csv", "json", "xlsx"] {
        let job = s
            .run(json!({"kind": "export", "groups": [engineering, pilot], "transitive": true, "export": {"format": format}}))
            .await;
        assert_eq!(job["status"], "finished", "{job}");
        assert_eq!(job["progress"]["total"].as_u64().unwrap() as usize, members);
        let id = job["id"].as_str().unwrap();
        let bytes = s.download(id).await;
        let export = &job["export"];
        assert_eq!(export["location"], "download", "{job}");
        assert_eq!(export["url"], format!("/v1/jobs/{id}/export"));
        assert_eq!(export["size"].as_u64().unwrap() as usize, bytes.len());
        let path = dir.path().join(format!("export.{format}"));
        std::fs::write(&path, &bytes).unwrap();
        let rows = read_export(&path, format);
        assert_eq!(export["rows"].as_u64().unwrap() as usize, rows.len());
        if format == "json" {
            // A member holding none in JSON: the word as a string, no SKU as null.
            let objects: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
            let bare = objects
                .iter()
                .find(|o| o["sku_id"].is_null())
                .expect("a member holding none");
            assert_eq!(bare["assigned_by"], "none", "{bare}");
            assert!(bare["sku_part_number"].is_null(), "{bare}");
            assert_eq!(
                bare.as_object().unwrap().keys().count(),
                COLUMNS.len(),
                "every column: {bare}"
            );
        }
        let got = without_time(rows, format);
        for (row, n) in &expected {
            assert_eq!(got.get(row), Some(n), "{format}: expected row {row:?}");
        }
        assert_eq!(got, expected, "{format}: no other rows");
    }
    // Only export jobs have an export file.
    let resp = s
        .app
        .get(
            &format!("/v1/jobs/{}/export", assign["id"].as_str().unwrap()),
            &s.viewer,
        )
        .send()
        .await
        .unwrap();
    common::expect_problem(resp, 409, "not_an_export").await;
    s.finish().await;
}
on_both_backends!(every_member_in_every_format);

/// moto's S3 server on a free loopback port, or `None` (outside CI) when it is not installed.
async fn moto() -> Option<(Processes, String)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                !in_ci(),
                "moto_server is needed (pip install \"moto[server]\"): {e}"
            );
            eprintln!(
                "NOTICE: moto_server is not installed (pip install \"moto[server]\"); skipped"
            );
            return None;
        }
    };
    let guard = Processes(vec![child]);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(&url).send().await.is_ok() {
            return Some((guard, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not start on {url}");
}

/// An object from the S3-compatible server, read with its own credentials.
async fn read_object(endpoint: &str, bucket: &str, key: &str) -> Vec<u8> {
    use object_store::ObjectStore;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    let path = object_store::path::Path::from(key);
    let got = store.get(&path).await.expect("the object is in the bucket");
    got.bytes().await.unwrap().to_vec()
}

async fn delivered_to_drive_and_bucket(backend: Backend) {
    let Some((_moto, s3)) = moto().await else {
        return;
    };
    // Names only go in the job; the values are read by the worker when it delivers.
    // SAFETY: set before anything in this test process reads the environment concurrently.
    unsafe {
        std::env::set_var("S3_EXPORT_TEST_KEY_ID", "testing");
        std::env::set_var("S3_EXPORT_TEST_SECRET", "testing");
    }
    let Some(s) = setup(backend).await else {
        return;
    };
    let engineering = s.app.group_id(&s.admin, "Engineering").await;
    let pilot = s.app.group_id(&s.admin, "Licensed Pilot").await;
    let drive = "b!reports-drive";
    s.emu_send(
        reqwest::Method::POST,
        "/_emulator/drives",
        json!({"id": drive, "name": "Shared Documents"}),
    )
    .await;
    let to_drive = |groups: Vec<&str>, format: &str| {
        json!({"kind": "export", "groups": groups, "transitive": true, "export": {"format": format,
            "location": {"type": "sharepoint", "drive_id": drive, "folder_path": "/Reports/"}}})
    };
    let drive_path = format!("/_emulator/drives/{}", drive.replace('!', "%21"));
    let uploaded = async |name: String| -> Vec<u8> {
        let resp = s
            .http
            .get(s.emu(&format!("{drive_path}/content?path=/Reports/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{name} is in the drive");
        resp.bytes().await.unwrap().to_vec()
    };

    // Larger than one chunk: an upload session.
    let job = s.run(to_drive(vec![&engineering], "json")).await;
    assert_eq!(job["status"], "finished", "{job}");
    let id = job["id"].as_str().unwrap();
    let export = &job["export"];
    let name = format!("job-{id}-export.json");
    assert_eq!(export["location"], "sharepoint");
    assert_eq!(export["key"], format!("/Reports/{name}"));
    assert!(
        export["url"].as_str().unwrap().starts_with("http"),
        "{export}"
    );
    assert!(export["size"].as_u64().unwrap() > 327_680, "{export}");
    assert!(export["chunks"].as_u64().unwrap() >= 2, "{export}");
    let download = s.download(id).await;
    assert_eq!(
        uploaded(name.clone()).await,
        download,
        "drive copy = download"
    );
    let files = s
        .emu_json(&format!(
            "/_emulator/drives/{}/files",
            drive.replace('!', "%21")
        ))
        .await;
    let f = files["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == format!("/Reports/{name}"))
        .unwrap();
    assert_eq!(f["upload"], "session", "{f}");
    assert!(f["chunks"].as_u64().unwrap() >= 2, "{f}");

    // A small file: one request.
    let job = s.run(to_drive(vec![&pilot], "csv")).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["export"]["chunks"], 0, "{job}");
    let id = job["id"].as_str().unwrap();
    assert_eq!(
        uploaded(format!("job-{id}-export.csv")).await,
        s.download(id).await
    );

    // No permission on the drive: 403 → export_location_denied; rerun after granting it.
    s.emu_send(
        reqwest::Method::PATCH,
        &drive_path,
        json!({"writable": false}),
    )
    .await;
    let job = s.run(to_drive(vec![&pilot], "xlsx")).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "export_location_denied", "{job}");
    assert!(job["export"].is_null(), "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    s.emu_send(
        reqwest::Method::PATCH,
        &drive_path,
        json!({"writable": true}),
    )
    .await;
    let job = s.rerun(&id).await;
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["runs"], 2);
    assert_eq!(
        uploaded(format!("job-{id}-export.xlsx")).await,
        s.download(&id).await
    );

    // An unknown drive: export_location_unreachable.
    let job = s
        .run(
            json!({"kind": "export", "groups": [pilot], "export": {"format": "csv",
            "location": {"type": "sharepoint", "drive_id": "no-such-drive"}}}),
        )
        .await;
    assert_eq!(job["error"]["code"], "export_location_unreachable", "{job}");
    let detail = job["error"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("SharePoint drive no-such-drive, folder /:"),
        "the error names the drive to fix: {job}"
    );

    // S3: a bucket that does not exist yet, then created, then a rerun.
    let to_s3 = json!({"kind": "export", "groups": [engineering], "transitive": true, "export": {"format": "xlsx",
        "location": {"type": "s3", "bucket": "licensor-exports", "prefix": "monthly/2026/", "endpoint": s3,
            "access_key_id_env": "S3_EXPORT_TEST_KEY_ID", "secret_access_key_env": "S3_EXPORT_TEST_SECRET"}}});
    assert!(
        !to_s3.to_string().contains("testing"),
        "no credentials in the job"
    );
    let job = s.run(to_s3).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "export_location_unreachable", "{job}");
    assert!(
        job["error"]["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("S3 bucket licensor-exports (prefix monthly/2026/):"),
        "the error names the bucket to fix: {job}"
    );
    let id = job["id"].as_str().unwrap().to_owned();
    let created = s
        .http
        .put(format!("{s3}/licensor-exports"))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let job = s.rerun(&id).await;
    assert_eq!(job["status"], "finished", "{job}");
    let key = format!("monthly/2026/job-{id}-export.xlsx");
    assert_eq!(job["export"]["key"], key.as_str(), "{job}");
    assert_eq!(job["export"]["bucket"], "licensor-exports");
    assert_eq!(job["export"]["url"], format!("s3://licensor-exports/{key}"));
    let object = read_object(&s3, "licensor-exports", &key).await;
    let download = s.download(&id).await;
    assert_eq!(object, download, "bucket copy = download");
    assert_eq!(
        job["export"]["size"].as_u64().unwrap() as usize,
        download.len()
    );

    // Credentials named but not set: export_location_denied.
    let job = s
        .run(json!({"kind": "export", "groups": [pilot], "export": {"format": "csv",
            "location": {"type": "s3", "bucket": "licensor-exports", "endpoint": s3,
                "access_key_id_env": "S3_EXPORT_TEST_UNSET", "secret_access_key_env": "S3_EXPORT_TEST_SECRET"}}}))
        .await;
    assert_eq!(job["error"]["code"], "export_location_denied", "{job}");
    s.finish().await;
}
on_both_backends!(delivered_to_drive_and_bucket);

/// Any CSV or XLSX file as read by Python: its header row, then its rows, cells as text.
const READ_TABLE: &str = r#"
import csv, json, sys
path, fmt = sys.argv[1], sys.argv[2]
if fmt == "csv":
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
else:
    import openpyxl
    ws = openpyxl.load_workbook(path, read_only=True).active
    rows = [["" if v is None else str(v) for v in r] for r in ws.iter_rows(values_only=True)]
print(json.dumps(rows))
"#;

fn read_table(path: &std::path::Path, format: &str) -> Vec<Vec<String>> {
    let out = std::process::Command::new("python3")
        .args(["-c", READ_TABLE, path.to_str().unwrap(), format])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A launched preview's report, in CSV and XLSX, has the `predicted` and `predicted_code`
/// columns, each member's prediction as the API gives it beside its outcome; a job that was no
/// preview has no such columns.
async fn a_previews_report_carries_the_predictions(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    if python_reader().is_none() {
        s.finish().await;
        return;
    }
    let sales = s.app.group_id(&s.admin, "Sales").await;
    // SPE_E5 (100 units) for Sales (250 members): some would fail.
    let id = s
        .submit(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": graph_emulator::SPE_E5_SKU_ID}], "preview": true}))
        .await;
    common::jobs::wait_previewed(&s, &id).await;
    let resp = s
        .app
        .post(&format!("/v1/jobs/{id}/launch"), &s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    let done = s.app.wait_for_job(&s.admin, &id, 180).await;
    assert_eq!(done["status"], "finished_with_exception", "{done}");
    s.app
        .assert_outcomes_true(&s.viewer, &id, &s.emulator.base_url())
        .await;
    let items = s.app.all_items(&s.viewer, &id).await;
    let by_user: HashMap<String, &Value> = items
        .iter()
        .map(|i| (i["user_id"].as_str().unwrap().to_owned(), i))
        .collect();
    assert!(
        items
            .iter()
            .any(|i| i["prediction"]["code"] == "count_violation"),
        "some would fail for the seats"
    );
    let plain = s
        .run(json!({"kind": "assign", "groups": [sales], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .await;
    let plain = plain["id"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    for format in ["csv", "xlsx"] {
        let report = |job: String| {
            let s = &s;
            async move {
                let resp = s
                    .app
                    .get(&format!("/v1/jobs/{job}/report?format={format}"), &s.viewer)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                resp.bytes().await.unwrap().to_vec()
            }
        };
        let path = dir.path().join(format!("report.{format}"));
        std::fs::write(&path, report(id.clone()).await).unwrap();
        let rows = read_table(&path, format);
        let head = &rows[0];
        let col = |name: &str| {
            head.iter()
                .position(|c| c == name)
                .unwrap_or_else(|| panic!("{format}: no {name} column in {head:?}"))
        };
        let (user, status, code, predicted, predicted_code) = (
            col("user_id"),
            col("status"),
            col("error_code"),
            col("predicted"),
            col("predicted_code"),
        );
        assert_eq!(rows.len() - 1, items.len(), "{format}: one row per member");
        for row in &rows[1..] {
            let item = by_user[&row[user]];
            assert_eq!(row[status], item["status"].as_str().unwrap(), "{format}");
            assert_eq!(
                row[code],
                item["error"]["code"].as_str().unwrap_or_default(),
                "{format}"
            );
            assert_eq!(
                row[predicted],
                item["prediction"]["outcome"].as_str().unwrap(),
                "{format}: {row:?}"
            );
            assert_eq!(
                row[predicted_code],
                item["prediction"]["code"].as_str().unwrap_or_default(),
                "{format}: {row:?}"
            );
        }
        std::fs::write(&path, report(plain.clone()).await).unwrap();
        let rows = read_table(&path, format);
        assert!(
            !rows[0].iter().any(|c| c.starts_with("predicted")),
            "{format}: {:?}",
            rows[0]
        );
    }
    s.finish().await;
}
on_both_backends!(a_previews_report_carries_the_predictions);

/// The report's change ledger columns say `none` for a member that held no direct license
/// before (an assign) or after (a remove) the job's write, in CSV, XLSX and JSON alike — not an
/// empty cell — and stay empty (JSON: `null`) for a member the job wrote nothing for; each
/// cell agrees with the job's change ledger (`/changes`).
async fn a_report_says_none_for_a_member_that_held_nothing(backend: Backend) {
    let Some(s) = setup(backend).await else {
        return;
    };
    if python_reader().is_none() {
        s.finish().await;
        return;
    }
    let platform = s.app.group_id(&s.admin, "Platform Team").await;
    let assign = s
        .run(json!({"kind": "assign", "groups": [platform], "add_licenses": [{"sku_id": ENTERPRISEPACK_SKU_ID}], "usage_location": "SE"}))
        .await;
    assert_eq!(assign["status"], "finished", "{assign}");
    let remove = s
        .run(json!({"kind": "remove", "groups": [platform], "remove_licenses": [ENTERPRISEPACK_SKU_ID]}))
        .await;
    assert_eq!(remove["status"], "finished", "{remove}");
    // Removed again: nobody holds it any more, so the job writes for nobody.
    let again = s
        .run(json!({"kind": "remove", "groups": [platform], "remove_licenses": [ENTERPRISEPACK_SKU_ID]}))
        .await;
    assert_eq!(again["status"], "finished", "{again}");

    // A ledger's license list as the report writes it.
    let cell = |list: &Value| -> String {
        let list = list.as_array().unwrap();
        if list.is_empty() {
            return "none".to_owned();
        }
        list.iter()
            .map(|l| {
                let sku = l["sku_id"].as_str().unwrap().to_owned();
                let plans: Vec<&str> = l["disabled_plans"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap())
                    .collect();
                if plans.is_empty() {
                    sku
                } else {
                    format!("{sku}[without {}]", plans.join(";"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut nones = (0, 0);
    let mut unrecorded = 0;
    let dir = tempfile::tempdir().unwrap();
    for job in [&assign, &remove, &again] {
        let id = job["id"].as_str().unwrap();
        // user id → (licenses_before, licenses_after) as the ledger has them.
        let ledger: HashMap<String, (String, String)> = s
            .app
            .all_changes(&s.viewer, id)
            .await
            .iter()
            .map(|c| {
                (
                    c["user_id"].as_str().unwrap().to_owned(),
                    (cell(&c["before"]), cell(&c["after"])),
                )
            })
            .collect();
        nones.0 += ledger.values().filter(|(b, _)| b == "none").count();
        nones.1 += ledger.values().filter(|(_, a)| a == "none").count();
        let members = job["progress"]["total"].as_u64().unwrap() as usize;
        unrecorded += members - ledger.len();
        for format in ["csv", "xlsx", "json"] {
            let resp = s
                .app
                .get(&format!("/v1/jobs/{id}/report?format={format}"), &s.viewer)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let bytes = resp.bytes().await.unwrap();
            // Each row as (user id, licenses_before, licenses_after); `None` for a JSON null.
            let rows: Vec<(String, Option<String>, Option<String>)> = if format == "json" {
                let rows: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
                rows.iter()
                    .map(|r| {
                        let text = |v: &Value| {
                            assert!(v.is_null() || v.is_string(), "{format}: {r}");
                            v.as_str().map(str::to_owned)
                        };
                        (
                            r["user_id"].as_str().unwrap().to_owned(),
                            text(&r["licenses_before"]),
                            text(&r["licenses_after"]),
                        )
                    })
                    .collect()
            } else {
                let path = dir.path().join(format!("report.{format}"));
                std::fs::write(&path, &bytes).unwrap();
                let table = read_table(&path, format);
                let col = |name: &str| table[0].iter().position(|c| c == name).unwrap();
                let (user, before, after) = (
                    col("user_id"),
                    col("licenses_before"),
                    col("licenses_after"),
                );
                table[1..]
                    .iter()
                    .map(|r| {
                        let text = |v: &String| (!v.is_empty()).then(|| v.clone());
                        (r[user].clone(), text(&r[before]), text(&r[after]))
                    })
                    .collect()
            };
            assert_eq!(rows.len(), members, "{format}: one row per member");
            for (user, before, after) in rows {
                match ledger.get(&user) {
                    Some((b, a)) => {
                        assert_eq!(before.as_ref(), Some(b), "{format}: {user} before");
                        assert_eq!(after.as_ref(), Some(a), "{format}: {user} after");
                    }
                    None => {
                        assert_eq!((before, after), (None, None), "{format}: {user}: no entry");
                    }
                }
            }
        }
    }
    assert!(nones.0 > 0, "some member held nothing before the assign");
    assert!(nones.1 > 0, "some member held nothing after the remove");
    assert!(unrecorded > 0, "some member had nothing written");
    s.finish().await;
}
on_both_backends!(a_report_says_none_for_a_member_that_held_nothing);
