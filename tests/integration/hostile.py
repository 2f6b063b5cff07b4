"""A hostile test origin for bgcopy integration tests: a small HTTP/1.1 server on 127.0.0.1
(raw sockets, one thread per connection) that misbehaves on purpose.

    def handler(req):                       # req: a Request (method, path, headers, n, ...)
        if req.n == 0:                      # the first request for this path
            return [response(200, [("Content-Length", 1000)], b"x" * 10)]   # then closes
        return serve_file(req, DATA, etag='"v1"')                           # well behaved

    with Hostile({"/files/a.bin": handler}) as h:
        agent = Bgcopy(exe, h.path("home"))
        r = agent.get(h.url("/files/a.bin"), h.path("out", "a.bin"))
        h.requests("/files/a.bin")          # Request records, oldest first

What it does:
- listens on 127.0.0.1 on a port the kernel picks (no race: the socket is bound before
  anything else happens), accepts in a thread, and serves each connection in a thread;
- routes a request by its path (the query is not part of the key) to a handler, or to
  `default` (404 when none); a handler gets the Request and returns what to send: bytes, or
  an iterable of steps: bytes (sent as they are, however malformed), Pause(seconds),
  STALL (hold the connection, send nothing, until the server stops), CLOSE (close now,
  without reading what the client still sends: an abortive close) or KEEP (read the next
  request on the same connection instead of closing it);
- after the steps it half-closes the connection (FIN), waits briefly for the client to
  close its side, and closes; a client that went away mid-send is recorded, not raised;
- records every request (Request objects: method, target, path, query, version, headers,
  per-path index n, connection number, bytes sent, whether the client cut the send short);
- a temp dir (h.dir, h.path()) with home/ and out/ for the bgcopy under test, removed on
  exit unless BGCOPY_KEEP_TMP=1;
- __exit__ (or stop()) stops it even when the test failed: the listener closes, every open
  connection is shut down (stalled handlers wake up), threads are joined.

Helpers build raw responses: response(), serve_file() (a correct server: Range, If-Range,
206/200/416, ETag, Last-Modified), chunked().

Python 3.11 standard library only."""

import os
import re
import shutil
import socket
import tempfile
import threading
import time

STALL = object()   # step: send nothing more until the server stops
CLOSE = object()   # step: close the connection at once (RST when the client sent more)
KEEP = object()    # step: keep the connection and serve the next request on it

REQUEST_HEAD_MAX = 64 * 1024   # bytes of request head read before giving up on a client
DRAIN_SECONDS = 2.0            # wait for the client's FIN after ours


class Pause:
    """Step: sleep this long (cut short when the server stops)."""

    def __init__(self, seconds):
        self.seconds = seconds


class Request:
    """One request the server read. headers: [(name, value)] in order, as sent."""

    def __init__(self, method, target, version, headers, conn, n):
        self.method, self.target, self.version = method, target, version
        self.path, _, self.query = target.partition("?")
        self.headers = headers
        self.conn = conn          # connection number, from 0
        self.n = n                # how many requests for this path came before this one
        self.time = time.monotonic()
        self.bytes_sent = 0       # bytes the server managed to hand to the socket
        self.client_gone = False  # the client closed or reset while the server was sending
        self.keep_alive_next = False

    def header(self, name):
        """The first value of header NAME (any case), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    @property
    def range_start(self):
        """First byte of a `bytes=N-` Range header, or None."""
        m = re.match(r"\s*bytes\s*=\s*(\d+)\s*-\s*$", self.header("Range") or "")
        return int(m.group(1)) if m else None

    def __repr__(self):
        extra = "".join(f" {k}={self.header(k)!r}" for k in ("Range", "If-Range", "Authorization")
                        if self.header(k) is not None)
        return (f"<#{self.conn} {self.method} {self.target[:120]!r} n={self.n}{extra} "
                f"sent={self.bytes_sent}{' client-gone' if self.client_gone else ''}>")


def _b(x):
    return x if isinstance(x, bytes) else str(x).encode("latin-1")


def response(status, headers=(), body=b"", reason=None, version="HTTP/1.1"):
    """Raw bytes of a response. headers: (name, value) pairs or raw lines (bytes or str,
    sent as they are, without their CRLF). Nothing is added: no Content-Length unless
    given, no Connection: close."""
    if reason is None:
        reason = {200: "OK", 206: "Partial Content", 300: "Multiple Choices",
                  301: "Moved Permanently", 302: "Found", 303: "See Other",
                  307: "Temporary Redirect", 308: "Permanent Redirect", 404: "Not Found",
                  416: "Range Not Satisfiable"}.get(status, "Whatever")
    out = [_b(f"{version} {status} {reason}")]
    for h in headers:
        if isinstance(h, tuple):
            out.append(_b(h[0]) + b": " + _b(h[1]))
        else:
            out.append(_b(h))
    return b"\r\n".join(out) + b"\r\n\r\n" + _b(body)


def chunked(body, size=65536, last=True):
    """BODY in chunked transfer coding with chunks of SIZE bytes (and the last chunk)."""
    out = []
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
    if last:
        out.append(b"0\r\n\r\n")
    return b"".join(out)


def serve_file(req, data, etag='"v1"', last_modified=None, extra=(), honour_range=True,
               honour_if_range=True):
    """A correct answer for DATA: 200, or 206 for `Range: bytes=N-` (If-Range compared with
    ETag or Last-Modified: a mismatch gives 200), 416 past the end. Connection: close."""
    hdrs = [("Connection", "close")]
    if etag is not None:
        hdrs.append(("ETag", etag))
    if last_modified is not None:
        hdrs.append(("Last-Modified", last_modified))
    hdrs += list(extra)
    start = req.range_start if honour_range else None
    ifr = req.header("If-Range")
    if start is not None and honour_if_range and ifr is not None and ifr not in (etag, last_modified):
        start = None
    if start is None:
        return response(200, hdrs + [("Content-Length", len(data))], data)
    if start >= len(data):
        return response(416, hdrs + [("Content-Range", f"bytes */{len(data)}"), ("Content-Length", 0)])
    return response(206, hdrs + [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"),
                                 ("Content-Length", len(data) - start)], data[start:])


def not_found(req):
    return response(404, [("Content-Length", 9), ("Connection", "close")], b"not found")


class LoopbackServer:
    """A TCP server on 127.0.0.1, its port from the kernel, a thread per connection: listen()
    starts accepting; stop() stops accepting, wakes whatever waits on _stop, shuts every
    connection down and joins the threads. A subclass serves a connection in
    _serve(conn, number), which closes it and takes it out of _conns."""
    NAME = "server"

    def __init__(self):
        self.sock = None
        self.port = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        self._conns = set()
        self._nconn = 0

    def listen(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name=f"{self.NAME}-accept", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self):
        """Stops accepting, wakes stalled handlers, shuts every connection down, joins."""
        self._stop.set()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=5)

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                num = self._nconn
                self._nconn += 1
                self._conns.add(c)
            t = threading.Thread(target=self._serve, args=(c, num), name=f"{self.NAME}-{num}",
                                 daemon=True)
            t.start()
            self._threads.append(t)


class Hostile(LoopbackServer):
    NAME = "hostile"

    def __init__(self, routes=None, default=not_found):
        """routes: {path: handler(Request) -> bytes | iterable of steps}; default: the
        handler for other paths."""
        super().__init__()
        self.routes = dict(routes or {})
        self.default = default
        self.dir = None
        self._per_path = {}
        self._log = []
        self.errors = []  # exceptions raised by handlers (a bug in the test, shown on failure)

    # ---- what tests use (same names as origin.Origin where they overlap) -------------
    base2 = None
    tls_base = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, path):
        return self.base + path

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def requests(self, path=None):
        with self._lock:
            return [r for r in self._log if path is None or r.path == path]

    def wait_requests(self, path, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.requests(path)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.requests(path)

    def connections(self):
        with self._lock:
            return self._nconn

    def format_log(self):
        lines = [f"  {r!r}" for r in self.requests()]
        lines += [f"  handler error: {e!r}" for e in self.errors]
        return "\n".join(lines) or "  (no requests)"

    # ---- lifecycle ----------------------------------------------------------------
    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="bgcopy-hostile-")
        for sub in ("home", "out"):
            os.makedirs(self.path(sub))
        try:
            self.listen()
        except BaseException:
            self.stop()
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        self._cleanup()
        return False

    def _cleanup(self):
        if self.dir and os.environ.get("BGCOPY_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        elif self.dir:
            print(f"(kept {self.dir})")

    # ---- serving ------------------------------------------------------------------
    def _read_head(self, c, buf):
        """Reads up to the end of a request head. Returns (head bytes, rest) or (None, _)."""
        while b"\r\n\r\n" not in buf:
            if len(buf) > REQUEST_HEAD_MAX:
                return None, buf
            try:
                data = c.recv(65536)
            except OSError:
                return None, buf
            if not data:
                return None, buf
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head, rest

    def _serve(self, c, num):
        buf = b""
        try:
            while not self._stop.is_set():
                head, buf = self._read_head(c, buf)
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                method, target = parts[0], parts[1] if len(parts) > 1 else ""
                version = parts[2] if len(parts) > 2 else ""
                headers = []
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers.append((k.strip(), v.strip()))
                path = target.partition("?")[0]
                with self._lock:
                    n = self._per_path.get(path, 0)
                    self._per_path[path] = n + 1
                    req = Request(method, target, version, headers, num, n)
                    self._log.append(req)
                handler = self.routes.get(path, self.default)
                try:
                    steps = handler(req)
                except Exception as e:  # noqa: BLE001 - shown in the case's context
                    self.errors.append(e)
                    steps = [response(500, [("Content-Length", 0), ("Connection", "close")])]
                if isinstance(steps, (bytes, bytearray)):
                    steps = [bytes(steps)]
                keep = False
                for step in steps:
                    if step is KEEP:
                        keep = True
                    elif step is CLOSE:
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                        return
                    elif step is STALL:
                        self._stop.wait()
                        return
                    elif isinstance(step, Pause):
                        if self._stop.wait(step.seconds):
                            return
                    else:
                        if not self._send(c, req, step):
                            return
                if not keep:
                    self._finish(c)
                    return
        finally:
            with self._lock:
                self._conns.discard(c)
            c.close()

    def _send(self, c, req, data):
        view = memoryview(data)
        while view:
            try:
                n = c.send(view[:262144])
            except OSError:
                req.client_gone = True
                return False
            req.bytes_sent += n
            view = view[n:]
        return True

    def _finish(self, c):
        """FIN, then wait a little for the client's (reading what it still sends), so that
        the close never turns into a reset that could destroy data in flight."""
        try:
            c.shutdown(socket.SHUT_WR)
            c.settimeout(0.2)
            deadline = time.monotonic() + DRAIN_SECONDS
            while time.monotonic() < deadline and not self._stop.is_set():
                try:
                    if not c.recv(65536):
                        return
                except socket.timeout:
                    continue
        except OSError:
            return


if __name__ == "__main__":
    # Self-test of the fixture with the standard library's HTTP client.
    import http.client
    import sys

    data = os.urandom(100_000)

    def trunc(req):
        if req.n == 0:
            return [response(200, [("Content-Length", len(data)), ("ETag", '"v1"')], data[:1000])]
        return serve_file(req, data)

    with Hostile({"/f": lambda r: serve_file(r, data), "/t": trunc,
                  "/stall": lambda r: [response(200, [("Content-Length", 10)]), STALL]}) as h:
        def get(path, headers=None, timeout=5):
            c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=timeout)
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            body = r.read()
            c.close()
            return r.status, dict(r.getheaders()), body

        st, hd, body = get("/f")
        assert st == 200 and body == data, (st, len(body))
        st, hd, body = get("/f", {"Range": "bytes=1000-", "If-Range": '"v1"'})
        assert st == 206 and body == data[1000:] and hd["Content-Range"] == f"bytes 1000-99999/{len(data)}"
        st, hd, body = get("/f", {"Range": "bytes=1000-", "If-Range": '"v0"'})
        assert st == 200 and body == data
        st, _, _ = get("/f", {"Range": f"bytes={len(data)}-"})
        assert st == 416
        try:
            get("/t")
            raise AssertionError("a truncated body must fail")
        except http.client.IncompleteRead as e:
            assert len(e.partial) == 1000
        st, _, body = get("/t")
        assert st == 200 and body == data
        st, _, _ = get("/nope")
        assert st == 404
        t0 = time.monotonic()
        try:
            get("/stall", timeout=0.5)
            raise AssertionError("a stalled body must time out")
        except socket.timeout:
            pass
        assert [r.path for r in h.requests()] == ["/f"] * 4 + ["/t", "/t", "/nope", "/stall"], h.format_log()
        assert h.requests("/t")[1].n == 1 and h.requests("/f")[1].range_start == 1000
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 3, "stop() must wake the stalled handler"
    assert not os.path.exists(h.dir)
    print("hostile self-test OK")
    sys.exit(0)
