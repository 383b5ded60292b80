//! The CLI's message-lifecycle commands against a running `chatsync serve` (issue 17):
//! `react`, `edit` and `delete` (text and `--json`), `send --attach` and `--reply-to`, and
//! `messages` printing each message's attachments (name, type, size), reply, edit, deletion,
//! reactions and receipts.

use std::process::Stdio;

use crate::common::*;
use serde_json::Value;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_chatsync")
}

/// Starts `chatsync serve` with a `local` session `notes` and waits until it listens.
async fn serve(dir: &std::path::Path) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let path = dir.join("chatsync.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite://{}\"\n\
             [[sessions]]\nid = \"notes\"\nsource = \"local\"\n",
            dir.join("chatsync.db").display()
        ),
    )
    .expect("config");
    let child = tokio::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chatsync serve");
    let url = format!("http://127.0.0.1:{port}");
    eventually("the server to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    (child, url)
}

/// Runs the CLI against `url`: (success, stdout, stderr).
async fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        HANG_GUARD,
        tokio::process::Command::new(binary())
            .args(args)
            .args(["--server", url])
            .output(),
    )
    .await
    .expect("the CLI ends in time")
    .expect("run the CLI");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the CLI and expects success; returns stdout.
async fn ok(url: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = cli(url, args).await;
    assert!(success, "{args:?} failed: {stderr}");
    stdout
}

/// Runs the CLI with `--json` and parses its one line.
async fn json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let stdout = ok(url, &all).await;
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

fn id_of(response: &Value) -> String {
    response["message"]["id"]
        .as_str()
        .expect("an id (a string: 64 bits)")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reacts_edits_deletes_and_prints_attachments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, url) = serve(dir.path()).await;
    let url = url.as_str();

    let sent = json(url, &["send", "notes", "general", "first words"]).await;
    let id = id_of(&sent);

    // react: --json is the ReactToMessageResponse in the protobuf JSON mapping.
    let reacted = json(
        url,
        &["react", "notes", &id, "👍", "--request-id", "react-1"],
    )
    .await;
    assert_eq!(reacted["changed"], true, "{reacted}");
    assert_eq!(reacted["duplicate"], false, "{reacted}");
    assert_eq!(reacted["message"]["reactions"][0]["emoji"], "👍");
    assert_eq!(
        reacted["message"]["reactions"][0]["reactors"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // The same request id again: nothing is done, and the text says so.
    let again = ok(
        url,
        &["react", "notes", &id, "👍", "--request-id", "react-1"],
    )
    .await;
    assert!(
        again.starts_with(&format!(
            "message {id} reaction recorded (already done with this request id"
        )),
        "{again}"
    );
    assert!(again.contains("reactions 👍 1 (me)"), "{again}");
    // An empty emoji takes the reaction back.
    let removed = json(url, &["react", "notes", &id, ""]).await;
    assert_eq!(removed["changed"], true, "{removed}");
    assert_eq!(removed["message"]["reactions"], serde_json::json!([]));

    // edit: the earlier text is kept.
    let edited = ok(url, &["edit", "notes", &id, "second words"]).await;
    let mut lines = edited.lines();
    assert_eq!(lines.next(), Some(format!("message {id} edited").as_str()));
    let first = lines.next().expect("the message line");
    assert!(first.contains(": second words (TEXT, SENT)"), "{edited}");
    assert!(edited.contains("\n        edited at "), "{edited}");
    assert!(edited.contains("1 earlier text"), "{edited}");
    assert!(edited.contains("was \"first words\" until "), "{edited}");
    let edited = json(
        url,
        &[
            "edit",
            "notes",
            &id,
            "third words",
            "--request-id",
            "edit-1",
        ],
    )
    .await;
    assert_eq!(edited["message"]["edited"], true);
    assert_eq!(edited["message"]["text"], "third words");
    let earlier: Vec<&str> = edited["message"]["earlierTexts"]
        .as_array()
        .expect("earlier texts")
        .iter()
        .map(|e| e["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(earlier, ["first words", "second words"]);

    // A reply, printed as one.
    let reply = json(
        url,
        &["send", "notes", "general", "a reply", "--reply-to", &id],
    )
    .await;
    assert_eq!(reply["message"]["replyTo"]["messageId"], id.as_str());

    // delete: kind DELETED, the text gone; editing it afterwards fails.
    let deleted = ok(url, &["delete", "notes", &id]).await;
    assert!(
        deleted.starts_with(&format!("message {id} deleted\n")),
        "{deleted}"
    );
    assert!(deleted.contains("(DELETED, "), "{deleted}");
    assert!(deleted.contains("\n        deleted "), "{deleted}");
    assert!(!deleted.contains("third words"), "{deleted}");
    let deleted = json(url, &["delete", "notes", &id, "--request-id", "del-1"]).await;
    assert_eq!(deleted["changed"], false, "deleted already: {deleted}");
    assert_eq!(deleted["message"]["kind"], "MESSAGE_KIND_DELETED");
    let (success, _, stderr) = cli(url, &["edit", "notes", &id, "too late"]).await;
    assert!(!success, "editing a deleted message fails");
    assert!(stderr.contains("FailedPrecondition"), "{stderr}");

    // send --attach; messages prints each attachment's name, type and size.
    let png = dir.path().join("dot.png");
    let png_bytes = b"\x89PNG\r\n\x1a\n not really a picture";
    std::fs::write(&png, png_bytes).expect("png");
    let pdf = dir.path().join("report.pdf");
    std::fs::write(&pdf, vec![b'%'; 3 * 1024]).expect("pdf");
    let with_files = json(
        url,
        &[
            "send",
            "notes",
            "files",
            "two files",
            "--attach",
            png.to_str().expect("path"),
            "--attach",
            pdf.to_str().expect("path"),
        ],
    )
    .await;
    assert_eq!(with_files["message"]["kind"], "MESSAGE_KIND_MEDIA");
    let sha = with_files["message"]["attachments"][0]["sha256"]
        .as_str()
        .expect("sha256")
        .to_owned();
    let listed = ok(url, &["messages", "notes"]).await;
    assert!(
        listed.contains(&format!(
            "\n        attachment dot.png (image/png, {} bytes, sha256 {sha})\n",
            png_bytes.len()
        )),
        "{listed}"
    );
    assert!(
        listed.contains("\n        attachment report.pdf (application/pdf, 3.0 KiB, sha256 "),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("\n        reply to message {id}\n")),
        "{listed}"
    );
    let listed = ok(url, &["messages", "notes", "--chat", "files", "--json"]).await;
    let message: Value = serde_json::from_str(listed.trim()).expect("json");
    assert_eq!(message["attachments"][1]["fileName"], "report.pdf");
    assert_eq!(message["attachments"][1]["mimeType"], "application/pdf");
    assert_eq!(message["attachments"][1]["sizeBytes"], "3072");
}
