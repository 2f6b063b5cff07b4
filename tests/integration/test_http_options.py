#!/usr/bin/env python3
"""Integration cases for the HTTP options of a job besides credentials (test_auth.py):
the request method (BITS IBackgroundCopyJobHttpOptions2::SetHttpMethod / GetHttpMethod)
against nginx, redirects included, and write-only custom headers
(IBackgroundCopyJobHttpOptions::SetCustomHeaders, IBackgroundCopyJobHttpOptions3::
MakeCustomHeadersWriteOnly): the header reaches the origin and its value is shown nowhere.

Usage: test_http_options.py CASE [PATH/TO/bgcopy]
       test_http_options.py --list                    prints the case names, one a line
       test_http_options.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Exit 0 when every check passed, 1 otherwise, 2 on bad usage. No check asserts a duration:
states and logs are polled until a deadline."""

import os
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bgtest import (case_registry, cmd, Daemon, doc_of, field, info, main, new_job,
                    Peerd, poll_state, ran, started)  # noqa: E402
from origin import Origin, sha256_bytes  # noqa: E402

CASES, case = case_registry()
SECRET = "tok-7Hq2-never-shown"
ENDS = ("TRANSFERRED", "ERROR", "TRANSIENT_ERROR")

# nginx answers POST to a static file with 405; error_page turns that into the file (an
# internal redirect that nginx serves as GET), so a POST downloads a real file. The access
# log records the method the client sent.
POST_FILES = """location /pfiles/ { alias @DIR@/www/files/; error_page 405 =200 $uri; }
        location = /m/echo { return 200 "echo-body"; }
        location = /r/307 { return 307 @BASE@/m/echo; }
        location = /r/308 { return 308 @BASE@/m/echo; }
        location = /r/303 { return 303 @BASE@/files/a.bin; }
        location = /r/302 { return 302 @BASE@/files/a.bin; }
        location = /m/busy { return 503; }"""


def stderr_one_line(t, what, r, needle):
    t.ok(f"{what}: one stderr line with {needle!r}", r.err.count("\n") == 1 and needle in r.err,
         f"stderr: {r.err!r}")


def methods(o, uri):
    """The methods clients sent for URI: from the request line, which an internal redirect
    (error_page) does not change, unlike $request_method."""
    return [(x.get("request") or "").split(" ")[0] for x in o.requests(uri=uri)]


@case("method_post_whole_file_not_stored_restart_without_range")
def _(bg):
    """SetHttpMethod POST: the origin sees POST (nginx access log), the file arrives whole,
    the job document and get-http-method say POST, the job became foreground, nothing is
    kept in the store (cache list). An interrupted POST transfer is
    asked again from byte 0, without Range (RFC 9110 section 14.2 defines Range for GET
    only), and still completes with the right bytes."""
    big = 1_500_000
    with Origin(files={"a.bin": 30_000, "big.bin": big},
                locations=POST_FILES + "\n        location /slow/ { alias @DIR@/www/files/; "
                                       "error_page 405 =200 $uri; limit_rate 150k; }") as o:
        o, agent, t = started(bg, o)
        out = o.path("out", "a.bin")
        job = new_job(t, agent, [(o.url("/pfiles/a.bin"), out)], "--name", "post", "--priority", "low")
        if job is None:
            return
        cmd(t, agent, "set-http-method", job, "POST")
        r = cmd(t, agent, "get-http-method", job)
        t.eq("get-http-method", r.out, "POST\n")
        d = info(t, agent, job)
        t.eq("http_method in the document", field(d, "http_method"), "POST")
        t.eq("priority after set-http-method POST (BITS: foreground)", field(d, "priority"), "foreground")
        slow_out = o.path("out", "big.bin")
        slow = new_job(t, agent, [(o.url("/slow/big.bin"), slow_out)], "--name", "slow")
        cmd(t, agent, "set-http-method", slow, "POST")
        with Daemon(t, agent, o) as dmn:
            cmd(t, agent, "resume", job)
            d, _ = poll_state(t, agent, job, ENDS, 30)
            t.eq("POST job state", field(d, "state"), "TRANSFERRED")
            cmd(t, agent, "resume", slow)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                sd = doc_of(agent, slow)
                if (field(sd, "bytes_transferred") or 0) > 0 or field(sd, "state") in ENDS:
                    break
                time.sleep(0.05)
            t.eq("slow POST job interrupted part-way (state)", field(sd, "state"), "TRANSFERRING")
            dmn.stop()
            had = field(doc_of(agent, slow), "bytes_transferred")
            t.ok(f"bytes kept from the interrupted POST ({had})", isinstance(had, int) and 0 < had < big)
            dmn.start()
            d2, _ = poll_state(t, agent, slow, ENDS, 60)
            t.eq("slow POST job after the restart", field(d2, "state"), "TRANSFERRED")
        t.eq("methods nginx saw for /pfiles/a.bin", methods(o, "/pfiles/a.bin"), ["POST"])
        slow_recs = o.requests(uri="/slow/big.bin")
        t.eq("methods nginx saw for the interrupted file", methods(o, "/slow/big.bin"), ["POST", "POST"])
        t.eq("Range headers sent for it (none: whole file again)",
             [x.get("range") or "" for x in slow_recs], ["", ""])
        cmd(t, agent, "complete", job)
        cmd(t, agent, "complete", slow)
        t.eq("SHA-256 of the POST download", sha256_bytes(open(out, "rb").read()), o.sha("a.bin"))
        t.eq("SHA-256 of the restarted POST download", sha256_bytes(open(slow_out, "rb").read()),
             o.sha("big.bin"))
        cl = ran(t, agent.run("cache", "list", "--json"))
        t.ok("nothing fetched with POST is in the store", "/pfiles/" not in cl.out and "/slow/" not in cl.out,
             f"cache list: {cl.out[:400]!r}")


@case("method_invalid_token_state_and_priority_rules_exit_2")
def _(bg):
    """A method is a token (RFC 9110 sections 9.1, 5.6.2): spaces, separators, an empty name
    are refused with exit 2 and one stderr line; HEAD and CONNECT cannot download a body
    (9.3.2, 9.3.6). The method changes only while the job is SUSPENDED or in ERROR; a
    non-GET job stays foreground (set-priority low: exit 2); GET undoes it. Nothing
    changes on a refusal."""
    with Origin(files={"a.bin": 1000}) as o:
        o, agent, t = started(bg, o)
        job = new_job(t, agent, [(o.url("/files/a.bin"), o.path("out", "a.bin"))], "--name", "m")
        if job is None:
            return
        before = agent.run("info", job, "--json").out
        for bad in ("PO ST", "", "GET\r\n", "P(OST)", "HEAD", "CONNECT", "X" * 40, "PÖST"):
            r = cmd(t, agent, "set-http-method", job, bad, rc=2)
            t.eq(f"set-http-method {bad!r}: stderr lines", r.err.count("\n"), 1)
        cmd(t, agent, "set-http-method", job, rc=2)
        t.eq("document unchanged after the refusals", agent.run("info", job, "--json").out, before)
        cmd(t, agent, "set-http-method", job, "PROPFIND")
        t.eq("get-http-method", cmd(t, agent, "get-http-method", job).out, "PROPFIND\n")
        r = cmd(t, agent, "set-priority", job, "low", rc=2)
        stderr_one_line(t, "set-priority low on a PROPFIND job", r, "foreground")
        cmd(t, agent, "set-http-method", job, "GET")
        t.eq("get-http-method after GET", cmd(t, agent, "get-http-method", job).out, "GET\n")
        cmd(t, agent, "set-priority", job, "low")
        cmd(t, agent, "resume", job)  # QUEUED: no daemon runs it
        r = cmd(t, agent, "set-http-method", job, "POST", rc=2)
        stderr_one_line(t, "set-http-method on a QUEUED job", r, "SUSPENDED or in ERROR")
        t.eq("method after the refusal", cmd(t, agent, "get-http-method", job).out, "GET\n")


@case("method_redirects_307_308_keep_303_302_post_become_get")
def _(bg):
    """Redirects of a non-GET job, as user agents do (RFC 9110 section 15.4): 307 and 308
    repeat the method (15.4.8, 15.4.9); 303 turns it into GET (15.4.4); 302 turns POST
    into GET (15.4.3's note on user agents), but not another method such as PUT. The job's
    redirect policy applies as to any job (DISALLOW refuses). As in BITS, an error that a
    GET job retries (a 503: TRANSIENT_ERROR) puts a POST job in ERROR."""
    with Origin(files={"a.bin": 20_000}, locations=POST_FILES) as o:
        o, agent, t = started(bg, o)
        plan = {"307": ("/r/307", "POST"), "308": ("/r/308", "PUT"), "303": ("/r/303", "POST"),
                "302post": ("/r/302", "POST"), "302put": ("/r/302", "PUT")}
        jobs = {}
        for k, (path, method) in plan.items():
            jobs[k] = new_job(t, agent, [(o.url(path), o.path("out", k))], "--name", k)
            cmd(t, agent, "set-http-method", jobs[k], method)
        deny = new_job(t, agent, [(o.url("/r/307"), o.path("out", "deny"))], "--name", "deny")
        cmd(t, agent, "set-http-method", deny, "POST")
        cmd(t, agent, "set-security-flags", deny, "redirect-disallow")
        docs = {}
        with Daemon(t, agent, o):
            for k in plan:  # one after the other: the log order is the jobs' order
                cmd(t, agent, "resume", jobs[k])
                docs[k], _ = poll_state(t, agent, jobs[k], ENDS, 30, label=k)
            cmd(t, agent, "resume", deny)
            dd, _ = poll_state(t, agent, deny, ENDS, 30, label="deny")
            busy = {}
            for m in ("POST", "GET"):
                busy[m] = new_job(t, agent, [(o.url("/m/busy"), o.path("out", f"busy-{m}"))], "--name", m)
                cmd(t, agent, "set-http-method", busy[m], m)
                cmd(t, agent, "resume", busy[m])
                busy[m], _ = poll_state(t, agent, busy[m], ENDS, 30, label=f"{m} to a 503")
        got = [(x.get("method"), x.get("uri")) for x in o.requests()
               if x.get("uri", "").startswith(("/r/", "/m/", "/files/"))]
        t.eq("requests nginx saw, in order", got, [
            ("POST", "/r/307"), ("POST", "/m/echo"),
            ("PUT", "/r/308"), ("PUT", "/m/echo"),
            ("POST", "/r/303"), ("GET", "/files/a.bin"),
            ("POST", "/r/302"), ("GET", "/files/a.bin"),
            ("PUT", "/r/302"), ("PUT", "/files/a.bin"),
            ("POST", "/r/307")] + [("POST", "/m/busy"), ("GET", "/m/busy")])
        for k in ("307", "308", "303", "302post"):
            t.eq(f"{k}: state", field(docs[k], "state"), "TRANSFERRED")
        # nginx answers PUT to a static file with 405: the job carried PUT to the target.
        t.eq("302put: error.code (405 for PUT at the target)", field(docs["302put"], "error", "code"),
             "0x80190195")
        t.eq("DISALLOW: state", field(dd, "state"), "ERROR")
        # BITS: with another method than GET an error that is otherwise retried is ERROR.
        t.eq("POST to a 503: state, error", (field(busy["POST"], "state"), field(busy["POST"], "error", "code")),
             ("ERROR", "0x801901F7"))
        t.eq("GET to a 503: state, error", (field(busy["GET"], "state"), field(busy["GET"], "error", "code")),
             ("TRANSIENT_ERROR", "0x801901F7"))
        cmd(t, agent, "complete", jobs["307"])
        t.eq("307 body", open(o.path("out", "307"), "rb").read(), b"echo-body")


@case("headers_write_only_never_shown_reach_origin")
def _(bg):
    """Custom headers (SetCustomHeaders) made write-only (MakeCustomHeadersWriteOnly, which
    BITS makes irreversible): get-headers then fails with E_ACCESSDENIED (exit 2, one
    line); the document shows that one write-only header exists, never its value. The
    header reaches the origin (nginx logs it). Its value appears in none of info, info
    --json, list, list --json, get --json, the daemon log, the notify-cmd environment, nor
    bgcopy-peerd's /metrics."""
    with Origin(files={"a.bin": 20_000, "b.bin": 10_000}) as o:
        o, agent, t = started(bg, o)
        shown = []
        out = o.path("out", "a.bin")
        job = new_job(t, agent, [(o.url("/files/a.bin"), out)], "--name", "wo")
        if job is None:
            return
        cmd(t, agent, "set-headers", job, f"X-Api-Token: {SECRET}")
        r = cmd(t, agent, "get-headers", job)
        t.eq("get-headers before write-only", r.out, f"X-Api-Token: {SECRET}\n")
        cmd(t, agent, "make-headers-write-only", job)
        r = cmd(t, agent, "get-headers", job, rc=2)
        stderr_one_line(t, "get-headers of write-only headers", r, "E_ACCESSDENIED (0x80070005)")
        shown.append(("get-headers (refused)", r.out + r.err))
        # Writing stays allowed, and the headers stay write-only (irreversible).
        cmd(t, agent, "set-headers", job, f"X-Api-Token: {SECRET}", "X-Other: 1")
        cmd(t, agent, "get-headers", job, rc=2)
        d = info(t, agent, job)
        t.eq("document: custom_headers / headers_write_only",
             (field(d, "custom_headers"), field(d, "headers_write_only")), (2, True))
        env_file = o.path("notify.env")
        cmd(t, agent, "set-notify-cmd", job, "/bin/sh", "-c", f"env > {env_file}")
        # set-headers --write-only: both at once on a second job.
        job2 = new_job(t, agent, [(o.url("/files/b.bin"), o.path("out", "b.bin"))], "--name", "wo2")
        cmd(t, agent, "set-headers", job2, "--write-only", f"X-Api-Token: {SECRET}")
        cmd(t, agent, "get-headers", job2, rc=2)
        with Daemon(t, agent, o) as dmn:
            cmd(t, agent, "resume", job)
            cmd(t, agent, "resume", job2)
            d, _ = poll_state(t, agent, job, ENDS, 30)
            t.eq("write-only job state", field(d, "state"), "TRANSFERRED")
            d2, _ = poll_state(t, agent, job2, ENDS, 30)
            t.eq("set-headers --write-only job state", field(d2, "state"), "TRANSFERRED")
            deadline = time.monotonic() + 10
            while not os.path.exists(env_file) and time.monotonic() < deadline:
                time.sleep(0.05)
            for args in (("info", job), ("info", job, "--json"), ("list",), ("list", "--json"),
                         ("list", "--all", "--json")):
                r = ran(t, agent.run(*args))
                shown.append((" ".join(args), r.out + r.err))
        shown.append(("daemon log", dmn.text()))
        try:
            with open(env_file) as f:
                shown.append(("notify-cmd environment", f.read()))
        except OSError:
            t.ok("notify-cmd ran and wrote its environment", False)
        r = ran(t, agent.get(o.url("/files/b.bin"), o.path("out", "g.bin"),
                             extra=("--header", f"X-Api-Token: {SECRET}")))
        t.eq("get --header: exit status", r.rc, 0)
        shown.append(("get --json", r.out + r.err))
        with Peerd(bg, agent.home, workdir=o.dir) as p:
            mr, _ = p.metrics()
            shown.append(("bgcopy-peerd /metrics", mr.body.decode(errors="replace")))
        recs = o.requests(uri="/files/a.bin") + o.requests(uri="/files/b.bin")
        t.eq("X-Api-Token the origin received (both jobs and the get)",
             [x.get("x_api_token") for x in recs], [SECRET] * 3)
        for what, text in shown:
            t.ok(f"the header's value appears nowhere in {what}", SECRET not in text,
                 f"found in: {text[:300]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
