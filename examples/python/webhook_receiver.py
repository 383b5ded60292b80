"""A webhook receiver for chatsync that verifies every request per Standard Webhooks.

chatsync POSTs each change of a session to the `[[webhooks]]` endpoints that ask for it, in
seq order, at least once (README, "Webhooks"). Each request carries ``webhook-id``
(``{session}:{seq}``, the same on every retry), ``webhook-timestamp`` and
``webhook-signature``; the body is the change in the protobuf JSON mapping of
SubscribeMessagesResponse plus ``type`` and ``session_id``. The reference ``standardwebhooks``
package (PyPI) checks the signature.

Run it:

    python webhook_receiver.py --secret-file /etc/chatsync/crm.secret --port 8080

It prints one line per new event and answers 204; a bad signature answers 401, which chatsync
counts as a failing endpoint and retries, so a misconfigured secret loses nothing.
"""

from __future__ import annotations

import argparse
import pathlib
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Callable

from standardwebhooks import Webhook, WebhookVerificationError

# Called with (webhook-id, event) once per id: the event is the verified body, parsed.
OnEvent = Callable[[str, dict], None]


def make_receiver(secret: str, on_event: OnEvent, host: str = "127.0.0.1", port: int = 0) -> HTTPServer:
    """An HTTP server (not yet serving) that verifies each POST with ``secret`` (``whsec_…``)
    and calls ``on_event`` once per ``webhook-id``: retries of a delivered event are answered
    204 again and not passed on. ``port`` 0 picks a free one (``server.server_address``)."""
    webhook = Webhook(secret)
    seen: set[str] = set()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            try:
                event = webhook.verify(body, dict(self.headers))
            except WebhookVerificationError:
                self.send_response(401)
                self.end_headers()
                return
            webhook_id = self.headers["webhook-id"]
            if webhook_id not in seen:
                seen.add(webhook_id)
                on_event(webhook_id, event)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:  # quiet: one line per event comes from on_event
            pass

    return HTTPServer((host, port), Receiver)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secret-file", type=pathlib.Path, required=True, help="holds whsec_…")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    secret = args.secret_file.read_text().strip()

    def show(webhook_id: str, event: dict) -> None:
        print(webhook_id, event["type"], flush=True)

    make_receiver(secret, show, args.host, args.port).serve_forever()


if __name__ == "__main__":
    main()
