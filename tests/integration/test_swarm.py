#!/usr/bin/env python3
"""Integration cases for the multi-peer swarm: several nodes (homes with their own
bgcopy-peerd on 127.0.0.1) hold the same complete file; a further node takes it from all of
them at once, piece by piece, each piece checked against the piece list (/v1/pieces). A
peer whose pieces are wrong is dropped and its pieces come from the others.

Usage: test_swarm.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_swarm.py CASE)
       test_swarm.py --list                    prints the case names, one a line
       test_swarm.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Exit 0 when every check passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the
temp dirs."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import (Bgcopy, Peerd, case_registry, main, ran, sign, started,  # noqa: E402
                    wait_partial)
from origin import MiB, Origin, sha256_file  # noqa: E402
from relay import Liar  # noqa: E402

SIZE = 12 * MiB + 12345    # 49 pieces, the last one short
URI = "/files/big.bin"
PIECE = 64 * 4096 - 16     # a store chunk: the unit of the piece lists

CASES, case = case_registry()


class Node:
    """A home with a config file (peer caching both, no discovery) and its peerd."""

    def __init__(self, bg, o, name, key=None):
        self.name = name
        self.key = key
        self.dir = o.path(name)
        os.makedirs(os.path.join(self.dir, "home"), mode=0o700, exist_ok=True)
        self.conf = os.path.join(self.dir, "bgcopy.conf")
        with open(self.conf, "w") as f:
            f.write("discovery = off\npeer_caching = both\n")
            if key is not None:
                f.write(f"peer_key = {key}\n")
        self.agent = Bgcopy(bg.exe, os.path.join(self.dir, "home"),
                            env_extra={"BGCOPY_CONFIG": self.conf})
        r = self.agent.run("cache", "list")      # the home and its store
        bg.t.eq(f"{name}: bgcopy cache list", r.rc, 0)
        self.peerd = Peerd(bg, self.agent.home, *(("--peer-key", key) if key else ()),
                           workdir=self.dir,
                           env_extra={"BGCOPY_CONFIG": self.conf,
                                      "BGCOPY_HOME": self.agent.home})
        self.out = os.path.join(self.dir, "out.bin")

    @property
    def peer(self):
        return f"127.0.0.1:{self.peerd.port}"

    def metrics_headers(self):
        """With a key, /metrics needs a signed request; peerd takes a signature once, so each
        request is signed with a time of its own (one second earlier than the last)."""
        if self.key is None:
            return None
        with open(self.key, "rb") as f:
            k = f.read().strip()
        self.signed_t = min(int(time.time()), getattr(self, "signed_t", 1 << 62)) - 1
        return {"X-Bgcopy-Auth": sign(k, "GET", "/metrics", "", self.signed_t)}

    def get(self, t, o, peers=()):
        args = []
        for p in peers:
            args += ["--peer", p]
        r = ran(t, self.agent.get(o.url(URI), self.out, extra=args))
        t.eq(f"{self.name}: exit status", r.rc, 0)
        t.eq(f"{self.name}: output's SHA-256",
             sha256_file(self.out) if os.path.exists(self.out) else None, o.sha("big.bin"))
        files = (r.doc or {}).get("files") or [{}] if isinstance(r.doc, dict) else [{}]
        return files[0] if isinstance(files[0], dict) else {}


def served(node):
    """Content body bytes node's peerd served."""
    _, m = node.peerd.metrics(node.metrics_headers())
    return m.get("bgcopy_peerd_bytes_served_total", 0)


def holders(bg, o, t, n, key=None):
    """n nodes that each got the file from the origin, one after the other."""
    nodes = [Node(bg, o, f"H{i}", key) for i in range(n)]
    for h in nodes:
        h.get(t, o)
    return nodes


def lookups(f):
    return [x for x in (f.get("peer_lookups") or []) if isinstance(x, dict)]


def peer_key(o):
    key = o.path("peer.key")
    with open(key, "w") as f:
        f.write(os.urandom(16).hex() + "\n")
    os.chmod(key, 0o600)
    return key


@case("swarm_three_holders_share_the_file")
def _(bg):
    """Three nodes hold the file (each from the origin); a fourth gets it with --peer to all
    three: the output is right, every byte came from peers, and each peerd served part"""
    share_among_three(bg, keyed=False)


@case("swarm_three_keyed_holders_share_the_file")
def _(bg):
    """The same with a peer key: piece lists and ranges are signed answers"""
    share_among_three(bg, keyed=True)


def share_among_three(bg, keyed):
    with Origin(files={"big.bin": SIZE}) as o:
        o, _, t = started(bg, o)
        key = peer_key(o) if keyed else None
        hs = holders(bg, o, t, 3, key)
        D = Node(bg, o, "D", key)
        with hs[0].peerd, hs[1].peerd, hs[2].peerd:
            before = [served(h) for h in hs]
            heads = len([r for r in o.log() if r.get("method") == "HEAD"])
            f = D.get(t, o, [h.peer for h in hs])
            t.eq("D: one HEAD at the origin confirms the holders' common entry",
                 len([r for r in o.log() if r.get("method") == "HEAD"]) - heads, 1)
            t.eq("D: bytes_from_peers", f.get("bytes_from_peers"), SIZE)
            t.eq("D: bytes_from_origin", f.get("bytes_from_origin"), 0)
            for h, b in zip(hs, before):
                now = served(h)
                t.ok(f"{h.name}'s peerd served part of the file", now - b > 0, f"{now - b} bytes")
            t.eq("D: no byte rejected", f.get("bytes_rejected", 0), 0)
            v = ran(t, D.agent.run("cache", "verify", "--json"))
            t.eq("D: cache verify (exit, corrupt)",
                 (v.rc, (v.doc or {}).get("corrupt") if isinstance(v.doc, dict) else None), (0, 0))


@case("swarm_liar_dropped_pieces_fetched_elsewhere")
def _(bg):
    """One of three holders is behind a relay that flips a byte of every range it serves:
    the output is still right, the wrong bytes are counted as rejected (at most what the
    relay altered), the liar is noted "rejected", and the store verifies clean"""
    with Origin(files={"big.bin": SIZE}) as o:
        o, _, t = started(bg, o)
        hs = holders(bg, o, t, 3)
        D = Node(bg, o, "D")
        with hs[0].peerd, hs[1].peerd, hs[2].peerd, Liar(hs[2].peerd.port) as liar:
            f = D.get(t, o, [hs[0].peer, hs[1].peer, liar.peer])
            rej = f.get("bytes_rejected", 0) or 0
            t.ok("D: some bytes rejected", rej > 0, f"bytes_rejected {rej}")
            t.ok("D: rejected at most what the relay altered", rej <= liar.altered,
                 f"bytes_rejected {rej}, altered {liar.altered}")
            t.eq("D: bytes from peers and the origin add up",
                 (f.get("bytes_from_peers") or 0) + (f.get("bytes_from_origin") or 0), SIZE)
            noted = [x.get("result") for x in lookups(f) if x.get("peer") == liar.peer]
            t.ok("the liar is noted rejected", "rejected" in noted, repr(lookups(f))[:600])
            v = ran(t, D.agent.run("cache", "verify", "--json"))
            t.eq("D: cache verify (exit, corrupt)",
                 (v.rc, (v.doc or {}).get("corrupt") if isinstance(v.doc, dict) else None), (0, 0))


@case("swarm_one_holder_single_peer_path")
def _(bg):
    """With one holder the file comes from that peer alone, as before: no piece list asked"""
    with Origin(files={"big.bin": SIZE}) as o:
        o, _, t = started(bg, o)
        hs = holders(bg, o, t, 1)
        D = Node(bg, o, "D")
        with hs[0].peerd:
            f = D.get(t, o, [hs[0].peer])
            t.eq("D: bytes_from_peers", f.get("bytes_from_peers"), SIZE)
            t.eq("D: bytes_from_origin", f.get("bytes_from_origin"), 0)
            _, m = hs[0].peerd.metrics(hs[0].metrics_headers())
            t.eq("no /v1/pieces request", m.get("bgcopy_peerd_pieces_requests_total"), 0)
            t.eq("one content GET (200)", m.get('bgcopy_peerd_requests_total{status="200"}', 0) >= 1,
                 True)


def slow_peerd(bg, h):
    """A second peerd for holder h's home that sends at most 2 MiB/s (--serve-rate): a
    transfer from it lasts long enough to be killed midway."""
    workdir = os.path.join(h.dir, "slow")
    os.makedirs(workdir, exist_ok=True)
    return Peerd(bg, h.agent.home, "--serve-rate", "2M", workdir=workdir,
                 env_extra={"BGCOPY_CONFIG": h.conf, "BGCOPY_HOME": h.agent.home})


def killed_get(t, o, node, peers, at_least):
    """node's get from peers, killed (SIGKILL) once its partial file holds at_least bytes."""
    args = []
    for p in peers:
        args += ["--peer", p]
    log = os.path.join(node.dir, "killed")
    p = node.agent.popen_get(o.url(URI), node.out, extra=args, json_out=True, log_prefix=log)
    seen = wait_partial(t, o, p, node.out, log, at_least)
    p.kill()
    p.wait()
    return seen


def origin_gets(o):
    return [(int(r.get("status")), r.get("range")) for r in o.log()
            if r.get("uri") == URI and r.get("method") == "GET"]


@case("peer_transfer_killed_unchecked_bytes_start_over")
def _(bg):
    """D takes the file from one holder (whole-file transfer: its digest is checked only at
    the end) and is killed midway; the next get of D keeps none of those bytes (their
    digest went with the process): the file comes whole from the holder again, the origin
    sends no byte of it, and the output is right"""
    with Origin(files={"big.bin": SIZE}) as o:
        o, _, t = started(bg, o)
        (H,) = holders(bg, o, t, 1)
        D = Node(bg, o, "D")
        with slow_peerd(bg, H) as pd:
            peer = f"127.0.0.1:{pd.port}"
            before = len(origin_gets(o))
            if killed_get(t, o, D, [peer], 3 * MiB) is None:
                return
            f = D.get(t, o, [peer])
            t.eq("D: bytes from the holder (all of them, again)", f.get("bytes_from_peers"), SIZE)
            t.eq("D: bytes from the origin", f.get("bytes_from_origin"), 0)
            t.eq("D: no GET of the file at the origin", origin_gets(o)[before:], [])


@case("swarm_killed_checked_pieces_kept")
def _(bg):
    """D takes the file from two holders at once (every piece checked against the signed
    list) and is killed midway; the next get of D keeps the checked pieces: the origin sends
    only the rest (one 206 from a piece boundary), and the output is right"""
    with Origin(files={"big.bin": SIZE}) as o:
        o, _, t = started(bg, o)
        hs = holders(bg, o, t, 2)
        D = Node(bg, o, "D")
        with slow_peerd(bg, hs[0]) as p0, slow_peerd(bg, hs[1]) as p1:
            peers = [f"127.0.0.1:{p0.port}", f"127.0.0.1:{p1.port}"]
            before = len(origin_gets(o))
            if killed_get(t, o, D, peers, 4 * MiB) is None:
                return
            f = D.get(t, o, peers)
            kept = f.get("bytes_from_peers")
            t.ok("D kept whole pieces from the holders", isinstance(kept, int) and kept > 0 and
                 kept % PIECE == 0, f"bytes_from_peers {kept!r}")
            t.eq("D: the rest from the origin", (f.get("bytes_from_origin") or 0) + (kept or 0),
                 SIZE)
            t.eq("D: the origin sent the rest once, from the first piece not kept",
                 origin_gets(o)[before:], [(206, f"bytes={kept}-")])


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
