//! The `licensor` binary as an operator uses it: start-up errors, tenant and token commands,
//! `licensor demo` from a fresh data directory, and `licensor jobs …` against a running licensor.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

/// A PostgreSQL port nobody listens on is reported as refused within 5 s, not as a pool time-out
/// after 30 s.
#[test]
fn refused_database_connection_is_said_within_5_s() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::servers::free_port();
    let start = Instant::now();
    let out = run(licensor()
        .arg("serve")
        .env(
            "LICENSOR_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/licensor"),
        )
        .env("LICENSOR_SECRET_KEY", common::SECRET_KEY)
        .env("LICENSOR_DATA_DIR", dir.path()));
    let took = start.elapsed();
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(
        line.contains("LICENSOR_DATABASE_URL") && line.to_lowercase().contains("refused"),
        "{line}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}: {line}");
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

/// A directory (Entra ID) tenant id and an application (client) id of the shapes Entra ID gives.
const DIRECTORY_TENANT: &str = "8b2f4c6e-1d3a-4e5f-9a7b-0c1d2e3f4a5b";
const CLIENT_ID: &str = "3f0c9a7e-5b2d-4c1e-8f6a-9d8e7c6b5a40";

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
            DIRECTORY_TENANT,
            "--client-id",
            CLIENT_ID,
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
    let port = common::servers::free_port();
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
        format!("http://127.0.0.1:9/{DIRECTORY_TENANT}/oauth2/v2.0/token")
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

/// `tenant create` refuses a directory connection that cannot work — a client id without a
/// secret, an empty secret, a secret without a client id, a directory tenant id that is neither
/// a GUID nor a domain name, a client id that is not a GUID — with one line naming the flag,
/// and creates nothing.
#[test]
fn tenant_create_refuses_incomplete_or_malformed_connections() {
    let dir = tempfile::tempdir().unwrap();
    let admin = |name: &str| {
        let mut cmd = licensor();
        cmd.env("LICENSOR_DATA_DIR", dir.path())
            .env("GOOD_SECRET", "very-secret-value-42")
            .env("EMPTY_SECRET", "")
            .env("BLANK_SECRET", "  ")
            .args(["tenant", "create", "--name", name]);
        cmd
    };
    let flags = |tenant: Option<&str>, client: Option<&str>, secret: Option<&str>| {
        let mut args = Vec::new();
        for (flag, value) in [
            ("--directory-tenant-id", tenant),
            ("--client-id", client),
            ("--client-secret-env", secret),
        ] {
            if let Some(v) = value {
                args.extend([flag.to_owned(), v.to_owned()]);
            }
        }
        args
    };
    let (t, c, s) = (Some(DIRECTORY_TENANT), Some(CLIENT_ID), Some("GOOD_SECRET"));
    for (args, names) in [
        (flags(t, c, None), "--client-secret-env"),
        (flags(None, c, None), "--client-secret-env"),
        (flags(t, c, Some("EMPTY_SECRET")), "--client-secret-env"),
        (flags(t, c, Some("BLANK_SECRET")), "--client-secret-env"),
        (flags(None, None, s), "--client-id"),
        (flags(t, None, s), "--client-id"),
        (
            flags(Some("contoso onmicrosoft.com"), c, s),
            "--directory-tenant-id",
        ),
        (flags(Some("contoso.com/x"), c, s), "--directory-tenant-id"),
        (flags(Some(""), c, s), "--directory-tenant-id"),
        (flags(t, Some("cid"), s), "--client-id"),
    ] {
        let out = run(admin("contoso").args(&args));
        assert!(!out.status.success(), "{args:?} is refused");
        let line = stderr_line(&out);
        assert!(line.contains(names), "{args:?}: {line}");
        assert!(!line.contains("very-secret-value-42"), "{line}");
    }
    // A name with a control or bidirectional formatting character (a newline, ESC, a
    // right-to-left override) is refused in one line that shows the character's code, not the
    // character.
    for name in ["con\ntoso", "contoso\u{1b}[2J", "contoso\u{202e}"] {
        let out = run(&mut admin(name));
        assert!(!out.status.success(), "{name:?} is refused");
        let line = stderr_line(&out);
        assert!(
            line.contains("tenant name may not contain"),
            "{name:?}: {line}"
        );
        assert!(!line.contains(['\u{1b}', '\u{202e}']), "{line:?}");
    }
    let mut list = licensor();
    let out = run(list
        .env("LICENSOR_DATA_DIR", dir.path())
        .args(["tenant", "list"]));
    assert!(out.status.success());
    assert_eq!(stdout(&out), "", "no tenant was created");

    // Whole connections, by GUID or by domain, and none at all, are taken.
    for (name, tenant) in [
        ("contoso", DIRECTORY_TENANT),
        ("fabrikam", "fabrikam.onmicrosoft.com"),
    ] {
        let out = run(admin(name).args(flags(Some(tenant), c, s)));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut bare = licensor();
    let out = run(bare.env("LICENSOR_DATA_DIR", dir.path()).args([
        "tenant",
        "create",
        "--name",
        "northwind",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The list says which tenants have a connection: the Graph URL alone is Microsoft's for
    // both a tenant connected to it and one with none.
    let mut list = licensor();
    let out = run(list
        .env("LICENSOR_DATA_DIR", dir.path())
        .args(["tenant", "list"]));
    let listed = stdout(&out);
    let line_of = |name: &str| {
        listed
            .lines()
            .find(|l| l.contains(&format!("  {name}  ")))
            .unwrap_or_else(|| panic!("{name} listed: {listed}"))
            .to_owned()
    };
    assert!(
        line_of("contoso").ends_with(&format!(
            "directory tenant {DIRECTORY_TENANT}, client {CLIENT_ID}, secret set"
        )),
        "{listed}"
    );
    assert!(
        line_of("northwind").ends_with("no directory connection"),
        "{listed}"
    );
}

/// The tenant `name`'s row, read as the server reads it.
async fn tenant_row(data: &common::TestData, name: &str) -> licensor_core::entities::tenant::Model {
    let settings = data.settings("");
    let db = licensor_core::db::connect(&settings.database)
        .await
        .unwrap();
    let row = licensor_core::tenants::find_by_name(&db, name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("tenant {name}"));
    db.close().await.ok();
    row
}

/// The client secret the tenant `name` holds, opened with the test's key.
fn secret_of(row: &licensor_core::entities::tenant::Model) -> Option<String> {
    let secrets = licensor_core::crypto::SecretBox::from_base64(common::SECRET_KEY).unwrap();
    licensor_core::tenants::client_secret(&secrets, row).unwrap()
}

/// `tenant set-directory` changes only what it is given: the secret alone is rotated with the
/// tenant id, client id and URLs kept, and its one line says "client secret replaced", never
/// the secret. Bad input — nothing to change, an empty or blank secret, an unset variable, a
/// malformed id, a connection left incomplete, an unknown tenant — is one line on stderr and
/// the row is unchanged. `--clear` removes the connection.
async fn set_directory_changes_only_what_it_is_given(backend: common::Backend) {
    let Some(data) = common::TestData::new(backend).await else {
        return;
    };
    let out = run(data
        .admin_cli()
        .args(["tenant", "create", "--name", "contoso"])
        .args(["--directory-url", "http://127.0.0.1:9"])
        .args(["--directory-tenant-id", DIRECTORY_TENANT])
        .args(["--client-id", CLIENT_ID])
        .args(["--client-secret-env", "OLD_SECRET"])
        .env("OLD_SECRET", "old-secret-value-1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created = tenant_row(&data, "contoso").await;

    let out = run(data
        .admin_cli()
        .args(["tenant", "set-directory", "--tenant", "contoso"])
        .args(["--client-secret-env", "NEW_SECRET"])
        .env("NEW_SECRET", "new-secret-value-2"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = stdout(&out);
    assert_eq!(
        said.trim(),
        "tenant contoso: client secret replaced",
        "{said}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = tenant_row(&data, "contoso").await;
    assert_eq!(secret_of(&rotated).as_deref(), Some("new-secret-value-2"));
    assert_eq!(
        (
            &rotated.directory_tenant_id,
            &rotated.client_id,
            &rotated.token_url,
            &rotated.graph_url,
        ),
        (
            &created.directory_tenant_id,
            &created.client_id,
            &created.token_url,
            &created.graph_url,
        )
    );
    assert!(rotated.updated_at > created.updated_at);

    // Another tenant id: the token URL follows, the rest is kept.
    let out = run(data
        .admin_cli()
        .args([
            "tenant",
            "set-directory",
            "--tenant",
            &rotated.id.to_string(),
        ])
        .args(["--directory-tenant-id", "contoso.onmicrosoft.com"]));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "tenant contoso: directory tenant id contoso.onmicrosoft.com (was {DIRECTORY_TENANT})"
        )
    );
    let moved = tenant_row(&data, "contoso").await;
    assert_eq!(
        moved.token_url.as_deref(),
        Some("http://127.0.0.1:9/contoso.onmicrosoft.com/oauth2/v2.0/token")
    );
    assert_eq!(moved.client_id, created.client_id);
    assert_eq!(secret_of(&moved).as_deref(), Some("new-secret-value-2"));

    let out = run(data
        .admin_cli()
        .args(["tenant", "create", "--name", "fabrikam"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bare = tenant_row(&data, "fabrikam").await;

    let set = |tenant: &str, args: &[&str]| {
        let mut cmd = data.admin_cli();
        cmd.args(["tenant", "set-directory", "--tenant", tenant])
            .args(args)
            .env("EMPTY_SECRET", "")
            .env("BLANK_SECRET", " \t ")
            .env("GOOD_SECRET", "good-secret-value-3");
        cmd
    };
    for (tenant, args, names) in [
        ("contoso", &[][..], "nothing to change"),
        (
            "contoso",
            &["--client-secret-env", "EMPTY_SECRET"],
            "--client-secret-env",
        ),
        (
            "contoso",
            &["--client-secret-env", "BLANK_SECRET"],
            "--client-secret-env",
        ),
        (
            "contoso",
            &["--client-secret-env", "UNSET_SECRET"],
            "UNSET_SECRET",
        ),
        (
            "contoso",
            &["--client-id", "pasted-secret-value-9"],
            "--client-id",
        ),
        (
            "contoso",
            &["--directory-tenant-id", "contoso onmicrosoft.com"],
            "--directory-tenant-id",
        ),
        (
            "contoso",
            &["--directory-tenant-id", "a/b"],
            "--directory-tenant-id",
        ),
        (
            "contoso",
            &["--directory-tenant-id", ""],
            "--directory-tenant-id",
        ),
        ("contoso", &["--directory-url", "ftp://127.0.0.1"], "http"),
        ("contoso", &["--clear", "--client-id", CLIENT_ID], "--clear"),
        // The merged connection must be whole.
        (
            "fabrikam",
            &["--client-id", CLIENT_ID],
            "--client-secret-env",
        ),
        (
            "fabrikam",
            &["--client-secret-env", "GOOD_SECRET"],
            "--client-id",
        ),
        (
            "fabrikam",
            &[
                "--directory-tenant-id",
                DIRECTORY_TENANT,
                "--client-id",
                CLIENT_ID,
            ],
            "--client-secret-env",
        ),
        (
            "northwind",
            &["--client-secret-env", "GOOD_SECRET"],
            "northwind",
        ),
    ] {
        let out = run(&mut set(tenant, args));
        assert!(!out.status.success(), "{tenant} {args:?} is refused");
        let line = stderr_line(&out);
        assert!(line.contains(names), "{tenant} {args:?}: {line}");
        assert!(!line.contains("secret-value"), "{line}");
        assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    }
    assert_eq!(
        tenant_row(&data, "contoso").await,
        moved,
        "contoso unchanged"
    );
    assert_eq!(
        tenant_row(&data, "fabrikam").await,
        bare,
        "fabrikam unchanged"
    );

    // All three connect the bare tenant; --clear removes the connection again.
    let out = run(&mut set(
        "fabrikam",
        &[
            "--directory-tenant-id",
            DIRECTORY_TENANT,
            "--client-id",
            CLIENT_ID,
            "--client-secret-env",
            "GOOD_SECRET",
        ],
    ));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "tenant fabrikam: directory tenant id {DIRECTORY_TENANT} (was none), client id {CLIENT_ID} (was none), client secret set"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let connected = tenant_row(&data, "fabrikam").await;
    assert_eq!(
        secret_of(&connected).as_deref(),
        Some("good-secret-value-3")
    );
    let out = run(&mut set("fabrikam", &["--clear"]));
    assert_eq!(
        stdout(&out).trim(),
        "tenant fabrikam: directory connection removed"
    );
    let cleared = tenant_row(&data, "fabrikam").await;
    assert_eq!(
        (
            &cleared.directory_tenant_id,
            &cleared.client_id,
            &cleared.client_secret_enc
        ),
        (&None, &None, &None)
    );
    assert_eq!(
        (&cleared.token_url, &cleared.graph_url),
        (&bare.token_url, &bare.graph_url)
    );
}

on_both_backends!(set_directory_changes_only_what_it_is_given);

/// The case `set-directory` is for: a tenant whose client secret the directory refuses (one that
/// expired, say) fails its directory routes and jobs with `directory_credentials_rejected`;
/// `licensor tenant set-directory --client-secret-env` fixes it on the running licensor, with no
/// restart: the same route answers at once, and a rerun of the failed job finishes.
///
/// The API and the workers of one process share each tenant's directory client, and an API
/// request makes it again from the tenant's new row: the route is tried on one tenant and the
/// job on another, so the workers' own check of the row is what the rerun relies on.
async fn set_directory_fixes_a_rejected_secret_without_a_restart(backend: common::Backend) {
    const GROUP: &str = "5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let mut scenario = graph_emulator::Scenario::simple(47, 10, 20);
    scenario.groups[0].id = Some(GROUP.into());
    let emulator = graph_emulator::spawn(graph_emulator::EmulatorConfig {
        scenario: Some(scenario),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let Some(app) = common::TestApp::start(backend).await else {
        return;
    };
    // A tenant on the emulator's directory whose secret it refuses, and an admin token of it.
    let tenant = async |name: &str| {
        let out = run(app
            .data
            .admin_cli()
            .args(["tenant", "create", "--name", name])
            .args(["--directory-url", &emulator.base_url()])
            .args(["--directory-tenant-id", &emulator.directory_tenant_id()])
            .args(["--client-id", &emulator.client_id()])
            .args(["--client-secret-env", "EXPIRED_SECRET"])
            .env("EXPIRED_SECRET", "an-expired-secret"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = licensor_core::tenants::find_by_name(&app.db, name)
            .await
            .unwrap()
            .unwrap();
        licensor_core::tokens::create(
            &app.db,
            t.id,
            licensor_core::domain::Role::Admin,
            "admin",
            None,
        )
        .await
        .unwrap()
        .secret
    };
    let rotate = |name: &str| {
        let out = run(app
            .data
            .admin_cli()
            .args(["tenant", "set-directory", "--tenant", name])
            .args(["--client-secret-env", "NEW_SECRET"])
            .env("NEW_SECRET", emulator.client_secret()));
        assert_eq!(
            stdout(&out).trim(),
            format!("tenant {name}: client secret replaced"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // A route: the API reads the tenant at each request, so it answers at once.
    let contoso = tenant("contoso").await;
    let skus = || app.get("/v1/directory/skus", &contoso).send();
    common::expect_problem(skus().await.unwrap(), 502, "directory_credentials_rejected").await;
    rotate("contoso");
    let listed = common::success_json(skus().await.unwrap()).await;
    assert!(
        listed["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|s| s["sku_part_number"] == "ENTERPRISEPACK")),
        "{listed}"
    );

    // A job: it fails; once the secret is replaced, a rerun finishes. Workers check their client
    // against the tenant's row at most a second after they last did.
    let fabrikam = tenant("fabrikam").await;
    let job = app
        .post_json(
            "/v1/jobs",
            &fabrikam,
            &json!({"kind": "export", "groups": [GROUP], "export": {"format": "json"}}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let failed = app.wait_for_job(&fabrikam, &id, 120).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["error"]["code"], "directory_credentials_rejected",
        "{failed}"
    );
    rotate("fabrikam");
    tokio::time::sleep(licensor_core::directory::DirectoryClients::RECHECK).await;
    app.post_json(&format!("/v1/jobs/{id}/rerun"), &fabrikam, &json!({}))
        .await;
    let rerun = app.wait_for_job(&fabrikam, &id, 120).await;
    assert_eq!(rerun["status"], "finished", "{rerun}");
    assert_eq!(rerun["progress"]["succeeded"], 10, "{rerun}");
    app.stop().await;
    emulator.shutdown().await;
}

on_both_backends!(set_directory_fixes_a_rejected_secret_without_a_restart);

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
    let port = common::servers::free_port();
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

    // A second demo on the same data directory is refused, and the first goes on as it was.
    let second = run(licensor().args([
        "demo",
        "--listen",
        &format!("127.0.0.1:{}", common::servers::free_port()),
        "--data-dir",
        data,
    ]));
    assert!(!second.status.success());
    let said = stderr_line(&second);
    assert!(
        said.contains(&format!("(pid {})", child.id())) && said.contains("--data-dir"),
        "{said}"
    );
    assert!(second.stdout.is_empty(), "no greeting");
    let still = http
        .get(format!("{url}/v1/jobs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200, "the first demo's token still works");
    // A demo on an address in use says which flag picks another.
    let other = tempfile::tempdir().unwrap();
    let busy = run(licensor().args([
        "demo",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &other.path().display().to_string(),
    ]));
    assert!(!busy.status.success());
    let said = stderr_line(&busy);
    assert!(
        said.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && said.contains("--listen")
            && !said.contains("LICENSOR_LISTEN"),
        "{said}"
    );
    assert!(busy.stdout.is_empty(), "no greeting");

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

/// `jobs submit`'s license and export location options are checked before anything is read or
/// sent (no licensor answers here): an empty SKU or service plan in `--add SKU:PLAN,PLAN` and an
/// incomplete SharePoint `--to` are usage errors — one line naming the form, exit 2 — and the
/// help says a SharePoint folder left out is the drive's root, as the API defaults it.
#[test]
fn submit_refuses_empty_plans_and_incomplete_locations_before_sending() {
    let submit = |extra: &[&str]| {
        let mut cmd = licensor();
        cmd.env("LICENSOR_URL", "http://127.0.0.1:9")
            .env("LICENSOR_TOKEN", "lsr_nothing")
            .args(["jobs", "submit", "--group", "Sales"])
            .args(extra);
        run(&mut cmd)
    };
    for (args, says) in [
        (
            &["--kind", "assign", "--add", "SPE_E5:"][..],
            "no service plan after `:`",
        ),
        (
            &["--kind", "assign", "--add", "SPE_E5:TEAMS1,,MCOEV"][..],
            "an empty service plan",
        ),
        (
            &[
                "--kind",
                "replace",
                "--replace-all",
                "--add",
                "ENTERPRISEPACK",
                "--add",
                "SPE_E5:TEAMS1,",
            ][..],
            "an empty service plan",
        ),
        (
            &["--kind", "export", "--to", "sharepoint:"][..],
            "no drive id",
        ),
        (
            &["--kind", "export", "--to", "sharepoint:b!x1:"][..],
            "no folder after the second `:`",
        ),
    ] {
        let out = submit(args);
        let line = stderr_line(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {line}");
        assert!(
            line.starts_with("error: invalid value")
                && line.contains(says)
                && line.ends_with("see 'licensor jobs submit --help'"),
            "{args:?}: {line}"
        );
        if args.contains(&"--to") {
            assert!(line.contains("sharepoint:DRIVE_ID[:/Folder/]"), "{line}");
        } else {
            assert!(line.contains("SKU:PLAN,PLAN"), "{line}");
        }
        assert!(out.stdout.is_empty());
    }
    let out = run(licensor().args(["jobs", "submit", "--help"]));
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("sharepoint:DRIVE_ID[:/Folder/]")
            && help.contains("without a folder, the drive's root `/`"),
        "{help}"
    );
}

/// `licensor jobs …` against `app` with `token`, its output collected (killed if it outlives the
/// test's patience).
async fn jobs_cli(app: &common::TestApp, token: &str, args: &[&str]) -> Output {
    output_of(jobs_cli_command(app, token, args), args).await
}

/// `licensor ARGS…` as a client of `app`, with `token`, run to its end.
async fn client_cli(app: &common::TestApp, token: &str, args: &[&str]) -> Output {
    output_of(client_cli_command(app, token, args), args).await
}

async fn output_of(cmd: Command, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("licensor {args:?} did not end within 180 s"))
        .expect("run licensor")
}

/// The `licensor jobs …` command that [`jobs_cli`] runs.
fn jobs_cli_command(app: &common::TestApp, token: &str, args: &[&str]) -> Command {
    let mut cmd = client_cli_command(app, token, &["jobs"]);
    cmd.args(args);
    cmd
}

/// `licensor ARGS…` as a client of `app`, with `token`.
fn client_cli_command(app: &common::TestApp, token: &str, args: &[&str]) -> Command {
    let mut cmd = app.cli(token);
    cmd.args(args);
    cmd
}

/// Run `cmd` with its standard output a pipe whose reader is gone before anything is written
/// (`licensor … | head -2` once `head` has had its lines): it ends without a panic or an error
/// line, by the pipe's signal or with success, as other command-line tools do.
async fn reader_gone(mut cmd: Command) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run licensor");
    drop(child.stdout.take());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .expect("licensor ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(SIGPIPE),
            "{:?}: {stderr}",
            out.status
        );
    }
}

/// SIGPIPE's number on Linux and the BSDs.
#[cfg(unix)]
const SIGPIPE: i32 = 13;

#[tokio::test]
async fn openapi_to_a_closed_pipe_ends_quietly() {
    let mut cmd = licensor();
    cmd.arg("openapi");
    reader_gone(cmd).await;
}

/// `jobs submit` of an assign of `sku` to the group named `group`.
fn assign<'a>(group: &'a str, sku: &'a str) -> [&'a str; 7] {
    ["submit", "--kind", "assign", "--group", group, "--add", sku]
}

async fn get_json(app: &common::TestApp, token: &str, path: &str) -> Value {
    let resp = app.get(path, token).send().await.expect("licensor answers");
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json().await.expect("JSON")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_from_the_command_line() {
    let emulator = graph_emulator::spawn(graph_emulator::EmulatorConfig {
        scenario: Some(graph_emulator::Scenario::demo()),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let app = common::TestApp::start(common::Backend::Embedded)
        .await
        .expect("the embedded backend needs no services");
    let tenant = app.tenant("contoso").await;
    app.connect_directory(tenant.id, &emulator).await;
    let admin = tenant.admin.as_str();

    // The names a job takes, as the pickers list them: groups by the start of their name, and
    // the SKUs with their units.
    let out = client_cli(
        &app,
        tenant.viewer.as_str(),
        &["directory", "groups", "sal"],
    )
    .await;
    let text = succeeded(&out);
    let sales = app.group_id(admin, "Sales").await;
    assert!(
        text.lines().next().is_some_and(|h| h.starts_with("ID"))
            && text
                .lines()
                .any(|l| l.starts_with(sales.as_str()) && l.contains("Sales")),
        "{text}"
    );
    assert!(
        !text.contains("All Staff"),
        "only names starting with it: {text}"
    );
    let out = client_cli(
        &app,
        admin,
        &["directory", "groups", "--json", "--limit", "2"],
    )
    .await;
    let groups: Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(groups.as_array().map(Vec::len), Some(2), "{groups}");
    // Every list's --json alike: its items as one JSON array — the SKUs as the API's `data`
    // has them (no job has run yet: the counts hold still), the licenses too.
    let out = client_cli(&app, admin, &["directory", "skus", "--json"]).await;
    let skus: Value = serde_json::from_str(&succeeded(&out)).unwrap();
    let answer = get_json(&app, admin, "/v1/directory/skus").await;
    assert!(skus.as_array().is_some_and(|s| !s.is_empty()), "{skus}");
    assert_eq!(skus, answer["data"], "the API's items, as an array");
    let out = client_cli(&app, admin, &["licenses", "list", "--json"]).await;
    let licenses: Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert!(licenses.is_array(), "{licenses}");
    // Licenses found by a part of their name, in any case, Swedish letters too.
    for name in ["Östersund Skola", "AutoCAD 2026"] {
        app.post_json("/v1/licenses", admin, &json!({ "name": name, "seats": 3 }))
            .await;
    }
    let out = client_cli(&app, admin, &["licenses", "list", "--search", "öSTER"]).await;
    let text = succeeded(&out);
    assert!(
        text.lines().next().is_some_and(|h| h.starts_with("ID"))
            && text.contains("Östersund Skola")
            && !text.contains("AutoCAD"),
        "{text}"
    );
    let out = client_cli(
        &app,
        admin,
        &["licenses", "list", "--search", "autocad", "--json"],
    )
    .await;
    let found: Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(
        found
            .as_array()
            .map(|a| a.iter().map(|l| l["name"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("AutoCAD 2026")]),
        "{found}"
    );
    let out = client_cli(&app, admin, &["licenses", "list", "--search", "Visio"]).await;
    assert_eq!(succeeded(&out).trim(), "no license's name contains `Visio`");
    // … and says so where --json is explained.
    let out = run(licensor().args(["directory", "skus", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("the items a list read as one JSON array"),
        "{help}"
    );
    let out = client_cli(&app, admin, &["directory", "skus", "--plans"]).await;
    let text = succeeded(&out);
    let e5 = text
        .lines()
        .find(|l| l.starts_with("SPE_E5 "))
        .unwrap_or_else(|| panic!("SPE_E5 listed: {text}"));
    let cells: Vec<&str> = e5.split_whitespace().collect();
    assert_eq!(cells[1], graph_emulator::SPE_E5_SKU_ID, "{e5}");
    assert_eq!(cells[2], "100", "enabled units: {e5}");
    let consumed: i64 = cells[3].parse().unwrap();
    assert_eq!(cells[4].parse::<i64>().unwrap(), 100 - consumed, "{e5}");
    assert!(cells[5].contains("TEAMS1"), "its service plans: {e5}");
    // A limit out of range, negative ones too, is named with its range.
    for limit in ["0", "-1"] {
        let out = client_cli(&app, admin, &["directory", "groups", "--limit", limit]).await;
        assert_eq!(out.status.code(), Some(2));
        let line = stderr_line(&out);
        assert!(
            line.contains("--limit") && line.contains("1..=500"),
            "{line}"
        );
    }

    // Bad input: one line naming the problem, exit 1, and no job. A refusal of the API is its
    // code and detail.
    for (token, group, sku, says) in [
        (
            admin,
            "Nobody Here",
            "SPE_E5",
            "no directory group is named `Nobody Here`",
        ),
        (admin, "Sales", "NO_SUCH_SKU", "NO_SUCH_SKU"),
        (
            tenant.viewer.as_str(),
            "Sales",
            "SPE_E5",
            "error: forbidden: ",
        ),
    ] {
        let out = jobs_cli(&app, token, &assign(group, sku)).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr_line(&out).contains(says), "{says}");
        assert!(out.stdout.is_empty());
    }
    // The API's refusal in the command line's words: the option, not the request's field.
    let mut remove_with_assign = assign("Sales", "SPE_E5").to_vec();
    remove_with_assign.extend(["--remove", "ENTERPRISEPACK"]);
    let out = jobs_cli(&app, admin, &remove_with_assign).await;
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_line(&out);
    assert!(
        line.contains("`--remove` cannot be used with an assign job")
            && !line.contains("_licenses"),
        "{line}"
    );
    // A usage error is one line too, exit 2: clap's message, its tip and where help is.
    let out = jobs_cli(
        &app,
        admin,
        &["submit", "--kind", "assign", "--grop", "Sales"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let line = stderr_line(&out);
    assert!(
        line.starts_with("error: unexpected argument '--grop' found")
            && line.contains("'--group'")
            && line.ends_with("see 'licensor jobs submit --help'"),
        "{line}"
    );
    let out = jobs_cli(
        &app,
        admin,
        &["submit", "--kind", "lend", "--group", "Sales"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains("'lend'"));
    let out = jobs_cli(&app, admin, &["watch", "not-a-job"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_line(&out).contains("not-a-job"));
    assert_eq!(
        get_json(&app, admin, "/v1/jobs").await["data"],
        json!([]),
        "no job was created"
    );

    // SPE_E5 (100 units) for Sales (250 members), the group given by name — in another case,
    // as the pickers and `directory groups` find it.
    // Sent with an idempotency key, and then again: the second starts no second job and says
    // so on stderr; stdout is the first job's id both times.
    let mut keyed = assign("sales", "SPE_E5").to_vec();
    keyed.extend(["--idempotency-key", "cli-replay-1"]);
    let out = jobs_cli(&app, admin, &keyed).await;
    let id = succeeded(&out).trim().to_owned();
    uuid::Uuid::try_parse(&id).unwrap_or_else(|_| panic!("only the job id on stdout: {id:?}"));
    assert!(out.stderr.is_empty(), "{out:?}");
    let again = jobs_cli(&app, admin, &keyed).await;
    assert_eq!(succeeded(&again).trim(), id);
    assert!(
        stderr_line(&again).contains("no second job started"),
        "{again:?}"
    );
    // The same intent sent as a minimal body (no defaults spelt out, as a script with curl
    // sends it) under the same key is the same request: replayed, not refused as another.
    let sales = app.group_id(admin, "Sales").await;
    let minimal = app
        .http
        .post(format!("{}/v1/jobs", app.url))
        .bearer_auth(admin)
        .header("idempotency-key", "cli-replay-1")
        .json(&json!({"kind": "assign", "groups": [sales],
            "add_licenses": [{"sku_id": graph_emulator::SPE_E5_SKU_ID}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(minimal.headers()["idempotent-replayed"], "true");
    assert_eq!(common::success_json(minimal).await["id"], id.as_str());
    assert_eq!(
        get_json(&app, admin, "/v1/jobs").await["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let job = get_json(&app, admin, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["kind"], "assign");
    assert_eq!(
        job["request"]["groups"][0],
        app.group_id(admin, "Sales").await.as_str()
    );
    assert_eq!(
        job["request"]["add_licenses"][0]["sku_id"],
        graph_emulator::SPE_E5_SKU_ID
    );

    // Watch: plain progress lines (stdout is a pipe), the final counts, the failures by code,
    // and exit 3 for Finished with Exception.
    let out = jobs_cli(&app, admin, &["watch", &id]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(stderr_line(&out).contains("Finished with Exception"));
    assert!(
        !text.contains('\u{1b}'),
        "no terminal codes in plain output: {text:?}"
    );
    let job = app.wait_for_job(admin, &id, 5).await;
    assert_eq!(job["status"], "finished_with_exception");
    app.assert_outcomes_true(admin, &id, &emulator.base_url())
        .await;
    assert_eq!(job["progress"]["succeeded"], 100);
    assert_eq!(job["progress"]["failed"], 150);
    assert!(
        text.lines()
            .any(|l| l.starts_with("Finished with Exception: 250 of 250 done")),
        "{text}"
    );
    assert!(
        text.contains("100 succeeded, 150 failed, 0 skipped of 250"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("count_violation")),
        "{text}"
    );

    // Rerun: queued again as a second run; with nothing changed it fails again.
    let out = jobs_cli(&app, tenant.operator.as_str(), &["rerun", &id]).await;
    let text = succeeded(&out);
    assert!(text.contains(&id) && text.contains("run 2"), "{text}");
    let job = app.wait_for_job(admin, &id, 120).await;
    assert_eq!(job["status"], "finished_with_exception");
    assert_eq!(job["runs"], 2);
    let runs = get_json(&app, admin, &format!("/v1/jobs/{id}/runs")).await;
    assert_eq!(runs["data"].as_array().unwrap().len(), 2, "{runs}");

    // The report: a header and one row per member with its outcome.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.csv");
    let out = jobs_cli(
        &app,
        tenant.viewer.as_str(),
        &[
            "report",
            &id,
            "--format",
            "csv",
            "--output",
            report.to_str().unwrap(),
        ],
    )
    .await;
    succeeded(&out);
    let csv = std::fs::read_to_string(&report).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 251, "header + 250 members");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(header[0], "user_id");
    let status = header
        .iter()
        .position(|h| *h == "status")
        .expect("status column");
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for line in &lines[1..] {
        *counts
            .entry(line.split(',').nth(status).unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(counts.get("succeeded"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("failed"), Some(&150), "{counts:?}");

    // A job that finishes: ENTERPRISEPACK for Licensed Pilot, with a usage location; --json
    // prints the API's job.
    let out = jobs_cli(
        &app,
        admin,
        &[
            "submit",
            "--json",
            "--kind",
            "assign",
            "--group",
            "Licensed Pilot",
            "--add",
            "ENTERPRISEPACK",
            "--usage-location",
            "SE",
        ],
    )
    .await;
    let submitted: Value = serde_json::from_str(&succeeded(&out)).expect("JSON on stdout");
    assert_eq!(submitted["request"]["usage_location"], "SE");
    let pilot = submitted["id"].as_str().unwrap().to_owned();
    let out = jobs_cli(&app, admin, &["watch", &pilot]).await;
    let text = succeeded(&out);
    assert!(text.contains("run 1: Finished"), "{text}");
    assert!(text.contains("0 failed"), "{text}");

    // The list: a table in the Job Monitor's words, and the API's JSON with --json.
    let out = jobs_cli(&app, admin, &["list"]).await;
    let text = succeeded(&out);
    let header = text.lines().next().unwrap_or_default();
    for column in [
        "ID",
        "KIND",
        "GROUPS",
        "STATUS",
        "SUCCEEDED",
        "FAILED",
        "SKIPPED",
        "TOTAL",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let sales_row = text
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("Sales job listed");
    assert!(sales_row.contains("Sales") && sales_row.contains("Finished with Exception"));
    let pilot_row = text
        .lines()
        .find(|l| l.starts_with(&pilot))
        .expect("pilot job listed");
    assert!(pilot_row.contains("Licensed Pilot") && pilot_row.contains("Finished"));
    // Its reader gone before it prints (`licensor jobs list | head -2`): the command ends
    // quietly, no panic on the closed pipe.
    reader_gone(jobs_cli_command(&app, admin, &["list"])).await;
    reader_gone(jobs_cli_command(&app, admin, &["list", "--json"])).await;
    let out = jobs_cli(&app, admin, &["list", "--json", "--status", "finished"]).await;
    let listed: Value = serde_json::from_str(&succeeded(&out)).expect("JSON on stdout");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, [pilot.as_str()]);

    // Export Results: a file in the format asked for, downloaded once the job is done.
    let out = jobs_cli(
        &app,
        admin,
        &[
            "submit",
            "--kind",
            "export",
            "--group",
            "Licensed Pilot",
            "--format",
            "json",
        ],
    )
    .await;
    let export = succeeded(&out).trim().to_owned();
    succeeded(&jobs_cli(&app, admin, &["watch", &export]).await);
    let file = dir.path().join("export.json");
    let out = jobs_cli(
        &app,
        admin,
        &["export", &export, "--output", file.to_str().unwrap()],
    )
    .await;
    succeeded(&out);
    let rows: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).expect("JSON file");
    assert_eq!(rows.as_array().map(Vec::len), Some(5), "{rows}");
    // With --json, where the file went, for scripts; with -o - the file is the output, and
    // --json is refused before anything is downloaded.
    let again = dir.path().join("again.json");
    let out = jobs_cli(
        &app,
        admin,
        &["export", &export, "-o", again.to_str().unwrap(), "--json"],
    )
    .await;
    let said: Value = serde_json::from_str(&succeeded(&out)).expect("JSON on stdout");
    let bytes = std::fs::metadata(&again).unwrap().len();
    assert_eq!(said["path"], again.to_str().unwrap(), "{said}");
    assert_eq!(said["bytes"], bytes, "{said}");
    let out = jobs_cli(&app, admin, &["report", &pilot, "-o", "-", "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_line(&out).contains("--json prints where the file was written"),
        "{}",
        stderr_line(&out)
    );
    assert!(out.stdout.is_empty());
    // The file of a job that is not an export is its report: the refusal names the command.
    let out = jobs_cli(&app, admin, &["export", &pilot, "-o", "-"]).await;
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_line(&out);
    assert!(
        line.contains("not_an_export") && line.contains("licensor jobs report"),
        "{line}"
    );

    // Export Results to a SharePoint folder: `watch` says where the file went.
    let created = reqwest::Client::new()
        .post(format!("{}/_emulator/drives", emulator.base_url()))
        .json(&serde_json::json!({"id": "b!cli-drive"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let out = jobs_cli(
        &app,
        admin,
        &[
            "submit",
            "--kind",
            "export",
            "--group",
            "Licensed Pilot",
            "--format",
            "xlsx",
            "--to",
            "sharepoint:b!cli-drive:/Reports/",
        ],
    )
    .await;
    let export = succeeded(&out).trim().to_owned();
    let out = jobs_cli(&app, admin, &["watch", &export]).await;
    let text = succeeded(&out);
    assert!(
        text.lines().any(|l| l.starts_with("export: 5 rows")
            && l.contains(&format!("/Reports/job-{export}-export.xlsx"))),
        "{text}"
    );
    // A file that could not be delivered (a drive the directory does not have): the export
    // failed, and `watch` says its members were read, never that they succeeded.
    let out = jobs_cli(
        &app,
        admin,
        &[
            "submit",
            "--kind",
            "export",
            "--group",
            "Licensed Pilot",
            "--to",
            "sharepoint:b!no-such-drive:/Reports/",
        ],
    )
    .await;
    let export = succeeded(&out).trim().to_owned();
    let out = jobs_cli(&app, admin, &["watch", &export]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "Failed: 5 members read; no file delivered"),
        "{text}"
    );
    assert!(!text.contains("succeeded"), "{text}");
    let out = jobs_cli(
        &app,
        admin,
        &[
            "submit",
            "--kind",
            "export",
            "--group",
            "Licensed Pilot",
            "--to",
            "ftp://x",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "a bad --to is a usage error");

    // Several at once: the rerunnable one is queued again, the finished one is rejected with
    // its reason, and the exit code says not all were rerun.
    let out = jobs_cli(&app, tenant.operator.as_str(), &["rerun", &id, &pilot]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("rerun") && l.contains(&id) && l.contains("run 3")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("rejected")
            && l.contains(&pilot)
            && l.contains("not_rerunnable")),
        "{text}"
    );
    assert!(stderr_line(&out).contains("1 of 2"));
    let job = app.wait_for_job(admin, &id, 120).await;
    assert_eq!(job["runs"], 3);
    app.assert_outcomes_true(admin, &id, &emulator.base_url())
        .await;

    app.stop().await;
}

/// `licensor members …` against `app` with `token`.
async fn members_cli(app: &common::TestApp, token: &str, args: &[&str]) -> Output {
    let mut cmd = licensor();
    cmd.arg("members")
        .args(args)
        .env("LICENSOR_URL", &app.url)
        .env("LICENSOR_TOKEN", token);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("licensor members {args:?} did not end within 60 s"))
        .expect("run licensor members")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_rerun_by_filter_and_member_history_from_the_command_line() {
    let emulator = graph_emulator::spawn(graph_emulator::EmulatorConfig {
        scenario: Some(graph_emulator::Scenario::demo()),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let app = common::TestApp::start(common::Backend::Embedded)
        .await
        .expect("the embedded backend needs no services");
    let tenant = app.tenant("contoso").await;
    app.connect_directory(tenant.id, &emulator).await;
    let (admin, operator) = (tenant.admin.as_str(), tenant.operator.as_str());
    let pilot = app.group_id(admin, "Licensed Pilot").await;
    let e5 = json!([{"sku_id": graph_emulator::ENTERPRISEPACK_SKU_ID}]);

    // One finished assign, three failed ones (a group the directory does not have).
    let job = app
        .post_json(
            "/v1/jobs",
            admin,
            &json!({"kind": "assign", "groups": [pilot], "add_licenses": e5, "usage_location": "SE"}),
        )
        .await;
    let finished = job["id"].as_str().unwrap().to_owned();
    let job = app.wait_for_job(admin, &finished, 120).await;
    assert_eq!(job["status"], "finished", "{job}");
    app.assert_outcomes_true(admin, &finished, &emulator.base_url())
        .await;
    let ghost = uuid::Uuid::new_v4().to_string();
    let mut failed = Vec::new();
    for _ in 0..3 {
        let job = app
            .post_json(
                "/v1/jobs",
                admin,
                &json!({"kind": "assign", "groups": [ghost], "add_licenses": e5}),
            )
            .await;
        let id = job["id"].as_str().unwrap().to_owned();
        assert_eq!(app.wait_for_job(admin, &id, 120).await["status"], "failed");
        failed.push(id);
    }

    // A dry run says how many; nothing changes.
    let out = jobs_cli(
        &app,
        operator,
        &["rerun", "--status", "failed", "--dry-run"],
    )
    .await;
    assert!(
        succeeded(&out).contains("would rerun 3 of 3 jobs"),
        "{}",
        stdout(&out)
    );
    for id in &failed {
        assert_eq!(
            get_json(&app, admin, &format!("/v1/jobs/{id}")).await["runs"],
            1
        );
    }
    // A dry run of a job that cannot be rerun: one summary in one tense, exit 1.
    let out = jobs_cli(&app, operator, &["rerun", &finished, "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("rejected  {finished} not_rerunnable")),
        "{text}"
    );
    assert!(
        text.contains("would rerun 0 of 1 jobs; 1 refused"),
        "{text}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ids and a filter together are a usage error.
    let out = jobs_cli(&app, operator, &["rerun", &finished, "--status", "failed"]).await;
    assert_eq!(out.status.code(), Some(2));
    // Every assign: the three failed ones are rerun, the finished one is refused with its reason
    // (exit 1).
    let out = jobs_cli(&app, operator, &["rerun", "--kind", "assign"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("rejected  {finished} not_rerunnable")),
        "{text}"
    );
    assert!(text.contains("rerun 3 of 4 jobs; 1 refused"), "{text}");
    for id in &failed {
        let job = app.wait_for_job(admin, id, 120).await;
        assert_eq!(job["runs"], 2, "{job}");
    }
    // Nothing is waiting: a cancel by filter acts on none.
    let out = jobs_cli(&app, operator, &["cancel", "--status", "queued,running"]).await;
    assert!(
        succeeded(&out).contains("cancelled 0 of 0 jobs"),
        "{}",
        stdout(&out)
    );

    // A member's history, by user principal name in any case.
    let items = get_json(
        &app,
        admin,
        &format!("/v1/jobs/{finished}/items?status=succeeded&limit=1"),
    )
    .await;
    let upn = items["data"][0]["user_principal_name"]
        .as_str()
        .unwrap()
        .to_uppercase();
    let out = members_cli(&app, operator, &["history", &upn]).await;
    let text = succeeded(&out);
    let line = text
        .lines()
        .find(|l| l.contains(&finished))
        .unwrap_or_else(|| panic!("the assign job in {text}"));
    assert!(
        line.contains("assign") && line.contains("succeeded"),
        "{line}"
    );
    // Licenses by part number, as the admin knows them.
    assert!(line.contains("→ ENTERPRISEPACK"), "{line}");
    let out = members_cli(&app, operator, &["history", "not a member"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_line(&out).contains("invalid_member"),
        "{}",
        stderr_line(&out)
    );

    app.stop().await;
    emulator.shutdown().await;
}

/// `jobs submit --preview` waits for the preview and prints its summary and the job id;
/// `jobs launch ID` runs it, and the members fail as many as predicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preview_and_launch_from_the_command_line() {
    let emulator = graph_emulator::spawn(graph_emulator::EmulatorConfig {
        scenario: Some(graph_emulator::Scenario::demo()),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let app = common::TestApp::start(common::Backend::Embedded)
        .await
        .expect("the embedded backend needs no services");
    let tenant = app.tenant("contoso").await;
    app.connect_directory(tenant.id, &emulator).await;
    let admin = tenant.admin.as_str();

    // SPE_E5 (100 units) for Sales (250 members).
    let mut args = assign("Sales", "SPE_E5").to_vec();
    args.push("--preview");
    let out = jobs_cli(&app, admin, &args).await;
    let text = succeeded(&out);
    let id = text.lines().last().unwrap_or_default().trim().to_owned();
    uuid::Uuid::try_parse(&id).unwrap_or_else(|_| panic!("the job id last: {text}"));
    assert!(
        text.contains("SHORTFALL") && text.contains("WOULD FAIL"),
        "{text}"
    );
    // Watching a preview stops at Previewed (exit 6) and says so once.
    let out = jobs_cli(&app, admin, &["watch", &id]).await;
    assert_eq!(out.status.code(), Some(6), "{}", stdout(&out));
    let watched = stdout(&out);
    assert_eq!(
        watched
            .lines()
            .filter(|l| l.starts_with("Previewed: "))
            .count(),
        1,
        "{watched}"
    );
    let job = get_json(&app, admin, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "previewed");
    let shortfall = &job["preview"]["skus"][0];
    assert_eq!(shortfall["free"], 100, "{job}");
    assert!(
        text.lines().any(|l| l.starts_with("SPE_E5")
            && l.split_whitespace().collect::<Vec<_>>()
                == [
                    "SPE_E5".to_owned(),
                    shortfall["needed"].to_string(),
                    "100".to_owned(),
                    shortfall["shortfall"].to_string(),
                    shortfall["short_members"].to_string()
                ]),
        "{text}"
    );

    let out = jobs_cli(&app, admin, &["launch", &id]).await;
    assert_eq!(succeeded(&out).trim(), id);
    let done = app.wait_for_job(admin, &id, 120).await;
    assert_eq!(done["status"], "finished_with_exception", "{done}");
    assert_eq!(
        done["progress"]["failed"], job["preview"]["would_fail"],
        "{done}"
    );
    app.assert_outcomes_true(admin, &id, &emulator.base_url())
        .await;

    // Launching it again is refused with the API's code.
    let out = jobs_cli(&app, admin, &["launch", &id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_line(&out).contains("not_a_preview"));
    app.stop().await;
    emulator.shutdown().await;
}

/// `jobs submit … --canary 50:0.1` on an assign whose SKU runs short pauses the job after 50
/// members; `jobs watch` stops there with exit 7 and says how to go on; `jobs resume ID` finishes
/// it. A bad `--canary` is one line and exit 1, and creates no job; `jobs resume` of a job that is
/// not paused is the API's `not_paused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_and_resume_from_the_command_line() {
    let emulator = graph_emulator::spawn(graph_emulator::EmulatorConfig {
        scenario: Some(graph_emulator::Scenario::demo()),
        ..Default::default()
    })
    .await
    .expect("emulator starts");
    let app = common::TestApp::start(common::Backend::Embedded)
        .await
        .expect("the embedded backend needs no services");
    let tenant = app.tenant("contoso").await;
    app.connect_directory(tenant.id, &emulator).await;
    let admin = tenant.admin.as_str();
    // Five free SPE_E5 units: most of the first 50 members fail.
    let http = reqwest::Client::new();
    let stats: Value = http
        .get(format!("{}/_emulator/stats", emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let consumed = stats["skus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["skuPartNumber"] == "SPE_E5")
        .unwrap()["consumedUnits"]
        .as_u64()
        .unwrap();
    let resp = http
        .patch(format!("{}/_emulator/skus/SPE_E5", emulator.base_url()))
        .json(&json!({"enabled": consumed + 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);

    for bad in ["50:2", "0:0.1", "fifty"] {
        let mut args = assign("Sales", "SPE_E5").to_vec();
        args.extend(["--canary", bad]);
        let out = jobs_cli(&app, admin, &args).await;
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let line = stderr_line(&out);
        assert!(line.contains("--canary") && line.contains(bad), "{line}");
    }
    assert_eq!(
        get_json(&app, admin, "/v1/jobs").await["data"],
        json!([]),
        "no job was created"
    );

    let mut args = assign("Sales", "SPE_E5").to_vec();
    args.extend(["--usage-location", "SE", "--canary", "50:0.1"]);
    let out = jobs_cli(&app, admin, &args).await;
    let id = succeeded(&out).trim().to_owned();
    let job = get_json(&app, admin, &format!("/v1/jobs/{id}")).await;
    assert_eq!(
        job["request"]["canary"],
        json!({"members": 50, "max_failed_share": 0.1})
    );
    let out = jobs_cli(&app, admin, &["watch", &id]).await;
    assert_eq!(out.status.code(), Some(7), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Paused") && text.contains("jobs resume"),
        "{text}"
    );
    let job = get_json(&app, admin, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "paused", "{job}");
    let p = &job["progress"];
    assert_eq!(
        p["succeeded"].as_i64().unwrap()
            + p["failed"].as_i64().unwrap()
            + p["skipped"].as_i64().unwrap(),
        50,
        "{job}"
    );

    // A viewer may not resume; an operator does.
    let out = jobs_cli(&app, tenant.viewer.as_str(), &["resume", &id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_line(&out).contains("forbidden"));
    let out = jobs_cli(&app, tenant.operator.as_str(), &["resume", &id]).await;
    assert_eq!(succeeded(&out).trim(), id);
    let done = app.wait_for_job(admin, &id, 120).await;
    assert_eq!(done["status"], "finished_with_exception", "{done}");
    assert_eq!(done["progress"]["pending"], 0, "{done}");
    app.assert_outcomes_true(admin, &id, &emulator.base_url())
        .await;
    let out = jobs_cli(&app, tenant.operator.as_str(), &["resume", &id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_line(&out).contains("not_paused"));
    app.stop().await;
    emulator.shutdown().await;
}

/// A request that gets no answer is told apart by how: nothing listening → "cannot reach" (it
/// was not sent); a server that takes the request and closes the connection before answering
/// (it crashed meanwhile) → the request may have been done, look before sending it again.
#[test]
fn a_lost_answer_is_not_called_unreachable() {
    let run_against = |url: &str| {
        let out = run(licensor()
            .args(["licenses", "create", "--name", "x", "--seats", "1"])
            .env("LICENSOR_URL", url)
            .env("LICENSOR_TOKEN", "lic_not_checked"));
        assert_eq!(out.status.code(), Some(1));
        stderr_line(&out)
    };
    let nobody = format!("http://127.0.0.1:{}", common::servers::free_port());
    let line = run_against(&nobody);
    assert!(line.contains(&format!("cannot reach {nobody}")), "{line}");

    // Takes the request, reads it, and closes without a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::Read;
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
    });
    let line = run_against(&url);
    server.join().unwrap();
    assert!(!line.contains("cannot reach"), "{line}");
    assert!(
        line.contains(&format!(
            "the connection to {url} was lost before an answer"
        )) && line.contains("may have been done"),
        "{line}"
    );
}
