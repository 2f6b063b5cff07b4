#!/usr/bin/env python3
"""The peer table: the peers a `get` asks when it names none (static peers from bgcopy.conf,
every address of a DNS name on its SRV port), the source each lookup names in the job
document, the per-peer results kept in the store, and `bgcopy peers [--json]`.

Usage: test_peer_table.py CASE [PATH/TO/bgcopy]   (or BGCOPY=PATH/TO/bgcopy ... CASE)
       test_peer_table.py --list                  prints the case names, one a line
       test_peer_table.py --all [PATH/TO/bgcopy]  runs every case, prints a summary

Environment: BGCOPY, BGCOPY_PEERD (default: next to BGCOPY), BGCOPY_KEEP_TMP=1.

The static cases run a real nginx origin and a real bgcopy-peerd on 127.0.0.1 serving a
home that a first get filled; the client's bgcopy.conf (BGCOPY_CONFIG) names the peer and
`peer_caching = both`, `discovery = off`. The DNS cases need root and `ip netns`: each makes
a network namespace of its own with only loopback up, a resolv.conf for it under
/etc/netns/NAME (which `ip netns exec` mounts over /etc/resolv.conf), dnsmasq answering on
127.0.0.1:53 inside it (two A records for one name, and an SRV record _bgcopy._tcp.NAME for
the port unless the case leaves it out), and two bgcopy-peerd inside it on 127.0.0.2 and
127.0.0.3; bgcopy runs inside it with `--sha256` (the origin, outside, is never needed: a
peer's entry is checked against the expected digest). Everything is removed afterwards."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import (Bgcopy, case_registry, cmd, Daemon, field, main, new_job, Peerd, peerd_exe, poll_state,  # noqa: E402
                    SKIPPED, started, store_file)
from origin import Origin  # noqa: E402

CASES, case = case_registry()

SIZE = 200_000
PEER_PORT_DEFAULT = 7654  # cache.h: peerd's default port, a DNS name's without SRV
FIELDS = {"peer", "address", "port", "source", "node", "name", "key", "state", "reason",
          "last_seen", "last_result", "hits", "misses", "failures", "rejected"}


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def dead_port():
    """A port on 127.0.0.1 that nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peers_json(t, agent, what):
    r = agent.run("peers", "--json")
    t.eq(f"{what}: bgcopy peers --json exit status", r.rc, 0)
    try:
        doc = json.loads(r.out)
    except ValueError:
        t.ok(f"{what}: bgcopy peers --json prints JSON", False, r.out)
        return []
    t.ok(f"{what}: an array", isinstance(doc, list), doc)
    for p in doc if isinstance(doc, list) else []:
        t.eq(f"{what}: fields of {p.get('peer')}", set(p), FIELDS)
    return doc if isinstance(doc, list) else []


def by_peer(doc):
    return {p.get("peer"): p for p in doc}


def lookups(r):
    """(peer, source, result) of files[0].peer_lookups."""
    v = field(r.doc, "files", 0, "peer_lookups")
    return [(x.get("peer"), x.get("source"), x.get("result")) for x in v] if isinstance(v, list) else v


def client(bg, o, conf_text):
    conf = write(o.path("client", "bgcopy.conf"), conf_text)
    return Bgcopy(bg.exe, o.path("client", "home"), env_extra={"BGCOPY_CONFIG": conf})


def config_read(t, agent, peer):
    """Whether this bgcopy reads bgcopy.conf (the peer is listed); a note when not."""
    r = agent.run("peers", "--json")
    ok = r.rc == 0 and peer in r.out
    if not ok:
        print(f"skipped: bgcopy peers does not list the static peer of bgcopy.conf "
              f"(rc {r.rc}, {r.out.strip()!r} {r.err.strip()!r})")
    return ok


@case("table_static_peer_from_config_serves_get")
def _(bg):
    """a static peer of bgcopy.conf is asked by a get that names none: the content comes from
    it (bytes_from_peers == size, lookup source "static", result hit); bgcopy peers lists it
    with counts that follow: a hit, then a miss for a URL it does not hold"""
    with Origin(files={"a.bin": SIZE, "b.bin": 5000}) as o:
        o, seed, t = started(bg, o)
        url = store_file(t, seed, o, "a.bin")
        with Peerd(bg, seed.home, workdir=o.dir) as p:
            peer = f"127.0.0.1:{p.port}"
            agent = client(bg, o, f"peer = {peer}\npeer_caching = both\ndiscovery = off\n")
            if not config_read(t, agent, peer):
                return SKIPPED
            before = by_peer(peers_json(t, agent, "before any get"))
            t.eq("listed before any get", sorted(before), [peer])
            e = before.get(peer, {})
            t.eq("before: source, key, state, counts, last seen",
                 (e.get("source"), e.get("address"), e.get("port"), e.get("key"), e.get("state"),
                  e.get("reason"), e.get("hits"), e.get("misses"), e.get("failures"),
                  e.get("rejected"), e.get("last_seen"), e.get("last_result")),
                 ("static", "127.0.0.1", p.port, "unknown", "ok", None, 0, 0, 0, 0, None, None))

            r = t.ran(agent.get(url, o.path("out", "a-client.bin")))
            t.eq("get a.bin: exit status", r.rc, 0)
            t.eq("get a.bin: bytes_from_peers", field(r.doc, "files", 0, "bytes_from_peers"), SIZE)
            t.eq("get a.bin: peer_lookups (peer, source, result)", lookups(r),
                 [(peer, "static", "hit")])
            t.eq("get a.bin: peer_lookup.source",
                 field(r.doc, "files", 0, "peer_lookup", "source"), "static")
            e = by_peer(peers_json(t, agent, "after the hit")).get(peer, {})
            t.eq("after the hit: hits, misses, last result", (e.get("hits"), e.get("misses"),
                 e.get("last_result")), (1, 0, "hit"))
            t.ok("after the hit: last_seen is an ISO 8601 UTC time",
                 isinstance(e.get("last_seen"), str) and e["last_seen"].endswith("Z"), e)

            r = t.ran(agent.get(o.url("/files/b.bin"), o.path("out", "b-client.bin")))
            t.eq("get b.bin: exit status", r.rc, 0)
            t.eq("get b.bin: from the origin", field(r.doc, "files", 0, "bytes_from_origin"), 5000)
            t.eq("get b.bin: peer_lookups", lookups(r), [(peer, "static", "miss")])
            e = by_peer(peers_json(t, agent, "after the miss")).get(peer, {})
            t.eq("after the miss: hits, misses, failures, last result",
                 (e.get("hits"), e.get("misses"), e.get("failures"), e.get("last_result")),
                 (1, 1, 0, "miss"))

            r = agent.run("peers")
            t.eq("bgcopy peers: exit status", r.rc, 0)
            lines = r.out.splitlines()
            t.eq("bgcopy peers: the header", lines[0].split() if lines else None,
                 ["ADDRESS", "PORT", "SOURCE", "KEY", "STATE", "LAST-SEEN", "LAST-RESULT", "HITS",
                  "MISSES", "FAILURES", "REJECTED"])
            row = lines[1].split() if len(lines) > 1 else []
            t.eq("bgcopy peers: the peer's row (but its time)", row[:5] + row[6:],
                 ["127.0.0.1", str(p.port), "static", "unknown", "ok", "miss", "1", "1", "0", "0"])


@case("table_peer_option_overrides_config")
def _(bg):
    """--peer replaces the table: only the named peer is asked (source "option"), not the
    static one of bgcopy.conf"""
    with Origin(files={"a.bin": SIZE}) as o:
        o, seed, t = started(bg, o)
        url = store_file(t, seed, o, "a.bin")
        dead = f"127.0.0.1:{dead_port()}"
        with Peerd(bg, seed.home, workdir=o.dir) as p:
            peer = f"127.0.0.1:{p.port}"
            agent = client(bg, o, f"peer = {dead}\npeer_caching = both\ndiscovery = off\n")
            if not config_read(t, agent, dead):
                return SKIPPED
            r = t.ran(agent.get(url, o.path("out", "a.bin"), extra=["--peer", peer]))
            t.eq("exit status", r.rc, 0)
            t.eq("bytes_from_peers", field(r.doc, "files", 0, "bytes_from_peers"), SIZE)
            t.eq("peer_lookups: the option's peer alone", lookups(r), [(peer, "option", "hit")])
            doc = by_peer(peers_json(t, agent, "after"))
            t.eq("the static peer was never used", (doc.get(dead, {}).get("failures"),
                 doc.get(dead, {}).get("last_result")), (0, None))


@case("table_dead_static_peer_counts_failure")
def _(bg):
    """a static peer that refuses connections costs the get nothing but a lookup: the file
    comes from the origin, the lookup says error (source static), and bgcopy peers counts a
    failure"""
    with Origin(files={"a.bin": SIZE}) as o:
        o, _, t = started(bg, o)
        dead = f"127.0.0.1:{dead_port()}"
        agent = client(bg, o, f"peer = {dead}\npeer_caching = both\ndiscovery = off\n")
        if not config_read(t, agent, dead):
            return SKIPPED
        r = t.ran(agent.get(o.url("/files/a.bin"), o.path("out", "a.bin")))
        t.eq("exit status", r.rc, 0)
        t.eq("bytes_from_origin", field(r.doc, "files", 0, "bytes_from_origin"), SIZE)
        t.eq("peer_lookups", lookups(r), [(dead, "static", "error")])
        e = by_peer(peers_json(t, agent, "after")).get(dead, {})
        t.eq("failures, hits, last result, last seen",
             (e.get("failures"), e.get("hits"), e.get("last_result"), e.get("last_seen")),
             (1, 0, "error", None))


@case("table_daemon_job_asks_static_peer")
def _(bg):
    """a daemon without --peer gives its client jobs the table's peers: a queued job of mode
    client takes its file from the static peer of bgcopy.conf (lookup source static)"""
    with Origin(files={"a.bin": SIZE}) as o:
        o, seed, t = started(bg, o)
        url = store_file(t, seed, o, "a.bin")
        with Peerd(bg, seed.home, workdir=o.dir) as p:
            peer = f"127.0.0.1:{p.port}"
            agent = client(bg, o, f"peer = {peer}\npeer_caching = client\ndiscovery = off\n")
            if not config_read(t, agent, peer):
                return SKIPPED
            with Daemon(t, agent, o):
                job = new_job(t, agent, [(url, o.path("out", "a.bin"))])
                if job is None:
                    return
                cmd(t, agent, "resume", job)
                d, _ = poll_state(t, agent, job, ("TRANSFERRED", "ERROR"), 30)
                t.eq("bytes_from_peers", field(d, "files", 0, "bytes_from_peers"), SIZE)
                v = field(d, "files", 0, "peer_lookups")
                t.eq("peer_lookups (peer, source, result)",
                     [(x.get("peer"), x.get("source"), x.get("result")) for x in v]
                     if isinstance(v, list) else v, [(peer, "static", "hit")])
            e = by_peer(peers_json(t, agent, "after")).get(peer, {})
            t.eq("the daemon's hit counted", (e.get("hits"), e.get("last_result")), (1, "hit"))


@case("table_discovery_unavailable_warns_once")
def _(bg):
    """with discovery on and no avahi-daemon, a get that needs peers says so in one line and
    uses its static peer"""
    if os.path.exists("/run/avahi-daemon/socket") or os.path.exists("/var/run/avahi-daemon/socket"):
        print("skipped: an avahi-daemon runs on this machine")
        return SKIPPED
    with Origin(files={"a.bin": SIZE}) as o:
        o, seed, t = started(bg, o)
        url = store_file(t, seed, o, "a.bin")
        with Peerd(bg, seed.home, workdir=o.dir) as p:
            peer = f"127.0.0.1:{p.port}"
            agent = client(bg, o, f"peer = {peer}\npeer_caching = both\ndiscovery = on\n")
            if not config_read(t, agent, peer):
                return SKIPPED
            r = t.ran(agent.get(url, o.path("out", "a.bin")))
            t.eq("exit status", r.rc, 0)
            t.eq("bytes_from_peers", field(r.doc, "files", 0, "bytes_from_peers"), SIZE)
            warn = [x for x in r.err.splitlines() if "peer discovery unavailable" in x]
            t.eq("one warning line", len(warn), 1)
            t.ok("it names the fallback", warn and warn[0].startswith("bgcopy: peer discovery "
                 "unavailable: ") and warn[0].endswith("; using static and DNS peers"), warn)


@case("table_no_peers_listed_as_none")
def _(bg):
    """with no static peer, no DNS name and discovery off, bgcopy peers says none were found
    (an empty array with --json) and exits 0"""
    d = tempfile.mkdtemp(prefix="bgcopy-it-table-")
    try:
        conf = write(os.path.join(d, "bgcopy.conf"), "discovery = off\n")
        agent = Bgcopy(bg.exe, os.path.join(d, "home"), env_extra={"BGCOPY_CONFIG": conf})
        t = bg.t
        r = t.ran(agent.run("peers", "--json"))
        t.eq("--json: exit status and output", (r.rc, r.out.strip()), (0, "[]"))
        r = t.ran(agent.run("peers"))
        t.eq("text: exit status", r.rc, 0)
        t.ok("text: says none were found", "no peers found" in r.out, r.out)
        t.eq("no warning (discovery off)", r.err, "")
    finally:
        if os.environ.get("BGCOPY_KEEP_TMP") != "1":
            shutil.rmtree(d, ignore_errors=True)


# ---- DNS names, in a network namespace ------------------------------------------------------

class Netns:
    """A network namespace with loopback up, its own resolv.conf (127.0.0.1) and dnsmasq on
    127.0.0.1:53 answering RECORDS; processes started in it are stopped and the namespace and
    its /etc/netns folder removed on exit."""

    def __init__(self, t, workdir, records):
        self.t = t
        self.name = f"bgtable{os.getpid()}"
        self.etc = f"/etc/netns/{self.name}"
        self.workdir = workdir
        self.records = records
        self.procs = []

    def __enter__(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
            write(os.path.join(self.etc, "resolv.conf"), "nameserver 127.0.0.1\n")
            log = open(os.path.join(self.workdir, "dnsmasq.log"), "wb")
            self.start(["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                        "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file=",
                        "--log-facility=-", *self.records], log)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def argv(self, argv):
        return ["ip", "netns", "exec", self.name, *argv]

    def start(self, argv, out):
        print(f"  start (netns {self.name}) {' '.join(argv)}", flush=True)
        p = subprocess.Popen(self.argv(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.procs.append(p)
        return p

    def wait_name(self, name):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(self.argv(["getent", "ahosts", name]), capture_output=True, text=True)
            if r.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def __exit__(self, *a):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)


class NsBgcopy(Bgcopy):
    def __init__(self, ns, *a, **kw):
        super().__init__(*a, **kw)
        self.ns = ns

    def argv(self, *args, global_args=()):
        return self.ns.argv(super().argv(*args, global_args=global_args))


def netns_usable():
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None or shutil.which("dnsmasq") is None:
        return "no ip (iproute2) or dnsmasq (dnsmasq-base)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns does not work: {probe.stderr.strip()}"
    return None


def dns_case(bg, srv):
    why = netns_usable()
    if why is not None:
        print(f"skipped: {why}")
        return SKIPPED
    name = "peers.bgtable.test"
    port = 17654 if srv else PEER_PORT_DEFAULT
    records = [f"--host-record={name},127.0.0.2", f"--host-record={name},127.0.0.3"]
    if srv:
        records.append(f"--srv-host=_bgcopy._tcp.{name},{name},{port}")
    with Origin(files={"a.bin": SIZE}) as o:
        o, seed, t = started(bg, o)
        url = store_file(t, seed, o, "a.bin")
        with Netns(t, o.dir, records) as ns:
            t.ok(f"dnsmasq answers for {name} in the namespace", ns.wait_name(name))
            peerds = []
            for addr in ("127.0.0.2", "127.0.0.3"):
                pf = o.path(f"peerd-{addr}.port")
                out = open(o.path(f"peerd-{addr}.log"), "wb")
                peerds.append(ns.start([peerd_exe(bg), "--home", seed.home, "--listen", addr,
                                        "--port", str(port), "--port-file", pf], out))
                deadline = time.monotonic() + 15
                while not os.path.exists(pf) and time.monotonic() < deadline:
                    time.sleep(0.05)
                t.ok(f"peerd listens on {addr}:{port}", os.path.exists(pf))
            conf = write(o.path("client", "bgcopy.conf"),
                         f"peer_dns = {name}\npeer_caching = both\ndiscovery = off\n")
            agent = NsBgcopy(ns, bg.exe, o.path("client", "home"), env_extra={"BGCOPY_CONFIG": conf})
            want = {f"127.0.0.2:{port}", f"127.0.0.3:{port}"}
            r = agent.run("peers", "--json")
            if r.rc == 0 and r.out.strip() == "[]" and "peer_dns" not in r.err:
                print("skipped: bgcopy does not read peer_dns from bgcopy.conf")
                return SKIPPED
            doc = peers_json(t, agent, "before")
            t.eq("both addresses listed, source dns, on the port", sorted(
                (p.get("peer"), p.get("source"), p.get("port")) for p in doc),
                sorted((w, "dns", port) for w in want))
            sha = o.sha("a.bin")
            # The origin is outside the namespace: only a peer can deliver.
            r = t.ran(agent.get(url, o.path("out", "a.bin"), extra=["--sha256", sha]))
            t.eq("get: exit status", r.rc, 0)
            t.eq("get: bytes_from_peers", field(r.doc, "files", 0, "bytes_from_peers"), SIZE)
            lk = lookups(r)
            # Every address holds the file: all of them serve it together (the swarm).
            t.ok("get: hits from the name's addresses, source dns",
                 isinstance(lk, list) and len(lk) >= 1 and
                 all(x[0] in want and x[1:] == ("dns", "hit") for x in lk), lk)
            e = by_peer(peers_json(t, agent, "after")).get(lk[0][0] if lk else None, {})
            t.eq("after: the hit counted", (e.get("hits"), e.get("last_result")), (1, "hit"))
            for p in peerds:
                p.terminate()


@case("table_dns_name_peers_on_srv_port")
def _(bg):
    """every A record of bgcopy.conf's peer_dns is a peer on the port of its _bgcopy._tcp SRV
    record; a get inside the namespace takes the file from one of them (source dns)"""
    return dns_case(bg, srv=True)


@case("table_dns_name_peers_default_port_without_srv")
def _(bg):
    """without an SRV record the DNS name's addresses are peers on port 7654"""
    return dns_case(bg, srv=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
