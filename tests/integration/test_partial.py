#!/usr/bin/env python3
"""Integration cases for bgcopy-peerd's fleet paths: /v1/partial (a download in progress served
as it arrives) and /v1/pieces (its piece digests), peerd/README.md.

Usage: test_partial.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_partial.py CASE)
       test_partial.py --list                    prints the case names, one a line
       test_partial.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Environment: BGCOPY (the agent binary; only its folder is used to find the others),
BGCOPY_PEERD (default: bgcopy-peerd next to BGCOPY), INFLIGHT_WRITER and STORE_FILL (default:
next to BGCOPY, or in ../tests), BGCOPY_KEEP_TMP=1 keeps the temp dirs.

The download in progress is played by tests/tools/inflight_writer: it commits a known pattern
(byte i = (i * 31 + 7) & 0xff) chunk by chunk into a home's store with the record of the
download and the digest of each full chunk, in one transaction per chunk, holding the writer's
lock, as the agent does. It can pause (SIGUSR1 resumes it), exit without finishing (the lock
drops, as after a crash) or finish (content, key, final record). peerd is started on that home
(--port 0 --port-file). Every body received is compared with the pattern: never a byte that
was not committed."""

import hashlib
import hmac
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import ABSENT, case_registry, main, Peerd, q, sign  # noqa: E402

CHUNK = 64 * 4096 - 16          # STORE_CHUNK_BYTES = STORE_PIECE_BYTES (cache.h)
URL = "https://origin.example/big.iso"
GEN1 = '"partial-0000000000000001"'
PARTIAL_FIELDS = ["etag", "content-range", "x-bgcopy-available", "x-bgcopy-final",
                  "x-bgcopy-state", "x-bgcopy-node", "x-bgcopy-total", "x-bgcopy-fetch",
                  "x-origin-etag", "last-modified", "x-bgcopy-origin-date",
                  "x-bgcopy-piece-size"]
FETCH = "ignore=0, crl=?0, ca=system, redirect=silent, h2h=?0"

CASES, case = case_registry()


def pattern(size, seed=7):
    return bytes(((i * 31 + seed) & 0xFF) for i in range(size))


def tool(bg, env, name):
    exe = os.environ.get(env)
    if not exe:
        d = os.path.dirname(bg.exe)
        for cand in (os.path.join(d, name), os.path.join(d, "..", "tests", name)):
            if os.access(cand, os.X_OK):
                exe = cand
                break
    if not exe or not os.access(exe, os.X_OK):
        raise RuntimeError(f"{name} not found (set {env})")
    return exe


class Home:
    """A temp folder with a home (0700) in it and room for peerd's files."""

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="bgcopy-it-partial-")
        self.home = os.path.join(self.dir, "home")
        os.mkdir(self.home, 0o700)
        return self

    def __exit__(self, *exc):
        if os.environ.get("BGCOPY_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def path(self, *p):
        return os.path.join(self.dir, *p)


class Writer:
    """inflight_writer on a home: a context manager that kills it on the way out."""

    def __init__(self, bg, h, size, *args, url=URL, name="w"):
        self.exe = tool(bg, "INFLIGHT_WRITER", "inflight_writer")
        self.status_path = h.path(f"{name}.status")
        self.argv = [self.exe, h.home, url, str(size), "--status", self.status_path, *args]
        self.err_path = h.path(f"{name}.stderr")
        self.size = size
        self.proc = None

    def __enter__(self):
        print(f"  start inflight_writer {' '.join(self.argv[2:])}", flush=True)
        self.errf = open(self.err_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.errf)
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"inflight_writer did not start: {line!r} {self.stderr()}")
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.errf.close()
        return False

    def stderr(self):
        try:
            with open(self.err_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def committed(self):
        try:
            with open(self.status_path) as f:
                return int(f.read())
        except (OSError, ValueError):
            return -1

    def wait_committed(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while self.committed() < n:
            if time.monotonic() > deadline or self.proc.poll() not in (None, 0):
                raise RuntimeError(f"writer did not reach {n} bytes: {self.committed()} "
                                   f"{self.stderr()}")
            time.sleep(0.01)

    def wait_exit(self, timeout=20):
        return self.proc.wait(timeout=timeout)

    def resume(self):
        self.proc.send_signal(signal.SIGUSR1)


def pq(url=URL, path="/v1/partial"):
    return path + "?url=" + urllib.parse.quote(url, safe="")


def piq(url=URL, frm=None):
    return pq(url, "/v1/pieces") + (f"&from={frm}" if frm is not None else "")


def expect_partial(t, what, r, data, start, end, total="", state="origin", available=None,
                   etag=GEN1):
    """A 206 of [start, end] (inclusive) of a non-final entry, its body the pattern's bytes."""
    t.eq(f"{what}: status", r.status, 206)
    tot = total if total != "" else "*"
    t.eq(f"{what}: Content-Range", r.h("content-range"), f"bytes {start}-{end}/{tot}")
    t.ok(f"{what}: body is the pattern's bytes {start}-{end} ({len(r.body)} bytes)",
         r.body == data[start:end + 1])
    t.eq(f"{what}: ETag", r.h("etag"), etag)
    t.eq(f"{what}: X-Bgcopy-Final", r.h("x-bgcopy-final"), "?0")
    t.eq(f"{what}: X-Bgcopy-State", r.h("x-bgcopy-state"), state)
    if available is not None:
        t.eq(f"{what}: X-Bgcopy-Available", r.h("x-bgcopy-available"), str(available))


def sig_fields(r, names):
    return [r.headers.get(n, "") for n in names]


def answer2(key, req_value, path, status, fields):
    """X-Bgcopy-Signed (cache.h): v=2,sig=HMAC-SHA256(key, "answer2\\nREQ\\nPATH\\nSTATUS\\n"
    f0 "\\n" ... fn "\\n")."""
    msg = "\n".join(["answer2", req_value, path, str(status), *fields]) + "\n"
    return "v=2,sig=" + hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()


def answer1(key, req_value, sha_hex, size, oetag, lm):
    """X-Bgcopy-Auth of a content answer (v1, unchanged): sig=HMAC(key, "answer\\nREQ\\nSHA\\n
    SIZE\\nORIGIN_ETAG\\nLAST_MODIFIED\\n")."""
    msg = "\n".join(["answer", req_value, sha_hex, str(size), oetag, lm]) + "\n"
    return "sig=" + hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()


def in_thread(fn):
    """Runs fn in a thread; returns a getter of (result, seconds) that joins it."""
    box = {}

    def run():
        t0 = time.monotonic()
        try:
            box["r"] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the getter
            box["r"] = e
        box["s"] = time.monotonic() - t0
    th = threading.Thread(target=run, daemon=True)
    th.start()

    def get(timeout=40):
        th.join(timeout)
        return box.get("r"), box.get("s")
    return get


# ---- ranges -----------------------------------------------------------------------------

@case("partial_range_inside_prefix_clamped_and_416")
def partial_range_inside_prefix_clamped_and_416(bg):
    """Two chunks committed of five and a bit (writer alive, paused): a range inside the prefix
    is 206 with the complete length after the slash (RFC 9110 section 14.4), one crossing the
    committed end is clamped to it, one past it is 416 "bytes */N" (section 15.5.17: nothing
    overlaps the current extent), no Range is "bytes=0-" (the documented deviation), a suffix
    is 416 while the end is unknown; every header of the table in peerd/README.md"""
    t = bg.t
    size = 5 * CHUNK + 1000
    data = pattern(size)
    n = 2 * CHUNK
    with Home() as h, Writer(bg, h, size, "--pause-after", "2") as w:
        w.wait_committed(n)
        with Peerd(bg, h.home, workdir=h.dir) as p:
            r = p.request("GET", pq(), {"Range": "bytes=100-199"})
            expect_partial(t, "inside", r, data, 100, 199, total=size, available=n)
            t.eq("inside: X-Bgcopy-Total", r.h("x-bgcopy-total"), str(size))
            t.eq("inside: X-Bgcopy-Fetch", r.h("x-bgcopy-fetch"), FETCH)
            t.eq("inside: X-Origin-ETag", r.h("x-origin-etag"), '"w1"')
            t.eq("inside: Last-Modified", r.h("last-modified"), "Tue, 01 Dec 2026 10:00:00 GMT")
            t.eq("inside: X-Bgcopy-Origin-Date", r.h("x-bgcopy-origin-date"),
                 "Sat, 05 Dec 2026 10:00:00 GMT")
            t.eq("inside: X-Bgcopy-Piece-Size", r.h("x-bgcopy-piece-size"), str(CHUNK))
            node = r.h("x-bgcopy-node")
            t.ok("inside: X-Bgcopy-Node is 32 hex digits", node is not ABSENT and len(node) == 32
                 and all(c in "0123456789abcdef" for c in node), node)
            with open(os.path.join(h.home, "node-id")) as f:
                t.eq("inside: X-Bgcopy-Node is the home's node id", node, f.read().strip())
            t.eq("no key: not signed", r.h("x-bgcopy-signed"), ABSENT)

            r = p.request("GET", pq(), {"Range": f"bytes={CHUNK - 10}-"})
            expect_partial(t, "open range clamped", r, data, CHUNK - 10, n - 1, total=size)
            r = p.request("GET", pq(), {"Range": f"bytes=0-{10 * CHUNK}"})
            expect_partial(t, "long range clamped", r, data, 0, n - 1, total=size)
            r = p.request("GET", pq())
            expect_partial(t, "no Range: bytes=0-", r, data, 0, n - 1, total=size)
            t.eq("no Range: Content-Length", r.h("content-length"), str(n))

            for rng in (f"bytes={n}-", f"bytes={n + 5}-{n + 10}", "bytes=-10"):
                r = p.request("GET", pq(), {"Range": rng})
                t.eq(f"{rng}: 416", r.status, 416)
                t.eq(f"{rng}: Content-Range", r.h("content-range"), f"bytes */{n}")
                t.eq(f"{rng}: no body", r.body, b"")
                t.eq(f"{rng}: X-Bgcopy-Available", r.h("x-bgcopy-available"), str(n))

            # An unusable Range is ignored (RFC 9110 section 14.2): as no Range.
            r = p.request("GET", pq(), {"Range": "bytes=5-3"})
            expect_partial(t, "invalid Range ignored", r, data, 0, n - 1, total=size)
            r = p.request("GET", pq("https://origin.example/none"))
            t.eq("unknown key: 404", r.status, 404)
            r = p.request("POST", pq())
            t.eq("POST: 405", r.status, 405)


@case("partial_head_has_the_get_headers")
def partial_head_has_the_get_headers(bg):
    """HEAD /v1/partial: 200 with the length available and every header a GET carries but
    Content-Range (Range is defined for GET only, RFC 9110 section 14.2)"""
    t = bg.t
    size = 3 * CHUNK
    with Home() as h, Writer(bg, h, size, "--pause-after", "1") as w:
        w.wait_committed(CHUNK)
        with Peerd(bg, h.home, workdir=h.dir) as p:
            g = p.request("GET", pq(), {"Range": "bytes=0-"})
            hd = p.request("HEAD", pq(), {"Range": "bytes=0-"})
            t.eq("HEAD: 200", hd.status, 200)
            t.eq("HEAD: no body", hd.body, b"")
            t.eq("HEAD: Content-Length is what is available", hd.h("content-length"), str(CHUNK))
            for name in PARTIAL_FIELDS:
                if name == "content-range":
                    t.eq("HEAD: no Content-Range", hd.h(name), ABSENT)
                else:
                    t.eq(f"HEAD {name} = GET {name}", hd.h(name), g.h(name))


@case("partial_total_unknown_star")
def partial_total_unknown_star(bg):
    """An origin without a length: Content-Range "bytes A-B/*" (RFC 9110 section 14.4, complete
    length unknown), no X-Bgcopy-Total"""
    t = bg.t
    size = 2 * CHUNK
    data = pattern(size)
    with Home() as h, Writer(bg, h, size, "--pause-after", "1", "--total-unknown") as w:
        w.wait_committed(CHUNK)
        with Peerd(bg, h.home, workdir=h.dir) as p:
            r = p.request("GET", pq(), {"Range": "bytes=10-19"})
            expect_partial(t, "unknown total", r, data, 10, 19)
            t.eq("no X-Bgcopy-Total", r.h("x-bgcopy-total"), ABSENT)


@case("partial_if_match_old_gen_412")
def partial_if_match_old_gen_412(bg):
    """If-Match pins the incarnation (RFC 9110 section 13.1.1): the current partial ETag goes
    on, another gen's is 412; If-Range with another tag sends from 0"""
    t = bg.t
    size = 2 * CHUNK
    data = pattern(size)
    with Home() as h, Writer(bg, h, size, "--pause-after", "1", "--gen", "2") as w:
        w.wait_committed(CHUNK)
        etag = '"partial-0000000000000002"'
        with Peerd(bg, h.home, workdir=h.dir) as p:
            r = p.request("GET", pq(), {"Range": "bytes=5-9", "If-Match": etag})
            expect_partial(t, "If-Match current", r, data, 5, 9, total=size, etag=etag)
            r = p.request("GET", pq(), {"Range": "bytes=5-9", "If-Match": GEN1})
            t.eq("If-Match old gen: 412", r.status, 412)
            t.eq("412: ETag names the current incarnation", r.h("etag"), etag)
            r = p.request("GET", pq(), {"Range": "bytes=5-9", "If-Range": GEN1})
            expect_partial(t, "If-Range other tag: from 0", r, data, 0, CHUNK - 1, total=size,
                           etag=etag)


# ---- the wait ----------------------------------------------------------------------------

@case("partial_wait_returns_on_growth")
def partial_wait_returns_on_growth(bg):
    """At the frontier with X-Bgcopy-Wait: ms=8000: the answer comes as soon as the next chunk
    is committed, with its bytes (and the gauge counted the waiter)"""
    t = bg.t
    size = 3 * CHUNK
    data = pattern(size)
    with Home() as h, Writer(bg, h, size, "--pause-after", "1") as w:
        w.wait_committed(CHUNK)
        with Peerd(bg, h.home, workdir=h.dir) as p:
            get = in_thread(lambda: p.request("GET", pq(), {"Range": f"bytes={CHUNK}-",
                                                            "X-Bgcopy-Wait": "ms=8000"}))
            time.sleep(0.5)
            _, m = p.metrics()
            t.eq("one request waiting (gauge)", m.get("bgcopy_peerd_waiting"), 1)
            w.resume()
            r, secs = get()
            t.ok(f"answered after the growth, well before the bound ({secs:.2f} s)",
                 secs is not None and secs < 4, repr(r))
            if not t.ok("a reply", hasattr(r, "status"), repr(r)):
                return
            avail = int(r.h("x-bgcopy-available"))
            t.ok("more available than before", avail > CHUNK, avail)
            expect_partial(t, "grown", r, data, CHUNK, avail - 1, total=size)
            _, m = p.metrics()
            t.eq("nobody waiting any more", m.get("bgcopy_peerd_waiting"), 0)
            t.ok("partial requests counted", m.get("bgcopy_peerd_partial_requests_total", 0) >= 1)


@case("partial_wait_min_bytes")
def partial_wait_min_bytes(bg):
    """min=K: a chunk every 200 ms, the answer waits until K bytes past A are committed"""
    t = bg.t
    size = 8 * CHUNK
    data = pattern(size)
    with Home() as h, Writer(bg, h, size, "--pause-after", "1", "--pace", "200") as w:
        w.wait_committed(CHUNK)
        with Peerd(bg, h.home, workdir=h.dir) as p:
            get = in_thread(lambda: p.request("GET", pq(), {
                "Range": f"bytes={CHUNK}-", "X-Bgcopy-Wait": f"ms=10000, min={3 * CHUNK}"}))
            time.sleep(0.2)
            w.resume()
            r, secs = get()
            if not t.ok("a reply", hasattr(r, "status"), repr(r)):
                return
            avail = int(r.h("x-bgcopy-available"))
            t.ok(f"at least min past A available ({avail})", avail >= 4 * CHUNK)
            t.ok(f"it took the chunks' time, not the bound ({secs:.2f} s)", 0.3 < secs < 6)
            expect_partial(t, "min", r, data, CHUNK, avail - 1, total=size)


@case("partial_wait_returns_on_final")
def partial_wait_returns_on_final(bg):
    """Waiting past the end of a file that then finishes: the answer comes at the final commit:
    416 "bytes */SIZE" with X-Bgcopy-Final ?1 and the content's ETag"""
    t = bg.t
    size = 2 * CHUNK + 5
    data = pattern(size)
    with Home() as h, Writer(bg, h, size, "--pause-after", "2", "--final") as w:
        w.wait_committed(2 * CHUNK)
        with Peerd(bg, h.home, workdir=h.dir) as p:
            get = in_thread(lambda: p.request("GET", pq(), {"Range": f"bytes={size}-",
                                                            "X-Bgcopy-Wait": "ms=8000"}))
            time.sleep(0.4)
            w.resume()
            r, secs = get()
            if not t.ok("a reply", hasattr(r, "status"), repr(r)):
                return
            t.ok(f"answered at the final commit ({secs:.2f} s)", secs < 4)
            t.eq("416", r.status, 416)
            t.eq("Content-Range", r.h("content-range"), f"bytes */{size}")
            t.eq("X-Bgcopy-Final", r.h("x-bgcopy-final"), "?1")
            t.eq("X-Bgcopy-State", r.h("x-bgcopy-state"), "final")
            t.eq("ETag: the content's", r.h("etag"), '"' + hashlib.sha256(data).hexdigest() + '"')
            r = p.request("GET", pq())
            t.eq("final, no Range: 200", r.status, 200)
            t.ok("final: the whole file", r.body == data)


@case("partial_wait_writer_dies_stalled")
def partial_wait_writer_dies_stalled(bg):
    """The writer is killed (-9) while a request waits: the wait ends (its lock dropped), the
    answer says X-Bgcopy-State: stalled"""
    t = bg.t
    size = 3 * CHUNK
    with Home() as h, Writer(bg, h, size, "--pause-after", "1") as w:
        w.wait_committed(CHUNK)
        with Peerd(bg, h.home, workdir=h.dir) as p:
            get = in_thread(lambda: p.request("GET", pq(), {"Range": f"bytes={CHUNK}-",
                                                            "X-Bgcopy-Wait": "ms=9000"}))
            time.sleep(0.4)
            w.proc.kill()
            w.proc.wait()
            r, secs = get()
            if not t.ok("a reply", hasattr(r, "status"), repr(r)):
                return
            t.ok(f"answered soon after the writer died ({secs:.2f} s)", secs < 3.5)
            t.eq("416", r.status, 416)
            t.eq("X-Bgcopy-State", r.h("x-bgcopy-state"), "stalled")
            t0 = time.monotonic()
            r = p.request("GET", pq(), {"Range": f"bytes={CHUNK}-", "X-Bgcopy-Wait": "ms=5000"})
            t.ok("a stalled download is not waited on", time.monotonic() - t0 < 1)
            t.eq("stalled: 416", r.status, 416)


@case("partial_wait_bounded")
def partial_wait_bounded(bg):
    """The wait ends at its ms, at most at --partial-wait-max; ms=0 and --partial-wait-max 0
    answer at once; a malformed X-Bgcopy-Wait is 400"""
    t = bg.t
    size = 3 * CHUNK
    with Home() as h, Writer(bg, h, size, "--pause-after", "1") as w:
        w.wait_committed(CHUNK)
        rng = {"Range": f"bytes={CHUNK}-"}
        with Peerd(bg, h.home, "--partial-wait-max", "1", workdir=h.dir) as p:
            for wait, lo, hi in (("ms=600", 0.55, 2.5), ("ms=60000", 0.95, 3), ("ms=0", 0, 0.5),
                                 ("min=5", 0, 0.5)):
                t0 = time.monotonic()
                r = p.request("GET", pq(), {**rng, "X-Bgcopy-Wait": wait})
                secs = time.monotonic() - t0
                t.ok(f"{wait}: answered in {secs:.2f} s (between {lo} and {hi})", lo <= secs <= hi)
                t.eq(f"{wait}: 416", r.status, 416)
                t.eq(f"{wait}: Content-Range", r.h("content-range"), f"bytes */{CHUNK}")
            for bad in ("ms=1.5", "ms=-1", "ms", "ms=1,", "ms=1 min=2", "ms=1234567890123456"):
                r = p.request("GET", pq(), {**rng, "X-Bgcopy-Wait": bad})
                t.eq(f"{bad!r}: 400", r.status, 400)
            r = p.request("GET", pq(), {**rng, "X-Bgcopy-Wait": "ms=0, other=?1;x=1, min=2"})
            t.eq("other members ignored (RFC 8941 dictionary)", r.status, 416)
        with Peerd(bg, h.home, "--partial-wait-max", "0", workdir=h.path()) as p:
            t0 = time.monotonic()
            r = p.request("GET", pq(), {**rng, "X-Bgcopy-Wait": "ms=5000"})
            t.ok("--partial-wait-max 0: at once", time.monotonic() - t0 < 0.5)
            t.eq("--partial-wait-max 0: 416", r.status, 416)


@case("partial_waiters_released_by_sigterm")
def partial_waiters_released_by_sigterm(bg):
    """Requests suspended in a 30 s wait do not hold peerd up: SIGTERM ends it promptly and
    cleanly (every waiter is resumed before libmicrohttpd stops)"""
    t = bg.t
    size = 3 * CHUNK
    with Home() as h, Writer(bg, h, size, "--pause-after", "1") as w:
        w.wait_committed(CHUNK)
        with Peerd(bg, h.home, "--partial-wait-max", "30", workdir=h.dir) as p:
            gets = [in_thread(lambda: p.request("GET", pq(), {"Range": f"bytes={CHUNK}-",
                                                              "X-Bgcopy-Wait": "ms=30000"}))
                    for _ in range(4)]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                _, m = p.metrics()
                if m.get("bgcopy_peerd_waiting") == 4:
                    break
                time.sleep(0.05)
            t.eq("four waiting", m.get("bgcopy_peerd_waiting"), 4)
            t0 = time.monotonic()
            rc = p.stop()
            secs = time.monotonic() - t0
            t.ok(f"peerd stopped in {secs:.2f} s", secs < 3)
            t.eq("exit status 0", rc, 0)
            for i, g in enumerate(gets):
                r, s = g(timeout=5)
                t.ok(f"waiter {i} released ({type(r).__name__})", s is not None and s < 10)


@case("partial_waiter_cap_503")
def partial_waiter_cap_503(bg):
    """At most max_connections / 2 requests wait: the next one is 503 with Retry-After: 1"""
    t = bg.t
    size = 3 * CHUNK
    with Home() as h, Writer(bg, h, size, "--pause-after", "1") as w:
        w.wait_committed(CHUNK)
        with Peerd(bg, h.home, "--threads", "1", "--max-connections", "6", workdir=h.dir) as p:
            hdr = {"Range": f"bytes={CHUNK}-", "X-Bgcopy-Wait": "ms=4000"}
            gets = [in_thread(lambda: p.request("GET", pq(), hdr)) for _ in range(3)]
            time.sleep(0.6)
            r = p.request("GET", pq(), hdr)
            t.eq("fourth waiter: 503", r.status, 503)
            t.eq("Retry-After", r.h("retry-after"), "1")
            for g in gets:
                r, _ = g()
                t.eq("the waiters: 416 at their bound", getattr(r, "status", r), 416)


@case("partial_connections_per_peer_limit")
def partial_connections_per_peer_limit(bg):
    """--connections-per-peer 2: a third connection from the same address is closed unanswered
    (libmicrohttpd's per-IP limit), and one is accepted again once another closes"""
    t = bg.t
    size = 2 * CHUNK
    with Home() as h, Writer(bg, h, size, "--pause-after", "1") as w:
        w.wait_committed(CHUNK)
        with Peerd(bg, h.home, "--connections-per-peer", "2", workdir=h.dir) as p:
            held = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(2)]
            time.sleep(0.3)

            def answered():
                try:
                    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
                        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        return s.recv(64).startswith(b"HTTP/1.1 200")
                except OSError:
                    return False
            t.eq("a third connection: refused", answered(), False)
            held[0].close()
            time.sleep(0.3)
            t.eq("after one closed: accepted again", answered(), True)
            held[1].close()


# ---- bytes ---------------------------------------------------------------------------------

@case("partial_never_past_committed")
def partial_never_past_committed(bg):
    """While chunks arrive every 30 ms, repeated reads of bytes=0- and of the frontier never
    carry a byte past what the answer says is available, and every byte is the pattern's"""
    t = bg.t
    size = 16 * CHUNK + 333
    data = pattern(size)
    with Home() as h, Writer(bg, h, size, "--pace", "30", "--final") as w:
        with Peerd(bg, h.home, workdir=h.dir) as p:
            bad, reads, last = [], 0, 0
            while True:
                r = p.request("GET", pq(), {"Range": f"bytes={last}-",
                                            "X-Bgcopy-Wait": "ms=2000"}, keep=True)
                reads += 1
                if r.status == 416:
                    if r.h("x-bgcopy-final") == "?1":
                        break
                    continue
                if r.status not in (200, 206):
                    bad.append(f"status {r.status}")
                    break
                avail = int(r.h("x-bgcopy-available"))
                cr = r.h("content-range")
                start = last if r.status == 206 else 0
                if r.status == 206 and cr != ABSENT:
                    start = int(cr.split()[1].split("-")[0])
                if start + len(r.body) > avail or r.body != data[start:start + len(r.body)]:
                    bad.append(f"read {reads}: {start}+{len(r.body)} of {avail}")
                last = start + len(r.body)
                # And the whole prefix at once, without waiting: as long as what is committed.
                r = p.request("GET", pq(), {"Range": "bytes=0-"}, keep=True)
                if r.status == 206:
                    avail = int(r.h("x-bgcopy-available"))
                    if len(r.body) != avail or r.body != data[:avail]:
                        bad.append(f"prefix read {reads}: {len(r.body)} of {avail}")
                if r.h("x-bgcopy-final") == "?1" and last >= size:
                    break
                if reads > 2000:
                    bad.append("too many reads")
                    break
            t.eq("no byte past committed, every byte the pattern's", bad, [])
            t.eq("the whole file read", last, size)
            t.note(f"{reads} reads")
            w.wait_exit()


@case("partial_restart_mid_body_cuts_it")
def partial_restart_mid_body_cuts_it(bg):
    """The download restarts from byte 0 (a new gen) while a body of the old incarnation is
    being sent: the body ends early (the connection is closed short of Content-Length), and
    every byte that did arrive is the old incarnation's, never the new one's"""
    t = bg.t
    size = 40 * CHUNK
    data = pattern(size)
    with Home() as h:
        with Writer(bg, h, size, "--chunks-per-commit", "8", "--pause-after", "40") as w1:
            w1.wait_committed(size)
            with Peerd(bg, h.home, workdir=h.dir) as p:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                s.connect(("127.0.0.1", p.port))
                s.sendall(f"GET {pq()} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-\r\n\r\n".encode())
                buf = b""
                while b"\r\n\r\n" not in buf:
                    buf += s.recv(4096)
                head, body = buf.split(b"\r\n\r\n", 1)
                length = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                              if ln.lower().startswith(b"content-length:")][0])
                t.eq("Content-Length: everything committed", length, size)
                # The writer goes; another restarts the file from byte 0 (gen 2, other bytes).
                w1.proc.kill()
                w1.proc.wait()
                with Writer(bg, h, size, "--gen", "2", "--seed", "99", "--pause-after", "1",
                            name="w2") as w2:
                    w2.wait_committed(CHUNK)
                    s.settimeout(20)
                    while True:
                        try:
                            more = s.recv(1 << 16)
                        except (ConnectionResetError, socket.timeout):
                            break
                        if not more:
                            break
                        body += more
                    s.close()
                    t.ok(f"the body ended early ({len(body)} of {size} bytes)", len(body) < size)
                    t.ok("every byte received is the first incarnation's",
                         body == data[:len(body)])


# ---- pieces --------------------------------------------------------------------------------

@case("partial_pieces_lists_from_wait_and_none")
def partial_pieces_lists_from_wait_and_none(bg):
    """/v1/pieces: the digests of the full committed chunks while not final, from=I, the wait
    in pieces, all chunks once final (the short last one too); content stored without digests
    (an older build) is 404 with X-Bgcopy-Pieces: none"""
    t = bg.t
    size = 4 * CHUNK + 100
    data = pattern(size)
    digests = [hashlib.sha256(data[i:i + CHUNK]).digest() for i in range(0, size, CHUNK)]
    with Home() as h, Writer(bg, h, size, "--pause-after", "3", "--final") as w:
        w.wait_committed(3 * CHUNK)
        with Peerd(bg, h.home, workdir=h.dir) as p:
            r = p.request("GET", piq())
            t.eq("status", r.status, 200)
            t.eq("X-Bgcopy-Pieces", r.h("x-bgcopy-pieces"),
                 f"from=0, count=3, known=3, size={CHUNK}, final=?0")
            t.ok("body: three digests", r.body == b"".join(digests[:3]))
            t.eq("ETag", r.h("etag"), GEN1)
            r = p.request("GET", piq(frm=2))
            t.eq("from=2", r.h("x-bgcopy-pieces"), f"from=2, count=1, known=3, size={CHUNK}, final=?0")
            t.ok("from=2: one digest", r.body == digests[2])
            r = p.request("GET", piq(frm=7))
            t.eq("from past known: none listed", (r.status, r.body), (200, b""))
            r = p.request("GET", piq(frm="x"))
            t.eq("from=x: 400", r.status, 400)

            get = in_thread(lambda: p.request("GET", piq(frm=3),
                                              {"X-Bgcopy-Wait": "ms=8000, min=2"}))
            time.sleep(0.4)
            w.resume()
            r, secs = get()
            if t.ok("a reply", hasattr(r, "status"), repr(r)):
                t.ok(f"waited for two more pieces or the end ({secs:.2f} s)", secs < 5)
                t.eq("after the wait: the rest, final", r.h("x-bgcopy-pieces"),
                     f"from=3, count=2, known=5, size={CHUNK}, final=?1")
                t.ok("the last two digests (the short one included)", r.body == b"".join(digests[3:]))
            _, m = p.metrics()
            t.ok("pieces requests counted", m.get("bgcopy_peerd_pieces_requests_total", 0) >= 5)

        # Content without digests: store_fill's entries.
        fill = tool(bg, "STORE_FILL", "store_fill")
        subprocess.run([fill, h.home, "1"], check=True, stdout=subprocess.DEVNULL)
        with Peerd(bg, h.home, workdir=h.path()) as p:
            r = p.request("GET", piq("https://fill.example/0"))
            t.eq("no list: 404", r.status, 404)
            t.eq("no list: X-Bgcopy-Pieces", r.h("x-bgcopy-pieces"), "none")
            r = p.request("GET", pq("https://fill.example/0"))
            t.eq("its bytes: /v1/partial answers a complete entry as final", r.status, 200)
            t.eq("final", r.h("x-bgcopy-final"), "?1")


# ---- signing -------------------------------------------------------------------------------

@case("partial_signed_answers_and_wrong_key")
def partial_signed_answers_and_wrong_key(bg):
    """With a key: /v1/partial and /v1/pieces answers carry X-Bgcopy-Signed over their fixed
    field lists (recomputed here), /v1/content keeps its v1 X-Bgcopy-Auth (old clients) and
    adds X-Bgcopy-Signed, X-Bgcopy-Fetch and X-Bgcopy-Node; a request signed with another key
    is 401, so is a replayed one"""
    t = bg.t
    key = b"k" * 32
    size = 3 * CHUNK + 10
    data = pattern(size)
    with Home() as h:
        key_file = h.path("peer.key")
        with open(key_file, "wb") as f:
            f.write(key)
        os.chmod(key_file, 0o600)
        with Writer(bg, h, size, "--pause-after", "2", "--final") as w:
            w.wait_committed(2 * CHUNK)
            with Peerd(bg, h.home, "--peer-key", key_file, workdir=h.dir) as p:
                now = int(time.time())
                auth = sign(key, "GET", "/v1/partial", URL, now)
                r = p.request("GET", pq(), {"Range": "bytes=0-99", "X-Bgcopy-Auth": auth})
                expect_partial(t, "signed", r, data, 0, 99, total=size)
                t.eq("X-Bgcopy-Signed", r.h("x-bgcopy-signed"),
                     answer2(key, auth, "/v1/partial", 206, sig_fields(r, PARTIAL_FIELDS)))
                r2 = p.request("GET", pq(), {"Range": "bytes=0-99", "X-Bgcopy-Auth": auth})
                t.eq("replayed: 401", r2.status, 401)
                auth = sign(key, "GET", "/v1/partial", URL, now + 1)
                r = p.request("GET", pq(), {"Range": f"bytes={size}-", "X-Bgcopy-Auth": auth})
                t.eq("416 signed", r.h("x-bgcopy-signed"),
                     answer2(key, auth, "/v1/partial", 416, sig_fields(r, PARTIAL_FIELDS)))
                auth = sign(key, "HEAD", "/v1/partial", URL, now + 2)
                r = p.request("HEAD", pq(), {"X-Bgcopy-Auth": auth})
                t.eq("HEAD signed (status 200, Content-Range empty)", r.h("x-bgcopy-signed"),
                     answer2(key, auth, "/v1/partial", 200, sig_fields(r, PARTIAL_FIELDS)))
                auth = sign(b"x" * 32, "GET", "/v1/partial", URL, now + 3)
                r = p.request("GET", pq(), {"X-Bgcopy-Auth": auth})
                t.eq("another key: 401", r.status, 401)
                r = p.request("GET", pq())
                t.eq("no signature: 401", r.status, 401)
                auth = sign(key, "GET", "/v1/content", URL, now + 4)
                r = p.request("GET", pq(), {"X-Bgcopy-Auth": auth})
                t.eq("signed for another path: 401", r.status, 401)

                auth = sign(key, "GET", "/v1/pieces", URL, now + 5)
                r = p.request("GET", piq(), {"X-Bgcopy-Auth": auth})
                t.eq("pieces: 200", r.status, 200)
                t.eq("pieces signed", r.h("x-bgcopy-signed"), answer2(
                    key, auth, "/v1/pieces", 200,
                    [r.h("etag"), r.h("x-bgcopy-pieces"), hashlib.sha256(r.body).hexdigest()]))

                # Finished: /v1/content, as an old client sees it, and its new headers.
                w.resume()
                w.wait_exit()
                sha = hashlib.sha256(data).hexdigest()
                auth = sign(key, "GET", "/v1/content", URL, now + 6)
                r = p.request("GET", q(URL), {"X-Bgcopy-Auth": auth})
                t.eq("content: 200", r.status, 200)
                t.ok("content: the file", r.body == data)
                t.eq("content: ETag", r.h("etag"), f'"{sha}"')
                t.eq("content: X-Bgcopy-Auth (v1, unchanged)", r.h("x-bgcopy-auth"),
                     answer1(key, auth, sha, size, '"w1"', "Tue, 01 Dec 2026 10:00:00 GMT"))
                t.eq("content: X-Bgcopy-Fetch", r.h("x-bgcopy-fetch"), FETCH)
                node = r.h("x-bgcopy-node")
                t.ok("content: X-Bgcopy-Node", node is not ABSENT and len(node) == 32)
                t.eq("content: X-Bgcopy-Signed", r.h("x-bgcopy-signed"), answer2(
                    key, auth, "/v1/content", 200,
                    [f'"{sha}"', str(size), '"w1"', "Tue, 01 Dec 2026 10:00:00 GMT", FETCH,
                     node]))
                auth = sign(key, "GET", "/v1/content", URL, now + 7)
                r = p.request("GET", q(URL), {"X-Bgcopy-Auth": auth, "Range": "bytes=1-2"})
                t.eq("content 206 signed with its status", r.h("x-bgcopy-signed"), answer2(
                    key, auth, "/v1/content", 206,
                    [f'"{sha}"', str(size), '"w1"', "Tue, 01 Dec 2026 10:00:00 GMT", FETCH,
                     node]))


# ---- other clients ---------------------------------------------------------------------------

@case("partial_curl_and_wget_get_the_committed_bytes")
def partial_curl_and_wget_get_the_committed_bytes(bg):
    """Other HTTP implementations as clients, without a key: curl and wget fetching
    /v1/partial get exactly the committed bytes (a 206 whose Content-Range starts at 0 and a
    Content-Length of N, RFC 9110 sections 14.4 and 15.3.7), and curl's own Range request too"""
    t = bg.t
    size = 4 * CHUNK
    data = pattern(size)
    n = 2 * CHUNK
    with Home() as h, Writer(bg, h, size, "--pause-after", "2") as w:
        w.wait_committed(n)
        with Peerd(bg, h.home, workdir=h.dir) as p:
            url = f"http://127.0.0.1:{p.port}{pq()}"
            out = h.path("curl.out")
            r = subprocess.run(["curl", "-sS", "-o", out, "-w", "%{http_code}", url],
                               capture_output=True, text=True, timeout=30)
            t.eq("curl: 206", r.stdout, "206")
            with open(out, "rb") as f:
                t.ok("curl: exactly the committed bytes", f.read() == data[:n])
            r = subprocess.run(["curl", "-sS", "-o", out, "-r", "1000-1999", url],
                               capture_output=True, text=True, timeout=30)
            with open(out, "rb") as f:
                t.ok("curl -r 1000-1999: those bytes", f.read() == data[1000:2000])
            if shutil.which("wget"):
                out = h.path("wget.out")
                r = subprocess.run(["wget", "-q", "-O", out, url], capture_output=True,
                                   text=True, timeout=30)
                t.eq("wget: exit 0", r.returncode, 0)
                with open(out, "rb") as f:
                    t.ok("wget: exactly the committed bytes", f.read() == data[:n])
            else:
                t.note("wget not installed: skipped")


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
