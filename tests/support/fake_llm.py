#!/usr/bin/env python3
"""A fake OpenAI-compatible chat endpoint for tests (python3 stdlib only).

Listens on 127.0.0.1 (port 0 unless --port) and prints its port as the first line of stdout.
POST /v1/chat/completions answers in OpenAI's format:

  reply    "echo: <last user message>"
  usage    prompt_tokens = words of every message sent, completion_tokens = words of the
           reply, total_tokens = their sum

The last user message scripts the answer when it starts with one of:

  FAIL500 ...     HTTP 500 with an OpenAI error body
  FAIL400 ...     HTTP 400
  SLEEP <ms> ...  waits <ms> before answering; if the client closes the connection first,
                  records {"event": "closed_early", "after_ms": N} and answers nothing
  BIG <bytes>     a reply of <bytes> 'x' characters
  NOUSAGE ...     an answer without "usage"
  GARBAGE ...     HTTP 200 with a body that is not JSON

Flags:
  --key KEY       the Authorization header must be "Bearer KEY", else HTTP 401
  --record FILE   appends one JSON line per request: {"path", "auth", "body"} (auth is the
                  Authorization header or null) and one per closed_early event
"""

import argparse
import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
LOCK = threading.Lock()


def record(entry):
    if not ARGS.record:
        return
    with LOCK, open(ARGS.record, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()


def words(text):
    return len(text.split())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def answer(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def error(self, status, message):
        self.answer(status, json.dumps({"error": {"message": message, "type": "fake"}}))

    def peer_closed(self):
        """Whether the client closed its side (the request was read completely already)."""
        sock = self.connection
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        auth = self.headers.get("Authorization")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        record({"path": self.path, "auth": auth, "body": body})
        if self.path != "/v1/chat/completions":
            return self.error(404, "no route " + self.path)
        if ARGS.key is not None and auth != "Bearer " + ARGS.key:
            return self.error(401, "Incorrect API key provided")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self.error(400, "messages required")
        messages = body["messages"]
        last = ""
        for m in messages:
            if m.get("role") == "user":
                last = m.get("content", "")
        parts = last.split()
        cmd = parts[0] if parts else ""
        if cmd == "FAIL500":
            return self.error(500, "fake internal error")
        if cmd == "FAIL400":
            return self.error(400, "fake bad request")
        if cmd == "GARBAGE":
            return self.answer(200, "this is not json", "text/plain")
        if cmd == "SLEEP":
            ms = int(parts[1]) if len(parts) > 1 else 1000
            start = time.monotonic()
            while (time.monotonic() - start) * 1000 < ms:
                if self.peer_closed():
                    after = int((time.monotonic() - start) * 1000)
                    record({"event": "closed_early", "after_ms": after, "message": last})
                    self.close_connection = True
                    return
                time.sleep(0.01)
        reply = "echo: " + last
        if cmd == "BIG":
            reply = "x" * int(parts[1])
        prompt = sum(words(m.get("content", "")) for m in messages)
        completion = words(reply)
        answer = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                }
            ],
        }
        if cmd != "NOUSAGE":
            answer["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        self.answer(200, json.dumps(answer))


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--key", default=None)
    p.add_argument("--record", default=None)
    ARGS = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
