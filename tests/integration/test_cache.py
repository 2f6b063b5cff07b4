#!/usr/bin/env python3
"""Integration cases for the administration of the content store: `bgcopy cache ...` against
stores that bgcopy filled from a real nginx origin (origin.py), with real LMDB files damaged on
purpose where a case needs it (see bgtest.py for the checker and the driver).

Usage: test_cache.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_cache.py CASE)
       test_cache.py --list                    prints the case names, one a line
       test_cache.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Exit 0 when every check passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the temp
dirs."""

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import (Bgcopy, case_registry, cmd, Daemon, main, new_job, Peerd, poll_state, q, started)  # noqa: E402
from origin import MiB, Origin  # noqa: E402

KiB = 1024
DAY = 86400

CASES, case = case_registry()


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
    """cache verify re-hashes every entry (exit 0, counts); after one byte of a stored chunk is
    flipped in store.mdb it reports that entry with its URL, removes it and its key (exit 1),
    keeps the sound one; a new get fetches the file whole from the origin and a second verify is
    clean"""
    big, small = 3 * MiB + 17, 20000
    with Origin(files={"big.bin": big, "small.bin": small}) as o:
        o, agent, t = started(bg, o)
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


def set_clock(offset):
    """Moves the clock of every bgcopy and bgcopy-peerd started from now on (store dates)."""
    os.environ["BGCOPY_TIME_OFFSET"] = str(int(offset))


def stats(t, agent):
    r = t.ran(agent.run("cache", "stats", "--json"))
    t.eq("cache stats --json: exit status", r.rc, 0)
    return r.doc or {}


def listed(t, agent):
    r = t.ran(agent.run("cache", "list", "--json"))
    t.eq("cache list --json: exit status", r.rc, 0)
    return r.doc or []


def config(t, agent, *args, rc=0):
    r = t.ran(agent.run("cache", "config", *args))
    t.eq(f"cache config {' '.join(args)}: exit status", r.rc, rc)
    return r


@case("cache_config_defaults_set_and_refused")
def _(bg):
    """a new home's limits are BITS's defaults (1% of the filesystem, 90 days); cache config sets
    bytes (with K/M/G suffixes), a percentage and days, shown by cache config and cache stats;
    bad values exit 2 and change nothing"""
    with Origin() as o:
        o, agent, t = started(bg, o)
        r = config(t, agent)
        t.ok("default max-size is 1% of the filesystem", "max-size 1% of the filesystem" in r.out,
             r.out)
        t.ok("default max-age is 90 days", "max-age 90 days" in r.out, r.out)
        st = os.statvfs(agent.home)
        d = stats(t, agent)
        t.eq("stats: limit is 1% of the filesystem", d.get("limit"),
             st.f_blocks * st.f_frsize // 100)
        t.eq("stats: max_age_days", d.get("max_age_days"), 90)
        r = config(t, agent, "--max-size", "3M", "--max-age", "7")
        t.ok("max-size 3M is 3145728 bytes", "max-size 3145728 bytes" in r.out, r.out)
        d = stats(t, agent)
        t.eq("stats: limit after 3M", d.get("limit"), 3 * MiB)
        t.eq("stats: max_age_days after 7", d.get("max_age_days"), 7)
        config(t, agent, "--max-size", "5%")
        t.eq("stats: limit after 5%", stats(t, agent).get("limit"),
             st.f_blocks * st.f_frsize // 100 * 5)
        for bad in (["--max-size", "0"], ["--max-size", "101%"], ["--max-size", "0%"],
                    ["--max-size", "abc"], ["--max-size", "-5"], ["--max-size", "1X"],
                    ["--max-size", "99999999999999999999"], ["--max-age", "0"],
                    ["--max-age", "x"], ["--max-age", "36501"], ["--bogus"], ["--max-size"]):
            r = config(t, agent, *bad, rc=2)
            t.ok(f"{' '.join(bad)}: a message", r.err.strip() != "", r.err)
        d = stats(t, agent)
        t.eq("after the refusals: limit unchanged", d.get("limit"), st.f_blocks * st.f_frsize // 100 * 5)
        t.eq("after the refusals: max age unchanged", d.get("max_age_days"), 7)


@case("cache_size_bound_and_lru_order")
def _(bg):
    """with max-size 100 KiB, ten 16 KiB files fetched one a minute (moved clock): after every get
    the stored bytes stay within the limit; f0, fetched again after f5, is used recently and
    survives; the four least recently used (f1-f4) are evicted, with their keys; peerd answers
    404 for them, 200 for f0"""
    n, size = 10, 16 * KiB
    files = {f"f{i}.bin": size for i in range(n)}
    with Origin(files=files) as o:
        o, agent, t = started(bg, o)
        config(t, agent, "--max-size", "100K")
        clock = 0
        for i in list(range(6)) + [0] + list(range(6, n)):
            clock += 60
            set_clock(clock)
            fetch(t, agent, o, f"f{i}.bin")
            d = stats(t, agent)
            t.ok(f"after f{i}: {d.get('bytes')} bytes stored <= 100 KiB",
                 isinstance(d.get("bytes"), int) and d["bytes"] <= 100 * KiB)
        urls = sorted(e["url"] for e in listed(t, agent))
        want = sorted(o.url(f"/files/f{i}.bin") for i in (0, 5, 6, 7, 8, 9))
        t.eq("what is left", urls, want)
        d = stats(t, agent)
        t.eq("entries", d.get("entries"), 6)
        t.eq("keys", d.get("keys"), 6)
        t.eq("evictions", d.get("evictions"), 4)
        t.eq("evicted bytes", d.get("evicted_bytes"), 4 * size)
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            t.eq("peerd: evicted f1 is 404",
                 p.request("GET", q(o.url("/files/f1.bin"))).status, 404)
            r = p.request("GET", q(o.url("/files/f0.bin")))
            t.eq("peerd: f0 is 200", r.status, 200)
            t.eq("peerd: f0's bytes", hashlib.sha256(r.body).hexdigest(), o.sha("f0.bin"))
        r = t.ran(agent.run("cache", "verify"))
        t.eq("cache verify afterwards", r.rc, 0)


LRU_SIZE = 16 * KiB
LRU_TRIES = 5   # a window of uses that straddled a second boundary is tried again


def next_second():
    """Sleeps until just after the next whole second of the wall clock, so that what follows
    has a second of its own (checked afterwards from the store's own dates)."""
    now = time.time()
    time.sleep(1 - (now - int(now)) + 0.005)


def by_digest(o, names):
    """NAMES sorted by the SHA-256 of their bytes: with uses tied at one second, the order in
    which a store dated in seconds evicts them."""
    return sorted(names, key=lambda n: o.sha(n))


def last_used(t, agent):
    """{url: last_used} from cache list --json (unix seconds)."""
    return {e["url"]: e.get("last_used") for e in listed(t, agent)}


def left_after(t, agent, o, limit, names):
    """Lowers max-size to LIMIT and returns which of NAMES are still listed."""
    config(t, agent, "--max-size", str(limit))
    urls = {e["url"] for e in listed(t, agent)}
    return [n for n in names if o.url(f"/files/{n}") in urls]


@contextlib.contextmanager
def three_by_digest(bg, names):
    """An origin serving NAMES (LRU_SIZE bytes each). Yields (origin, checker, (X, Y, Z): NAMES
    in the order of their digests)."""
    with Origin(files={n: LRU_SIZE for n in names}) as o:
        o, _, t = started(bg, o)
        x, y, z = by_digest(o, names)
        t.note(f"X={x}, Y={y}, Z={z}")
        yield o, t, (x, y, z)


def in_one_second(bg, o, t, uses):
    """Runs USES(agent, out dir) in a fresh home until it returns (True, last_used) -- the uses
    fell within one second -- or LRU_TRIES homes were tried; (False, note) notes a miss.
    Returns (the last agent, the last last_used map, whether the uses fell within one second).
    A machine too loaded for a few gets to fit in one second (the sanitized build while other
    tests run) still checks the order of the uses across seconds; the order within one second
    is then unit_store's alone (its LRU cases set the nanoseconds themselves)."""
    done = False
    for attempt in range(LRU_TRIES):
        agent = Bgcopy(bg.exe, o.path(f"home{attempt}"))
        os.makedirs(o.path(f"out{attempt}"), exist_ok=True)
        done, used, note = uses(agent, o.path(f"out{attempt}"))
        if done:
            break
        t.note(note + (": again in a new home" if attempt + 1 < LRU_TRIES else
                       ": no more homes; the order across seconds is checked"))
    return agent, used, done


def expect_lru_keeps(t, agent, o, names, x, z):
    """Max-size of two entries keeps X and Z (Y, the least recently used, goes); of one keeps X."""
    t.eq("after max-size of two entries", left_after(t, agent, o, 2 * LRU_SIZE, names),
         sorted([x, z]))
    t.eq("after max-size of one entry", left_after(t, agent, o, LRU_SIZE, names), [x])


def got_ok(t, agent, o, name, out, what=None):
    """`get` of /files/NAME into OUT, exit status checked."""
    r = t.ran(agent.get(o.url(f"/files/{name}"), out))
    t.eq(f"get {what or name}: exit status", r.rc, 0)


@case("cache_lru_uses_within_one_second_in_order")
def _(bg):
    """X, Y, Z (X's digest sorts first) stored in that order and X fetched again, all within
    one second where the machine is fast enough (cache list shows one last_used for all;
    in_one_second tells what a loaded machine checks); lowering max-size to two entries
    evicts Y, the least recently used, not X; to one entry leaves X alone"""
    names = ["l0.bin", "l1.bin", "l2.bin"]
    # X sorts first by digest: were uses within a second tied, X would be evicted first.
    with three_by_digest(bg, names) as (o, t, (x, y, z)):

        def uses(agent, outdir):
            next_second()
            for i, n in enumerate([x, y, z, x]):
                got_ok(t, agent, o, n, os.path.join(outdir, f"{i}-{n}"))
            used = last_used(t, agent)
            return (len(used) == 3 and len(set(used.values())) == 1, used,
                    f"the uses spanned seconds {sorted(set(used.values()))}")
        agent, used, within = in_one_second(bg, o, t, uses)
        t.eq("the three keys are listed with a last_used", len(used), 3)
        if within:
            t.eq("the four uses fell within one second (one last_used for the three keys)",
                 len(set(used.values())), 1)
        expect_lru_keeps(t, agent, o, names, x, z)
        r = t.ran(agent.run("cache", "verify"))
        t.eq("cache verify afterwards", r.rc, 0)


@case("cache_lru_peer_use_folded_late_keeps_its_place")
def _(bg):
    """X, Y, Z (X's digest sorts first, Z's last) are stored; then within one second a peer
    fetches Z from bgcopy-peerd and the agent uses X (get) (as in_one_second allows); peerd
    reports its use later, when it stops.  Z's use, folded last, is still older than X's: max-size of two entries evicts
    Y, of one entry keeps X"""
    names = ["p0.bin", "p1.bin", "p2.bin"]
    # X sorts first by digest, Z last: were the two uses tied at one second, X would go.
    with three_by_digest(bg, names) as (o, t, (x, y, z)):

        def uses(agent, outdir):
            for n in (y, x, z):
                got_ok(t, agent, o, n, os.path.join(outdir, f"first-{n}"))
            with Peerd(bg, agent.home, workdir=o.dir) as p:
                next_second()
                r = p.request("GET", q(o.url(f"/files/{z}")))
                t.eq(f"peerd: {z} is 200", r.status, 200)
                got_ok(t, agent, o, x, os.path.join(outdir, f"again-{x}"), f"{x} again")
            used = last_used(t, agent)
            return (len(used) == 3 and used.get(o.url(f"/files/{x}")) == used.get(o.url(f"/files/{z}")),
                    used, f"the two uses spanned seconds ({used})")
        agent, used, within = in_one_second(bg, o, t, uses)
        t.eq("the three keys are listed with a last_used", len(used), 3)
        if within:
            t.eq("Z's peer use and X's local use fell within one second",
                 used.get(o.url(f"/files/{z}")), used.get(o.url(f"/files/{x}")))
        expect_lru_keeps(t, agent, o, names, x, z)


@case("cache_file_larger_than_limit_delivered_not_kept")
def _(bg):
    """with max-size 100 KiB a 300 KiB file is delivered whole (exit 0, right bytes) but not kept:
    its job document says cached false with the reason, cache list lacks it, what was stored
    stays, and stats count it as not kept"""
    with Origin(files={"big.bin": 300 * KiB, "small.bin": 10 * KiB}) as o:
        o, agent, t = started(bg, o)
        config(t, agent, "--max-size", "100K")
        fetch(t, agent, o, "small.bin")
        url, out = o.url("/files/big.bin"), o.path("out", "big.bin")
        r = t.ran(agent.get(url, out))
        t.eq("get of the big file: exit status", r.rc, 0)
        f = r.file0()
        t.eq("its sha256", f.get("sha256"), o.sha("big.bin"))
        t.eq("cached", f.get("cached"), False)
        t.ok("cache_note says why", "larger than the cache limit" in (f.get("cache_note") or ""),
             f.get("cache_note"))
        t.eq("cache_key", f.get("cache_key"), None)
        t.eq("what is listed", [e["url"] for e in listed(t, agent)], [o.url("/files/small.bin")])
        d = stats(t, agent)
        t.eq("not_kept", d.get("not_kept"), 1)
        t.eq("stored bytes", d.get("bytes"), 10 * KiB)
        t.ok("store.mdb holds no copy of it", d.get("store_file_bytes", 0) < 300 * KiB,
             d.get("store_file_bytes"))
        r = t.ran(agent.get(o.url("/files/small.bin"), o.path("out", "s2.bin")))
        t.eq("a small file after: cached", r.file0().get("cached"), True)


@case("cache_max_age_expiry_with_clock")
def _(bg):
    """max age 90 days since the origin last confirmed a key: a.bin fetched at day 0, copy.bin
    (same bytes) at day 50, b.bin at day 80; at day 91 peerd answers 404 for a.bin but 200 for
    copy.bin, cache gc drops a.bin's key and keeps the shared content for copy.bin; at day 141
    the content goes with its last key"""
    with Origin(files={"a.bin": 20 * KiB, "b.bin": 20 * KiB}) as o:
        o, agent, t = started(bg, o)
        o.data["copy.bin"] = o.data["a.bin"]
        with open(o.file_path("copy.bin"), "wb") as f:
            f.write(o.data["a.bin"])
        set_clock(0)
        fetch(t, agent, o, "a.bin")
        set_clock(50 * DAY)
        fetch(t, agent, o, "copy.bin")
        set_clock(80 * DAY)
        fetch(t, agent, o, "b.bin")
        set_clock(91 * DAY)
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            t.eq("day 91: peerd a.bin", p.request("GET", q(o.url("/files/a.bin"))).status, 404)
            t.eq("day 91: peerd copy.bin", p.request("GET", q(o.url("/files/copy.bin"))).status,
                 200)
        r = t.ran(agent.run("cache", "gc"))
        t.eq("day 91: cache gc exit status", r.rc, 0)
        t.ok("day 91: gc says one key expired", "expired 1 keys (0 entries" in r.out, r.out)
        left = {e["url"]: e["sha256"] for e in listed(t, agent)}
        t.eq("day 91: keys left", sorted(left),
             sorted([o.url("/files/copy.bin"), o.url("/files/b.bin")]))
        t.eq("day 91: copy.bin still names the shared content",
             left.get(o.url("/files/copy.bin")), o.sha("a.bin"))
        t.eq("day 91: entries", stats(t, agent).get("entries"), 2)
        set_clock(141 * DAY)
        r = t.ran(agent.run("cache", "gc"))
        t.ok("day 141: gc says one key and its entry expired", "expired 1 keys (1 entries" in r.out,
             r.out)
        t.eq("day 141: keys left", [e["url"] for e in listed(t, agent)], [o.url("/files/b.bin")])
        d = stats(t, agent)
        t.eq("day 141: entries", d.get("entries"), 1)
        t.eq("day 141: expired keys counted", d.get("expired"), 2)


@case("cache_clear_empties_it")
def _(bg):
    """cache clear removes every entry and key (list empty, stats 0 entries and bytes, peerd 404);
    the outputs and the job records stay"""
    with Origin(files={"a.bin": 20 * KiB, "b.bin": 30 * KiB}) as o:
        o, agent, t = started(bg, o)
        fetch(t, agent, o, "a.bin")
        fetch(t, agent, o, "b.bin")
        r = t.ran(agent.run("cache", "clear"))
        t.eq("cache clear: exit status", r.rc, 0)
        t.ok("it says what went", "removed 2 entries (51200 bytes) and 2 keys" in r.out, r.out)
        t.eq("list", listed(t, agent), [])
        d = stats(t, agent)
        t.eq("entries", d.get("entries"), 0)
        t.eq("bytes", d.get("bytes"), 0)
        t.eq("keys", d.get("keys"), 0)
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            t.eq("peerd a.bin", p.request("GET", q(o.url("/files/a.bin"))).status, 404)
        t.eq("outputs stay", os.path.getsize(o.path("out", "a.bin")), 20 * KiB)
        r = t.ran(agent.run("list", "--all", "--json"))
        t.eq("the jobs stay", len(r.doc or []), 2)


@case("cache_compact_shrinks_and_refuses_while_open")
def _(bg):
    """after two of three 4 MiB entries are removed, store.mdb keeps its size; cache compact
    refuses while bgcopy-peerd has the store open (exit 3, naming its pid and name) and changes
    nothing; once peerd stops it rewrites the store to under half its size, and the entry left
    is intact (verify, peerd)"""
    with Origin(files={f"m{i}.bin": 4 * MiB for i in range(3)}) as o:
        o, agent, t = started(bg, o)
        for i in range(3):
            fetch(t, agent, o, f"m{i}.bin")
        for i in range(2):
            t.eq(f"cache rm m{i}", t.ran(agent.run("cache", "rm", o.url(f"/files/m{i}.bin"))).rc, 0)
        t.eq("cache gc", t.ran(agent.run("cache", "gc")).rc, 0)
        store = os.path.join(agent.home, "store.mdb")
        before = os.path.getsize(store)
        t.ok(f"store.mdb still holds the freed pages ({before} bytes)", before > 12 * MiB)
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            r = t.ran(agent.run("cache", "compact"))
            t.eq("compact with peerd running: exit status", r.rc, 3)
            t.ok("the message names peerd's pid", str(p.proc.pid) in r.err, r.err)
            t.ok("the message names the program", "bgcopy-peerd" in r.err, r.err)
            t.eq("store.mdb unchanged", os.path.getsize(store), before)
        r = t.ran(agent.run("cache", "compact"))
        t.eq("compact: exit status", r.rc, 0)
        after = os.path.getsize(store)
        t.ok(f"store.mdb shrank from {before} to {after} bytes (< half)", after < before // 2,
             r.out)
        t.ok("compact says the sizes", f"from {before} to {after} bytes" in r.out, r.out)
        r = t.ran(agent.run("cache", "verify"))
        t.eq("verify after compact", r.rc, 0)
        t.ok("one entry verified", "verified 1 entries (4194304 bytes)" in r.out, r.out)
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            r = p.request("GET", q(o.url("/files/m2.bin")))
            t.eq("peerd serves the entry after compact", hashlib.sha256(r.body).hexdigest(),
                 o.sha("m2.bin"))
        fetch(t, agent, o, "m0.bin")
        t.eq("a new get after compact is stored", len(listed(t, agent)), 2)


@case("cache_pinned_until_job_completed")
def _(bg):
    """content of a job that is TRANSFERRED but not completed is pinned: a limit of 1 byte evicts
    everything else but keeps it (gc says it is over the limit); once the job is completed, gc
    evicts it"""
    with Origin(files={"p.bin": 64 * KiB, "q.bin": 64 * KiB}) as o:
        o, agent, t = started(bg, o)
        fetch(t, agent, o, "q.bin")
        r = t.ran(agent.run("create", "--name", "pin"))
        job = r.out.strip()
        t.eq("add", t.ran(agent.run("add", job, o.url("/files/p.bin"), o.path("out", "p.bin"))).rc, 0)
        daemon = subprocess.Popen(agent.argv("daemon"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            t.eq("resume", t.ran(agent.run("resume", job)).rc, 0)
            t.eq("wait", t.ran(agent.run("wait", job, "--timeout", "60")).rc, 0)
        finally:
            daemon.terminate()
            daemon.wait(timeout=20)
        config(t, agent, "--max-size", "1")
        t.eq("only the pinned content is left", [e["url"] for e in listed(t, agent)],
             [o.url("/files/p.bin")])
        r = t.ran(agent.run("cache", "gc"))
        t.ok("gc says it is over the limit", "over the limit" in r.out, r.out)
        t.eq("complete", t.ran(agent.run("complete", job)).rc, 0)
        r = t.ran(agent.run("cache", "gc"))
        t.eq("after complete: nothing left", listed(t, agent), [])


@case("cache_hits_and_misses_counted")
def _(bg):
    """node B gets h.bin from A's peerd (a hit for both: A served it, B found it) and n.bin, which
    A lacks (a miss for both); A's peerd reports to A's store (cache stats after peerd stops);
    B's counters come from its downloads"""
    with Origin(files={"h.bin": 50 * KiB, "n.bin": 10 * KiB}) as o:
        o, a, t = started(bg, o)
        b = Bgcopy(bg.exe, o.path("homeB"))
        fetch(t, a, o, "h.bin")
        with Peerd(bg, a.home, workdir=o.dir) as p:
            for name in ("h.bin", "n.bin"):
                r = t.ran(b.get(o.url(f"/files/{name}"), o.path("out", "B-" + name),
                                extra=["--peer", f"127.0.0.1:{p.port}"]))
                t.eq(f"B get {name}: exit status", r.rc, 0)
                t.eq(f"B get {name}: sha256", r.file0().get("sha256"), o.sha(name))
        da, db = stats(t, a), stats(t, b)
        t.eq("A: local hits (served)", (da.get("hits") or {}).get("local"), 1)
        t.ok("A: local misses (n.bin not found)", (da.get("misses") or {}).get("local", 0) >= 1,
             da.get("misses"))
        t.eq("B: peer hits", (db.get("hits") or {}).get("peer"), 1)
        t.eq("B: peer misses", (db.get("misses") or {}).get("peer"), 1)


@case("cache_eviction_during_peer_transfer")
def _(bg):
    """a slow client reads a 48 MiB entry from peerd while the agent evicts it (cache config
    --max-size 1); the client gets either every byte right or a cut connection after a correct
    prefix, never a wrong byte; peerd then answers 404"""
    size = 48 * MiB
    with Origin(files={"e.bin": size}) as o:
        o, agent, t = started(bg, o)
        url = fetch(t, agent, o, "e.bin")
        data = o.data["e.bin"]
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
            s.sendall(f"GET {q(url)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            got = bytearray()
            while b"\r\n\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            head, _, body = bytes(got).partition(b"\r\n\r\n")
            t.ok("200 to the slow client", head.startswith(b"HTTP/1.1 200"), head[:100])
            body = bytearray(body)
            # Read a little, then evict while the transfer is under way.
            while len(body) < 2 * MiB:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
            config(t, agent, "--max-size", "1")
            t.eq("evicted: nothing listed", listed(t, agent), [])
            while True:
                try:
                    chunk = s.recv(1 << 20)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    break
                body += chunk
            s.close()
            t.ok(f"received {len(body)} bytes: a prefix of the content (no wrong byte)",
                 bytes(body) == data[:len(body)])
            t.ok("either complete or cut", len(body) == size or len(body) < size)
            print(f"  (the stream {'completed' if len(body) == size else 'was cut'} after "
                  f"{len(body)} bytes)")
            t.eq("peerd after eviction", p.request("GET", q(url)).status, 404)


@case("set_peer_caching_modes_ask_and_offer")
def _(bg):
    """node A holds four files and serves them; on node B one daemon job per set-peer-caching mode
    (daemon --peer A): the document shows the mode; 'client' and 'both' take their bytes from A,
    'off' and 'server' from the origin; then B's own peerd serves what 'server' and 'both'
    stored and answers 404 for 'off' and 'client' (kept private); a bad mode exits 2"""
    modes = ("off", "client", "server", "both")
    size = 200 * KiB
    with Origin(files={f"{m}.bin": size for m in modes}) as o:
        o, a, t = started(bg, o)
        b = Bgcopy(bg.exe, o.path("homeB"))
        urls = {m: fetch(t, a, o, f"{m}.bin") for m in modes}
        for d in ("pa", "pb"):
            os.makedirs(o.path(d), exist_ok=True)
        with Peerd(bg, a.home, workdir=o.path("pa")) as pa:
            jobs = {}
            for m in modes:
                jobs[m] = new_job(t, b, [(urls[m], o.path("out", f"B-{m}.bin"))], "--name", m)
                if jobs[m] is None:
                    return
                cmd(t, b, "set-peer-caching", jobs[m], m)
            cmd(t, b, "set-peer-caching", jobs["off"], "sometimes", rc=2)
            docs = {}
            with Daemon(t, b, o, "--peer", f"127.0.0.1:{pa.port}", label="daemonB"):
                for m in modes:
                    cmd(t, b, "resume", jobs[m])
                for m in modes:
                    docs[m], _ = poll_state(t, b, jobs[m], ("TRANSFERRED", "ERROR"), 30, label=m)
        for m in modes:
            f0 = ((docs[m] or {}).get("files") or [{}])[0]
            t.eq(f"{m}: peer_caching in the document", (docs[m] or {}).get("peer_caching"), m)
            t.eq(f"{m}: state", (docs[m] or {}).get("state"), "TRANSFERRED")
            from_peer = m in ("client", "both")
            t.eq(f"{m}: bytes_from_peers", f0.get("bytes_from_peers"), size if from_peer else 0)
            t.eq(f"{m}: bytes_from_origin", f0.get("bytes_from_origin"), 0 if from_peer else size)
            t.eq(f"{m}: sha256", f0.get("sha256"), o.sha(f"{m}.bin"))
        with Peerd(bg, b.home, workdir=o.path("pb")) as pb:
            for m in modes:
                r = pb.request("GET", q(urls[m]))
                want = 200 if m in ("server", "both") else 404
                t.eq(f"B's peerd answers for the '{m}' job's file", r.status, want)
                if want == 200:
                    t.ok(f"  ... with the file's bytes", hashlib.sha256(r.body).hexdigest() == o.sha(f"{m}.bin"))


@case("peer_entry_stale_after_origin_changed")
def _(bg):
    """node A stores v.bin; the origin then publishes new bytes under the same URL (new
    Last-Modified and ETag); node B asking A's peerd finds A's entry stale against the origin's
    current validators, never takes A's bytes, and gets the new file from the origin"""
    with Origin(files={"v.bin": 150 * KiB}) as o:
        o, a, t = started(bg, o)
        b = Bgcopy(bg.exe, o.path("homeB"))
        url = fetch(t, a, o, "v.bin")
        old = o.data["v.bin"]
        o.put_file("v.bin", os.urandom(150 * KiB), mtime=time.time() + 120)
        with Peerd(bg, a.home, workdir=o.dir) as p:
            r = t.ran(b.get(url, o.path("out", "B-v.bin"), extra=["--peer", f"127.0.0.1:{p.port}"]))
        f0 = (r.doc or {}).get("files", [{}])[0] if isinstance(r.doc, dict) else {}
        t.eq("B get: exit status", r.rc, 0)
        t.eq("B got the new bytes", f0.get("sha256"), o.sha("v.bin"))
        t.ok("... not A's old ones", f0.get("sha256") != hashlib.sha256(old).hexdigest())
        t.eq("bytes_from_peers", f0.get("bytes_from_peers"), 0)
        t.eq("bytes_from_origin", f0.get("bytes_from_origin"), 150 * KiB)
        t.eq("peer lookups (result)", [x.get("result") for x in f0.get("peer_lookups") or []], ["stale"])


@case("content_fetched_with_credentials_or_cookie_not_offered")
def _(bg):
    """a daemon job with set-credentials and a get with a Cookie header store their content marked
    private, and peerd answers 404 for both; a plain get's content is served"""
    with Origin(files={"cred.bin": 30 * KiB, "cookie.bin": 20 * KiB, "pub.bin": 10 * KiB}) as o:
        o, a, t = started(bg, o)
        pw = o.path("pw")
        with open(pw, "w") as f:
            f.write("secret\n")
        os.chmod(pw, 0o600)
        cred = o.url("/files/cred.bin")
        job = new_job(t, a, [(cred, o.path("out", "cred.bin"))])
        if job is None:
            return
        cmd(t, a, "set-credentials", job, "user", "--password-file", pw)
        with Daemon(t, a, o):
            cmd(t, a, "resume", job)
            doc, _ = poll_state(t, a, job, ("TRANSFERRED", "ERROR"), 30)
        t.eq("credentials job: state", (doc or {}).get("state"), "TRANSFERRED")
        r = t.ran(a.get(o.url("/files/cookie.bin"), o.path("out", "cookie.bin"),
                        extra=["--header", "Cookie: session=1"]))
        t.eq("get with a Cookie: exit status", r.rc, 0)
        pub = fetch(t, a, o, "pub.bin")
        s = t.ran(a.run("cache", "list", "--json"))
        private = {e.get("url"): e.get("private") for e in (s.doc or []) if isinstance(e, dict)}
        t.eq("cache list: private flags", private,
             {cred: True, o.url("/files/cookie.bin"): True, pub: False})
        with Peerd(bg, a.home, workdir=o.dir) as p:
            for url, want in ((cred, 404), (o.url("/files/cookie.bin"), 404), (pub, 200)):
                t.eq(f"peerd answer for {url.rsplit('/', 1)[1]}", p.request("GET", q(url)).status, want)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
