"""chatsync from Python, against the real server binary.

A session-scoped fixture starts `chatsync serve` (``$CHATSYNC_BIN``, default
``target/debug/chatsync`` in the repository) on a free loopback port with a temporary
configuration and SQLite file, and a second one with API tokens; both are killed at the end.
Stubs come from ``generate.sh`` (run by ``run_tests.sh``).
"""

from __future__ import annotations

import os
import pathlib
import queue
import socket
import subprocess
import threading
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatsync_client import ChatSyncClient, follow, load_cursor, pb

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
SERVICE = "chatsync.v1.ChatSyncService"
ALL_TOKEN = "py-test-token-all-sessions"
NOTES_TOKEN = "py-test-token-notes-only"
TIMEOUT = 10  # seconds for any single event we wait for


# -- the server -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self, tmp: pathlib.Path, tokens: bool, extra_config: str = "", extra_tables: str = ""
    ) -> None:
        """``extra_config``: top-level keys, put first; ``extra_tables``: tables
        (``[[webhooks]]`` …), put last."""
        binary = pathlib.Path(os.environ.get("CHATSYNC_BIN", REPO / "target/debug/chatsync"))
        if not binary.is_absolute():
            binary = REPO / binary
        if not binary.exists():
            pytest.fail(f"{binary} is missing: run `cargo build --bin chatsync` in {REPO}")
        self.port = _free_port()
        self.target = f"127.0.0.1:{self.port}"
        config = extra_config + f"""
listen = "{self.target}"
database_url = "sqlite://{tmp / 'chatsync.db'}"
heartbeat_secs = 1

[[sessions]]
id = "demo"
source = "whatsapp-export"
path = "{REPO / 'samples' / 'whatsapp'}"

[[sessions]]
id = "notes"
source = "local"
"""
        if tokens:
            config += f"""
[[tokens]]
token = "{ALL_TOKEN}"
sessions = ["*"]

[[tokens]]
token = "{NOTES_TOKEN}"
sessions = ["notes"]
"""
        (tmp / "chatsync.toml").write_text(config + extra_tables)
        self.log_path = tmp / "server.log"
        self.log = open(self.log_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSYNC_")}
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--config", str(tmp / "chatsync.toml")],
            cwd=tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"chatsync exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"chatsync did not listen on {self.target} within 60 s:\n{self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("chatsync"), tokens=False)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def token_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("chatsync-tokens"), tokens=True)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(server):
    with ChatSyncClient(server.target) as c:
        grpc.channel_ready_future(c.channel).result(timeout=TIMEOUT)
        yield c


@pytest.fixture(scope="session")
def first_sync(client):
    """The frames of the first full sync of `demo` (limit_per_chat=0), taken once."""
    frames = []
    client.sync("demo", limit_per_chat=0, on_progress=frames.append)
    return frames


# -- a subscription read with timeouts ---------------------------------------------------------


class Subscription:
    """Reads a SubscribeMessages stream on a thread so that the test can wait with a timeout."""

    def __init__(self, client: ChatSyncClient, session_id: str, **kwargs) -> None:
        self.call = client.subscribe(session_id, **kwargs)
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
        except grpc.RpcError as err:
            self.events.put(err)

    def next(self, skip_heartbeats: bool = True) -> pb.SubscribeMessagesResponse:
        while True:
            try:
                item = self.events.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no event within {TIMEOUT} s") from None
            if isinstance(item, grpc.RpcError):
                raise item
            if skip_heartbeats and item.WhichOneof("event") == "heartbeat":
                continue
            return item

    def until_ready(self):
        """The replayed events (no heartbeats), and the `ready` event that ends them."""
        replay = []
        while True:
            event = self.next()
            if event.WhichOneof("event") == "ready":
                return replay, event
            replay.append(event)

    def cancel(self) -> None:
        self.call.cancel()


def _kind(event) -> str:
    return event.WhichOneof("event")


def _chat() -> str:
    return f"py-{uuid.uuid4().hex[:8]}"


# -- health ------------------------------------------------------------------------------------


def test_health_check_reports_serving(server):
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in (SERVICE, ""):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


# -- SyncChats and GetSyncStatus ---------------------------------------------------------------


def test_sync_chats_streams_ordered_frames(client, first_sync):
    frames = first_sync
    assert frames[0].stage == pb.SYNC_STAGE_STARTED
    assert (frames[0].n_chats, frames[0].current_chat, frames[0].messages_synced) == (3, 0, 0)
    assert frames[-1].stage == pb.SYNC_STAGE_COMPLETED
    assert frames[-1].total_messages_synced == 30
    assert frames[-1].total_unplaced_lines == 0
    assert {f.sync_id for f in frames} == {frames[0].sync_id} and frames[0].sync_id
    assert all(f.session_id == "demo" and f.n_chats == 3 for f in frames)
    middle = frames[1:-1]
    assert not [f for f in middle if f.stage in (pb.SYNC_STAGE_CHAT_FAILED, pb.SYNC_STAGE_FAILED)]
    # CHAT_SAVED i (0 messages), then MESSAGES_SAVED i, for i = 1..3, each with its chat id.
    saved = [f for f in middle if f.stage == pb.SYNC_STAGE_CHAT_SAVED]
    assert [f.current_chat for f in saved] == [1, 2, 3]
    assert all(f.messages_synced == 0 and f.chat_id for f in saved)
    per_chat = {}
    for f in middle:
        if f.stage == pb.SYNC_STAGE_MESSAGES_SAVED:
            chat_saved = next(s for s in saved if s.current_chat == f.current_chat)
            assert f.chat_id == chat_saved.chat_id
            assert frames.index(f) > frames.index(chat_saved)
            per_chat[f.chat_id] = f.messages_synced
    assert sum(per_chat.values()) == 30
    # Totals never go down.
    totals = [f.total_messages_synced for f in frames]
    assert totals == sorted(totals)
    # The chats the frames named are the chats stored.
    chats = client.stub.ListChats(pb.ListChatsRequest(session_id="demo")).chats
    assert sorted(c.chat_id for c in chats) == sorted(f.chat_id for f in saved)
    assert sorted(c.name for c in chats) == ["Alice Moreau", "Book club", "Weekend Hike"]


def test_sync_again_is_idempotent_and_status_reports_it(client, first_sync):
    # 3 chats + 30 messages + 6 contacts + 6 participants (the senders), each one seq, and
    # the end of the first run (`sync_run_finished`)
    assert client.status("demo").head_seq == 46
    again = []
    last = client.sync("demo", limit_per_chat=0, on_progress=again.append)
    assert last.stage == pb.SYNC_STAGE_COMPLETED
    assert last.total_messages_synced == 0
    assert again[0].n_chats == 3 and again[0].sync_id != first_sync[0].sync_id

    status = client.status("demo")
    assert status.session_id == "demo"
    assert status.source == "whatsapp-export"
    assert status.state == pb.SYNC_STATE_SUCCEEDED
    assert (status.chat_count, status.message_count) == (3, 30)
    # the same again stores nothing: one seq, the end of the second run
    assert status.head_seq == 47
    assert status.last_error == ""
    assert status.progress.stage == pb.SYNC_STAGE_COMPLETED
    assert status.progress.sync_id == last.sync_id
    assert status.HasField("started_at") and status.HasField("finished_at")
    started, finished = status.started_at.ToDatetime(), status.finished_at.ToDatetime()
    assert started <= finished
    assert abs(time.time() - finished.timestamp()) < 300  # UTC instants, not local wall time


def test_list_messages_pages_by_seq(client, first_sync):
    seen, after = [], 0
    while True:
        page = client.stub.ListMessages(
            pb.ListMessagesRequest(session_id="demo", after_seq=after, limit=7)
        )
        assert len(page.messages) <= 7
        seen += page.messages
        if not page.has_more:
            break
        assert page.next_seq == page.messages[-1].seq
        after = page.next_seq
    assert len(seen) == 30
    seqs = [m.seq for m in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == 30
    assert len({m.id for m in seen}) == 30
    assert all(m.session_id == "demo" and m.provider_message_id for m in seen)


def test_status_of_a_never_synced_session(token_server):
    with ChatSyncClient(token_server.target, token=ALL_TOKEN) as c:
        status = c.status("demo")
    assert status.state == pb.SYNC_STATE_NEVER_SYNCED
    assert (status.chat_count, status.message_count, status.head_seq) == (0, 0, 0)
    assert status.source == "whatsapp-export"


# -- SendMessage -------------------------------------------------------------------------------


def test_send_message_is_idempotent_on_client_message_id(client):
    chat, key = _chat(), f"key-{uuid.uuid4()}"
    first = client.send("notes", chat, "hello from Python", client_message_id=key)
    again = client.send("notes", chat, "hello from Python", client_message_id=key)
    assert first.duplicate is False
    assert again.duplicate is True
    assert again.message.id == first.message.id
    assert again.message.seq == first.message.seq
    m = first.message
    assert (m.session_id, m.chat_id, m.text, m.client_message_id) == ("notes", chat, "hello from Python", key)
    assert m.kind == pb.MESSAGE_KIND_TEXT
    assert m.status == pb.MESSAGE_STATUS_SENT  # the local source sends at once
    assert m.from_me is True
    # Only one message was stored.
    stored = client.stub.ListMessages(pb.ListMessagesRequest(session_id="notes", chat_id=chat))
    assert [x.id for x in stored.messages] == [m.id]
    # Another key is another message.
    other = client.send("notes", chat, "hello from Python", client_message_id=f"{key}-2")
    assert other.duplicate is False and other.message.id != m.id


def test_status_only_moves_forward(client):
    sent = client.send("notes", _chat(), "receipt me").message
    update = client.stub.UpdateMessageStatus
    read = update(pb.UpdateMessageStatusRequest(session_id="notes", message_id=sent.id, status=pb.MESSAGE_STATUS_READ))
    assert read.changed and read.message.status == pb.MESSAGE_STATUS_READ
    back = update(pb.UpdateMessageStatusRequest(session_id="notes", message_id=sent.id, status=pb.MESSAGE_STATUS_DELIVERED))
    assert not back.changed and back.message.status == pb.MESSAGE_STATUS_READ


# -- SubscribeMessages -------------------------------------------------------------------------


def test_subscribe_replays_every_seq_then_ready(client):
    client.send("notes", _chat(), "so that notes is not empty")
    head = client.status("notes").head_seq
    sub = Subscription(client, "notes", after_seq=0)
    try:
        replay, ready = sub.until_ready()
    finally:
        sub.cancel()
    # Every change of the session, once, in seq order, with no hole.
    assert [e.seq for e in replay] == list(range(1, head + 1))
    assert ready.ready.head_seq == head and ready.seq == head


def test_subscribe_resumes_from_after_seq_without_gap(client):
    chat, chat2 = _chat(), _chat()
    a = client.send("notes", chat, "before the first subscription").message

    sub = Subscription(client, "notes", after_seq=0)
    replay, ready = sub.until_ready()
    sub.cancel()
    assert a.id in [e.message_created.id for e in replay if _kind(e) == "message_created"]
    last = ready.seq
    assert last == replay[-1].seq == ready.ready.head_seq

    # While nobody listens:
    b1 = client.send("notes", chat, "b1").message
    b2 = client.send("notes", chat, "b2").message
    b3 = client.send("notes", chat2, "b3").message  # a new chat: chat_updated first
    head = client.status("notes").head_seq

    sub = Subscription(client, "notes", after_seq=last)
    try:
        missed, ready = sub.until_ready()
        # Exactly the changes after `last`, in seq order, with no gap.
        assert [e.seq for e in missed] == list(range(last + 1, head + 1))
        created = [e.message_created for e in missed if _kind(e) == "message_created"]
        assert [(m.id, m.text) for m in created] == [(b1.id, "b1"), (b2.id, "b2"), (b3.id, "b3")]
        assert [m.seq for m in created] == [b1.seq, b2.seq, b3.seq]
        chats = [e for e in missed if _kind(e) == "chat_updated"]
        assert [(e.chat_updated.chat_id, e.chat_updated.seq) for e in chats] == [(chat2, chats[0].seq)]
        assert chats[0].seq < b3.seq
        statuses = [e.status_updated for e in missed if _kind(e) == "status_updated"]
        assert {s.message_id for s in statuses} <= {b1.id, b2.id, b3.id}
        assert len(missed) == len(created) + len(chats) + len(statuses)
        assert ready.ready.head_seq == head and ready.seq == head

        # Then live, on the same stream.
        b4 = client.send("notes", chat, "b4").message
        live = sub.next()
        assert _kind(live) == "message_created"
        assert (live.message_created.id, live.seq) == (b4.id, head + 1)
        # Heartbeats (every second here) carry the last seq sent.
        last_sent = live.seq
        while True:
            event = sub.next(skip_heartbeats=False)
            if _kind(event) == "heartbeat":
                break
            last_sent = event.seq
        assert event.seq == last_sent
        assert event.heartbeat.HasField("server_time")
    finally:
        sub.cancel()


def test_subscribe_filters_by_chat(client):
    mine, other = _chat(), _chat()
    start = client.status("notes").head_seq
    client.send("notes", other, "not for me")
    m = client.send("notes", mine, "for me").message
    sub = Subscription(client, "notes", after_seq=start, chat_ids=[mine])
    try:
        replay, _ = sub.until_ready()
    finally:
        sub.cancel()
    assert replay, "the chat's changes are replayed"
    assert all(
        getattr(e, _kind(e)).chat_id == mine for e in replay
    ), [str(e) for e in replay]
    assert m.id in [e.message_created.id for e in replay if _kind(e) == "message_created"]


def test_example_follow_resumes_from_a_saved_cursor(client, tmp_path):
    """The example client's `follow`: catch up, stop, send more, catch up again."""
    cursor = tmp_path / "notes.cursor"
    chat = _chat()
    client.send("notes", chat, "first")
    seen = []
    follow(client, "notes", cursor, seen.append, until_ready=True)
    head = client.status("notes").head_seq
    assert load_cursor(cursor) == head == seen[-1].seq

    new = [client.send("notes", chat, f"more {i}").message for i in range(3)]
    seen2 = []
    follow(client, "notes", cursor, seen2.append, until_ready=True)
    assert [e.seq for e in seen2] == list(range(head + 1, client.status("notes").head_seq + 1))
    assert [e.message_created.id for e in seen2 if _kind(e) == "message_created"] == [m.id for m in new]
    assert load_cursor(cursor) == seen2[-1].seq


# -- typed errors ------------------------------------------------------------------------------


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            for _ in result:  # a stream fails when read
                pass
    return err.value


@pytest.mark.parametrize(
    "name, call",
    [
        ("GetSyncStatus", lambda c: c.status("no-such-session")),
        ("SendMessage", lambda c: c.send("no-such-session", "general", "hi")),
        ("SyncChats", lambda c: c.sync("no-such-session")),
        ("SubscribeMessages", lambda c: c.subscribe("no-such-session", after_seq=0)),
        ("ListChats", lambda c: c.stub.ListChats(pb.ListChatsRequest(session_id="no-such-session"))),
        (
            "UpdateMessageStatus",
            lambda c: c.stub.UpdateMessageStatus(
                pb.UpdateMessageStatusRequest(session_id="notes", message_id=10**12, status=pb.MESSAGE_STATUS_READ)
            ),
        ),
    ],
)
def test_not_found(client, name, call):
    err = _error(lambda: call(client))
    assert err.code() == grpc.StatusCode.NOT_FOUND, (name, err.details())
    assert err.details()


def test_invalid_argument(client):
    for call in (
        lambda: client.send("notes", "general", ""),
        lambda: client.send("notes", "", "no chat"),
        lambda: client.send("notes", "general", "x" * 65537),
        lambda: client.stub.ListMessages(pb.ListMessagesRequest(session_id="notes", limit=5000)),
        lambda: client.subscribe("notes", after_seq=10**9),
    ):
        err = _error(call)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert err.details()
    # The limit is in bytes of UTF-8, inclusive.
    assert client.send("notes", _chat(), "x" * 65536).message.text == "x" * 65536


def test_failed_precondition_on_a_read_only_source(client):
    err = _error(lambda: client.send("demo", "alice-moreau", "hi"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "read-only" in err.details()


def test_tokens(token_server):
    target = token_server.target
    cases = [
        (None, "notes", grpc.StatusCode.UNAUTHENTICATED),
        ("wrong-token", "notes", grpc.StatusCode.UNAUTHENTICATED),
        (NOTES_TOKEN, "demo", grpc.StatusCode.PERMISSION_DENIED),
    ]
    for token, session, code in cases:
        with ChatSyncClient(target, token=token) as c:
            for call in (lambda: c.status(session), lambda: c.subscribe(session, after_seq=0)):
                err = _error(call)
                assert err.code() == code, (token, session, err.details())
    # Not `Bearer TOKEN`:
    with ChatSyncClient(target) as c:
        with pytest.raises(grpc.RpcError) as err:
            c.stub.GetSyncStatus(
                pb.GetSyncStatusRequest(session_id="notes"), metadata=(("authorization", NOTES_TOKEN),)
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # In scope:
    with ChatSyncClient(target, token=NOTES_TOKEN) as c:
        assert c.send("notes", "general", "with a token").message.status == pb.MESSAGE_STATUS_SENT
    with ChatSyncClient(target, token=ALL_TOKEN) as c:
        assert c.status("demo").source == "whatsapp-export"
        assert c.status("notes").source == "local"
    # The health service needs no token.
    with grpc.insecure_channel(target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
