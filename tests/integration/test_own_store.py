#!/usr/bin/env python3
"""Integration cases for the store serving its own node: `bgcopy get` looks a file up in
its own store (under the file's current remote URL) before peers and the origin, and asks
the origin whether the copy held is current (RFC 9110 section 13.1: If-None-Match with a
strong ETag, If-Modified-Since only with a strong date); a 304 (section 15.4.5) writes the
file from the store. With --sha256, content of that digest is used with no request at all.
The nginx access log is the evidence throughout.

Usage: test_own_store.py CASE [PATH/TO/bgcopy]    (or BGCOPY=PATH/TO/bgcopy test_own_store.py CASE)
       test_own_store.py --list                   prints the case names, one a line
       test_own_store.py --all [PATH/TO/bgcopy]   runs every case, prints a summary

Exit 0 when every check passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the
temp dirs."""

import base64
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import (case_registry, cmd, Daemon, expect_error, expect_transferred, field, main, new_job,
                    poll_state, started, store)  # noqa: E402
from origin import Origin, sha256_bytes  # noqa: E402

SIZE = 700_000  # three chunks of the store (262,128 bytes each), the last one partial

CASES, case = case_registry()


def out(o, i, name):
    """OUT/I/NAME, its folder made: each get of a case writes a file of its own."""
    os.makedirs(o.path("out", str(i)), exist_ok=True)
    return o.path("out", str(i), name)


def gets(o, uri):
    return [x for x in o.requests(uri) if x["method"] == "GET"]


def answers(recs):
    """(status, If-None-Match sent, body bytes) of each request."""
    return [(x["status"], x["if_none_match"], x["body_bytes_sent"]) for x in recs]


def own_stats(t, agent):
    r = t.ran(agent.run("cache", "stats", "--json"))
    return field(r.doc, "store")


def expect_from_cache(t, r, size):
    t.eq("files[0] bytes (from_cache, from_origin, from_peers)",
         (field(r.doc, "files", 0, "bytes_from_cache"), field(r.doc, "files", 0, "bytes_from_origin"),
          field(r.doc, "files", 0, "bytes_from_peers")), (size, 0, 0))
    t.eq("job bytes_from_cache", field(r.doc, "bytes_from_cache"), size)


@case("own_store_second_get_revalidates_304_and_writes_from_store")
def _(bg):
    """the second get of a URL asks the origin with If-None-Match: the stored ETag; nginx answers
    304 with no body; the output is identical and comes from the store; cache stats counts one
    revalidation"""
    with Origin(files={"a.bin": SIZE}) as o:
        o, agent, t = started(bg, o)
        url = o.url("/files/a.bin")
        r1 = t.ran(agent.get(url, out(o, 1, "a.bin")))
        expect_transferred(t, r1, out(o, 1, "a.bin"), o.sha("a.bin"), SIZE)
        t.eq("first get: bytes_from_cache", field(r1.doc, "files", 0, "bytes_from_cache"), 0)
        r2 = t.ran(agent.get(url, out(o, 2, "a.bin")))
        expect_transferred(t, r2, out(o, 2, "a.bin"), o.sha("a.bin"), SIZE, cache_key=url)
        expect_from_cache(t, r2, SIZE)
        recs = gets(o, "/files/a.bin")
        etag = recs[0]["etag"] if recs else None
        t.eq("answers (status, If-None-Match, body bytes)", answers(recs), [(200, None, SIZE), (304, etag, 0)])
        t.eq("cache stats: own store", own_stats(t, agent), {"hits": 0, "revalidated": 1, "misses": 1})
        store(t, agent, {url: o.data["a.bin"]})


@case("own_store_file_changed_on_origin_200_new_content_stored")
def _(bg):
    """the file changes on the origin (new bytes and mtime, so a new ETag): the conditional request
    gets a 200 with the new body, which is written and stored"""
    with Origin(files={"a.bin": SIZE}) as o:
        o, agent, t = started(bg, o)
        url = o.url("/files/a.bin")
        t.eq("first get: exit", t.ran(agent.get(url, out(o, 1, "a.bin"))).rc, 0)
        old = os.stat(o.file_path("a.bin")).st_mtime
        o.put_file("a.bin", os.urandom(SIZE), mtime=int(old) - 3600)
        r = t.ran(agent.get(url, out(o, 2, "a.bin")))
        expect_transferred(t, r, out(o, 2, "a.bin"), o.sha("a.bin"), SIZE)
        t.eq("bytes (from_cache, from_origin)", (field(r.doc, "files", 0, "bytes_from_cache"),
                                               field(r.doc, "files", 0, "bytes_from_origin")), (0, SIZE))
        recs = gets(o, "/files/a.bin")
        t.eq("answers (status, If-None-Match sent, body bytes)",
             [(s, inm is not None, b) for s, inm, b in answers(recs)], [(200, False, SIZE), (200, True, SIZE)])
        t.eq("cache stats: own store", own_stats(t, agent), {"hits": 0, "revalidated": 0, "misses": 2})
        store(t, agent, {url: o.data["a.bin"]})


@case("own_store_report_redirect_misses_under_original_hits_with_cache_key_both")
def _(bg):
    """under ALLOW_REPORT the content is stored under the final URL, so a second get of the
    original URL misses its own store (as BITS): a full 200 again. With --cache-key both it is
    found under the original URL too: a 304"""
    with Origin(files={"a.bin": SIZE}, locations="location = /latest { return 302 @BASE@/files/a.bin; }") as o:
        o, agent, t = started(bg, o)
        url, final = o.url("/latest"), o.url("/files/a.bin")
        for i in (1, 2):
            r = t.ran(agent.get(url, out(o, i, "a.bin"), flags="redirect-report"))
            expect_transferred(t, r, out(o, i, "a.bin"), o.sha("a.bin"), SIZE,
                               remote_url=final, cache_key=final)
        t.eq("report, twice: answers for the final URL", answers(gets(o, "/files/a.bin")),
             [(200, None, SIZE), (200, None, SIZE)])
        both = ["--cache-key", "both"]
        for i in (3, 4):
            r = t.ran(agent.get(url, out(o, i, "a.bin"), flags="redirect-report", extra=both))
            expect_transferred(t, r, out(o, i, "a.bin"), o.sha("a.bin"), SIZE,
                               remote_url=final)
        expect_from_cache(t, r, SIZE)
        recs = gets(o, "/files/a.bin")
        t.eq("report + both: the fourth get's answer (status, If-None-Match sent, body bytes)",
             [(s, inm is not None, b) for s, inm, b in answers(recs)][3:], [(304, True, 0)])
        t.ok("the fourth get asked the original URL with If-None-Match",
             gets(o, "/latest")[-1]["if_none_match"] is not None, repr(gets(o, "/latest")[-1]))


@case("own_store_sha256_hit_makes_no_request")
def _(bg):
    """with --sha256 of content the store holds (under any key), the file is written from the store
    and the origin gets no request at all, even for another URL"""
    with Origin(files={"a.bin": SIZE}) as o:
        o, agent, t = started(bg, o)
        t.eq("first get: exit", t.ran(agent.get(o.url("/files/a.bin"), out(o, 1, "a.bin"))).rc, 0)
        before = len(o.requests())
        for i, path in ((2, "/files/a.bin"), (3, "/files/elsewhere.bin")):
            dest = out(o, i, "a.bin")
            r = t.ran(agent.get(o.url(path), dest, extra=["--sha256", o.sha("a.bin")]))
            expect_transferred(t, r, dest, o.sha("a.bin"), SIZE)
            expect_from_cache(t, r, SIZE)
        t.eq("requests to the origin after the first get", o.requests()[before:], [])
        t.eq("cache stats: own store", own_stats(t, agent), {"hits": 2, "revalidated": 0, "misses": 1})
        store(t, agent, {o.url("/files/a.bin"): o.data["a.bin"]})


def basic(user, password):
    return "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@case("own_store_private_entry_reused_only_after_304_to_its_credentials")
def _(bg):
    """content fetched with credentials is private; a get with other credentials, or none, or with
    only its --sha256, is not served from the store: the origin answers 401; with the right
    credentials a 304 lets it be reused"""
    locs = "location = /files/p.bin { auth_basic private; auth_basic_user_file @DIR@/htpasswd; }"
    with Origin(files={"p.bin": SIZE}, locations=locs) as o:
        o, agent, t = started(bg, o)
        with open(o.path("htpasswd"), "w") as f:
            f.write("alice:{PLAIN}wonderland\nbob:{PLAIN}builder\n")
        os.chmod(o.path("htpasswd"), 0o644)
        url = o.url("/files/p.bin")
        r = t.ran(agent.get(url, out(o, 1, "p.bin"), extra=["--header", basic("alice", "wonderland")]))
        expect_transferred(t, r, out(o, 1, "p.bin"), o.sha("p.bin"), SIZE)
        for i, extra in ((2, ["--header", basic("mallory", "guess")]), (3, []),
                         (4, ["--sha256", o.sha("p.bin")])):
            dest = out(o, i, "p.bin")
            r = t.ran(agent.get(url, dest, extra=extra))
            expect_error(t, r, dest, "0x80190191")
        r = t.ran(agent.get(url, out(o, 5, "p.bin"), extra=["--header", basic("bob", "builder")]))
        expect_transferred(t, r, out(o, 5, "p.bin"), o.sha("p.bin"), SIZE)
        expect_from_cache(t, r, SIZE)
        statuses = [(x["status"], x["if_none_match"] is not None) for x in gets(o, "/files/p.bin")]
        t.eq("answers (status, If-None-Match sent)", statuses,
             [(200, False), (401, True), (401, True), (401, True), (304, True)])


@case("own_store_job_digests_from_add_and_a_list_make_no_request")
def _(bg):
    """a daemon job whose files carry an expected SHA-256 (add --sha256, and a list line 'URL
    LOCALPATH sha256=HEX') of content the store holds is written from the store: no request,
    even for URLs the origin does not have"""
    with Origin(files={"a.bin": SIZE}) as o:
        o, agent, t = started(bg, o)
        t.eq("first get: exit", t.ran(agent.get(o.url("/files/a.bin"), out(o, 1, "a.bin"))).rc, 0)
        before = len(o.requests())
        job = new_job(t, agent, [])
        if job is None:
            return
        cmd(t, agent, "add", job, o.url("/missing/one.bin"), out(o, 2, "one.bin"), "--sha256", o.sha("a.bin"))
        with open(o.path("list"), "w") as f:
            f.write(f"{o.url('/missing/two.bin')} {out(o, 3, 'two words.bin')} sha256={o.sha('a.bin').upper()}\n")
        cmd(t, agent, "add", job, "--from", o.path("list"))
        cmd(t, agent, "add", job, o.url("/x"), out(o, 4, "x"), "--sha256", "abc", rc=2)
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", job)
            doc, _ = poll_state(t, agent, job, ("TRANSFERRED", "ERROR"), 30)
        t.eq("state", field(doc, "state"), "TRANSFERRED")
        t.eq("job bytes_from_cache", field(doc, "bytes_from_cache"), 2 * SIZE)
        cmd(t, agent, "complete", job)
        for path in (out(o, 2, "one.bin"), out(o, 3, "two words.bin")):
            t.eq(f"SHA-256 of {os.path.basename(path)}",
                 sha256_bytes(open(path, "rb").read()) if os.path.exists(path) else None, o.sha("a.bin"))
        t.eq("requests to the origin after the first get", o.requests()[before:], [])


@case("own_store_no_cache_skips_the_lookup")
def _(bg):
    """get --no-cache neither looks in the store nor asks conditionally: a full 200"""
    with Origin(files={"a.bin": SIZE}) as o:
        o, agent, t = started(bg, o)
        url = o.url("/files/a.bin")
        t.eq("first get: exit", t.ran(agent.get(url, out(o, 1, "a.bin"))).rc, 0)
        r = t.ran(agent.get(url, out(o, 2, "a.bin"), extra=["--no-cache"]))
        expect_transferred(t, r, out(o, 2, "a.bin"), o.sha("a.bin"), SIZE)
        t.eq("answers (status, If-None-Match, body bytes)", answers(gets(o, "/files/a.bin")),
             [(200, None, SIZE), (200, None, SIZE)])


@case("own_store_weak_date_not_used_as_a_condition")
def _(bg):
    """without an ETag and with a Last-Modified less than 60 s before the Date (a weak date, RFC
    9110 8.8.2.2) no If-Modified-Since is sent: a full 200; with a strong date it is, and nginx
    answers 304"""
    with Origin(files={"a.bin": SIZE}, locations="location = /files/a.bin { etag off; }") as o:
        o, agent, t = started(bg, o)
        url = o.url("/files/a.bin")
        o.put_file("a.bin", o.data["a.bin"], mtime=int(time.time()))
        for i in (1, 2):
            t.eq(f"get {i}: exit", t.ran(agent.get(url, out(o, i, "a.bin"))).rc, 0)
        o.put_file("a.bin", o.data["a.bin"], mtime=int(time.time()) - 3600)
        for i in (3, 4):
            r = t.ran(agent.get(url, out(o, i, "a.bin")))
            expect_transferred(t, r, out(o, i, "a.bin"), o.sha("a.bin"), SIZE)
        recs = gets(o, "/files/a.bin")
        t.eq("answers (status, If-Modified-Since sent)", [(x["status"], x["if_modified_since"] is not None)
                                                          for x in recs],
             [(200, False), (200, False), (200, False), (304, True)])
        t.eq("the last output came from the store", field(r.doc, "files", 0, "bytes_from_cache"), SIZE)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
