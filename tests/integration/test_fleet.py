#!/usr/bin/env python3
"""Integration cases for the fleet on one machine: two to four nodes (homes with their own
bgcopy-peerd on 127.0.0.1) get one file from a rate-limited nginx at about the same time.
The second node follows the first (takes the file from its peerd as it arrives) instead of
asking the origin again; the origin's access log says how many body bytes it sent. The
many-node measurements are scripts/harness --netns fleet (network namespaces, mDNS).

Usage: test_fleet.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_fleet.py CASE)
       test_fleet.py --list                    prints the case names, one a line
       test_fleet.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Exit 0 when every check passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the
temp dirs."""

import json
import os
import signal
import sys
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import (Bgcopy, Peerd, case_registry, main, q, started,  # noqa: E402
                    wait_partial)
from origin import MiB, Origin, sha256_file  # noqa: E402
from relay import Liar  # noqa: E402

SIZE = 12 * MiB            # served at 3 MiB/s per connection: about 4 s
LOC = "location = /files/big.bin { limit_rate 3m; }"
URI = "/files/big.bin"
PIECE = 64 * 4096 - 16     # a store chunk: the unit of the piece lists

CASES, case = case_registry()


class Node:
    """A home with a config file (peer caching both, no discovery), its peerd, and bgcopy."""

    def __init__(self, bg, o, name, settings=()):
        self.name = name
        self.dir = o.path(name)
        os.makedirs(os.path.join(self.dir, "home"), mode=0o700, exist_ok=True)
        self.conf = os.path.join(self.dir, "bgcopy.conf")
        with open(self.conf, "w") as f:
            f.write("discovery = off\npeer_caching = both\n")
            for k, v in settings:
                f.write(f"{k} = {v}\n")
        self.agent = Bgcopy(bg.exe, os.path.join(self.dir, "home"),
                            env_extra={"BGCOPY_CONFIG": self.conf})
        r = self.agent.run("cache", "list")      # the home and its store
        bg.t.eq(f"{name}: bgcopy cache list", r.rc, 0)
        self.peerd = Peerd(bg, self.agent.home, workdir=self.dir,
                           env_extra={"BGCOPY_CONFIG": self.conf,
                                      "BGCOPY_HOME": self.agent.home})
        self.out = os.path.join(self.dir, "out.bin")
        self.p = None

    @property
    def peer(self):
        return f"127.0.0.1:{self.peerd.port}"

    def start_get(self, o, peers, extra=()):
        args = []
        for p in peers:
            args += ["--peer", p.peer]
        self.p = self.agent.popen_get(o.url(URI), self.out, extra=[*args, *extra], json_out=True,
                                      log_prefix=os.path.join(self.dir, "get"))
        return self.p

    def result(self, timeout=60):
        """(exit status, job document or None, stderr) of the background get."""
        try:
            rc = self.p.wait(timeout=timeout)
        except Exception:
            self.p.kill()
            rc = self.p.wait()
        with open(os.path.join(self.dir, "get.out"), errors="replace") as f:
            out = f.read()
        with open(os.path.join(self.dir, "get.err"), errors="replace") as f:
            err = f.read()
        try:
            doc = json.loads(out)
        except ValueError:
            doc = None
        return rc, doc, err


def file0(doc):
    files = (doc or {}).get("files") or [{}]
    return files[0] if isinstance(files[0], dict) else {}


def origin_body_bytes(o):
    return sum(int(r.get("body_bytes_sent") or 0) for r in o.log()
               if r.get("uri") == URI and str(r.get("body_bytes_sent", "")).isdigit())


def expect_correct(t, node, o, rc, doc, err):
    t.eq(f"{node.name}: exit status", rc, 0)
    if rc != 0:
        t.note(f"{node.name} stderr: {err[-1500:]}")
    t.eq(f"{node.name}: output's SHA-256", sha256_file(node.out) if os.path.exists(node.out) else None,
         o.sha("big.bin"))


@case("fleet_second_get_follows_the_first")
def _(bg):
    """B starts while A is fetching from the origin: B takes the file from A's peerd as it
    arrives (fleet role follower, bytes from peers), the origin sends the file once
    (<= 1.1 x its size in its access log), and A is the owner"""
    with Origin(files={"big.bin": SIZE}, locations=LOC) as o:
        o, _, t = started(bg, o)
        A, B = Node(bg, o, "A"), Node(bg, o, "B")
        with A.peerd, B.peerd:
            A.start_get(o, [B])
            if wait_partial(t, o, A.p, A.out, os.path.join(A.dir, "get"), MiB) is None:
                return
            B.start_get(o, [A])
            ra, rb = A.result(), B.result()
            expect_correct(t, A, o, *ra)
            expect_correct(t, B, o, *rb)
            fa, fb = file0(ra[1]), file0(rb[1])
            t.eq("A's fleet role", (fa.get("fleet") or {}).get("role"), "owner")
            t.eq("B's fleet role", (fb.get("fleet") or {}).get("role"), "follower")
            t.eq("B's bytes came from peers, the last short chunk too", (fb.get("bytes_from_peers"),
                 fb.get("bytes_from_origin")), (SIZE, 0))
            sent = origin_body_bytes(o)
            t.ok("origin sent the file about once", sent <= 1.1 * SIZE, f"{sent} bytes for {SIZE}")


@case("fleet_owner_killed_follower_takes_over")
def _(bg):
    """A fetches, B follows; A's bgcopy and peerd are killed (SIGKILL) midway: B's output is
    still right and B became the owner (a takeover); B keeps the pieces it followed that it
    found in A's signed piece list while A lived, and the origin sends the rest (206, Range
    from the first piece not kept, If-Range on A's strong ETag); the origin sent at most
    2.1 x the size"""
    owner_killed(bg, (), killed_takeover)


def owner_killed(bg, settings, check):
    """A fetches, B follows, both with SETTINGS (bgcopy.conf); A's bgcopy and peerd are
    killed once B has 5 MiB: checks B's output, then CHECK(t, o, B's file document)."""
    with Origin(files={"big.bin": SIZE}, locations=LOC) as o:
        o, _, t = started(bg, o)
        A, B = (Node(bg, o, n, settings=settings) for n in "AB")
        A.peerd.__enter__()      # killed below: not a context that expects a clean exit
        try:
            with B.peerd:
                A.start_get(o, [B])
                if wait_partial(t, o, A.p, A.out, os.path.join(A.dir, "get"), MiB) is None:
                    return
                B.start_get(o, [A])
                if wait_partial(t, o, B.p, B.out, os.path.join(B.dir, "get"), 5 * MiB) is None:
                    return
                A.p.send_signal(signal.SIGKILL)
                A.peerd.proc.send_signal(signal.SIGKILL)
                A.peerd.proc.wait()
                rb = B.result()
                A.result()
                expect_correct(t, B, o, *rb)
                check(t, o, file0(rb[1]))
        finally:
            if A.peerd.alive():
                A.peerd.stop()


def killed_takeover(t, o, fb):
    fl = fb.get("fleet") or {}
    t.eq("B's fleet role after the owner died", fl.get("role"), "owner")
    t.ok("B took over at least once", (fl.get("takeovers") or 0) >= 1, json.dumps(fl))
    t.ok("B followed A first", (fl.get("follows") or 0) >= 1, json.dumps(fl))
    sent = origin_body_bytes(o)
    t.ok("origin sent at most 2.1 x the size", sent <= 2.1 * SIZE, f"{sent} bytes for {SIZE}")
    gets = [r for r in o.log() if r.get("uri") == URI]
    t.eq("origin answers: A's 200, then B's 206", [int(r.get("status")) for r in gets],
         [200, 206])
    kept = fb.get("bytes_from_peers")
    t.ok("B kept whole pieces it followed (at least one)", isinstance(kept, int) and kept > 0
         and kept % PIECE == 0, f"bytes_from_peers {kept!r}")
    t.eq("B's bytes: the kept pieces from A, the rest from the origin",
         (fb.get("bytes_from_origin") or 0) + (kept or 0), SIZE)
    if len(gets) == 2:
        t.eq("B's Range starts after the kept pieces", gets[1].get("range"), f"bytes={kept}-")
        with urllib.request.urlopen(urllib.request.Request(o.url(URI), method="HEAD")) as r:
            etag = r.headers.get("ETag")
        t.eq("B's If-Range is the origin's strong ETag (A's, followed)",
             gets[1].get("if_range"), etag)
        t.ok("the ETag is strong", str(gets[1].get("if_range", "")).startswith('"'),
             repr(gets[1].get("if_range")))


class Via:
    """A node's peer address as another node sees it through a relay."""

    def __init__(self, relay):
        self.peer = relay.peer


@case("fleet_follower_rejects_damaged_partial_bodies")
def _(bg):
    """A fetches; B follows A through a relay that flips the first byte of every /v1/partial
    body (the piece list passes unchanged): B finds its first pieces are not those of A's
    signed list, notes A rejected, drops what it followed and fetches the file from the
    origin; its output is right"""
    with Origin(files={"big.bin": SIZE}, locations=LOC) as o:
        o, _, t = started(bg, o)
        A, B = Node(bg, o, "A"), Node(bg, o, "B")
        with A.peerd, B.peerd, Liar(A.peerd.port, paths=("/v1/partial",)) as liar:
            A.start_get(o, [B])
            if wait_partial(t, o, A.p, A.out, os.path.join(A.dir, "get"), MiB) is None:
                return
            B.start_get(o, [Via(liar)])
            rb, ra = B.result(), A.result()
            expect_correct(t, A, o, *ra)
            expect_correct(t, B, o, *rb)
            fb = file0(rb[1])
            t.ok("the relay altered bodies", liar.altered > 0, f"altered {liar.altered}")
            noted = [(x.get("result"), x.get("detail")) for x in fb.get("peer_lookups") or []
                     if isinstance(x, dict) and x.get("peer") == liar.peer]
            t.ok("B noted A (through the relay) rejected for a piece not in its list",
                 ("rejected", "a piece followed is not the one in its signed list") in noted,
                 json.dumps(noted))
            t.eq("B's bytes: all from the origin", fb.get("bytes_from_origin"), SIZE)


@case("fleet_owner_killed_one_successor_the_other_follows")
def _(bg):
    """A fetches, B and C follow; A (bgcopy and peerd) is killed midway: exactly one of B
    and C fetches the file from the origin (role owner, a takeover), the other follows it
    (role follower), both outputs are right and the origin sent at most 2.1 x the size"""
    with Origin(files={"big.bin": SIZE}, locations=LOC) as o:
        o, _, t = started(bg, o)
        A, B, C = Node(bg, o, "A"), Node(bg, o, "B"), Node(bg, o, "C")
        A.peerd.__enter__()
        try:
            with B.peerd, C.peerd:
                A.start_get(o, [B, C])
                if wait_partial(t, o, A.p, A.out, os.path.join(A.dir, "get"), MiB) is None:
                    return
                B.start_get(o, [A, C])
                C.start_get(o, [A, B])
                if wait_partial(t, o, C.p, C.out, os.path.join(C.dir, "get"), 5 * MiB) is None:
                    return
                A.p.send_signal(signal.SIGKILL)
                A.peerd.proc.send_signal(signal.SIGKILL)
                A.peerd.proc.wait()
                rb, rc_ = B.result(), C.result()
                A.result()
                expect_correct(t, B, o, *rb)
                expect_correct(t, C, o, *rc_)
                roles = sorted(((file0(r[1]).get("fleet") or {}).get("role") or "none")
                               for r in (rb, rc_))
                t.eq("roles of B and C after A died", roles, ["follower", "owner"])
                t.note("B: " + json.dumps(file0(rb[1]).get("fleet")) + " C: "
                       + json.dumps(file0(rc_[1]).get("fleet")))
                sent = origin_body_bytes(o)
                t.ok("origin sent at most 2.1 x the size", sent <= 2.1 * SIZE,
                     f"{sent} bytes for {SIZE}")
        finally:
            if A.peerd.alive():
                A.peerd.stop()


@case("fleet_takeovers_0_follower_goes_to_the_origin_alone")
def _(bg):
    """fleet_takeovers = 0: A fetches, B follows; A (bgcopy and peerd) is killed midway: B
    joins no re-election (fleet.elections 0: it followed A at once, and no election after)
    and fetches the rest of the file from the origin alone (role owner, its one takeover,
    keeping the pieces it checked), right"""
    owner_killed(bg, [("fleet_takeovers", 0)], went_alone)


def went_alone(t, o, fb):
    fl = fb.get("fleet") or {}
    t.eq("B's fleet role after the owner died", fl.get("role"), "owner")
    t.ok("B followed A first", (fl.get("follows") or 0) >= 1, json.dumps(fl))
    t.eq("B's elections (none: no re-election)", fl.get("elections"), 0)
    t.eq("B's takeovers (the origin alone, once)", fl.get("takeovers"), 1)
    t.eq("B's bytes: from A, then the origin", (fb.get("bytes_from_origin") or 0) +
         (fb.get("bytes_from_peers") or 0), SIZE)
    gets = [int(r.get("status")) for r in o.log() if r.get("uri") == URI]
    t.eq("origin answers: A's 200, then B's resume (206)", gets, [200, 206])


def node_id(node):
    try:
        with open(os.path.join(node.agent.home, "node-id")) as f:
            return f.read().strip()
    except OSError:
        return None


@case("fleet_origin_max_2_four_nodes_two_owners")
def _(bg):
    """fleet_origin_max = 2, four nodes started together: the election makes two owners, each
    fetching from the origin once (two 200s, at most 2 x the size sent), the two others follow
    one of them (which one is each follower's own rendezvous), and every output is right"""
    with Origin(files={"big.bin": SIZE}, locations=LOC) as o:
        o, _, t = started(bg, o)
        nodes = [Node(bg, o, n, settings=[("fleet_origin_max", 2)]) for n in "ABCD"]
        with nodes[0].peerd, nodes[1].peerd, nodes[2].peerd, nodes[3].peerd:
            for n in nodes:
                n.start_get(o, [m for m in nodes if m is not n])
            results = [n.result() for n in nodes]
            for n, r in zip(nodes, results):
                expect_correct(t, n, o, *r)
            fleets = [file0(r[1]).get("fleet") or {} for r in results]
            t.note(" ".join(f"{n.name}: {json.dumps(fl)}" for n, fl in zip(nodes, fleets)))
            roles = sorted(fl.get("role") or "none" for fl in fleets)
            t.eq("roles", roles, ["follower", "follower", "owner", "owner"])
            owners = {node_id(n) for n, fl in zip(nodes, fleets) if fl.get("role") == "owner"}
            for n, fl in zip(nodes, fleets):
                if fl.get("role") == "follower":
                    t.ok(f"{n.name} follows one of the owners", fl.get("source") in owners,
                         f"source {fl.get('source')}, owners {sorted(owners)}")
            gets = [int(r.get("status")) for r in o.log() if r.get("uri") == URI]
            t.eq("origin answers: two 200s", gets, [200, 200])
            sent = origin_body_bytes(o)
            t.ok("origin sent at most 2 x the size", sent <= 2 * SIZE, f"{sent} bytes for {SIZE}")


@case("fleet_with_peer_key_two_followers")
def _(bg):
    """with a peer key on every node, B and C start together while A fetches: both follow A
    (their signed polls and GETs for the same URL in the same second are each accepted: a
    request's signature carries a nonce), and the origin sends the file once"""
    with Origin(files={"big.bin": SIZE}, locations=LOC) as o:
        o, _, t = started(bg, o)
        key = o.path("peer.key")
        with open(key, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(key, 0o600)
        A, B, C = (Node(bg, o, n, settings=[("peer_key", key)]) for n in "ABC")
        with A.peerd, B.peerd, C.peerd:
            A.start_get(o, [B, C])
            if wait_partial(t, o, A.p, A.out, os.path.join(A.dir, "get"), MiB) is None:
                return
            B.start_get(o, [A, C])
            C.start_get(o, [A, B])
            ra, rb, rc_ = A.result(), B.result(), C.result()
            for n, r in (("A", ra), ("B", rb), ("C", rc_)):
                expect_correct(t, {"A": A, "B": B, "C": C}[n], o, *r)
            t.eq("roles", [(file0(r[1]).get("fleet") or {}).get("role") for r in (ra, rb, rc_)],
                 ["owner", "follower", "follower"])
            sent = origin_body_bytes(o)
            t.ok("origin sent the file about once", sent <= 1.1 * SIZE, f"{sent} bytes for {SIZE}")


@case("fleet_other_redirect_policy_not_followed")
def _(bg):
    """A fetches under redirect-disallow, B's job allows silent redirects: B never takes A's
    bytes (another redirect policy is another fetch class) and goes to the origin itself"""
    with Origin(files={"big.bin": SIZE}, locations=LOC) as o:
        o, _, t = started(bg, o)
        A, B = Node(bg, o, "A"), Node(bg, o, "B")
        with A.peerd, B.peerd:
            A.start_get(o, [B], extra=["--security-flags", "0x200"])
            if wait_partial(t, o, A.p, A.out, os.path.join(A.dir, "get"), MiB) is None:
                return
            B.start_get(o, [A])
            ra, rb = A.result(), B.result()
            expect_correct(t, A, o, *ra)
            expect_correct(t, B, o, *rb)
            fb = file0(rb[1])
            t.eq("B's bytes from peers", fb.get("bytes_from_peers"), 0)
            t.eq("B's bytes from the origin", fb.get("bytes_from_origin"), SIZE)


@case("fleet_no_cache_get_follows_but_publishes_nothing")
def _(bg):
    """B's get is --no-cache: it still follows A (a client), but is never elected and
    publishes no download of its own (its peerd answers 404 for the URL)"""
    with Origin(files={"big.bin": SIZE}, locations=LOC) as o:
        o, _, t = started(bg, o)
        A, B = Node(bg, o, "A"), Node(bg, o, "B")
        with A.peerd, B.peerd:
            A.start_get(o, [B])
            if wait_partial(t, o, A.p, A.out, os.path.join(A.dir, "get"), MiB) is None:
                return
            B.start_get(o, [A], extra=["--no-cache"])
            if wait_partial(t, o, B.p, B.out, os.path.join(B.dir, "get"), 2 * MiB) is None:
                return
            r = B.peerd.request("HEAD", q(o.url(URI)).replace("/v1/content", "/v1/partial"))
            t.eq("B's peerd has no download of the URL", r.status, 404)
            ra, rb = A.result(), B.result()
            expect_correct(t, A, o, *ra)
            expect_correct(t, B, o, *rb)
            fb = file0(rb[1])
            t.eq("B's fleet role", (fb.get("fleet") or {}).get("role"), "follower")
            sent = origin_body_bytes(o)
            t.ok("origin sent the file about once", sent <= 1.1 * SIZE, f"{sent} bytes for {SIZE}")


@case("fleet_allow_report_never_follows")
def _(bg):
    """B's job is ALLOW_REPORT: it keys the file under the URL that answers, so it takes no
    part in the fleet for the URL asked (BITS' miss under ALLOW_REPORT): all its bytes come
    from the origin and its document has no fleet part"""
    with Origin(files={"big.bin": SIZE}, locations=LOC) as o:
        o, _, t = started(bg, o)
        A, B = Node(bg, o, "A"), Node(bg, o, "B")
        with A.peerd, B.peerd:
            A.start_get(o, [B])
            if wait_partial(t, o, A.p, A.out, os.path.join(A.dir, "get"), MiB) is None:
                return
            B.start_get(o, [A], extra=["--security-flags", "0x100"])
            ra, rb = A.result(), B.result()
            expect_correct(t, A, o, *ra)
            expect_correct(t, B, o, *rb)
            fb = file0(rb[1])
            t.eq("B's fleet part", fb.get("fleet"), None)
            t.eq("B's bytes from the origin", fb.get("bytes_from_origin"), SIZE)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
