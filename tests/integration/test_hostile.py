#!/usr/bin/env python3
"""Integration cases for `bgcopy get` (and one daemon job) against a hostile origin
(hostile.py): a server that misbehaves on purpose. What a well-behaved nginx cannot do is
tested here: truncated and over-long bodies, broken chunked coding, Range answered wrongly,
validators that change under a resume, stalls, header floods, a gzip bomb, Location headers
of every bad kind, status-line garbage, bad Content-Length. test_get.py covers the rest
(redirect policies and schemes, interruptions, resume against nginx).

Usage: test_hostile.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_hostile.py CASE)
       test_hostile.py --list                    prints the case names, one a line
       test_hostile.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Every case checks, besides its own assertions, that each bgcopy it ran ended by itself with
an exit status (no signal, no hang) and printed no sanitizer report, and that the store is
what the case expects (`cache list --json`, `cache verify --json`). Exit 0 when every check
passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the temp dirs."""

import contextlib
import gzip
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import CLOSE, KEEP, STALL, Hostile, chunked, response, serve_file  # noqa: E402
from bgtest import (ABSENT, Bgcopy, case_registry, Daemon, doc_of, field, listing, main, new_job,  # noqa: E402
                    partials, poll_state, ran, Result, SANITIZER, started, store)
from origin import MiB, sha256_bytes, sha256_file  # noqa: E402

SIZE = 300_000      # the file most cases serve (one chunk and a bit: 262,128 + 37,872)
CUT = 100_000       # where a first answer breaks off
CHUNK = 262_128     # STORE_CHUNK_BYTES: what a stopped get keeps committed
INVALID = ("0x80072F78", "ERROR_WINHTTP_INVALID_SERVER_RESPONSE")
REDIRECT_FAILED = ("0x80072F7C", "ERROR_WINHTTP_REDIRECT_FAILED")
CONNECTION_ERROR = ("0x80072EFE", "ERROR_WINHTTP_CONNECTION_ERROR")
TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

CASES, case = case_registry()


@contextlib.contextmanager
def hostile(bg, routes):
    """A Hostile server with ROUTES, registered with the checker. Yields (server, Bgcopy,
    checker, URL of /f.bin on it, out/f.bin)."""
    with Hostile(routes) as h:
        h, agent, t = started(bg, h)
        yield h, agent, t, h.url("/f.bin"), h.path("out", "f.bin")


# ---- checks every run gets ----------------------------------------------------------------


def get(t, agent, url, out, flags=None, extra=(), timeout=60):
    return ran(t, agent.get(url, out, flags=flags, extra=extra, timeout=timeout))


def peak_rss_mib(pid):
    """VmHWM of a running process in MiB (its peak resident memory since exec), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def measured_get(t, agent, url, out, timeout=60):
    """`get --json URL -o OUT` and its peak resident memory: (Result, MiB). The peak is
    VmHWM read every few milliseconds while it runs (getrusage of a child would count the
    memory of this Python process at fork time)."""
    argv = agent.argv(*Bgcopy.get_args(url, out, None, (), True))
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, env=agent.env())
        peak, killed = 0.0, False
        try:
            while p.poll() is None and time.monotonic() - t0 < timeout:
                peak = max(peak, peak_rss_mib(p.pid) or 0.0)
                time.sleep(0.005)
        finally:
            if p.poll() is None:
                p.kill()
                killed = True
            p.wait()
        rc = "TIMEOUT" if killed else p.returncode
        fo.seek(0)
        fe.seek(0)
        r = Result(argv, rc, fo.read().decode(errors="replace"), fe.read().decode(errors="replace"),
                   time.monotonic() - t0)
    return ran(t, r), peak


def expect_done(t, r, out, data, remote_url=None):
    """Exit 0, TRANSFERRED, the output byte for byte DATA, nothing else in its folder."""
    t.eq("exit status", r.rc, 0)
    t.eq("state", field(r.doc, "state"), "TRANSFERRED")
    t.eq("error", field(r.doc, "error"), None)
    t.eq("files[0].bytes_total", field(r.doc, "files", 0, "bytes_total"), len(data))
    if remote_url is not None:
        t.eq("files[0].remote_url", field(r.doc, "files", 0, "remote_url"), remote_url)
    got = sha256_file(out) if os.path.exists(out) else ABSENT
    t.eq(f"output {os.path.basename(out)} is the content byte for byte (SHA-256)", got, sha256_bytes(data))
    if os.path.exists(out):
        t.eq("output size", os.path.getsize(out), len(data))
    t.eq("output folder holds only the output", listing(os.path.dirname(out)), [os.path.basename(out)])


def expect_failed(t, r, out, err, partial=None, remote_url=None, message=None):
    """Exit 1, ERROR with ERR (code, symbol), no output file; PARTIAL: the bytes the kept
    partial file must hold (None: nothing may be left in the folder)."""
    code, symbol = err
    t.eq("exit status", r.rc, 1)
    t.ok("--json printed a job document (also on ERROR)", isinstance(r.doc, dict), f"stdout: {r.out[:300]!r}")
    t.eq("state", field(r.doc, "state"), "ERROR")
    t.eq("error (code, symbol)", (field(r.doc, "error", "code"), field(r.doc, "error", "symbol")), (code, symbol))
    t.note(f"error.message: {field(r.doc, 'error', 'message')!r}")
    if message is not None:
        msg = field(r.doc, "error", "message")
        t.ok(f"error.message mentions {message!r}", isinstance(msg, str) and message in msg, f"message: {msg!r}")
    if remote_url is not None:
        t.eq("files[0].remote_url", field(r.doc, "files", 0, "remote_url"), remote_url)
    t.ok("stderr names the HRESULT", code.lower() in r.err.lower(), f"stderr: {r.err.strip()[:300]!r}")
    t.ok("stderr carries no terminal control bytes", not TERMINAL_CONTROL.search(r.err), f"stderr: {r.err!r}")
    t.eq("output file exists", os.path.exists(out), False)
    folder, name = os.path.dirname(out), os.path.basename(out)
    kept = partials(folder, name)
    if partial is None:
        t.eq("output folder left empty", listing(folder), [])
        return
    t.eq("output folder holds only the partial file", [x for x in listing(folder) if not x.endswith(".part")], [])
    if t.eq("partial files kept", len(kept), 1):
        with open(kept[0], "rb") as f:
            got = f.read()
        t.eq("partial file: size", len(got), len(partial))
        t.ok("partial file holds exactly the bytes received so far", got == partial)


def ranges(h, path):
    """(Range start, If-Range) of each request for PATH, in order."""
    return [(r.range_start, r.header("If-Range")) for r in h.requests(path)]


def first_then(first, then):
    """A handler: FIRST for the first request of its path, THEN for the ones after."""
    return lambda req: first(req) if req.n == 0 else then(req)


def truncated(data, upto, etag='"v1"', close=None):
    """A 200 announcing all of DATA that sends DATA[:UPTO] and closes (CLOSE: abortively)."""
    def h(req):
        steps = [response(200, [("Content-Length", len(data)), ("ETag", etag), ("Connection", "close")],
                          data[:upto])]
        return steps + ([close] if close is not None else [])
    return h


def good(data, etag='"v1"', **kw):
    return lambda req: serve_file(req, data, etag=etag, **kw)


# ---- bodies that break off, or run on -----------------------------------------------------

@case("truncated_body_keeps_partial_then_second_get_resumes")
def _(bg):
    """200 with Content-Length 300000, closed after 100000 bytes, then nothing: exit 1, ERROR
    0x80072EFE (transient, retried), no output, the 100000 bytes kept in the partial file, store
    empty; then the same get against a correct server resumes with Range: bytes=100000- and
    If-Range, and the output is byte-exact"""
    data = os.urandom(SIZE)
    phase = {"good": False}

    def handler(req):
        if phase["good"]:
            return serve_file(req, data)
        # The first answer breaks off at CUT; get's own retries find a server that closes
        # without a word, so the get gives up with what it has.
        return truncated(data, CUT)(req) if req.n == 0 else []

    with hostile(bg, {"/f.bin": handler}) as (h, agent, t, url, out):
        r = get(t, agent, url, out)
        expect_failed(t, r, out, CONNECTION_ERROR, partial=data[:CUT])
        t.eq("files[0].bytes_transferred", field(r.doc, "files", 0, "bytes_transferred"), CUT)
        t.ok(f"get retried before giving up ({len(h.requests())} requests)", len(h.requests()) >= 2)
        store(t, agent, {})
        before = len(h.requests())
        phase["good"] = True
        r = get(t, agent, url, out)
        expect_done(t, r, out, data)
        t.eq("the second get's requests (Range start, If-Range)", ranges(h, "/f.bin")[before:],
             [(CUT, '"v1"')])
        store(t, agent, {url: data})


@case("content_length_larger_than_body_reset_resumes_exact")
def _(bg):
    """Content-Length 300000, 100000 bytes sent, then a reset (RST): get's retry asks for the rest
    with Range + If-Range and the output is byte-exact"""
    data = os.urandom(SIZE)
    with hostile(bg, {"/f.bin": first_then(truncated(data, CUT, close=CLOSE), good(data))}) \
            as (h, agent, t, url, out):
        r = get(t, agent, url, out)
        expect_done(t, r, out, data)
        reqs = ranges(h, "/f.bin")
        t.eq("requests: the first without Range, then one resume", len(reqs), 2)
        start = reqs[1][0] if len(reqs) == 2 else None
        t.ok(f"the resume starts within what was sent (Range start {start})",
             isinstance(start, int) and 0 < start <= CUT)
        t.eq("the resume carries If-Range with the ETag", reqs[1][1] if len(reqs) == 2 else None, '"v1"')
        store(t, agent, {url: data})


@case("content_length_smaller_than_body_extra_bytes_dropped")
def _(bg):
    """Content-Length 100000 followed by 100000 bytes and then a pipelined response and garbage:
    the file is the 100000 announced bytes, nothing after them"""
    data = os.urandom(SIZE)
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nSMUGGLED!" + os.urandom(5000)
    with hostile(bg, {"/f.bin": lambda req: [response(200, [("Content-Length", CUT), ("ETag", '"v1"')],
                                                      data[:CUT] + smuggled)]}) as (h, agent, t, url, out):
        r = get(t, agent, url, out)
        expect_done(t, r, out, data[:CUT])
        store(t, agent, {url: data[:CUT]})


@case("redirect_followed_by_smuggled_response_not_reused")
def _(bg):
    """a 302 (Content-Length 0, keep-alive) immediately followed by a second, unasked response on
    the same connection: the next hop is not answered by it (a new connection, the real file,
    byte-exact)"""
    data = os.urandom(SIZE)
    evil = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nETag: \"evil\"\r\n\r\nSMUGGLED!"
    with Hostile({"/go": lambda req: [response(302, [("Location", "/f.bin"), ("Content-Length", 0)]) + evil,
                                      KEEP],
                  "/f.bin": good(data)}) as h:
        h, agent, t = started(bg, h)
        url, out = h.url("/go"), h.path("out", "f.bin")
        r = get(t, agent, url, out, flags="redirect-report")
        expect_done(t, r, out, data, remote_url=h.url("/f.bin"))
        go, target = h.requests("/go"), h.requests("/f.bin")
        t.ok("the target was requested on a connection of its own",
             len(go) == 1 and len(target) == 1 and go[0].conn != target[0].conn, h.format_log())
        store(t, agent, {h.url("/f.bin"): data})


# ---- chunked transfer coding --------------------------------------------------------------

def chunked_answer(body):
    return [response(200, [("Transfer-Encoding", "chunked"), ("ETag", '"v1"'), ("Connection", "close")], body)]


def make_chunked_case(desc, body_fn, resume_from):
    def run(bg):
        data = os.urandom(SIZE)
        with hostile(bg, {"/f.bin": first_then(lambda req: chunked_answer(body_fn(data)), good(data))}) \
                as (h, agent, t, url, out):
            print(f"checks: a chunked answer with {desc}: never taken as complete, the bytes before "
                  f"the fault are kept and get's retry resumes from byte {resume_from} (Range + "
                  "If-Range); the output is byte-exact")
            r = get(t, agent, url, out)
            expect_done(t, r, out, data)
            t.eq("requests (Range start, If-Range)", ranges(h, "/f.bin"), [(None, None), (resume_from, '"v1"')])
            store(t, agent, {url: data})
    return run


case("chunked_bad_chunk_size_resumes_exact")(make_chunked_case(
    "a chunk size 'zz' after 131072 good bytes",
    lambda d: chunked(d[:131072], size=65536, last=False) + b"zz\r\n" + d[131072:131200] + b"\r\n", 131072))
case("chunked_missing_last_chunk_resumes_exact")(make_chunked_case(
    "100000 bytes and then the connection closed, without the last (0) chunk",
    lambda d: chunked(d[:CUT], size=50000, last=False), CUT))
case("chunked_chunk_longer_than_announced_resumes_exact")(make_chunked_case(
    "a chunk announced as 0x10000 bytes that carries 70000",
    lambda d: b"10000\r\n" + d[:70000] + b"\r\n0\r\n\r\n", 65536))


@case("chunked_with_content_length_fails_cleanly")
def _(bg):
    """Transfer-Encoding: chunked and Content-Length: 1000 together (RFC 9112: an error, a
    smuggling sign), with 300000 bytes in chunks: ERROR 0x80072F78, no output, nothing stored"""
    data = os.urandom(SIZE)
    with hostile(bg, {"/f.bin": lambda req: [response(200, [("Transfer-Encoding", "chunked"), ("Content-Length", 1000),
                                                            ("ETag", '"v1"')], chunked(data))]}) \
            as (h, agent, t, url, out):
        r = get(t, agent, url, out)
        expect_failed(t, r, out, INVALID)
        store(t, agent, {})


# ---- answers to a resume ------------------------------------------------------------------

@case("range_answered_with_200_restarts_from_zero")
def _(bg):
    """the first answer breaks off at 100000; the resume (Range: bytes=100000-) is answered 200
    with the whole file: the file starts over from byte 0 with that body, never appended to the
    kept bytes"""
    data = os.urandom(SIZE)
    with hostile(bg, {"/f.bin": first_then(truncated(data, CUT), good(data, honour_range=False))}) \
            as (h, agent, t, url, out):
        r = get(t, agent, url, out)
        expect_done(t, r, out, data)
        t.eq("requests (Range start, If-Range)", ranges(h, "/f.bin"), [(None, None), (CUT, '"v1"')])
        store(t, agent, {url: data})


@case("etag_changed_and_if_range_ignored_restarts_whole")
def _(bg):
    """v1 breaks off at 100000; the file changes (ETag v2) and the server ignores If-Range: "v1",
    answering 206 with v2's bytes from 100000: that 206 is refused, the file is asked again from
    byte 0 and the output is v2 whole, never v1 + v2"""
    v1, v2 = os.urandom(SIZE), os.urandom(SIZE)

    def handler(req):
        if req.n == 0:
            return truncated(v1, CUT)(req)
        # The resource changed to v2; this server ignores If-Range and answers the range of
        # the new version (the splice trap).
        return serve_file(req, v2, etag='"v2"', honour_if_range=False)

    with hostile(bg, {"/f.bin": handler}) as (h, agent, t, url, out):
        r = get(t, agent, url, out)
        expect_done(t, r, out, v2)
        t.eq("requests (Range start, If-Range)", ranges(h, "/f.bin"), [(None, None), (CUT, '"v1"'), (None, None)])
        t.eq("answers", [x.bytes_sent > 0 for x in h.requests("/f.bin")], [True] * 3)
        store(t, agent, {url: v2})


@case("resume_206_without_validator_restarts_whole")
def _(bg):
    """a 206 to the resume that carries no ETag (the If-Range validator cannot be confirmed):
    refused, the file is fetched again from byte 0, byte-exact"""
    data = os.urandom(SIZE)

    def handler(req):
        if req.n == 0:
            return truncated(data, CUT)(req)
        return serve_file(req, data, etag=None, honour_if_range=False)  # the ETag is gone

    with hostile(bg, {"/f.bin": handler}) as (h, agent, t, url, out):
        r = get(t, agent, url, out)
        expect_done(t, r, out, data)
        t.eq("requests (Range start, If-Range)", ranges(h, "/f.bin"), [(None, None), (CUT, '"v1"'), (None, None)])
        store(t, agent, {url: data})


@case("weak_etag_only_retry_starts_over")
def _(bg):
    """the only validator is a weak ETag, which If-Range may not carry: after the break the retry
    asks for the whole file (no Range), byte-exact"""
    data = os.urandom(SIZE)
    with hostile(bg, {"/f.bin": first_then(truncated(data, CUT, etag='W/"v1"'), good(data, etag='W/"v1"'))}) \
            as (h, agent, t, url, out):
        r = get(t, agent, url, out)
        expect_done(t, r, out, data)
        t.eq("requests (Range start, If-Range)", ranges(h, "/f.bin"), [(None, None), (None, None)])
        store(t, agent, {url: data})


def content_range_variants(data):
    n = len(data)
    return [
        ("a 206 starting at byte 0", lambda req: response(
            206, [("Content-Range", f"bytes 0-{n - 1}/{n}"), ("Content-Length", n), ("ETag", '"v1"')], data)),
        ("a 206 starting 1000 bytes past the offset asked", lambda req: response(
            206, [("Content-Range", f"bytes {CUT + 1000}-{n - 1}/{n}"), ("Content-Length", n - CUT - 1000),
                  ("ETag", '"v1"')], data[CUT + 1000:])),
        ("a 206 without Content-Range", lambda req: response(
            206, [("Content-Length", n - CUT), ("ETag", '"v1"')], data[CUT:])),
        ("a 206 with Content-Range 'bytes */300000'", lambda req: response(
            206, [("Content-Range", f"bytes */{n}"), ("Content-Length", n - CUT), ("ETag", '"v1"')], data[CUT:])),
        ("a 416 for a range that exists", lambda req: response(
            416, [("Content-Range", f"bytes */{n}"), ("Content-Length", 0), ("ETag", '"v1"')])),
    ]


@case("resume_206_content_range_mismatch_restarts_from_zero")
def _(bg):
    """the first answer breaks off at 100000; the resume is answered with a 206 whose range is not
    the one asked (or no range), or 416: nothing of it is taken, the file is asked again from
    byte 0 (agent/README.md, Resume) and is byte-exact"""
    data = os.urandom(SIZE)
    variant = {"i": 0}
    variants = content_range_variants(data)

    def handler(req):
        if req.range_start is None and not handler.broke:
            handler.broke = True
            return truncated(data, CUT)(req)
        if req.range_start is not None:
            return variants[variant["i"]][1](req)
        return serve_file(req, data)
    handler.broke = False

    with Hostile({"/f.bin": handler}) as h:
        h, agent, t = started(bg, h)
        url = h.url("/f.bin")
        for i, (desc, _) in enumerate(variants):
            variant["i"] = i
            handler.broke = False
            os.makedirs(h.path("out", str(i)))
            out = h.path("out", str(i), "f.bin")
            before = len(h.requests())
            t.note(f"variant {i}: {desc}")
            r = get(t, agent, url, out)
            expect_done(t, r, out, data)
            t.eq(f"variant {i}: requests (Range start, If-Range)", ranges(h, "/f.bin")[before:],
                 [(None, None), (CUT, '"v1"'), (None, None)])
        store(t, agent, {url: data})


@case("unrequested_206_fails_0x80072f78")
def _(bg):
    """a 206 (bytes 0-99999/300000) to a request without Range: ERROR 0x80072F78, nothing written
    or stored"""
    data = os.urandom(SIZE)
    with hostile(bg, {"/f.bin": lambda req: response(206, [("Content-Range", f"bytes 0-{CUT - 1}/{SIZE}"),
                                                           ("Content-Length", CUT), ("ETag", '"v1"')], data[:CUT])}) \
            as (h, agent, t, url, out):
        r = get(t, agent, url, out)
        expect_failed(t, r, out, INVALID)
        store(t, agent, {})


# ---- stalls -------------------------------------------------------------------------------

def cpu_seconds(pid):
    """utime + stime of a running process, in seconds (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def wait_until(pred, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


@case("stall_mid_body_get_stops_on_sigint_then_resumes")
def _(bg):
    """600000 bytes announced, 300000 sent, then silence with the connection open. The get waits
    without spinning (its own stall limit is libcurl's low-speed time, 60 s,
    ORIGIN_LOW_SPEED_TIME, then 3 retries: about 4 minutes in all, not waited for here); SIGINT
    stops it within 3 s (exit 3, 'interrupted', no output, the committed chunk kept) and the
    same get then resumes from byte 262128 with If-Range"""
    data = os.urandom(2 * SIZE)
    phase = {"good": False}

    def handler(req):
        if phase["good"]:
            return serve_file(req, data)
        return [response(200, [("Content-Length", len(data)), ("ETag", '"v1"')], data[:SIZE]), STALL]

    with hostile(bg, {"/f.bin": handler}) as (h, agent, t, url, out):
        p = agent.popen_get(url, out, log_prefix=h.path("first-get"))
        try:
            grown = wait_until(lambda: max((os.path.getsize(x) for x in partials(h.path("out"), "f.bin")),
                                           default=0) >= CHUNK or p.poll() is not None, 30)
            t.ok("the first get committed a chunk and is still running", grown and p.poll() is None,
                 f"exit {p.poll()}, folder {listing(h.path('out'))}")
            cpu0 = cpu_seconds(p.pid)
            time.sleep(1.5)
            cpu1 = cpu_seconds(p.pid)
            t.ok("still waiting 1.5 s into the stall", p.poll() is None, f"exit {p.poll()}")
            if cpu0 is not None and cpu1 is not None:
                t.ok(f"it does not spin while stalled ({cpu1 - cpu0:.2f} s of CPU in 1.5 s)", cpu1 - cpu0 < 0.5)
            t0 = time.monotonic()
            os.kill(p.pid, signal.SIGINT)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            waited = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
        with open(h.path("first-get.err"), errors="replace") as f:
            err = f.read()
        first = ran(t, Result(list(p.args), p.returncode, "", err, waited))
        t.ok(f"SIGINT ended the stalled get within 3 s (took {waited:.1f} s)", waited < 3)
        t.eq("exit status after SIGINT", first.rc, 3)
        t.ok("stderr says it was interrupted", "interrupt" in err.lower(), f"stderr: {err.strip()!r}")
        t.eq("output file exists", os.path.exists(out), False)
        t.eq("partial files kept", len(partials(h.path("out"), "f.bin")), 1)
        phase["good"] = True
        before = len(h.requests())
        r = get(t, agent, url, out)
        expect_done(t, r, out, data)
        t.eq("the second get's requests (Range start, If-Range)", ranges(h, "/f.bin")[before:], [(CHUNK, '"v1"')])
        store(t, agent, {url: data})


@case("stall_after_headers_daemon_job_no_progress_error")
def _(bg):
    """a daemon job (no-progress timeout 2 s, retry delay 1 s) whose origin sends headers and then
    nothing, forever: each silent attempt counts as a transient error after the no-progress
    timeout (the stall limit is the smaller of 60 s and that timeout), and once the timeout has
    passed since the first of them the job is in ERROR with ERROR_WINHTTP_TIMEOUT (0x80072EE2),
    asked at least twice, no output"""
    with hostile(bg, {"/f.bin": lambda req: [response(200, [("Content-Length", SIZE), ("ETag", '"v1"')]), STALL]}) \
            as (h, agent, t, url, out):
        job = new_job(t, agent, [(url, out)])
        if job is None:
            return
        for args in (("set-no-progress-timeout", job, "2"), ("set-min-retry-delay", job, "1"), ("resume", job)):
            s = ran(t, agent.run(*args))
            t.eq(f"{args[0]}: exit", s.rc, 0)
        with Daemon(t, agent, h) as d:
            doc, seen = poll_state(t, agent, job, "ERROR", 40)
            t.eq("error code", field(doc, "error", "code"), "0x80072EE2")
            t.ok(f"went through TRANSIENT_ERROR ({seen})", "TRANSIENT_ERROR" in seen)
            t.ok("the origin was asked at least twice", len(h.wait_requests("/f.bin", 2, timeout=5)) >= 2,
                 h.format_log())
            t.ok("no sanitizer report in the daemon log", not SANITIZER.search(d.text()), d.text()[-1500:])
        t.eq("output file exists", os.path.exists(out), False)
        store(t, agent, {})


@case("stall_after_headers_daemon_job_stops_on_sigterm")
def _(bg):
    """a daemon job with the default no-progress timeout whose origin sends headers and then
    nothing: 3 s in, the job is still CONNECTING/TRANSFERRING (the stall counts after 60 s);
    SIGTERM stops the daemon within 3 s with exit 0 and the job is QUEUED again"""
    with hostile(bg, {"/f.bin": lambda req: [response(200, [("Content-Length", SIZE), ("ETag", '"v1"')]), STALL]}) \
            as (h, agent, t, url, out):
        job = new_job(t, agent, [(url, out)])
        if job is None:
            return
        s = ran(t, agent.run("resume", job))
        t.eq("resume: exit", s.rc, 0)
        with Daemon(t, agent, h) as d:
            t.ok("the origin was asked", len(h.wait_requests("/f.bin", 1, timeout=15)) == 1, h.format_log())
            time.sleep(3)
            doc = doc_of(agent, job)
            t.ok(f"3 s into the stall the job is still running ({field(doc, 'state')})",
                 field(doc, "state") in ("CONNECTING", "TRANSFERRING"))
            t0 = time.monotonic()
            rc, forced = d.stop()
            waited = time.monotonic() - t0
            t.ok(f"SIGTERM stopped the daemon within 3 s (took {waited:.1f} s)", waited < 3 and not forced)
            t.eq("daemon exit status", rc, 0)
            t.ok("no sanitizer report in the daemon log", not SANITIZER.search(d.text()), d.text()[-1500:])
        poll_state(t, agent, job, "QUEUED", 5)
        t.eq("output file exists", os.path.exists(out), False)
        store(t, agent, {})


# ---- headers ------------------------------------------------------------------------------

RSS_LIMIT_MIB = 128   # several times what bgcopy needs (ASan included: under 30 MiB), far below a flood


def header_flood_case(doc, headers, message):
    """A case: a 200 with HEADERS (and Content-Length 5) fails with ERROR 0x80072F78 whose
    message holds MESSAGE, no output, nothing stored, memory bounded. DOC: what it checks."""
    def run(bg):
        with hostile(bg, {"/f.bin": lambda req: [response(200, headers + [("Content-Length", 5)], b"hello")]}) \
                as (h, agent, t, url, out):
            r, rss = measured_get(t, agent, url, out)
            expect_failed(t, r, out, INVALID, message=message)
            t.ok(f"peak memory {rss:.0f} MiB < {RSS_LIMIT_MIB} MiB", rss < RSS_LIMIT_MIB)
            store(t, agent, {})
    run.__doc__ = doc
    return run


case("response_headers_1mib_fail_cleanly")(header_flood_case(
    """1100 header lines of 1 KB (1.1 MB of headers): ERROR 0x80072F78 (the headers pass
    ORIGIN_HEADER_MAX, 256 KiB), no output, nothing stored, memory bounded""",
    [f"X-Pad-{i:04d}: {'h' * 1000}" for i in range(1100)], "larger than"))   # 1.1 MB of header lines
case("response_header_line_1mib_fails_cleanly")(header_flood_case(
    """one header line of 1 MiB: ERROR 0x80072F78 naming the cause (a header line longer than
    libcurl takes), no output, nothing stored, memory bounded""",
    ["X-Big: " + "b" * MiB], "header line longer than"))


@case("gzip_bomb_stored_as_sent_never_inflated")
def _(bg):
    member = gzip.compress(b"\0" * (64 * MiB), compresslevel=9, mtime=0)
    bomb = member * 64   # 64 gzip members: about 4 MiB on the wire, 4 GiB inflated
    with Hostile({"/bomb.gz": lambda req: serve_file(req, bomb, extra=[("Content-Encoding", "gzip"),
                                                                       ("Content-Type", "application/octet-stream")])}) as h:
        h, agent, t = started(bg, h)
        url, out = h.url("/bomb.gz"), h.path("out", "bomb.gz")
        print(f"checks: Content-Encoding: gzip on {len(bomb)} bytes that inflate to 4 GiB: the "
              "bytes are written and stored as sent (never inflated), no Accept-Encoding asked, "
              "memory bounded")
        r, rss = measured_get(t, agent, url, out)
        expect_done(t, r, out, bomb)
        t.ok(f"peak memory {rss:.0f} MiB < {RSS_LIMIT_MIB} MiB", rss < RSS_LIMIT_MIB)
        t.eq("Accept-Encoding in the request", [x.header("Accept-Encoding") for x in h.requests()], [None])
        store(t, agent, {url: bomb})


# ---- Location -----------------------------------------------------------------------------

def redirect_to(location, status=302):
    """A handler answering STATUS with a raw Location (bytes or str) and no body."""
    loc = location if isinstance(location, bytes) else location.encode("latin-1")
    return lambda req: response(status, [b"Location: " + loc, ("Content-Length", 0)])


@case("redirect_location_too_long_refused")
def _(bg):
    """a 9 KB Location (longer than URL_MAX, 8192) is a refused redirect: 0x80072F7C, or 0x8007012E
    under DISALLOW with the remote URL left alone (it is no missing Location: not 0x8019012E); a
    100 KiB Location line is more than libcurl reads (0x80072F78); no request follows any of
    them"""
    long_loc = "/f/" + "a" * 9000
    huge_loc = "/f/" + "a" * (100 * 1024)
    with Hostile({"/long": redirect_to(long_loc), "/huge": redirect_to(huge_loc)}) as h:
        h, agent, t = started(bg, h)
        for i, (path, flags, err) in enumerate([
                ("/long", None, REDIRECT_FAILED),
                ("/long", "redirect-disallow", ("0x8007012E", "HTTP_STATUS_REDIRECT")),
                ("/huge", None, INVALID)]):
            os.makedirs(h.path("out", str(i)))
            out = h.path("out", str(i), "f.bin")
            t.note(f"GET {path} under {flags or 'redirect-silent'}")
            r = get(t, agent, h.url(path), out, flags=flags)
            expect_failed(t, r, out, err, remote_url=h.url(path))
        t.eq("requests: only the redirecting ones", [x.path for x in h.requests()], ["/long", "/long", "/huge"])
        store(t, agent, {})


RELATIVE_FORMS = [
    # (Location as sent, path of the URL it resolves to, relative to /d/e/go)
    ("f.bin", "/d/e/f.bin"),
    ("./f.bin", "/d/e/f.bin"),
    ("?v=2", "/d/e/go?v=2"),
    ("//127.0.0.1:@PORT@/d/e/f.bin", "/d/e/f.bin"),
    ("/d/./e/../e/f.bin", "/d/e/f.bin"),
    ("  /d/e/f.bin  ", "/d/e/f.bin"),
    ("/d/e/f.bin#fragment", "/d/e/f.bin"),
    ("HTTP://127.0.0.1:@PORT@/d/e/f.bin", "/d/e/f.bin"),
    ("/d/e/f b.bin", "/d/e/f%20b.bin"),
    ("/d/e/f\xff.bin", "/d/e/f%ff.bin"),
]


@case("redirect_relative_location_forms_followed")
def _(bg):
    """Locations relative to /d/e/go in several forms (sibling, ./, query only, scheme-relative,
    dot segments, blanks around it, a fragment, an upper-case scheme, a space, a non-ASCII byte)
    are resolved as RFC 3986 says and followed; under redirect-report the remote URL is the
    resolved one"""
    data = os.urandom(SIZE)

    def go(req):
        if req.query.startswith("form="):
            loc = RELATIVE_FORMS[int(req.query[5:])][0].replace("@PORT@", str(h.port))
            return redirect_to(loc)(req)
        return serve_file(req, data)

    files = good(data)
    with Hostile({"/d/e/go": go, "/d/e/f.bin": files, "/d/e/f%20b.bin": files, "/d/e/f%ff.bin": files}) as h:
        h, agent, t = started(bg, h)
        want = {}
        for i, (loc, path) in enumerate(RELATIVE_FORMS):
            os.makedirs(h.path("out", str(i)))
            out = h.path("out", str(i), "f.bin")
            final = h.url(path)
            t.note(f"Location {loc!r} -> {path}")
            r = get(t, agent, h.url(f"/d/e/go?form={i}"), out, flags="redirect-report")
            expect_done(t, r, out, data, remote_url=final)
            want[final] = data
        store(t, agent, want)


@case("redirect_location_with_credentials_followed_without_them")
def _(bg):
    """Location http://alice:s3cret@HOST/f.bin: followed without the credentials (no Authorization
    sent), the remote URL and the cache key carry none; under DISALLOW the remote URL is the
    target without them"""
    data = os.urandom(SIZE)
    with Hostile({"/go": lambda req: redirect_to(f"http://alice:s3cret@127.0.0.1:{h.port}/f.bin")(req),
                  "/f.bin": good(data)}) as h:
        h, agent, t = started(bg, h)
        target = h.url("/f.bin")
        out = h.path("out", "f.bin")
        r = get(t, agent, h.url("/go"), out, flags="redirect-report")
        expect_done(t, r, out, data, remote_url=target)
        t.eq("Authorization sent to the target", [x.header("Authorization") for x in h.requests("/f.bin")], [None])
        t.ok("'s3cret' appears nowhere in the job document", "s3cret" not in r.out)
        os.makedirs(h.path("out", "d"))
        out2 = h.path("out", "d", "f.bin")
        r = get(t, agent, h.url("/go"), out2, flags="redirect-disallow")
        expect_failed(t, r, out2, ("0x8007012E", "HTTP_STATUS_REDIRECT"), remote_url=target)
        t.ok("'s3cret' appears nowhere in the job document", "s3cret" not in r.out)
        s = ran(t, agent.run("cache", "list", "--json"))
        t.ok("'s3cret' appears nowhere in the store's keys", "s3cret" not in s.out)
        store(t, agent, {target: data})


def make_refused_locations_case(desc, locations, err=REDIRECT_FAILED, flags=None):
    def run(bg):
        routes = {f"/r/{i}": redirect_to(loc) for i, loc in enumerate(locations)}
        with Hostile(routes) as h:
            h, agent, t = started(bg, h)
            print(f"checks: {desc}: each gives {err[0]} at once (no retry), no request follows, "
                  "nothing written or stored, no control byte reaches stderr")
            for i, loc in enumerate(locations):
                os.makedirs(h.path("out", str(i)))
                out = h.path("out", str(i), "f.bin")
                t.note(f"Location {loc!r}")
                before = len(h.requests())
                r = get(t, agent, h.url(f"/r/{i}"), out, flags=flags)
                expect_failed(t, r, out, err)
                t.eq("requests", [x.path for x in h.requests()[before:]], [f"/r/{i}"])
            store(t, agent, {})
    return run


case("redirect_to_script_and_data_schemes_refused")(make_refused_locations_case(
    "Locations to javascript:, data:, mailto:, vbscript:, about: and gopher:",
    ["javascript:alert(1)", "data:text/plain;base64,aGVsbG8=", "mailto:root@127.0.0.1", "vbscript:msgbox(1)",
     "about:blank", "gopher://127.0.0.1:70/1"], flags="redirect-report"))
case("redirect_location_without_host_refused")(make_refused_locations_case(
    "http(s) Locations without a host ('http:/f.bin', 'http:///f.bin', '///f.bin', 'https:/f.bin', "
    "'http:f.bin'), which libcurl alone resolves to the host 'f.bin'",
    ["http:/f.bin", "http:///f.bin", "///f.bin", "https:/f.bin", "http:f.bin"]))
case("redirect_location_control_bytes_refused")(make_refused_locations_case(
    "Locations with control bytes (SOH, TAB, a bare CR, an ESC sequence, BEL) and with non-UTF-8 "
    "bytes after a refused scheme",
    [b"/f\x01.bin", b"/f\t.bin", b"/f.bin\rX", b"/f\x1b]0;owned\x07\x1b[31m.bin", b"javascript:\xff\xfe"]))
case("redirect_location_nul_or_bare_lf_fails_0x80072f78")(make_refused_locations_case(
    "a Location with a NUL byte, and one broken by a bare LF (libcurl refuses the response)",
    [b"/f\0.bin", b"/f\nX.bin"], err=INVALID))


@case("redirect_without_location_fails_with_http_status")
def _(bg):
    """301, 302, 303, 307, 308 and 300 without a Location, and a 302 with an empty one: ERROR
    BG_E_HTTP_ERROR_3xx (0x801903xx), nothing followed, written or stored"""
    cases = [(c, None) for c in (301, 302, 303, 307, 308)] + [(300, None), (302, "")]
    routes = {}
    for i, (code, loc) in enumerate(cases):
        hdrs = [("Content-Length", 0)] + ([("Location", loc)] if loc is not None else [])
        routes[f"/r/{i}"] = (lambda hdrs, code: lambda req: response(code, hdrs))(hdrs, code)
    with Hostile(routes) as h:
        h, agent, t = started(bg, h)
        for i, (code, loc) in enumerate(cases):
            os.makedirs(h.path("out", str(i)))
            out = h.path("out", str(i), "f.bin")
            t.note(f"{code} with Location {loc!r}" if loc is not None else f"{code} without Location")
            r = get(t, agent, h.url(f"/r/{i}"), out)
            expect_failed(t, r, out, (f"0x8019{code:04X}", f"BG_E_HTTP_ERROR_{code}"))
        t.eq("requests", len(h.requests()), len(cases))
        store(t, agent, {})


# ---- status lines and Content-Length ------------------------------------------------------

def make_invalid_responses_case(desc, raws, message=None):
    def run(bg):
        routes = {f"/x/{i}": (lambda raw: lambda req: [raw])(raw) for i, raw in enumerate(raws)}
        with Hostile(routes) as h:
            h, agent, t = started(bg, h)
            print(f"checks: {desc}: each ERROR 0x80072F78 at once, no output, nothing stored")
            for i, raw in enumerate(raws):
                os.makedirs(h.path("out", str(i)))
                out = h.path("out", str(i), "f.bin")
                t.note(f"answer {raw[:60]!r}...")
                r = get(t, agent, h.url(f"/x/{i}"), out)
                expect_failed(t, r, out, INVALID, message=message)
            t.eq("requests (one each, no retry)", len(h.requests()), len(raws))
            store(t, agent, {})
    return run


BODY = b"0123456789" * 100
case("status_line_garbage_fails_0x80072f78")(make_invalid_responses_case(
    "status lines 'HTTP/1.1 abc OK', 'HTTP/1.1 2000 OK', 'HTTP/1.1 099 OK', 'HTTP/2.7 200 OK', "
    "'HTTP/1.1' alone, 'ICY 200 OK', binary garbage",
    [b"HTTP/1.1 abc OK\r\nContent-Length: 1000\r\n\r\n" + BODY,
     b"HTTP/1.1 2000 OK\r\nContent-Length: 1000\r\n\r\n" + BODY,
     b"HTTP/1.1 099 OK\r\nContent-Length: 1000\r\n\r\n" + BODY,
     b"HTTP/2.7 200 OK\r\nContent-Length: 1000\r\n\r\n" + BODY,
     b"HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + BODY,
     b"ICY 200 OK\r\nContent-Length: 1000\r\n\r\n" + BODY,
     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(500)]))
case("http09_response_refused")(make_invalid_responses_case(
    "HTTP/0.9 answers (the body alone, no status line, no headers): a page of text, and 300 KB "
    "without a line end",
    [b"<html><body>\n" + b"<p>an HTTP/0.9 page</p>\n" * 2000 + b"</body></html>\n", BODY * 300]))
case("content_length_negative_or_not_a_number_fails_0x80072f78")(make_invalid_responses_case(
    "Content-Length -1, 'abc', '1e3' (libcurl alone frames 1 byte), '12abc', '+1000', "
    "99999999999999999999 (overflow)",
    [b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\nETag: \"v1\"\r\n\r\n" % v + BODY
     for v in (b"-1", b"abc", b"1e3", b"12abc", b"+1000", b"99999999999999999999")],
    message="Content-Length"))
case("content_length_conflicting_duplicates_fail_0x80072f78")(make_invalid_responses_case(
    "two Content-Length headers that differ (1000 then 10, 10 then 1000) or a list of different "
    "values ('10, 1000'); libcurl alone takes the last and frames a truncated file",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Length: 10\r\n\r\n" + BODY,
     b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 1000\r\n\r\n" + BODY,
     b"HTTP/1.1 200 OK\r\nContent-Length: 10, 1000\r\n\r\n" + BODY],
    message="Content-Length"))


@case("content_length_identical_duplicates_accepted")
def _(bg):
    """Content-Length given twice with the same value, and as the list '300000, 300000' (RFC 9110
    8.6 lets a recipient take them as one): byte-exact"""
    data = os.urandom(SIZE)
    raws = [response(200, [("Content-Length", SIZE), ("Content-Length", SIZE), ("ETag", '"v1"')], data),
            response(200, [("Content-Length", f"{SIZE}, {SIZE}"), ("ETag", '"v1"')], data)]
    routes = {f"/x/{i}": (lambda raw: lambda req: [raw])(raw) for i, raw in enumerate(raws)}
    with Hostile(routes) as h:
        h, agent, t = started(bg, h)
        for i in range(len(raws)):
            os.makedirs(h.path("out", str(i)))
            out = h.path("out", str(i), "f.bin")
            r = get(t, agent, h.url(f"/x/{i}"), out)
            expect_done(t, r, out, data)
        store(t, agent, {h.url(f"/x/{i}"): data for i in range(len(raws))})


@case("status_like_header_line_does_not_change_status")
def _(bg):
    """a header line that looks like a status line ('HTTP/1.1 200 OK: x') inside a 404 or a 302
    changes nothing: the 404 is ERROR 0x80190194 (its page is not the file), the 302 is followed
    to the real file"""
    data = os.urandom(SIZE)
    page = b"<html>not found</html>"
    with Hostile({"/nf": lambda req: [b"HTTP/1.1 404 Not Found\r\nHTTP/1.1 200 OK: x\r\nContent-Length: %d\r\n\r\n"
                                      % len(page) + page],
                  "/go": lambda req: [b"HTTP/1.1 302 Found\r\nLocation: /f.bin\r\nHTTP/1.1 200: OK\r\n"
                                      b"Content-Length: %d\r\n\r\n" % len(page) + page],
                  "/f.bin": good(data)}) as h:
        h, agent, t = started(bg, h)
        out = h.path("out", "nf.bin")
        r = get(t, agent, h.url("/nf"), out)
        expect_failed(t, r, out, ("0x80190194", "BG_E_HTTP_ERROR_404"))
        os.makedirs(h.path("out", "go"))
        out = h.path("out", "go", "f.bin")
        r = get(t, agent, h.url("/go"), out, flags="redirect-report")
        expect_done(t, r, out, data, remote_url=h.url("/f.bin"))
        store(t, agent, {h.url("/f.bin"): data})


@case("stall_after_headers_daemon_job_max_download_time_error")
def _(bg):
    """a daemon job with a maximum download time of 2 s (and the default no-progress timeout)
    whose origin sends headers and then nothing: the silent transfer is stopped when the time
    is used up, long before the 60 s stall limit, and the job is in ERROR
    BG_E_MAXDOWNLOAD_TIMEOUT (0x80200054) after one request, never TRANSIENT_ERROR"""
    with hostile(bg, {"/f.bin": lambda req: [response(200, [("Content-Length", SIZE), ("ETag", '"v1"')]), STALL]}) \
            as (h, agent, t, url, out):
        job = new_job(t, agent, [(url, out)])
        if job is None:
            return
        for args in (("set-max-download-time", job, "2"), ("resume", job)):
            s = ran(t, agent.run(*args))
            t.eq(f"{args[0]}: exit", s.rc, 0)
        with Daemon(t, agent, h):
            doc, seen = poll_state(t, agent, job, ("ERROR", "TRANSIENT_ERROR"), 20)
            t.eq("state", field(doc, "state"), "ERROR")
            t.eq("error code", field(doc, "error", "code"), "0x80200054")
            t.eq("the origin was asked once", len(h.requests()), 1)
        t.eq("output file exists", os.path.exists(out), False)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
