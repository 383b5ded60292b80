//! A PostgreSQL server of the test's own (initdb in a temporary directory, on a free port),
//! for tests that restart the database under load without disturbing the shared server the
//! other tests use. Uses the server binaries of the machine's PostgreSQL
//! (`/usr/lib/postgresql/*/bin`); as root, runs them as the `postgres` user (initdb refuses
//! root).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running private PostgreSQL server; stopped (immediately) when dropped.
pub struct PostgresServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PostgresServer {
    /// initdb (trust auth, user `postgres`) and start on a free loopback port.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
                    .filter(|bin| bin.join("initdb").exists())
                    .max()
            })
            .expect(
                "the PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb): install \
                 Debian's postgresql package",
            );
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let server = Self {
            bin,
            data,
            port,
            _dir: dir,
        };
        chown_to_postgres(server._dir.path());
        server.run(
            "initdb",
            &[
                "-D",
                path(&server.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        server.pg_ctl(&["start", "-w"]);
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database.
    pub fn create_database(&self, name: &str) {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        );
    }

    /// Stops the server (`-m fast`: open connections are terminated, as a restart does).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-w", "-m", "fast"]);
    }

    /// Starts it again after [`Self::stop`], on the same port and data.
    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-w"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            path(self._dir.path())
        );
        let log = self._dir.path().join("server.log");
        let mut all = vec!["-D", path(&self.data), "-l", path(&log), "-o", &options];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .output()
            .expect("run a PostgreSQL binary");
        assert!(
            output.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.pg_ctl(&["stop", "-m", "immediate"])
        }));
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

fn chown_to_postgres(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown {}", dir.display());
    }
}
