#!/usr/bin/env python3
"""Peer-caching cases: each runs one scenario of scripts/harness (a local nginx origin, two
nodes with their own home and bgcopy-peerd on 127.0.0.10 / 127.0.0.11, fake peers) and
checks the rows it reports.

Usage: test_peers.py CASE        (or --list: the case names, one a line; --all: every case)

Environment: BGCOPY_HARNESS (default: ../../scripts/harness from this file), BGCOPY and
BGCOPY_PEERD (the binaries the harness runs; default: its own build/bin). Each case prints
one line per check ('ok' or 'FAIL', with expected and got) and on failure the harness'
JSON rows and stderr. Exit 0 when every check passed, 1 otherwise, 2 on bad usage."""

import json
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bgtest import ABSENT, case_registry, main  # noqa: E402
from origin import MiB  # noqa: E402

HARNESS = os.environ.get("BGCOPY_HARNESS") or os.path.join(HERE, "..", "..", "scripts", "harness")
TOOL = 4 * MiB
BIG = 32 * MiB

CASES, register = case_registry()


def case(name, scenario):
    """A case that runs SCENARIO through the harness and checks its rows with FN(t, rows),
    which returns the nodes expected in the rows; the checks every scenario gets follow."""
    def deco(fn):
        def run(bg):
            t = bg.t
            print(f"checks: scenario {scenario}", flush=True)
            p, rows = run_harness(scenario)
            nodes = fn(t, rows)
            common(t, p, rows, scenario, nodes)
            if t.failed:
                print(f"-- {t.failed} check(s) failed; harness rows:")
                print(json.dumps(rows, indent=2) if rows is not None else p.stdout)
                print(f"-- harness stderr:\n{p.stderr}")
        register(name)(run)
        return fn
    return deco


def run_harness(scenario):
    argv = [sys.executable, HARNESS, "--json", scenario]
    print(f"  ran   {' '.join(argv[1:])}", flush=True)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=280,
                       stdin=subprocess.DEVNULL)
    try:
        rows = json.loads(p.stdout)
    except ValueError:
        rows = None
    return p, rows


def row_of(rows, node):
    for r in rows or []:
        if r.get("node") == node:
            return r
    return {"node": node}  # absent: every other field reads as (absent)


def get(r, key):
    return r.get(key, ABSENT) if r else ABSENT


def lst(r, key):
    v = get(r, key)
    return v if isinstance(v, list) else []


def common(t, p, rows, scenario, nodes):
    """The harness ran, reported the rows of every node, and found each as expected; every
    download ended TRANSFERRED with the origin's SHA-256."""
    t.eq("harness exit status", p.returncode, 0)
    t.ok("harness printed a JSON array of rows", isinstance(rows, list),
         f"stdout: {p.stdout[:300]!r}")
    t.eq("rows' nodes", [r.get("node") for r in rows or []], nodes)
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


def expect_seed(t, r, size, cache_key_path):
    """The first node downloads from the origin alone and keys the content as told."""
    n = get(r, "node")
    t.eq(f"{n}: size", get(r, "size"), size)
    t.eq(f"{n}: no peer asked (result)", get(r, "result"), "-")
    t.eq(f"{n}: bytes_from_peers", get(r, "from_peers"), 0)
    t.eq(f"{n}: bytes_from_origin", get(r, "from_origin"), size)
    t.ok(f"{n}: cache_key ends with {cache_key_path}",
         str(get(r, "cache_key")).endswith(cache_key_path), f"got {get(r, 'cache_key')!r}")


def expect_lookup(t, r, key_path, result, peer):
    n = get(r, "node")
    t.ok(f"{n}: key looked up ends with {key_path}", str(get(r, "key")).endswith(key_path),
         f"got {get(r, 'key')!r}")
    t.eq(f"{n}: result", get(r, "result"), result)
    t.eq(f"{n}: peer of the last lookup", get(r, "peer"), peer)


def expect_all_from(t, r, size, source):
    n = get(r, "node")
    t.eq(f"{n}: size", get(r, "size"), size)
    t.eq(f"{n}: bytes_from_peers", get(r, "from_peers"), size if source == "peers" else 0)
    t.eq(f"{n}: bytes_from_origin", get(r, "from_origin"), size if source == "origin" else 0)
    if source == "peers":
        t.eq(f"{n}: GETs at the origin", get(r, "origin_gets"), 0)


def a_then_b(t, rows, seed_key, result, source):
    """Node A downloads the tool from the origin and keys it under SEED_KEY; node B looks up
    /latest/tool.bin at A (RESULT) and takes every byte from SOURCE. Returns the two rows."""
    a, b = row_of(rows, "A"), row_of(rows, "B")
    expect_seed(t, a, TOOL, seed_key)
    expect_lookup(t, b, "/latest/tool.bin", result, "A")
    expect_all_from(t, b, TOOL, source)
    return a, b


@case("peer_report_miss", "report-miss")
def report_miss(t, rows):
    a, b = a_then_b(t, rows, "/releases/v1/tool.bin", "miss", "origin")
    t.ok("B: remote_url is the final URL", str(get(b, "remote_url")).endswith("/releases/v1/tool.bin"),
         f"got {get(b, 'remote_url')!r}")
    return ["A", "B"]


@case("peer_silent_hit", "silent-hit")
def silent_hit(t, rows):
    a_then_b(t, rows, "/latest/tool.bin", "hit", "peers")
    return ["A", "B"]


@case("peer_both_fixes_report", "both-fixes-report")
def both_fixes_report(t, rows):
    a, b = a_then_b(t, rows, "/releases/v1/tool.bin", "hit", "peers")
    t.eq("A: policy", get(a, "policy"), "report+both")
    t.ok("B: remote_url ends as the final URL",
         str(get(b, "remote_url")).endswith("/releases/v1/tool.bin"),
         f"got {get(b, 'remote_url')!r}")
    return ["A", "B"]


@case("peer_hostile_peer_falls_back", "hostile-peer")
def hostile_peer(t, rows):
    expect_seed(t, row_of(rows, "A"), TOOL, "/latest/tool.bin")
    for node, src in (("B (FAKE)", "origin"), ("B (FAKE,A)", "peers")):
        r = row_of(rows, node)
        looks = [(x.get("peer"), x.get("result")) for x in lst(r, "lookups") if isinstance(x, dict)]
        t.eq(f"{node}: results of the peers asked, in order",
             [res for _, res in looks], ["rejected"] if src == "origin" else ["rejected", "hit"])
        # Alone it sends the whole body; beside A (two holders: the swarm) ranges of it.
        t.ok(f"{node}: the fake peer sent its body (GET 200 of {TOOL} bytes, or ranges)",
             [m for m in lst(r, "fake_requests") if m[0] == "GET" and
              ((m[1] == 200 and m[2] == TOOL) or (src == "peers" and m[1] == 206 and m[2] > 0))],
             f"got {get(r, 'fake_requests')!r}")
        expect_all_from(t, r, TOOL, src)
    return ["A", "B (FAKE)", "B (FAKE,A)"]


@case("peer_dies_mid_transfer_resumes_from_origin", "peer-dies")
def peer_dies(t, rows):
    expect_seed(t, row_of(rows, "A"), BIG, "/latest/big.bin")
    r = row_of(rows, "B (FAKE)")
    expect_lookup(t, r, "/latest/big.bin", "failed", "FAKE")
    fp, fo = get(r, "from_peers"), get(r, "from_origin")
    t.eq("B: size", get(r, "size"), BIG)
    t.ok("B: bytes_from_peers > 0", isinstance(fp, int) and fp > 0, f"got {fp!r}")
    t.ok("B: bytes_from_origin > 0", isinstance(fo, int) and fo > 0, f"got {fo!r}")
    t.ok("B: bytes_from_peers + bytes_from_origin == 32 MiB",
         isinstance(fp, int) and isinstance(fo, int) and fp + fo == BIG, f"{fp!r} + {fo!r}")
    reqs = [x for x in lst(r, "origin_requests") if isinstance(x, str)]
    ranged = [x for x in reqs if re.match(r"GET /releases/v1/big\.bin 206 bytes=\d+-", x)]
    t.ok("B: the origin answered a Range GET of big.bin with 206", ranged, f"origin: {reqs}")
    if ranged and isinstance(fp, int):
        t.eq("B: the Range starts where the peer's bytes end",
             int(re.search(r"bytes=(\d+)-", ranged[0]).group(1)), fp)
    t.ok("B: no whole-file GET of big.bin at the origin",
         not [x for x in reqs if x.startswith("GET /releases/v1/big.bin 200")], f"origin: {reqs}")
    return ["A", "B (FAKE)"]


@case("peer_keyed_hit_and_wrong_key", "keyed-hit")
def keyed_hit(t, rows):
    expect_seed(t, row_of(rows, "A"), TOOL, "/latest/tool.bin")
    r = row_of(rows, "B (key)")
    expect_lookup(t, r, "/latest/tool.bin", "hit", "A")
    expect_all_from(t, r, TOOL, "peers")
    for node in ("B (wrong key)", "B (no key)"):
        r = row_of(rows, node)
        expect_lookup(t, r, "/latest/tool.bin", "error", "A")
        detail = (get(r, "lookup") or {}).get("detail") if get(r, "lookup") is not ABSENT else None
        t.ok(f"{node}: the peer answered 401", "401" in str(detail), f"detail {detail!r}")
        expect_all_from(t, r, TOOL, "origin")
    return ["A", "B (key)", "B (wrong key)", "B (no key)"]


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__, needs_exe=False))
