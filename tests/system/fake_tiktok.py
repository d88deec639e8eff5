#!/usr/bin/env python3
"""A fake TikTok Events API for tests/system/boot.sh, run inside the guest (python3 only).

Serves HTTPS on --port with --cert/--key. Accepts only what the agent must send: POST to
/open_api/v1.3/event/track/, an Access-Token header, a JSON body with event_source "offline", an
event_source_id and a non-empty data list of events with an event_id. Each accepted request is
appended to --log as one JSON line {"ok": true, "host": ..., "event_ids": [...]}; a refused one as
{"ok": false, "reason": ...} and answered 400 with TikTok's invalid-parameter code.

While the file --hang-flag exists, a request is logged as {"hang": true} and then held open
(no answer) for 10 minutes: the agent's stop must not wait for it.
"""

import argparse
import http.server
import json
import os
import ssl
import threading
import time

TRACK_PATH = "/open_api/v1.3/event/track/"


def refusal(headers, path, body):
    """Why a request is not what TikTok accepts, or None."""
    if path != TRACK_PATH:
        return f"path {path}"
    if not headers.get("Access-Token"):
        return "no Access-Token header"
    try:
        doc = json.loads(body)
    except ValueError as e:
        return f"body is not JSON: {e}"
    if doc.get("event_source") != "offline":
        return f"event_source {doc.get('event_source')!r}"
    if not doc.get("event_source_id"):
        return "no event_source_id"
    data = doc.get("data")
    if not isinstance(data, list) or not data:
        return "data is not a non-empty list"
    if not all(isinstance(e, dict) and e.get("event_id") for e in data):
        return "an event without event_id"
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--hang-flag", required=True)
    args = parser.parse_args()
    lock = threading.Lock()

    def record(entry):
        with lock, open(args.log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, doc):
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            record({"ok": False, "reason": f"GET {self.path}"})
            self.answer(405, {"code": 40002, "message": "method not allowed"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if os.path.exists(args.hang_flag):
                record({"hang": True})
                time.sleep(600)
                return
            why = refusal(self.headers, self.path, body)
            if why:
                record({"ok": False, "reason": why})
                self.answer(400, {"code": 40002, "message": why, "request_id": "fake"})
                return
            doc = json.loads(body)
            record({"ok": True, "host": self.headers.get("Host"), "event_ids": [e["event_id"] for e in doc["data"]]})
            self.answer(200, {"code": 0, "message": "OK", "request_id": "fake-ok", "data": {}})

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
