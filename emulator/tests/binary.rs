//! The `graph-emulator` binary: `--listen` and `--scenario FILE`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use graph_emulator::Scenario;

#[tokio::test]
async fn binary_serves_a_scenario_file() {
    let dir = std::env::temp_dir().join(format!("graph-emulator-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("scenario.json");
    let mut s = Scenario::simple(77, 30, 10);
    s.client_secret = Some("file-secret".into());
    std::fs::write(&file, serde_json::to_string(&s).expect("json")).expect("write");

    let (mut child, vars) = spawn_with_scenario(&file, 5);
    let http = reqwest::Client::new();
    let res = http
        .post(&vars["GRAPH_TOKEN_URL"])
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", vars["GRAPH_CLIENT_ID"].as_str()),
            ("client_secret", "file-secret"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(res.status().as_u16(), 200);
    let tok: serde_json::Value = res.json().await.expect("json");
    let res = http
        .get(format!("{}/groups", vars["GRAPH_URL"]))
        .bearer_auth(tok["access_token"].as_str().unwrap_or(""))
        .send()
        .await
        .expect("groups");
    let v: serde_json::Value = res.json().await.expect("json");
    assert_eq!(v["value"][0]["displayName"], "All Users");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let out = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--scenario",
            "/nonexistent/scenario.json",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--scenario"), "{err}");
}

#[tokio::test]
async fn binary_refuses_unknown_fields_and_serves_many_tenants_from_a_file() {
    let dir = std::env::temp_dir().join(format!("graph-emulator-tenants-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");

    // An unknown field stops the process, naming the field's path.
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"users": 2, "skus": [{"sku_part_number": "X", "units": 1000}]}"#,
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
        .args(["--listen", "127.0.0.1:0", "--scenario"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skus[0].units: unknown field `units`"),
        "{err}"
    );
    let bad_faults = dir.join("faults.json");
    std::fs::write(
        &bad_faults,
        r#"{"write_budget": {"limit": 5, "window": 10}}"#,
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
        .args(["--listen", "127.0.0.1:0", "--faults"])
        .arg(&bad_faults)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("write_budget.window"), "{err}");

    // A count of tenants: the default one's credentials, and how many there are.
    let many = dir.join("many.json");
    std::fs::write(
        &many,
        serde_json::json!({"count": 3, "template": Scenario::simple(5, 4, 4)}).to_string(),
    )
    .expect("write");
    let (mut child, vars) = spawn_with_scenario(&many, 6);
    assert_eq!(vars.get("GRAPH_TENANTS").map(String::as_str), Some("3"));
    let base = vars["GRAPH_URL"].trim_end_matches("/v1.0").to_string();
    let v: serde_json::Value = reqwest::get(format!("{base}/_emulator/tenants"))
        .await
        .expect("tenants")
        .json()
        .await
        .expect("json");
    assert_eq!(v["value"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["value"][0]["tenant_id"], vars["GRAPH_TENANT_ID"].as_str());
    assert_eq!(v["value"][2]["domain"], "contoso-3.onmicrosoft.com");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The emulator binary started on a free port with `--scenario path`, and the `KEY=value`
/// lines it prints first (`lines` of them: its URLs and credentials).
fn spawn_with_scenario(
    path: &std::path::Path,
    lines: usize,
) -> (
    std::process::Child,
    std::collections::HashMap<String, String>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
        .args(["--listen", "127.0.0.1:0", "--scenario"])
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut out = BufReader::new(stdout).lines();
    let mut vars = std::collections::HashMap::new();
    for _ in 0..lines {
        let l = out.next().expect("line").expect("utf8");
        if let Some((k, v)) = l.split_once('=') {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    // Whatever it prints later is read and dropped, so its stdout never closes under it.
    std::thread::spawn(move || out.for_each(drop));
    (child, vars)
}
