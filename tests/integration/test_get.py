#!/usr/bin/env python3
"""Integration cases for `bgcopy get` against a real nginx origin (see origin.py).

Usage: test_get.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_get.py CASE)
       test_get.py --list                    prints the case names, one a line
       test_get.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Each case prints one line per thing it checks ('ok' or 'FAIL', with expected and got), and
on failure the bgcopy commands it ran and the origin's access log. Exit 0 when every check
passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the temp dirs."""

import contextlib
import gzip
import os
import re
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import (ABSENT, Bgcopy, case_registry, expect_error, expect_transferred, field,
                    interrupted_get, listing, main, partials, Result, SKIPPED, started, stop_background, wait_partial)  # noqa: E402
from origin import MiB, Origin, range_start, sha256_bytes, sha256_file  # noqa: E402

A_SIZE = 300_000          # the ordinary served file, /files/a.bin
BIG_SIZE = 24 * MiB       # served with limit_rate 4m for the interruption cases
KILL_AFTER = 6 * MiB      # partial size at which the first get is killed


CASES, case = case_registry()


# ---- shared expectations ---------------------------------------------------------------


def expect_refused_early(t, r, out, rc, origin, needles=()):
    """Usage / system errors: exit RC, a one-line message on stderr, no output, no request."""
    t.eq("exit status", r.rc, rc)
    lines = r.err.strip().splitlines()
    t.eq("stderr message line count", len(lines), 1)
    for n in needles:
        t.ok(f"output mentions {' or '.join(n)}", any(x in r.out + r.err for x in n),
             f"stdout+stderr: {(r.out + r.err).strip()[:300]!r}")
    t.eq("output file exists", os.path.exists(out), False)
    if os.path.isdir(os.path.dirname(out)):
        t.eq("output folder left empty", listing(os.path.dirname(out)), [])


# ---- redirect policy matrix: 6 kinds x 3 policies ----------------------------------------

REDIRECT_CODES = (300, 301, 302, 303, 307, 308)
DISALLOW_CODES = {300: ("0x8007012C", "HTTP_STATUS_AMBIGUOUS"),
                  301: ("0x8007012D", "HTTP_STATUS_MOVED"),
                  302: ("0x8007012E", "HTTP_STATUS_REDIRECT"),
                  303: ("0x8007012F", "HTTP_STATUS_REDIRECT_METHOD"),
                  307: ("0x80070133", "HTTP_STATUS_REDIRECT_KEEP_VERB"),
                  308: ("0x80070134", "HTTP_STATUS_PERMANENT_REDIRECT")}
POLICIES = {"silent": "redirect-silent", "report": "redirect-report", "disallow": "redirect-disallow"}
POLICY_NAMES = {"silent": "keeps_original_url", "report": "reports_final_url", "disallow": "sets_remote_url"}


def redirect_locations(o):
    out = []
    for code in REDIRECT_CODES:
        if code == 300:
            out.append(f"location = /r/300 {{ add_header Location {o.base}/files/a.bin always; return 300; }}")
        else:
            out.append(f"location = /r/{code} {{ return {code} {o.base}/files/a.bin; }}")
    return "\n        ".join(out)


@contextlib.contextmanager
def get_of(bg, path="/files/a.bin", flags=None, out_name="a.bin", extra=(), **origin_args):
    """An origin serving a.bin (A_SIZE bytes) with ORIGIN_ARGS, registered with the checker;
    `bgcopy get --json [EXTRA]` of PATH on it into out/OUT_NAME under FLAGS (EXTRA may be a
    function of the origin). Yields (origin, Bgcopy, checker, Result, output path)."""
    with Origin(files={"a.bin": A_SIZE}, **origin_args) as o:
        o, agent, t = started(bg, o)
        out = o.path("out", out_name)
        extra = extra(o) if callable(extra) else extra
        yield o, agent, t, t.ran(agent.get(o.url(path), out, flags=flags, extra=extra)), out


def expect_a_bin(t, o, r, out, url, keyed=True):
    """expect_transferred of a.bin with remote_url URL (and cache_key URL when KEYED)."""
    expect_transferred(t, r, out, o.sha("a.bin"), A_SIZE, remote_url=url, cache_key=url if keyed else ABSENT)


def make_redirect_case(code, policy):
    def run(bg):
        with get_of(bg, f"/r/{code}", POLICIES[policy], locations=redirect_locations) as (o, _, t, r, out):
            src, dst = o.url(f"/r/{code}"), o.url("/files/a.bin")
            print(f"checks: GET {src} ({code} -> {dst}) under {POLICIES[policy]}")
            if policy == "silent":
                expect_a_bin(t, o, r, out, src)
            elif policy == "report":
                expect_a_bin(t, o, r, out, dst)
            else:
                hr, sym = DISALLOW_CODES[code]
                expect_error(t, r, out, hr, sym, remote_url=dst)
                t.eq("files[0].cache_key", field(r.doc, "files", 0, "cache_key"), None)
                t.eq("requests for the redirect target", len(o.requests("/files/a.bin")), 0)
    return run


for _code in REDIRECT_CODES:
    for _policy in POLICIES:
        case(f"redirect_{_policy}_{_code}_{POLICY_NAMES[_policy]}")(make_redirect_case(_code, _policy))


# ---- redirects: resolution, chains, refused targets --------------------------------------

REL_GO = "location = /rel/go { return 302 ../files/a.bin; }"


@case("redirect_relative_dotdot_location_resolved")
def _(bg):
    """Location '../files/a.bin' from /rel/go resolves to /files/a.bin (report policy)"""
    with get_of(bg, "/rel/go", "redirect-report", locations=REL_GO) as (o, _, t, r, out):
        t.eq("origin sent a relative Location", field(o.requests("/rel/go"), 0, "location"), "../files/a.bin")
        expect_a_bin(t, o, r, out, o.url("/files/a.bin"))


@case("redirect_relative_path_location_resolved")
def _(bg):
    """Location '/files/a.bin' (absolute path, no host) resolves against the request URL"""
    with get_of(bg, "/abs/go", "redirect-report",
                locations="location = /abs/go { absolute_redirect off; return 302 /files/a.bin; }") as (o, _, t, r, out):
        t.eq("origin sent a relative Location", field(o.requests("/abs/go"), 0, "location"), "/files/a.bin")
        expect_a_bin(t, o, r, out, o.url("/files/a.bin"))


@case("redirect_disallow_relative_location_reports_absolute_url")
def _(bg):
    """under DISALLOW the remote URL becomes the resolved (absolute) redirect target"""
    with get_of(bg, "/rel/go", "redirect-disallow", locations=REL_GO) as (o, _, t, r, out):
        expect_error(t, r, out, "0x8007012E", "HTTP_STATUS_REDIRECT", remote_url=o.url("/files/a.bin"))


def chain_locations(prefix, n, final):
    """/PREFIX/1 -> /PREFIX/2 -> ... -> /PREFIX/N -> FINAL (N redirects from /PREFIX/1)."""
    def gen(o):
        locs = []
        for i in range(1, n + 1):
            target = f"{o.base}/{prefix}/{i + 1}" if i < n else f"{o.base}{final}"
            locs.append(f"location = /{prefix}/{i} {{ return 302 {target}; }}")
        return "\n        ".join(locs)
    return gen


@case("redirect_chain_3_hops_report_gives_last_url")
def _(bg):
    """/c/1 -> /c/2 -> /c/3 -> /files/a.bin under report: remote_url is the last URL"""
    with get_of(bg, "/c/1", "redirect-report", locations=chain_locations("c", 3, "/files/a.bin")) as (o, _, t, r, out):
        expect_a_bin(t, o, r, out, o.url("/files/a.bin"))
        for i in (1, 2, 3):
            t.ok(f"hop /c/{i} was requested", len(o.requests(f"/c/{i}")) >= 1)


@case("redirect_chain_10_hops_followed")
def _(bg):
    """10 redirects (/h/2 ... /h/11 -> /files/a.bin) are followed"""
    with get_of(bg, "/h/2", "redirect-report", locations=chain_locations("h", 11, "/files/a.bin")) as (o, _, t, r, out):
        expect_a_bin(t, o, r, out, o.url("/files/a.bin"), keyed=False)


@case("redirect_chain_11_hops_refused")
def _(bg):
    """11 redirects (/h/1 ... /h/11 -> /files/a.bin) -> 0x80072F7C, target never fetched"""
    with get_of(bg, "/h/1", "redirect-report", locations=chain_locations("h", 11, "/files/a.bin")) as (o, _, t, r, out):
        expect_error(t, r, out, "0x80072F7C", "ERROR_WINHTTP_REDIRECT_FAILED")
        t.eq("requests for /files/a.bin", len(o.requests("/files/a.bin")), 0)


@case("redirect_loop_refused")
def _(bg):
    """/loop/a -> /loop/b -> /loop/a ... ends in 0x80072F7C after at most 11 requests"""
    with get_of(bg, "/loop/a",
                locations=lambda o: f"location = /loop/a {{ return 302 {o.base}/loop/b; }}\n"
                                    f"        location = /loop/b {{ return 302 {o.base}/loop/a; }}") as (o, _, t, r, out):
        expect_error(t, r, out, "0x80072F7C", "ERROR_WINHTTP_REDIRECT_FAILED")
        n = len(o.log())
        t.ok(f"origin saw at most 11 requests (saw {n})", n <= 11)


def make_scheme_case(scheme_url):
    def run(bg):
        with get_of(bg, "/r/x", "redirect-report", "x.bin",
                    locations=f"location = /r/x {{ return 302 {scheme_url}; }}") as (o, _, t, r, out):
            print(f"checks: a redirect to {scheme_url} is refused with 0x80072F7C, nothing written")
            expect_error(t, r, out, "0x80072F7C", "ERROR_WINHTTP_REDIRECT_FAILED")
            t.eq("origin saw only the redirecting request", [x["uri"] for x in o.log()], ["/r/x"])
    return run


case("redirect_to_file_scheme_refused")(make_scheme_case("file:///etc/passwd"))
case("redirect_to_smb_scheme_refused")(make_scheme_case("smb://host/share"))
case("redirect_to_ftp_scheme_refused")(make_scheme_case("ftp://127.0.0.1/x"))


HTTPS_DOWN = "location = /down { return 302 @BASE@/files/a.bin; }"


@case("https_get_with_ca_file_succeeds")
def _(bg):
    """plain HTTPS download trusting the test CA via get --ca-file, and via the global form bgcopy
    --ca-file FILE get"""
    with Origin(files={"a.bin": A_SIZE}, https=True) as o:
        o, agent, t = started(bg, o)
        out = o.path("out", "a.bin")
        url = o.tls_url("/files/a.bin")
        r = t.ran(agent.get(url, out, extra=["--ca-file", o.ca_file]))
        expect_transferred(t, r, out, o.sha("a.bin"), A_SIZE, remote_url=url, cache_key=url)
        os.remove(out)
        r = t.ran(agent.run(*Bgcopy.get_args(url, out), global_args=("--ca-file", o.ca_file)))
        expect_transferred(t, r, out, o.sha("a.bin"), A_SIZE, remote_url=url, cache_key=url)


@case("redirect_http_to_https_hop_certificate_checked")
def _(bg):
    """http /up -> 302 -> https on a server whose certificate comes from the test CA: the hop's
    certificate is checked as a first request's would be: without the CA 0x80072F0D and the
    https hop never answers; with --ca-file, or with ignore-unknown-ca, the file arrives"""
    with Origin(files={"a.bin": A_SIZE}, https=True,
                locations="location = /up { return 302 @TLSBASE@/files/a.bin; }") as o:
        o, agent, t = started(bg, o)
        target = o.tls_url("/files/a.bin")
        out = o.path("out", "a.bin")
        print("  -- no CA")
        r = t.ran(agent.get(o.url("/up"), out, flags="redirect-silent"))
        expect_error(t, r, out, "0x80072F0D", "ERROR_WINHTTP_SECURE_INVALID_CA")
        t.eq("error.url: the file's remote name (ALLOW_SILENT keeps the original)",
             field(r.doc, "error", "url"), o.url("/up"))
        t.ok("error.message names the https hop", target in str(field(r.doc, "error", "message")),
             repr(field(r.doc, "error", "message")))
        t.eq("requests the https server answered", len(o.requests(server="tls")), 0)
        for what, flags, extra in (("--ca-file", "redirect-silent", ["--ca-file", o.ca_file]),
                                   ("ignore-unknown-ca", "redirect-silent|ignore-unknown-ca", [])):
            print(f"  -- {what}")
            os.makedirs(o.path("out"), exist_ok=True)
            r = t.ran(agent.get(o.url("/up"), out, flags=flags, extra=extra))
            expect_transferred(t, r, out, o.sha("a.bin"), A_SIZE, remote_url=o.url("/up"))
            os.remove(out)
        t.eq("requests the https server answered", len(o.requests("/files/a.bin", server="tls")), 2)


@case("https_to_a_plain_http_port_fails_0x80072f8f")
def _(bg):
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        url = f"https://127.0.0.1:{o.port}/files/a.bin"
        print(f"checks: {url} (TLS to a port that speaks plain HTTP) ends in ERROR "
              "0x80072F8F ERROR_WINHTTP_SECURE_FAILURE, context remote_file, nothing written")
        out = o.path("out", "a.bin")
        r = t.ran(agent.get(url, out))
        expect_error(t, r, out, "0x80072F8F", "ERROR_WINHTTP_SECURE_FAILURE")
        t.eq("error.context", field(r.doc, "error", "context"), "remote_file")
        t.eq("error.file_index", field(r.doc, "error", "file_index"), 0)
        t.eq("error.url", field(r.doc, "error", "url"), url)


@case("unresolvable_host_fails_0x80072ee7")
def _(bg):
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"skipped: cannot make a network namespace (unshare -n: {probe.stderr.strip()!r})")
        return SKIPPED
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        url = "http://bgcopy-test.invalid/files/a.bin"
        print(f"checks: get {url} inside a new network namespace with no interface up (so the "
              "lookup fails without leaving the machine) ends in ERROR 0x80072EE7 "
              "ERROR_WINHTTP_NAME_NOT_RESOLVED once get has retried it (a transient error), nothing "
              "written")
        out = o.path("out", "a.bin")
        argv = ["unshare", "-n", *agent.argv(*Bgcopy.get_args(url, out))]
        t0 = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=60,
                           stdin=subprocess.DEVNULL, env=agent.env())
        r = t.ran(Result(argv, p.returncode, p.stdout, p.stderr, time.monotonic() - t0))
        expect_error(t, r, out, "0x80072EE7", "ERROR_WINHTTP_NAME_NOT_RESOLVED")
        t.eq("error.context", field(r.doc, "error", "context"), "remote_file")


@case("get_without_o_writes_the_url_basename_here")
def _(bg):
    """get URL without -o writes the URL's last path segment into the working directory, as curl -O
    and wget do"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        here = o.path("out")
        r = t.ran(agent.run("get", "--json", o.url("/files/a.bin"), cwd=here))
        expect_transferred(t, r, os.path.join(here, "a.bin"), o.sha("a.bin"), A_SIZE)
        t.eq("files[0].local_path", field(r.doc, "files", 0, "local_path"), os.path.join(here, "a.bin"))


@case("redirect_https_to_http_refused_without_0x0800")
def _(bg):
    """https -> http redirect under report without 0x0800 -> 0x80072F7C, http never asked"""
    with Origin(files={"a.bin": A_SIZE}, tls_locations=HTTPS_DOWN) as o:
        o, agent, t = started(bg, o)
        out = o.path("out", "a.bin")
        r = t.ran(agent.get(o.tls_url("/down"), out, flags="redirect-report", extra=["--ca-file", o.ca_file]))
        t.eq("origin answered the https request with 302",
             [(x["server"], x["uri"], x["status"]) for x in o.requests("/down")], [("tls", "/down", 302)])
        expect_error(t, r, out, "0x80072F7C", "ERROR_WINHTTP_REDIRECT_FAILED")
        t.eq("requests to the http server", len(o.requests(server="main")), 0)


@case("redirect_https_to_http_allowed_with_0x0800")
def _(bg):
    """https -> http redirect with allow-https-to-http (0x0800) succeeds under report (0x0900:
    remote_url and cache key the final http URL) and under silent (0x0800: both stay the
    original https URL)"""
    with Origin(files={"a.bin": A_SIZE}, tls_locations=HTTPS_DOWN) as o:
        o, agent, t = started(bg, o)
        out = o.path("out", "a.bin")
        for flags, value, name in (("redirect-report|allow-https-to-http", 0x0900, o.url("/files/a.bin")),
                                   ("redirect-silent|allow-https-to-http", 0x0800, o.tls_url("/down"))):
            print(f"  -- {flags}")
            os.makedirs(o.path("out"), exist_ok=True)
            r = t.ran(agent.get(o.tls_url("/down"), out, flags=flags, extra=["--ca-file", o.ca_file]))
            expect_transferred(t, r, out, o.sha("a.bin"), A_SIZE, remote_url=name, cache_key=name)
            t.eq("security_flags in the job document", field(r.doc, "security_flags"), value)
            os.remove(out)


# ---- HTTP errors ------------------------------------------------------------------------

@case("http_404_fails_0x80190194")
def _(bg):
    """404 -> ERROR 0x80190194, exit 1, nothing written"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        out = o.path("out", "missing.bin")
        r = t.ran(agent.get(o.url("/files/missing.bin"), out))
        expect_error(t, r, out, "0x80190194", "BG_E_HTTP_ERROR_404")
        t.note(f"origin saw {len(o.log())} request(s)")


@case("http_500_fails_0x801901f4")
def _(bg):
    """500 -> ERROR 0x801901F4, exit 1, nothing written (retries allowed, bounded)"""
    with Origin(locations="location = /err500 { return 500; }") as o:
        o, agent, t = started(bg, o)
        out = o.path("out", "e.bin")
        r = t.ran(agent.get(o.url("/err500"), out, timeout=90))
        expect_error(t, r, out, "0x801901F4", "BG_E_HTTP_ERROR_500")
        t.ok(f"finished within 60 s (took {r.elapsed:.1f} s)", r.elapsed < 60)
        t.note(f"origin saw {len(o.log())} request(s)")


# ---- headers across hosts ---------------------------------------------------------------

def make_cross_host_case(header, value, logkey):
    def run(bg):
        with Origin(files={"a.bin": A_SIZE}, second=True,
                    locations="location = /x/go { return 302 @BASE2@/files/a.bin; }") as o:
            o, agent, t = started(bg, o)
            print(f"checks: '{header}: {value}' goes to {o.base} only, not to {o.base2} after a 302")
            out = o.path("out", "a.bin")
            r = t.ran(agent.get(o.url("/x/go"), out, extra=["--header", f"{header}: {value}"]))
            expect_transferred(t, r, out, o.sha("a.bin"), A_SIZE)
            first = o.requests("/x/go", "main")
            t.eq(f"{header} seen by the first server", [x[logkey] for x in first][:1], [value])
            second = o.requests(server="second")
            t.ok("second server was asked for the file", any(x["uri"] == "/files/a.bin" for x in second))
            t.eq(f"{header} seen by the second server ('-' in the log)", [x[logkey] for x in second],
                 [None] * len(second))
    return run


case("redirect_cross_host_drops_authorization")(make_cross_host_case("Authorization", "Bearer x", "authorization"))
case("redirect_cross_host_drops_cookie")(make_cross_host_case("Cookie", "session=s3cr3t", "cookie"))


# ---- content store ----------------------------------------------------------------------

@case("cache_key_both_findable_under_both_urls")
def _(bg):
    """--cache-key both under report: stored under the final URL, found under both"""
    with Origin(files={"a.bin": A_SIZE}, locations="location = /r/302 { return 302 @BASE@/files/a.bin; }") as o:
        o, agent, t = started(bg, o)
        src, dst = o.url("/r/302"), o.url("/files/a.bin")
        out = o.path("out", "a.bin")
        r = t.ran(agent.get(src, out, flags="redirect-report", extra=["--cache-key", "both"]))
        expect_transferred(t, r, out, o.sha("a.bin"), A_SIZE, remote_url=dst, cache_key=dst)
        for url in (dst, src):
            s = t.ran(agent.run("cache", "show", url))
            t.eq(f"cache show {url}: exit", s.rc, 0)
            t.eq(f"cache show {url}: sha256", field(s.doc, "sha256"), o.sha("a.bin"))


def get_both_copies(t, agent, o, body):
    """Gets /files/a.bin and /files/copy-of-a.bin (both BODY) into folders of their own; each
    arrives keyed under its URL. Returns BODY's SHA-256."""
    want = sha256_bytes(body)
    for name in ("a.bin", "copy-of-a.bin"):
        os.makedirs(o.path("out", name + ".d"))
        out = o.path("out", name + ".d", name)
        r = t.ran(agent.get(o.url(f"/files/{name}"), out))
        expect_transferred(t, r, out, want, A_SIZE, cache_key=o.url(f"/files/{name}"))
    return want


@case("cache_list_same_bytes_two_urls_same_sha256")
def _(bg):
    """two URLs serving identical bytes: both keys listed, same sha256"""
    body = os.urandom(A_SIZE)
    with Origin(files={"a.bin": body, "copy-of-a.bin": body}) as o:
        o, agent, t = started(bg, o)
        want = get_both_copies(t, agent, o, body)
        s = t.ran(agent.run("cache", "list", "--json"))
        t.eq("cache list --json: exit", s.rc, 0)
        t.ok("cache list --json prints an array", isinstance(s.doc, list), f"stdout: {s.out[:300]!r}")
        entries = {e.get("url"): e for e in (s.doc or []) if isinstance(e, dict)}
        for name in ("a.bin", "copy-of-a.bin"):
            u = o.url(f"/files/{name}")
            t.eq(f"entry {u}: sha256", field(entries, u, "sha256"), want)
            t.eq(f"entry {u}: size", field(entries, u, "size"), A_SIZE)


@case("cache_show_unknown_url_exits_1")
def _(bg):
    """cache show of a URL never stored exits 1"""
    with Origin() as o:
        o, agent, t = started(bg, o)
        s = t.ran(agent.run("cache", "show", o.url("/files/never.bin")))
        t.eq("exit status", s.rc, 1)


@case("no_cache_writes_file_and_stores_nothing")
def _(bg):
    """--no-cache writes the file, cache_key null, cache list empty"""
    with get_of(bg, extra=["--no-cache"]) as (o, agent, t, r, out):
        expect_transferred(t, r, out, o.sha("a.bin"), A_SIZE, cache_key=None)
        s = t.ran(agent.run("cache", "list", "--json"))
        t.eq("cache list --json: exit", s.rc, 0)
        t.eq("cache list --json", s.doc, [])


@case("sha256_mismatch_fails_without_output")
def _(bg):
    """--sha256 with a wrong digest -> exit 1, ERROR, no output file"""
    wrong = sha256_bytes(b"not the content")
    with get_of(bg, extra=["--sha256", wrong]) as (o, agent, t, r, out):
        t.eq("exit status", r.rc, 1)
        t.eq("state", field(r.doc, "state"), "ERROR")
        t.ok("error is set", isinstance(field(r.doc, "error"), dict), f"error: {field(r.doc, 'error')!r}")
        t.note(f"error: {field(r.doc, 'error')!r}")
        t.eq("output file exists", os.path.exists(out), False)
        left = [x for x in listing(o.path("out")) if not x.endswith(".part")]
        t.eq("output folder holds nothing but a hidden partial", left, [])
        s = t.ran(agent.run("cache", "show", o.url("/files/a.bin")))
        t.eq("content with the wrong digest is not stored (cache show exit)", s.rc, 1)


@case("sha256_match_succeeds")
def _(bg):
    """--sha256 with the right digest (upper-case hex) -> exit 0"""
    with get_of(bg, extra=lambda o: ["--sha256", o.sha("a.bin").upper()]) as (o, agent, t, r, out):
        expect_transferred(t, r, out, o.sha("a.bin"), A_SIZE)


def cache_urls(t, agent):
    """The key URLs of `cache list --json` (checked: exit 0, an array)."""
    s = t.ran(agent.run("cache", "list", "--json"))
    t.eq("cache list --json: exit", s.rc, 0)
    t.ok("cache list --json prints an array", isinstance(s.doc, list), f"stdout: {s.out[:300]!r}")
    return [e.get("url") for e in (s.doc or []) if isinstance(e, dict)]


def cache_gc(t, agent, want):
    s = t.ran(agent.run("cache", "gc"))
    t.eq("cache gc: exit", s.rc, 0)
    t.eq("cache gc prints", s.out.strip(), want)


@case("cache_rm_then_gc_frees_content")
def _(bg):
    """cache rm drops the key (show exits 1, list lacks it); cache gc then frees the content it
    pointed at, once; a second rm exits 1; the output file stays"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/a.bin"), o.path("out", "a.bin")
        r = t.ran(agent.get(url, out))
        expect_transferred(t, r, out, o.sha("a.bin"), A_SIZE, cache_key=url)
        s = t.ran(agent.run("cache", "show", url))
        t.eq("cache show before rm: exit", s.rc, 0)
        s = t.ran(agent.run("cache", "rm", url))
        t.eq("cache rm: exit", s.rc, 0)
        s = t.ran(agent.run("cache", "show", url))
        t.eq("cache show after rm: exit", s.rc, 1)
        t.ok(f"cache list --json lacks {url}", url not in cache_urls(t, agent))
        cache_gc(t, agent, f"freed 1 entries, {A_SIZE} bytes")
        cache_gc(t, agent, "freed 0 entries, 0 bytes")
        s = t.ran(agent.run("cache", "rm", url))
        t.eq("second cache rm of the same URL: exit", s.rc, 1)
        got = sha256_file(out) if os.path.exists(out) else ABSENT
        t.eq("output file unchanged by cache rm and gc (SHA-256)", got, o.sha("a.bin"))


@case("cache_rm_one_of_two_keys_gc_keeps_shared_content")
def _(bg):
    """two URLs, same bytes (stored once); rm one key: gc frees nothing and the other key still
    shows; rm the other too: gc frees the content"""
    body = os.urandom(A_SIZE)
    with Origin(files={"a.bin": body, "copy-of-a.bin": body}) as o:
        o, agent, t = started(bg, o)
        a, b = o.url("/files/a.bin"), o.url("/files/copy-of-a.bin")
        want = get_both_copies(t, agent, o, body)
        s = t.ran(agent.run("cache", "rm", a))
        t.eq(f"cache rm {a}: exit", s.rc, 0)
        cache_gc(t, agent, "freed 0 entries, 0 bytes")
        s = t.ran(agent.run("cache", "show", b))
        t.eq(f"cache show {b}: exit", s.rc, 0)
        t.eq(f"cache show {b}: sha256", field(s.doc, "sha256"), want)
        t.eq(f"cache show {b}: size", field(s.doc, "size"), A_SIZE)
        t.eq("cache list --json keys", cache_urls(t, agent), [b])
        s = t.ran(agent.run("cache", "rm", b))
        t.eq(f"cache rm {b}: exit", s.rc, 0)
        cache_gc(t, agent, f"freed 1 entries, {A_SIZE} bytes")


# ---- bad input --------------------------------------------------------------------------

def make_bad_input_case(desc, rc, url_fn, out_fn, flags=None, needles=()):
    def run(bg):
        with Origin(files={"a.bin": A_SIZE}) as o:
            o, agent, t = started(bg, o)
            url, out = url_fn(o), out_fn(o)
            print(f"checks: {desc} -> exit {rc}, one-line message on stderr, nothing written, no request")
            r = t.ran(agent.get(url, out, flags=flags, json_out=False))
            expect_refused_early(t, r, out, rc, o, needles)
            if flags is not None or rc == 2:
                t.eq("requests made to the origin", len(o.log()), 0)
    return run


def _a_bin_out(o):
    return o.path("out", "a.bin")


ENOTIMPL = (("E_NOTIMPL", "0x80004001"),)
case("bad_url_malformed_exits_2")(make_bad_input_case(
    "URL 'http://'", 2, lambda o: "http://", _a_bin_out))
case("bad_url_unsupported_scheme_exits_2")(make_bad_input_case(
    "URL 'ftp://x/y'", 2, lambda o: "ftp://x/y", _a_bin_out))
case("bad_output_missing_dir_exits_3")(make_bad_input_case(
    "-o under a folder that does not exist", 3, lambda o: o.url("/files/a.bin"),
    lambda o: o.path("out", "no-such-dir", "a.bin")))
case("bad_output_under_proc_exits_3")(make_bad_input_case(
    "-o /proc/nope/x", 3, lambda o: o.url("/files/a.bin"), lambda o: "/proc/nope/x"))
case("bad_flags_0x300_e_notimpl_exit_2")(make_bad_input_case(
    "--security-flags 0x300 (redirect policy field 0x300)", 2, lambda o: o.url("/files/a.bin"),
    _a_bin_out, flags="0x300", needles=ENOTIMPL))
case("bad_flags_0x20_e_notimpl_exit_2")(make_bad_input_case(
    "--security-flags 0x20 (unknown bit)", 2, lambda o: o.url("/files/a.bin"),
    _a_bin_out, flags="0x20", needles=ENOTIMPL))
case("bad_flags_unknown_name_e_notimpl_exit_2")(make_bad_input_case(
    "--security-flags nope (unknown name)", 2, lambda o: o.url("/files/a.bin"),
    _a_bin_out, flags="nope", needles=ENOTIMPL))


@case("missing_home_parent_exits_3")
def _(bg):
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, _agent, t = started(bg, o)
        home = o.path("no-such-dir", "x", "y")
        agent = Bgcopy(bg.exe, home)
        out = o.path("out", "a.bin")
        print(f"checks: --home {home} (its parent is missing) -> exit 3, one-line message naming "
              "the path, nothing created, no request")
        r = t.ran(agent.get(o.url("/files/a.bin"), out, json_out=False))
        expect_refused_early(t, r, out, 3, o, needles=((home,),))
        t.eq("requests made to the origin", len(o.log()), 0)
        t.eq("parent of the home created", os.path.exists(o.path("no-such-dir")), False)


# ---- terminal output, encodings, repeated gets ------------------------------------------

TTY_SIZE = 8 * MiB
TTY_LOC = "location = /files/p.bin { limit_rate 8m; }"


@case("progress_bar_on_terminal")
def _(bg):
    """get with stdout and stderr on a terminal draws a progress bar: redraws starting with \\r, a
    percentage ending at 100%, a rate or ETA"""
    with Origin(files={"p.bin": TTY_SIZE}, locations=TTY_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/p.bin"), o.path("out", "p.bin")
        r = t.ran(agent.run_on_terminal(*Bgcopy.get_args(url, out, json_out=False)))
        expect_transferred(t, r, out, o.sha("p.bin"), TTY_SIZE, json_doc=False)
        draws = re.findall(r"\r *(\d+)%", r.out)
        t.ok("terminal output has \\r-led redraws with a percentage", draws != [],
             f"terminal output: {r.out[-500:]!r}")
        t.ok("a redraw shows 100%", "100" in draws, f"percentages drawn: {draws}")
        t.ok("the bar shows a rate (/s) or an ETA", "/s" in r.out or "ETA" in r.out,
             f"terminal output: {r.out[-500:]!r}")
        t.note(f"{len(draws)} redraw(s), percentages {draws}; {r.out.count(chr(13))} carriage return(s)")


@case("silent_when_not_a_terminal")
def _(bg):
    """the same get with stdout and stderr on pipes and no --json prints nothing"""
    with Origin(files={"p.bin": TTY_SIZE}, locations=TTY_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/p.bin"), o.path("out", "p.bin")
        r = t.ran(agent.get(url, out, json_out=False))
        expect_transferred(t, r, out, o.sha("p.bin"), TTY_SIZE, json_doc=False)
        t.eq("stdout", r.out, "")
        t.eq("stderr", r.err, "")


GZ_LOC = "location = /files/data.txt.gz { gzip off; add_header Content-Encoding gzip; }"


@case("gzip_body_stored_as_sent")
def _(bg):
    text = b"".join(f"line {i}: the same words again and again, to compress well\n".encode()
                    for i in range(20000))
    gz = gzip.compress(text, mtime=0)
    with Origin(files={"data.txt.gz": gz}, locations=GZ_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/data.txt.gz"), o.path("out", "data.txt.gz")
        print(f"checks: a body sent with Content-Encoding: gzip ({len(gz)} bytes, {len(text)} "
              "decoded) is written and stored as sent, and no Accept-Encoding is asked for")
        r = t.ran(agent.get(url, out))
        expect_transferred(t, r, out, sha256_bytes(gz), len(gz), cache_key=url)
        head = open(out, "rb").read(2) if os.path.exists(out) else ABSENT
        t.eq("output starts with the gzip magic", head, b"\x1f\x8b")
        recs = o.requests("/files/data.txt.gz")
        t.eq("origin answered 200 with Content-Encoding gzip",
             [(x["status"], x["content_encoding"]) for x in recs], [(200, "gzip")])
        t.eq("Accept-Encoding in the request ('-' in the log)", [x["accept_encoding"] for x in recs],
             [None])
        s = t.ran(agent.run("cache", "show", url))
        t.eq("cache show: sha256", field(s.doc, "sha256"), sha256_bytes(gz))
        t.eq("cache show: size", field(s.doc, "size"), len(gz))


@case("same_get_after_success_is_a_new_job_revalidated_from_the_store")
def _(bg):
    """the same get after a successful one is a new job (only an unfinished job is resumed); the
    store holds the file, so it asks the origin with If-None-Match and writes the file from the
    store on a 304"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/a.bin"), o.path("out", "a.bin")
        r1 = t.ran(agent.get(url, out))
        expect_transferred(t, r1, out, o.sha("a.bin"), A_SIZE)
        r2 = t.ran(agent.get(url, out))
        expect_transferred(t, r2, out, o.sha("a.bin"), A_SIZE)
        id1, id2 = field(r1.doc, "id"), field(r2.doc, "id")
        t.ok(f"two different job ids ({id1!r}, {id2!r})",
             isinstance(id1, str) and isinstance(id2, str) and id1 != id2)
        recs = o.wait_requests("/files/a.bin", 2)
        t.eq("answers for the file (status, Range, body bytes)",
             [(x["status"], x["range"], x["body_bytes_sent"]) for x in recs],
             [(200, None, A_SIZE), (304, None, 0)])

# ---- interruption and resume ------------------------------------------------------------

BIG_LOC = "location = /files/big.bin { limit_rate 4m; }"


def start_and_kill(t, o, agent, url, out):
    """Starts `get URL -o OUT` in the background, SIGKILLs it once its partial file has grown
    past KILL_AFTER bytes. Returns the partial size at the kill, or None on failure."""
    p = agent.popen_get(url, out, log_prefix=o.path("first-get"))
    outdir, name = os.path.dirname(out), os.path.basename(out)
    try:
        size = wait_partial(t, o, p, out, "first-get", KILL_AFTER)
    finally:
        stop_background(p)
    if size is None:
        return None
    t.note(f"killed the first get (pid {p.pid}) with the partial at {size} bytes of {BIG_SIZE}")
    t.eq("output file exists after the kill", os.path.exists(out), False)
    t.ok("partial file is still there after the kill", partials(outdir, name) != [],
         f"folder: {listing(outdir)}")
    return size


@case("kill9_resume_uses_range_with_if_range")
def _(bg):
    """get killed with SIGKILL mid-transfer; the same get again resumes with one Range request
    guarded by If-Range; the origin does not send the file twice"""
    with Origin(files={"big.bin": BIG_SIZE}, locations=BIG_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/big.bin"), o.path("out", "big.bin")
        if start_and_kill(t, o, agent, url, out) is None:
            return
        r = t.ran(agent.get(url, out, timeout=90))
        expect_transferred(t, r, out, o.sha("big.bin"), BIG_SIZE, remote_url=url)
        recs = o.wait_requests("/files/big.bin", 2)
        resumed = [x for x in recs if x["status"] == 206 and (range_start(x["range"]) or 0) > 0]
        t.eq("206 answers with a Range starting past byte 0", len(resumed), 1)
        for x in resumed:
            t.ok(f"the resume request ({x['range']}) carries If-Range", x["if_range"] is not None,
                 f"If-Range: {x['if_range']!r}")
        refetch = [x for x in recs if x["status"] == 200 and (range_start(x["range"]) or 0) > 0]
        t.eq("Range requests the origin answered with the whole file", len(refetch), 0)
        total = sum(x["bytes_sent"] for x in recs)
        t.ok(f"bytes sent by the origin for the file ({total}) <= 1.25 x size ({int(BIG_SIZE * 1.25)})",
             total <= BIG_SIZE * 1.25)


@case("kill9_get_job_shows_queued_then_same_get_resumes")
def _(bg):
    """while a get transfers, list and info show its job running; after the get is killed with
    SIGKILL nobody holds the job, and list --json, info --json, info and wait show it QUEUED
    (stopped and resumable), not TRANSFERRING; the same get then resumes it with a Range request"""
    with Origin(files={"big.bin": BIG_SIZE}, locations=BIG_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/big.bin"), o.path("out", "big.bin")
        p = agent.popen_get(url, out, log_prefix=o.path("first-get"))
        job = None
        try:
            if wait_partial(t, o, p, out, "first-get", at_least=MiB) is not None:
                r = t.ran(agent.run("list", "--json"))
                jobs = r.doc if isinstance(r.doc, list) else []
                t.eq("list --json while the get runs: one job", len(jobs), 1)
                job = field(jobs, 0, "id")
                t.ok(f"its state while the get runs ({field(jobs, 0, 'state')!r}) is "
                     "CONNECTING or TRANSFERRING", field(jobs, 0, "state") in ("CONNECTING", "TRANSFERRING"))
                size = wait_partial(t, o, p, out, "first-get", KILL_AFTER)
                if size is None:
                    job = None
        finally:
            stop_background(p)
        if job is None:
            return
        t.note(f"killed the get (pid {p.pid}) with the partial at {size} bytes of {BIG_SIZE}")
        r = t.ran(agent.run("list", "--json"))
        t.eq("list --json after the kill: (id, state)",
             [(field(j, "id"), field(j, "state")) for j in (r.doc or [])], [(job, "QUEUED")])
        r = t.ran(agent.run("info", job, "--json"))
        t.eq("info --json after the kill: state", field(r.doc, "state"), "QUEUED")
        t.ok("info --json: bytes kept for the resume", (field(r.doc, "bytes_transferred") or 0) > 0,
             f"bytes_transferred {field(r.doc, 'bytes_transferred')!r}")
        r = t.ran(agent.run("info", job))
        t.eq("info: exit status", r.rc, 0)
        t.ok("info text says QUEUED", re.search(r"^\s*state\s+QUEUED\s*$", r.out, re.M) is not None,
             f"stdout: {r.out[:300]!r}")
        r = t.ran(agent.run("list"))
        t.ok("list text says QUEUED", re.search(rf"^{job}\s+QUEUED\s", r.out, re.M) is not None,
             f"stdout: {r.out[:300]!r}")
        r = t.ran(agent.run("wait", job, "--timeout", "1"))
        t.ok("wait --timeout 1 says the job is QUEUED", f"job {job} is QUEUED" in r.err,
             f"stderr: {r.err.strip()[:300]!r}")
        r = t.ran(agent.get(url, out, timeout=90))
        expect_transferred(t, r, out, o.sha("big.bin"), BIG_SIZE, remote_url=url)
        t.eq("the same job resumed", field(r.doc, "id"), job)
        recs = o.wait_requests("/files/big.bin", 2)
        expect_resumed(t, o, recs, BIG_SIZE)


@case("kill9_origin_changed_gets_new_file_whole")
def _(bg):
    """the file changes on the origin (new bytes, mtime, ETag) while the get is killed; the resumed
    get returns the new file entirely, never a splice"""
    with Origin(files={"big.bin": BIG_SIZE}, locations=BIG_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/big.bin"), o.path("out", "big.bin")
        old_sha = o.sha("big.bin")
        old_mtime = os.stat(o.file_path("big.bin")).st_mtime
        if start_and_kill(t, o, agent, url, out) is None:
            return
        o.put_file("big.bin", os.urandom(BIG_SIZE), mtime=int(old_mtime) - 7200)
        new_sha = o.sha("big.bin")
        r = t.ran(agent.get(url, out, timeout=90))
        expect_transferred(t, r, out, new_sha, BIG_SIZE, remote_url=url)
        t.ok("output is not the old file", not os.path.exists(out) or sha256_file(out) != old_sha)
        recs = o.wait_requests("/files/big.bin", 2)
        t.eq("206 answers for the file (a changed file must not be resumed)",
             [(x["range"], x["status"]) for x in recs if x["status"] == 206], [])
        for x in recs:
            if (range_start(x["range"]) or 0) > 0:
                t.ok(f"Range request {x['range']} carries If-Range", x["if_range"] is not None,
                     f"If-Range: {x['if_range']!r}")
        t.ok("a full 200 answer came after the change",
             sum(1 for x in recs if x["status"] == 200 and x["method"] == "GET") >= 2,
             "GET records: " + repr([(x["status"], x["range"], x["bytes_sent"]) for x in recs]))


def expect_resumed(t, o, recs, size, unlogged=0):
    """RECS (requests for the file) hold one 206 for a Range past byte 0, with If-Range, and
    the origin sent the file about once in all: the bytes_sent of every logged request for
    it, plus UNLOGGED (bytes a request cut by stopping nginx delivered: nginx stopped with
    TERM does not log the requests it drops), at most 1.25 x SIZE."""
    resumed = [x for x in recs if x["status"] == 206 and (range_start(x["range"]) or 0) > 0]
    t.eq("206 answers with a Range starting past byte 0", len(resumed), 1)
    for x in resumed:
        t.ok(f"the resume request ({x['range']}) carries If-Range", x["if_range"] is not None,
             f"If-Range: {x['if_range']!r}")
    total = sum(x["bytes_sent"] for x in o.requests("/files/big.bin")) + unlogged
    what = "bytes sent by the origin for the file" + (f" (logged + {unlogged} unlogged)" if unlogged else "")
    t.ok(f"{what} ({total}) <= 1.25 x size ({int(size * 1.25)})", total <= size * 1.25)


@case("transient_error_keeps_partial_then_resumes")
def _(bg):
    """the origin goes away mid-transfer (nginx stopped: connection cut, then refused); get
    retries, gives up with exit 1 and ERROR 0x80072EFD/0x80072EFE, keeping the partial; with the
    origin back on the same port the same get resumes with a Range request"""
    with Origin(files={"big.bin": BIG_SIZE}, locations=BIG_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/big.bin"), o.path("out", "big.bin")
        outdir = os.path.dirname(out)

        def stop_origin(p, size):
            o.stop()
            t.note(f"stopped nginx with the partial at {size} bytes of {BIG_SIZE}")
            p.wait(timeout=60)
            return size
        got = interrupted_get(t, o, agent, url, out, KILL_AFTER, stop_origin, json_out=True)
        if got is None:
            return
        first, size = got
        t.eq("exit status", first.rc, 1)
        t.ok("--json printed a job document on stdout", isinstance(first.doc, dict),
             f"stdout: {first.out[:300]!r}")
        t.eq("state", field(first.doc, "state"), "ERROR")
        code = field(first.doc, "error", "code")
        t.ok(f"error.code {code!r} is 0x80072EFD (cannot connect) or 0x80072EFE (connection error)",
             code in ("0x80072EFD", "0x80072EFE"))
        t.ok("stderr names the HRESULT", isinstance(code, str) and code.lower() in first.err.lower(),
             f"stderr: {first.err.strip()[:300]!r}")
        t.eq("output file exists", os.path.exists(out), False)
        t.ok("partial file is still there", partials(outdir, "big.bin") != [], f"folder: {listing(outdir)}")
        t.note(f"job document: bytes_transferred {field(first.doc, 'bytes_transferred')!r}, "
               f"error {field(first.doc, 'error')!r}")
        before = len(o.requests("/files/big.bin"))
        # nginx stopped with TERM logs no line for the request it cut; that request delivered
        # at least the partial file's bytes.
        unlogged = size if before == 0 else 0
        t.note(f"{before} request(s) for the file logged before the restart")
        o.restart()
        t.note(f"nginx restarted on port {o.port}")
        r = t.ran(agent.get(url, out, timeout=90))
        expect_transferred(t, r, out, o.sha("big.bin"), BIG_SIZE, remote_url=url)
        recs = o.wait_requests("/files/big.bin", before + 1)
        expect_resumed(t, o, recs[before:], BIG_SIZE, unlogged=unlogged)


@case("sigint_interrupts_and_same_get_resumes")
def _(bg):
    """SIGINT (Ctrl-C) mid-transfer: exit 3, 'interrupted' on stderr, partial kept, no output; the
    same get again resumes with a Range request"""
    with Origin(files={"big.bin": BIG_SIZE}, locations=BIG_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/big.bin"), o.path("out", "big.bin")
        outdir = os.path.dirname(out)

        def sigint(p, size):
            os.kill(p.pid, signal.SIGINT)
            t.note(f"sent SIGINT with the partial at {size} bytes of {BIG_SIZE}")
            p.wait(timeout=30)
        got = interrupted_get(t, o, agent, url, out, KILL_AFTER, sigint)
        if got is None:
            return
        first = got[0]
        t.eq("exit status", first.rc, 3)
        t.ok("stderr says it was interrupted", "interrupt" in first.err.lower(),
             f"stderr: {first.err.strip()[:300]!r}")
        t.eq("output file exists", os.path.exists(out), False)
        t.ok("partial file is still there", partials(outdir, "big.bin") != [], f"folder: {listing(outdir)}")
        r = t.ran(agent.get(url, out, timeout=90))
        expect_transferred(t, r, out, o.sha("big.bin"), BIG_SIZE, remote_url=url)
        recs = o.wait_requests("/files/big.bin", 2)
        expect_resumed(t, o, recs, BIG_SIZE)


@case("concurrent_get_of_same_job_refused")
def _(bg):
    """while a get transfers, the same get is refused (exit 3, another process) without a request;
    the first one completes"""
    with Origin(files={"big.bin": BIG_SIZE}, locations=BIG_LOC) as o:
        o, agent, t = started(bg, o)
        url, out = o.url("/files/big.bin"), o.path("out", "big.bin")

        def same_get(p, size):
            second = t.ran(agent.get(url, out, json_out=False))
            t.ok("the first get was still running when the second returned", p.poll() is None)
            p.wait(timeout=90)
            return second
        got = interrupted_get(t, o, agent, url, out, 1, same_get, json_out=True)
        if got is None:
            return
        first, second = got
        t.eq("second get: exit status", second.rc, 3)
        t.ok("second get: stderr says another process has the job", "another process" in second.err,
             f"stderr: {second.err.strip()[:300]!r}")
        t.eq("second get: stdout", second.out, "")
        expect_transferred(t, first, out, o.sha("big.bin"), BIG_SIZE, remote_url=url)
        recs = o.wait_requests("/files/big.bin", 1)
        t.eq("requests for the file (status, Range)", [(x["status"], x["range"]) for x in recs],
             [(200, None)])


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
