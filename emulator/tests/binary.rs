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

    let mut child = Command::new(env!("CARGO_BIN_EXE_graph-emulator"))
        .args(["--listen", "127.0.0.1:0", "--scenario"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut vars = std::collections::HashMap::new();
    for _ in 0..5 {
        let l = lines.next().expect("line").expect("utf8");
        if let Some((k, v)) = l.split_once('=') {
            vars.insert(k.to_string(), v.to_string());
        }
    }
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
