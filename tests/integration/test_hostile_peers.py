#!/usr/bin/env python3
"""Hostile peers: `bgcopy get --peer` against fake peers that misbehave on purpose.

Usage: test_hostile_peers.py CASE [PATH/TO/bgcopy]   (or BGCOPY=PATH/TO/bgcopy ... CASE)
       test_hostile_peers.py --list                  prints the case names, one a line
       test_hostile_peers.py --all [PATH/TO/bgcopy]  runs every case, prints a summary

Environment: BGCOPY (the agent), BGCOPY_PEERD (the real peer, for the cases that need a good
one; default: bgcopy-peerd next to BGCOPY), BGCOPY_KEEP_TMP=1 keeps the temp dirs.

Each case starts a real nginx origin (origin.py) holding the true file and one or more fake
peers (FakePeer below: a raw-socket HTTP/1.1 server on 127.0.0.1 with a kernel-chosen port,
started and stopped by the case even when it fails). A fake peer knows the true entry (the
file's bytes, its SHA-256, the origin's ETag and Last-Modified, so that the agent's check
against the origin's validators passes) and answers HEAD and GET /v1/content as the case
tells it: wrong bytes, wrong lengths, lying digests, stalls, early closes, wrong ranges,
garbage, huge headers. `bgcopy get --peer 127.0.0.1:PORT ... --json` must then end
TRANSFERRED with the origin's bytes, exactly, having fallen back to the origin (or to the next,
good peer) as the job document's bytes_from_origin / bytes_from_peers and peer_lookups show,
within a bounded time, without a crash or a sanitizer report, and with nothing bad in its
store. The peer_hostile_peer_falls_back case of test_peers.py covers the same "one byte
flipped" peer through scripts/harness' relaying FakePeer; this file drives the agent alone,
byte by byte."""

import contextlib
import hashlib
import os
import re
import sys
import time
import types

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import (ABSENT, Bgcopy, case_registry, Daemon, field, listing, main, origin_validators, Peerd,
                    poll_state, repr_digest, started)  # noqa: E402
from hostile import LoopbackServer  # noqa: E402
from origin import Origin  # noqa: E402

A_SIZE = 300_000                # the true file: crosses the store's first chunk boundary
CHUNK = 64 * 4096 - 16          # STORE_CHUNK_BYTES (cache.h)
HALF = A_SIZE // 2
PEER_STALL_TIMEOUT = 5          # agent/net/net.h: seconds below PEER_MIN_SPEED before a peer is dropped
PEER_MIN_SPEED = 16 * 1024      # agent/net/net.h: bytes/s
# libcurl's low-speed check averages over a window of about PEER_STALL_TIMEOUT seconds: after a
# burst of bytes the average needs that long to fall, then the timeout runs.
STALL_BOUND = 2 * PEER_STALL_TIMEOUT + 2
PEER_LOOKUP_TIMEOUT = 5         # agent/net/net.h: seconds for a HEAD
GET_TIMEOUT = 90                # a get that takes longer than this has hung: the case fails
FAST = 10.0                     # seconds a get may take when no timeout of the agent is involved

CASES, case = case_registry()


# ---- the fake peer ---------------------------------------------------------------------------

class Entry:
    """The true entry as an honest peer would describe it."""

    def __init__(self, o, name, data):
        self.data = data
        self.sha = hashlib.sha256(data).hexdigest()
        self.key = o.url(f"/files/{name}")
        self.origin_etag, self.last_modified = origin_validators(o, name)


class Request:
    def __init__(self, sock, method, target, headers):
        self.sock, self.method, self.target, self.headers = sock, method, target, headers

    def h(self, name):
        return self.headers.get(name.lower())

    def send(self, data):
        """Writes DATA; False when the client is gone."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False


def head_block(status=200, reason="OK", headers=()):
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers] + ["", ""]
    return "\r\n".join(lines).encode("latin-1")


def entry_headers(e, length=None, digest_of=None, etag=None, repr_dig=None, extra=()):
    """The headers of an honest answer for E: Content-Length (LENGTH, default the size), ETag
    and Repr-Digest (of DIGEST_OF, default the true bytes; ETAG / REPR_DIG override each),
    the origin's validators, Connection: close."""
    d = e.data if digest_of is None else digest_of
    return [("Content-Length", str(len(e.data) if length is None else length)),
            ("ETag", etag if etag is not None else '"' + hashlib.sha256(d).hexdigest() + '"'),
            ("Repr-Digest", repr_dig if repr_dig is not None else repr_digest(d)),
            ("Accept-Ranges", "bytes"), ("Content-Type", "application/octet-stream"),
            ("Last-Modified", e.last_modified), ("X-Origin-ETag", e.origin_etag),
            *extra, ("Connection", "close")]


class FakePeer(LoopbackServer):
    """A peer that misbehaves as ANSWER(fake, request) says. One thread per connection, one
    request per connection (every answer says Connection: close and the socket is closed
    after it). /v1/health is answered honestly. A context manager: __exit__ closes the
    listening socket and every open connection and wakes answers that stall (fake.stopping),
    whatever happened in the case."""

    NAME = "fake-peer"
    REQUEST_MAX = 64 * 1024

    def __init__(self, entry, answer, name="fake"):
        super().__init__()
        self.entry, self.answer, self.name = entry, answer, name
        self.requests = []      # (method, Range or None), in arrival order
        self.auths = []         # the X-Bgcopy-Auth of each request (or None)
        self.errors = []        # exceptions raised by an answer (a bug in this file)

    @property
    def stopping(self):
        return self._stop

    @property
    def peer(self):
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        self.listen()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        return False

    def methods(self, method=None):
        with self._lock:
            return [m for m, _ in self.requests if method is None or m == method]

    def auth_headers(self):
        with self._lock:
            return [a or "" for a in self.auths]

    def ranges(self):
        with self._lock:
            return [r for m, r in self.requests if m == "GET"]

    def _serve(self, s, num):
        try:
            s.settimeout(30)
            buf = b""
            while b"\r\n\r\n" not in buf and len(buf) < self.REQUEST_MAX:
                part = s.recv(65536)
                if not part:
                    return
                buf += part
            head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                return
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            rq = Request(s, parts[0], parts[1], headers)
            if rq.target.startswith(("/v1/pieces", "/v1/partial")):
                # A content-only peer (an older peerd): no piece list, no download in
                # progress, so fakes never make a swarm nor a fleet.
                rq.send(head_block(404, "Not Found", [("Content-Length", "0"), ("Connection", "close")]))
                return
            with self._lock:
                self.requests.append((rq.method, rq.h("range")))
                self.auths.append(rq.h("x-bgcopy-auth"))
            if rq.target == "/v1/health":
                rq.send(head_block(200, "OK", [("Content-Length", "3"), ("Connection", "close")]) + b"ok\n")
                return
            self.answer(self, rq)
        except OSError:
            pass
        except Exception as e:  # noqa: BLE001 - reported by the case, not swallowed
            with self._lock:
                self.errors.append(repr(e))
        finally:
            with self._lock:
                self._conns.discard(s)
            try:
                s.close()
            except OSError:
                pass

    def stall(self):
        """Blocks until the fake is stopped (the connection stays open, silent)."""
        self.stopping.wait()


# Answers. Each takes (fake, request); HEAD gets the honest headers unless the case is about HEAD.

def honest_head(f, rq):
    rq.send(head_block(200, "OK", entry_headers(f.entry)))


def get_only(body_answer):
    """HEAD honest, GET as BODY_ANSWER says."""
    def answer(f, rq):
        if rq.method == "HEAD":
            honest_head(f, rq)
        else:
            body_answer(f, rq)
    return answer


def honest_then(body, **headers):
    """GET: the headers of entry_headers(entry, **HEADERS), then BODY, then the close."""
    def answer(f, rq):
        rq.send(head_block(200, "OK", entry_headers(f.entry, **headers)) + body)
    return answer


def flipped(data, at):
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)


# ---- running the agent ---------------------------------------------------------------------

def peer_args(*peers):
    out = []
    for p in peers:
        out += ["--peer", p if isinstance(p, str) else p.peer]
    return out


def hostile_get(bg, o, label, peers, extra=()):
    """`bgcopy --home o/LABEL/home get --json --peer ... URL -o o/LABEL/out/a.bin` with a fresh
    home; returns (result, output path, agent)."""
    t = bg.t
    home = o.path(label, "home")
    os.makedirs(o.path(label, "out"), exist_ok=True)
    agent = Bgcopy(bg.exe, home)
    out = o.path(label, "out", "a.bin")
    r = t.ran(agent.get(o.url("/files/a.bin"), out, extra=[*peer_args(*peers), *extra],
                        timeout=GET_TIMEOUT))
    return r, out, agent


def lookups(r):
    v = field(r.doc, "files", 0, "peer_lookups")
    return [(x.get("peer"), x.get("result")) for x in v] if isinstance(v, list) else v


def expect_right_file(t, r, out, agent, e, from_peers, lookups_want, within=FAST):
    """The get ended TRANSFERRED, in time, with the true bytes in the output and in the store;
    FROM_PEERS is the exact count wanted (or a callable that checks it); LOOKUPS_WANT the
    (peer, result) pairs of files[0].peer_lookups, in order."""
    t.ok(f"get finished within {within:.0f} s (took {r.elapsed:.1f} s)", r.elapsed < within)
    t.eq("exit status", r.rc, 0)
    t.ok("no sanitizer report, no crash message",
         "Sanitizer" not in r.err and "runtime error" not in r.err, r.err[-2000:])
    t.eq("state", field(r.doc, "state"), "TRANSFERRED")
    t.eq("error", field(r.doc, "error"), None)
    t.eq("files[0].sha256", field(r.doc, "files", 0, "sha256"), e.sha)
    try:
        with open(out, "rb") as f:
            got = f.read()
    except OSError:
        got = None
    t.ok("output file is the true file, byte for byte", got == e.data,
         "absent" if got is None else f"{len(got)} bytes, first difference at "
         f"{next((i for i, (a, b) in enumerate(zip(got, e.data)) if a != b), min(len(got), len(e.data)))}")
    t.eq("output folder holds only the output file", listing(os.path.dirname(out)),
         [os.path.basename(out)])
    fp = field(r.doc, "files", 0, "bytes_from_peers")
    fo = field(r.doc, "files", 0, "bytes_from_origin")
    if callable(from_peers):
        t.ok(f"bytes_from_peers {fp!r} {from_peers.__doc__}", isinstance(fp, int) and from_peers(fp))
    else:
        t.eq("bytes_from_peers", fp, from_peers)
    t.ok(f"bytes_from_origin + bytes_from_peers == {len(e.data)} ({fo!r} + {fp!r})",
         isinstance(fp, int) and isinstance(fo, int) and fo + fp == len(e.data))
    t.eq("peer_lookups (peer, result)", lookups(r), lookups_want)
    # Nothing bad was kept: the store holds the true digest under the key, only that, and
    # every entry re-hashes to its digest.
    c, doc = agent.json("cache", "list", "--json")
    keys = {x.get("url"): x.get("sha256") for x in doc} if isinstance(doc, list) else {}
    t.eq("store: SHA-256 under the key", keys.get(e.key, ABSENT), e.sha)
    t.eq("store: keys", sorted(keys), [e.key])
    v, vdoc = agent.json("cache", "verify", "--json")
    t.eq("store: cache verify finds nothing corrupt (exit status, corrupt)",
         (v.rc, (vdoc or {}).get("corrupt") if isinstance(vdoc, dict) else vdoc), (0, 0))
    return fp


def origin_gets(o):
    """(status, Range start) of every GET of /files/a.bin at the origin, in order."""
    recs = o.wait_requests("/files/a.bin", 1)
    out = []
    for x in recs:
        if x["method"] != "GET":
            continue
        m = re.match(r"bytes=(\d+)-", x["range"] or "")
        out.append((x["status"], int(m.group(1)) if m else None))
    return out


def expect_fake_clean(t, f):
    t.eq(f"{f.name}: no error in the fake peer itself", f.errors, [])


def gt0(v):
    """> 0"""
    return v > 0


# ---- cases -----------------------------------------------------------------------------------

@contextlib.contextmanager
def true_file(bg):
    """An nginx origin serving the true a.bin, registered with the checker. Yields (origin,
    checker, Entry of a.bin, Bgcopy on the origin's home)."""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        t.note(f"PEER_STALL_TIMEOUT {PEER_STALL_TIMEOUT} s, PEER_LOOKUP_TIMEOUT {PEER_LOOKUP_TIMEOUT} s, "
               f"PEER_MIN_SPEED {PEER_MIN_SPEED} bytes/s")
        yield o, t, Entry(o, "a.bin", o.data["a.bin"]), agent


WHOLE = ("origin: one whole GET", [(200, None)])
NO_GET = ("origin: no GET (all from the peer)", [])
REST = ("origin: one Range GET from where the peer stopped", lambda fp: [(206, fp)])


def against(bg, o, e, label, peers, from_peers, results, origin=None, within=FAST, extra=()):
    """One get with --peer for each of PEERS (a FakePeer is started for each (answer, name)
    pair; a string is a real peer) and a fresh home: the right file (expect_right_file) with
    FROM_PEERS bytes from peers and RESULTS, one per peer, as the lookups' results; no fake
    had an error of its own. ORIGIN (what, want or want(bytes_from_peers)): the origin's
    GETs for this get. Returns .fp (bytes_from_peers), .r (the get's Result), .fakes."""
    t = bg.t
    before = len(origin_gets(o)) if o.requests("/files/a.bin") else 0
    with contextlib.ExitStack() as stack:
        fakes = [p if isinstance(p, str) else stack.enter_context(FakePeer(e, *p)) for p in peers]
        r, out, agent = hostile_get(bg, o, label, fakes, extra=extra)
        fp = expect_right_file(t, r, out, agent, e, from_peers,
                               [(f if isinstance(f, str) else f.peer, res) for f, res in zip(fakes, results)],
                               within=within)
        for f in fakes:
            if not isinstance(f, str):
                expect_fake_clean(t, f)
    if origin is not None:
        what, want = origin
        t.eq(what, origin_gets(o)[before:], want(fp) if callable(want) else want)
    return types.SimpleNamespace(fp=fp, r=r, fakes=[f for f in fakes if not isinstance(f, str)])


@case("hostile_peer_wrong_bytes_same_length")
def _(bg):
    """a peer whose HEAD and GET headers are honest but whose body has wrong bytes (same length;
    one byte flipped in the first chunk, in the last one, every byte inverted) is rejected after
    the digest check; the whole file then comes from the origin (a GET without Range), nothing
    from the peer is kept"""
    with true_file(bg) as (o, t, e, _):
        for label, body in (("first-chunk", flipped(e.data, 17)),
                            ("last-chunk", flipped(e.data, A_SIZE - 1)),
                            ("all", bytes(b ^ 0xFF for b in e.data))):
            print(f"-- body: {label}")
            f = against(bg, o, e, label, [(get_only(honest_then(body)),)], 0, ["rejected"], WHOLE).fakes[0]
            t.eq("the fake got a HEAD then a GET", f.methods(), ["HEAD", "GET"])


@case("hostile_peer_content_length_shorter_than_entry")
def _(bg):
    """HEAD announces the true size; the GET says Content-Length SIZE-1000 and sends that many true
    bytes (a well-formed but short answer): rejected, the origin sends the whole file"""
    with true_file(bg) as (o, t, e, _):
        short = honest_then(e.data[:-1000], length=A_SIZE - 1000)
        against(bg, o, e, "short", [(get_only(short),)], 0, ["rejected"], WHOLE)


@case("hostile_peer_content_length_longer_than_entry")
def _(bg):
    """HEAD announces the true size; the GET says Content-Length SIZE+4096 and sends the true
    bytes, then 4096 more: the extra bytes are refused, and the file is right in the end, its
    bytes adding up to the size"""
    with true_file(bg) as (o, t, e, _):
        for label, pause in (("at-once", 0.0), ("extra-after-a-pause", 0.5)):
            print(f"-- {label}")

            def longer(f, rq, pause=pause):
                rq.send(head_block(200, "OK", entry_headers(e, length=A_SIZE + 4096)) + e.data)
                if pause:
                    time.sleep(pause)
                rq.send(os.urandom(4096))
            fp = against(bg, o, e, label, [(get_only(longer),)], lambda v: 0 <= v <= A_SIZE, ["failed"]).fp
            t.note(f"bytes_from_peers {fp}")


@case("hostile_peer_body_longer_than_content_length")
def _(bg):
    """honest headers, the true bytes, then 64 KiB of junk past Content-Length before the close:
    only Content-Length bytes are body; the file is right"""
    with true_file(bg) as (o, t, e, _):
        junk = honest_then(e.data + os.urandom(65536))
        against(bg, o, e, "junk", [(get_only(junk),)], A_SIZE, ["hit"], NO_GET)


def lying(e, body, **headers):
    """HEAD and GET with the headers of entry_headers(E, **HEADERS); the GET then sends BODY."""
    def answer(f, rq):
        rq.send(head_block(200, "OK", entry_headers(e, **headers)))
        if rq.method == "GET":
            rq.send(body)
    return answer


@case("hostile_peer_etag_lies")
def _(bg):
    """ETag (and Repr-Digest) name another content in HEAD and GET while the body is the true file:
    the bytes do not match the digest announced, so the peer is rejected and the origin sends
    the file"""
    with true_file(bg) as (o, t, e, _):
        other = os.urandom(A_SIZE)
        against(bg, o, e, "etag", [(lying(e, e.data, digest_of=other),)], 0, ["rejected"], WHOLE)


@case("hostile_peer_repr_digest_lies")
def _(bg):
    """Repr-Digest names another content (garbage, or another digest) while ETag and the bytes are
    true; and a body with wrong bytes whose Repr-Digest matches them while the ETag is the true
    one: the file is right either way"""
    with true_file(bg) as (o, t, e, _):
        other = os.urandom(A_SIZE)
        for label, rd, body, want in (("other-digest", repr_digest(other), e.data, A_SIZE),
                                      ("garbage", "sha-256=:!!not base64!!:", e.data, A_SIZE),
                                      ("matches-wrong-body", repr_digest(other), other, 0)):
            print(f"-- Repr-Digest {label}")
            against(bg, o, e, label, [(lying(e, body, repr_dig=rd),)], want, ["hit" if want else "rejected"])


@case("hostile_peer_self_consistent_lie_refused_with_sha256")
def _(bg):
    """a peer that serves other bytes of the right size with an ETag and Repr-Digest that match
    them, and the origin's validators copied: with --sha256 the agent refuses the entry from its
    HEAD alone (stale), never asks for the body, and the origin sends the file (without
    --sha256: shown as a note)"""
    with true_file(bg) as (o, t, e, _):
        other = os.urandom(A_SIZE)
        poison = lying(e, other, digest_of=other)
        f = against(bg, o, e, "poison", [(poison,)], 0, ["stale"], WHOLE, extra=["--sha256", e.sha]).fakes[0]
        t.eq("the fake got a HEAD only", f.methods(), ["HEAD"])
        # Without --sha256 (and without --peer-key: see the next case) nothing the agent can
        # see tells this peer from an honest one: the protocol trusts a peer whose entry
        # carries the origin's current validators (nginx's ETag is mtime-size, not a digest).
        # Shown, not asserted: pinning it would pin the hole.
        with FakePeer(e, poison) as f:
            r, out, agent = hostile_get(bg, o, "poison-no-sha256", [f])
            took = field(r.doc, "files", 0, "sha256") != e.sha
            t.note(f"without --sha256: exit {r.rc}, bytes_from_peers "
                   f"{field(r.doc, 'files', 0, 'bytes_from_peers')}, "
                   + ("the peer's OTHER bytes were taken and stored (known limitation of the "
                      "protocol)" if took else "the true file"))


@case("hostile_peer_self_consistent_lie_refused_for_a_daemon_job_with_sha256")
def _(bg):
    """the lie of hostile_peer_self_consistent_lie_refused_with_sha256 against a daemon job
    (peer caching client, the daemon's --peer) whose file was added with --sha256: the entry is
    refused from its HEAD (stale), the fake never gets a GET, and the job is TRANSFERRED with
    the origin's bytes, none from peers"""
    with true_file(bg) as (o, t, e, agent):
        other = os.urandom(A_SIZE)
        out = o.path("out", "a.bin")
        with FakePeer(e, lying(e, other, digest_of=other)) as f:
            r = t.ran(agent.run("create"))
            job = r.out.strip()
            t.eq("create: exit status", r.rc, 0)
            for args in (("add", job, e.key, out, "--sha256", e.sha), ("set-peer-caching", job, "client")):
                t.eq(f"{args[0]}: exit status", t.ran(agent.run(*args)).rc, 0)
            with Daemon(t, agent, o, "--peer", f.peer):
                t.eq("resume: exit status", t.ran(agent.run("resume", job)).rc, 0)
                doc, _ = poll_state(t, agent, job, ("TRANSFERRED", "ERROR"), GET_TIMEOUT)
            t.eq("state", field(doc, "state"), "TRANSFERRED")
            t.eq("bytes_from_peers", field(doc, "files", 0, "bytes_from_peers"), 0)
            t.eq("sha256 of the file", field(doc, "files", 0, "sha256"), e.sha)
            v = field(doc, "files", 0, "peer_lookups")
            t.eq("peer lookups (peer, result)",
                 [(x.get("peer"), x.get("result")) for x in v] if isinstance(v, list) else v,
                 [(f.peer, "stale")])
            t.eq("the fake got a HEAD only", f.methods(), ["HEAD"])
            expect_fake_clean(t, f)
        t.eq("complete: exit status", t.ran(agent.run("complete", job)).rc, 0)
        t.eq("the output is the origin's file",
             hashlib.sha256(open(out, "rb").read()).hexdigest() if os.path.exists(out) else ABSENT, e.sha)


@case("hostile_peer_impersonator_refused_with_peer_key")
def _(bg):
    """with --peer-key the agent takes only answers signed with the key for its own request: a
    machine answering in the peer's place without the key -- even with the self-consistent lie
    of the case above, or with the true bytes, or with a made-up signature header -- is refused
    from its HEAD (error), never asked for the body, and the origin sends the file"""
    with true_file(bg) as (o, t, e, _):
        other = os.urandom(A_SIZE)
        key = o.path("peer.key")
        with open(key, "w") as kf:
            kf.write("0123456789abcdef0123456789abcdef\n")
        os.chmod(key, 0o600)
        forged = "sig=" + "ab" * 32
        for label, answer in (("poison", lying(e, other, digest_of=other, extra=[("X-Bgcopy-Auth", forged)])),
                              ("true-unsigned", lying(e, e.data))):
            f = against(bg, o, e, f"imp-{label}", [(answer,)], 0, ["error"], extra=["--peer-key", key]).fakes[0]
            t.eq(f"{label}: the fake got a HEAD only", f.methods(), ["HEAD"])
            t.ok(f"{label}: the request was signed",
                 all(x.startswith("t=") for x in f.auth_headers()), f.auth_headers())


def stall_after(e, body):
    """GET: honest headers and BODY, then silence with the connection open."""
    def stall(f, rq):
        rq.send(head_block(200, "OK", entry_headers(e)) + body)
        f.stall()
    return get_only(stall)


def trickle(e):
    """GET: honest headers, then 16 true bytes a second."""
    def answer(f, rq):
        rq.send(head_block(200, "OK", entry_headers(e)))
        sent = 0
        while not f.stopping.is_set() and sent < A_SIZE:
            if not rq.send(e.data[sent:sent + 16]):
                return
            sent += 16
            f.stopping.wait(1.0)
    return get_only(answer)


@case("hostile_peer_stalls_mid_body")
def _(bg):
    """a peer that sends the headers and half of the true bytes, then nothing, keeping the
    connection open: dropped after PEER_STALL_TIMEOUT without a byte; the bytes received are
    kept and the origin sends the rest (a Range GET from there)"""
    with true_file(bg) as (o, t, e, _):
        r = against(bg, o, e, "stall", [(stall_after(e, e.data[:HALF]),)], HALF, ["failed"], REST,
                    within=STALL_BOUND + FAST).r
        t.ok(f"it waited for the stall timeout ({r.elapsed:.1f} s >= {PEER_STALL_TIMEOUT - 1} s)",
             r.elapsed >= PEER_STALL_TIMEOUT - 1)


@case("hostile_peer_stalls_before_answering")
def _(bg):
    """a peer that never answers a HEAD (bounded by PEER_LOOKUP_TIMEOUT), and one that answers HEAD
    but never the GET (bounded by PEER_STALL_TIMEOUT): each is dropped and the origin sends the
    whole file"""
    with true_file(bg) as (o, t, e, _):
        def silent(f, rq):
            f.stall()
        for label, answer, result in (("head", silent, "error"), ("get", get_only(silent), "failed")):
            print(f"-- silent on {label.upper()}")
            against(bg, o, e, label, [(answer,)], 0, [result], WHOLE,
                    within=max(PEER_STALL_TIMEOUT, PEER_LOOKUP_TIMEOUT) + FAST)


@case("hostile_peer_trickles_body")
def _(bg):
    """a peer that sends the headers, then 16 true bytes a second (never silent, 5 hours for the
    file; it held the get that long when the low-speed limit was 1 byte/s): dropped below
    PEER_MIN_SPEED bytes/s after PEER_STALL_TIMEOUT; the bytes received are kept, the origin
    sends the rest"""
    with true_file(bg) as (o, t, e, _):
        against(bg, o, e, "trickle", [(trickle(e),)], lambda v: 0 <= v < A_SIZE, ["failed"], REST,
                within=STALL_BOUND + FAST)


@case("hostile_peer_closes_early")
def _(bg):
    """honest headers, then the connection closes: after half of the true bytes (kept; the origin
    sends the rest from there with a Range GET), right after the headers (nothing kept), and
    after half of WRONG bytes (kept at first; the origin's rest does not make the digest, so the
    file is fetched again whole from the origin alone)"""
    with true_file(bg) as (o, t, e, _):
        wrong = flipped(e.data, 100)
        for label, body, want_fp, want_origin in (
                ("half-true", e.data[:HALF], HALF, [(206, HALF)]),
                ("no-body", b"", 0, [(200, None)]),
                ("half-wrong", wrong[:HALF], 0, [(206, HALF), (200, None)])):
            print(f"-- closes after {label}")
            against(bg, o, e, label, [(get_only(honest_then(body)),)], want_fp, ["failed"],
                    ("origin GETs (status, Range start)", want_origin))


@case("hostile_peer_206_wrong_range")
def _(bg):
    """a peer that answers a plain GET with 206 (some range, or the right start with a wrong total)
    is refused before a byte is taken; and when a first peer left half the file and the second
    is asked for the rest (Range: bytes=HALF-), a 206 for another range, a 200 with everything,
    or a 206 with the wrong total is refused: the origin sends the rest"""
    with true_file(bg) as (o, t, e, _):
        def partial(first, last, total, status=206):
            def answer(f, rq):
                hdrs = entry_headers(e, length=last - first + 1,
                                     extra=[("Content-Range", f"bytes {first}-{last}/{total}")])
                rq.send(head_block(status, "Partial Content", hdrs) + e.data[first:last + 1])
            return get_only(answer)

        for label, answer in (("206-to-plain-get", partial(1000, A_SIZE - 1, A_SIZE)),
                              ("206-wrong-total", partial(0, A_SIZE - 1, A_SIZE + 1))):
            print(f"-- one peer: {label}")
            f = against(bg, o, e, label, [(answer,)], 0, ["failed"], WHOLE).fakes[0]
            t.eq("the fake was asked without a Range", f.ranges(), [None])

        cut_half = get_only(honest_then(e.data[:HALF]))
        for label, answer in (("206-from-0", partial(0, A_SIZE - 1, A_SIZE)),
                              ("206-one-late", partial(HALF + 1, A_SIZE - 1, A_SIZE)),
                              ("206-wrong-total", partial(HALF, A_SIZE - 1, A_SIZE - 1)),
                              ("200-whole", get_only(honest_then(e.data)))):
            print(f"-- second peer after a first one that gave half: {label}")
            f2 = against(bg, o, e, "2-" + label, [(cut_half, "first"), (answer, "second")],
                                  HALF, ["failed", "failed"],
                                  ("origin: one Range GET from HALF", [(206, HALF)])).fakes[1]
            t.eq("the second was asked for the rest", f2.ranges(), [f"bytes={HALF}-"])


@case("hostile_peer_garbage_status_line")
def _(bg):
    """garbage where the status line goes (no HTTP at all, a non-numeric code, HTTP/9.9, binary
    bytes), on the HEAD and on the GET: the peer is passed over, the origin sends the whole file"""
    with true_file(bg) as (o, t, e, _):
        garbage = {"text": b"GARBAGE GARBAGE\r\n\r\n",
                   "bad-code": b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
                   "version": b"HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n",
                   "binary": bytes(range(256)) * 4}
        for on in ("HEAD", "GET"):
            for label, junk in garbage.items():
                print(f"-- {on}: {label}")

                def answer(f, rq, junk=junk, on=on):
                    if rq.method == on:
                        rq.send(junk)
                        if rq.method == "GET":
                            rq.send(e.data)
                    else:
                        honest_head(f, rq)
                against(bg, o, e, f"{on}-{label}", [(answer,)], 0,
                        ["error" if on == "HEAD" else "failed"], WHOLE)


@case("hostile_peer_huge_headers")
def _(bg):
    """a GET answer whose headers never end (an endless stream of header lines), one header line of
    1 MiB, and the same on the HEAD: each is dropped in bounded time and memory, the origin
    sends the whole file"""
    with true_file(bg) as (o, t, e, _):
        def endless(f, rq):
            rq.send(b"HTTP/1.1 200 OK\r\n")
            line = b"X-Junk: " + b"j" * 1000 + b"\r\n"
            block = line * 64
            while not f.stopping.is_set():
                if not rq.send(block):
                    return

        giant = lying(e, e.data, extra=[("X-Junk", "j" * (1 << 20))])
        for label, answer, result in (("get-endless", get_only(endless), "failed"),
                                      ("get-giant-line", get_only(giant), "failed"),
                                      ("head-endless", endless, "error"),
                                      ("head-giant-line", giant, "error")):
            print(f"-- {label}")
            against(bg, o, e, label, [(answer,)], 0, [result], WHOLE, within=PEER_STALL_TIMEOUT + FAST)


@case("hostile_peer_get_describes_other_content")
def _(bg):
    """HEAD describes the true entry; the GET answers with other content (its own, consistent ETag
    and Repr-Digest, other bytes): refused from the GET's headers before a byte is taken; the
    origin sends the whole file"""
    with true_file(bg) as (o, t, e, _):
        other = os.urandom(A_SIZE)
        f = against(bg, o, e, "other", [(get_only(honest_then(other, digest_of=other)),)],
                          0, ["failed"], WHOLE).fakes[0]
        t.eq("the fake got a HEAD then a GET", f.methods(), ["HEAD", "GET"])


@case("hostile_peer_then_good_peer")
def _(bg):
    """--peer HOSTILE --peer GOOD (a real bgcopy-peerd on a store filled from the origin): for a
    hostile peer with wrong bytes, one that stalls mid-body, one that trickles, one that closes
    after half, one with a garbage status line, every byte comes from the good peer (or the
    hostile one's true prefix), none from the origin"""
    with true_file(bg) as (o, t, e, seeder):
        r = t.ran(seeder.get(e.key, o.path("out", "a.bin")))
        t.eq("seed get: exit status", r.rc, 0)
        gets_after_seed = len(origin_gets(o))

        def garbage(f, rq):
            rq.send(b"GARBAGE\r\n\r\n")
        with Peerd(bg, seeder.home, workdir=o.dir) as good:
            gp = f"127.0.0.1:{good.port}"
            for label, answer, first, fp_hostile, within in (
                    # Beside a real peerd (two holders, a piece list) the swarm asks the fake
                    # for ranges: its whole-file 200 is not the span asked, so it fails.
                    ("wrong-bytes", get_only(honest_then(flipped(e.data, HALF))), "failed", 0, FAST),
                    ("stall", stall_after(e, e.data[:HALF]), "failed", HALF, STALL_BOUND + FAST),
                    ("trickle", trickle(e), "failed", "a few", STALL_BOUND + FAST),
                    ("cut", get_only(honest_then(e.data[:HALF])), "failed", HALF, FAST),
                    ("garbage", garbage, "error", 0, FAST)):
                print(f"-- first peer: {label}")
                against(bg, o, e, "then-" + label, [(answer,), gp], A_SIZE, [first, "hit"], within=within)
                t.note(f"of which from the hostile peer: {fp_hostile} (its true prefix)")
            t.eq("peerd still running", good.alive(), True)
        t.eq("origin: no GET after the seed (HEADs only, to check the entry)",
             origin_gets(o)[gets_after_seed:], [])


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
