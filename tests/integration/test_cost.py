#!/usr/bin/env python3
"""Integration cases for transfer policies on costed networks (BITS 5's
BITS_JOB_PROPERTY_ID_COST_FLAGS): `bgcopy set-transfer-policy JOB always|unrestricted-only`,
`get --transfer-policy`, and the daemon holding unrestricted-only jobs while NetworkManager
says the network is metered. NetworkManager is played by python-dbusmock (its
`networkmanager` template, plus a `Metered` property) on a PRIVATE system bus: a dbus-daemon
of the case's own, named to bgcopy by DBUS_SYSTEM_BUS_ADDRESS. The machine's system bus is
never used. Against a real nginx origin (origin.py); the checker, Daemon and the commands are
bgtest.py's.

Usage: test_cost.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_cost.py CASE)
       test_cost.py --list                    prints the case names, one a line
       test_cost.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Cases that need a bus are SKIPPED (exit 77) when dbus-daemon, dbus-send or python3-dbusmock
are missing (scripts/setup installs them). Nothing here asserts a duration: the cases poll
job states, daemon log lines and the access log until a deadline that only bounds a hang."""

import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bgtest import (ABSENT, case_registry, cmd, complete_and_check, Daemon, doc_of, field, info,  # noqa: E402
                    main, new_job, partials, poll_state, SKIPPED, started)
from origin import MiB, Origin  # noqa: E402

CASES, case = case_registry()

NM = "org.freedesktop.NetworkManager"
NM_OBJ = "/org/freedesktop/NetworkManager"
METERED_YES, METERED_NO, METERED_GUESS_YES, METERED_GUESS_NO = 1, 2, 3, 4
WAITING = "waiting for an unrestricted network"
COST_ALWAYS, COST_UNRESTRICTED = 0x800000FF, 0x1

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


def paced(rate):
    """nginx directives for a smooth RATE (as test_daemon.py paces its slow files)."""
    return f"limit_rate {rate}; sendfile_max_chunk 64k;"


# ---- the private system bus and NetworkManager ----------------------------------------------

def dbusmock_python():
    """An interpreter that can import dbusmock (this one, else Debian's), or None."""
    for py in (sys.executable, "/usr/bin/python3"):
        if py and os.access(py, os.X_OK) and subprocess.run(
                [py, "-c", "import dbusmock"], capture_output=True).returncode == 0:
            return py
    return None


def missing_tools():
    """What this machine lacks for a private bus with a mock NetworkManager, or ''."""
    lacks = [p for p in ("dbus-daemon", "dbus-send") if shutil.which(p) is None]
    if dbusmock_python() is None:
        lacks.append("python3-dbusmock")
    return " ".join(lacks)


class Bus:
    """A dbus-daemon of its own (type system) in DIR, as a context manager; with NM_METERED
    not None, python-dbusmock plays NetworkManager on it with that Metered value. Both are
    stopped on exit, even when the case failed."""

    def __init__(self, t, d, nm_metered=None):
        self.t, self.dir, self.nm_metered = t, d, nm_metered
        self.sock = os.path.join(d, "system_bus_socket")
        self.address = "unix:path=" + self.sock
        self.bus = self.mock = None

    def env(self):
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def __enter__(self):
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "bus.conf")
        with open(conf, "w") as f:
            f.write(BUS_CONFIG.format(sock=self.sock))
        with open(os.path.join(self.dir, "dbus-daemon.log"), "wb") as log:
            self.bus = subprocess.Popen(["dbus-daemon", "--config-file=" + conf, "--nofork", "--nopidfile"],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if not self._until(lambda: os.path.exists(self.sock), "the private bus's socket appeared"):
            return self
        if self.nm_metered is not None:
            self.start_nm(self.nm_metered)
        return self

    def start_nm(self, metered):
        with open(os.path.join(self.dir, "dbusmock.log"), "ab") as log:
            self.mock = subprocess.Popen([dbusmock_python(), "-m", "dbusmock", "--system", "-t", "networkmanager"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env())
        if self._until(self._nm_has_owner, "the mock NetworkManager is on the private bus"):
            # The template has no Metered property (NetworkManager has had it since 1.0).
            self.send(f"{NM_OBJ}", "org.freedesktop.DBus.Mock.AddProperty",
                      f"string:{NM}", "string:Metered", f"variant:uint32:{metered}")

    def stop_nm(self):
        if self.mock is not None:
            self.mock.terminate()
            try:
                self.mock.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.mock.kill()
                self.mock.wait()
            self.mock = None

    def __exit__(self, *exc):
        self.stop_nm()
        if self.bus is not None:
            self.bus.terminate()
            try:
                self.bus.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.bus.kill()
                self.bus.wait()
        return False

    def send(self, path, method, *args, dest=NM):
        p = subprocess.run(["dbus-send", "--system", "--print-reply", f"--dest={dest}", path, method, *args],
                           capture_output=True, text=True, env=self.env(), timeout=10)
        self.t.ok(f"dbus-send {method.rsplit('.', 1)[-1]} {' '.join(args[1:])}: exit 0", p.returncode == 0,
                  f"exit {p.returncode}: {p.stderr.strip()!r}")
        return p

    def set_metered(self, value):
        self.send(NM_OBJ, "org.freedesktop.DBus.Properties.Set", f"string:{NM}", "string:Metered",
                  f"variant:uint32:{value}")

    def _nm_has_owner(self):
        p = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
                            "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner", f"string:{NM}"],
                           capture_output=True, text=True, env=self.env(), timeout=10)
        return p.returncode == 0 and "boolean true" in p.stdout

    def _until(self, cond, what, timeout=15):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                return self.t.ok(what, False, f"not within {timeout} s")
            time.sleep(0.05)
        return True


def on_bus(bg, o, bus):
    """(origin, Bgcopy on the private bus, checker)."""
    o, agent, t = started(bg, o)
    agent.env_extra["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
    return o, agent, t


def expect_waiting(t, agent, job, label):
    """The job is QUEUED and says why, in info --json and in info."""
    d = info(t, agent, job)
    t.eq(f"{label}: state", field(d, "state"), "QUEUED")
    t.eq(f"{label}: waiting_reason", field(d, "waiting_reason"), WAITING)
    t.eq(f"{label}: transfer_policy", field(d, "transfer_policy"), "unrestricted-only")
    r = cmd(t, agent, "info", job)
    t.ok(f"{label}: info names the reason", "waiting        " + WAITING in r.out, r.out)


def wait_network_line(t, daemon, word, count=1, timeout=20):
    """Polls the daemon log for COUNT 'network WORD' lines."""
    deadline = time.monotonic() + timeout
    while daemon.text().count(f": network {word}") < count:
        if time.monotonic() > deadline:
            return t.ok(f"the daemon logged 'network {word}'", False, daemon.text()[-1500:])
        time.sleep(0.05)
    return t.ok(f"the daemon logged 'network {word}'", True)


def bus_noise(daemon):
    """Daemon log lines about the network or D-Bus (the home's path, which is random, left
    out)."""
    home = daemon.agent.home
    return [ln for ln in daemon.text().splitlines()
            if home not in ln and any(w in ln.lower() for w in ("network", "bus", "metered"))]


def needs_bus():
    lacks = missing_tools()
    if lacks:
        print(f"  skipped: {lacks} missing (scripts/setup installs them)")
    return lacks


# ---- cases ------------------------------------------------------------------------------

@case("cost_metered_holds_unrestricted_only_until_unmetered")
def _(bg):
    """Metered YES: an unrestricted-only job stays QUEUED with its reason and the origin gets no
    request; Metered NO: it transfers and completes"""
    if needs_bus():
        return SKIPPED
    with Origin(files={"a.bin": MiB + 17}) as o:
        with Bus(bg.t, o.path("bus"), METERED_YES) as bus:
            o, agent, t = on_bus(bg, o, bus)
            out = o.path("out", "a.bin")
            job = new_job(t, agent, [(o.url("/files/a.bin"), out)])
            if job is None:
                return
            cmd(t, agent, "set-transfer-policy", job, "unrestricted-only")
            cmd(t, agent, "resume", job)
            with Daemon(t, agent, o) as daemon:
                wait_network_line(t, daemon, "metered")
                # Two more rounds of the daemon's question: it had every chance to start it.
                time.sleep(2 * 2.0 + 0.5)
                expect_waiting(t, agent, job, "while metered")
                t.eq("requests for a.bin while metered", o.requests("/files/a.bin", settle=False), [])
                t.eq("daemon events of the job while metered", daemon.events(job), [])
                bus.set_metered(METERED_NO)
                d, _ = poll_state(t, agent, job, "TRANSFERRED", 30)
                t.eq("waiting_reason once transferred", field(d, "waiting_reason"), None)
            complete_and_check(t, agent, job, [(out, o.sha("a.bin"))])


@case("cost_always_job_runs_while_metered")
def _(bg):
    """A job of the default policy (always, BITS cost flags 0x800000FF) runs while metered"""
    if needs_bus():
        return SKIPPED
    with Origin(files={"a.bin": 300_000}) as o:
        with Bus(bg.t, o.path("bus"), METERED_YES) as bus:
            o, agent, t = on_bus(bg, o, bus)
            out = o.path("out", "a.bin")
            job = new_job(t, agent, [(o.url("/files/a.bin"), out)])
            if job is None:
                return
            d = info(t, agent, job)
            t.eq("default transfer_policy", field(d, "transfer_policy"), "always")
            t.eq("default cost_flags", field(d, "cost_flags"), COST_ALWAYS)
            t.eq("waiting_reason of a suspended job", field(d, "waiting_reason"), None)
            cmd(t, agent, "resume", job)
            with Daemon(t, agent, o):
                poll_state(t, agent, job, "TRANSFERRED", 30)
            complete_and_check(t, agent, job, [(out, o.sha("a.bin"))])


@case("cost_guess_yes_counts_as_metered")
def _(bg):
    """Metered GUESS_YES holds an unrestricted-only job like YES; GUESS_NO lets it run"""
    if needs_bus():
        return SKIPPED
    with Origin(files={"a.bin": 300_000}) as o:
        with Bus(bg.t, o.path("bus"), METERED_GUESS_YES) as bus:
            o, agent, t = on_bus(bg, o, bus)
            out = o.path("out", "a.bin")
            job = new_job(t, agent, [(o.url("/files/a.bin"), out)])
            if job is None:
                return
            cmd(t, agent, "set-transfer-policy", job, "unrestricted-only")
            cmd(t, agent, "resume", job)
            # info asks NetworkManager itself: no daemon needed for the reason.
            expect_waiting(t, agent, job, "GUESS_YES, no daemon")
            with Daemon(t, agent, o) as daemon:
                wait_network_line(t, daemon, "metered")
                time.sleep(2 * 2.0 + 0.5)
                expect_waiting(t, agent, job, "GUESS_YES")
                t.eq("requests for a.bin while GUESS_YES", o.requests("/files/a.bin", settle=False), [])
                bus.set_metered(METERED_GUESS_NO)
                poll_state(t, agent, job, "TRANSFERRED", 30)
            complete_and_check(t, agent, job, [(out, o.sha("a.bin"))])


@case("cost_no_networkmanager_or_no_bus_is_unrestricted")
def _(bg):
    """A bus without NetworkManager, then no bus at all: an unrestricted-only job runs, and
    neither info nor set-transfer-policy nor the daemon says anything about D-Bus"""
    if needs_bus():
        return SKIPPED
    with Origin(files={"a.bin": 300_000, "b.bin": 200_000}) as o:
        with Bus(bg.t, o.path("bus"), None) as bus:
            o, agent, t = on_bus(bg, o, bus)
            outs = [o.path("out", "a.bin"), o.path("out", "b.bin")]
            job = new_job(t, agent, [(o.url("/files/a.bin"), outs[0])])
            if job is None:
                return
            r = cmd(t, agent, "set-transfer-policy", job, "unrestricted-only")
            t.eq("set-transfer-policy: stderr", r.err, "")
            cmd(t, agent, "resume", job)
            r = cmd(t, agent, "info", job, "--json")
            t.eq("info without NetworkManager: stderr", r.err, "")
            t.eq("info without NetworkManager: waiting_reason", field(r.doc, "waiting_reason"), None)
            with Daemon(t, agent, o) as daemon:
                poll_state(t, agent, job, "TRANSFERRED", 30)
            t.eq("daemon log lines about D-Bus or the network", bus_noise(daemon), [])
            complete_and_check(t, agent, job, [(outs[0], o.sha("a.bin"))])

        # No system bus at all: its socket does not exist.
        agent.env_extra["DBUS_SYSTEM_BUS_ADDRESS"] = "unix:path=" + o.path("no-such-bus")
        job = new_job(t, agent, [(o.url("/files/b.bin"), outs[1])])
        if job is None:
            return
        cmd(t, agent, "set-transfer-policy", job, "unrestricted-only")
        cmd(t, agent, "resume", job)
        r = cmd(t, agent, "info", job)
        t.eq("info without a bus: stderr", r.err, "")
        t.ok("info without a bus: no waiting line", "waiting " not in r.out, r.out)
        with Daemon(t, agent, o, label="daemon-nobus") as daemon:
            poll_state(t, agent, job, "TRANSFERRED", 30)
        t.eq("daemon log lines about D-Bus or the network, without a bus", bus_noise(daemon), [])
        complete_and_check(t, agent, job, [(outs[1], o.sha("b.bin"))])


@case("cost_running_unrestricted_only_job_requeued_when_metered")
def _(bg):
    """A running unrestricted-only job goes back to QUEUED (bytes kept) when the network
    becomes metered, and resumes with a Range request once it is unmetered again"""
    if needs_bus():
        return SKIPPED
    size = 12 * MiB
    with Origin(files={"big.bin": size}, locations="location = /files/big.bin { " + paced("2m") + " }") as o:
        with Bus(bg.t, o.path("bus"), METERED_NO) as bus:
            o, agent, t = on_bus(bg, o, bus)
            out = o.path("out", "big.bin")
            job = new_job(t, agent, [(o.url("/files/big.bin"), out)])
            if job is None:
                return
            cmd(t, agent, "set-transfer-policy", job, "unrestricted-only")
            cmd(t, agent, "resume", job)
            with Daemon(t, agent, o) as daemon:
                if not daemon.wait_event(job, r"^started", 20):
                    t.ok("the daemon started the job while unmetered", False)
                    return
                deadline = time.monotonic() + 30
                while field(doc_of(agent, job), "bytes_transferred") in (ABSENT, None, 0):
                    if time.monotonic() > deadline:
                        t.ok("bytes committed while unmetered", False)
                        return
                    time.sleep(0.1)
                bus.set_metered(METERED_YES)
                t.ok("the daemon stopped the job: QUEUED (waiting for an unrestricted network)",
                     daemon.wait_event(job, r"^QUEUED \(waiting for an unrestricted network\)", 20),
                     daemon.text()[-1500:])
                d = doc_of(agent, job)
                kept = field(d, "bytes_transferred")
                t.ok(f"bytes kept when requeued ({kept}) below the size", isinstance(kept, int) and 0 < kept < size)
                expect_waiting(t, agent, job, "requeued")
                time.sleep(2 * 2.0 + 0.5)
                t.eq("daemon starts of the job while metered",
                     sum(1 for _, m in daemon.events(job) if m.startswith("started")), 1)
                bus.set_metered(METERED_NO)
                poll_state(t, agent, job, "TRANSFERRED", 60)
            complete_and_check(t, agent, job, [(out, o.sha("big.bin"))])
            recs = o.wait_requests("/files/big.bin", 2)
            t.ok("a 206 answer to a Range past byte 0 after the network was unmetered again",
                 any(r["status"] == 206 and (r["range"] or "") not in ("", "bytes=0-") for r in recs),
                 repr([(r["status"], r["range"], r["bytes_sent"]) for r in recs]))


@case("cost_get_honours_unrestricted_only_while_metered")
def _(bg):
    """get --transfer-policy unrestricted-only while metered: exit 3, one line, no request;
    the same get once unmetered transfers; get --transfer-policy always runs while metered"""
    if needs_bus():
        return SKIPPED
    with Origin(files={"a.bin": 200_000, "b.bin": 100_000}) as o:
        with Bus(bg.t, o.path("bus"), METERED_YES) as bus:
            o, agent, t = on_bus(bg, o, bus)
            out = o.path("out", "a.bin")
            os.makedirs(o.path("out"), exist_ok=True)
            args = ("--transfer-policy", "unrestricted-only")
            r = t.ran(agent.get(o.url("/files/a.bin"), out, extra=args))
            t.eq("get while metered: exit status", r.rc, 3)
            t.eq("get while metered: stderr lines", len(r.err.strip().splitlines()), 1)
            t.ok("get while metered: says why", "metered" in r.err, r.err)
            t.eq("requests for a.bin while metered", o.requests("/files/a.bin", settle=False), [])
            t.ok("no output while metered", not os.path.exists(out))
            bus.set_metered(METERED_NO)
            r = t.ran(agent.get(o.url("/files/a.bin"), out, extra=args))
            t.eq("the same get once unmetered: exit status", r.rc, 0)
            t.eq("the same get once unmetered: transfer_policy", field(r.doc, "transfer_policy"), "unrestricted-only")
            t.eq("the same get once unmetered: cost_flags", field(r.doc, "cost_flags"), COST_UNRESTRICTED)
            t.eq("SHA-256 of a.bin", r.doc and field(r.doc, "files", 0, "sha256"), o.sha("a.bin"))
            bus.set_metered(METERED_YES)
            out_b = o.path("out", "b.bin")
            r = t.ran(agent.get(o.url("/files/b.bin"), out_b, extra=("--transfer-policy", "always")))
            t.eq("get --transfer-policy always while metered: exit status", r.rc, 0)
            t.ok("b.bin written", os.path.exists(out_b) and not partials(o.path("out"), "b.bin"))


@case("cost_set_transfer_policy_bad_value_exits_2")
def _(bg):
    """set-transfer-policy with a bad value or arity, get --transfer-policy bogus: one line,
    exit 2, nothing changed; the two names are taken and shown"""
    with Origin(files={"a.bin": 1000}) as o:
        o, agent, t = started(bg, o)
        # No bus is asked for a job that is not QUEUED, but keep the machine's out of it.
        agent.env_extra["DBUS_SYSTEM_BUS_ADDRESS"] = "unix:path=" + o.path("no-such-bus")
        job = new_job(t, agent, [(o.url("/files/a.bin"), o.path("out", "a.bin"))])
        if job is None:
            return
        for bad in (("bogus",), ("Always",), ("",), ("0x1",), ()):
            r = t.ran(agent.run("set-transfer-policy", job, *bad))
            t.eq(f"set-transfer-policy {bad}: exit status", r.rc, 2)
            t.eq(f"set-transfer-policy {bad}: stderr lines", len(r.err.strip().splitlines()), 1)
        t.eq("policy after refused values", field(info(t, agent, job), "transfer_policy"), "always")
        cmd(t, agent, "set-transfer-policy", job, "unrestricted-only")
        d = info(t, agent, job)
        t.eq("transfer_policy", field(d, "transfer_policy"), "unrestricted-only")
        t.eq("cost_flags", field(d, "cost_flags"), COST_UNRESTRICTED)
        r = cmd(t, agent, "info", job)
        t.ok("info shows the policy and its BITS cost flags",
             "transfer policy unrestricted-only (BITS cost flags 0x00000001)" in r.out, r.out)
        cmd(t, agent, "set-transfer-policy", job, "always")
        t.eq("cost_flags back to always", field(info(t, agent, job), "cost_flags"), COST_ALWAYS)
        r = t.ran(agent.get(o.url("/files/a.bin"), o.path("out", "x.bin"), extra=("--transfer-policy", "bogus")))
        t.eq("get --transfer-policy bogus: exit status", r.rc, 2)
        t.eq("get --transfer-policy bogus: stderr lines", len(r.err.strip().splitlines()), 1)
        r = t.ran(agent.run("set-transfer-policy", "00000000-0000-0000-0000-000000000000", "always"))
        t.eq("set-transfer-policy of no such job: exit status", r.rc, 2)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
