//! PostgreSQL and Redis servers of a test's own, on free ports, for tests that stop, kill and
//! restart them — never the shared ones other tests use.
//!
//! PostgreSQL: `initdb` into a temporary directory and `pg_ctl` (as the `postgres` user when the
//! test runs as root, which PostgreSQL refuses to run as). Redis: a `redis-server` child with no
//! persistence, so a restart loses everything, as in production without AOF/RDB.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after), chosen at
/// random below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768–60999 by
/// default). A port the kernel handed out for `bind(0)` lies inside that range, and any outgoing
/// connection of the tests' clients could take it before the server bound it: in CI one did
/// ("cannot listen on 127.0.0.1:40331: Address already in use").
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const PORTS: u128 = 12_000;
    loop {
        let port = FIRST + (uuid::Uuid::new_v4().as_u128() % PORTS) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The newest installed PostgreSQL's programs (Debian keeps them out of PATH).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").exists());
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL server programs (initdb, pg_ctl) are installed")
}

/// A PostgreSQL server of one test's own; stopped and its files removed when dropped.
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

impl OwnPostgres {
    /// Create a cluster (trust authentication, no fsync) and start it.
    pub fn start() -> OwnPostgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = running_as_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the PostgreSQL directory to postgres");
        }
        let pg = OwnPostgres {
            bin: postgres_bin(),
            as_postgres,
            port: free_port(),
            dir,
        };
        let data = pg.data_dir();
        pg.pg_command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .run("initdb");
        pg.start_server();
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    /// `postgres://` URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Start the (stopped) server and wait until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .run("pg_ctl start");
    }

    /// Stop the server (fast shutdown: open connections are closed at once).
    pub fn stop_server(&self) {
        self.pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .run("pg_ctl stop");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

trait RunChecked {
    fn run(&mut self, what: &str);
}

impl RunChecked for Command {
    fn run(&mut self, what: &str) {
        let out = self.stdin(Stdio::null()).output().expect(what);
        assert!(
            out.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Redis server of one test's own, without persistence; killed when dropped.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let mut redis = OwnRedis {
            port: free_port(),
            child: None,
        };
        redis.start_server();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start the (stopped) server on its port, empty, and wait until it answers.
    pub fn start_server(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the server (SIGKILL): everything it held is gone.
    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill_server();
    }
}
