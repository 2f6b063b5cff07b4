"""A lying relay for bgcopy integration tests: it stands in front of a bgcopy-peerd on
127.0.0.1, passes every request and answer on, and damages the bodies of some answers, as a
member of the fleet holding the peer key could (the signed fields stay true)."""

import http.client
import http.server
import threading


class Liar:
    """A relay in front of a peerd: requests go on unchanged, answers come back unchanged but
    for the body of a 206 answer to a path starting with one of `paths`, whose first byte is
    flipped. `altered` counts the bytes of the bodies it altered."""

    def __init__(self, target_port, paths=("/v1/content",)):
        liar = self
        self.altered = 0
        self.lock = threading.Lock()

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def relay(self):
                c = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                hdrs = {k: v for k, v in self.headers.items()
                        if k.lower() not in ("connection", "keep-alive")}
                c.request(self.command, self.path, headers=hdrs)
                resp = c.getresponse()
                body = resp.read() if self.command != "HEAD" else b""
                if resp.status == 206 and self.path.startswith(tuple(paths)) and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                    with liar.lock:
                        liar.altered += len(body)
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() in ("connection", "keep-alive", "transfer-encoding", "date"):
                        continue
                    self.send_header(k, v)
                if resp.getheader("Transfer-Encoding"):
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                try:
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                except OSError:
                    pass   # the client dropped us: what a liar deserves
                c.close()
                self.close_connection = True

            do_GET = relay
            do_HEAD = relay

        class S(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass   # a dropped connection is the expected end of a lie

        self.server = S(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.server.shutdown()
        self.server.server_close()

    @property
    def peer(self):
        return f"127.0.0.1:{self.port}"
