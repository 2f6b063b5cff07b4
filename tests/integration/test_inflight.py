#!/usr/bin/env python3
"""Integration cases for downloads in progress as the store shows them: the piece digests of
the chunks a get commits, its record in the "inflight" database (committed bytes, incarnation,
final tombstone), the lock that tells a live writer, and the fetch policy recorded with keys.
The store is read by tests/tools/inflight_dump (INFLIGHT_DUMP), read-only, as peerd reads it.

Usage: test_inflight.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_inflight.py CASE)
       test_inflight.py --list                    prints the case names, one a line
       test_inflight.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Exit 0 when every check passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the
temp dirs."""

import errno
import fcntl
import glob
import hashlib
import json
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import (SKIPPED, Daemon, background_result, case_registry, expect_transferred,  # noqa: E402
                    main, started, stop_background, wait_partial)
from origin import MiB, Origin  # noqa: E402

CHUNK = 64 * 4096 - 16     # STORE_CHUNK_BYTES: a piece is a store chunk
BIG_SIZE = 8 * MiB         # served at 2 MiB/s: about 4 s
BIG_LOC = "location = /files/big.bin { limit_rate 2m; }"

CASES, case = case_registry()


def dump_exe():
    exe = os.environ.get("INFLIGHT_DUMP")
    if not exe:
        here = os.path.dirname(os.environ.get("BGCOPY", ""))
        exe = os.path.join(here, "inflight_dump")
    return exe if os.access(exe, os.X_OK) else None


def dump(t, agent, url):
    """What the store says of URL (inflight_dump's JSON), or None after a failed check."""
    p = subprocess.run([dump_exe(), agent.home, url], capture_output=True, text=True, timeout=30)
    if not t.ok("inflight_dump ran", p.returncode == 0, f"exit {p.returncode}: {p.stderr.strip()[:300]}"):
        return None
    return json.loads(p.stdout)


def fetch_fields(s):
    """The X-Bgcopy-Fetch dictionary as {member: value}, or None."""
    if s is None:
        return None
    return dict(m.strip().split("=", 1) for m in s.split(","))


def lock_files(agent):
    return sorted(glob.glob(os.path.join(agent.home, "inflight", "*.lock")))


def lock_held(path):
    """True when someone holds the lock (flock LOCK_SH|LOCK_NB fails with EWOULDBLOCK)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # releases it when taken
    return False


def piece(data, i):
    return hashlib.sha256(data[i * CHUNK:(i + 1) * CHUNK]).hexdigest()


def streamed_pieces(committed):
    """Digests a store holds for a download streaming in: one per full committed chunk but
    the last, whose digest is stored with the next commit (the hashing thread computes it
    while the next chunk arrives)."""
    return max(0, committed // CHUNK - 1)


def check_pieces(t, what, got, data, count):
    t.eq(f"{what}: number of digests", len(got), count)
    bad = [i for i, d in enumerate(got[:count]) if d != piece(data, i)]
    t.eq(f"{what}: digests that are not SHA-256 of their chunk's bytes", bad, [])


def check_final(t, agent, url, data):
    """After a finished get: the record is the final tombstone of the content, and the content
    has a complete piece list (every chunk, the short last one included)."""
    d = dump(t, agent, url)
    if d is None:
        return None
    f = d.get("inflight") or {}
    sha = hashlib.sha256(data).hexdigest()
    t.eq("record after the end: (state, sha256, committed, total)",
         (f.get("state"), f.get("sha256"), f.get("committed"), f.get("total")),
         ("final", sha, len(data), len(data)))
    t.eq("key after the end: sha256", (d.get("key") or {}).get("sha256"), sha)
    check_pieces(t, "content piece list", d.get("content_pieces") or [], data, -(-len(data) // CHUNK))
    t.eq("content piece list complete", d.get("content_complete"), True)
    return d


def start_slow_get(t, o, agent, url, out, at_least):
    p = agent.popen_get(url, out, log_prefix=o.path("first-get"))
    size = wait_partial(t, o, p, out, "first-get", at_least)
    return p, size


@case("inflight_slow_get_publishes_committed_pieces_under_lock")
def _(bg):
    """during a slow get the store holds a record of the download (state origin) whose
    committed grows in whole chunks and never passes the blob's bytes, a digest per committed
    chunk equal to SHA-256 of the file's bytes there, and a lock the getter holds; at the end
    the record is the final tombstone, the content has a complete piece list, the lock is free"""
    if dump_exe() is None:
        return SKIPPED
    with Origin(files={"big.bin": BIG_SIZE}, locations=BIG_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/big.bin"), o.path("out", "big.bin")
        data = o.data["big.bin"]
        t0 = time.monotonic()
        p, size = start_slow_get(t, o, agent, url, out, MiB)
        try:
            if size is None:
                return
            seen = []
            for _ in range(4):
                d = dump(t, agent, url)
                if d is None:
                    return
                seen.append(d)
                time.sleep(0.4)
            locks = lock_files(agent)
            t.eq("lock files under HOME/inflight", len(locks), 1)
            if locks:
                t.eq("the lock is held while the get runs", lock_held(locks[0]), True)
                t.eq("the lock file's mode", oct(os.stat(locks[0]).st_mode & 0o777), "0o600")
            t.eq("HOME/inflight mode", oct(os.stat(os.path.join(agent.home, "inflight")).st_mode & 0o777),
                 "0o700")
        finally:
            if p.poll() is None:
                p.wait(timeout=60)
            stop_background(p)
        r = t.ran(background_result(p, o, "first-get", t0))
        t.eq("the get's exit", r.rc, 0)
        recs = [d.get("inflight") or {} for d in seen]
        t.eq("records seen: states", sorted({f.get("state") for f in recs}), ["origin"])
        gens = {f.get("gen") for f in recs}
        t.ok("one incarnation, non-zero", len(gens) == 1 and 0 not in gens and None not in gens, f"gens {gens}")
        committed = [f.get("committed", -1) for f in recs]
        t.ok(f"committed grows ({committed})", committed == sorted(committed) and committed[-1] > committed[0])
        t.eq("committed values that are not a multiple of the chunk size",
             [c for c in committed if c % CHUNK != 0], [])
        t.eq("records whose committed passes the blob's bytes",
             [(f.get("committed"), d.get("blob_bytes")) for f, d in zip(recs, seen)
              if f.get("committed", 0) > d.get("blob_bytes", 0)], [])
        t.eq("records' total", {f.get("total") for f in recs}, {BIG_SIZE})
        t.ok("records carry the origin's ETag", all(f.get("etag") for f in recs), f"{recs[-1]}")
        t.eq("records' final_url (silent redirect policy)", {f.get("final_url") for f in recs}, {None})
        for f, d in zip(recs, seen):
            check_pieces(t, f"pieces at committed {f.get('committed')}", d.get("pieces") or [], data,
                         streamed_pieces(f.get("committed", 0)))
        expect_transferred(t, r, out, o.sha("big.bin"), BIG_SIZE, remote_url=url, json_doc=False)
        end = check_final(t, agent, url, data)
        if end is not None:
            t.eq("final record: same incarnation", (end.get("inflight") or {}).get("gen"), recs[-1].get("gen"))
        locks = lock_files(agent)
        t.ok("the lock is free after the end", locks and not lock_held(locks[0]), f"locks {locks}")


@case("inflight_kill9_record_within_store_lock_free_resume_keeps_gen")
def _(bg):
    """a get killed with SIGKILL mid-way leaves a record whose committed is within the bytes
    the store holds and a free lock; the resumed get keeps the incarnation (same prefix) and
    ends with the final tombstone and a complete piece list"""
    if dump_exe() is None:
        return SKIPPED
    with Origin(files={"big.bin": BIG_SIZE}, locations=BIG_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/big.bin"), o.path("out", "big.bin")
        data = o.data["big.bin"]
        p, size = start_slow_get(t, o, agent, url, out, 2 * MiB)
        stop_background(p)
        if size is None:
            return
        d = dump(t, agent, url)
        if d is None:
            return
        f = d.get("inflight") or {}
        t.eq("record after the kill: state", f.get("state"), "origin")
        t.ok(f"committed {f.get('committed')} <= bytes of the blob in the store {d.get('blob_bytes')}",
             0 < f.get("committed", 0) <= d.get("blob_bytes", 0))
        check_pieces(t, "pieces after the kill", d.get("pieces") or [], data,
                     streamed_pieces(f.get("committed", 0)))
        locks = lock_files(agent)
        t.ok("the lock is free after the kill", len(locks) == 1 and not lock_held(locks[0]), f"locks {locks}")
        r = t.ran(agent.get(url, out, timeout=90))
        expect_transferred(t, r, out, o.sha("big.bin"), BIG_SIZE, remote_url=url)
        end = check_final(t, agent, url, data)
        if end is not None:
            t.eq("the resume kept the incarnation", (end.get("inflight") or {}).get("gen"), f.get("gen"))


@case("inflight_no_cache_get_writes_no_record")
def _(bg):
    """a --no-cache get, slow or small, writes no record, no key and no lock"""
    if dump_exe() is None:
        return SKIPPED
    with Origin(files={"big.bin": 2 * MiB, "a.bin": 1000}, locations=BIG_LOC) as o:
        o, agent, t = started(bg, o)
        for name in ("big.bin", "a.bin"):
            os.makedirs(o.path("out", name + ".d"))
            url, out = o.url(f"/files/{name}"), o.path("out", name + ".d", name)
            r = t.ran(agent.get(url, out, extra=("--no-cache",), timeout=90))
            expect_transferred(t, r, out, o.sha(name), len(o.data[name]), remote_url=url)
            d = dump(t, agent, url)
            if d is not None:
                t.eq(f"{name}: (record, key)", (d.get("inflight"), d.get("key")), (None, None))
        t.eq("lock files", lock_files(agent), [])


@case("inflight_private_or_too_big_get_writes_no_record")
def _(bg):
    """a get with credentials (an Authorization header: private, never offered to peers) and a
    get of a file larger than the store's limit write no record and take no lock"""
    if dump_exe() is None:
        return SKIPPED
    with Origin(files={"big.bin": 2 * MiB, "p.bin": 2 * MiB}, locations=BIG_LOC) as o:
        o, agent, t = started(bg, o)
        r = t.ran(agent.run("cache", "config", "--max-size", "1M"))
        t.eq("cache config --max-size 1M: exit", r.rc, 0)
        for name, extra in (("big.bin", ()), ("p.bin", ("--header", "Authorization: Bearer x"))):
            os.makedirs(o.path("out", name + ".d"))
            url, out = o.url(f"/files/{name}"), o.path("out", name + ".d", name)
            r = t.ran(agent.get(url, out, extra=extra, timeout=90))
            t.eq(f"{name}: get exit", r.rc, 0)
            d = dump(t, agent, url)
            if d is not None:
                t.eq(f"{name}: record", d.get("inflight"), None)
        t.eq("lock files", lock_files(agent), [])


@case("inflight_key_fetch_policy_follows_security_flags")
def _(bg):
    """the key and the final record carry the fetch policy of the job: the redirect policy
    of --security-flags (report: the record names the URL that answered), silent by default"""
    if dump_exe() is None:
        return SKIPPED
    with Origin(files={"a.bin": 300_000, "b.bin": 1000}) as o:
        o, agent, t = started(bg, o)
        for name, flags, redirect in (("a.bin", 0x100, "report"), ("b.bin", None, "silent")):
            os.makedirs(o.path("out", name + ".d"))
            url, out = o.url(f"/files/{name}"), o.path("out", name + ".d", name)
            r = t.ran(agent.get(url, out, flags=flags))
            t.eq(f"{name}: get exit", r.rc, 0)
            d = check_final(t, agent, url, o.data[name])
            if d is None:
                continue
            want = {"ignore": "0", "crl": "?0", "ca": "system", "redirect": redirect, "h2h": "?0"}
            t.eq(f"{name}: key fetch policy", fetch_fields((d.get("key") or {}).get("fetch")), want)
            t.eq(f"{name}: record fetch policy", fetch_fields((d.get("inflight") or {}).get("fetch")), want)
            t.eq(f"{name}: record final_url", (d.get("inflight") or {}).get("final_url"),
                 url if redirect == "report" else None)


@case("inflight_identical_content_without_list_gets_the_download_digests")
def _(bg):
    """content stored without a piece list (as an older build stored it: tests/tools/store_fill)
    gets the digests of a download of identical bytes under another URL, which keeps no copy"""
    fill = os.path.join(os.path.dirname(dump_exe() or ""), "store_fill")
    if dump_exe() is None or not os.access(fill, os.X_OK):
        return SKIPPED
    size = 1000
    data = bytes(size)  # store_fill's entry 0: its index (0) in 8 bytes, then zeros
    with Origin(files={"z.bin": data}) as o:
        o, agent, t = started(bg, o)
        old = "https://fill.example/0"
        p = subprocess.run([fill, agent.home, "1", str(size)], capture_output=True, text=True, timeout=60)
        t.eq("store_fill exit", p.returncode, 0)
        d = dump(t, agent, old)
        if d is None:
            return
        t.eq("stored content: (sha256, pieces, complete)",
             ((d.get("key") or {}).get("sha256"), d.get("content_pieces"), d.get("content_complete")),
             (hashlib.sha256(data).hexdigest(), [], False))
        url, out = o.url("/files/z.bin"), o.path("out", "z.bin")
        r = t.ran(agent.get(url, out))
        expect_transferred(t, r, out, o.sha("z.bin"), size, remote_url=url)
        check_final(t, agent, url, data)
        d = dump(t, agent, old)
        if d is not None:
            check_pieces(t, "the older key's content piece list", d.get("content_pieces") or [], data, 1)
            t.eq("the older key's content piece list complete", d.get("content_complete"), True)



@case("daemon_fills_piece_lists_of_older_content_while_idle")
def _(bg):
    """content stored without piece lists (as an older build stored it: tests/tools/store_fill)
    gets complete, correct lists from an idle daemon, with no job and no cache verify"""
    fill = os.path.join(os.path.dirname(dump_exe() or ""), "store_fill")
    if dump_exe() is None or not os.access(fill, os.X_OK):
        return SKIPPED
    n, size = 40, CHUNK - 5   # one chunk each (store_fill's limit); 40 idle steps at least
    with Origin(files={"unused.bin": b"x"}) as o:
        o, agent, t = started(bg, o)
        os.makedirs(agent.home, exist_ok=True)
        p = subprocess.run([fill, agent.home, str(n), str(size)], capture_output=True, text=True,
                           timeout=60)
        t.eq("store_fill exit", p.returncode, 0)
        urls = [f"https://fill.example/{i}" for i in range(n)]
        before = [dump(t, agent, u) for u in urls]
        t.eq("before: digests per entry", [len((d or {}).get("content_pieces") or []) for d in before],
             [0] * n)
        with Daemon(t, agent, o):
            deadline, got = time.monotonic() + 30, []
            while time.monotonic() < deadline:
                got = [dump(t, agent, u) for u in urls]
                if all((d or {}).get("content_complete") for d in got):
                    break
                time.sleep(0.2)
        t.eq("lists complete", [(d or {}).get("content_complete") for d in got], [True] * n)
        for i, d in enumerate(got):
            data = i.to_bytes(8, "little") + bytes(size - 8)
            t.eq(f"entry {i}: sha256", ((d or {}).get("key") or {}).get("sha256"),
                 hashlib.sha256(data).hexdigest())
            check_pieces(t, f"entry {i}'s piece list", (d or {}).get("content_pieces") or [], data, 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
