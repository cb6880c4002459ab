//! The `licensor` binary as an operator uses it: start-up errors, tenant and token commands, and
//! `licensor demo` from a fresh data directory.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn licensor() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_licensor"));
    // Only what each test sets: no LICENSOR_* from the environment running the tests.
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run licensor")
}

fn stderr_line(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(text.lines().count(), 1, "one line on stderr: {text:?}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(!text.contains("RUST_BACKTRACE"), "{text}");
    text
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("licensor did not stop within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unreachable_database_is_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(licensor()
        .arg("serve")
        .env("LICENSOR_DATABASE_URL", "postgres://nope")
        .env("LICENSOR_SECRET_KEY", common::SECRET_KEY)
        .env("LICENSOR_DATA_DIR", dir.path()));
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(
        line.contains("database_url") && line.contains("LICENSOR_DATABASE_URL"),
        "{line}"
    );
}

#[test]
fn bad_configuration_values_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, key) in [
        ("LICENSOR_LISTEN", "everywhere", "LICENSOR_LISTEN"),
        ("LICENSOR_QUEUE_URL", "amqp://rabbit", "LICENSOR_QUEUE_URL"),
        (
            "LICENSOR_WORKER__CONCURRENCY",
            "lots",
            "LICENSOR_WORKER__CONCURRENCY",
        ),
        ("LICENSOR_SECRET_KEY", "not-base64!", "LICENSOR_SECRET_KEY"),
        ("LICENSOR_DATABSE_URL", "postgres://typo", "databse_url"),
    ] {
        let out = run(licensor()
            .arg("serve")
            .env("LICENSOR_DATA_DIR", dir.path())
            .env(var, value));
        assert!(!out.status.success(), "{var}={value} is rejected");
        let line = stderr_line(&out);
        assert!(line.contains(key), "{var}: {line}");
    }
    // PostgreSQL without a secret key: every process must share one, so it is required.
    let out = run(licensor()
        .arg("migrate")
        .env("LICENSOR_DATA_DIR", dir.path())
        .env("LICENSOR_DATABASE_URL", "postgres://db.invalid/licensor"));
    assert!(!out.status.success());
    assert!(stderr_line(&out).contains("LICENSOR_DATABASE_URL"));
}

#[tokio::test]
async fn tenants_and_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let with_data = |cmd: &mut Command| {
        cmd.env("LICENSOR_DATA_DIR", data);
    };
    let mut create = licensor();
    with_data(&mut create);
    let out = run(create
        .args([
            "tenant",
            "create",
            "--name",
            "contoso",
            "--directory-url",
            "http://127.0.0.1:9",
        ])
        .args([
            "--directory-tenant-id",
            "tid",
            "--client-id",
            "cid",
            "--client-secret-env",
            "CONTOSO_SECRET",
        ])
        .env("CONTOSO_SECRET", "very-secret-value-42"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The secret is sealed at rest: it is nowhere in the database files in clear.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(20).any(|w| w == b"very-secret-value-42"));
    }

    let mut dup = licensor();
    with_data(&mut dup);
    let out = run(dup.args(["tenant", "create", "--name", "contoso"]));
    assert!(!out.status.success());
    assert!(stderr_line(&out).contains("exists already"));

    let mut missing_secret = licensor();
    with_data(&mut missing_secret);
    let out = run(missing_secret.args([
        "tenant",
        "create",
        "--name",
        "x",
        "--client-secret-env",
        "UNSET_VAR",
    ]));
    assert!(stderr_line(&out).contains("UNSET_VAR"));

    let mut bad_role = licensor();
    with_data(&mut bad_role);
    let out = run(bad_role.args(["token", "create", "--tenant", "contoso", "--role", "root"]));
    assert!(!out.status.success());

    let mut token = licensor();
    with_data(&mut token);
    let out = run(token.args([
        "token", "create", "--tenant", "contoso", "--role", "admin", "--name", "ops",
    ]));
    assert!(out.status.success());
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        secret.starts_with("lic_"),
        "only the token on stdout: {secret}"
    );

    // Serve, and use the token.
    let port = free_port();
    let mut serve = licensor();
    with_data(&mut serve);
    let mut child = serve
        .arg("serve")
        .env("LICENSOR_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let me = wait_for(&http, &format!("{base}/v1/tenant"), &secret).await;
    assert_eq!(me["tenant"]["name"], "contoso");
    assert_eq!(me["tenant"]["client_secret_set"], true);
    assert_eq!(
        me["tenant"]["token_url"],
        "http://127.0.0.1:9/tid/oauth2/v2.0/token"
    );
    assert!(!me.to_string().contains("very-secret-value-42"));

    // Revoke from the CLI: the running server rejects the token at once.
    let mut list = licensor();
    with_data(&mut list);
    let out = run(list.args(["token", "list", "--tenant", "contoso"]));
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(!listing.contains(&secret));
    let id = listing.split_whitespace().next().unwrap().to_owned();
    let mut revoke = licensor();
    with_data(&mut revoke);
    assert!(run(revoke.args(["token", "revoke", &id])).status.success());
    let resp = http
        .get(format!("{base}/v1/tenant"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    interrupt(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
}

async fn wait_for(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = http.get(url).bearer_auth(token).send().await
            && resp.status().is_success()
        {
            return resp.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start `licensor demo` and read its greeting up to the token line.
fn start_demo(data_dir: &str, port: u16) -> (Child, String, String) {
    let mut child = licensor()
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data_dir,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut url = String::new();
    let mut token = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("LICENSOR_URL=") {
            url = u.to_owned();
        }
        if let Some(t) = line.strip_prefix("LICENSOR_TOKEN=") {
            token = t.to_owned();
            break;
        }
    }
    assert!(
        !url.is_empty() && !token.is_empty(),
        "the greeting prints LICENSOR_URL and LICENSOR_TOKEN"
    );
    (child, url, token)
}

#[tokio::test]
async fn demo_starts_serves_stops_and_reuses_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("licensor-data");
    let data = data.to_str().unwrap();
    let port = free_port();
    let started = Instant::now();
    let (mut child, url, token) = start_demo(data, port);
    assert_eq!(url, format!("http://127.0.0.1:{port}"));
    let http = reqwest::Client::new();
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        http.get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let jobs = wait_for(&http, &format!("{url}/v1/jobs"), &token).await;
    assert_eq!(jobs["data"], serde_json::json!([]));
    let anonymous = http.get(format!("{url}/v1/jobs")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    // A viewer token on an admin-only route → 403.
    let viewer: Value = http
        .post(format!("{url}/v1/tokens"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "viewer", "role": "viewer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let viewer = viewer["secret"].as_str().unwrap().to_owned();
    let forbidden = http
        .get(format!("{url}/v1/tokens"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);

    interrupt(&child);
    assert!(
        wait_exit(&mut child, Duration::from_secs(20)).success(),
        "Ctrl-C stops cleanly"
    );

    // A second run reuses the data: the viewer token made in the first still works; the first
    // session's demo token was replaced by a fresh one.
    let (mut child, url, token2) = start_demo(data, port);
    assert_ne!(token, token2);
    wait_for(&http, &format!("{url}/v1/jobs"), &viewer).await;
    let old = http
        .get(format!("{url}/v1/jobs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    let tokens = wait_for(&http, &format!("{url}/v1/tokens"), &token2).await;
    assert_eq!(tokens["data"].as_array().unwrap().len(), 3, "{tokens}");
    interrupt(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
}

#[tokio::test]
async fn migrate_command_on_postgres() {
    let Some(admin_url) = common::postgres_url() else {
        return;
    };
    let pg = common::PgDatabase::create(&admin_url).await;
    for _ in 0..2 {
        let out = run(licensor()
            .arg("migrate")
            .env("LICENSOR_DATABASE_URL", &pg.url)
            .env("LICENSOR_SECRET_KEY", common::SECRET_KEY));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }
}
