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
from bgtest import Bgcopy, Peerd, case_registry, main, ran, sign, started  # noqa: E402
from origin import MiB, Origin, sha256_file  # noqa: E402
from relay import Liar  # noqa: E402

SIZE = 12 * MiB + 12345    # 49 pieces, the last one short
URI = "/files/big.bin"

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


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
