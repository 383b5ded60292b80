"""chatsync over TLS from Python: grpcio with the root certificate of a CA made for the test.

The CA and the server's certificate (for ``localhost`` and 127.0.0.1) are made with the
``openssl`` command; the server (``$CHATSYNC_BIN``) gets ``tls_cert_file`` and ``tls_key_file``
and API tokens, and the client trusts the CA through ``root_certificates``.
"""

from __future__ import annotations

import pathlib
import subprocess

import grpc
import pytest

from chatsync_client import ChatSyncClient, pb
from test_chatsync import ALL_TOKEN as TOKEN
from test_chatsync import TIMEOUT, Server


def _make_certificates(tmp: pathlib.Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=chatsync python test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (tmp / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "extendedKeyUsage=serverAuth\n"
        "basicConstraints=CA:FALSE\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chatsync-tls")
    _make_certificates(tmp)
    extra = (
        f'tls_cert_file = "{tmp / "server.pem"}"\n'
        f'tls_key_file = "{tmp / "server.key"}"\n'
    )
    s = Server(tmp, tokens=True, extra_config=extra)
    s.ca = (tmp / "ca.pem").read_bytes()
    yield s
    s.stop()


def test_grpcio_with_the_root_certificate_sends_and_subscribes(tls_server):
    target = f"localhost:{tls_server.port}"
    with ChatSyncClient(target, token=TOKEN, root_certificates=tls_server.ca) as client:
        grpc.channel_ready_future(client.channel).result(timeout=TIMEOUT)
        sent = client.send("notes", "general", "hello over TLS", client_message_id="tls-1")
        assert sent.message.text == "hello over TLS"
        call = client.subscribe("notes", after_seq=0)
        texts = []
        for event in call:
            kind = event.WhichOneof("event")
            if kind == "message_created":
                texts.append(event.message_created.text)
            if kind == "ready":
                break
        call.cancel()
        assert texts == ["hello over TLS"]
        sessions = client.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=client.metadata, timeout=TIMEOUT
        ).sessions
        assert sorted(s.session_id for s in sessions) == ["demo", "notes"]


def test_the_token_is_still_required_over_tls(tls_server):
    target = f"localhost:{tls_server.port}"
    with ChatSyncClient(target, root_certificates=tls_server.ca) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.status("notes")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_client_without_the_root_certificate_is_refused(tls_server):
    # The system roots do not include the test's CA: the handshake fails.
    target = f"localhost:{tls_server.port}"
    with ChatSyncClient(target, token=TOKEN, tls=True) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.ListSessions(pb.ListSessionsRequest(), metadata=client.metadata,
                                     timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_plain_text_client_is_refused(tls_server):
    with ChatSyncClient(f"127.0.0.1:{tls_server.port}", token=TOKEN) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.ListSessions(pb.ListSessionsRequest(), metadata=client.metadata,
                                     timeout=TIMEOUT)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED)
