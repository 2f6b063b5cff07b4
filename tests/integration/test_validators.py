#!/usr/bin/env python3
"""Integration cases for what a resume may trust, against two origin implementations: nginx
(origin.py) and lighttpd (lighttpd_origin.py). Both answer an If-Range date by comparing
strings, so only the client can keep two versions of a file from being spliced:

- RFC 9110 section 8.8.2.2: a Last-Modified date is a strong validator only when the
  response that gave it had a Date at least 60 s later; section 13.1.5: a date is never
  sent in If-Range when the response carried an entity tag, weak ones included. Without a
  usable validator a file starts over from byte 0 (no Range at all).
- RFC 9530: an origin's Repr-Digest (or Content-Digest of a 200) says what the whole file's
  SHA-256 is; bgcopy asks for it (Want-Repr-Digest) and checks the finished file against
  it: a mismatch starts the file over once, then the job fails with 0x80070017.
- The redirect policies and a resume by ETag, against lighttpd too.

Usage: test_validators.py CASE [PATH/TO/bgcopy]   (or BGCOPY=PATH/TO/bgcopy test_validators.py CASE)
       test_validators.py --list                  prints the case names, one a line
       test_validators.py --all [PATH/TO/bgcopy]  runs every case, prints a summary

Every case shows its evidence from the origin's access log. Exit 0 when every check
passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the temp dirs."""

import base64
import email.utils
import hashlib
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lighttpd_origin import LighttpdOrigin  # noqa: E402
from bgtest import (case_registry, expect_error, expect_transferred, field, main, started, stop_background,
                    store, wait_partial)  # noqa: E402
from origin import MiB, Origin, range_start, sha256_bytes  # noqa: E402

SIZE = 4 * MiB        # the file interrupted; served at 1 MiB/s
KILL_AT = 1 * MiB     # partial size at which the first get is killed
SMALL = 300_000       # a file served whole

CASES, case = case_registry()


def nginx_origin(files, directives):
    """nginx serving /files/big.bin at 1 MiB/s with DIRECTIVES in its location."""
    return Origin(files=files, locations=f"location = /files/big.bin {{ limit_rate 1m; {directives} }}")


def lighttpd_origin(files, etags):
    return LighttpdOrigin(files=files, etags=etags,
                          conf='$HTTP["url"] == "/files/big.bin" { connection.kbytes-per-second = 1024 }')


def no_etag_origin(kind, files):
    """An origin of KIND (nginx or lighttpd) that sends no ETag, big.bin paced."""
    return nginx_origin(files, "etag off;") if kind == "nginx" else lighttpd_origin(files, False)


def kill_mid_file(t, o, agent, url, out):
    """Starts `get URL -o OUT`, SIGKILLs it once its partial holds KILL_AT bytes. True when
    that happened."""
    p = agent.popen_get(url, out, log_prefix=o.path("first-get"))
    try:
        size = wait_partial(t, o, p, out, "first-get", at_least=KILL_AT)
    finally:
        stop_background(p)
    if size is not None:
        t.note(f"killed the first get with {size} bytes of {SIZE} in its partial file")
    return size is not None


def again_after_kill(t, o, agent, want, between=None):
    """`get` of /files/big.bin killed mid-file (kill_mid_file), BETWEEN() if given, then the same
    get again, which delivers WANT (bytes). Returns the URL, or None when the first get could
    not be killed mid-file (a failed check)."""
    url, out = o.url("/files/big.bin"), o.path("out", "big.bin")
    if not kill_mid_file(t, o, agent, url, out):
        return None
    if between is not None:
        between()
    r = t.ran(agent.get(url, out, timeout=90))
    expect_transferred(t, r, out, sha256_bytes(want), SIZE, remote_url=url)
    return url


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


def gets(o, uri):
    return [x for x in o.requests(uri) if x["method"] == "GET"]


def resumes(recs):
    """(status, Range, If-Range) of every request that asked for a Range past byte 0."""
    return [(x["status"], x["range"], x["if_range"]) for x in recs if (range_start(x["range"]) or 0) > 0]


# ---- a weak date: the file restarts, never splices ------------------------------------------

def make_same_second_case(kind):
    def run(bg):
        now = int(time.time())
        v1 = os.urandom(SIZE)
        with no_etag_origin(kind, {"big.bin": v1}) as o:
            o, agent, t = started(bg, o)
            o.put_file("big.bin", v1, mtime=now)
            v2 = os.urandom(SIZE)
            url = again_after_kill(t, o, agent, v2, lambda: o.put_file("big.bin", v2, mtime=now))
            if url is None:
                return
            recs = gets(o, "/files/big.bin")
            t.eq("Last-Modified of the file (both versions)", os.stat(o.file_path("big.bin")).st_mtime, now)
            t.eq("requests with a Range past byte 0 (a weak date guards none)", resumes(recs), [])
            t.eq("answers (status, body bytes)", [(x["status"], x["body_bytes_sent"]) for x in recs][-1:],
                 [(200, SIZE)])
            store(t, agent, {url: v2})
    run.__doc__ = (f"({kind}, no ETag): v1 with Last-Modified T, get killed mid-file, v2 of the "
                   "same size written with the same T; the same get delivers v2 whole (the date "
                   "was weak: no Range), and only v2 is stored")
    return run


for _kind in ("nginx", "lighttpd"):
    case(f"resume_weak_date_file_rewritten_same_second_is_new_file_whole_{_kind}")(make_same_second_case(_kind))


@case("resume_weak_etag_never_sends_a_date_nginx")
def _(bg):
    """a weak ETag W/"v1" and a Last-Modified an hour old (a strong date on its own): the resume
    sends no If-Range date (RFC 9110 13.1.5) and no Range; result correct"""
    old = int(time.time()) - 3600
    with nginx_origin({"big.bin": SIZE}, "etag off; add_header ETag 'W/\"v1\"';") as o:
        o, agent, t = started(bg, o)
        o.put_file("big.bin", o.data["big.bin"], mtime=old)
        url = again_after_kill(t, o, agent, o.data["big.bin"])
        if url is None:
            return
        recs = gets(o, "/files/big.bin")
        t.ok("the origin sent the weak ETag", any(x["etag"] == 'W/"v1"' for x in recs),
             repr([x["etag"] for x in recs]))
        t.eq("If-Range values sent", [x["if_range"] for x in recs if x["if_range"]], [])
        t.eq("requests with a Range past byte 0", resumes(recs), [])
        store(t, agent, {url: o.data["big.bin"]})


# ---- a strong date still resumes --------------------------------------------------------------

def make_strong_date_case(kind):
    def run(bg):
        old = int(time.time()) - 3600
        with no_etag_origin(kind, {"big.bin": SIZE}) as o:
            o, agent, t = started(bg, o)
            o.put_file("big.bin", o.data["big.bin"], mtime=old)
            url = again_after_kill(t, o, agent, o.data["big.bin"])
            if url is None:
                return
            got = resumes(gets(o, "/files/big.bin"))
            t.eq("resume requests (status, If-Range)", [(s, ir) for s, _r, ir in got], [(206, http_date(old))])
            total = sum(x["body_bytes_sent"] for x in gets(o, "/files/big.bin"))
            t.ok(f"body bytes sent for the file ({total}) < 1.5 x size", total < SIZE * 1.5)
            store(t, agent, {url: o.data["big.bin"]})
    run.__doc__ = (f"({kind}, no ETag): Last-Modified an hour before the Date is strong (RFC 9110 "
                   "8.8.2.2): the resume is one Range request with If-Range: that date, answered 206")
    return run


for _kind in ("nginx", "lighttpd"):
    case(f"resume_strong_date_uses_range_{_kind}")(make_strong_date_case(_kind))


@case("resume_strong_etag_lighttpd")
def _(bg):
    """lighttpd's own ETag guards the resume: one Range request with If-Range: that ETag, answered
    206; the file is whole and correct"""
    with lighttpd_origin({"big.bin": SIZE}, True) as o:
        o, agent, t = started(bg, o)
        url = again_after_kill(t, o, agent, o.data["big.bin"])
        if url is None:
            return
        recs = gets(o, "/files/big.bin")
        etag = recs[0]["etag"] if recs else None
        t.ok("lighttpd sent a strong ETag", bool(etag) and etag.startswith('"'), repr(etag))
        got = resumes(recs)
        t.eq("resume requests (status, If-Range)", [(s, ir) for s, _r, ir in got], [(206, etag)])


# ---- the origin's digest (RFC 9530) ----------------------------------------------------------

def digest_field(data):
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def make_digest_case(header, good):
    def run(bg):
        data = os.urandom(SMALL)
        said = data if good else os.urandom(SMALL)
        # Other algorithms and parameters around ours: a dictionary, as RFC 8941 has it.
        value = f"sha-512=:{base64.b64encode(hashlib.sha512(said).digest()).decode()}:, {digest_field(said)}"
        with Origin(files={"d.bin": data},
                    locations=f"location = /files/d.bin {{ add_header {header} '{value}'; }}") as o:
            o, agent, t = started(bg, o)
            url, out = o.url("/files/d.bin"), o.path("out", "d.bin")
            recs = lambda: gets(o, "/files/d.bin")  # noqa: E731
            if good:
                print(f"checks: {header} with the file's SHA-256: TRANSFERRED, stored; every request "
                      "carried Want-Repr-Digest: sha-256=10")
                r = t.ran(agent.get(url, out))
                expect_transferred(t, r, out, sha256_bytes(data), SMALL, remote_url=url)
                t.eq("Want-Repr-Digest of each request", [x["want_repr_digest"] for x in recs()],
                     ["sha-256=10"])
                store(t, agent, {url: data})
            else:
                print(f"checks: {header} with another SHA-256: the file is fetched once more from "
                      "byte 0, then ERROR 0x80070017; no output, nothing stored")
                r = t.ran(agent.get(url, out))
                expect_error(t, r, out, "0x80070017", "ERROR_CRC")
                t.ok("the message names the origin's digest", "digest" in (field(r.doc, "error", "message") or ""),
                     repr(field(r.doc, "error", "message")))
                t.eq("answers (status, Range, body bytes)",
                     [(x["status"], x["range"], x["body_bytes_sent"]) for x in recs()],
                     [(200, None, SMALL)] * 2)
                store(t, agent, {})
    return run


case("repr_digest_matching_file_transferred")(make_digest_case("Repr-Digest", True))
case("repr_digest_mismatch_restarts_once_then_0x80070017")(make_digest_case("Repr-Digest", False))
case("content_digest_mismatch_of_200_restarts_once_then_0x80070017")(make_digest_case("Content-Digest", False))


@case("repr_digest_checked_across_a_resume")
def _(bg):
    """the 200 and the 206 of a resume both carry the whole file's Repr-Digest (RFC 9530: the
    representation's, whatever range is sent); the resumed file matches it and is stored"""
    old = int(time.time()) - 3600
    data = os.urandom(SIZE)
    with nginx_origin({"big.bin": data}, f"add_header Repr-Digest '{digest_field(data)}';") as o:
        o, agent, t = started(bg, o)
        o.put_file("big.bin", data, mtime=old)
        url = again_after_kill(t, o, agent, o.data["big.bin"])
        if url is None:
            return
        got = resumes(gets(o, "/files/big.bin"))
        t.eq("resume requests answered 206", [s for s, _r, _ir in got], [206])
        store(t, agent, {url: o.data["big.bin"]})


# ---- redirects against lighttpd -----------------------------------------------------------------

CODES = (301, 302, 303, 307, 308)


def lighttpd_redirects():
    blocks = [f'$HTTP["url"] == "/r/{c}" {{\n    url.redirect = ("" => "@BASE@/files/a.bin")\n'
              f'    url.redirect-code = {c}\n}}' for c in CODES]
    return "\n".join(blocks)


def make_lighttpd_redirect_case(policy):
    def run(bg):
        with LighttpdOrigin(files={"a.bin": SMALL}, conf=lighttpd_redirects()) as o:
            o, agent, t = started(bg, o)
            target = o.url("/files/a.bin")
            print(f"checks: lighttpd's 301/302/303/307/308 to /files/a.bin under {policy}")
            for c in CODES:
                t.note(f"redirect {c}")
                url, out = o.url(f"/r/{c}"), o.path("out", str(c), "a.bin")
                os.makedirs(os.path.dirname(out))
                r = t.ran(agent.get(url, out, flags=f"redirect-{policy}"))
                if policy == "disallow":
                    expect_error(t, r, out, f"0x{0x80070000 + c:08X}", remote_url=target)
                else:
                    want = target if policy == "report" else url
                    expect_transferred(t, r, out, o.sha("a.bin"), SMALL, remote_url=want, cache_key=want)
            hops = [(x["uri"], x["status"]) for x in o.requests() if x["uri"].startswith("/r/")]
            t.eq("lighttpd answered each redirect with its code", hops, [(f"/r/{c}", c) for c in CODES])
            fetched = len(gets(o, "/files/a.bin"))
            t.eq("requests for the target", fetched, 0 if policy == "disallow" else len(CODES))
    return run


for _policy in ("silent", "report", "disallow"):
    case(f"lighttpd_redirect_codes_{_policy}")(make_lighttpd_redirect_case(_policy))


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
