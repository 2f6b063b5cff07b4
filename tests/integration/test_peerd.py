#!/usr/bin/env python3
"""Integration cases for bgcopy-peerd, the LAN peer cache (the peer protocol of peerd/README.md).

Usage: test_peerd.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_peerd.py CASE)
       test_peerd.py --list                    prints the case names, one a line
       test_peerd.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Environment: BGCOPY (the agent binary), BGCOPY_PEERD (default: bgcopy-peerd next to BGCOPY),
BGCOPY_KEEP_TMP=1 keeps the temp dirs.

Content gets into a store the real way: `bgcopy --home H get URL -o OUT` from an nginx origin
(origin.py) stores the file under its URL. peerd is then started on that home with
`--port 0 --port-file F` (the port is polled from F, never guessed) and stopped by the case,
even when it fails (the Peerd context manager). Requests go through http.client, or raw
sockets for malformed ones. Each case prints one line per check, and on failure the bgcopy
commands it ran, the origin's access log and peerd's stderr."""

import calendar
import hashlib
import hmac
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import (ABSENT, Bgcopy, case_registry, main, origin_validators, Peerd, peerd_exe, q, repr_digest,
                    sign, started, store_file)  # noqa: E402
from origin import MiB, Origin  # noqa: E402

A_SIZE = 300_000                # crosses the first chunk boundary of the store
CHUNK = 64 * 4096 - 16          # STORE_CHUNK_BYTES (cache.h)
BIG_SIZE = 1024 * MiB           # the flat-memory case
RSS_ANON_LIMIT = 64 * MiB       # peerd's anonymous memory while it streams BIG_SIZE
# Under AddressSanitizer every byte peerd reads from the store's map has a shadow byte per 8,
# made resident (anonymous) as it is read: 1/8 of what is streamed, whatever peerd does
# (measured: 139 MiB for 1 GiB, against 1.4 MiB without the sanitizers).
SANITIZED = os.environ.get("BGCOPY_SANITIZED") == "1"
RSS_ANON_ALLOWED = RSS_ANON_LIMIT + (BIG_SIZE // 8 if SANITIZED else 0)
AUTH_WINDOW = 300               # PEER_AUTH_WINDOW (cache.h), seconds

CASES, case = case_registry()


def expect_content_headers(t, what, r, data, size=None):
    t.eq(f"{what}: ETag", r.h("etag"), '"' + hashlib.sha256(data).hexdigest() + '"')
    t.eq(f"{what}: Repr-Digest", r.h("repr-digest"), repr_digest(data))
    t.eq(f"{what}: Accept-Ranges", r.h("accept-ranges"), "bytes")
    t.eq(f"{what}: Content-Type", r.h("content-type"), "application/octet-stream")
    t.eq(f"{what}: Content-Length", r.h("content-length"), str(len(data) if size is None else size))


# ---- raw sockets ---------------------------------------------------------------------------

def raw_exchange(port, payload, wait=5.0, chunks=None, pause=0.0):
    """Sends PAYLOAD (or CHUNKS with PAUSE seconds between them) on a fresh connection, then
    reads until the server closes or WAIT seconds pass. Returns (status or None, bytes read,
    closed_by_server)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    got = b""
    closed = False
    try:
        try:
            for i, part in enumerate(chunks if chunks is not None else [payload]):
                if i and pause:
                    time.sleep(pause)
                s.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            got += data
            # One response is enough unless we wait for the close.
            if b"\r\n\r\n" in got and _complete(got):
                break
    finally:
        s.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", got)
    return (int(m.group(1)) if m else None), got, closed


def _complete(buf):
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return m is not None and len(body) >= int(m.group(1))


def connects(host, port):
    """'accepted' when a TCP connection to HOST:PORT opens (within 2 s), else 'refused'."""
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "accepted"
    except OSError:
        return "refused"


# ---- cases ---------------------------------------------------------------------------------

@case("peerd_serves_stored_content")
def _(bg):
    """GET of a stored URL -> 200 with the bytes, ETag = quoted SHA-256, Repr-Digest, the origin's
    ETag (X-Origin-ETag) and Last-Modified; HEAD -> the same headers, no body, connection kept;
    a key with a query string, percent-encoded; unknown url -> 404; /v1/health -> 200 ok"""
    with Origin(files={"a.bin": A_SIZE, "q.bin": 5000}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        qurl = o.url("/files/q.bin?x=1&y=a%20b")
        r = t.ran(agent.get(qurl, o.path("out", "q.bin")))
        t.eq("get q.bin?x=1&y=a%20b: exit status", r.rc, 0)
        qkey = (r.doc or {}).get("files", [{}])[0].get("cache_key") or qurl
        etag, lastmod = origin_validators(o, "a.bin")
        data = o.data["a.bin"]
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            r = p.request("GET", q(url), keep=True)
            t.eq("GET: status", r.status, 200)
            t.ok("GET: body is the stored file", r.body == data, f"{len(r.body)} bytes")
            expect_content_headers(t, "GET", r, data)
            t.eq("GET: X-Origin-ETag (nginx's ETag)", r.h("x-origin-etag"), etag)
            t.eq("GET: Last-Modified (nginx's)", r.h("last-modified"), lastmod)
            t.eq("GET: connection kept alive", r.will_close, False)

            h = p.request("HEAD", q(url), keep=True)
            t.eq("HEAD: status", h.status, 200)
            t.eq("HEAD: no body", h.body, b"")
            expect_content_headers(t, "HEAD", h, data)
            for name in ("etag", "repr-digest", "x-origin-etag", "last-modified", "content-length"):
                t.eq(f"HEAD and GET agree on {name}", h.h(name), r.h(name))
            # A body after the HEAD answer would corrupt the next response on the connection.
            n = p.request("GET", "/v1/health", keep=True)
            t.eq("GET /v1/health on the same connection after HEAD", (n.status, n.body), (200, b"ok\n"))

            r = p.request("GET", q(qkey))
            t.eq(f"GET of the key {qkey!r} (percent-encoded): status", r.status, 200)
            t.ok("its body is q.bin", r.body == o.data["q.bin"])

            for miss in (o.url("/files/nope.bin"), url + "x", url.upper()):
                r = p.request("GET", q(miss))
                t.eq(f"GET url={miss}: status", r.status, 404)
            r = p.request("HEAD", q(o.url("/files/nope.bin")))
            t.eq("HEAD of an unknown url: status", r.status, 404)
            r = p.request("GET", "/v1/health")
            t.eq("/v1/health: status and body", (r.status, r.body), (200, b"ok\n"))
            t.eq("peerd still running", p.alive(), True)
            t.eq("exit status after SIGTERM", p.stop(), 0)
            t.eq("port file removed at exit", os.path.exists(p.port_file), False)


RANGE_CASES = [
    # (Range, If-Range or None, expected status, expected (start, end) or None)
    ("bytes=0-0", None, 206, (0, 0)),
    ("bytes=10-19", None, 206, (10, 19)),
    ("bytes=100-", None, 206, (100, A_SIZE - 1)),
    ("bytes=-100", None, 206, (A_SIZE - 100, A_SIZE - 1)),
    (f"bytes=-{A_SIZE + 5}", None, 206, (0, A_SIZE - 1)),
    (f"bytes={A_SIZE - 10}-{A_SIZE + 1000}", None, 206, (A_SIZE - 10, A_SIZE - 1)),
    (f"bytes={CHUNK - 100}-{CHUNK + 99}", None, 206, (CHUNK - 100, CHUNK + 99)),
    (f"bytes={A_SIZE - 1}-", None, 206, (A_SIZE - 1, A_SIZE - 1)),
    ("BYTES=5-9", None, 206, (5, 9)),
    (f"bytes={A_SIZE}-", None, 416, None),
    (f"bytes={A_SIZE}-{A_SIZE + 10}", None, 416, None),
    ("bytes=99999999999999999999999-", None, 416, None),
    ("bytes=-0", None, 416, None),
    ("bytes=0-1,5-6", None, 200, None),
    ("bytes=0-1, 5-6", None, 200, None),
    ("bytes=abc", None, 200, None),
    ("bytes=5-2", None, 200, None),
    ("bytes=-", None, 200, None),
    ("items=0-10", None, 200, None),
    ("bytes 0-10", None, 200, None),
    ("", None, 200, None),
    ("bytes=10-19", "ETAG", 206, (10, 19)),
    ("bytes=10-19", '"0000"', 200, None),
    ("bytes=10-19", "Wed, 21 Oct 2015 07:28:00 GMT", 200, None),
    (f"bytes={A_SIZE}-", '"0000"', 200, None),
]


@case("peerd_range_cases")
def _(bg):
    """one range -> 206 with Content-Range and exactly those bytes (clamped at the end, across a
    chunk boundary); start >= size or -0 -> 416 with bytes */SIZE; several ranges, malformed
    ones or another unit -> 200 with everything; If-Range equal to the ETag -> 206, anything
    else -> 200; all on one kept-alive connection; HEAD with a Range -> 206 headers, no body"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        data = o.data["a.bin"]
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            for rng, if_range, want, span in RANGE_CASES:
                hdrs = {"Range": rng}
                if if_range is not None:
                    hdrs["If-Range"] = etag if if_range == "ETAG" else if_range
                r = p.request("GET", q(url), hdrs, keep=True)
                what = f"Range {rng!r}" + (f" If-Range {hdrs['If-Range']!r}" if if_range else "")
                t.eq(f"{what}: status", r.status, want)
                if want == 206:
                    a, b = span
                    t.eq(f"{what}: Content-Range", r.h("content-range"), f"bytes {a}-{b}/{A_SIZE}")
                    t.eq(f"{what}: Content-Length", r.h("content-length"), str(b - a + 1))
                    t.ok(f"{what}: body is bytes {a}..{b}", r.body == data[a:b + 1],
                         f"{len(r.body)} bytes")
                    t.eq(f"{what}: ETag", r.h("etag"), etag)
                elif want == 416:
                    t.eq(f"{what}: Content-Range", r.h("content-range"), f"bytes */{A_SIZE}")
                else:
                    t.eq(f"{what}: no Content-Range", r.h("content-range"), ABSENT)
                    t.ok(f"{what}: whole body", r.body == data, f"{len(r.body)} bytes")
                t.eq(f"{what}: connection kept alive", r.will_close, False)
            r = p.request("HEAD", q(url), {"Range": "bytes=10-19"}, keep=True)
            t.eq("HEAD with Range: status, Content-Range, Content-Length, body",
                 (r.status, r.h("content-range"), r.h("content-length"), r.body),
                 (206, f"bytes 10-19/{A_SIZE}", "10", b""))
            n = p.request("GET", "/v1/health", keep=True)
            t.eq("health on the same connection afterwards", (n.status, n.body), (200, b"ok\n"))


@case("peerd_concurrent_requests_all_correct")
def _(bg):
    """16 clients at once, each 40 requests on its own kept-alive connection (whole bodies, random
    ranges, HEADs, misses) on 2 threads: every answer right"""
    import random
    with Origin(files={"a.bin": A_SIZE, "b.bin": 3 * CHUNK + 7}) as o:
        o, agent, t = started(bg, o)
        urls = {name: store_file(t, agent, o, name) for name in ("a.bin", "b.bin")}
        # 16 clients from one address: more than the default per-address limit.
        with Peerd(bg, agent.home, "--threads", "2", "--connections-per-peer", "0",
                   workdir=o.dir) as p:
            errors = []

            def client(seed):
                rnd = random.Random(seed)
                c = p.conn(timeout=30)
                try:
                    for _ in range(40):
                        name = rnd.choice(("a.bin", "b.bin"))
                        data = o.data[name]
                        kind = rnd.choice(("full", "range", "range", "head", "miss"))
                        hdrs, path, method = {}, q(urls[name]), "GET"
                        want = (200, data)
                        if kind == "range":
                            a = rnd.randrange(len(data))
                            b = rnd.randrange(a, len(data))
                            hdrs["Range"] = f"bytes={a}-{b}"
                            want = (206, data[a:b + 1])
                        elif kind == "head":
                            method = "HEAD"
                            want = (200, b"")
                        elif kind == "miss":
                            path = q(urls[name] + "?miss")
                            want = (404, b"not found\n")
                        c.request(method, path, headers=hdrs)
                        r = c.getresponse()
                        body = r.read()
                        if (r.status, body) != want:
                            errors.append(f"{kind} {name} {hdrs}: got {r.status}, {len(body)} bytes")
                except Exception as e:  # reported as a failed check below
                    errors.append(f"client {seed}: {type(e).__name__}: {e}")
                finally:
                    c.close()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            t.eq("wrong answers", errors[:5], [])
            _, m = p.metrics()
            t.eq("every request answered (requests_total over 200, 206, 404)",
                 sum(m.get(f'bgcopy_peerd_requests_total{{status="{s}"}}', 0) for s in (200, 206, 404)),
                 16 * 40)


@case("peerd_private_content_not_served")
def _(bg):
    """content fetched with an Authorization header is stored (cache list shows it private) but
    peerd answers 404 for it, GET and HEAD, counted as misses; a public entry of the same store
    is served"""
    with Origin(files={"pub.bin": 40_000, "priv.bin": 50_000}) as o:
        o, agent, t = started(bg, o)
        pub = store_file(t, agent, o, "pub.bin")
        priv = store_file(t, agent, o, "priv.bin", extra=["--header", "Authorization: Bearer x"])
        s = t.ran(agent.run("cache", "list", "--json"))
        entries = {e.get("url"): e for e in (s.doc or []) if isinstance(e, dict)}
        t.eq("cache list: the private entry is stored, marked private",
             (entries.get(priv) or {}).get("private", ABSENT), True)
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            _, m0 = p.metrics()
            r = p.request("GET", q(priv))
            t.eq("GET of the private entry: status", r.status, 404)
            t.ok("no byte of it in the answer", o.data["priv.bin"][:64] not in r.body)
            t.eq("no ETag in the answer", r.h("etag"), ABSENT)
            r = p.request("HEAD", q(priv))
            t.eq("HEAD of the private entry: status", r.status, 404)
            r = p.request("GET", q(pub))
            t.eq("GET of the public entry: status", r.status, 200)
            t.ok("public body right", r.body == o.data["pub.bin"])
            _, m1 = p.metrics()
            t.eq("misses_total went up by 2",
                 m1.get("bgcopy_peerd_misses_total", 0) - m0.get("bgcopy_peerd_misses_total", 0), 2)
            t.eq("hits_total went up by 1",
                 m1.get("bgcopy_peerd_hits_total", 0) - m0.get("bgcopy_peerd_hits_total", 0), 1)


@case("peerd_peer_key_required")
def _(bg):
    """with --peer-key, content and /metrics need a valid X-Bgcopy-Auth: none, a wrong signature, a
    stale or future timestamp, another url or method -> 401 with WWW-Authenticate; a good one ->
    200; the same header again -> 401 (replay); /v1/health stays open"""
    with Origin(files={"a.bin": 20_000}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        key = os.urandom(16).hex().encode()
        key_file = o.path("peer.key")
        with open(key_file, "wb") as f:
            f.write(key + b"\n")   # the trailing newline is not part of the key
        os.chmod(key_file, 0o600)
        path = "/v1/content"
        now = int(time.time())
        with Peerd(bg, agent.home, "--peer-key", key_file, workdir=o.dir) as p:
            def get(hdr, method="GET", target=None):
                return p.request(method, target or q(url), {"X-Bgcopy-Auth": hdr} if hdr else {})

            r = get(None)
            t.eq("no header: status", r.status, 401)
            t.eq("no header: WWW-Authenticate", r.h("www-authenticate"), "BGCOPY-HMAC-SHA256")
            good = sign(key, "GET", path, url, now)
            bad = good[:-1] + ("0" if good[-1] != "0" else "1")
            for what, hdr, method in (
                    ("wrong signature", bad, "GET"),
                    ("garbage header", "nonsense", "GET"),
                    ("signed with another key", sign(b"x" * 32, "GET", path, url, now), "GET"),
                    ("stale timestamp", sign(key, "GET", path, url, now - AUTH_WINDOW - 60), "GET"),
                    ("future timestamp", sign(key, "GET", path, url, now + AUTH_WINDOW + 60), "GET"),
                    ("signed for another url", sign(key, "GET", path, url + "x", now), "GET"),
                    ("GET signature on a HEAD", sign(key, "GET", path, url, now - 1), "HEAD")):
                r = get(hdr, method)
                t.eq(f"{what}: status", r.status, 401)
                t.eq(f"{what}: WWW-Authenticate", r.h("www-authenticate"), "BGCOPY-HMAC-SHA256")
                t.ok(f"{what}: no content", o.data["a.bin"][:64] not in r.body)
            r = get(good)
            t.eq("good signature: status", r.status, 200)
            t.ok("good signature: body", r.body == o.data["a.bin"])
            r = get(good)
            t.eq("the same header replayed: status", r.status, 401)
            r = get(sign(key, "GET", path, url, now - 2))
            t.eq("a fresh signature (another timestamp): status", r.status, 200)
            r = get(sign(key, "HEAD", path, url, now - 3), "HEAD")
            t.eq("HEAD with a HEAD signature: status", r.status, 200)
            nope = o.url("/files/nope.bin")
            r = get(sign(key, "GET", path, nope, now), target=q(nope))
            t.eq("signed request for an absent url: status", r.status, 404)
            r = p.request("GET", "/v1/health")
            t.eq("/v1/health without a header", (r.status, r.body), (200, b"ok\n"))
            r = p.request("GET", "/metrics")
            t.eq("/metrics without a header: status", r.status, 401)
            r, m = p.metrics({"X-Bgcopy-Auth": sign(key, "GET", "/metrics", "", now)})
            t.eq("/metrics signed over GET\\n/metrics\\n\\nT: status", r.status, 200)
            t.eq("metrics: 401 answers counted", m.get('bgcopy_peerd_requests_total{status="401"}'), 10)
            t.eq("peerd still running", p.alive(), True)


@case("peerd_malformed_requests_no_crash")
def _(bg):
    """garbage, huge headers, traversal, bad escapes, NUL, empty or missing url, other methods, an
    overlong url, a stalled request: each gets a 4xx or a closed connection, never a crash; the
    stalled one is closed after --timeout; health is 200 and the stored entry still served
    afterwards"""
    with Origin(files={"a.bin": 20_000}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        with Peerd(bg, agent.home, "--timeout", "2", workdir=o.dir) as p:
            long_url = "http://x/" + "a" * 9000
            reqs = [
                ("garbage request line", b"\x00\x01\x02 garbage \xff\r\n\r\n", (400, None)),
                ("no HTTP version", b"GET /v1/health\r\n\r\n", (400, None, 200)),
                ("64 KiB header", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536
                 + b"\r\n\r\n", (400, 413, 431, None)),
                ("traversal", b"GET /v1/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", (404,)),
                ("encoded traversal", b"GET /v1/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
                 (404,)),
                ("url=%zz", b"GET /v1/content?url=%zz HTTP/1.1\r\nHost: x\r\n\r\n", (400, 404)),
                ("url=%", b"GET /v1/content?url=% HTTP/1.1\r\nHost: x\r\n\r\n", (400, 404)),
                ("url=%00", b"GET /v1/content?url=%00 HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
                ("url with %00 inside", b"GET /v1/content?url=" + urllib.parse.quote(url, safe="").encode()
                 + b"%00x HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
                ("url= empty", b"GET /v1/content?url= HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
                ("url without =", b"GET /v1/content?url HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
                ("no url argument", b"GET /v1/content HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
                ("two url arguments", b"GET /v1/content?url=a&url=b HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
                ("POST with a body", b"POST /v1/content?url=a HTTP/1.1\r\nHost: x\r\nContent-Length: 5"
                 b"\r\n\r\nhello", (405,)),
                ("POST without a body", b"POST /v1/content?url=a HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 0\r\n\r\n", (405,)),
                ("PUT chunked", b"PUT /v1/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                 b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n", (405,)),
                ("DELETE unknown path", b"DELETE /nope HTTP/1.1\r\nHost: x\r\n\r\n", (404,)),
                ("GET with a body", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                 (400,)),
                ("bad Content-Length", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                 (400, None)),
                # The longest key a store holds, every byte percent-encoded: still a request.
                ("key of 8192 bytes, all encoded", ("GET " + q("/" * 8192) + " HTTP/1.1\r\nHost: x\r\n"
                 "User-Agent: " + "u" * 200 + "\r\n\r\n").encode(), (404,)),
                ("key of 8193 bytes", ("GET " + q("/" * 8193) + " HTTP/1.1\r\nHost: x\r\n\r\n").encode(),
                 (414,)),
                ("url longer than 9000 bytes", ("GET " + q(long_url) + " HTTP/1.1\r\nHost: x\r\n\r\n")
                 .encode(), (414,)),
                ("request target of 40 KiB", b"GET /v1/content?url=" + b"b" * 40960
                 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (414, 400, 431, None)),
                ("header without colon", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n",
                 (400, 200, None)),
                ("absolute-form target", b"GET http://x/v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
                 (200,)),
                ("HTTP/1.0 health", b"GET /v1/health HTTP/1.0\r\n\r\n", (200,)),
                ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (400, 404, 405, 505, None)),
                ("bad method chars", b"G(T /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", (400, 404, 405, 501, None)),
            ]
            for what, payload, allowed in reqs:
                status, got, closed = raw_exchange(p.port, payload)
                t.ok(f"{what}: status {status} in {allowed}", status in allowed,
                     f"got {got[:200]!r} (closed: {closed})")
                t.eq(f"{what}: peerd alive", p.alive(), True)

            # Headers sent slowly, then nothing: the idle connection is closed after --timeout.
            t0 = time.monotonic()
            status, got, closed = raw_exchange(
                p.port, None, wait=20, pause=0.3,
                chunks=[b"GET /v1/health HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n"])
            took = time.monotonic() - t0
            t.ok(f"stalled request: connection closed by peerd ({took:.1f}s, --timeout 2)",
                 closed and took < 15, f"closed={closed} got={got[:200]!r}")
            t.eq("stalled request: no answer to the incomplete request", status, None)

            r = p.request("GET", "/v1/health")
            t.eq("health afterwards", (r.status, r.body), (200, b"ok\n"))
            r = p.request("GET", q(url))
            t.eq("content afterwards: status", r.status, 200)
            t.ok("content afterwards: body", r.body == o.data["a.bin"])
            t.eq("peerd still running", p.alive(), True)
            t.eq("exit status after SIGTERM", p.stop(), 0)


def http_date(t, form="imf"):
    """Unix seconds T as an HTTP-date in one of the three forms of RFC 9110 section 5.6.7."""
    g = time.gmtime(t)
    if form == "imf":
        return time.strftime("%a, %d %b %Y %H:%M:%S GMT", g)
    if form == "rfc850":
        return time.strftime("%A, %d-%b-%y %H:%M:%S GMT", g)
    return time.strftime("%a %b ", g) + f"{g.tm_mday:2d}" + time.strftime(" %H:%M:%S %Y", g)


def curl_status(*args):
    """Runs curl (the real client) with ARGS; returns (HTTP status, response headers lower-cased,
    body bytes)."""
    with tempfile.TemporaryDirectory() as d:
        hdr, body = os.path.join(d, "h"), os.path.join(d, "b")
        argv = ["curl", "-sS", "--max-time", "20", "-D", hdr, "-o", body, *args]
        p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        print(f"  ran   curl {' '.join(args)}  -> exit {p.returncode}", flush=True)
        if p.returncode != 0:
            return None, {}, p.stderr.encode()
        with open(hdr, "rb") as f:
            head = f.read().decode("latin-1")
        # curl creates no output file for an empty body.
        data = b""
        if os.path.exists(body):
            with open(body, "rb") as f:
                data = f.read()
    # With -x or redirects several heads may be there: the last one is the answer.
    block = [b for b in head.split("\r\n\r\n") if b.strip()][-1].split("\r\n")
    status = int(block[0].split()[1])
    headers = {}
    for line in block[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, data


def answer_sig(key, request_value, data, origin_etag, last_modified):
    """The X-Bgcopy-Auth of a content answer (peer_auth_sign_answer in cache.h)."""
    msg = (f"answer\n{request_value}\n{hashlib.sha256(data).hexdigest()}\n{len(data)}\n"
           f"{origin_etag or ''}\n{last_modified or ''}\n").encode()
    return "sig=" + hmac.new(key, msg, hashlib.sha256).hexdigest()


@case("peerd_conditional_requests")
def _(bg):
    """RFC 9110 section 13 on a stored entry (ETag = quoted SHA-256, Last-Modified = the origin's):
    If-None-Match (weak comparison, lists, *) and If-Modified-Since (all three date forms) ->
    304 with the validators and no body; If-Match (strong) and If-Unmodified-Since -> 412
    without content; the order of section 13.2.2 (If-Match before If-None-Match, a date field
    ignored beside its tag field); invalid dates ignored; preconditions before Range; HEAD the
    same; an absent key stays 404; the same through real curl (-z, -H If-None-Match); 304/412
    counted by /metrics"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        data = o.data["a.bin"]
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        origin_etag, lastmod = origin_validators(o, "a.bin")
        lm = calendar.timegm(time.strptime(lastmod, "%a, %d %b %Y %H:%M:%S GMT"))
        day = 86400
        cases = [
            # (headers, expected status)
            ({"If-None-Match": etag}, 304),
            ({"If-None-Match": "W/" + etag}, 304),
            ({"If-None-Match": f'"nope", {etag}'}, 304),
            ({"If-None-Match": "*"}, 304),
            ({"If-None-Match": '"nope"'}, 200),
            ({"If-None-Match": etag[:-2] + '"'}, 200),
            ({"If-Match": etag}, 200),
            ({"If-Match": f'"nope" ,{etag}'}, 200),
            ({"If-Match": "*"}, 200),
            ({"If-Match": '"nope"'}, 412),
            ({"If-Match": "W/" + etag}, 412),
            ({"If-Modified-Since": http_date(lm)}, 304),
            ({"If-Modified-Since": http_date(lm + day)}, 304),
            ({"If-Modified-Since": http_date(lm, "rfc850")}, 304),
            ({"If-Modified-Since": http_date(lm, "asctime")}, 304),
            ({"If-Modified-Since": http_date(lm - 1)}, 200),
            ({"If-Modified-Since": "yesterday"}, 200),
            ({"If-Modified-Since": http_date(lm) + ", " + http_date(lm)}, 200),
            ({"If-Unmodified-Since": http_date(lm)}, 200),
            ({"If-Unmodified-Since": http_date(lm + day)}, 200),
            ({"If-Unmodified-Since": http_date(lm - 1)}, 412),
            ({"If-Unmodified-Since": http_date(lm - day, "rfc850")}, 412),
            ({"If-Unmodified-Since": "not a date"}, 200),
            # Section 13.2.2: If-None-Match present -> If-Modified-Since ignored, and so on.
            ({"If-None-Match": '"nope"', "If-Modified-Since": http_date(lm)}, 200),
            ({"If-Match": etag, "If-Unmodified-Since": http_date(lm - day)}, 200),
            ({"If-Match": '"nope"', "If-None-Match": etag}, 412),
            ({"If-Unmodified-Since": http_date(lm - day), "If-None-Match": etag}, 412),
            ({"If-Match": etag, "If-None-Match": etag}, 304),
            # Preconditions come before Range (step 5 is If-Range).
            ({"If-None-Match": etag, "Range": "bytes=0-9"}, 304),
            ({"If-Match": '"nope"', "Range": "bytes=0-9"}, 412),
            ({"If-Match": etag, "Range": "bytes=0-9"}, 206),
            ({"If-Modified-Since": http_date(lm - day), "Range": "bytes=0-9"}, 206),
        ]
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            _, m0 = p.metrics()
            counts = {304: 0, 412: 0}
            for method in ("GET", "HEAD"):
                for hdrs, want in cases:
                    r = p.request(method, q(url), hdrs, keep=True)
                    what = f"{method} {hdrs}"
                    t.eq(f"{what}: status", r.status, want)
                    counts[want] = counts.get(want, 0) + 1
                    if want == 304:
                        t.eq(f"{what}: 304 validators (ETag, Last-Modified, X-Origin-ETag)",
                             (r.h("etag"), r.h("last-modified"), r.h("x-origin-etag")),
                             (etag, lastmod, origin_etag))
                        t.eq(f"{what}: 304 has no body", r.body, b"")
                        t.ok(f"{what}: 304 Content-Length absent or the 200's",
                             r.h("content-length") in (ABSENT, str(A_SIZE)), r.h("content-length"))
                    elif want == 412:
                        t.ok(f"{what}: 412 carries no content",
                             data[:64] not in r.body and r.h("etag") is ABSENT
                             and r.h("content-range") is ABSENT, repr(r.body[:80]))
                    elif want == 206:
                        t.eq(f"{what}: 206 body", r.body, data[:10] if method == "GET" else b"")
                    else:
                        t.ok(f"{what}: 200 with the whole entry",
                             r.body == (data if method == "GET" else b"")
                             and r.h("etag") == etag, f"{len(r.body)} bytes")
                    t.eq(f"{what}: connection kept alive", r.will_close, False)

            # If-None-Match sent on two lines is one list (RFC 9110 section 5.3).
            status, got, _ = raw_exchange(
                p.port, (f"GET {q(url)} HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"nope\"\r\n"
                         f"If-None-Match: {etag}\r\nConnection: close\r\n\r\n").encode())
            t.eq("If-None-Match on two lines, ours on the second: status", status, 304)
            # An absent key: the answer without preconditions would be 404, so they are ignored.
            for hdrs in ({"If-None-Match": "*"}, {"If-Match": "*"}, {"If-Match": '"nope"'}):
                r = p.request("GET", q(url + "?absent"), hdrs)
                t.eq(f"absent key with {hdrs}: status", r.status, 404)

            # Real curl: -z DATE sends If-Modified-Since, -z -DATE If-Unmodified-Since.
            base = f"http://127.0.0.1:{p.port}{q(url)}"
            st, h, body = curl_status("-z", lastmod, base)
            t.eq("curl -z LAST-MODIFIED: status, ETag, body", (st, h.get("etag"), body),
                 (304, etag, b""))
            st, h, body = curl_status("-z", http_date(lm - day), base)
            t.eq("curl -z (a day earlier): status and body", (st, body == data), (200, True))
            st, h, body = curl_status("-z", "-" + http_date(lm - day), base)
            t.eq("curl -z -DATE (a day earlier, If-Unmodified-Since): status", st, 412)
            t.ok("curl -z -DATE: no content in the 412", data[:64] not in body)
            st, h, body = curl_status("-H", f"If-None-Match: {etag}", base)
            t.eq("curl -H 'If-None-Match: ETAG': status, ETag, Last-Modified, body",
                 (st, h.get("etag"), h.get("last-modified"), body), (304, etag, lastmod, b""))
            st, h, body = curl_status("-H", "If-None-Match: \"nope\"", base)
            t.eq("curl -H 'If-None-Match: \"nope\"': status and body", (st, body == data), (200, True))
            st, h, body = curl_status("-I", "-H", f"If-Match: {etag}", base)
            t.eq("curl -I -H 'If-Match: ETAG' (HEAD): status", st, 200)

            _, m1 = p.metrics()
            for code, n in ((304, counts[304] + 3), (412, counts[412] + 1)):
                name = f'bgcopy_peerd_requests_total{{status="{code}"}}'
                t.eq(f"metrics: {code} answers counted", m1.get(name, 0) - m0.get(name, 0), n)


@case("peerd_conditional_after_peer_key")
def _(bg):
    """with --peer-key the signature is checked before any precondition: an unsigned If-None-Match
    with the right ETag is 401, not 304; a signed one is 304 carrying the answer signature over
    the entry; a signed failing If-Match is 412"""
    with Origin(files={"a.bin": 20_000}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        data = o.data["a.bin"]
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        origin_etag, lastmod = origin_validators(o, "a.bin")
        key = os.urandom(16).hex().encode()
        key_file = o.path("peer.key")
        with open(key_file, "wb") as f:
            f.write(key)
        os.chmod(key_file, 0o600)
        now = int(time.time())
        with Peerd(bg, agent.home, "--peer-key", key_file, workdir=o.dir) as p:
            r = p.request("GET", q(url), {"If-None-Match": etag})
            t.eq("unsigned, If-None-Match: ETAG: status", r.status, 401)
            t.eq("unsigned: no ETag given away", r.h("etag"), ABSENT)
            r = p.request("GET", q(url), {"If-None-Match": etag,
                                          "X-Bgcopy-Auth": sign(b"y" * 32, "GET", "/v1/content", url, now)})
            t.eq("signed with another key, If-None-Match: ETAG: status", r.status, 401)
            auth = sign(key, "GET", "/v1/content", url, now)
            r = p.request("GET", q(url), {"If-None-Match": etag, "X-Bgcopy-Auth": auth})
            t.eq("signed, If-None-Match: ETAG: status and body", (r.status, r.body), (304, b""))
            t.eq("signed 304: ETag", r.h("etag"), etag)
            t.eq("signed 304: the answer is signed over the entry", r.h("x-bgcopy-auth"),
                 answer_sig(key, auth, data, origin_etag, lastmod))
            auth = sign(key, "HEAD", "/v1/content", url, now - 1)
            r = p.request("HEAD", q(url), {"If-Match": '"nope"', "X-Bgcopy-Auth": auth})
            t.eq("signed HEAD, If-Match: \"nope\": status", r.status, 412)
            auth = sign(key, "GET", "/v1/content", url, now - 2)
            r = p.request("GET", q(url), {"If-None-Match": '"nope"', "X-Bgcopy-Auth": auth})
            t.eq("signed, If-None-Match: \"nope\": status and body", (r.status, r.body == data),
                 (200, True))


@case("peerd_http11_message_rules")
def _(bg):
    """RFC 9112 sections 3.2 and 5.1 over raw sockets: an HTTP/1.1 request without Host, with two
    Host lines (any case), an invalid Host value or whitespace before a colon -> 400; HTTP/1.0
    without Host still 200; an absolute-form target (http://host:port/path, any scheme case) is
    served as its path, GET and HEAD, content included; an empty authority or userinfo -> 400;
    real curl through -x (which sends absolute-form) gets the health and the content"""
    with Origin(files={"a.bin": 20_000}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        data = o.data["a.bin"]
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            hp = f"127.0.0.1:{p.port}"
            reqs = [
                ("no Host", b"GET /v1/health HTTP/1.1\r\n\r\n", 400),
                ("no Host, content", f"GET {q(url)} HTTP/1.1\r\n\r\n".encode(), 400),
                ("two Host lines", b"GET /v1/health HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
                ("Host and host", b"GET /v1/health HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400),
                ("two Host lines, HTTP/1.0", b"GET /v1/health HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
                 400),
                ("two Host lines, content", f"GET {q(url)} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
                 .encode(), 400),
                ("Host with a space inside", b"GET /v1/health HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
                ("Host with userinfo", b"GET /v1/health HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
                ("space before the colon", b"GET /v1/health HTTP/1.1\r\nHost : x\r\n\r\n", 400),
                ("tab before the colon", b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-A\t: 1\r\n\r\n",
                 400),
                ("HTTP/1.0 without Host", b"GET /v1/health HTTP/1.0\r\n\r\n", 200),
                ("one Host", f"GET /v1/health HTTP/1.1\r\nHost: {hp}\r\n\r\n".encode(), 200),
                ("IPv6 literal Host", b"GET /v1/health HTTP/1.1\r\nHost: [::1]:7654\r\n\r\n", 200),
                ("absolute-form", f"GET http://{hp}/v1/health HTTP/1.1\r\nHost: {hp}\r\n\r\n"
                 .encode(), 200),
                ("absolute-form, other Host", f"GET http://{hp}/v1/health HTTP/1.1\r\nHost: other"
                 "\r\n\r\n".encode(), 200),
                ("absolute-form, scheme in capitals", f"GET HTTP://{hp}/v1/health HTTP/1.1\r\n"
                 f"Host: {hp}\r\n\r\n".encode(), 200),
                ("absolute-form, no path", f"GET http://{hp} HTTP/1.1\r\nHost: {hp}\r\n\r\n"
                 .encode(), 404),
                ("absolute-form, unknown path", f"GET http://{hp}/nope HTTP/1.1\r\nHost: {hp}"
                 "\r\n\r\n".encode(), 404),
                ("absolute-form, empty authority", f"GET http:///v1/health HTTP/1.1\r\nHost: {hp}"
                 "\r\n\r\n".encode(), 400),
                ("absolute-form, userinfo", f"GET http://u:pw@{hp}/v1/health HTTP/1.1\r\nHost: {hp}"
                 "\r\n\r\n".encode(), 400),
                ("absolute-form without Host", f"GET http://{hp}/v1/health HTTP/1.1\r\n\r\n"
                 .encode(), 400),
            ]
            for what, payload, want in reqs:
                status, got, closed = raw_exchange(p.port, payload)
                t.eq(f"{what}: status", status, want)
                if want == 200:
                    t.ok(f"{what}: body ok", got.endswith(b"\r\n\r\nok\n"), repr(got[-60:]))
                t.eq(f"{what}: peerd alive", p.alive(), True)

            status, got, _ = raw_exchange(
                p.port, f"GET http://{hp}{q(url)} HTTP/1.1\r\nHost: {hp}\r\n\r\n".encode())
            t.eq("absolute-form content: status", status, 200)
            t.ok("absolute-form content: the stored bytes", got.endswith(b"\r\n\r\n" + data),
                 f"{len(got)} bytes")
            status, got, _ = raw_exchange(
                p.port, f"HEAD http://{hp}{q(url)} HTTP/1.1\r\nHost: {hp}\r\nConnection: close\r\n\r\n"
                .encode())
            t.eq("absolute-form HEAD: status", status, 200)
            t.ok("absolute-form HEAD: Content-Length, no body",
                 got.endswith(b"\r\n\r\n") and f"Content-Length: {len(data)}\r\n".encode() in got,
                 repr(got[-120:]))

            # curl talks to peerd as to a proxy: absolute-form, with the target's Host.
            proxy = ["-x", f"http://{hp}"]
            st, _, body = curl_status(*proxy, "http://peer.invalid:7654/v1/health")
            t.eq("curl -x PEERD http://peer.invalid:7654/v1/health", (st, body), (200, b"ok\n"))
            st, h, body = curl_status(*proxy, "http://peer.invalid:7654" + q(url))
            t.eq("curl -x PEERD http://peer.invalid:7654/v1/content?url=...: status, body",
                 (st, body == data), (200, True))
            # One Host, the health on a kept-alive connection: the rules change nothing there.
            r = p.request("GET", "/v1/health", keep=True)
            t.eq("health through http.client", (r.status, r.body, r.will_close), (200, b"ok\n", False))


def write_big_file(path, size):
    """SIZE bytes made of one random MiB repeated; returns the SHA-256 hex."""
    block = os.urandom(MiB)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)
            h.update(block)
    os.chmod(path, 0o644)
    return h.hexdigest()


@case("peerd_streams_large_entry_with_flat_memory")
def _(bg):
    with Origin() as o:
        o, agent, t = started(bg, o)
        print(f"checks: a {BIG_SIZE // MiB} MiB entry streams through peerd with the right SHA-256 "
              f"while peerd's RssAnon stays below {RSS_ANON_ALLOWED // MiB} MiB (body read block by "
              "block, nothing buffered whole)")
        big = o.file_path("big.bin")
        want = write_big_file(big, BIG_SIZE)
        url = o.url("/files/big.bin")
        r = t.ran(agent.get(url, o.path("out", "big.bin"), timeout=240))
        t.eq("get big.bin: exit status", r.rc, 0)
        # The origin's copy and the output are no longer needed: only the store serves now.
        os.unlink(big)
        if os.path.exists(o.path("out", "big.bin")):
            os.unlink(o.path("out", "big.bin"))
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            base = p.rss_anon()
            peak = [base or 0]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    v = p.rss_anon()
                    if v is not None:
                        peak[0] = max(peak[0], v)
                    stop.wait(0.02)
            th = threading.Thread(target=sample, daemon=True)
            th.start()
            h = hashlib.sha256()
            n = 0
            t0 = time.monotonic()
            c = p.conn(timeout=60)
            try:
                c.request("GET", q(url))
                resp = c.getresponse()
                t.eq("status", resp.status, 200)
                t.eq("Content-Length", resp.getheader("Content-Length"), str(BIG_SIZE))
                while True:
                    piece = resp.read(MiB)
                    if not piece:
                        break
                    h.update(piece)
                    n += len(piece)
            finally:
                c.close()
                stop.set()
                th.join()
            took = time.monotonic() - t0
            t.note(f"{n} bytes in {took:.1f}s; RssAnon before {base // 1024 if base else '?'} KiB, "
                   f"peak {peak[0] // 1024} KiB")
            t.eq("bytes received", n, BIG_SIZE)
            t.eq("SHA-256 of what was received", h.hexdigest(), want)
            t.ok(f"RssAnon peak {peak[0] // MiB} MiB < {RSS_ANON_ALLOWED // MiB} MiB"
                 + (" (64 MiB and the sanitizer's shadow of the bytes read)" if SANITIZED else ""),
                 0 < peak[0] < RSS_ANON_ALLOWED)
            _, m = p.metrics()
            t.eq("bytes_served_total", m.get("bgcopy_peerd_bytes_served_total"), BIG_SIZE)


@case("peerd_content_removed_mid_stream_cuts_connection")
def _(bg):
    """when the content is removed (cache rm + cache gc) while peerd streams it, the connection is
    cut: the client gets a short body whose bytes are all right, never wrong bytes; peerd keeps
    serving"""
    size = 48 * MiB
    with Origin() as o:
        o, agent, t = started(bg, o)
        want = write_big_file(o.file_path("m.bin"), size)
        with open(o.file_path("m.bin"), "rb") as f:
            data = f.read()
        url = o.url("/files/m.bin")
        r = t.ran(agent.get(url, o.path("out", "m.bin"), timeout=120))
        t.eq("get m.bin: exit status", r.rc, 0)
        t.eq("stored digest", (r.doc or {}).get("files", [{}])[0].get("sha256"), want)
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            c = p.conn(timeout=30)
            got = b""
            short = False
            try:
                c.request("GET", q(url))
                resp = c.getresponse()
                t.eq("status", resp.status, 200)
                got = resp.read(MiB)
                s = t.ran(agent.run("cache", "rm", url))
                t.eq("cache rm: exit", s.rc, 0)
                s = t.ran(agent.run("cache", "gc"))
                t.eq("cache gc: exit", s.rc, 0)
                try:
                    while True:
                        piece = resp.read(MiB)
                        if not piece:
                            break
                        got += piece
                except (http.client.IncompleteRead, ConnectionError) as e:
                    short = True
                    if isinstance(e, http.client.IncompleteRead):
                        got += e.partial
            finally:
                c.close()
            t.note(f"received {len(got)} of {size} bytes")
            t.ok("the body was cut short", short or len(got) < size, f"{len(got)} bytes")
            t.ok("every byte received is right", got == data[:len(got)])
            r = p.request("GET", q(url))
            t.eq("the entry is now absent: status", r.status, 404)
            r = p.request("GET", "/v1/health")
            t.eq("health afterwards", r.status, 200)
            t.eq("peerd still running", p.alive(), True)


@case("peerd_metrics")
def _(bg):
    """/metrics is Prometheus text; after a hit, a 206, a HEAD, a miss and a 416 the counters moved
    by exactly that much"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            r0, m0 = p.metrics()
            t.eq("metrics: status", r0.status, 200)
            t.ok("metrics: text/plain", str(r0.h("content-type")).startswith("text/plain"))
            t.ok("metrics: # TYPE lines", b"# TYPE bgcopy_peerd_requests_total counter" in r0.body)
            t.eq("a fresh peerd counts nothing yet",
                 (m0.get("bgcopy_peerd_hits_total"), m0.get("bgcopy_peerd_misses_total"),
                  m0.get("bgcopy_peerd_bytes_served_total")), (0, 0, 0))
            t.eq("GET hit", p.request("GET", q(url)).status, 200)
            t.eq("GET 206", p.request("GET", q(url), {"Range": "bytes=0-99"}).status, 206)
            t.eq("HEAD hit", p.request("HEAD", q(url)).status, 200)
            t.eq("GET miss", p.request("GET", q(url + "?nope")).status, 404)
            t.eq("GET 416", p.request("GET", q(url), {"Range": f"bytes={A_SIZE}-"}).status, 416)
            t.eq("GET unknown path", p.request("GET", "/nope").status, 404)
            _, m1 = p.metrics()

            def d(name):
                return m1.get(name, 0) - m0.get(name, 0)
            t.eq("hits_total delta (200, 206, HEAD)", d("bgcopy_peerd_hits_total"), 3)
            t.eq("misses_total delta (content 404 only)", d("bgcopy_peerd_misses_total"), 1)
            t.eq("bytes_served_total delta (HEAD sends no body)",
                 d("bgcopy_peerd_bytes_served_total"), A_SIZE + 100)
            t.eq('requests_total{status="200"} delta (GET, HEAD, the first /metrics)',
                 d('bgcopy_peerd_requests_total{status="200"}'), 3)
            t.eq('requests_total{status="206"} delta', d('bgcopy_peerd_requests_total{status="206"}'), 1)
            t.eq('requests_total{status="404"} delta', d('bgcopy_peerd_requests_total{status="404"}'), 2)
            t.eq('requests_total{status="416"} delta', d('bgcopy_peerd_requests_total{status="416"}'), 1)
            t.ok("connections gauge present", "bgcopy_peerd_connections" in m1)


@case("peerd_listens_on_ipv6_loopback")
def _(bg):
    """--listen ::1 (and [::1]) serves over IPv6; nothing listens on 127.0.0.1 then"""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        print(f"  note  no IPv6 loopback here ({e}); nothing to check")
        return
    with Origin(files={"a.bin": 10_000}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        for addr in ("::1", "[::1]"):
            with Peerd(bg, agent.home, "--listen", addr, workdir=o.dir) as p:
                c = http.client.HTTPConnection("::1", p.port, timeout=10)
                c.request("GET", q(url))
                r = c.getresponse()
                body = r.read()
                c.close()
                t.eq(f"--listen {addr}: GET over IPv6", (r.status, body == o.data["a.bin"]), (200, True))
                t.eq(f"--listen {addr}: 127.0.0.1 port {p.port}", connects("127.0.0.1", p.port), "refused")


@case("peerd_listens_on_127_0_0_1_by_default")
def _(bg):
    """without --listen peerd serves on 127.0.0.1 only: the same port on 127.0.0.2 (also loopback)
    refuses the connection"""
    with Origin(files={"a.bin": 10_000}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            r = p.request("GET", q(url))
            t.eq("GET on 127.0.0.1", (r.status, r.body == o.data["a.bin"]), (200, True))
            t.eq(f"127.0.0.2 port {p.port}", connects("127.0.0.2", p.port), "refused")


def run_peerd(bg, *args, env_extra=None, timeout=20):
    env = dict(os.environ)
    env.pop("BGCOPY_HOME", None)
    env.update(env_extra or {})
    argv = [peerd_exe(bg), *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env=env)
    print(f"  ran   {' '.join(args)}  -> exit {p.returncode}", flush=True)
    return p


@case("peerd_starts_without_store_then_serves_it")
def _(bg):
    """a home without a store (missing folder or empty folder, via --home or BGCOPY_HOME) is no
    error: peerd starts and listens, /v1/health is 200, content is 404 (GET and HEAD, counted as
    misses) and nothing is created in or as the home; then bgcopy stores a file there and the
    same peerd process serves it (200, the bytes, its ETag) without a restart (500 while the
    home is group-writable), and a second one stored after that; the home and store.mdb keep
    bgcopy's modes (0700, 0600) and bgcopy keeps using the store peerd has open; an empty home
    others may write is still refused (exit 3)"""
    with Origin(files={"a.bin": A_SIZE, "b.bin": 5000}) as o:
        o, agent, t = started(bg, o)
        for what, home, mkdir, via_env in (("missing --home", o.path("h-missing"), False, False),
                                           ("empty --home", o.path("h-empty"), True, False),
                                           ("BGCOPY_HOME not made yet", o.path("h-env"), False, True)):
            if mkdir:
                os.makedirs(home, mode=0o700)
            node = Bgcopy(bg.exe, home)
            kw = {"env_extra": {"BGCOPY_HOME": home}} if via_env else {}
            workdir = o.path(f"w-{os.path.basename(home)}")
            os.makedirs(workdir)
            url_a, url_b = o.url("/files/a.bin"), o.url("/files/b.bin")
            with Peerd(bg, None if via_env else home, workdir=workdir, **kw) as p:
                pid = p.proc.pid
                # The line is written just after the port file: poll for it.
                deadline = time.monotonic() + 10
                while "serving" not in p.stderr() and time.monotonic() < deadline:
                    time.sleep(0.02)
                t.ok(f"{what}: the log says there is no store yet", "no store there yet" in p.stderr(),
                     p.stderr())
                r = p.request("GET", "/v1/health")
                t.eq(f"{what}: /v1/health", (r.status, r.body), (200, b"ok\n"))
                r = p.request("GET", q(url_a), keep=True)
                t.eq(f"{what}: GET content before any store: status", r.status, 404)
                r = p.request("HEAD", q(url_a), keep=True)
                t.eq(f"{what}: HEAD content before any store: status", r.status, 404)
                t.eq(f"{what}: connection kept alive", r.will_close, False)
                _, m = p.metrics()
                t.eq(f"{what}: misses_total", m.get("bgcopy_peerd_misses_total"), 2)
                if mkdir:
                    t.eq(f"{what}: the home is still empty", os.listdir(home), [])
                else:
                    t.eq(f"{what}: the home was not created", os.path.exists(home), False)

                r = t.ran(node.get(url_a, o.path("out", f"{os.path.basename(home)}-a.bin")))
                t.eq(f"{what}: bgcopy get into that home: exit status", r.rc, 0)
                t.eq(f"{what}: home mode (bgcopy's)", oct(os.stat(home).st_mode & 0o777), oct(0o700))
                t.eq(f"{what}: store.mdb mode (bgcopy's)",
                     oct(os.stat(os.path.join(home, "store.mdb")).st_mode & 0o777), oct(0o600))
                # Found later, the store passes the same safety check as at start.
                os.chmod(home, 0o770)
                try:
                    for i in (1, 2):
                        r = p.request("GET", q(url_a))
                        t.eq(f"{what}: GET {i} while the new home is group-writable: status",
                             r.status, 500)
                    log = p.stderr()
                    t.eq(f"{what}: the log says it once, and chmod go-w",
                         (log.count("writable or readable by other users"), "chmod go-w" in log),
                         (1, True))
                finally:
                    os.chmod(home, 0o700)
                r = p.request("GET", q(url_a), keep=True)
                t.eq(f"{what}: GET after bgcopy stored it: status", r.status, 200)
                t.ok(f"{what}: the stored bytes", r.body == o.data["a.bin"], f"{len(r.body)} bytes")
                t.eq(f"{what}: ETag", r.h("etag"), '"' + hashlib.sha256(o.data["a.bin"]).hexdigest()
                     + '"')
                t.eq(f"{what}: the same peerd process", (p.alive(), p.proc.pid), (True, pid))

                # bgcopy keeps writing the store peerd now has open.
                r = t.ran(node.get(url_b, o.path("out", f"{os.path.basename(home)}-b.bin")))
                t.eq(f"{what}: a second bgcopy get: exit status", r.rc, 0)
                r = p.request("GET", q(url_b), keep=True)
                t.eq(f"{what}: the second entry served", (r.status, r.body == o.data["b.bin"]),
                     (200, True))
                r = t.ran(node.run("cache", "list", "--json"))
                urls = sorted(e.get("url") for e in (r.doc or []) if isinstance(e, dict))
                t.eq(f"{what}: bgcopy cache list", (r.rc, urls), (0, sorted([url_a, url_b])))
                t.ok(f"{what}: the log says the store was found", "store found in" in p.stderr(),
                     p.stderr())

        # The safety checks stay: an existing home others may write is refused at start.
        unsafe = o.path("h-unsafe")
        os.makedirs(unsafe)
        os.chmod(unsafe, 0o770)
        pf = o.path("pf")
        p = run_peerd(bg, "--home", unsafe, "--port", "0", "--port-file", pf)
        t.eq("empty home writable by the group: exit status", p.returncode, 3)
        t.ok("empty home writable by the group: says chmod go-w", "chmod go-w" in p.stderr,
             p.stderr.strip())
        t.eq("empty home writable by the group: no port file", os.path.exists(pf), False)


UNIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "systemd",
                    "bgcopy-peerd.service")


def unit_settings(path):
    """{key: [values]} of a systemd unit file (comments and sections dropped)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[":
                continue
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@case("peerd_systemd_unit_starts_on_fresh_home")
def _(bg):
    """scripts/systemd/bgcopy-peerd.service passes systemd-analyze verify --user (with ExecStart
    pointing at this build); its ExecStartPre, ExecStart and ReadWritePaths name one home (the
    one place it may write: LMDB's reader table); run as the unit runs them, for a user with no
    state yet: the home is made 0700 and empty, peerd starts, /v1/health 200, content 404, then
    serves what bgcopy stores there without a restart"""
    with Origin(files={"a.bin": 20_000}) as o:
        o, agent, t = started(bg, o)
        exe = os.path.abspath(peerd_exe(bg))
        t.ok("the unit file exists", os.path.isfile(UNIT), UNIT)
        u = unit_settings(UNIT)
        pre, start = u.get("ExecStartPre", [""])[0], u.get("ExecStart", [""])[0]
        t.ok("ExecStart runs bgcopy-peerd", start.split()[0].endswith("/bgcopy-peerd"), start)
        t.eq("sandboxed read-only", u.get("ProtectSystem"), ["strict"])
        argv = start.split()[1:]
        home_spec = argv[argv.index("--home") + 1] if "--home" in argv else None
        t.eq("ReadWritePaths is the --home", u.get("ReadWritePaths"), [home_spec])
        t.eq("ExecStartPre makes that home 0700 (outside the sandbox)",
             pre.split(), ["+/bin/mkdir", "-p", "-m", "0700", home_spec])

        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            print("  note  no systemd-analyze here: the unit is not verified")
        else:
            runtime = o.path("xdg-runtime")
            os.makedirs(runtime, mode=0o700)
            copy = o.path("bgcopy-peerd.service")
            with open(UNIT) as f, open(copy, "w") as g:
                g.write(f.read().replace(start.split()[0], exe))
            env = dict(os.environ, XDG_RUNTIME_DIR=runtime)
            r = subprocess.run([analyze, "verify", "--user", copy], capture_output=True, text=True,
                               env=env, stdin=subprocess.DEVNULL)
            t.eq("systemd-analyze verify --user: exit status and output",
                 (r.returncode, (r.stdout + r.stderr).strip()), (0, ""))

        # As the user manager would run it, %h being a user with nothing yet.
        user_home = o.path("user")
        os.makedirs(user_home, mode=0o700)
        home = home_spec.replace("%h", user_home)
        r = subprocess.run([a.replace("%h", user_home) for a in pre.lstrip("+").split()],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        t.eq("ExecStartPre: exit status", r.returncode, 0)
        t.eq("the home: mode and contents", (oct(os.stat(home).st_mode & 0o777), os.listdir(home)),
             (oct(0o700), []))
        args = [a.replace("%h", user_home) for a in argv]
        url = o.url("/files/a.bin")
        with Peerd(bg, None, *args, workdir=o.dir) as p:
            r = p.request("GET", "/v1/health")
            t.eq("/v1/health on the fresh home", (r.status, r.body), (200, b"ok\n"))
            t.eq("content on the fresh home", p.request("GET", q(url)).status, 404)
            r = t.ran(Bgcopy(bg.exe, home).get(url, o.path("out", "a.bin")))
            t.eq("bgcopy get into that home: exit status", r.rc, 0)
            r = p.request("GET", q(url))
            t.eq("served once bgcopy stored it", (r.status, r.body == o.data["a.bin"]), (200, True))


@case("unsafe_home_and_peer_key_refused")
def _(bg):
    """a new home is 0700 and its store.mdb 0600; a home or store.mdb that group or others may
    write is refused by bgcopy and bgcopy-peerd (exit 3, a message saying what to chmod); a peer
    key others may read is refused (exit 2)"""
    with Origin(files={"a.bin": 1000}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, "a.bin")
        home = agent.home
        store = os.path.join(home, "store.mdb")
        fresh = Bgcopy(bg.exe, o.path("fresh-home"))
        t.eq("bgcopy cache list in a new home: exit status", fresh.run("cache", "list").rc, 0)
        t.eq("new home mode", oct(os.stat(fresh.home).st_mode & 0o777), oct(0o700))
        t.eq("new store.mdb mode",
             oct(os.stat(os.path.join(fresh.home, "store.mdb")).st_mode & 0o777), oct(0o600))
        for what, path, mode in (("group-writable home", home, 0o770),
                                 ("world-writable home", home, 0o707),
                                 ("group-writable store.mdb", store, 0o620),
                                 ("world-writable store.mdb", store, 0o606)):
            good = os.stat(path).st_mode & 0o777
            os.chmod(path, mode)
            try:
                r = agent.run("cache", "list")
                t.eq(f"{what}: bgcopy exit status", r.rc, 3)
                t.ok(f"{what}: bgcopy says chmod go-w", "chmod go-w" in r.err, r.err.strip())
                p = run_peerd(bg, "--home", home, "--port", "0")
                t.eq(f"{what}: peerd exit status", p.returncode, 3)
                t.ok(f"{what}: peerd says chmod go-w", "chmod go-w" in p.stderr, p.stderr.strip())
            finally:
                os.chmod(path, good)
        r = agent.run("cache", "show", url)
        t.eq("after chmod back: the entry is there", r.rc, 0)
        key = o.path("shared.key")
        with open(key, "w") as f:
            f.write("0123456789abcdef0123456789abcdef\n")
        for mode in (0o640, 0o604, 0o660):
            os.chmod(key, mode)
            r = agent.get(url, o.path("out", "b.bin"), extra=["--peer", "127.0.0.1:9",
                                                             "--peer-key", key])
            t.eq(f"get --peer-key with a {oct(mode)} key: exit status", r.rc, 2)
            t.ok(f"get --peer-key with a {oct(mode)} key: says chmod 600", "chmod 600" in r.err,
                 r.err.strip())
        t.eq("no output written", os.path.exists(o.path("out", "b.bin")), False)
        os.chmod(key, 0o600)
        r = agent.get(url, o.path("out", "b.bin"), extra=["--peer", "127.0.0.1:9",
                                                         "--peer-key", key])
        t.eq("get --peer-key with a 0600 key: exit status", r.rc, 0)


@case("peerd_bad_flag_exits_2")
def _(bg):
    """unknown options and bad values exit 2 with a message, before opening anything; --help and
    --version exit 0; a port in use exits 3"""
    with Origin(files={"a.bin": 1000}) as o:
        o, agent, t = started(bg, o)
        store_file(t, agent, o, "a.bin")
        home = agent.home
        short_key = o.path("short.key")
        with open(short_key, "w") as f:
            f.write("tooshort\n")
        os.chmod(short_key, 0o600)
        shared_key = o.path("shared.key")
        with open(shared_key, "w") as f:
            f.write("0123456789abcdef0123456789abcdef\n")
        os.chmod(shared_key, 0o644)
        for args in (["--bogus"], ["--port", "70000"], ["--port", "abc"], ["--port", "-1"],
                     ["--port"], ["--listen", "localhost"], ["--listen", "1.2.3"],
                     ["--threads", "0"], ["--threads", "x"], ["--timeout", "0"],
                     ["--max-connections", "0"], ["--threads", "4", "--max-connections", "2"],
                     ["stray-argument"], ["--peer-key", short_key],
                     ["--peer-key", shared_key]):
            p = run_peerd(bg, "--home", home, *args)
            t.eq(f"{' '.join(args)}: exit status", p.returncode, 2)
            t.ok(f"{' '.join(args)}: a message on stderr", p.stderr.strip() != "")
            t.eq(f"{' '.join(args)}: stdout", p.stdout, "")
        p = run_peerd(bg, "--home", home, "--peer-key", o.path("no-such.key"))
        t.eq("--peer-key of a missing file: exit status", p.returncode, 3)
        p = run_peerd(bg, "--help")
        t.eq("--help: exit status", p.returncode, 0)
        t.ok("--help prints the usage on stdout", "usage: bgcopy-peerd" in p.stdout)
        p = run_peerd(bg, "--version")
        t.eq("--version: exit status", p.returncode, 0)
        t.ok("--version prints the name", p.stdout.startswith("bgcopy-peerd "), repr(p.stdout))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            p = run_peerd(bg, "--home", home, "--port", str(s.getsockname()[1]))
            t.eq("port in use: exit status", p.returncode, 3)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
