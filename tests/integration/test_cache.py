#!/usr/bin/env python3
"""Integration cases for the administration of the content store: `bgcopy cache ...` against
stores that bgcopy filled from a real nginx origin (origin.py), with real LMDB files damaged on
purpose where a case needs it (see test_get.py for the checker and the driver).

Usage: test_cache.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_cache.py CASE)
       test_cache.py --list                    prints the case names, one a line
       test_cache.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Exit 0 when every check passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the temp
dirs."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from origin import MiB, Origin  # noqa: E402
from test_get import main, started  # noqa: E402

CASES = {}


def case(name):
    def deco(fn):
        assert name not in CASES, name
        CASES[name] = fn
        return fn
    return deco


def fetch(t, agent, o, name):
    """`bgcopy get` of /files/NAME; checks the output; returns the URL."""
    url, out = o.url(f"/files/{name}"), o.path("out", name)
    r = t.ran(agent.get(url, out))
    t.eq(f"get {name}: exit status", r.rc, 0)
    t.eq(f"get {name}: output sha256", r.file0().get("sha256"), o.sha(name))
    return url


def flip_stored_byte(t, home, data, at):
    """Flips the byte at offset `at` of content `data` where it lies in store.mdb (content is
    kept as raw bytes in LMDB overflow pages: the 64 bytes from `at` are found verbatim)."""
    path = os.path.join(home, "store.mdb")
    with open(path, "r+b") as f:
        m = f.read()
        i = m.find(data[at:at + 64])
        t.ok(f"the stored bytes at content offset {at} are found in store.mdb", i >= 0)
        t.eq("and found once", m.count(data[at:at + 64]), 1)
        if i >= 0:
            f.seek(i)
            f.write(bytes([m[i] ^ 0x5A]))
    return i


def verify(t, agent, want_rc):
    r = t.ran(agent.run("cache", "verify", "--json"))
    t.eq("cache verify --json: exit status", r.rc, want_rc)
    t.ok("cache verify --json printed a document", isinstance(r.doc, dict), r.out[:300])
    return r.doc or {}


@case("cache_verify_catches_corrupted_chunk")
def _(bg):
    big, small = 3 * MiB + 17, 20000
    with Origin(files={"big.bin": big, "small.bin": small}) as o:
        o, agent, t = started(bg, o)
        print("checks: cache verify re-hashes every entry (exit 0, counts); after one byte of a "
              "stored chunk is flipped in store.mdb it reports that entry with its URL, removes "
              "it and its key (exit 1), keeps the sound one; a new get fetches the file whole "
              "from the origin and a second verify is clean")
        u_big = fetch(t, agent, o, "big.bin")
        u_small = fetch(t, agent, o, "small.bin")
        doc = verify(t, agent, 0)
        t.eq("entries", doc.get("entries"), 2)
        t.eq("bytes re-hashed", doc.get("bytes"), big + small)
        t.eq("nothing removed", doc.get("removed"), [])
        r = t.ran(agent.run("cache", "verify"))
        t.eq("cache verify (text): exit status", r.rc, 0)
        t.ok("the text names the count", "verified 2 entries" in r.out, r.out.strip())

        flip_stored_byte(t, agent.home, o.data["big.bin"], 2 * MiB + 5)
        doc = verify(t, agent, 1)
        removed = doc.get("removed") or [{}]
        t.eq("one corrupt entry", doc.get("corrupt"), 1)
        t.eq("the corrupt entry's digest", removed[0].get("sha256"), o.sha("big.bin"))
        t.eq("the problem", removed[0].get("problem"), "digest mismatch")
        t.eq("its key removed with it", removed[0].get("urls"), [u_big])
        r = t.ran(agent.run("cache", "show", u_big))
        t.eq("cache show of the removed URL: exit status", r.rc, 1)
        r = t.ran(agent.run("cache", "show", u_small))
        t.eq("cache show of the sound URL: exit status", r.rc, 0)

        before = len(o.requests("/files/big.bin"))
        fetch(t, agent, o, "big.bin")
        reqs = o.requests("/files/big.bin")[before:]
        t.eq("the new get went to the origin once, for the whole file",
             [(q["status"], q["range"]) for q in reqs], [(200, None)])
        doc = verify(t, agent, 0)
        t.eq("second verify: entries", doc.get("entries"), 2)
        t.eq("second verify: nothing removed", doc.get("removed"), [])


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
