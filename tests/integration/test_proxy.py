#!/usr/bin/env python3
"""Integration cases for jobs through real forward proxies: Debian's squid and tinyproxy
(proxies.py) in front of a real nginx origin (origin.py), driven by `bgcopy daemon` jobs
with set-proxy, and by `bgcopy get` with a proxy from the environment. What a proxy says
(a refused CONNECT, its own error page, its absence) becomes the job error, named as the
proxy's.

Usage: test_proxy.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_proxy.py CASE)
       test_proxy.py --list                    prints the case names, one a line
       test_proxy.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Each case prints one line per thing it checks ('ok' or 'FAIL', with expected and got), and
on failure the bgcopy commands it ran, the daemon log, the proxy's logs and the origin's
access log. Exit 0 when every check passed, 1 otherwise, 2 on bad usage, 77 (skipped) when
squid or tinyproxy is not installed. BGCOPY_KEEP_TMP=1 keeps the temp dirs. Nothing here
asserts a duration: job states and logs are polled until a deadline."""

import os
import re
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bgtest import (case_registry, cmd, complete_and_check, Daemon, field, info, main, new_job, poll_state,
                    SKIPPED, started)  # noqa: E402
from origin import free_port, Origin  # noqa: E402
from proxies import ProxyError, Squid, Tinyproxy  # noqa: E402

CASES, case = case_registry()
CANNOT_CONNECT = "0x80072EFD"


def http_error(status):
    """(code, symbol) of BG_E_HTTP_ERROR_<status>."""
    return f"0x{0x80190000 | status:08X}", f"BG_E_HTTP_ERROR_{status}"


class ProxyLog:
    """What Checker.dump() prints for a proxy."""

    def __init__(self, proxy):
        self.proxy = proxy

    def describe(self):
        return self.proxy.describe()


def start_proxy(t, cls, **kw):
    """The proxy started (its logs registered for the failure dump), or None when it is
    not installed (the case is skipped)."""
    try:
        p = cls(**kw)
    except ProxyError as e:
        print(f"  skip  {e}")
        return None
    t.results.append(ProxyLog(p))
    return p


def proxied_job(t, agent, url, out, proxy, name, ca_file=None):
    job = new_job(t, agent, [(url, out)], "--name", name)
    if job is not None:
        cmd(t, agent, "set-proxy", job, proxy)
        if ca_file:
            cmd(t, agent, "set-ca-file", job, ca_file)
    return job


def run_jobs(t, agent, o, jobs, states=("ERROR", "TRANSIENT_ERROR", "TRANSFERRED")):
    """Resumes every job of JOBS {label: id} under one daemon; returns {label: document}
    once each reached one of STATES."""
    docs = {}
    with Daemon(t, agent, o):
        for job in jobs.values():
            cmd(t, agent, "resume", job)
        for label, job in jobs.items():
            docs[label], _ = poll_state(t, agent, job, states, 30, label=label)
    return docs


def expect_job_error(t, label, doc, state, status_or_code, needle):
    """The job's state, its error's code and symbol, and a message that contains NEEDLE
    (a str, or a compiled regex)."""
    if isinstance(status_or_code, int):
        code, symbol = http_error(status_or_code)
    else:
        code, symbol = status_or_code, None
    t.eq(f"{label}: state", field(doc, "state"), state)
    t.eq(f"{label}: error.code", field(doc, "error", "code"), code)
    if symbol:
        t.eq(f"{label}: error.symbol", field(doc, "error", "symbol"), symbol)
    msg = field(doc, "error", "message")
    found = (isinstance(msg, str) and
             (needle.search(msg) is not None if isinstance(needle, re.Pattern) else needle in msg))
    t.ok(f"{label}: error.message says {getattr(needle, 'pattern', needle)!r}", found,
         f"message: {msg!r}")


# ---- a refused CONNECT -------------------------------------------------------------------

def connect_refusals(bg, cls, kw_for, closed_status):
    """A CONNECT the proxy refuses by its ACL (403) ends the job in ERROR at once; a CONNECT
    to a closed port, which the proxy answers with CLOSED_STATUS (5xx), is a transient error
    with the proxy's status. `get` (proxy from https_proxy) is not retried on the 403."""
    with Origin(files={"a.bin": 100_000}, https=True) as o:
        o, agent, t = started(bg, o)
        closed = free_port()
        with start_proxy(t, cls, **kw_for(o, closed)) or _Skip() as p:
            if p is None:
                return SKIPPED
            print(f"checks: {cls.name} refuses CONNECT to 127.0.0.1:{o.tls_port} (403): a daemon "
                  f"job through it goes to ERROR {http_error(403)[0]} BG_E_HTTP_ERROR_403 at once, "
                  f"the message naming the proxy, after one CONNECT; a CONNECT to a closed port "
                  f"({cls.name} answers {closed_status}) is TRANSIENT_ERROR "
                  f"{http_error(closed_status)[0]}; get with https_proxy gives up on the 403 "
                  "after one CONNECT (no retries)")
            refused_url = o.tls_url("/files/a.bin")
            closed_url = f"https://127.0.0.1:{closed}/files/a.bin"
            jobs = {"refused": proxied_job(t, agent, refused_url, o.path("out", "r.bin"), p.url,
                                           "refused", o.ca_file),
                    "closed": proxied_job(t, agent, closed_url, o.path("out", "c.bin"), p.url,
                                          "closed", o.ca_file)}
            if None in jobs.values():
                return
            docs = run_jobs(t, agent, o, jobs)
            expect_job_error(t, "job refused by the proxy", docs["refused"], "ERROR", 403,
                             f"proxy 127.0.0.1:{p.port} refused CONNECT to 127.0.0.1:{o.tls_port}: 403")
            expect_job_error(t, "job to a closed port", docs["closed"], "TRANSIENT_ERROR",
                             closed_status,
                             f"proxy 127.0.0.1:{p.port} refused CONNECT to 127.0.0.1:{closed}: "
                             f"{closed_status}")
            refused_target = f"127.0.0.1:{o.tls_port}"
            t.eq("CONNECTs the proxy received for the refused job",
                 [r for r in p.wait_requests(1, "CONNECT") if r[1] == refused_target],
                 [("CONNECT", refused_target)])

            base_env = agent.env
            agent.env = lambda: {**base_env(), "https_proxy": p.url}
            out = o.path("out", "g.bin")
            r = t.ran(agent.get(refused_url, out, extra=("--ca-file", o.ca_file), timeout=120))
            agent.env = base_env
            t.eq("get through https_proxy: exit status", r.rc, 1)
            t.eq("get: error.code", field(r.doc, "error", "code"), http_error(403)[0])
            t.ok("get: error.message names the proxy",
                 f"proxy 127.0.0.1:{p.port} refused CONNECT" in str(field(r.doc, "error", "message")),
                 f"message: {field(r.doc, 'error', 'message')!r}")
            # The proxy may log a CONNECT just after get has exited: wait (bounded) for a
            # line more than expected, so that a retry would be counted.
            t.eq("CONNECTs to the refused origin in all (the job's one and get's one)",
                 len([x for x in p.wait_requests(4, "CONNECT", timeout=3) if x[1] == refused_target]), 2)
            t.eq("requests the TLS origin answered", len(o.requests(server="tls")), 0)


class _Skip:
    """`with start_proxy(...) or _Skip() as p`: p is None when the proxy is missing."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@case("proxy_squid_connect_403_fatal_503_transient")
def _(bg):
    return connect_refusals(bg, Squid, lambda o, closed: {"deny_connect_ports": [o.tls_port]}, 503)


@case("proxy_tinyproxy_connect_403_fatal_500_transient")
def _(bg):
    # ConnectPort lists the closed port (so the CONNECT is tried) but not the origin's.
    return connect_refusals(bg, Tinyproxy, lambda o, closed: {"connect_ports": [closed]}, 500)


# ---- proxy credentials ---------------------------------------------------------------------

def connect_credentials(bg, cls, wrong_status):
    """A proxy that wants credentials: none is 407, wrong ones WRONG_STATUS, both fatal
    (ERROR at once); the right ones (in the set-proxy URL) open the tunnel and the file
    arrives."""
    with Origin(files={"a.bin": 300_000}, https=True) as o:
        o, agent, t = started(bg, o)
        with start_proxy(t, cls, auth=("alice", "s3cret")) or _Skip() as p:
            if p is None:
                return SKIPPED
            print(f"checks: {cls.name} with Basic proxy credentials, https through CONNECT: no "
                  f"credentials -> ERROR BG_E_HTTP_ERROR_407, wrong ones -> ERROR "
                  f"BG_E_HTTP_ERROR_{wrong_status}, each message naming the proxy; the right "
                  "ones -> TRANSFERRED with the right bytes")
            url = o.tls_url("/files/a.bin")
            outs = {k: o.path("out", f"{k}.bin") for k in ("none", "wrong", "right")}
            proxies = {"none": p.url, "wrong": p.url_as("alice", "nope"),
                       "right": p.url_as("alice", "s3cret")}
            jobs = {k: proxied_job(t, agent, url, outs[k], proxies[k], k, o.ca_file) for k in outs}
            if None in jobs.values():
                return
            docs = run_jobs(t, agent, o, jobs)
            expect_job_error(t, "no credentials", docs["none"], "ERROR", 407,
                             f"proxy 127.0.0.1:{p.port} refused CONNECT to 127.0.0.1:{o.tls_port}: "
                             "407 Proxy Authentication Required")
            expect_job_error(t, "wrong credentials", docs["wrong"], "ERROR", wrong_status,
                             f"proxy 127.0.0.1:{p.port} refused CONNECT to 127.0.0.1:{o.tls_port}: "
                             f"{wrong_status}")
            t.eq("right credentials: state", field(docs["right"], "state"), "TRANSFERRED")
            complete_and_check(t, agent, jobs["right"], [(outs["right"], o.sha("a.bin"))])
            t.ok("no error message holds the password",
                 not any("nope" in str(field(d, "error")) or "s3cret" in str(field(d, "error"))
                         for d in docs.values()), repr([field(d, "error") for d in docs.values()]))


@case("proxy_squid_connect_407_fatal_credentials_tunnel")
def _(bg):
    return connect_credentials(bg, Squid, 407)


@case("proxy_tinyproxy_connect_407_401_fatal_credentials_tunnel")
def _(bg):
    return connect_credentials(bg, Tinyproxy, 401)


# ---- a proxy's own answer to a plain-http request --------------------------------------------

@case("proxy_squid_http_error_page_names_proxy")
def _(bg):
    """http:// through squid: squid's own 403 (X-Squid-Error, its ACL) and 407 (no credentials) are
    BG_E_HTTP_ERROR_403/407 in ERROR, the message naming the proxy and its marker; the origin's
    404 relayed by squid stays the origin's, the message saying it came through a proxy (Via)"""
    with Origin(files={"a.bin": 100_000}) as o:
        o, agent, t = started(bg, o)
        with start_proxy(t, Squid, deny_paths=["/files/denied"]) or _Skip() as p, \
                start_proxy(t, Squid, auth=("alice", "s3cret")) or _Skip() as pa:
            if p is None or pa is None:
                return SKIPPED
            jobs = {"denied": proxied_job(t, agent, o.url("/files/denied"), o.path("out", "d"),
                                          p.url, "denied"),
                    "auth": proxied_job(t, agent, o.url("/files/a.bin"), o.path("out", "a"),
                                        pa.url, "auth"),
                    "missing": proxied_job(t, agent, o.url("/files/missing"), o.path("out", "m"),
                                           p.url, "missing")}
            if None in jobs.values():
                return
            docs = run_jobs(t, agent, o, jobs)
            expect_job_error(t, "path denied by squid", docs["denied"], "ERROR", 403,
                             f"proxy 127.0.0.1:{p.port} answered for {o.url('/files/denied')}: "
                             "403 Forbidden (X-Squid-Error: ERR_ACCESS_DENIED 0)")
            expect_job_error(t, "no credentials", docs["auth"], "ERROR", 407,
                             f"proxy 127.0.0.1:{pa.port} answered for {o.url('/files/a.bin')}: 407")
            expect_job_error(t, "relayed 404", docs["missing"], "ERROR", 404,
                             re.compile(r"^HTTP 404 .*from " + re.escape(o.url("/files/missing")) +
                                        r".*Via: 1\.1 bgcopy-test-squid \(squid/"))
            t.ok("relayed 404: the message does not say the proxy answered",
                 "proxy 127.0.0.1" not in str(field(docs["missing"], "error", "message")))
            t.eq("origin requests (only the relayed one)",
                 [r["uri"] for r in o.requests(server="main")], ["/files/missing"])


@case("proxy_tinyproxy_http_error_page_names_proxy")
def _(bg):
    """http:// through tinyproxy: its 401 for wrong credentials (which looks like an origin's 401)
    and its 407 without them are ERROR, the message naming the proxy (Server: tinyproxy); its
    '500 Unable to connect' for a closed port is TRANSIENT_ERROR BG_E_HTTP_ERROR_500 naming the
    proxy; the origin's 404 it relays stays the origin's (Via)"""
    with Origin(files={"a.bin": 100_000}) as o:
        o, agent, t = started(bg, o)
        closed = free_port()
        with start_proxy(t, Tinyproxy, auth=("alice", "s3cret")) or _Skip() as p:
            if p is None:
                return SKIPPED
            good = p.url_as("alice", "s3cret")
            jobs = {"wrong": proxied_job(t, agent, o.url("/files/a.bin"), o.path("out", "w"),
                                         p.url_as("alice", "nope"), "wrong"),
                    "none": proxied_job(t, agent, o.url("/files/a.bin"), o.path("out", "n"),
                                        p.url, "none"),
                    "closed": proxied_job(t, agent, f"http://127.0.0.1:{closed}/x", o.path("out", "c"),
                                          good, "closed"),
                    "missing": proxied_job(t, agent, o.url("/files/missing"), o.path("out", "m"),
                                           good, "missing")}
            if None in jobs.values():
                return
            docs = run_jobs(t, agent, o, jobs)
            who = f"proxy 127.0.0.1:{p.port} answered for "
            expect_job_error(t, "wrong credentials", docs["wrong"], "ERROR", 401,
                             f"{who}{o.url('/files/a.bin')}: 401 Unauthorized (Server: tinyproxy/")
            expect_job_error(t, "no credentials", docs["none"], "ERROR", 407,
                             f"{who}{o.url('/files/a.bin')}: 407 Proxy Authentication Required")
            expect_job_error(t, "closed port", docs["closed"], "TRANSIENT_ERROR", 500,
                             f"{who}http://127.0.0.1:{closed}/x: 500 Unable to connect")
            expect_job_error(t, "relayed 404", docs["missing"], "ERROR", 404,
                             re.compile(r"^HTTP 404 .*from " + re.escape(o.url("/files/missing")) +
                                        r".*Via: 1\.1 bgcopy-test-tinyproxy \(tinyproxy/"))
            t.eq("origin requests (only the relayed one)",
                 [r["uri"] for r in o.requests(server="main")], ["/files/missing"])


# ---- no proxy there ------------------------------------------------------------------------------

@case("proxy_unreachable_names_proxy")
def _(bg):
    with Origin(files={"a.bin": 100_000}, https=True) as o:
        o, agent, t = started(bg, o)
        dead = free_port()
        print(f"checks: set-proxy to 127.0.0.1:{dead} (nothing listens there): http and https "
              f"jobs go to TRANSIENT_ERROR {CANNOT_CONNECT}, the message saying the proxy is "
              "unreachable; the origin sees nothing")
        jobs = {"http": proxied_job(t, agent, o.url("/files/a.bin"), o.path("out", "h"),
                                    f"http://127.0.0.1:{dead}", "http"),
                "https": proxied_job(t, agent, o.tls_url("/files/a.bin"), o.path("out", "s"),
                                     f"http://alice:s3cret@127.0.0.1:{dead}", "https", o.ca_file)}
        if None in jobs.values():
            return
        docs = run_jobs(t, agent, o, jobs)
        for k in jobs:
            expect_job_error(t, k, docs[k], "TRANSIENT_ERROR", CANNOT_CONNECT,
                             f"proxy 127.0.0.1:{dead} unreachable")
        t.ok("no error message holds the password",
             "s3cret" not in str(field(docs["https"], "error")), repr(field(docs["https"], "error")))
        t.eq("origin requests", len(o.requests()), 0)


# ---- info shows the proxy --------------------------------------------------------------------

@case("proxy_info_shows_proxy_without_password")
def _(bg):
    """info and info --json show the job's proxy: the URL with its password as *** (user kept),
    'none', or (never set) null / 'from the environment'; the password appears nowhere in their
    output"""
    with Origin(files={"a.bin": 100_000}) as o:
        o, agent, t = started(bg, o)
        port = free_port()
        url = o.url("/files/a.bin")
        job = new_job(t, agent, [(url, o.path("out", "a"))])
        other = new_job(t, agent, [(url, o.path("out", "b"))])
        if job is None or other is None:
            return
        doc = info(t, agent, other)
        t.eq("never set: info --json proxy", field(doc, "proxy"), None)
        r = cmd(t, agent, "info", other)
        t.ok("never set: info says the environment's",
             re.search(r"^  proxy +from the environment", r.out, re.M) is not None, r.out)

        for given, shown in ((f"http://alice:p%40ss-s3cret@127.0.0.1:{port}",
                              f"http://alice:***@127.0.0.1:{port}"),
                             (f"socks5h://127.0.0.1:{port}", f"socks5h://127.0.0.1:{port}"),
                             ("none", "none")):
            cmd(t, agent, "set-proxy", job, given)
            r = cmd(t, agent, "info", job, "--json")
            t.eq(f"set-proxy {given}: info --json proxy", field(r.doc, "proxy"), shown)
            r2 = cmd(t, agent, "info", job)
            t.ok(f"set-proxy {given}: info line 'proxy {shown}'",
                 re.search(r"^  proxy +" + re.escape(shown) + "$", r2.out, re.M) is not None,
                 r2.out)
            t.ok(f"set-proxy {given}: the password is in neither output",
                 "s3cret" not in r.out + r2.out + r.err + r2.err)
        cmd(t, agent, "set-proxy", job, f"http://alice:p%40ss-s3cret@127.0.0.1:{port}")
        r = cmd(t, agent, "list", "--json")
        t.ok("list --json does not show the password either", "s3cret" not in r.out, r.out[:500])


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
