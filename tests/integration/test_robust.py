#!/usr/bin/env python3
"""Integration cases for what the machine throws at bgcopy: a full disk, and a short crash
soak (scripts/soak with a few kills; the full one is `scripts/soak`, 50 kills). See origin.py
for the nginx origin and bgtest.py for the checker and the driver.

Usage: test_robust.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_robust.py CASE)
       test_robust.py --list                    prints the case names, one a line

The disk-full case mounts a small tmpfs, which needs root (CAP_SYS_ADMIN); without it the
case prints why and exits 77, which ctest reports as skipped. Exit 0 when every check
passed, 1 otherwise, 2 on bad usage."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bgtest import Bgcopy, case_registry, main, SKIPPED, started  # noqa: E402
from origin import MiB, Origin, sha256_file  # noqa: E402

CASES, case = case_registry()


class Tmpfs:
    """A tmpfs of SIZE mounted on a new temp dir, unmounted and removed on exit."""

    def __init__(self, size):
        self.size = size
        self.dir = None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="bgcopy-full-")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700",
                            "tmpfs", self.dir], capture_output=True, text=True)
        if r.returncode != 0:
            os.rmdir(self.dir)
            raise PermissionError(f"mount -t tmpfs: {r.stderr.strip()}")
        return self

    def __exit__(self, *exc):
        for _ in range(50):
            if subprocess.run(["umount", self.dir], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)  # a process that held a file may still be exiting
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)


def wait_state(agent, job, states, timeout=60):
    deadline = time.monotonic() + timeout
    doc = None
    while time.monotonic() < deadline:
        r = agent.run("info", job, "--json")
        doc = r.doc
        if doc and doc.get("state") in states:
            return doc
        time.sleep(0.05)
    return doc


@case("disk_full_clear_error_then_resume_completes")
def _(bg):
    """home and output on a 24 MiB tmpfs that a filler leaves 12 MiB of; a job of one 8 MiB file
    (output + store = 16 MiB) ends in ERROR with ERROR_DISK_FULL (0x80070070) naming the local
    file; the store stays readable (cache list, cache verify pass); no output file; once the
    filler is deleted, resume completes the file from where it stopped (a Range request) and it
    is byte-exact"""
    size = 8 * MiB + 123
    if os.geteuid() != 0:
        print(f"skipped: mounting a tmpfs needs root (euid {os.geteuid()})")
        return SKIPPED
    with Origin(files={"big.bin": size}) as o, Tmpfs("24m") as fs:
        o, _, t = started(bg, o)
        agent = Bgcopy(bg.exe, fs.path("home"))
        # The default limit (1% of this small filesystem) would keep the file out of the
        # store: allow it all, so that the output and the store together fill the disk.
        t.eq("cache config --max-size 100%: exit status",
             t.ran(agent.run("cache", "config", "--max-size", "100%")).rc, 0)
        filler = fs.path("filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * 12 * 1000 * 1000)
        out = fs.path("big.bin")
        r = t.ran(agent.run("create", "--name", "full"))
        job = r.out.strip()
        t.eq("create: exit status", r.rc, 0)
        t.eq("add: exit status",
             t.ran(agent.run("add", job, o.url("/files/big.bin"), out)).rc, 0)
        daemon = subprocess.Popen(agent.argv("daemon"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        try:
            t.eq("resume: exit status", t.ran(agent.run("resume", job)).rc, 0)
            doc = wait_state(agent, job, ("ERROR", "TRANSFERRED")) or {}
            err = doc.get("error") or {}
            t.eq("job state on a full disk", doc.get("state"), "ERROR")
            t.eq("error code", err.get("code"), "0x80070070")
            t.eq("error symbol", err.get("symbol"), "ERROR_DISK_FULL")
            t.eq("error context", err.get("context"), "local_file")
            t.ok("the message says no space left", "no space" in (err.get("message") or ""),
                 err.get("message"))
            t.eq("no output file yet", os.path.exists(out), False)
            committed = (doc.get("files") or [{}])[0].get("bytes_transferred") or 0
            t.ok(f"some bytes were kept ({committed})", 0 < committed < size)
            r = t.ran(agent.run("cache", "list", "--json"))
            t.eq("cache list on the full disk: exit status", r.rc, 0)
            r = t.ran(agent.run("cache", "verify"))
            t.eq("cache verify on the full disk: exit status", r.rc, 0)

            os.unlink(filler)
            before = len(o.requests("/files/big.bin"))
            t.eq("resume after freeing space: exit status", t.ran(agent.run("resume", job)).rc, 0)
            doc = wait_state(agent, job, ("ERROR", "TRANSFERRED")) or {}
            t.eq("job state after freeing space", doc.get("state"), "TRANSFERRED")
            t.eq("complete: exit status", t.ran(agent.run("complete", job)).rc, 0)
            t.eq("output sha256", sha256_file(out) if os.path.exists(out) else None,
                 o.sha("big.bin"))
            reqs = [q for q in o.requests("/files/big.bin")[before:] if q["method"] == "GET"]
            t.ok("the resume asked for the rest with a Range",
                 len(reqs) >= 1 and all((q["range"] or "").startswith("bytes=") for q in reqs),
                 o.format_log(reqs))
            r = t.ran(agent.run("cache", "verify"))
            t.eq("cache verify after: exit status", r.rc, 0)
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            err = daemon.stderr.read()
            t.eq("daemon exit status after SIGTERM", daemon.returncode, 0)
            t.ok("no sanitizer report from the daemon", "Sanitizer" not in err, err[-2000:])


@case("soak_short_outputs_intact")
def _(bg):
    """scripts/soak --kills 8 (SIGKILLs across the daemon, bgcopy get and bgcopy-peerd): every
    output intact, cache verify passes in both homes, the origin sent <= 1.1x what the downloads
    took from it"""
    soak = os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts", "soak")
    with Origin() as o:
        o, _, t = started(bg, o)
        r = subprocess.run([sys.executable, soak, "--kills", "8", "--files", "3", "--size", "6"],
                           capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, BGCOPY=bg.exe))
        print(r.stdout[-6000:])
        t.eq("scripts/soak exit status", r.returncode, 0)
        t.ok("scripts/soak says PASSED", "soak: PASSED" in r.stdout, r.stderr[-2000:])
        t.ok("no sanitizer report", "Sanitizer" not in r.stdout + r.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
