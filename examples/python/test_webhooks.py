"""Webhooks out, verified by the reference ``standardwebhooks`` package (PyPI).

A chatsync server with one ``[[webhooks]]`` endpoint pointing at ``webhook_receiver.py`` on
loopback; the test sends messages over gRPC and waits for each one's event at the receiver.
"""

from __future__ import annotations

import base64
import os
import queue
import threading
import time
import uuid

import pytest
from chatsync_client import ChatSyncClient, pb
from test_chatsync import TIMEOUT, Server
from webhook_receiver import make_receiver

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


@pytest.fixture(scope="module")
def receiver():
    """(HTTP server, queue of (webhook-id, event)) on a free loopback port."""
    events: queue.Queue = queue.Queue()
    http = make_receiver(SECRET, lambda webhook_id, event: events.put((webhook_id, event)))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield http, events
    http.shutdown()


@pytest.fixture(scope="module")
def webhook_server(tmp_path_factory, receiver):
    http, _ = receiver
    tmp = tmp_path_factory.mktemp("chatsync-webhooks")
    (tmp / "hook.secret").write_text(SECRET + "\n")
    (tmp / "wrong.secret").write_text("whsec_" + base64.b64encode(os.urandom(24)).decode())
    host, port = http.server_address
    config = f"""
[[webhooks]]
id = "py"
url = "http://{host}:{port}/hook"
secret_file = "{tmp / 'hook.secret'}"
sessions = ["notes"]
events = ["message.created"]
allow_private_network = true

[[webhooks]]
id = "py-wrong"
url = "http://{host}:{port}/hook"
secret_file = "{tmp / 'wrong.secret'}"
sessions = ["notes"]
allow_private_network = true
"""
    s = Server(tmp, tokens=False, extra_tables=config)
    yield s
    s.stop()


def _next(events: queue.Queue):
    try:
        return events.get(timeout=TIMEOUT)
    except queue.Empty:
        raise AssertionError(f"no webhook within {TIMEOUT} s") from None


def test_every_message_arrives_verified_once_and_in_seq_order(webhook_server, receiver):
    _, events = receiver
    chat = f"py-{uuid.uuid4().hex[:8]}"
    texts = [f"hello {i}" for i in range(20)]
    with ChatSyncClient(webhook_server.target) as client:
        sent = [client.send("notes", chat, text).message for text in texts]

    got = [_next(events) for _ in texts]
    ids = [webhook_id for webhook_id, _ in got]
    assert len(set(ids)) == len(ids)
    for (webhook_id, event), message, text in zip(got, sent, texts):
        assert event["type"] == "message.created"
        assert event["session_id"] == "notes"
        seq = int(event["seq"])  # the JSON mapping gives 64-bit integers as strings
        assert webhook_id == f"notes:{seq}"
        created = event["messageCreated"]
        assert created["chatId"] == chat
        assert created["text"] == text
        assert int(created["seq"]) == message.seq
    seqs = [int(event["seq"]) for _, event in got]
    assert seqs == sorted(seqs)


def test_a_receiver_with_another_secret_fails_the_endpoint(webhook_server):
    """Endpoint `py-wrong` signs with a secret the receiver does not hold: the reference
    package rejects every request (401), and chatsync shows the endpoint failing, cursor held."""
    chat = f"py-{uuid.uuid4().hex[:8]}"
    with ChatSyncClient(webhook_server.target) as client:
        sent = client.send("notes", chat, "to the wrong secret").message
        request = pb.GetWebhookStatusRequest(webhook_id="py-wrong", session_id="notes")
        deadline = time.monotonic() + TIMEOUT
        while True:  # waits for the first failed attempt to be recorded
            (status,) = client.stub.GetWebhookStatus(request).statuses
            if status.failures > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert status.last_status == 401, status
    assert status.state == pb.WEBHOOK_STATE_FAILING, status
    assert status.cursor < sent.seq <= status.head_seq, status
    assert status.lag >= 1
