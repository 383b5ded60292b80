//! `chatsync serve` as a process of its own, for tests that race replicas or kill one.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;

use chatsync::grpc::pb::chat_sync_service_client::ChatSyncServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

/// A `chatsync serve` process on `127.0.0.1:0`.
pub struct Replica {
    child: tokio::process::Child,
    pub url: String,
}

impl Replica {
    /// Starts `chatsync serve --config CONFIG` and waits for its "listening on" line.
    pub async fn start(config: &Path) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatsync"))
            .args(["serve", "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                if std::env::var_os("TEST_LOG").is_some() {
                    "info"
                } else {
                    "warn"
                },
            )
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chatsync serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next_line()
            .await
            .expect("read stdout")
            .expect("the server says where it listens");
        let url = line
            .strip_prefix("chatsync listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, url }
    }

    pub async fn client(&self) -> ChatSyncServiceClient<Channel> {
        ChatSyncServiceClient::connect(self.url.clone())
            .await
            .expect("connect to replica")
    }

    /// kill -9.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("reaped");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Sends SIGSTOP: the process stalls (a VM pause, a stop-the-world stall) with its
    /// connections open. `kill_on_drop` still ends it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Sends SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Sends SIGTERM (a graceful shutdown).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, failing the test after `guard` (a bound against a hung
    /// test, not a timing assertion).
    pub async fn wait_exit(&mut self, guard: std::time::Duration) -> std::process::ExitStatus {
        tokio::time::timeout(guard, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the server did not exit within {guard:?}"))
            .expect("wait for the server")
    }

    /// The process's peak resident set size (`VmHWM` in `/proc/PID/status`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }
}
