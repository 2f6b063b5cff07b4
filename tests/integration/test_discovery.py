#!/usr/bin/env python3
"""Peer discovery cases: each runs one scenario of `scripts/harness --netns` (every node its
own network namespace on a bridge, with its own D-Bus system bus, avahi-daemon, home and
config file; the nginx origin and dnsmasq in a namespace of their own) and checks the rows
and the measurements it reports.

Usage: test_discovery.py CASE    (or --list: the case names, one a line; --all: every case)

A case is SKIPPED (exit 77) when this machine cannot build namespaces: not root, no working
`ip netns`, no dbus-daemon or avahi-daemon binary (and for netns_no_avahi no dnsmasq).
Environment: BGCOPY_HARNESS (default: ../../scripts/harness from this file), BGCOPY and
BGCOPY_PEERD (the binaries the harness runs). Each case prints one line per check and, on
failure, the harness' JSON and stderr. Exit 0 when every check passed, 1 otherwise."""

import json
import os
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bgtest import SKIPPED, case_registry, main  # noqa: E402
from origin import MiB  # noqa: E402

HARNESS = os.environ.get("BGCOPY_HARNESS") or os.path.join(HERE, "..", "..", "scripts", "harness")
sys.path.insert(0, os.path.dirname(os.path.abspath(HARNESS)))
import netns  # noqa: E402  (scripts/netns.py, beside the harness)

TOOL = 4 * MiB
CASES, register = case_registry()


def sanitized():
    return os.environ.get("BGCOPY_SANITIZED", "").upper() in ("1", "ON", "TRUE", "YES")


def case(name, scenario, needs=(), timed=False):
    """A case that runs SCENARIO through `harness --netns --json` and checks what it reports
    with FN(t, doc), which returns the nodes expected in the rows, in order."""
    def deco(fn):
        def run(bg):
            t = bg.t
            why = netns.missing_tools() + [f"no {x} binary" for x in needs
                                           if not shutil.which(x, path=os.environ.get("PATH", "")
                                                               + ":/usr/sbin:/sbin")]
            if why:
                print(f"  skip  network namespaces unavailable: {'; '.join(why)}", flush=True)
                return SKIPPED
            if timed and sanitized():
                print("  skip  a timed many-node scenario: not in the sanitized build", flush=True)
                return SKIPPED
            print(f"checks: scenario {scenario} in network namespaces", flush=True)
            p, doc = run_harness(scenario)
            rows = doc.get("rows") if isinstance(doc, dict) else None
            common(t, p, doc, rows, scenario)
            nodes = fn(t, doc or {})
            t.eq("rows' nodes", [r.get("node") for r in rows or []], nodes)
            if t.failed:
                print("-- harness output:")
                print(json.dumps(doc, indent=2) if doc is not None else p.stdout)
                print(f"-- harness stderr:\n{p.stderr}")
        run.__doc__ = fn.__doc__
        register(name)(run)
        return fn
    return deco


def run_harness(scenario):
    argv = [sys.executable, HARNESS, "--netns", "--json", *scenario.split()]
    print(f"  ran   {' '.join(argv[1:])}", flush=True)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=280,
                       stdin=subprocess.DEVNULL)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        doc = None
    return p, doc


def common(t, p, doc, rows, scenario):
    """The harness ran, found every row and measurement as expected; every download ended
    TRANSFERRED with the origin's SHA-256 and its bytes add up."""
    t.eq("harness exit status", p.returncode, 0)
    t.ok("harness printed a JSON object with mode netns",
         isinstance(doc, dict) and doc.get("mode") == "netns", f"stdout: {p.stdout[:300]!r}")
    for r in rows or []:
        n = r.get("node")
        t.eq(f"{n}: scenario", r.get("scenario"), scenario)
        t.eq(f"{n}: bgcopy exit status", r.get("exit"), 0)
        t.eq(f"{n}: state", r.get("state"), "TRANSFERRED")
        t.eq(f"{n}: SHA-256 of the file and the job document are the origin's",
             r.get("sha256_ok"), True)
        t.ok(f"{n}: harness found the row as expected", r.get("ok") is True,
             f"problems: {r.get('problems')}")
        fp, fo, size = r.get("from_peers"), r.get("from_origin"), r.get("size")
        t.ok(f"{n}: bytes_from_peers + bytes_from_origin == size ({size})",
             isinstance(fp, int) and isinstance(fo, int) and fp + fo == size,
             f"from_peers {fp!r}, from_origin {fo!r}")
    for m in (doc or {}).get("measured") or []:
        t.ok(f"{m.get('node')}: {m.get('what')}: {m.get('seconds')} s"
             + (f" (bound {m['bound']} s)" if m.get("bound") is not None else ""),
             m.get("ok") is True, m.get("detail"))


def row_of(doc, node):
    for r in doc.get("rows") or []:
        if r.get("node") == node:
            return r
    return {"node": node}


def measured(doc, what):
    return {m.get("node"): m.get("seconds") for m in doc.get("measured") or []
            if m.get("what") == what}


def expect_seed(t, r):
    n = r.get("node")
    t.eq(f"{n}: no peer asked", r.get("asked"), [])
    t.eq(f"{n}: bytes_from_origin", r.get("from_origin"), TOOL)


def expect_from_peer(t, r, source, peer="A"):
    n = r.get("node")
    t.eq(f"{n}: result of the lookup", r.get("result"), "hit")
    t.eq(f"{n}: peers asked (peer_lookups)", r.get("asked"), [peer])
    t.eq(f"{n}: peer_lookups[].source", r.get("sources"), [source])
    t.eq(f"{n}: bytes_from_peers", r.get("from_peers"), TOOL)
    t.eq(f"{n}: bytes_from_origin", r.get("from_origin"), 0)
    t.eq(f"{n}: GETs at the origin", r.get("origin_gets"), 0)


def expect_from_origin(t, r):
    n = r.get("node")
    t.eq(f"{n}: no peer asked (peer_lookups empty)", r.get("asked"), [])
    t.eq(f"{n}: bytes_from_peers", r.get("from_peers"), 0)
    t.eq(f"{n}: bytes_from_origin", r.get("from_origin"), TOOL)


@case("netns_discover", "discover")
def discover(t, doc):
    """B and C list A (mdns, ok) after A's peerd starts, then get every byte from A
    without --peer"""
    expect_seed(t, row_of(doc, "A"))
    lat = measured(doc, "discovery latency")
    t.eq("discovery latency measured for B and C", sorted(lat), ["B", "C"])
    for n in ("B", "C"):
        expect_from_peer(t, row_of(doc, n), "mdns")
    t.ok("summary: discovery latency", isinstance((doc.get("summary") or {})
                                                  .get("discovery_latency_s"), (int, float)))
    return ["A", "B", "C"]


@case("netns_leave", "leave")
def leave(t, doc):
    """A's peerd stopped with SIGTERM is gone from B's `bgcopy peers`; B's get then asks
    no peer"""
    expect_seed(t, row_of(doc, "A"))
    t.eq("leave latency measured for B", sorted(measured(doc, "leave latency")), ["B"])
    expect_from_origin(t, row_of(doc, "B"))
    return ["A", "B"]


@case("netns_wrong_key", "wrong-key")
def wrong_key(t, doc):
    """C (another key) lists A and B as rejected, asks neither; B (A's key) hits A"""
    expect_seed(t, row_of(doc, "A"))
    c = row_of(doc, "C")
    expect_from_origin(t, c)
    t.eq("C: content requests A's peerd answered during C's get", c.get("a_content_requests"), 0)
    for what in ("A listed rejected (key mismatch)", "B listed rejected (key mismatch)"):
        t.eq(f"C: {what}", sorted(measured(doc, what)), ["C"])
    b = row_of(doc, "B")
    expect_from_peer(t, b, "mdns")
    t.ok("B: A's peerd counted B's content requests (the counter works)",
         isinstance(b.get("a_content_requests"), int) and b["a_content_requests"] > 0,
         f"got {b.get('a_content_requests')!r}")
    return ["A", "C", "B"]


@case("netns_no_avahi", "no-avahi", needs=("dnsmasq",))
def no_avahi(t, doc):
    """without avahi-daemon a static peer (one warning) and a DNS name (A + SRV) still work"""
    expect_seed(t, row_of(doc, "A"))
    b = row_of(doc, "B")
    expect_from_peer(t, b, "static")
    lines = [x for x in str(b.get("stderr")).splitlines() if x.strip()]
    t.eq("B (discovery on, no avahi-daemon): lines on get's stderr", len(lines), 1)
    c = row_of(doc, "C")
    expect_from_peer(t, c, "dns")
    t.eq("C (discovery off): get's stderr", c.get("stderr"), "")
    e = c.get("peers_entry") or {}
    t.eq("C: `bgcopy peers` source of A", e.get("source"), "dns")
    t.eq("C: `bgcopy peers` port of A (7655: only the SRV record says it)", e.get("port"), 7655)
    return ["A", "B", "C"]


@case("netns_report_miss", "report-miss")
def report_miss(t, doc):
    """report-miss with a discovered peer: B asks A (mdns) under the original URL: a miss"""
    expect_seed(t, row_of(doc, "A"))
    b = row_of(doc, "B")
    t.eq("B: result", b.get("result"), "miss")
    t.eq("B: peers asked", b.get("asked"), ["A"])
    t.eq("B: peer_lookups[].source", b.get("sources"), ["mdns"])
    t.eq("B: bytes_from_origin", b.get("from_origin"), TOOL)
    return ["A", "B"]


@case("netns_both_fixes_report", "both-fixes-report")
def both_fixes_report(t, doc):
    """both-fixes-report with a discovered peer: B hits A (mdns)"""
    a = row_of(doc, "A")
    expect_seed(t, a)
    t.eq("A: policy", a.get("policy"), "report+both")
    expect_from_peer(t, row_of(doc, "B"), "mdns")
    return ["A", "B"]


@case("netns_get_latency", "get-latency")
def get_latency(t, doc):
    """gets with discovery on and no peer anywhere, against discovery off: both medians and
    their difference are reported"""
    s = doc.get("summary") or {}
    for k in ("get_discovery_on_median_s", "get_discovery_off_median_s",
              "get_no_peers_added_s"):
        t.ok(f"summary: {k} = {s.get(k)}", isinstance(s.get(k), (int, float)))
    return []


@case("netns_avahi_restart", "avahi-restart")
def avahi_restart(t, doc):
    """A's avahi-daemon stopped (SIGTERM) and started again: A's peerd keeps serving
    (/v1/health answers while it is down), logs one 'went away' and one 'is back' line, B
    lists A again (mdns, ok) and B's get without --peer hits A"""
    a = row_of(doc, "A")
    expect_seed(t, a)
    t.eq("A: peerd still running after the restart", a.get("peerd_running"), True)
    t.eq("A: /v1/health answered while avahi-daemon was down", a.get("health_while_down"),
         True)
    t.ok(f"A: every /v1/health poll while avahi-daemon was down answered 200 "
         f"({a.get('health_polls_avahi_down')} polls)",
         isinstance(a.get("health_polls_avahi_down"), int) and a["health_polls_avahi_down"] > 0
         and a.get("health_failures_avahi_down") == 0,
         f"failures {a.get('health_failures_avahi_down')!r}")
    t.eq("A: /v1/health polls that failed, all along", a.get("health_failures"), 0)
    away, back = a.get("went_away_lines") or [], a.get("back_lines") or []
    t.eq("A: peerd's 'went away' lines", len(away), 1)
    t.ok("A: ... saying 'avahi-daemon went away: no longer announced; will announce again "
         "when it is back'", away and away[0].endswith(
             "DNS-SD: avahi-daemon went away: no longer announced; will announce again when "
             "it is back"), f"lines {away!r}")
    t.eq("A: peerd's 'is back' lines", len(back), 1)
    t.ok("A: ... saying 'avahi-daemon is back: announcing again'",
         back and back[0].endswith("DNS-SD: avahi-daemon is back: announcing again"),
         f"lines {back!r}")
    for what in ("discovery latency", "gone from B while A's avahi-daemon is down",
                 "listed again by B after avahi-daemon's restart"):
        t.eq(f"{what}: measured for B", sorted(measured(doc, what)), ["B"])
    for what in ("peerd logged 'went away' after avahi-daemon's SIGTERM",
                 "peerd logged 'is back' after avahi-daemon's restart"):
        t.eq(f"{what}: measured for A", sorted(measured(doc, what)), ["A"])
    t.ok("summary: avahi_restart_relisted_s",
         isinstance((doc.get("summary") or {}).get("avahi_restart_relisted_s"), (int, float)))
    expect_from_peer(t, row_of(doc, "B"), "mdns")
    return ["A", "B"]


@case("netns_daemon_live", "daemon-live")
def daemon_live(t, doc):
    """B's `bgcopy daemon`, started before A's peerd, finds A by its live DNS-SD watch: a
    queued job (peer_caching both, from the config file) takes every byte from A (mdns);
    after A's peerd stops, the next job asks no peer and completes from the origin"""
    rows = [r for r in doc.get("rows") or [] if r.get("node") == "B"]
    hit, miss = (rows + [{}, {}])[:2]
    expect_seed(t, row_of(doc, "A"))
    for r in (hit, miss):
        t.eq(f"B: job of {r.get('path')}: peer_caching", r.get("peer_caching"), "both")
    expect_from_peer(t, hit, "mdns")
    t.eq("B: second job: file", miss.get("path"), "/releases/v1/small.bin")
    t.eq("B: second job: no peer asked (the daemon's table dropped A)", miss.get("asked"), [])
    t.eq("B: second job: bytes_from_peers", miss.get("from_peers"), 0)
    t.eq("B: second job: bytes_from_origin", miss.get("from_origin"), miss.get("size"))
    t.eq("B: daemon still running before its SIGTERM", miss.get("daemon_running"), True)
    t.eq("B: daemon's exit status after SIGTERM", miss.get("daemon_exit"), 0)
    for what in ("discovery latency", "leave latency"):
        t.eq(f"{what}: measured for B", sorted(measured(doc, what)), ["B"])
    return ["A", "A", "B", "B"]




def fleet_case(name, scenario):
    """A fleet scenario (16 nodes, 256 MiB from a rate-limited origin): in the sanitized
    build it is skipped, since its bounds are times of 16 nodes against one on two cores,
    which under the sanitizers measure the sanitizers (test_fleet.py runs the same paths
    there with two and three nodes)."""
    return case(name, scenario, timed=True)


def expect_fleet(t, doc, scenario, ratio_bound):
    rows = [m for m in doc.get("measured") or [] if m.get("scenario") == scenario]
    ratio = [m for m in rows if m.get("what", "").endswith("origin bytes / file size")]
    t.eq("one measurement of origin bytes", len(ratio), 1)
    for m in ratio:
        t.ok(f"origin bytes / size {m.get('seconds')} <= {ratio_bound}",
             isinstance(m.get("seconds"), (int, float)) and m["seconds"] <= ratio_bound,
             m.get("detail"))
    correct = [m for m in rows if m.get("what", "").endswith("every output correct")]
    t.ok("every output correct", len(correct) == 1 and correct[0].get("ok") is True,
         correct[0].get("detail") if correct else "no such row")
    return []


@fleet_case("netns_fleet", "fleet fleet-owner-dies")
def fleet(t, doc):
    """fleet: 16 nodes get one 256 MiB file at once from an origin sending 16 MiB/s per
    connection: every output correct, the origin sends at most 1.1 x the file, the last node
    is done within 1.5 x the time one node alone takes (measured first, in the same run).
    fleet-owner-dies: the same, and the node fetching from the origin is killed at half the
    file: every other output correct, the origin sends at most 2.1 x the file"""
    rows = [m for m in doc.get("measured") or [] if m.get("scenario") == "fleet"
            and "first start to last end" in m.get("what", "")]
    t.ok("the time bound was measured", len(rows) == 1 and rows[0].get("bound") is not None,
         json.dumps(rows))
    expect_fleet(t, doc, "fleet", 1.1)
    killed = [m for m in doc.get("measured") or [] if "owner was killed" in m.get("what", "")]
    t.ok("the owner was found and killed", len(killed) == 1 and killed[0].get("ok") is True,
         json.dumps(killed))
    return expect_fleet(t, doc, "fleet-owner-dies", 2.1)


@fleet_case("netns_swarm", "swarm fleet-liar")
def swarm(t, doc):
    """swarm: three holders, each link capped by tc to a third of the asker's: from all three
    the file comes at least twice as fast as from one, every byte from peers, each holder
    serving part. fleet-liar: one of three keyed holders has a byte flipped in every fourth
    piece of its store (its piece list true); four nodes get the file at once: every output
    and asker's store correct, each asker drops the liar, nothing from the origin, and the
    bytes sent but not kept are at most what the liar served"""
    rows = doc.get("measured") or []
    for sc, what in (("swarm", "throughput from 3 capped holders / from 1"),
                     ("fleet-liar", "bytes sent but not kept / bytes the liar served"),
                     ("fleet-liar", "origin bytes after seeding / file size"),
                     ("fleet-liar", "askers that caught the liar")):
        got = [m for m in rows if m.get("scenario") == sc and m.get("what") == what]
        t.ok(f"{sc}: {what}: measured once", len(got) == 1 and got[0].get("seconds") is not None,
             json.dumps(got))
    return []


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__, needs_exe=False))
