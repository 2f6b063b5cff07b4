#!/usr/bin/env python3
"""bgcopy-peerd under load: wrk with many connections, mixed with malformed traffic.

Usage: test_peerd_load.py CASE [PATH/TO/bgcopy]   (or BGCOPY=PATH/TO/bgcopy ... CASE)
       test_peerd_load.py --list                  prints the case names, one a line
       test_peerd_load.py --all [PATH/TO/bgcopy]  runs every case, prints a summary

Environment: BGCOPY, BGCOPY_PEERD (default: bgcopy-peerd next to BGCOPY), WRK (default: wrk
on PATH; Debian package `wrk`, installed by scripts/setup), BGCOPY_KEEP_TMP=1 keeps the temp
dirs, and the size of the load:
  PEERD_LOAD_SECONDS      how long wrk runs (default 5; the full run of issue 7 is 30)
  PEERD_LOAD_CONNECTIONS  wrk's connections (default 1000)
  PEERD_LOAD_THREADS      wrk's threads (default 2)

The store is filled the real way (`bgcopy get` from an nginx origin, origin.py) and served by
one bgcopy-peerd without a key and one with --peer-key, on the same home, ports from the kernel
(Peerd of bgtest.py: stopped by the case, even when it fails). While wrk hammers the
unkeyed one with good requests (whole and ranged GETs of a small entry, /v1/health), Python
threads, at the same time:
  - sample good requests (whole, ranged and HEAD, of the small entry and of one streamed in
    blocks) and check every byte against the file;
  - send malformed requests: garbage request lines, huge headers, bad Range values, bad auth
    headers (to the keyed peerd, whose own good, signed requests are sampled too), bodies,
    unknown methods, over-long keys, requests broken off with a reset (RST) before, during and
    after the answer;
  - hold slowloris connections that send a request one byte at a time;
  - sample the unkeyed peerd's VmRSS from /proc/PID/status.
Then: both peerds still run and answer /v1/health, the connection gauge falls back within the
idle timeout (IDLE_TIMEOUT below), malformed requests got their 4xx (EXPECTED below), every
sampled answer was right, the peak VmRSS stayed under RSS_LIMIT, wrk saw only 2xx answers and
no socket error. The figures are printed."""

import hashlib
import http.client
import os
import random
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import case_registry, main, Peerd, q, sign, started, store_file  # noqa: E402
from origin import MiB, Origin  # noqa: E402

SMALL_SIZE = 4096               # what wrk asks for: answered from memory (<= PEERD_SMALL_BYTES)
BIG_SIZE = 300_000              # sampled too: streamed block by block (> PEERD_SMALL_BYTES)
CONNECTION_MEMORY = 32 * 1024   # PEERD_CONNECTION_MEMORY_DEFAULT (peerd.h): request + headers
HEADROOM = 200                  # --max-connections above wrk's: samplers, malformed, slowloris
SLOWLORIS = 50                  # connections that send a request one byte at a time
SAMPLERS = 2                    # threads checking good answers
MALFORMED_THREADS = 4           # threads sending malformed requests (each waits for its answer)
# --timeout given to the peerds. libmicrohttpd 0.9.75 in epoll mode misses the FIN of a client
# that sends part of a request and closes at once (a short recv() clears its read-ready flag,
# and the EOF raises no new edge): such a connection sits in CLOSE-WAIT, counted, until the
# idle timeout closes it. The default 30 s would make the check that every connection is
# released after the load wait half a minute.
IDLE_TIMEOUT = 5
# What peerd (or libmicrohttpd for it) answers each malformed request of fixed outcome with.
EXPECTED = {"garbage-line": "400", "binary": "400", "no-version": "400", "bad-version": "505",
            "huge-header": "431", "many-headers": "431", "huge-url": "414", "nul-key": "400",
            "huge-range": "416", "range-past-end": "416", "body": "400", "chunked-body": "400",
            "bad-method": "405", "unknown-path": "404", "bad-range": "200",
            "backwards-range": "200", "many-ranges": "200", "auth-missing": "401",
            "auth-garbage": "401", "auth-wrong-sig": "401", "auth-too-long": "401",
            "auth-old": "401", "auth-twice": "401"}
PEER_KEY = b"load-test-key-0123456789abcdef\n"
# VmRSS bound for the unkeyed peerd. Per connection libmicrohttpd keeps at most its memory pool
# (CONNECTION_MEMORY, only touched as used) and peerd one copy of the small entry being sent;
# the samplers stream at most SAMPLERS blocks of STORE_CHUNK_BYTES. At 1,200 connections:
# 1,200 x (32 + 4) KiB = 42 MiB in the very worst case, plus the binary, its libraries and the
# touched store pages (~6 MiB). 64 MiB leaves a margin and still catches a per-request leak
# (10 bytes per request over a 30 s run of ~100,000 requests is 1 MiB: a leak of a response
# buffer, 4 KiB each, would be 400 MiB). Sanitizer builds (shadow memory, quarantine) are
# only reported.
RSS_LIMIT = 64 * MiB

CASES, case = case_registry()


def env_int(name, default, lo, hi):
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    n = int(v)
    if not lo <= n <= hi:
        raise ValueError(f"{name}={v}: must be {lo}..{hi}")
    return n


def raise_nofile(need):
    """Raises the soft RLIMIT_NOFILE to NEED (at most the hard limit) for this process and its
    children (wrk, peerd); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def proc_status(pid, field_name):
    """A /proc/PID/status field in bytes, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def socket_states(port):
    """ss's lines for the TCP sockets whose local port is PORT (diagnostics)."""
    try:
        r = subprocess.run(["ss", "-tnoe", "state", "all", f"sport = :{port}"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip().splitlines()[1:] or ["(none)"]
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"(ss failed: {e})"]


def sanitized(pid):
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any("libasan" in line or "libubsan" in line for line in f)
    except OSError:
        return False


class Stats:
    """Counters shared by the threads (one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.problems = []
        self.slowest = {}   # malformed kind -> longest exchange, ms

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def problem(self, text):
        with self.lock:
            if len(self.problems) < 50:
                self.problems.append(text)

    def get(self, key):
        with self.lock:
            return self.counts.get(key, 0)

    def items(self, prefix):
        with self.lock:
            return sorted((k[len(prefix):], v) for k, v in self.counts.items() if k.startswith(prefix))


# ---- good requests, checked byte for byte ---------------------------------------------------

def sampler(port, entries, stop, st, rnd, key=None):
    """Whole, ranged and HEAD requests on one kept-alive connection (a new one after an error);
    with KEY, GETs only, five a second, each signed with its own t (strictly increasing from
    now - 250 s, so inside the 300 s window for minutes): the signature does not cover Range,
    and a signature seen twice is refused as a replay, by design."""
    conn = None
    last_t = 0
    while not stop.is_set():
        url, data = rnd.choice(entries)
        kind = rnd.choice(("whole", "range", "head")) if key is None else rnd.choice(("whole", "range"))
        method = "HEAD" if kind == "head" else "GET"
        hdrs = {}
        if kind == "range":
            a = rnd.randrange(len(data))
            b = rnd.randrange(a, len(data))
            hdrs["Range"] = f"bytes={a}-{b}"
        if key is not None:
            if stop.wait(0.2):
                break
            last_t = max(last_t + 1, int(time.time()) - 250)
            hdrs["X-Bgcopy-Auth"] = sign(key, method, "/v1/content", url, last_t)
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(method, q(url), headers=hdrs)
            r = conn.getresponse()
            body = r.read()
            if r.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            st.add("sample_error")
            st.problem(f"sample {method} {kind} of {len(data)} bytes on :{port}: {type(e).__name__}: {e}")
            if conn is not None:
                conn.close()
                conn = None
            stop.wait(0.05)
            continue
        want_status, want_body = 200, data
        if kind == "range":
            want_status, want_body = 206, data[a:b + 1]
        if kind == "head":
            want_body = b""
        ok = (r.status == want_status and body == want_body
              and r.getheader("ETag") == '"' + hashlib.sha256(data).hexdigest() + '"'
              and r.getheader("Content-Length") == str(len(data if kind == "head" else want_body)))
        if kind == "range":
            ok = ok and r.getheader("Content-Range") == f"bytes {a}-{b}/{len(data)}"
        st.add("sample_ok" if ok else "sample_wrong")
        if not ok:
            st.problem(f"sample {method} {kind} {hdrs.get('Range', '')} of {len(data)} bytes on "
                       f":{port}: status {r.status}, {len(body)} bytes, right bytes: "
                       f"{body == want_body}")
    if conn is not None:
        conn.close()


# ---- malformed requests ---------------------------------------------------------------------

def rst_close(s):
    """Closes S with a reset (SO_LINGER 0) instead of a FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def exchange(port, payload, st, kind, read=True, reset=False, read_some=None):
    """One malformed request on a fresh connection: sends PAYLOAD, reads the answer's status
    line (or, with READ_SOME, that many bytes), then closes (with RST when RESET)."""
    st.add("malformed_sent")
    st.add("malformed:" + kind)
    t0 = time.monotonic()
    try:
        _exchange(port, payload, st, kind, read, reset, read_some)
    finally:
        ms = int((time.monotonic() - t0) * 1000)
        with st.lock:
            st.slowest[kind] = max(st.slowest.get(kind, 0), ms)


def _exchange(port, payload, st, kind, read, reset, read_some):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as e:
        st.add("malformed_connect_error")
        st.problem(f"malformed {kind}: connect: {e}")
        return
    status = "none"
    try:
        try:
            s.sendall(payload)
        except OSError:
            status = "closed"
        if read and status == "none":
            got = b""
            want = read_some or 12
            deadline = time.monotonic() + 10
            while len(got) < want and time.monotonic() < deadline:
                try:
                    part = s.recv(65536)
                except socket.timeout:
                    break
                except OSError:
                    status = "reset"
                    break
                if not part:
                    status = "closed" if not got else status
                    break
                got += part
            m = re.match(rb"HTTP/1\.[01] (\d{3})", got)
            if m:
                status = m.group(1).decode()
    finally:
        if reset:
            rst_close(s)
        else:
            s.close()
    st.add(f"answer:{status}")
    st.add(f"answer-of:{kind}:{status}")


def malformed_requests(port, key_port, big_url, small_url, rnd):
    """(kind, port, payload, options) of the malformed requests, one of each kind."""
    p, s = q(big_url), q(small_url)
    junk = bytes(rnd.randrange(256) for _ in range(512))

    def get(target, headers="", method="GET", version="HTTP/1.1", body="", host=True):
        h = f"Host: 127.0.0.1:{port}\r\n" if host else ""
        return f"{method} {target} {version}\r\n{h}{headers}\r\n{body}".encode()

    def auth(value):
        return get(p, f"X-Bgcopy-Auth: {value}\r\n")
    old = sign(PEER_KEY.rstrip(b"\n"), "GET", "/v1/content", big_url, 1000)
    ranges = ",".join(f"{i}-{i}" for i in range(2000))
    return [
        ("garbage-line", port, b"GARBAGE GARBAGE GARBAGE\r\n\r\n", {}),
        ("binary", port, junk + b"\r\n\r\n", {}),
        ("no-version", port, f"GET {s}\r\n\r\n".encode(), {}),
        ("bad-version", port, get(s, version="HTTP/7.3"), {}),
        ("lf-only", port, get(s).replace(b"\r\n", b"\n"), {}),
        ("no-host", port, get(s, host=False), {}),
        ("huge-header", port, get(s, f"X-Big: {'a' * 40000}\r\n"), {}),
        ("many-headers", port, get(s, "X-H: v\r\n" * 5000), {}),
        ("huge-url", port, get("/v1/content?url=" + "%41" * 12000), {}),
        ("nul-key", port, get("/v1/content?url=a%00b"), {}),
        ("bad-range", port, get(s, "Range: bytes=abc\r\n"), {}),
        ("backwards-range", port, get(s, "Range: bytes=9-2\r\n"), {}),
        ("huge-range", port, get(s, "Range: bytes=99999999999999999999999-\r\n"), {}),
        ("many-ranges", port, get(s, f"Range: bytes={ranges}\r\n"), {}),
        ("range-past-end", port, get(s, f"Range: bytes={SMALL_SIZE}-\r\n"), {}),
        ("body", port, get(s, "Content-Length: 10\r\n", body="0123456789"), {}),
        ("chunked-body", port, get(s, "Transfer-Encoding: chunked\r\n", body="zz\r\n"), {}),
        ("bad-method", port, get(s, method="DELETE"), {}),
        ("unknown-path", port, get("/v1/../../etc/passwd"), {}),
        ("reset-before-answer", port, get(p)[:-2], {"read": False, "reset": True}),
        ("reset-mid-body", port, get(p), {"read_some": 2048, "reset": True}),
        ("reset-after-answer", port, get(s), {"reset": True}),
        ("close-mid-request", port, f"GET {p} HTTP/1.1\r\nRan".encode(), {"read": False}),
        # To the keyed peerd: authentication headers that must all be refused.
        ("auth-missing", key_port, get(p), {}),
        ("auth-garbage", key_port, auth("garbage"), {}),
        ("auth-wrong-sig", key_port, auth(f"t={int(time.time())},sig={'0' * 64}"), {}),
        ("auth-too-long", key_port, auth(f"t=1,sig={'a' * 4000}"), {}),
        ("auth-old", key_port, auth(old), {}),
        ("auth-twice", key_port, get(p, "X-Bgcopy-Auth: a\r\nX-Bgcopy-Auth: b\r\n"), {}),
    ]


def malformed_loop(reqs, stop, st, rnd, share):
    """Sends SHARE (this thread's part of REQS) once whatever the time, so that every kind
    is sent however slowly a loaded machine answers; then random ones until STOP."""
    for kind, port, payload, opts in share:
        exchange(port, payload, st, kind, **opts)
    while not stop.is_set():
        kind, port, payload, opts = rnd.choice(reqs)
        exchange(port, payload, st, kind, **opts)


def slowloris(port, url, stop, st, n):
    """Holds N connections, each sending one more byte of a request per round (0.5 s)."""
    req = f"GET {q(url)} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: {'s' * 200}\r\n\r\n".encode()
    socks = []
    try:
        for _ in range(n):
            try:
                socks.append([socket.create_connection(("127.0.0.1", port), timeout=5), 0])
                st.add("slowloris_opened")
            except OSError as e:
                st.problem(f"slowloris connect: {e}")
        while not stop.wait(0.5):
            for pair in socks:
                s, i = pair
                if s is None or i >= len(req):
                    continue
                try:
                    s.sendall(req[i:i + 1])
                    pair[1] = i + 1
                    st.add("slowloris_bytes")
                except OSError:
                    st.add("slowloris_cut")
                    s.close()
                    pair[0] = None
    finally:
        for s, _ in socks:
            if s is not None:
                rst_close(s)


# ---- wrk ------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- Good requests only, in turn: the whole small entry, a range of it, /v1/health.
local reqs = {}
local i = 0
init = function(args)
  local path = args[1]
  reqs[1] = wrk.format("GET", path)
  reqs[2] = wrk.format("GET", path, {["Range"] = "bytes=100-1099"})
  reqs[3] = wrk.format("GET", "/v1/health")
end
request = function()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
"""


def parse_wrk(text):
    out = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+\w+) read", text)
    out["requests"] = int(m.group(1)) if m else None
    out["read"] = m.group(4) if m else None
    m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    m = re.search(r"^\s*99%\s+(\S+)\s*$", text, re.M)
    out["p99"] = m.group(1) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    # wrk prints the line only when there was a socket error.
    m = re.search(r"Socket errors:\s*connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                    map(int, m.groups() if m else (0, 0, 0, 0))))
    return out


def find_wrk():
    exe = os.environ.get("WRK") or shutil.which("wrk")
    if not exe or not os.access(exe, os.X_OK):
        raise RuntimeError("wrk not found (Debian: apt-get install wrk; scripts/setup installs it)")
    return exe


# ---- the case -------------------------------------------------------------------------------

@case("peerd_load_wrk_with_malformed_requests")
def _(bg):
    seconds = env_int("PEERD_LOAD_SECONDS", 5, 1, 3600)
    conns = env_int("PEERD_LOAD_CONNECTIONS", 1000, 1, 50000)
    threads = env_int("PEERD_LOAD_THREADS", 2, 1, 64)
    threads = min(threads, conns)
    wrk = find_wrk()
    max_conns = conns + HEADROOM
    nofile = raise_nofile(max_conns + 512)
    with Origin(files={"small.bin": SMALL_SIZE, "big.bin": BIG_SIZE}) as o:
        o, agent, t = started(bg, o)
        print(f"checks: wrk -t{threads} -c{conns} -d{seconds}s (whole and ranged GETs of a "
              f"{SMALL_SIZE}-byte entry, /v1/health) on bgcopy-peerd --max-connections {max_conns}, "
              f"while {SAMPLERS} threads check whole/ranged/HEAD answers byte for byte, "
              f"{MALFORMED_THREADS} send malformed requests (to it and to a --peer-key peerd on "
              f"the same store), {SLOWLORIS} slowloris connections trickle; then both still run "
              f"and answer /v1/health, their connections are released within the idle timeout, "
              f"malformed requests got their 4xx, every sampled answer was right, "
              f"VmRSS stayed under {RSS_LIMIT // MiB} MiB, wrk saw only 2xx and no socket error")
        t.note(f"RLIMIT_NOFILE soft limit {nofile}")
        t.ok(f"RLIMIT_NOFILE soft limit {nofile} >= {max_conns + 64}", nofile >= max_conns + 64)
        small_url = store_file(t, agent, o, "small.bin")
        big_url = store_file(t, agent, o, "big.bin")
        entries = [(small_url, o.data["small.bin"]), (big_url, o.data["big.bin"])]
        key_path = o.path("peer.key")
        with open(key_path, "wb") as f:
            f.write(PEER_KEY)
        os.chmod(key_path, 0o600)
        key = PEER_KEY.rstrip(b"\n")
        lua = o.path("load.lua")
        with open(lua, "w") as f:
            f.write(WRK_SCRIPT)
        keyed_dir = o.path("keyed")
        os.makedirs(keyed_dir)
        # Every load connection comes from 127.0.0.1: no per-address limit.
        with Peerd(bg, agent.home, "--max-connections", str(max_conns), "--timeout",
                   str(IDLE_TIMEOUT), "--connections-per-peer", "0", workdir=o.dir) as p, \
                Peerd(bg, agent.home, "--peer-key", key_path, "--timeout", str(IDLE_TIMEOUT),
                      "--connections-per-peer", "0", workdir=keyed_dir) as pk:
            pid = p.proc.pid
            asan = sanitized(pid)
            rss0 = proc_status(pid, "VmRSS")
            peak = {"VmRSS": rss0 or 0, "RssAnon": proc_status(pid, "RssAnon") or 0}
            stop = threading.Event()      # ends the helpers once wrk is done
            stop_rss = threading.Event()
            st = Stats()
            rnd = random.Random(7)

            def sample_rss():
                while not stop_rss.is_set():
                    for name in peak:
                        v = proc_status(pid, name)
                        if v is not None:
                            peak[name] = max(peak[name], v)
                    stop_rss.wait(0.05)

            reqs = malformed_requests(p.port, pk.port, big_url, small_url, rnd)
            helpers = [threading.Thread(target=sample_rss, daemon=True)]
            for i in range(SAMPLERS):
                helpers.append(threading.Thread(target=sampler, daemon=True, args=(
                    p.port, entries, stop, st, random.Random(100 + i))))
            helpers.append(threading.Thread(target=sampler, daemon=True, args=(
                pk.port, entries, stop, st, random.Random(200), key)))
            for i in range(MALFORMED_THREADS):
                helpers.append(threading.Thread(target=malformed_loop, daemon=True, args=(
                    reqs, stop, st, random.Random(300 + i), reqs[i::MALFORMED_THREADS])))
            helpers.append(threading.Thread(target=slowloris, daemon=True, args=(
                p.port, small_url, stop, st, SLOWLORIS)))
            argv = [wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s",
                    "--latency", "-s", lua, f"http://127.0.0.1:{p.port}{q(small_url)}", "--",
                    q(small_url)]
            print(f"  run   {' '.join(argv[1:])}", flush=True)
            t0 = time.monotonic()
            for th in helpers:
                th.start()
            try:
                w = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                   timeout=seconds + 120)
                wout, werr, wrc = w.stdout, w.stderr, w.returncode
            except subprocess.TimeoutExpired as e:
                wout, werr, wrc = (e.stdout or b"").decode(errors="replace"), "", "TIMEOUT"
            finally:
                stop.set()
                for th in helpers[1:]:
                    th.join(timeout=90)
            took = time.monotonic() - t0
            print("  wrk output:\n    " + wout.strip().replace("\n", "\n    "), flush=True)
            if werr.strip():
                print("  wrk stderr: " + werr.strip()[-1000:], flush=True)
            res = parse_wrk(wout)

            # After the load: alive, healthy, connections released.
            t.eq("wrk exit status", wrc, 0)
            t.eq("peerd still running", p.alive(), True)
            t.eq("peerd --peer-key still running", pk.alive(), True)
            h = p.request("GET", "/v1/health")
            t.eq("/v1/health afterwards", (h.status, h.body), (200, b"ok\n"))
            h = pk.request("GET", "/v1/health")
            t.eq("/v1/health of the keyed peerd afterwards", (h.status, h.body), (200, b"ok\n"))
            stuck = [x for x in socket_states(p.port) if x.startswith("CLOSE-WAIT")]
            gauge = None
            deadline = time.monotonic() + IDLE_TIMEOUT + 10
            while time.monotonic() < deadline:
                _, m = p.metrics()
                gauge = m.get("bgcopy_peerd_connections")
                if gauge is not None and gauge <= 1:
                    break
                time.sleep(0.2)
            if not t.eq("connections open once the load is over (this /metrics request)", gauge, 1):
                print("  sockets of peerd's port now (ss -tnoe):\n    " + "\n    ".join(
                    socket_states(p.port)), flush=True)
            r = p.request("GET", q(big_url))
            t.ok("a whole GET of the streamed entry afterwards is right",
                 r.status == 200 and r.body == o.data["big.bin"])
            stop_rss.set()
            helpers[0].join(timeout=5)

            # Good answers, all right.
            ok, wrong, errs = st.get("sample_ok"), st.get("sample_wrong"), st.get("sample_error")
            t.ok(f"sampled good answers checked: {ok} (at least 10)", ok >= 10)
            t.eq("sampled answers with a wrong status, header or byte", wrong, 0)
            t.eq("sampled requests that failed (connection refused, reset, timeout)", errs, 0)
            # wrk.
            t.ok("wrk printed its summary", res["requests"] is not None and res["rps"] is not None,
                 wout[-500:])
            t.eq("wrk: non-2xx/3xx answers to good requests", res["non_2xx"], 0)
            t.eq("wrk: socket errors", res["socket_errors"],
                 {"connect": 0, "read": 0, "write": 0, "timeout": 0})
            # Malformed traffic: sent, and never answered with a success or a store failure.
            sent = st.get("malformed_sent")
            answers = dict(st.items("answer:"))
            t.ok(f"malformed requests sent: {sent} (at least {len(reqs)})", sent >= len(reqs))
            t.eq("malformed kinds never sent", sorted({r[0] for r in reqs} -
                                                     {k for k, _ in st.items("malformed:")}), [])
            t.eq("malformed requests answered 500 (store failure)", answers.get("500", 0), 0)
            unexpected = {}
            for k, v in st.items("answer-of:"):
                kind, _, status = k.rpartition(":")
                if kind in EXPECTED and status != EXPECTED[kind]:
                    unexpected[f"{kind} -> {status}"] = v
            t.eq("malformed requests of fixed outcome answered otherwise (kind -> status: count)",
                 unexpected, {})
            t.eq("malformed connections refused", st.get("malformed_connect_error"), 0)
            t.eq("slowloris connections opened", st.get("slowloris_opened"), SLOWLORIS)
            # Memory.
            t.note(f"peerd VmRSS: {rss0 / MiB:.1f} MiB at start, peak {peak['VmRSS'] / MiB:.1f} MiB "
                   f"(RssAnon peak {peak['RssAnon'] / MiB:.1f} MiB)")
            if asan:
                t.note(f"sanitizer build: VmRSS not held to {RSS_LIMIT // MiB} MiB")
            else:
                t.ok(f"peak VmRSS {peak['VmRSS'] / MiB:.1f} MiB < {RSS_LIMIT // MiB} MiB",
                     0 < peak["VmRSS"] < RSS_LIMIT)
            try:
                with open(p.err_path, errors="replace") as f:
                    log_lines = sum(1 for _ in f)
            except OSError:
                log_lines = None
            usage_log = os.path.join(agent.home, "usage.log")
            usage = os.path.getsize(usage_log) if os.path.exists(usage_log) else None
            print(f"  figures: wrk {res['requests']} requests in {seconds} s "
                  f"({took:.1f} s with the helpers), {res['rps']} req/s, p99 {res['p99']}, "
                  f"{res['read']} read, -c{conns} -t{threads}; peak VmRSS "
                  f"{peak['VmRSS'] / MiB:.1f} MiB; sampled good answers {ok} (wrong {wrong}, "
                  f"failed {errs}); malformed requests sent {sent}; slowloris connections "
                  f"{st.get('slowloris_opened')} ({st.get('slowloris_bytes')} bytes, cut "
                  f"{st.get('slowloris_cut')}); connections left in CLOSE-WAIT after the load "
                  f"{len(stuck)} (released by the {IDLE_TIMEOUT} s idle timeout); peerd stderr "
                  f"lines {log_lines}"
                  + (f"; HOME/usage.log {usage} bytes" if usage is not None else ""), flush=True)
            print("  malformed kinds: " + ", ".join(f"{k} {v}" for k, v in st.items("malformed:")))
            print("  malformed answers: " + ", ".join(f"{k} {v}" for k, v in st.items("answer:")))
            print("  slowest malformed exchange by kind (ms): " + ", ".join(
                f"{k} {v}" for k, v in sorted(st.slowest.items(), key=lambda x: -x[1])))
            for pr in st.problems[:20]:
                print(f"  problem: {pr}")


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
