#!/usr/bin/env python3
"""Integration cases for the job commands of bgcopy: create, add, info, list and the security
flags of a job (see origin.py for the nginx origin each case starts, bgtest.py for the
checker and the driver these cases share).

Usage: test_jobs.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_jobs.py CASE)
       test_jobs.py --list                    prints the case names, one a line
       test_jobs.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Each case prints one line per thing it checks ('ok' or 'FAIL', with expected and got), and
on failure the bgcopy commands it ran and the origin's access log. Exit 0 when every check
passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the temp dirs.

A created job is SUSPENDED and nothing here resumes one, so every case also checks that the
origin saw no request at all."""

import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import ABSENT, Bgcopy, case_registry, field, main, started  # noqa: E402
from origin import Origin  # noqa: E402

A_SIZE = 300_000          # the ordinary served file, /files/a.bin

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
ENOTIMPL = ("E_NOTIMPL", "0x80004001")

CASES, case = case_registry()


# ---- shared steps -----------------------------------------------------------------------

def create(t, agent, *args):
    """`bgcopy create ARGS`: checks exit 0 and a lone GUID-like id on stdout; returns the id
    (None when there is none)."""
    r = t.ran(agent.run("create", *args))
    t.eq("create: exit status", r.rc, 0)
    out = r.out.strip()
    t.ok(f"create printed one GUID-like id of 36 characters ({out!r})",
         GUID.fullmatch(out) is not None and len(out) == 36 and r.out.count("\n") == 1,
         f"stdout: {r.out!r}")
    return out if GUID.fullmatch(out) else None


def info(t, agent, job):
    """`bgcopy info JOB --json`: checks exit 0 and a JSON object; returns it (or None)."""
    r = t.ran(agent.run("info", job, "--json"))
    t.eq(f"info {job} --json: exit status", r.rc, 0)
    t.ok("info --json printed a job document", isinstance(r.doc, dict), f"stdout: {r.out[:300]!r}")
    return r.doc


def list_ids(t, agent):
    """Ids in `bgcopy list --json` (checked: exit 0, an array)."""
    r = t.ran(agent.run("list", "--json"))
    t.eq("list --json: exit status", r.rc, 0)
    t.ok("list --json printed an array", isinstance(r.doc, list), f"stdout: {r.out[:300]!r}")
    return [d.get("id") for d in (r.doc or []) if isinstance(d, dict)]


def expect_usage_error(t, r, needles=()):
    """Exit 2, nothing on stdout, a message on stderr that mentions one of each NEEDLES."""
    t.eq("exit status", r.rc, 2)
    t.eq("stdout", r.out, "")
    t.ok("a message on stderr", r.err.strip() != "", "stderr is empty")
    for n in needles:
        t.ok(f"stderr mentions {' or '.join(n)}", any(x in r.err for x in n),
             f"stderr: {r.err.strip()[:300]!r}")


def expect_no_requests(t, o):
    t.eq("requests made to the origin", len(o.log()), 0)


def write_list(o, name, lines):
    path = o.path(name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def file_rows(doc):
    """(original_url, local_path) of every file of a job document."""
    files = field(doc, "files")
    if not isinstance(files, list):
        return ABSENT
    return [(f.get("original_url"), f.get("local_path")) for f in files if isinstance(f, dict)]


# ---- create -----------------------------------------------------------------------------

@case("create_prints_job_id_job_is_suspended")
def _(bg):
    """create --name prints a GUID-like id; the job is SUSPENDED, empty, normal priority, named as
    given, flags 0; a second create gives another id"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        job = create(t, agent, "--name", "nightly sync")
        if job is None:
            return
        doc = info(t, agent, job)
        t.eq("id", field(doc, "id"), job)
        t.eq("name", field(doc, "name"), "nightly sync")
        t.eq("type", field(doc, "type"), "download")
        t.eq("state", field(doc, "state"), "SUSPENDED")
        t.eq("priority (default)", field(doc, "priority"), "normal")
        t.eq("security_flags", field(doc, "security_flags"), 0)
        t.eq("files_total", field(doc, "files_total"), 0)
        t.eq("files_transferred", field(doc, "files_transferred"), 0)
        t.eq("files", field(doc, "files"), [])
        t.eq("bytes_transferred", field(doc, "bytes_transferred"), 0)
        t.eq("error", field(doc, "error"), None)
        other = create(t, agent)
        t.ok(f"a second create gives another id ({other!r})", other is not None and other != job)
        expect_no_requests(t, o)


@case("create_priority_shown_bad_priority_exits_2")
def _(bg):
    """create --priority P shows P in info for each of foreground, high, normal, low; --priority
    urgent exits 2 and creates no job"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        made = []
        for prio in ("high", "foreground", "normal", "low"):
            job = create(t, agent, "--priority", prio)
            if job is not None:
                made.append(job)
                t.eq(f"priority of the job created with --priority {prio}",
                     field(info(t, agent, job), "priority"), prio)
        r = t.ran(agent.run("create", "--priority", "urgent"))
        expect_usage_error(t, r, needles=(("urgent", "priority"),))
        t.eq("jobs listed after the refused create", sorted(list_ids(t, agent)), sorted(made))
        expect_no_requests(t, o)


# ---- add --------------------------------------------------------------------------------

@case("add_file_records_url_and_absolute_path")
def _(bg):
    """add JOB URL FILE (FILE relative to the current folder) adds one file with original_url URL
    and an absolute local_path; nothing is transferred"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        url = o.url("/files/a.bin")
        job = create(t, agent, "--name", "one file")
        if job is None:
            return
        r = t.ran(agent.run("add", job, url, "a.bin", cwd=o.path("out")))
        t.eq("add: exit status", r.rc, 0)
        doc = info(t, agent, job)
        t.eq("files_total", field(doc, "files_total"), 1)
        t.eq("files[0].original_url", field(doc, "files", 0, "original_url"), url)
        t.eq("files[0].remote_url", field(doc, "files", 0, "remote_url"), url)
        t.eq("files[0].local_path (absolute)", field(doc, "files", 0, "local_path"), o.path("out", "a.bin"))
        t.eq("files[0].done", field(doc, "files", 0, "done"), False)
        t.eq("files[0].bytes_transferred", field(doc, "files", 0, "bytes_transferred"), 0)
        t.eq("state (a created job stays SUSPENDED)", field(doc, "state"), "SUSPENDED")
        t.eq("output folder", sorted(os.listdir(o.path("out"))), [])
        expect_no_requests(t, o)


@case("add_from_list_skips_comments_and_blank_lines")
def _(bg):
    """add JOB --from LIST with 3 'URL LOCALPATH' lines, a comment, a blank line and extra blanks
    adds 3 files in order, after one added before: files_total 4"""
    with Origin(files={"a.bin": A_SIZE, "b.bin": 1000, "c.bin": 2000, "d.bin": 3000}) as o:
        o, agent, t = started(bg, o)
        job = create(t, agent)
        if job is None:
            return
        want = [(o.url(f"/files/{n}"), o.path("out", n)) for n in ("a.bin", "b.bin", "c.bin", "d.bin")]
        r = t.ran(agent.run("add", job, *want[0]))
        t.eq("add: exit status", r.rc, 0)
        lst = write_list(o, "files.list", [
            "# URL LOCALPATH, one a line",
            f"{want[1][0]} {want[1][1]}",
            "",
            f"  {want[2][0]}\t {want[2][1]}",
            "   # an indented comment",
            f"{want[3][0]}  {want[3][1]}",
        ])
        r = t.ran(agent.run("add", job, "--from", lst))
        t.eq("add --from: exit status", r.rc, 0)
        doc = info(t, agent, job)
        t.eq("files_total", field(doc, "files_total"), 4)
        t.eq("files (original_url, local_path)", file_rows(doc), want)
        expect_no_requests(t, o)


@case("add_from_list_bad_url_exits_2_adds_nothing")
def _(bg):
    """add --from LIST whose line 4 holds a malformed URL exits 2 with a message naming line 4"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        job = create(t, agent)
        if job is None:
            return
        lst = write_list(o, "bad.list", [
            "# line 1: a comment",
            f"{o.url('/files/a.bin')} {o.path('out', 'a.bin')}",
            "",
            f"http:// {o.path('out', 'bad.bin')}",
            f"{o.url('/files/a.bin')} {o.path('out', 'a2.bin')}",
        ])
        r = t.ran(agent.run("add", job, "--from", lst))
        t.eq("exit status", r.rc, 2)
        t.ok("stderr names line 4 (':4:' or 'line 4')", re.search(r"(:|line )4\b", r.err) is not None,
             f"stderr: {r.err.strip()[:300]!r}")
        # A list is taken whole or not at all (as BITS AddFileSet): the good line before the
        # bad one is not added either.
        t.eq("files of the job after the refused list", file_rows(info(t, agent, job)), [])
        expect_no_requests(t, o)


@case("add_to_unknown_job_exits_2")
def _(bg):
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        print(f"checks: add to a job id that does not exist ({UNKNOWN_ID}) exits 2, one file or "
              "--from LIST, and creates no job")
        r = t.ran(agent.run("add", UNKNOWN_ID, o.url("/files/a.bin"), o.path("out", "a.bin")))
        expect_usage_error(t, r, needles=((UNKNOWN_ID,),))
        lst = write_list(o, "files.list", [f"{o.url('/files/a.bin')} {o.path('out', 'a.bin')}"])
        r = t.ran(agent.run("add", UNKNOWN_ID, "--from", lst))
        expect_usage_error(t, r, needles=((UNKNOWN_ID,),))
        t.eq("jobs listed", list_ids(t, agent), [])
        expect_no_requests(t, o)


# ---- security flags ---------------------------------------------------------------------

def get_flags(t, agent, job):
    r = t.ran(agent.run("get-security-flags", job))
    t.eq("get-security-flags: exit status", r.rc, 0)
    return r.out.strip()


@case("security_flags_set_0x0108_get_prints_names")
def _(bg):
    """set-security-flags JOB 0x0108, then get-security-flags prints '0x0108
    ignore-unknown-ca|redirect-report' and info --json shows 264"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        job = create(t, agent)
        if job is None:
            return
        t.eq("get-security-flags of a new job", get_flags(t, agent, job), "0x0000 redirect-silent")
        r = t.ran(agent.run("set-security-flags", job, "0x0108"))
        t.eq("set-security-flags 0x0108: exit status", r.rc, 0)
        t.eq("get-security-flags", get_flags(t, agent, job), "0x0108 ignore-unknown-ca|redirect-report")
        t.eq("info --json security_flags", field(info(t, agent, job), "security_flags"), 264)
        r = t.ran(agent.run("set-security-flags", job, "redirect-disallow,crl-check"))
        t.eq("set-security-flags redirect-disallow,crl-check: exit status", r.rc, 0)
        got = get_flags(t, agent, job).split(" ")
        t.eq("get-security-flags value", got[0], "0x0201")
        t.eq("get-security-flags names (any order)", sorted("".join(got[1:2]).split("|")),
             ["crl-check", "redirect-disallow"])
        t.eq("info --json security_flags", field(info(t, agent, job), "security_flags"), 0x0201)
        expect_no_requests(t, o)


@case("set_security_flags_0x400_refused_flags_unchanged")
def _(bg):
    """set-security-flags with 0x400 (redirect policy field 0x400), an unknown bit or an unknown
    name exits 2 with E_NOTIMPL and leaves the job's flags at 0x0108"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        job = create(t, agent)
        if job is None:
            return
        r = t.ran(agent.run("set-security-flags", job, "0x0108"))
        t.eq("set-security-flags 0x0108: exit status", r.rc, 0)
        for bad in ("0x400", "0x0020", "nope", "redirect-report|redirect-disallow"):
            print(f"  -- set-security-flags {bad}")
            r = t.ran(agent.run("set-security-flags", job, bad))
            expect_usage_error(t, r, needles=(ENOTIMPL,))
            t.eq(f"get-security-flags after the refused {bad}", get_flags(t, agent, job),
                 "0x0108 ignore-unknown-ca|redirect-report")
        t.eq("info --json security_flags", field(info(t, agent, job), "security_flags"), 264)
        expect_no_requests(t, o)


# ---- list and info ----------------------------------------------------------------------

@case("list_shows_created_jobs")
def _(bg):
    """list --json holds every created job with its state; list prints a header line, then one line
    per job with its id"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        a = create(t, agent, "--name", "first")
        b = create(t, agent, "--name", "second", "--priority", "low")
        if a is None or b is None:
            return
        r = t.ran(agent.run("list", "--json"))
        t.eq("list --json: exit status", r.rc, 0)
        docs = {d.get("id"): d for d in (r.doc if isinstance(r.doc, list) else []) if isinstance(d, dict)}
        t.eq("ids in list --json", sorted(docs), sorted([a, b]))
        for job, name, prio in ((a, "first", "normal"), (b, "second", "low")):
            t.eq(f"list --json {name}: (state, name, priority)",
                 (field(docs, job, "state"), field(docs, job, "name"), field(docs, job, "priority")),
                 ("SUSPENDED", name, prio))
        r = t.ran(agent.run("list"))
        t.eq("list: exit status", r.rc, 0)
        lines = r.out.splitlines()
        t.ok("list: first line is a header (ID, STATE)",
             bool(lines) and "ID" in lines[0] and "STATE" in lines[0] and a not in lines[0],
             f"stdout: {r.out[:300]!r}")
        for job in (a, b):
            row = [x for x in lines[1:] if job in x]
            t.eq(f"list: lines with {job}", len(row), 1)
            t.ok(f"list: the line of {job} shows SUSPENDED", any("SUSPENDED" in x for x in row),
                 f"line: {row!r}")
        t.eq("list: line count (header + 2 jobs)", len(lines), 3)
        expect_no_requests(t, o)


@case("info_unknown_job_exits_2")
def _(bg):
    """info of an unknown job id exits 2 (with and without --json), naming it; so do
    get-security-flags and set-security-flags"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        create(t, agent)
        for args in (("info", UNKNOWN_ID), ("info", UNKNOWN_ID, "--json"),
                     ("get-security-flags", UNKNOWN_ID), ("set-security-flags", UNKNOWN_ID, "0x0100")):
            print(f"  -- {' '.join(args)}")
            r = t.ran(agent.run(*args))
            expect_usage_error(t, r, needles=((UNKNOWN_ID,),))
        expect_no_requests(t, o)


@case("bad_values_exit_2_and_change_nothing")
def _(bg):
    """each job command and get option given a bad value (an unknown name, a negative or
    non-numeric number, a header without a name or with a line break, a missing file, an unknown
    job, a job in the wrong state) exits 2 with a message, and leaves the job document as it
    was; no get makes a job or a request"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        job = create(t, agent)
        if job is None:
            return
        url, out = o.url("/files/a.bin"), o.path("out", "a.bin")
        t.eq("add: exit status", t.ran(agent.run("add", job, url, out)).rc, 0)
        before = info(t, agent, job)
        unknown = "00000000-0000-4000-8000-000000000000"
        bad = [
            ("set-priority", job, "urgent"),
            ("set-min-retry-delay", job, "-1"),
            ("set-min-retry-delay", job, "x"),
            ("set-no-progress-timeout", job, "-5"),
            ("set-credentials", job, "a:b"),
            ("set-credentials", job, "user", "--password-file", o.path("absent")),
            ("set-ca-file", job, o.path("absent.pem")),
            ("set-headers", job, "NoColon"),
            ("set-headers", job, "X: a\r\nInjected: b"),
            ("set-headers", job, ": no name"),
            ("set-peer-caching", job, "sometimes"),
            ("set-proxy", job, "ftp://127.0.0.1:21"),
            ("replace-remote-prefix", job),
            ("replace-remote-prefix", job, o.base + "/", "ftp://x/"),
            ("add", job, "ftp://127.0.0.1/x", o.path("out", "x")),
            ("complete", job),
            ("get", "--cache-key", "foo", url, "-o", out),
            ("get", "--peer", "nohost", url, "-o", out),
            ("get", "--sha256", "zz", url, "-o", out),
            ("get", "--header", "NoColon", url, "-o", out),
            ("get", "--header", "X: a\nInjected: b", url, "-o", out),
        ] + [(c, unknown) for c in ("resume", "suspend", "cancel", "complete", "info")]
        for args in bad:
            r = t.ran(agent.run(*args))
            label = " ".join("JOB" if a in (job, unknown) else a[:40] for a in args)
            t.eq(f"{label}: exit status", r.rc, 2)
            t.ok("  a message on stderr", r.err.strip() != "", "stderr is empty")
        after = info(t, agent, job)
        for k in sorted(set(before or {}) | set(after or {})):
            if k != "modified":
                t.eq(f"job document field {k!r} unchanged", (after or {}).get(k), (before or {}).get(k))
        t.eq("jobs listed (no get made one)", list_ids(t, agent), [job])
        expect_no_requests(t, o)


@case("list_all_includes_ended_jobs")
def _(bg):
    """list shows jobs that have not ended; after cancel (CANCELLED) only list --all shows that
    job, with its state; the other job stays in both"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        keep, gone = create(t, agent), create(t, agent)
        if keep is None or gone is None:
            return
        t.eq("list before", sorted(list_ids(t, agent)), sorted([keep, gone]))
        t.eq("cancel: exit status", t.ran(agent.run("cancel", gone)).rc, 0)
        t.eq("list after cancel", list_ids(t, agent), [keep])
        r = t.ran(agent.run("list", "--all", "--json"))
        t.eq("list --all --json: exit status", r.rc, 0)
        states = {d.get("id"): d.get("state") for d in (r.doc or []) if isinstance(d, dict)}
        t.eq("list --all: ids and states", states, {keep: "SUSPENDED", gone: "CANCELLED"})
        r = t.ran(agent.run("list", "--all"))
        t.ok("list --all (text) names the cancelled job", gone in r.out, r.out[:300])
        r = t.ran(agent.run("list"))
        t.ok("list (text) does not", gone not in r.out and keep in r.out, r.out[:300])
        expect_no_requests(t, o)


@case("home_from_flag_env_xdg_and_home_help_version")
def _(bg):
    """--help and --version exit 0 on stdout; without --home the store is in $BGCOPY_HOME, else
    $XDG_STATE_HOME/bgcopy, else $HOME/.local/state/bgcopy (the last folder made, 0700), and
    --home wins over them all"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        base = {k: v for k, v in agent.env().items() if k not in ("XDG_STATE_HOME", "HOME")}
        for flag, needle in (("--help", "usage: bgcopy"), ("--version", "bgcopy ")):
            p = subprocess.run([bg.exe, flag], capture_output=True, text=True, env=base, timeout=20)
            t.eq(f"{flag}: exit status", p.returncode, 0)
            t.ok(f"{flag}: stdout starts with {needle!r}", p.stdout.startswith(needle), p.stdout[:200])
        for d in ("xdg", "hm/.local/state", "other"):
            os.makedirs(o.path(d), exist_ok=True)
        cases = (("BGCOPY_HOME", {"BGCOPY_HOME": o.path("env-home"), "XDG_STATE_HOME": o.path("xdg"),
                                  "HOME": o.path("hm")}, [], o.path("env-home")),
                 ("XDG_STATE_HOME", {"XDG_STATE_HOME": o.path("xdg"), "HOME": o.path("hm")}, [],
                  o.path("xdg", "bgcopy")),
                 ("HOME", {"HOME": o.path("hm")}, [], o.path("hm", ".local", "state", "bgcopy")),
                 ("--home", {"BGCOPY_HOME": o.path("env-home")}, ["--home", o.path("other", "h")],
                  o.path("other", "h")))
        for what, env, args, home in cases:
            p = subprocess.run([bg.exe, *args, "create", "--name", what], capture_output=True,
                               text=True, env={**base, **env}, timeout=20)
            t.eq(f"{what}: create exit status", p.returncode, 0)
            t.ok(f"{what}: the store is {home}/store.mdb", os.path.exists(os.path.join(home, "store.mdb")))
            if os.path.isdir(home):
                t.eq(f"{what}: {home} mode", oct(os.stat(home).st_mode & 0o777), "0o700")
            job = p.stdout.strip()
            r = t.ran(Bgcopy(bg.exe, home).run("info", job, "--json"))
            t.eq(f"{what}: the job is in that store", field(r.doc, "name"), what)
        expect_no_requests(t, o)


# ---- expected SHA-256 of a file (add --sha256, a list's sha256= column) -----------------

def digest_rows(doc):
    """(local_path, expected_sha256) of every file of a job document."""
    files = field(doc, "files")
    if not isinstance(files, list):
        return ABSENT
    return [(f.get("local_path"), f.get("expected_sha256", ABSENT)) for f in files if isinstance(f, dict)]


@case("add_sha256_kept_and_shown_bad_hex_exits_2_adds_nothing")
def _(bg):
    """add --sha256 HEX (upper-case) keeps the digest in lower case: info --json shows it as
    files[].expected_sha256 (null for a file without one) and info prints it; a HEX that is
    not 64 hex digits exits 2 with one line on stderr and leaves the job as it was"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        job = create(t, agent)
        if job is None:
            return
        sha = o.sha("a.bin")
        out1, out2 = o.path("out", "one.bin"), o.path("out", "two.bin")
        t.eq("add --sha256: exit status",
             t.ran(agent.run("add", job, o.url("/files/a.bin"), out1, "--sha256", sha.upper())).rc, 0)
        t.eq("add: exit status", t.ran(agent.run("add", job, o.url("/files/a.bin"), out2)).rc, 0)
        before = info(t, agent, job)
        t.eq("files (local_path, expected_sha256)", digest_rows(before), [(out1, sha), (out2, None)])
        r = t.ran(agent.run("info", job))
        t.eq("info: exit status", r.rc, 0)
        t.eq("info prints the expected digest once", r.out.count(f"expected sha256 {sha}"), 1)
        for bad in ("abc", "g" * 64, sha[:63], sha + "0", "", "sha256=" + sha, sha[:32] + " " + sha[32:]):
            print(f"  -- add --sha256 {bad!r}")
            r = t.ran(agent.run("add", job, o.url("/files/a.bin"), o.path("out", "three.bin"), "--sha256", bad))
            expect_usage_error(t, r, needles=(("64 hex digits",),))
            t.eq("  stderr is one line", len(r.err.strip().splitlines()), 1)
        after = info(t, agent, job)
        for k in sorted(set(before or {}) | set(after or {})):
            if k != "modified":
                t.eq(f"job document field {k!r} unchanged", (after or {}).get(k), (before or {}).get(k))
        expect_no_requests(t, o)


@case("add_from_list_sha256_column_bad_one_adds_nothing")
def _(bg):
    """add --from LIST takes 'URL LOCALPATH sha256=HEX' (blanks or tabs before it, blanks after,
    a path with a space, upper-case HEX) beside lines without one; a list whose line 3 ends with
    a sha256= column that is not 64 hex digits exits 2 naming line 3, and adds none of its lines"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        job = create(t, agent)
        if job is None:
            return
        sha, url = o.sha("a.bin"), o.url("/files/a.bin")
        outs = [o.path("out", n) for n in ("one.bin", "two words.bin", "three.bin", "four.bin")]
        lst = write_list(o, "good.list", [
            f"{url} {outs[0]} sha256={sha.upper()}",
            f"{url}\t{outs[1]}\t sha256={sha}  ",
            f"{url} {outs[2]}",
            f"  {url}  {outs[3]}  sha256={sha}",
        ])
        r = t.ran(agent.run("add", job, "--from", lst))
        t.eq("add --from the good list: exit status", r.rc, 0)
        want = [(outs[0], sha), (outs[1], sha), (outs[2], None), (outs[3], sha)]
        t.eq("files (local_path, expected_sha256)", digest_rows(info(t, agent, job)), want)
        for bad in ("sha256=abc", "sha256=" + "g" * 64, "sha256=", "sha256=" + sha + "0",
                    "sha256=" + sha[:63]):
            print(f"  -- a list whose line 3 ends with {bad!r}")
            lst = write_list(o, "bad.list", [
                "# line 1: a comment",
                f"{url} {o.path('out', 'five.bin')} sha256={sha}",
                f"{url} {o.path('out', 'six.bin')} {bad}",
                f"{url} {o.path('out', 'seven.bin')}",
            ])
            r = t.ran(agent.run("add", job, "--from", lst))
            t.eq("exit status", r.rc, 2)
            t.eq("stdout", r.out, "")
            t.ok("stderr names line 3 (':3:')", re.search(r":3:", r.err) is not None,
                 f"stderr: {r.err.strip()[:300]!r}")
            t.ok("stderr says a SHA-256 is 64 hex digits", "64 hex digits" in r.err,
                 f"stderr: {r.err.strip()[:300]!r}")
            t.eq("files of the job after the refused list", digest_rows(info(t, agent, job)), want)
        expect_no_requests(t, o)


# ---- maximum download time (BITS IBackgroundCopyJob4::SetMaximumDownloadTime) -------------

@case("max_download_time_default_set_and_shown")
def _(bg):
    """a new job shows max_download_time 7776000 (BITS's 90 days) and download_time_used 0 in
    info --json, and both in info; set-max-download-time takes 0 (no limit) and 4294967295 and
    refuses a negative, non-numeric, fractional or larger value, or a missing one, with one
    line on stderr and exit 2, leaving the limit as it was"""
    with Origin(files={"a.bin": A_SIZE}) as o:
        o, agent, t = started(bg, o)
        job = create(t, agent)
        if job is None:
            return
        doc = info(t, agent, job)
        t.eq("max_download_time of a new job", field(doc, "max_download_time"), 7776000)
        t.eq("download_time_used of a new job", field(doc, "download_time_used"), 0)
        r = t.ran(agent.run("info", job))
        t.ok("info shows the time used and the limit",
             re.search(r"^  download time +0 s used of 7776000 s at most$", r.out, re.M) is not None,
             f"stdout: {r.out!r}")
        for args in (("-1",), ("x",), ("1.5",), ("4294967296",), ("",), ("99999999999999999999",), ()):
            r = t.ran(agent.run("set-max-download-time", job, *args))
            t.eq(f"set-max-download-time JOB {' '.join(repr(a) for a in args)}: exit status", r.rc, 2)
            t.eq("  one line on stderr", r.err.count("\n"), 1)
        t.eq("limit after the refused values", field(info(t, agent, job), "max_download_time"), 7776000)
        for v in ("4294967295", "0", "2"):
            t.eq(f"set-max-download-time JOB {v}: exit status",
                 t.ran(agent.run("set-max-download-time", job, v)).rc, 0)
            t.eq(f"max_download_time after {v}", field(info(t, agent, job), "max_download_time"), int(v))
            if v == "0":
                r = t.ran(agent.run("info", job))
                t.ok("info says no limit for 0",
                     re.search(r"^  download time +0 s used \(no limit\)$", r.out, re.M) is not None,
                     f"stdout: {r.out!r}")
        expect_no_requests(t, o)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
