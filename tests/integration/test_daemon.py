#!/usr/bin/env python3
"""Integration cases for the background-job service of bgcopy: `bgcopy daemon` and the job
commands that drive it (resume, suspend, cancel, complete, wait, set-priority,
set-notify-cmd, set-min-retry-delay, set-no-progress-timeout, set-credentials, set-headers,
set-security-flags, replace-remote-prefix), against a real nginx origin (origin.py). The
checker and the driver are bgtest.py's.

Usage: test_daemon.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_daemon.py CASE)
       test_daemon.py --list                    prints the case names, one a line
       test_daemon.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Each case prints one line per thing it checks ('ok' or 'FAIL', with expected and got), and
on failure the bgcopy commands it ran, the daemon log(s) and the origin's access log. Exit 0
when every check passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the temp dirs;
BGCOPY_SOAK_SEED=N replays the kill moments of daemon_kill9_soak_outputs_intact.

Nothing here asserts a duration: the cases poll job states, partial files, daemon log lines
and the access log until a deadline, and the deadline only bounds a hang. The order of
events comes from the daemon log (one line per event, in order) and the access log."""

import base64
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bgtest import (ABSENT, case_registry, cmd, complete_and_check, Daemon, doc_of, field, info, listing,
                    main, new_job, partials, poll_state, started)  # noqa: E402
from bgtest import interrupted_get  # noqa: E402
from origin import free_port, MiB, Origin, OriginError, range_start, sha256_file  # noqa: E402

STATES = ("QUEUED", "CONNECTING", "TRANSFERRING", "SUSPENDED", "ERROR", "TRANSIENT_ERROR",
          "TRANSFERRED", "ACKNOWLEDGED", "CANCELLED")
STATE_LINE = re.compile(r"^(" + "|".join(STATES) + r")\b")
CANNOT_CONNECT = "0x80072EFD"
HTTP_404 = "0x80190194"


def paced(rate):
    """nginx directives for a smooth RATE. limit_rate alone sends a second's worth at once,
    once a second (its clock has second resolution), and a client stopped just after such a
    burst wastes it in the socket buffers; with small sendfile chunks each is paced."""
    return f"limit_rate {rate}; sendfile_max_chunk 64k;"


CASES, case = case_registry()


# ---- the daemon -------------------------------------------------------------------------


# ---- shared steps -----------------------------------------------------------------------


def read_text(path, missing=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return missing


def partial_size(outdir, name):
    size = 0
    for p in partials(outdir, name):
        try:
            size = max(size, os.path.getsize(p))
        except OSError:
            pass
    return size


def wait_partial(t, agent, job, out, at_least, timeout=30):
    """Polls the partial file of OUT until it holds AT_LEAST bytes. Returns the size seen or
    None (checked failure: timeout, or the job stopped being active first)."""
    outdir, name = os.path.dirname(out), os.path.basename(out)
    deadline = time.monotonic() + timeout
    last_check = 0.0
    while True:
        size = partial_size(outdir, name)
        if size >= at_least:
            return size
        now = time.monotonic()
        if now - last_check > 1.0:
            last_check = now
            s = field(doc_of(agent, job), "state")
            if s not in ("QUEUED", "CONNECTING", "TRANSFERRING", "TRANSIENT_ERROR"):
                t.ok(f"partial of {name} reached {at_least} bytes while the job was active", False,
                     f"job is {s} with the partial at {size} bytes; folder {listing(outdir)}")
                return None
        if now > deadline:
            t.ok(f"partial of {name} reached {at_least} bytes within {timeout} s", False,
                 f"largest partial {size}; folder {listing(outdir)}")
            return None
        time.sleep(0.02)


def running_at_most(events, jobs):
    """The largest number of JOBS running at once according to the daemon EVENTS
    ('started' opens a run; a state line closes it)."""
    running, most = set(), 0
    for job, msg in events:
        if job not in jobs:
            continue
        if msg.startswith("started"):
            running.add(job)
            most = max(most, len(running))
        elif STATE_LINE.match(msg):
            running.discard(job)
    return most


def first_index(events, job, pattern):
    rx = re.compile(pattern)
    for i, (j, m) in enumerate(events):
        if j == job and rx.search(m):
            return i
    return None


def settled_log(o, quiet=2.0, timeout=15.0):
    """Waits until the access log has not grown for QUIET seconds (nginx logs a request cut
    by a client when it notices the closed socket), at most TIMEOUT s. Returns the records."""
    deadline = time.monotonic() + timeout
    n, since = len(o.log(settle=False)), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        m = len(o.log(settle=False))
        if m != n:
            n, since = m, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return o.log()


def show_recs(recs):
    return [(r["server"], r["uri"], r["status"], r["range"], r["bytes_sent"]) for r in recs]


def expect_bytes_bound(t, o, uri, size, factor=1.1, recs=None):
    recs = o.requests(uri) if recs is None else recs
    total = sum(r["bytes_sent"] or 0 for r in recs)
    t.ok(f"bytes sent by the origin for {uri} ({total} in {len(recs)} request(s)) <= "
         f"{factor} x size ({int(size * factor)})", total <= size * factor, repr(show_recs(recs)))


def expect_resumed_with_range(t, recs, uri):
    resumed = [r for r in recs if r["status"] == 206 and (range_start(r["range"]) or 0) > 0]
    t.ok(f"a 206 answer to a Range past byte 0 for {uri} ({[r['range'] for r in resumed]})",
         len(resumed) >= 1, repr(show_recs(recs)))
    bad = [r for r in recs if (range_start(r["range"]) or 0) > 0 and r["status"] != 206]
    t.eq(f"Range requests for {uri} answered other than 206", show_recs(bad), [])
    return resumed


def expect_big_completed_resumed(t, agent, o, job, out, size):
    """`complete JOB` gives big.bin whole; the origin saw it resumed with a Range request and
    sent at most 1.1 x SIZE."""
    complete_and_check(t, agent, job, [(out, o.sha("big.bin"))])
    recs = o.wait_requests("/files/big.bin", 2)
    expect_resumed_with_range(t, recs, "/files/big.bin")
    expect_bytes_bound(t, o, "/files/big.bin", size, recs=recs)


@contextlib.contextmanager
def big_job(bg, size):
    """An origin serving big.bin (SIZE bytes, paced at 4 MB/s) and a job for it (not resumed).
    Yields (origin, Bgcopy, checker, job id or None after a failed check, output path)."""
    with Origin(files={"big.bin": size}, locations="location = /files/big.bin { " + paced("4m") + " }") as o:
        o, agent, t = started(bg, o)
        out = o.path("out", "big.bin")
        yield o, agent, t, new_job(t, agent, [(o.url("/files/big.bin"), out)]), out


def resumed_until(t, agent, job, out, at_least):
    """`resume JOB`, then waits until its partial holds AT_LEAST bytes; False after a failed
    check."""
    cmd(t, agent, "resume", job)
    return wait_partial(t, agent, job, out, at_least) is not None


# ---- 1. the BITS session ----------------------------------------------------------------

@case("bits_session_create_add_resume_wait_complete")
def _(bg):
    """create, add 2 files, resume, daemon, wait exits 0; before complete only the partial files
    exist; complete makes both outputs appear with the right SHA-256, the job ACKNOWLEDGED, no
    partial left"""
    with Origin(files={"a.bin": MiB + 123, "b.bin": 300_000}) as o:
        o, agent, t = started(bg, o)
        outdir = o.path("out")
        outs = {n: os.path.join(outdir, n) for n in ("a.bin", "b.bin")}
        with Daemon(t, agent, o):
            job = new_job(t, agent, [(o.url(f"/files/{n}"), outs[n]) for n in outs], "--name", "session")
            if job is None:
                return
            cmd(t, agent, "resume", job)
            r = t.ran(agent.run("wait", job, "--timeout", "40", timeout=60))
            t.eq("wait: exit status", r.rc, 0)
            d = info(t, agent, job)
            t.eq("state after wait", field(d, "state"), "TRANSFERRED")
            t.eq("files_transferred", field(d, "files_transferred"), 2)
            t.eq("bytes_transferred", field(d, "bytes_transferred"), MiB + 123 + 300_000)
            t.eq("error", field(d, "error"), None)
            t.eq("outputs exist before complete (a.bin, b.bin)",
                 [os.path.exists(p) for p in outs.values()], [False, False])
            for n in outs:
                ps = partials(outdir, n)
                t.eq(f"partial files of {n} before complete", len(ps), 1)
                t.ok(f"partial of {n} is named .{n}.bgcopy-{job[:8]}.part",
                     [os.path.basename(p) for p in ps] == [f".{n}.bgcopy-{job[:8]}.part"], repr(ps))
                if ps:
                    t.eq(f"SHA-256 of the partial of {n}", sha256_file(ps[0]), o.sha(n))
            complete_and_check(t, agent, job, [(outs[n], o.sha(n)) for n in outs])
            t.eq("output folder after complete", listing(outdir), ["a.bin", "b.bin"])
            t.eq("requests per file (a.bin, b.bin)",
                 [len(o.wait_requests(f"/files/{n}", 1)) for n in outs], [1, 1])


# ---- 2. a new job waits for resume ------------------------------------------------------

@case("new_job_is_suspended_until_resume")
def _(bg):
    """with the daemon running, a created job with a file stays SUSPENDED and nothing reaches the
    origin for 2 s; after resume it is transferred"""
    with Origin(files={"a.bin": 300_000}) as o:
        o, agent, t = started(bg, o)
        out = o.path("out", "a.bin")
        with Daemon(t, agent, o) as d:
            job = new_job(t, agent, [(o.url("/files/a.bin"), out)])
            if job is None:
                return
            seen = set()
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                seen.add(field(doc_of(agent, job), "state"))
                time.sleep(0.1)
            t.eq("states seen during 2 s without resume", sorted(map(str, seen)), ["SUSPENDED"])
            t.eq("requests at the origin before resume", show_recs(o.log()), [])
            t.eq("daemon log lines about the job before resume", d.events(job), [])
            cmd(t, agent, "resume", job)
            poll_state(t, agent, job, "TRANSFERRED", 30)
            complete_and_check(t, agent, job, [(out, o.sha("a.bin"))])
            t.eq("requests for the file", [x["status"] for x in o.wait_requests("/files/a.bin", 1)], [200])


# ---- 3. priorities ----------------------------------------------------------------------

@case("priorities_high_before_normal_before_low")
def _(bg):
    """--max-transfers 1; low (set-priority), normal and high jobs queued before the daemon starts
    run high, then normal, then low, one at a time; a foreground job resumed while the low one
    transfers starts at once beside it"""
    files = {"slow/h.bin": 2 * MiB, "slow/n.bin": 2 * MiB, "slower/l.bin": 3 * MiB, "f.bin": 200_000}
    locs = ("location /files/slow/ { " + paced("2m") + " }\n"
            "        location /files/slower/ { " + paced("1m") + " }")
    with Origin(files=files, locations=locs) as o:
        o, agent, t = started(bg, o)
        outdir = o.path("out")
        jobs = {}
        for prio, name in (("low", "slower/l.bin"), ("normal", "slow/n.bin"), ("high", "slow/h.bin")):
            # The low one is created normal and lowered with set-priority.
            jobs[prio] = new_job(t, agent, [(o.url(f"/files/{name}"), os.path.join(outdir, os.path.basename(name)))],
                                 "--name", prio, *(() if prio == "low" else ("--priority", prio)))
        if jobs["low"] is not None:
            cmd(t, agent, "set-priority", jobs["low"], "low")
            t.eq("priority after set-priority low", field(info(t, agent, jobs["low"]), "priority"), "low")
        jobs["foreground"] = new_job(t, agent, [(o.url("/files/f.bin"), os.path.join(outdir, "f.bin"))],
                                     "--name", "fg", "--priority", "foreground")
        if None in jobs.values():
            return
        names = {v: k for k, v in jobs.items()}
        for prio in ("low", "normal", "high"):
            cmd(t, agent, "resume", jobs[prio])
        with Daemon(t, agent, o, "--max-transfers", "1") as d:
            if not t.ok("the low job started", d.wait_event(jobs["low"], r"^started", 40)):
                return
            cmd(t, agent, "resume", jobs["foreground"])
            for prio in ("foreground", "high", "normal", "low"):
                poll_state(t, agent, jobs[prio], "TRANSFERRED", 40, label=f"{prio} job")
            ev = d.events()
            order = []
            for j, m in ev:
                if m.startswith("started") and j not in order:
                    order.append(j)
            t.eq("order of the first 'started' line per job",
                 [names.get(j, j) for j in order], ["high", "normal", "low", "foreground"])
            bg_jobs = {jobs[p] for p in ("high", "normal", "low")}
            t.eq("background jobs running at once, at most (--max-transfers 1)",
                 running_at_most(ev, bg_jobs), 1)
            fg_start = first_index(ev, jobs["foreground"], r"^started \(foreground\)")
            low_start = first_index(ev, jobs["low"], r"^started")
            low_end = first_index(ev, jobs["low"], r"^TRANSFERRED")
            t.ok(f"foreground job started while the low job was transferring (log lines: low "
                 f"started #{low_start}, foreground started #{fg_start}, low TRANSFERRED #{low_end})",
                 None not in (fg_start, low_start, low_end) and low_start < fg_start < low_end)
            fg_end = first_index(ev, jobs["foreground"], r"^TRANSFERRED")
            t.ok(f"foreground job TRANSFERRED before the low one (#{fg_end} < #{low_end})",
                 None not in (fg_end, low_end) and fg_end < low_end)
            t.eq("'turn ended' lines (nothing of the same level was waiting)",
                 [m for _, m in ev if "turn ended" in m], [])
        for prio, name in (("high", "slow/h.bin"), ("normal", "slow/n.bin"), ("low", "slower/l.bin"),
                           ("foreground", "f.bin")):
            complete_and_check(t, agent, jobs[prio], [(os.path.join(outdir, os.path.basename(name)), o.sha(name))])


# ---- 4. round robin ---------------------------------------------------------------------

# 4 s of transfer each at 2 MiB/s: at most 4 MiB a 2 s turn, so each job needs two turns at least.
RR_SIZE = 8 * MiB


@case("round_robin_within_level")
def _(bg):
    """--max-transfers 1 --slice 2, two normal jobs of ~4 s each: they take turns (a turn ends, the
    other starts) before either is TRANSFERRED; each resumes with Range; both complete with the
    right bytes; the origin sends each file <= 1.1 x its size"""
    with Origin(files={"a.bin": RR_SIZE, "b.bin": RR_SIZE},
                http_extra=paced("2m")) as o:
        o, agent, t = started(bg, o)
        outdir = o.path("out")
        a = new_job(t, agent, [(o.url("/files/a.bin"), os.path.join(outdir, "a.bin"))], "--name", "A")
        b = new_job(t, agent, [(o.url("/files/b.bin"), os.path.join(outdir, "b.bin"))], "--name", "B")
        if a is None or b is None:
            return
        cmd(t, agent, "resume", a)
        cmd(t, agent, "resume", b)
        with Daemon(t, agent, o, "--max-transfers", "1", "--slice", "2") as d:
            for j, n in ((a, "A"), (b, "B")):
                poll_state(t, agent, j, "TRANSFERRED", 55, label=f"job {n}")
            ev = d.events()
        done_at = [i for i, (_, m) in enumerate(ev) if m.startswith("TRANSFERRED")]
        before = ev[:done_at[0]] if done_at else ev
        for j, n in ((a, "A"), (b, "B")):
            t.ok(f"job {n} started before the first job was TRANSFERRED",
                 any(x == j and m.startswith("started") for x, m in before), repr(ev))
        t.ok("a turn ended before the first job was TRANSFERRED",
             any("its turn ended" in m for _, m in before), repr(ev))
        turns = {n: sum(1 for x, m in ev if x == j and m.startswith("started")) for j, n in ((a, "A"), (b, "B"))}
        t.ok(f"each job had more than one turn ({turns})", min(turns.values()) >= 2)
        t.eq("jobs running at once, at most", running_at_most(ev, {a, b}), 1)
        complete_and_check(t, agent, a, [(os.path.join(outdir, "a.bin"), o.sha("a.bin"))])
        complete_and_check(t, agent, b, [(os.path.join(outdir, "b.bin"), o.sha("b.bin"))])
        settled_log(o)
        for n in ("a.bin", "b.bin"):
            recs = o.requests(f"/files/{n}")
            expect_resumed_with_range(t, recs, f"/files/{n}")
            expect_bytes_bound(t, o, f"/files/{n}", RR_SIZE, recs=recs)


# ---- 5./6./7. errors --------------------------------------------------------------------

@case("origin_down_then_up_transient_then_transferred")
def _(bg):
    with Origin(files={"a.bin": MiB}) as o:
        o, agent, t = started(bg, o)
        print("checks: origin down when the job is resumed (set-min-retry-delay 2): the job goes "
              f"TRANSIENT_ERROR with {CANNOT_CONNECT}; with the origin back on the same port a "
              "retry transfers it")
        out = o.path("out", "a.bin")
        job = new_job(t, agent, [(o.url("/files/a.bin"), out)])
        if job is None:
            return
        cmd(t, agent, "set-min-retry-delay", job, "2")
        o.stop()
        t.note(f"nginx stopped (port {o.port} refuses connections)")
        with Daemon(t, agent, o) as d:
            cmd(t, agent, "resume", job)
            doc, _ = poll_state(t, agent, job, "TRANSIENT_ERROR", 20)
            t.eq("error.code in TRANSIENT_ERROR", field(doc, "error", "code"), CANNOT_CONNECT)
            d.wait_event(job, r"^TRANSIENT_ERROR", 10, count=2)
            o.restart()
            t.note(f"nginx restarted on port {o.port}")
            doc, _ = poll_state(t, agent, job, "TRANSFERRED", 30)
            t.eq("error after the transfer", field(doc, "error"), None)
            ev = [m for _, m in d.events(job)]
            t.ok(f"the daemon retried: more than one 'started' line ({ev})",
                 sum(1 for m in ev if m.startswith("started")) >= 2)
            t.eq("states the daemon logged for the job", [m for m in ev if STATE_LINE.match(m)][-1:],
                 ["TRANSFERRED"])
            t.eq("states before the last one are all TRANSIENT_ERROR",
                 sorted({m for m in ev if STATE_LINE.match(m)} - {"TRANSFERRED"}), ["TRANSIENT_ERROR"])
        complete_and_check(t, agent, job, [(out, o.sha("a.bin"))])


def first_states(d, job):
    """The state lines the daemon logged for JOB, in order."""
    return [m for _, m in d.events(job) if STATE_LINE.match(m)]


@case("no_progress_timeout_goes_to_error")
def _(bg):
    with Origin(files={"a.bin": 100_000, "b.bin": 100_000, "c.bin": 100_000, "x.bin": 12 * MiB},
                locations="location = /files/x.bin { " + paced("2m") + " }") as o:
        o, agent, t = started(bg, o)
        print("checks: origin down; set-min-retry-delay 1 and set-no-progress-timeout 3: "
              f"retried, then ERROR {CANNOT_CONNECT}; set-no-progress-timeout 0 on another "
              "job: its first error is ERROR, never TRANSIENT_ERROR. The no-progress timer "
              "starts at the first transient error (BITS), so a first error is retried even "
              "when the job sat idle (resumed 4 s after create) or waited in the queue (behind "
              "another job, --max-transfers 1) for longer than the timeout")
        a = new_job(t, agent, [(o.url("/files/a.bin"), o.path("out", "a.bin"))], "--name", "npt3")
        b = new_job(t, agent, [(o.url("/files/b.bin"), o.path("out", "b.bin"))], "--name", "npt0")
        c = new_job(t, agent, [(o.url("/files/c.bin"), o.path("out", "c.bin"))], "--name", "late")
        created_c = time.monotonic()
        if None in (a, b, c):
            return
        for j in (a, c):
            cmd(t, agent, "set-min-retry-delay", j, "1")
            cmd(t, agent, "set-no-progress-timeout", j, "3")
        cmd(t, agent, "set-no-progress-timeout", b, "0")
        o.stop()
        t.note(f"nginx stopped (port {o.port} refuses connections)")
        with Daemon(t, agent, o, "--max-transfers", "1") as d:
            cmd(t, agent, "resume", a)
            cmd(t, agent, "resume", b)
            doc, seen = poll_state(t, agent, b, ("ERROR", "TRANSFERRED"), 20, label="job npt0")
            t.eq("npt0: state", field(doc, "state"), "ERROR")
            t.eq("npt0: error.code", field(doc, "error", "code"), CANNOT_CONNECT)
            t.ok(f"npt0: never seen in TRANSIENT_ERROR ({seen})", "TRANSIENT_ERROR" not in seen)
            evb = [m for _, m in d.events(b)]
            t.eq("npt0: daemon lines (one run, then ERROR)",
                 [("started" if m.startswith("started") else m) for m in evb
                  if m.startswith("started") or STATE_LINE.match(m)], ["started", "ERROR"])
            doc, seen = poll_state(t, agent, a, ("ERROR", "TRANSFERRED"), 25, label="job npt3")
            t.eq("npt3: state", field(doc, "state"), "ERROR")
            t.eq("npt3: error.code", field(doc, "error", "code"), CANNOT_CONNECT)
            eva = [m for _, m in d.events(a)]
            t.ok(f"npt3: retried (TRANSIENT_ERROR then another run) before ERROR ({eva})",
                 "TRANSIENT_ERROR" in eva and sum(1 for m in eva if m.startswith("started")) >= 2)
            t.eq("npt3: last state the daemon logged", first_states(d, a)[-1:], ["ERROR"])

            idle = 4.0 - (time.monotonic() - created_c)
            if idle > 0:
                time.sleep(idle)  # the precondition: idle for longer than its timeout
            cmd(t, agent, "resume", c)
            d.wait_event(c, r"^(ERROR|TRANSIENT_ERROR)", 15)
            t.eq("late (resumed 4 s after create): first state the daemon logged",
                 first_states(d, c)[:1], ["TRANSIENT_ERROR"])
            doc, _ = poll_state(t, agent, c, ("ERROR", "TRANSFERRED"), 25, label="job late")
            t.eq("late: error.code", field(doc, "error", "code"), CANNOT_CONNECT)
            t.eq("output files (not partials) after the errors",
                 [x for x in (listing(o.path("out")) or []) if not x.startswith(".")], [])

            # A job that waits in the queue longer than its timeout: its first error too.
            o.restart()
            dead_url = f"http://127.0.0.1:{free_port()}/files/q.bin"
            t.note(f"nginx restarted on port {o.port}; the queued job's URL {dead_url} is on a "
                   "port nothing listens on")
            x = new_job(t, agent, [(o.url("/files/x.bin"), o.path("out", "x.bin"))], "--name", "blocker")
            q = new_job(t, agent, [(dead_url, o.path("out", "q.bin"))], "--name", "queued",
                        "--priority", "low")
            if x is None or q is None:
                return
            cmd(t, agent, "set-min-retry-delay", q, "1")
            cmd(t, agent, "set-no-progress-timeout", q, "3")
            cmd(t, agent, "resume", x)
            if not t.ok("blocker job started", d.wait_event(x, r"^started", 15)):
                return
            cmd(t, agent, "resume", q)
            poll_state(t, agent, x, "TRANSFERRED", 30, label="blocker job")
            d.wait_event(q, r"^(ERROR|TRANSIENT_ERROR)", 15)
            ev = d.events()
            q_start, x_end = first_index(ev, q, r"^started"), first_index(ev, x, r"^TRANSFERRED")
            t.ok(f"queued job ran only after the blocker (log lines #{q_start} > #{x_end})",
                 None not in (q_start, x_end) and q_start > x_end)
            t.eq("queued (waited > 3 s for its turn): first state the daemon logged",
                 first_states(d, q)[:1], ["TRANSIENT_ERROR"])
            doc, _ = poll_state(t, agent, q, ("ERROR", "TRANSFERRED"), 25, label="job queued")
            t.eq("queued: error.code", field(doc, "error", "code"), CANNOT_CONNECT)
        complete_and_check(t, agent, x, [(o.path("out", "x.bin"), o.sha("x.bin"))])


@case("fatal_error_goes_to_error_resume_retries")
def _(bg):
    with Origin(files={"a.bin": 100_000}) as o:
        o, agent, t = started(bg, o)
        print(f"checks: a job of a.bin then a 404 URL: ERROR {HTTP_404} at once (one run, no "
              "retry) naming the second file (file_index 1, its URL, remote_file) with the "
              "first one transferred; once the file exists on the origin, resume transfers it "
              "and a.bin is not fetched again")
        out_a, out = o.path("out", "a.bin"), o.path("out", "late.bin")
        late = o.url("/files/late.bin")
        job = new_job(t, agent, [(o.url("/files/a.bin"), out_a), (late, out)])
        if job is None:
            return
        with Daemon(t, agent, o) as d:
            cmd(t, agent, "resume", job)
            doc, seen = poll_state(t, agent, job, ("ERROR", "TRANSFERRED"), 20)
            t.eq("state", field(doc, "state"), "ERROR")
            t.eq("error.code", field(doc, "error", "code"), HTTP_404)
            t.eq("error.symbol", field(doc, "error", "symbol"), "BG_E_HTTP_ERROR_404")
            t.eq("error.context", field(doc, "error", "context"), "remote_file")
            t.eq("error.file_index", field(doc, "error", "file_index"), 1)
            t.eq("error.url", field(doc, "error", "url"), late)
            t.eq("files_transferred at the error", field(doc, "files_transferred"), 1)
            t.ok(f"never TRANSIENT_ERROR ({seen})", "TRANSIENT_ERROR" not in seen)
            ev = [m for _, m in d.events(job)]
            t.eq("daemon lines for the job (one run, then ERROR)",
                 [("started" if m.startswith("started") else m) for m in ev
                  if m.startswith("started") or STATE_LINE.match(m)], ["started", "ERROR"])
            t.eq("output file exists after the 404", os.path.exists(out), False)
            o.put_file("late.bin", os.urandom(400_000))
            cmd(t, agent, "resume", job)
            doc, _ = poll_state(t, agent, job, "TRANSFERRED", 30)
            t.eq("error after the transfer", field(doc, "error"), None)
        complete_and_check(t, agent, job, [(out_a, o.sha("a.bin")), (out, o.sha("late.bin"))])
        t.eq("requests for the file (statuses)",
             [x["status"] for x in o.wait_requests("/files/late.bin", 2)], [404, 200])
        t.eq("requests for a.bin (not fetched again)", len(o.requests("/files/a.bin")), 1)


# ---- 8. credentials across hosts --------------------------------------------------------

@case("credentials_not_sent_after_cross_host_redirect")
def _(bg):
    """set-credentials (basic, password file) and set-headers 'Authorization: Bearer x' reach the
    first server only; after a 302 to another port nothing is sent there; both jobs complete"""
    locs = ("location = /x/a.bin { return 302 @BASE2@/files/a.bin; }\n"
            "        location = /x/b.bin { return 302 @BASE2@/files/b.bin; }")
    with Origin(files={"a.bin": 200_000, "b.bin": 200_000}, second=True, locations=locs) as o:
        o, agent, t = started(bg, o)
        pw = o.path("password.txt")
        with open(pw, "w") as f:
            f.write("s3cr3t pass\n")
        os.chmod(pw, 0o600)
        out_a, out_b = o.path("out", "a.bin"), o.path("out", "b.bin")
        ja = new_job(t, agent, [(o.url("/x/a.bin"), out_a)], "--name", "basic")
        jb = new_job(t, agent, [(o.url("/x/b.bin"), out_b)], "--name", "bearer")
        if ja is None or jb is None:
            return
        cmd(t, agent, "set-credentials", ja, "alice", "--password-file", pw)
        cmd(t, agent, "set-headers", jb, "Authorization: Bearer x")
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", ja)
            cmd(t, agent, "resume", jb)
            poll_state(t, agent, ja, "TRANSFERRED", 30, label="job basic")
            poll_state(t, agent, jb, "TRANSFERRED", 30, label="job bearer")
        complete_and_check(t, agent, ja, [(out_a, o.sha("a.bin"))])
        complete_and_check(t, agent, jb, [(out_b, o.sha("b.bin"))])
        basic = "Basic " + base64.b64encode(b"alice:s3cr3t pass").decode()
        for n, want in (("a.bin", basic), ("b.bin", "Bearer x")):
            first = o.wait_requests(f"/x/{n}", 1, server="main")
            t.eq(f"Authorization seen by server 1 for /x/{n}", [x["authorization"] for x in first], [want])
            t.eq(f"server 1 answered /x/{n} with", [x["status"] for x in first], [302])
            second = o.wait_requests(f"/files/{n}", 1, server="second")
            t.eq(f"server 2 requests for /files/{n} (status, Authorization)",
                 [(x["status"], x["authorization"]) for x in second], [(200, None)])
        t.eq("requests to server 2 carrying any Authorization",
             [x["uri"] for x in o.requests(server="second") if x["authorization"]], [])


# ---- 9. CRL checking turned on mid-file -------------------------------------------------

CRL_BIG = 24 * MiB


def mkcerts_path():
    p = os.environ.get("MKCERTS") or os.path.join(HERE, "..", "..", "scripts", "mkcerts")
    return os.path.abspath(p)


class CrlOrigin(Origin):
    """A plain server serving the CRLs of the test PKI under /crl/ (plus LOCATIONS), and one
    HTTPS server per leaf of scripts/mkcerts named in LEAVES (o.extra_ports[i], 'extrai' in
    the log), each serving /files/ with /files/big.bin at 4 MiB/s."""

    def __init__(self, files, leaves=("good",), locations=""):
        self.leaves = tuple(leaves)
        super().__init__(files=files, locations="location /crl/ { alias @DIR@/crl/; }\n" + locations,
                         http_extra=self._tls_servers, extra_ports=len(self.leaves),
                         before_start=self._make_pki)

    def pki(self, name):
        return self.path("pki", name)

    def tls_file_url(self, name, leaf="good"):
        return f"https://127.0.0.1:{self.extra_ports[self.leaves.index(leaf)]}/files/{name}"

    def _make_pki(self, o):
        r = subprocess.run([mkcerts_path(), self.path("pki"), f"{self.base}/crl"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise OriginError(f"mkcerts failed ({r.returncode}): {r.stdout}{r.stderr}")
        os.makedirs(self.path("crl"), exist_ok=True)
        os.chmod(self.path("crl"), 0o755)
        for name in ("inter.crl", "root.crl"):
            shutil.copyfile(self.pki(name), self.path("crl", name))
            os.chmod(self.path("crl", name), 0o644)

    def _tls_servers(self, o):
        return "\n".join(f"""    server {{
        listen 127.0.0.1:{port} ssl;
        server_name leaf-{leaf};
        ssl_certificate {self.pki(leaf + '.pem')};
        ssl_certificate_key {self.pki(leaf + '.key')};
        root {self.dir}/www;
        location /files/ {{ }}
        location = /files/big.bin {{ {paced('4m')} }}
    }}""" for leaf, port in zip(self.leaves, self.extra_ports))


@case("revoked_unreachable_crl_and_disallowed_redirect_are_fatal")
def _(bg):
    """BITS puts these jobs in the fatal error state: a daemon job (crl-check) on a revoked leaf
    ends ERROR 0x80072F8A, one whose CRL cannot be fetched ERROR 0x80072F19, one under
    redirect-disallow meeting a 302 ERROR 0x8007012E with the target as its remote URL; each
    after one run, never TRANSIENT_ERROR"""
    with CrlOrigin(files={"f.bin": 100_000}, leaves=("revoked", "crlunreachable"),
                   locations="location = /moved { return 302 @BASE@/files/f.bin; }") as o:
        o, agent, t = started(bg, o)
        cases = (("revoked", o.tls_file_url("f.bin", "revoked"), "crl-check", "0x80072F8A"),
                 ("crlunreachable", o.tls_file_url("f.bin", "crlunreachable"), "crl-check",
                  "0x80072F19"),
                 ("disallow", o.url("/moved"), "redirect-disallow", "0x8007012E"))
        jobs = {}
        for name, url, flags, _ in cases:
            jobs[name] = new_job(t, agent, [(url, o.path("out", f"{name}.bin"))], "--name", name)
            if jobs[name] is None:
                return
            cmd(t, agent, "set-security-flags", jobs[name], flags)
        with Daemon(t, agent, o, global_args=("--ca-file", o.pki("root.pem"))) as d:
            for name, _, _, _ in cases:
                cmd(t, agent, "resume", jobs[name])
            for name, url, _, code in cases:
                doc, seen = poll_state(t, agent, jobs[name], ("ERROR", "TRANSFERRED"), 30, label=name)
                t.eq(f"{name}: state", field(doc, "state"), "ERROR")
                t.eq(f"{name}: error.code", field(doc, "error", "code"), code)
                t.note(f"{name}: error.message {field(doc, 'error', 'message')!r}")
                t.ok(f"{name}: never TRANSIENT_ERROR ({seen})", "TRANSIENT_ERROR" not in seen)
                ev = [m for _, m in d.events(jobs[name])]
                t.eq(f"{name}: daemon lines for the job (one run, then ERROR)",
                     [("started" if m.startswith("started") else m) for m in ev
                      if m.startswith("started") or STATE_LINE.match(m)], ["started", "ERROR"])
                t.eq(f"{name}: no output", os.path.exists(o.path("out", f"{name}.bin")), False)
            t.eq("disallow: remote_url is the redirect target",
                 field(doc_of(agent, jobs["disallow"]), "files", 0, "remote_url"), o.url("/files/f.bin"))
        t.eq("the refused https servers answered no request",
             [len(o.requests(server=f"extra{i}")) for i in range(2)], [0, 0])
        t.eq("the disallowed redirect's target was never fetched", len(o.requests("/files/f.bin")), 0)


@case("crl_turned_on_mid_file_restarts_it")
def _(bg):
    """an https job (daemon --ca-file root.pem, leaf good) of a small file then a large
    rate-limited one; set-security-flags crl-check once the large file's partial passes 4 MiB:
    that file restarts from byte 0 (a new request without Range), the small finished file is not
    fetched again, the job ends TRANSFERRED with the right bytes"""
    if not os.access(mkcerts_path(), os.X_OK):
        print(f"  FAIL  scripts/mkcerts not found at {mkcerts_path()} (set MKCERTS)")
        bg.t.failed += 1
        return
    with CrlOrigin(files={"f.bin": 100_000, "big.bin": CRL_BIG}) as o:
        o, agent, t = started(bg, o)
        outdir = o.path("out")
        out_f, out_big = os.path.join(outdir, "f.bin"), os.path.join(outdir, "big.bin")
        job = new_job(t, agent, [(o.tls_file_url("f.bin"), out_f), (o.tls_file_url("big.bin"), out_big)])
        if job is None:
            return
        with Daemon(t, agent, o, global_args=("--ca-file", o.pki("root.pem"))) as d:
            cmd(t, agent, "resume", job)
            size = wait_partial(t, agent, job, out_big, 4 * MiB)
            if size is None:
                return
            d_before = doc_of(agent, job)
            t.eq("files_transferred when crl-check is set", field(d_before, "files_transferred"), 1)
            n_before = len(o.requests("/files/big.bin", settle=False))
            cmd(t, agent, "set-security-flags", job, "crl-check")
            t.note(f"crl-check set with the partial of big.bin at {size} bytes "
                   f"({n_before} finished request(s) for it logged then)")
            r = cmd(t, agent, "get-security-flags", job)
            t.ok(f"get-security-flags shows 0x0001 ({r.out.strip()!r})", r.out.startswith("0x0001"))
            doc, _ = poll_state(t, agent, job, ("TRANSFERRED", "ERROR"), 45)
            t.eq("state", field(doc, "state"), "TRANSFERRED")
            t.eq("error", field(doc, "error"), None)
        complete_and_check(t, agent, job, [(out_f, o.sha("f.bin")), (out_big, o.sha("big.bin"))])
        recs = settled_log(o)
        big = [x for x in recs if x["uri"] == "/files/big.bin"]
        t.eq("requests for big.bin with a Range (it must restart from byte 0, never resume)",
             [x["range"] for x in big if x["range"]], [])
        t.ok(f"big.bin asked twice from byte 0: the cut first request, then a 200 of the whole "
             f"file ({show_recs(big)})",
             len(big) >= 2 and all(x["status"] == 200 for x in big)
             and big[0]["body_bytes_sent"] < CRL_BIG and big[-1]["body_bytes_sent"] == CRL_BIG)
        t.eq("requests for f.bin (transferred before the change: not fetched again)",
             [x["status"] for x in recs if x["uri"] == "/files/f.bin"], [200])
        t.ok("the CRL of the intermediate was fetched after crl-check was set",
             any(x["uri"] == "/crl/inter.crl" and x["status"] == 200 for x in recs), repr(show_recs(recs)))


# ---- 10./11. cancel, suspend ------------------------------------------------------------

@case("cancel_removes_partial_data")
def _(bg):
    """cancel while the job transfers: CANCELLED, its partial file removed, no output; the daemon
    keeps running and transfers another job afterwards"""
    with Origin(files={"big.bin": 16 * MiB, "other.bin": 300_000},
                locations="location = /files/big.bin { " + paced("2m") + " }") as o:
        o, agent, t = started(bg, o)
        out = o.path("out", "big.bin")
        out2 = o.path("out2", "other.bin")
        os.makedirs(os.path.dirname(out2))
        job = new_job(t, agent, [(o.url("/files/big.bin"), out)], "--name", "doomed")
        other = new_job(t, agent, [(o.url("/files/other.bin"), out2)], "--name", "other")
        if job is None or other is None:
            return
        with Daemon(t, agent, o) as d:
            if not resumed_until(t, agent, job, out, 2 * MiB):
                return
            cmd(t, agent, "cancel", job)
            poll_state(t, agent, job, "CANCELLED", 10)
            deadline = time.monotonic() + 15
            while partials(o.path("out"), "big.bin") and time.monotonic() < deadline:
                time.sleep(0.05)
            t.eq("partial files of the cancelled job", partials(o.path("out"), "big.bin"), [])
            t.eq("output folder of the cancelled job", listing(o.path("out")), [])
            t.ok("the daemon logged the job CANCELLED", d.wait_event(job, r"^CANCELLED", 10), repr(d.events(job)))
            cmd(t, agent, "complete", job, rc=2)
            cmd(t, agent, "resume", job, rc=2)
            cmd(t, agent, "resume", other)
            poll_state(t, agent, other, "TRANSFERRED", 30, label="the other job")
            t.ok("the daemon is still running", d.alive())
        complete_and_check(t, agent, other, [(out2, o.sha("other.bin"))])
        recs = o.wait_requests("/files/big.bin", 1)
        t.ok(f"the cancelled transfer was cut (bytes sent {[x['body_bytes_sent'] for x in recs]} "
             f"< {16 * MiB})", recs and all(x["body_bytes_sent"] < 16 * MiB for x in recs))
        time.sleep(0.5)
        t.eq("partial files of the cancelled job at the end", partials(o.path("out"), "big.bin"), [])


@case("suspend_then_resume_continues_with_range")
def _(bg):
    """suspend mid-transfer: SUSPENDED and the partial stops growing; resume: continues with a
    Range request answered 206; the origin sends <= 1.1 x the file"""
    size = 16 * MiB
    with big_job(bg, size) as (o, agent, t, job, out):
        if job is None:
            return
        with Daemon(t, agent, o) as d:
            if not resumed_until(t, agent, job, out, 4 * MiB):
                return
            cmd(t, agent, "suspend", job)
            poll_state(t, agent, job, "SUSPENDED", 10)
            t.ok("the daemon's run of the job ended (log: SUSPENDED)",
                 d.wait_event(job, r"^SUSPENDED", 10), repr(d.events(job)))
            s1 = partial_size(o.path("out"), "big.bin")
            time.sleep(1.5)
            s2 = partial_size(o.path("out"), "big.bin")
            t.ok(f"partial size stays at {s1} while suspended (1.5 s later: {s2})", s1 == s2 and s1 > 0)
            t.eq("state still SUSPENDED", field(doc_of(agent, job), "state"), "SUSPENDED")
            n = len(o.wait_requests("/files/big.bin", 1))
            t.eq("requests for the file logged after the suspend (the cut one)", n, 1)
            cmd(t, agent, "resume", job)
            poll_state(t, agent, job, "TRANSFERRED", 30)
        expect_big_completed_resumed(t, agent, o, job, out, size)


# ---- 12. notification command -----------------------------------------------------------

@case("notify_cmd_runs_with_job_id")
def _(bg):
    """set-notify-cmd PROGRAM ARGS runs (without a shell) with the job id as last argument when the
    job reaches TRANSFERRED, and when another reaches ERROR"""
    with Origin(files={"a.bin": 100_000}) as o:
        o, agent, t = started(bg, o)
        ok_out, bad_out = o.path("out", "a.bin"), o.path("out", "missing.bin")
        good = new_job(t, agent, [(o.url("/files/a.bin"), ok_out)], "--name", "good")
        bad = new_job(t, agent, [(o.url("/files/missing.bin"), bad_out)], "--name", "bad")
        if good is None or bad is None:
            return
        marks = {good: o.path("notified-good.txt"), bad: o.path("notified-bad.txt")}
        for j, path in marks.items():
            code = f"import sys; f = open({path!r}, 'a'); f.write(sys.argv[1] + '\\n'); f.close()"
            cmd(t, agent, "set-notify-cmd", j, sys.executable, "-c", code)
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", good)
            cmd(t, agent, "resume", bad)
            poll_state(t, agent, good, "TRANSFERRED", 30, label="good job")
            doc, _ = poll_state(t, agent, bad, "ERROR", 30, label="bad job")
            t.eq("bad job error.code", field(doc, "error", "code"), HTTP_404)
            deadline = time.monotonic() + 15
            while not all(read_text(p).endswith("\n") for p in marks.values()) and time.monotonic() < deadline:
                time.sleep(0.05)
        for j, path in marks.items():
            got = read_text(path, ABSENT)
            t.eq(f"{os.path.basename(path)}: the job id, written once", got, j + "\n")
        complete_and_check(t, agent, good, [(ok_out, o.sha("a.bin"))])


# ---- 13. replace-remote-prefix ----------------------------------------------------------

@case("replace_remote_prefix_then_transfers_from_new_host")
def _(bg):
    """replace-remote-prefix of a job's 2 files from server 1 to server 2 prints '2 files changed';
    server 2 serves them, server 1 sees nothing; info keeps the original URL. Under
    redirect-report a file whose remote URL became the final URL is not matched by its original
    prefix ('0 files changed'), mid-transfer and after the transfer"""
    locs = ("location = /r/big.bin { return 302 @BASE@/files/big.bin; }\n"
            "        location = /files/big.bin { " + paced("4m") + " }")
    big = 12 * MiB
    with Origin(files={"a.bin": 200_000, "b.bin": 300_000, "big.bin": big}, second=True, locations=locs) as o:
        o, agent, t = started(bg, o)
        p1, p2 = o.base + "/", o.base2 + "/"
        outs = {n: o.path("out", n) for n in ("a.bin", "b.bin")}
        job = new_job(t, agent, [(o.url(f"/files/{n}"), outs[n]) for n in outs], "--name", "moved")
        if job is None:
            return
        r = cmd(t, agent, "replace-remote-prefix", job, p1, p2)
        t.eq("replace-remote-prefix output", r.out.strip(), "2 files changed")
        d0 = info(t, agent, job)
        t.eq("remote_url of the files", [field(d0, "files", i, "remote_url") for i in (0, 1)],
             [o.url2("/files/a.bin"), o.url2("/files/b.bin")])
        t.eq("original_url of the files", [field(d0, "files", i, "original_url") for i in (0, 1)],
             [o.url("/files/a.bin"), o.url("/files/b.bin")])
        r = cmd(t, agent, "replace-remote-prefix", job, p1, p2)
        t.eq("replace-remote-prefix again (nothing starts with the old prefix now)", r.out.strip(),
             "0 files changed")

        out_big = o.path("out", "big.bin")
        rep = new_job(t, agent, [(o.url("/r/big.bin"), out_big)], "--name", "reported")
        if rep is None:
            return
        cmd(t, agent, "set-security-flags", rep, "redirect-report")
        with Daemon(t, agent, o) as d:
            cmd(t, agent, "resume", job)
            doc, _ = poll_state(t, agent, job, "TRANSFERRED", 30, label="moved job")
            t.eq("remote_url after the transfer", [field(doc, "files", i, "remote_url") for i in (0, 1)],
                 [o.url2("/files/a.bin"), o.url2("/files/b.bin")])
            cmd(t, agent, "resume", rep)
            if wait_partial(t, agent, rep, out_big, 2 * MiB) is None:
                return
            cmd(t, agent, "suspend", rep)
            poll_state(t, agent, rep, "SUSPENDED", 10, label="reported job")
            d.wait_event(rep, r"^SUSPENDED", 10)
            dr = info(t, agent, rep)
            t.eq("reported job mid-transfer: remote_url (the final URL)", field(dr, "files", 0, "remote_url"),
                 o.url("/files/big.bin"))
            t.eq("reported job mid-transfer: original_url", field(dr, "files", 0, "original_url"),
                 o.url("/r/big.bin"))
            t.eq("reported job mid-transfer: done", field(dr, "files", 0, "done"), False)
            r = cmd(t, agent, "replace-remote-prefix", rep, o.url("/r/"), o.url2("/r/"))
            t.eq("replace-remote-prefix with the original /r/ prefix, mid-transfer", r.out.strip(),
                 "0 files changed")
            t.eq("remote_url unchanged", field(info(t, agent, rep), "files", 0, "remote_url"),
                 o.url("/files/big.bin"))
            cmd(t, agent, "resume", rep)
            poll_state(t, agent, rep, "TRANSFERRED", 30, label="reported job")
            r = cmd(t, agent, "replace-remote-prefix", rep, o.url("/r/"), o.url2("/r/"))
            t.eq("replace-remote-prefix with the /r/ prefix after the transfer", r.out.strip(),
                 "0 files changed")
        complete_and_check(t, agent, job, [(outs[n], o.sha(n)) for n in outs])
        complete_and_check(t, agent, rep, [(out_big, o.sha("big.bin"))])
        recs = settled_log(o, quiet=1.0)
        t.eq("server 1 requests for a.bin / b.bin",
             show_recs([x for x in recs if x["server"] == "main" and x["uri"] in ("/files/a.bin", "/files/b.bin")]), [])
        t.eq("server 2 requests (uri, status)", sorted((x["uri"], x["status"]) for x in recs if x["server"] == "second"),
             [("/files/a.bin", 200), ("/files/b.bin", 200)])
        t.eq("requests for /r/big.bin (the resume went straight to the final URL)",
             [x["status"] for x in recs if x["uri"] == "/r/big.bin"], [302])


# ---- 14. kill -9 soak -------------------------------------------------------------------

SOAK_FILES = 6
SOAK_SIZE = 16 * MiB
SOAK_KILLS = 20


@case("daemon_kill9_soak_outputs_intact")
def _(bg):
    names = [f"f{i}.bin" for i in range(SOAK_FILES)]
    with Origin(files={n: SOAK_SIZE for n in names},
                http_extra=paced("5m")) as o:
        o, agent, t = started(bg, o)
        seed = int(os.environ.get("BGCOPY_SOAK_SEED") or random.SystemRandom().randrange(1 << 30))
        rng = random.Random(seed)
        print(f"checks: one job of {SOAK_FILES} x {SOAK_SIZE // MiB} MiB; the daemon is killed "
              f"with SIGKILL at {SOAK_KILLS} random moments (seed {seed}: BGCOPY_SOAK_SEED={seed} "
              "replays them) and restarted at once; then it finishes: every output has the right "
              "SHA-256 and the origin sent <= 1.1 x the total")
        outs = {n: o.path("out", n) for n in names}
        job = new_job(t, agent, [(o.url(f"/files/{n}"), outs[n]) for n in names], "--name", "soak")
        if job is None:
            return
        cmd(t, agent, "resume", job)
        with Daemon(t, agent, o) as d:
            moments = []
            for _ in range(SOAK_KILLS):
                delay = rng.uniform(0.15, 1.4)
                time.sleep(delay)
                d.kill9()
                moments.append(round(delay, 2))
                if not d.start(wait=False):
                    return
                state = field(doc_of(agent, job), "state")
                if state in ("TRANSFERRED", "ERROR"):
                    t.note(f"the job was {state} after {len(moments)} kill(s)")
                    break
            dd = doc_of(agent, job)
            t.note(f"killed {d.kills} times (seconds between restart and kill: {moments}); job then "
                   f"{field(dd, 'state')} with {field(dd, 'bytes_transferred')} bytes, "
                   f"{field(dd, 'files_transferred')} file(s)")
            doc, _ = poll_state(t, agent, job, ("TRANSFERRED", "ERROR"), 50)
            t.eq("state", field(doc, "state"), "TRANSFERRED")
            t.eq("error", field(doc, "error"), None)
        t.eq("outputs before complete", [x for x in (listing(o.path("out")) or []) if not x.startswith(".")], [])
        complete_and_check(t, agent, job, [(outs[n], o.sha(n)) for n in names])
        settled_log(o)
        o.stop()  # every request nginx still had is logged or gone; the log is final
        recs = [x for x in o.log() if x["uri"] in {f"/files/{n}" for n in names}]
        t.note(f"{len(recs)} requests for the files: {sum(1 for x in recs if x['status'] == 206)} "
               f"answered 206, {sum(1 for x in recs if x['status'] == 200)} answered 200")
        bad = [x for x in recs if (range_start(x["range"]) or 0) > 0 and x["status"] != 206]
        t.eq("Range requests answered other than 206", show_recs(bad), [])
        total = sum(x["bytes_sent"] or 0 for x in recs)
        want = SOAK_FILES * SOAK_SIZE
        t.ok(f"bytes sent by the origin for the files ({total}) <= 1.1 x total ({int(want * 1.1)})",
             total <= want * 1.1, repr(show_recs(recs)))


# ---- 15. two daemons --------------------------------------------------------------------

@case("two_daemons_never_transfer_the_same_job")
def _(bg):
    """two daemons on the same home, 3 jobs: each file is fetched exactly once (one request, 200,
    whole file), each job run by one daemon, all TRANSFERRED"""
    names = ("a.bin", "b.bin", "c.bin")
    size = 4 * MiB
    with Origin(files={n: size for n in names}, http_extra=paced("2m")) as o:
        o, agent, t = started(bg, o)
        outs = {n: o.path("out", n) for n in names}
        jobs = {n: new_job(t, agent, [(o.url(f"/files/{n}"), outs[n])], "--name", n) for n in names}
        if None in jobs.values():
            return
        with Daemon(t, agent, o, label="daemon1") as d1, Daemon(t, agent, o, label="daemon2") as d2:
            for n in names:
                cmd(t, agent, "resume", jobs[n])
            for n in names:
                poll_state(t, agent, jobs[n], "TRANSFERRED", 40, label=f"job {n}")
            for n in names:
                runs = [(lbl, m) for lbl, d in (("daemon1", d1), ("daemon2", d2))
                        for _, m in d.events(jobs[n]) if m.startswith("started")]
                t.eq(f"job {n}: daemons that ran it", [lbl for lbl, _ in runs][:1] * len(runs),
                     [lbl for lbl, _ in runs])
        for n in names:
            complete_and_check(t, agent, jobs[n], [(outs[n], o.sha(n))])
        recs = settled_log(o, quiet=1.0)
        for n in names:
            got = [(x["status"], x["range"], x["body_bytes_sent"]) for x in recs if x["uri"] == f"/files/{n}"]
            t.eq(f"requests for {n} (status, Range, body bytes)", got, [(200, None, size)])


# ---- 16. SIGTERM ------------------------------------------------------------------------

@case("sigterm_stops_cleanly_and_restart_resumes")
def _(bg):
    """SIGTERM mid-transfer: the daemon exits 0 (within 10 s), logs 'stopped', the job is QUEUED
    with its partial kept; a new daemon resumes it with a Range request; the origin sends <= 1.1
    x the file"""
    size = 16 * MiB
    with big_job(bg, size) as (o, agent, t, job, out):
        if job is None:
            return
        with Daemon(t, agent, o) as d:
            if not resumed_until(t, agent, job, out, 4 * MiB):
                return
            rc, forced = d.stop(signal.SIGTERM, timeout=10)
            t.eq("daemon exit status after SIGTERM", rc, 0)
            t.eq("daemon needed SIGKILL after 10 s", forced, False)
            t.ok("daemon logged 'stopped'", d.text().rstrip().endswith("stopped"), d.text()[-300:])
            doc = info(t, agent, job)
            t.eq("state after the daemon stopped", field(doc, "state"), "QUEUED")
            kept = partial_size(o.path("out"), "big.bin")
            t.ok(f"partial kept ({kept} bytes)", 0 < kept < size)
            t.ok(f"bytes_transferred kept ({field(doc, 'bytes_transferred')})",
                 isinstance(field(doc, "bytes_transferred"), int) and field(doc, "bytes_transferred") > 0)
            d.start()
            poll_state(t, agent, job, "TRANSFERRED", 30)
        expect_big_completed_resumed(t, agent, o, job, out, size)


# ---- 17. wait ---------------------------------------------------------------------------

@case("wait_timeout_exits_3_and_error_exits_1")
def _(bg):
    with Origin(files={"slow.bin": 8 * MiB}, locations="location = /files/slow.bin { " + paced("1m") + " }") as o:
        o, agent, t = started(bg, o)
        print("checks: wait --timeout 1 on a job still transferring exits 3 and says it timed "
              f"out; wait on a job that ends in ERROR ({HTTP_404}) exits 1 naming the code; wait "
              "on a cancelled job exits 1")
        slow = new_job(t, agent, [(o.url("/files/slow.bin"), o.path("out", "slow.bin"))], "--name", "slow")
        bad = new_job(t, agent, [(o.url("/files/none.bin"), o.path("out", "none.bin"))], "--name", "bad")
        if slow is None or bad is None:
            return
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", slow)
            poll_state(t, agent, slow, "TRANSFERRING", 20, label="slow job")
            r = t.ran(agent.run("wait", slow, "--timeout", "1", timeout=30))
            t.eq("wait --timeout 1: exit status", r.rc, 3)
            t.ok("wait --timeout 1: stderr says it timed out", "timed out" in r.err, f"stderr: {r.err!r}")
            t.ok("wait --timeout 1: the message is clean text ending with the job's state "
                 f"({r.err.strip()!r})", "\ufffd" not in r.err
                 and re.search(r"\b(" + "|".join(STATES) + r")\s*$", r.err.strip()) is not None)
            t.ok("slow job still active after the wait timed out",
                 field(doc_of(agent, slow), "state") in ("CONNECTING", "TRANSFERRING", "QUEUED"))
            cmd(t, agent, "resume", bad)
            r = t.ran(agent.run("wait", bad, "--timeout", "30", timeout=60))
            t.eq("wait on the failing job: exit status", r.rc, 1)
            t.ok(f"wait on the failing job: stderr names {HTTP_404}", HTTP_404.lower() in r.err.lower(),
                 f"stderr: {r.err!r}")
            cmd(t, agent, "cancel", slow)
            r = t.ran(agent.run("wait", slow, "--timeout", "30", timeout=60))
            t.eq("wait on the cancelled job: exit status", r.rc, 1)


# ---- set-proxy ----------------------------------------------------------------------------

def proxy_server(o):
    """A forward proxy for the origin's main server on o.extra_ports[0] (nginx takes the
    absolute-form request line a client sends to a proxy; its access log names it
    'extra0')."""
    return f"""    server {{
        listen 127.0.0.1:{o.extra_ports[0]};
        location / {{ proxy_pass http://127.0.0.1:{o.port}; }}
    }}
"""


@case("set_proxy_routes_job_through_proxy")
def _(bg):
    with Origin(files={"a.bin": 300_000}, extra_ports=1, http_extra=proxy_server) as o:
        o, agent, t = started(bg, o)
        proxy = f"http://127.0.0.1:{o.extra_ports[0]}"
        print(f"checks: set-proxy JOB {proxy} (an nginx forward proxy): the daemon sends the "
              "proxy an absolute-form request for the file, the origin gets it from the proxy, "
              "the job ends TRANSFERRED with the right bytes; malformed proxies given later are "
              "refused (exit 2) and leave the setting as it was")
        out = o.path("out", "a.bin")
        job = new_job(t, agent, [(o.url("/files/a.bin"), out)])
        if job is None:
            return
        cmd(t, agent, "set-proxy", job, proxy)
        for bad in ("127.0.0.1:1", "ftp://127.0.0.1:21", f"{proxy}/path", "http://", "http://a b:1",
                    "http://127.0.0.1", f"http://u:p%0a@127.0.0.1:{o.extra_ports[0]}"):
            r = cmd(t, agent, "set-proxy", job, bad, rc=2)
            t.ok(f"set-proxy {bad!r}: stderr says why", "set-proxy:" in r.err, f"stderr: {r.err!r}")
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", job)
            doc, _ = poll_state(t, agent, job, ("TRANSFERRED", "ERROR"), 30)
        t.eq("state", field(doc, "state"), "TRANSFERRED")
        complete_and_check(t, agent, job, [(out, o.sha("a.bin"))])
        via = o.requests(server="extra0")
        t.eq("requests the proxy received (request line)", [r["request"] for r in via],
             [f"GET {o.url('/files/a.bin')} HTTP/1.1"])
        t.eq("requests the origin received (from the proxy)",
             [r["uri"] for r in o.requests(server="main")], ["/files/a.bin"])


@case("set_proxy_none_bypasses_environment_proxy")
def _(bg):
    with Origin(files={"a.bin": 200_000, "b.bin": 100_000}) as o:
        o, agent, t = started(bg, o)
        dead = f"http://127.0.0.1:{free_port()}"
        print(f"checks: with http_proxy={dead} (nothing listens there) in the daemon's "
              f"environment, a job without set-proxy goes to that proxy and fails with "
              f"{CANNOT_CONNECT} (the origin never sees it), while a job with set-proxy none "
              "goes straight to the origin and ends TRANSFERRED")
        base_env = agent.env
        agent.env = lambda: {**base_env(), "http_proxy": dead}
        out_a, out_b = o.path("out", "a.bin"), o.path("out", "b.bin")
        env_job = new_job(t, agent, [(o.url("/files/a.bin"), out_a)], "--name", "env")
        direct = new_job(t, agent, [(o.url("/files/b.bin"), out_b)], "--name", "direct")
        if env_job is None or direct is None:
            return
        cmd(t, agent, "set-proxy", direct, "none")
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", direct)
            cmd(t, agent, "resume", env_job)
            d_direct, _ = poll_state(t, agent, direct, ("TRANSFERRED", "ERROR"), 30, label="direct")
            d_env, _ = poll_state(t, agent, env_job, ("TRANSIENT_ERROR", "ERROR"), 30, label="env")
        t.eq("job with set-proxy none: state", field(d_direct, "state"), "TRANSFERRED")
        complete_and_check(t, agent, direct, [(out_b, o.sha("b.bin"))])
        t.eq("job through the environment's proxy: error.code", field(d_env, "error", "code"),
             CANNOT_CONNECT)
        t.eq("origin requests for a.bin (the proxied job)", len(o.requests("/files/a.bin")), 0)
        t.eq("origin requests for b.bin", len(o.requests("/files/b.bin")), 1)


@case("wait_draws_progress_on_a_terminal_silent_otherwise")
def _(bg):
    """wait with stderr on a terminal draws a progress bar (\\r-led redraws, a percentage reaching
    100%) and exits 0; on pipes it prints nothing and exits 0"""
    size = 8 * MiB
    with Origin(files={"p.bin": size, "q.bin": size},
                locations="".join(f"location = /files/{n} {{ {paced('8m')} }}\n"
                                  for n in ("p.bin", "q.bin"))) as o:
        o, agent, t = started(bg, o)
        outs = {n: o.path("out", n) for n in ("p.bin", "q.bin")}
        jobs = {n: new_job(t, agent, [(o.url(f"/files/{n}"), outs[n])]) for n in outs}
        if None in jobs.values():
            return
        with Daemon(t, agent, o):
            for n in outs:
                cmd(t, agent, "resume", jobs[n])
            r = t.ran(agent.run_on_terminal("wait", jobs["p.bin"]))
            t.eq("wait on a terminal: exit status", r.rc, 0)
            draws = re.findall(r"\r *(\d+)%", r.out)
            t.ok("terminal output has \\r-led redraws with a percentage", draws != [],
                 f"terminal output: {r.out[-500:]!r}")
            t.ok("a redraw shows 100%", "100" in draws, f"percentages drawn: {draws}")
            r = t.ran(agent.run("wait", jobs["q.bin"], timeout=60))
            t.eq("wait on pipes: exit status", r.rc, 0)
            t.eq("wait on pipes: stdout and stderr", (r.out, r.err), ("", ""))
        complete_and_check(t, agent, jobs["p.bin"], [(outs["p.bin"], o.sha("p.bin"))])
        complete_and_check(t, agent, jobs["q.bin"], [(outs["q.bin"], o.sha("q.bin"))])


class ConnectProxy:
    """A forward proxy for https: answers CONNECT HOST:PORT by connecting to 127.0.0.1:PORT
    (whatever HOST names: nothing is resolved, and nothing leaves loopback) and relaying bytes
    both ways. Records each CONNECT target. Threads and real sockets, standard library only."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.targets = []
        self._lock = threading.Lock()
        self._stop = False

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self.sock.close()
        return False

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        up = None
        try:
            c.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = c.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split()
            with self._lock:
                self.targets.append(line)
            if len(parts) != 3 or parts[0] != "CONNECT":
                c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            up = socket.create_connection(("127.0.0.1", int(parts[1].rsplit(":", 1)[1])), timeout=30)
            c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
            if rest:
                up.sendall(rest)
            t = threading.Thread(target=self._pipe, args=(up, c), daemon=True)
            t.start()
            self._pipe(c, up)
            t.join(30)
        except (OSError, ValueError):
            pass
        finally:
            c.close()
            if up is not None:
                up.close()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@case("set_proxy_https_tunnel_keeps_origin_certificate_checks")
def _(bg):
    with Origin(files={"a.bin": 300_000}, https=True) as o, ConnectProxy() as proxy:
        o, agent, t = started(bg, o)
        port = o.tls_port
        good = f"https://127.0.0.1:{port}/files/a.bin"
        wrong = f"https://bgcopy-test.invalid:{port}/files/a.bin"
        print(f"checks: https through a CONNECT proxy (set-proxy, set-ca-file): {good} arrives "
              f"whole through a tunnel to 127.0.0.1:{port}; the certificate checks are the "
              f"origin's, not the proxy's: {wrong} (tunnelled to the same server, whose "
              "certificate does not name it) ends in ERROR 0x80072F06, and with "
              "ignore-cn-invalid it arrives")
        outs = {k: o.path("out", f"{k}.bin") for k in ("good", "wrong", "ignored")}
        jobs = {}
        for k, url, flags in (("good", good, None), ("wrong", wrong, None),
                              ("ignored", wrong, "ignore-cn-invalid")):
            jobs[k] = new_job(t, agent, [(url, outs[k])], "--name", k)
            if jobs[k] is None:
                return
            cmd(t, agent, "set-proxy", jobs[k], f"http://127.0.0.1:{proxy.port}")
            cmd(t, agent, "set-ca-file", jobs[k], o.ca_file)
            if flags:
                cmd(t, agent, "set-security-flags", jobs[k], flags)
        with Daemon(t, agent, o):
            docs = {}
            for k, job in jobs.items():
                cmd(t, agent, "resume", job)
                docs[k], _ = poll_state(t, agent, job, ("TRANSFERRED", "ERROR"), 30, label=k)
        t.eq("through the tunnel: state", field(docs["good"], "state"), "TRANSFERRED")
        complete_and_check(t, agent, jobs["good"], [(outs["good"], o.sha("a.bin"))])
        t.eq("a name the certificate lacks: state", field(docs["wrong"], "state"), "ERROR")
        t.eq("a name the certificate lacks: error.code", field(docs["wrong"], "error", "code"),
             "0x80072F06")
        t.eq("output of the refused job", os.path.exists(outs["wrong"]), False)
        t.eq("the same with ignore-cn-invalid: state", field(docs["ignored"], "state"), "TRANSFERRED")
        complete_and_check(t, agent, jobs["ignored"], [(outs["ignored"], o.sha("a.bin"))])
        t.ok("the proxy was asked to CONNECT to each origin (and for nothing else)",
             set(proxy.targets) == {f"CONNECT 127.0.0.1:{port} HTTP/1.1",
                                    f"CONNECT bgcopy-test.invalid:{port} HTTP/1.1"},
             repr(proxy.targets))
        t.eq("requests the TLS origin answered (the refused job sent none)",
             len(o.requests("/files/a.bin", server="tls")), 2)


# ---- expected SHA-256 of job files (add --sha256, a list's sha256= column) --------------

ERROR_CRC = "0x80070017"


def expect_digest_error(t, doc, index, url, got, want):
    """ERROR 0x80070017 for file INDEX, as `get --sha256` reports it: remote_file, the file's
    URL, 'URL: content SHA-256 is GOT, expected WANT'."""
    t.eq("state", field(doc, "state"), "ERROR")
    t.eq("error.code", field(doc, "error", "code"), ERROR_CRC)
    t.eq("error.symbol", field(doc, "error", "symbol"), "ERROR_CRC")
    t.eq("error.context", field(doc, "error", "context"), "remote_file")
    t.eq("error.file_index", field(doc, "error", "file_index"), index)
    t.eq("error.url", field(doc, "error", "url"), url)
    t.eq("error.message", field(doc, "error", "message"),
         f"{url}: content SHA-256 is {got}, expected {want}")


@case("job_sha256_right_completes_wrong_is_error_crc_leaving_nothing")
def _(bg):
    """add --sha256 with the right digest (upper-case): TRANSFERRED, the file right after
    complete; with a wrong digest: ERROR 0x80070017 as get --sha256 gives it, no file and no
    partial in its folder, the bytes not stored; resume fetches it again and ends the same way"""
    with Origin(files={"a.bin": 300_000, "b.bin": 200_000}) as o:
        o, agent, t = started(bg, o)
        good_dir, bad_dir = o.path("out", "good"), o.path("out", "bad")
        os.makedirs(good_dir)
        os.makedirs(bad_dir)
        good_out, bad_out = os.path.join(good_dir, "a.bin"), os.path.join(bad_dir, "b.bin")
        url_b = o.url("/files/b.bin")
        wrong = hashlib.sha256(b"not the content").hexdigest()
        good, bad = new_job(t, agent, [], "--name", "good"), new_job(t, agent, [], "--name", "bad")
        if good is None or bad is None:
            return
        cmd(t, agent, "add", good, o.url("/files/a.bin"), good_out, "--sha256", o.sha("a.bin").upper())
        cmd(t, agent, "add", bad, url_b, bad_out, "--sha256", wrong)
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", good)
            cmd(t, agent, "resume", bad)
            dg, _ = poll_state(t, agent, good, ("TRANSFERRED", "ERROR"), 30, label="the good job")
            db, seen = poll_state(t, agent, bad, ("ERROR", "TRANSFERRED"), 30, label="the bad job")
            t.eq("good: state", field(dg, "state"), "TRANSFERRED")
            t.eq("good: expected_sha256 (kept in lower case)", field(dg, "files", 0, "expected_sha256"),
                 o.sha("a.bin"))
            expect_digest_error(t, db, 0, url_b, o.sha("b.bin"), wrong)
            t.ok(f"bad: never TRANSIENT_ERROR ({seen})", "TRANSIENT_ERROR" not in seen)
            t.eq("bad: expected_sha256", field(db, "files", 0, "expected_sha256"), wrong)
            t.eq("bad: files[0].done", field(db, "files", 0, "done"), False)
            t.eq("bad: files[0].bytes_transferred", field(db, "files", 0, "bytes_transferred"), 0)
            t.eq("bad: its folder (no file, no partial, no temp file)", listing(bad_dir), [])
            s = t.ran(agent.run("cache", "show", url_b))
            t.eq("bad: the refused bytes are not stored (cache show exit)", s.rc, 1)
            cmd(t, agent, "resume", bad)
            deadline = time.monotonic() + 30
            while len(o.requests("/files/b.bin")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            db, _ = poll_state(t, agent, bad, "ERROR", 30, label="the bad job after resume")
            expect_digest_error(t, db, 0, url_b, o.sha("b.bin"), wrong)
            t.eq("bad: its folder after the second run", listing(bad_dir), [])
        complete_and_check(t, agent, good, [(good_out, o.sha("a.bin"))])
        cmd(t, agent, "complete", bad, rc=2)
        t.eq("bad: its folder after complete was refused", listing(bad_dir), [])
        t.eq("requests for b.bin (one per run)", [x["status"] for x in o.wait_requests("/files/b.bin", 2)],
             [200, 200])


@case("job_list_sha256_column_right_then_wrong")
def _(bg):
    """add --from a list whose lines carry sha256=HEX: the right one (a path with a space) is
    transferred, the wrong one ends the job in ERROR 0x80070017 at that file with nothing at its
    path and no partial; after complete is refused the first file's partial is still whole"""
    with Origin(files={"a.bin": 300_000, "b.bin": 200_000}) as o:
        o, agent, t = started(bg, o)
        outdir = o.path("out")
        out_a, out_b = os.path.join(outdir, "a copy.bin"), os.path.join(outdir, "b.bin")
        url_b = o.url("/files/b.bin")
        wrong = "0" * 64
        with open(o.path("files.list"), "w") as f:
            f.write(f"# digests\n{o.url('/files/a.bin')} {out_a} sha256={o.sha('a.bin').upper()}\n"
                    f"{url_b}\t{out_b}\tsha256={wrong}\n")
        job = new_job(t, agent, [])
        if job is None:
            return
        cmd(t, agent, "add", job, "--from", o.path("files.list"))
        d = info(t, agent, job)
        t.eq("files (local_path, expected_sha256)",
             [(x.get("local_path"), x.get("expected_sha256")) for x in (field(d, "files") or [])],
             [(out_a, o.sha("a.bin")), (out_b, wrong)])
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", job)
            d, _ = poll_state(t, agent, job, ("ERROR", "TRANSFERRED"), 30)
        expect_digest_error(t, d, 1, url_b, o.sha("b.bin"), wrong)
        t.eq("files_transferred", field(d, "files_transferred"), 1)
        t.eq("files[0].done", field(d, "files", 0, "done"), True)
        t.eq("output folder: only the first file's partial",
             listing(outdir), [f".a copy.bin.bgcopy-{job[:8]}.part"])
        ps = partials(outdir, "a copy.bin")
        if ps:
            t.eq("SHA-256 of the first file's partial", sha256_file(ps[0]), o.sha("a.bin"))
        cmd(t, agent, "complete", job, rc=2)
        t.eq("output paths after complete was refused", [os.path.exists(out_a), os.path.exists(out_b)],
             [False, False])


# ---- maximum download time (BITS IBackgroundCopyJob4::SetMaximumDownloadTime) -------------

MAXDOWNLOAD_TIMEOUT = "0x80200054"


def wait_bytes(t, agent, job, at_least, timeout, label):
    """Polls the job document until bytes_transferred >= AT_LEAST; returns the document."""
    deadline = time.monotonic() + timeout
    while True:
        doc = doc_of(agent, job)
        got = field(doc, "bytes_transferred")
        if isinstance(got, int) and got >= at_least:
            return doc
        if time.monotonic() > deadline:
            t.ok(f"{label}: {at_least} bytes transferred within {timeout} s", False, f"got {got}")
            return doc
        time.sleep(0.05)


@case("max_download_time_slow_file_errors_keeps_partial_resume_completes")
def _(bg):
    size = 4 * MiB + MiB // 2
    with Origin(files={"s.bin": size}, locations="location = /files/s.bin { " + paced("1m") + " }") as o:
        o, agent, t = started(bg, o)
        print("checks: a job with a maximum download time of 3 s whose file (4.5 MiB) is served "
              f"at 1 MiB/s is stopped in the middle of its transfer: ERROR {MAXDOWNLOAD_TIMEOUT} "
              "(BG_E_MAXDOWNLOAD_TIMEOUT), the committed bytes kept (partial file, "
              "bytes_transferred); resume starts the clock again from 0 and the rest (about "
              "1.5 MiB, under 3 s) comes with a Range request from the bytes kept")
        out = o.path("out", "s.bin")
        job = new_job(t, agent, [(o.url("/files/s.bin"), out)], "--name", "mdt")
        if job is None:
            return
        cmd(t, agent, "set-max-download-time", job, "3")
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", job)
            doc, seen = poll_state(t, agent, job, ("ERROR", "TRANSFERRED"), 30, label="job mdt")
            t.eq("state", field(doc, "state"), "ERROR")
            t.eq("error.code", field(doc, "error", "code"), MAXDOWNLOAD_TIMEOUT)
            t.eq("error.symbol", field(doc, "error", "symbol"), "BG_E_MAXDOWNLOAD_TIMEOUT")
            msg = field(doc, "error", "message") or ""
            t.ok(f"error.message names the maximum download time ({msg!r})",
                 "maximum download time" in msg)
            used = field(doc, "download_time_used")
            t.ok(f"download_time_used at the error is the limit ({used})", used in (3, 4))
            kept = field(doc, "bytes_transferred")
            t.ok(f"bytes_transferred kept: some, not all ({kept} of {size})",
                 isinstance(kept, int) and 0 < kept < size)
            t.ok(f"partial file kept, at least the committed bytes ({partial_size(o.path('out'), 's.bin')})",
                 isinstance(kept, int) and partial_size(o.path("out"), "s.bin") >= kept > 0)
            t.eq("output file before resume", os.path.exists(out), False)
            first = o.requests("/files/s.bin")
            t.eq("requests so far", len(first), 1)
            t.ok("the transfer was cut short (body bytes sent < size)",
                 len(first) == 1 and first[0]["body_bytes_sent"] < size,
                 repr([r["body_bytes_sent"] for r in first]))

            cmd(t, agent, "resume", job)
            doc, _ = poll_state(t, agent, job, ("ERROR", "TRANSFERRED"), 30, label="job mdt resumed")
            t.eq("state after resume", field(doc, "state"), "TRANSFERRED")
            t.eq("error after resume", field(doc, "error"), None)
            reqs = o.requests("/files/s.bin")
            t.eq("requests in all", len(reqs), 2)
            if len(reqs) == 2 and isinstance(kept, int):
                t.eq("the resumed request starts at the bytes kept", range_start(reqs[1]["range"]), kept)
        complete_and_check(t, agent, job, [(out, o.sha("s.bin"))])


@case("max_download_time_counts_only_while_running")
def _(bg):
    with Origin(files={"s.bin": 3 * MiB, "x.bin": 3 * MiB, "q.bin": 200_000},
                locations="location = /files/s.bin { " + paced("1m") + " }\n"
                          "location = /files/x.bin { " + paced("1m") + " }") as o:
        o, agent, t = started(bg, o)
        print("checks: time while SUSPENDED does not count: a job (limit 4 s, 3 MiB at 1 MiB/s) "
              "suspended after 1.5 MiB shows the same download_time_used (1 to 3 s) before and "
              "after 5 s in SUSPENDED; resumed, it completes. Time while QUEUED does not count: "
              "with --max-transfers 1, a job with a limit of 1 s waits behind a 3 s transfer, "
              "then runs and completes (200 kB)")
        s_out, x_out, q_out = o.path("out", "s.bin"), o.path("out", "x.bin"), o.path("out", "q.bin")
        s = new_job(t, agent, [(o.url("/files/s.bin"), s_out)], "--name", "suspended")
        x = new_job(t, agent, [(o.url("/files/x.bin"), x_out)], "--name", "blocker")
        q = new_job(t, agent, [(o.url("/files/q.bin"), q_out)], "--name", "queued", "--priority", "low")
        if None in (s, x, q):
            return
        cmd(t, agent, "set-max-download-time", s, "4")
        cmd(t, agent, "set-max-download-time", q, "1")
        with Daemon(t, agent, o, "--max-transfers", "1") as d:
            cmd(t, agent, "resume", s)
            wait_bytes(t, agent, s, 3 * MiB // 2, 20, "suspended")
            cmd(t, agent, "suspend", s)
            doc, _ = poll_state(t, agent, s, "SUSPENDED", 10, label="job suspended")
            d.wait_event(s, r"^(QUEUED|SUSPENDED|stopped)", 5)
            u1 = field(info(t, agent, s), "download_time_used")
            t.ok(f"download_time_used when suspended: 1 to 3 s ({u1})", isinstance(u1, int) and 1 <= u1 <= 3)
            time.sleep(5)  # the precondition: SUSPENDED for longer than the limit
            u2 = field(info(t, agent, s), "download_time_used")
            t.eq("download_time_used after 5 s in SUSPENDED", u2, u1)
            cmd(t, agent, "resume", s)
            doc, _ = poll_state(t, agent, s, ("ERROR", "TRANSFERRED"), 20, label="job suspended, resumed")
            t.eq("suspended job after resume: state", field(doc, "state"), "TRANSFERRED")

            cmd(t, agent, "resume", x)
            if not t.ok("blocker job started", d.wait_event(x, r"^started", 15)):
                return
            cmd(t, agent, "resume", q)
            t0 = time.monotonic()
            doc, _ = poll_state(t, agent, q, ("ERROR", "TRANSFERRED"), 30, label="job queued")
            waited = time.monotonic() - t0
            t.eq("queued job: state", field(doc, "state"), "TRANSFERRED")
            ev = d.events()
            q_start, x_end = first_index(ev, q, r"^started"), first_index(ev, x, r"^TRANSFERRED")
            t.ok(f"queued job ran only after the blocker (log lines #{q_start} > #{x_end}; "
                 f"{waited:.1f} s from its resume to its end, more than its limit)",
                 None not in (q_start, x_end) and q_start > x_end and waited > 1.5)
            doc, _ = poll_state(t, agent, x, "TRANSFERRED", 30, label="blocker job")
        complete_and_check(t, agent, s, [(s_out, o.sha("s.bin"))])
        complete_and_check(t, agent, q, [(q_out, o.sha("q.bin"))])
        complete_and_check(t, agent, x, [(x_out, o.sha("x.bin"))])


@case("max_download_time_get_set_while_running_errors_then_same_get_resumes")
def _(bg):
    size = 5 * MiB
    with Origin(files={"g.bin": size}, locations="location = /files/g.bin { " + paced("1m") + " }") as o:
        o, agent, t = started(bg, o)
        print("checks: `get` obeys the maximum download time too, and a limit set while the job "
              "runs applies at once: a get of 5 MiB at 1 MiB/s, its job given a limit of 3 s once "
              f"3.5 MiB are in, exits 1 with {MAXDOWNLOAD_TIMEOUT} and keeps its partial file; the "
              "same get again starts the clock from 0 (as resume does) and finishes the rest "
              "(under 2 s) from the bytes kept")
        url, out = o.url("/files/g.bin"), o.path("out", "g.bin")

        def limit_it(p, _size):
            r = t.ran(agent.run("list", "--json"))
            ids = [field(d, "id") for d in (r.doc if isinstance(r.doc, list) else [])]
            if not t.eq("jobs listed while the get runs", len(ids), 1):
                return None
            cmd(t, agent, "set-max-download-time", ids[0], "3")
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            return ids[0]

        res = interrupted_get(t, o, agent, url, out, 7 * MiB // 2, limit_it)
        if res is None or res[1] is None:
            return
        r, job = res
        t.eq("get: exit status", r.rc, 1)
        t.ok(f"get: stderr names {MAXDOWNLOAD_TIMEOUT}", MAXDOWNLOAD_TIMEOUT in r.err, repr(r.err))
        doc = info(t, agent, job)
        t.eq("state", field(doc, "state"), "ERROR")
        t.eq("error.code", field(doc, "error", "code"), MAXDOWNLOAD_TIMEOUT)
        kept = field(doc, "bytes_transferred")
        t.ok(f"bytes kept ({kept} of {size})", isinstance(kept, int) and 0 < kept < size)
        t.ok("partial file kept", partial_size(o.path("out"), "g.bin") >= (kept or 1))
        r = t.ran(agent.get(url, out, json_out=False))
        t.eq("the same get again: exit status", r.rc, 0)
        t.eq("SHA-256 of the output", sha256_file(out) if os.path.exists(out) else None, o.sha("g.bin"))
        reqs = o.requests("/files/g.bin")
        t.eq("requests in all", len(reqs), 2)
        if len(reqs) == 2:
            t.eq("the second get asked from the bytes kept", range_start(reqs[1]["range"]), kept)


@case("max_download_time_survives_kill9_of_the_daemon")
def _(bg):
    # The limit leaves the kill 6 s of margin (a loaded machine polls slowly), and the
    # bytes after the takeover tell the rest of the limit from a clock started again.
    size, limit = 16 * MiB, 10
    with Origin(files={"k.bin": size}, locations="location = /files/k.bin { " + paced("1m") + " }") as o:
        o, agent, t = started(bg, o)
        print(f"checks: the time used is in the job record, written as the transfer goes: a job "
              f"(limit {limit} s, 16 MiB at 1 MiB/s) whose daemon is killed with SIGKILL after 4 MiB "
              "shows at least 1 s used (written at least once a second); a new daemon takes it "
              f"over and it reaches ERROR {MAXDOWNLOAD_TIMEOUT} after the rest of its {limit} s "
              f"(fewer than {limit} - used + 2 MiB more), not after {limit} s more")
        job = new_job(t, agent, [(o.url("/files/k.bin"), o.path("out", "k.bin"))], "--name", "kill9")
        if job is None:
            return
        cmd(t, agent, "set-max-download-time", job, str(limit))
        with Daemon(t, agent, o) as d:
            cmd(t, agent, "resume", job)
            wait_bytes(t, agent, job, 4 * MiB, 30, "kill9")
            d.kill9()
            doc = info(t, agent, job)
            u1, b1 = field(doc, "download_time_used"), field(doc, "bytes_transferred")
            t.eq("state shown after the kill", field(doc, "state"), "QUEUED")
            t.ok(f"download_time_used after the kill: 1 to {limit - 1} s ({u1})",
                 isinstance(u1, int) and 1 <= u1 < limit)
            time.sleep(2)  # not running: does not count
            t.eq("download_time_used 2 s later, no daemon", field(info(t, agent, job), "download_time_used"), u1)
            d.start()
            doc, _ = poll_state(t, agent, job, ("ERROR", "TRANSFERRED"), 40, label="job kill9")
            t.eq("state", field(doc, "state"), "ERROR")
            t.eq("error.code", field(doc, "error", "code"), MAXDOWNLOAD_TIMEOUT)
            b2 = field(doc, "bytes_transferred")
            rest = (limit - u1 + 2) * MiB if isinstance(u1, int) else 0
            t.ok(f"bytes after the takeover: fewer than {rest} more ({b1} then {b2}); "
                 f"a clock started again would allow about {limit} MiB",
                 isinstance(b1, int) and isinstance(b2, int) and 0 <= b2 - b1 < rest)
            t.ok(f"download_time_used at the error: {limit} or {limit + 1} s "
                 f"({field(doc, 'download_time_used')})",
                 field(doc, "download_time_used") in (limit, limit + 1))


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
