#!/usr/bin/env python3
"""Integration cases for bandwidth limits: a job's own limit (get --max-rate, set-max-rate),
the daemon's limit shared by its transfers (daemon --max-rate, bgcopy.conf max_rate), its
daily schedule (max_rate_schedule, --max-rate-schedule) and BITS's foreground rule, against a
real nginx origin (origin.py). The checker and the driver are bgtest.py's.

Usage: test_rate.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_rate.py CASE)
       test_rate.py --list                    prints the case names, one a line
       test_rate.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Nothing here asserts a rate or a duration (scripts/bench --rate measures them): the cases
check the settings shown, the values refused (exit 2, one line on stderr), that a limited
transfer still completes with the right SHA-256, the limit the daemon says it applies as a
settable clock ($BGCOPY_TIME_OFFSET) crosses a schedule's boundary, and that the daemon's
limit holds back a background job but not a foreground one. Deadlines only bound a hang."""

import calendar
import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import (Bgcopy, case_registry, cmd, complete_and_check, Daemon, doc_of, field,  # noqa: E402
                    info, main, new_job, poll_state, started)
from origin import MiB, Origin, sha256_file  # noqa: E402

CASES, case = case_registry()


def one_line_refusal(t, r, what, needle):
    t.eq(f"{what}: exit status", r.rc, 2)
    t.eq(f"{what}: one line on stderr", r.err.count("\n"), 1)
    t.ok(f"{what}: stderr says {needle!r} ({r.err.strip()[:200]!r})", needle in r.err)


def rate_lines(d):
    """The daemon's 'rate limit now ...' lines, in order (the text after 'now ')."""
    return re.findall(r": rate limit now (.*)$", d.text(), re.M)


def wait_rate_lines(d, n, timeout):
    deadline = time.monotonic() + timeout
    while len(rate_lines(d)) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return rate_lines(d)


@case("max_rate_job_setting_shown_and_refused")
def _(bg):
    """set-max-rate takes bytes/s with K/M/G (powers of 1024) and none; info --json shows
    max_rate (null while none), info shows it; bad values are refused with exit 2 and one
    line on stderr, leaving the setting as it was; get --max-rate refuses a bad value the
    same way before any request"""
    with Origin(files={"a.bin": 100_000}) as o:
        o, agent, t = started(bg, o)
        job = new_job(t, agent, [], "--name", "rate")
        if job is None:
            return
        t.eq("max_rate of a new job", field(info(t, agent, job), "max_rate"), None)
        for v, want in (("10M", 10 * MiB), ("512K", 512 * 1024), ("100000", 100000), ("1G", 1 << 30)):
            cmd(t, agent, "set-max-rate", job, v)
            t.eq(f"max_rate after set-max-rate {v}", field(info(t, agent, job), "max_rate"), want)
        r = cmd(t, agent, "info", job)
        t.ok("info shows the limit", re.search(r"^  max rate +1073741824 B/s \(1G\)$", r.out, re.M)
             is not None, f"stdout: {r.out!r}")
        for bad in ("10Q", "-1", "1.5M", "", "2T"):
            r = t.ran(agent.run("set-max-rate", job, bad))
            one_line_refusal(t, r, f"set-max-rate JOB {bad!r}", "expected bytes per second")
        t.eq("max_rate after the refused values", field(info(t, agent, job), "max_rate"), 1 << 30)
        cmd(t, agent, "set-max-rate", job, "none")
        t.eq("max_rate after none", field(info(t, agent, job), "max_rate"), None)
        r = cmd(t, agent, "info", job)
        t.ok("info says none", re.search(r"^  max rate +none of its own$", r.out, re.M) is not None)
        r = t.ran(agent.run("get", "--max-rate", "fast", o.url("/files/a.bin"), "-o", o.path("a.out")))
        one_line_refusal(t, r, "get --max-rate fast", "--max-rate")
        t.eq("requests to the origin", len(o.requests()), 0)


@case("max_rate_get_completes_with_right_sha256")
def _(bg):
    """get --max-rate 4M of a 6 MiB file completes, the file has the origin's SHA-256, and the
    job document keeps max_rate 4194304; the same get of a second file with --max-rate 0 (no
    limit) shows null"""
    size = 6 * MiB
    with Origin(files={"big.bin": size, "b.bin": 300_000}) as o:
        o, agent, t = started(bg, o)
        out = o.path("big.out")
        r = t.ran(agent.run("get", "--json", "--max-rate", "4M", o.url("/files/big.bin"), "-o", out,
                            timeout=120))
        t.eq("exit status", r.rc, 0)
        t.eq("state", field(r.doc, "state"), "TRANSFERRED")
        t.eq("max_rate in the job document", field(r.doc, "max_rate"), 4 * MiB)
        t.eq("SHA-256 of the file", sha256_file(out) if os.path.exists(out) else None, o.sha("big.bin"))
        r = t.ran(agent.run("get", "--json", "--max-rate", "0", o.url("/files/b.bin"), "-o", o.path("b.out")))
        t.eq("exit status (no limit)", r.rc, 0)
        t.eq("max_rate null for 0", field(r.doc, "max_rate"), None)


@case("max_rate_daemon_option_and_config_refused_and_shown")
def _(bg):
    """bgcopy.conf max_rate and max_rate_schedule are shown by config --json; a bad value in
    the file is refused naming file, line and key; daemon --max-rate and --max-rate-schedule
    refuse a bad rate, a bad day, a bad hour and overlapping windows with exit 2 and one
    line each; a good daemon --max-rate is logged as the limit in effect"""
    with Origin(files={}) as o:
        o, agent, t = started(bg, o)
        conf = o.path("bgcopy.conf")
        with open(conf, "w") as f:
            f.write("max_rate = 10M\nmax_rate_schedule = mon-fri 8-17 2M, sat,sun 0-24 none; outside 10M\n")
        ca = Bgcopy(agent.exe, agent.home, env_extra={"BGCOPY_CONFIG": conf})
        r = t.ran(ca.run("config", "--json"))
        t.eq("config --json: exit status", r.rc, 0)
        settings = {s.get("key"): s for s in (field(r.doc, "settings") or [])}
        t.eq("max_rate value", field(settings, "max_rate", "value"), 10 * MiB)
        t.eq("max_rate source", field(settings, "max_rate", "source"), "file")
        t.eq("max_rate_schedule value", field(settings, "max_rate_schedule", "value"),
             "mon-fri 8-17 2M, sat,sun 0-24 none; outside 10M")
        for text, needle in (("max_rate = 10 M\n", "max_rate: expected bytes per second"),
                             ("max_rate_schedule = mon-fri 8-17 2M, fri 16-18 1M\n",
                              "windows 'mon-fri 08-17' and 'fri 16-18' overlap"),
                             ("max_rate_schedule = mon-fri 18-8 2M\n", "must start before it ends")):
            with open(conf, "w") as f:
                f.write(text)
            r = t.ran(ca.run("config"))
            t.eq(f"config with {text.strip()!r}: exit status", r.rc, 2)
            t.ok(f"  stderr names the file, line 1 and the problem ({r.err.strip()[:240]!r})",
                 f"{conf}:1:" in r.err and needle in r.err)
        for args, needle in ((("--max-rate", "3X"), "--max-rate: expected bytes per second"),
                             (("--max-rate-schedule", "mon-fry 8-17 1M"), "'mon-fry': expected days"),
                             (("--max-rate-schedule", "mon 8-25 1M"), "'8-25': expected hours"),
                             (("--max-rate-schedule", "mon 8-17 1M, mon 9-10 2M"), "overlap"),
                             (("--max-rate-schedule", "mon 8-17 1M; outside"), "outside RATE")):
            r = t.ran(agent.run("daemon", *args))
            one_line_refusal(t, r, f"daemon {' '.join(args)}", needle)
        with Daemon(t, agent, o, "--max-rate", "3M") as d:
            lines = wait_rate_lines(d, 1, 15)
            t.eq("the daemon's limit", lines[:1], ["3145728 B/s (3M, max_rate)"])


@case("max_rate_schedule_boundary_with_settable_clock")
def _(bg):
    """with TZ=UTC and $BGCOPY_TIME_OFFSET putting the clock 3 s before 10:00 on a Monday, a
    daemon with max_rate 4M and the schedule 'mon 10-11 1M' logs 4M (max_rate, outside the
    windows) first, then 1M (schedule window mon 10-11) once its clock passes 10:00; with
    'outside 2M' the first limit is the schedule's outside rate. A job transferring across
    the boundary completes with the right SHA-256"""
    target = calendar.timegm((2026, 12, 7, 10, 0, 0))  # a Monday
    with Origin(files={"s.bin": 3 * MiB}) as o:
        o, agent, t = started(bg, o)
        for i, (sched, first) in enumerate((("mon 10-11 1M", "4194304 B/s (4M, max_rate, outside the schedule's windows)"),
                             ("mon 10-11 1M; outside 2M", "2097152 B/s (2M, schedule, outside its windows)"))):
            offset = int(target - 3 - time.time())
            ag = Bgcopy(agent.exe, agent.home, env_extra={"TZ": "UTC", "BGCOPY_TIME_OFFSET": str(offset)})
            with Daemon(t, ag, o, "--max-rate", "4M", "--max-rate-schedule", sched, label=f"daemon{i}") as d:
                lines = wait_rate_lines(d, 2, 20)
                t.eq(f"{sched!r}: the limits the daemon logged, in order", lines[:2],
                     [first, "1048576 B/s (1M, schedule window mon 10-11)"])
        # A transfer across the boundary (the daemon started 2 s before it).
        out = o.path("out", "s.bin")
        job = new_job(t, agent, [(o.url("/files/s.bin"), out)], "--name", "across")
        if job is None:
            return
        offset = int(target - 2 - time.time())
        ag = Bgcopy(agent.exe, agent.home, env_extra={"TZ": "UTC", "BGCOPY_TIME_OFFSET": str(offset)})
        with Daemon(t, ag, o, "--max-rate", "1M", "--max-rate-schedule", "mon 10-11 2M", label="across"):
            cmd(t, ag, "resume", job)
            doc, _ = poll_state(t, ag, job, ("ERROR", "TRANSFERRED"), 60, label="job across")
            t.eq("state", field(doc, "state"), "TRANSFERRED")
        complete_and_check(t, agent, job, [(out, o.sha("s.bin"))])


@case("max_rate_daemon_limit_holds_background_not_foreground")
def _(bg):
    """under daemon --max-rate 1 (one byte a second: the bucket's 16 KiB burst, then almost
    nothing) a foreground job of 2 MiB completes with the right SHA-256 while a normal job of
    the same size stays TRANSFERRING with less than a chunk committed; set-max-rate on the
    foreground job itself would apply (its setting shows); SIGTERM stops the daemon at once
    although the normal job's transfer sleeps for the rate"""
    size = 2 * MiB
    with Origin(files={"fg.bin": size, "bg.bin": size}) as o:
        o, agent, t = started(bg, o)
        out_fg, out_bg = o.path("out", "fg.bin"), o.path("out", "bg.bin")
        slow = new_job(t, agent, [(o.url("/files/bg.bin"), out_bg)], "--name", "normal")
        fast = new_job(t, agent, [(o.url("/files/fg.bin"), out_fg)], "--name", "fg",
                       "--priority", "foreground")
        if slow is None or fast is None:
            return
        with Daemon(t, agent, o, "--max-rate", "1") as d:
            cmd(t, agent, "resume", slow)
            poll_state(t, agent, slow, ("TRANSFERRING",), 30, label="job normal")
            cmd(t, agent, "resume", fast)
            doc, _ = poll_state(t, agent, fast, ("ERROR", "TRANSFERRED"), 60, label="job fg")
            t.eq("foreground job state", field(doc, "state"), "TRANSFERRED")
            doc = doc_of(agent, slow)
            t.eq("normal job state while the foreground one is done", field(doc, "state"), "TRANSFERRING")
            got = field(doc, "bytes_transferred")
            t.ok(f"normal job: less than a chunk committed ({got})", isinstance(got, int) and got < 262128)
            t.eq("the daemon's limit", rate_lines(d)[:1], ["1 B/s (1, max_rate)"])
            rc, forced = d.stop()
            t.eq("SIGTERM: exit status, without SIGKILL", (rc, forced), (0, False))
        complete_and_check(t, agent, fast, [(out_fg, o.sha("fg.bin"))])


@case("max_rate_raised_while_throttled_applies")
def _(bg):
    """a daemon job limited to 1 B/s (set-max-rate JOB 1) stays TRANSFERRING with less than a
    chunk committed; set-max-rate JOB none while its transfer waits for the rate ends the wait
    (the runner looks at the job record during long waits), and the job completes with the
    right SHA-256, resumed with a Range request from what was committed"""
    size = 2 * MiB
    with Origin(files={"s.bin": size}) as o:
        o, agent, t = started(bg, o)
        out = o.path("out", "s.bin")
        job = new_job(t, agent, [(o.url("/files/s.bin"), out)], "--name", "slow")
        if job is None:
            return
        cmd(t, agent, "set-max-rate", job, "1")
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", job)
            poll_state(t, agent, job, ("TRANSFERRING",), 30, label="job slow")
            time.sleep(1.5)  # not a bound: lets the transfer reach its wait for the rate
            doc = doc_of(agent, job)
            t.eq("state while limited to 1 B/s", field(doc, "state"), "TRANSFERRING")
            got = field(doc, "bytes_transferred")
            t.ok(f"less than a chunk committed ({got})", isinstance(got, int) and got < 262128)
            cmd(t, agent, "set-max-rate", job, "none")
            doc, _ = poll_state(t, agent, job, ("ERROR", "TRANSFERRED"), 60, label="job slow, no limit")
            t.eq("state once the limit is gone", field(doc, "state"), "TRANSFERRED")
            t.eq("max_rate", field(doc, "max_rate"), None)
        complete_and_check(t, agent, job, [(out, o.sha("s.bin"))])


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
