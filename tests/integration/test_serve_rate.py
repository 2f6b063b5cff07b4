#!/usr/bin/env python3
"""Integration cases for bgcopy-peerd's serving rate (--max-rate, serve_max_rate in bgcopy.conf;
--serve-rate and serve_rate are their older names): one token bucket for every body peerd
sends, the core's, holding an eighth of a second of the rate (peerd/README.md).

Usage: test_serve_rate.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_serve_rate.py CASE)
       test_serve_rate.py --list                    prints the case names, one a line
       test_serve_rate.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Environment: BGCOPY (the agent binary), BGCOPY_PEERD (default: bgcopy-peerd next to BGCOPY),
INFLIGHT_WRITER (default: next to BGCOPY), BGCOPY_KEEP_TMP=1 keeps the temp dirs.

Content gets into a store the real way (`bgcopy get` from an nginx origin, origin.py); a
download in progress is played by tests/tools/inflight_writer, as in test_partial.py. The
bodies are fetched with curl, without a key. Times are only held against lower bounds: with
RATE bytes/s and a bucket of at most one second of it, N bytes take at least (N - RATE) / RATE
seconds, and a slow machine only makes that longer."""

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import case_registry, main, Peerd, peerd_exe, q, started, store_file  # noqa: E402
from origin import MiB, Origin  # noqa: E402
from test_partial import Home, pattern, pq, Writer  # noqa: E402

KiB = 1024
CHUNK = 64 * 4096 - 16          # STORE_CHUNK_BYTES (cache.h)
SLACK = 0.5                     # seconds off a bound: clocks and the first request's setup

CASES, case = case_registry()


def curl_get(url, out):
    """curl (a second HTTP implementation) fetching URL into OUT: (exit status, HTTP status,
    seconds)."""
    t0 = time.monotonic()
    p = subprocess.run(["curl", "-sS", "-o", out, "-w", "%{http_code}", url],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, time.monotonic() - t0


def sha_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def throttled(p):
    return p.metrics()[1].get("bgcopy_peerd_throttled_seconds_total", -1)


def wait_throttled(p, timeout=10):
    """Until the metric shows a body suspended for the rate and resumed at least once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if throttled(p) > 0:
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def stored(bg, name, size):
    """An nginx origin serving NAME (SIZE random bytes) and a home into which `bgcopy get`
    stored it: (origin, agent, checker, the key, the sha256 of the bytes)."""
    with Origin(files={name: size}) as o:
        o, agent, t = started(bg, o)
        url = store_file(t, agent, o, name)
        yield o, agent, t, url, hashlib.sha256(o.data[name]).hexdigest()


def in_thread(fn):
    """Runs fn in a thread; returns a joiner giving its result (or exception)."""
    box = {}

    def run():
        try:
            box["r"] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the joiner
            box["r"] = e
    th = threading.Thread(target=run, daemon=True)
    th.start()

    def join(timeout=120):
        th.join(timeout)
        return box.get("r")
    join.alive = th.is_alive
    return join


@case("serve_rate_curl_body_limited_and_exact")
def serve_rate_curl_body_limited_and_exact(bg):
    """--serve-rate 1M, a 4 MiB entry: curl takes at least (4 - 1) s (the bucket's second of
    burst, then 1 MiB/s) and gets exactly the stored bytes; the throttled-seconds counter grew;
    the rate shows as a gauge; while the body is throttled a HEAD, a 404 and /v1/health are
    answered (small answers never wait)"""
    size = 4 * MiB
    with stored(bg, "big.bin", size) as (o, agent, t, url, want):
        with Peerd(bg, agent.home, "--serve-rate", "1M", workdir=o.dir) as p:
            _, m = p.metrics()
            t.eq("serve_rate gauge", m.get("bgcopy_peerd_serve_rate_bytes"), MiB)
            t.eq("nothing throttled yet", m.get("bgcopy_peerd_throttled_seconds_total"), 0)
            out = o.path("curl.out")
            get = in_thread(lambda: curl_get(f"http://127.0.0.1:{p.port}{q(url)}", out))
            t.ok("the body is throttled", wait_throttled(p))
            h = p.request("HEAD", q(url))
            n = p.request("GET", q(url + ".none"))
            hl = p.request("GET", "/v1/health")
            running = get.alive()
            t.eq("HEAD meanwhile: status, Content-Length", (h.status, h.h("content-length")),
                 (200, str(size)))
            t.eq("404 meanwhile", n.status, 404)
            t.eq("/v1/health meanwhile", (hl.status, hl.body), (200, b"ok\n"))
            t.ok("... all answered while the throttled body was still going", running)
            rc, status, secs = get()
            t.eq("curl: exit status, HTTP status", (rc, status), (0, "200"))
            t.ok(f"curl took {secs:.2f} s >= 3 - {SLACK}", secs >= 3 - SLACK)
            t.eq("body sha256", sha_of(out), want)
            _, m = p.metrics()
            ts = m.get("bgcopy_peerd_throttled_seconds_total", 0)
            t.ok(f"throttled seconds grew: {ts}", ts >= 1)
            t.eq("bytes served", m.get("bgcopy_peerd_bytes_served_total"), size)


@case("serve_rate_two_clients_share_it")
def serve_rate_two_clients_share_it(bg):
    """Two curls at once of a 2 MiB entry at --serve-rate 1M, the bucket emptied first (a 1 MiB
    range): they share the rate, together at least 4 s, and each gets its share (each at least
    2.5 s, where one served before the other would be done in 2 s); both bodies exact"""
    size = 2 * MiB
    with stored(bg, "b.bin", size) as (o, agent, t, url, want):
        with Peerd(bg, agent.home, "--serve-rate", "1M", workdir=o.dir) as p:
            r = p.request("GET", q(url), {"Range": f"bytes=0-{MiB - 1}"})
            t.eq("the bucket's second taken by a 1 MiB range", (r.status, len(r.body)),
                 (206, MiB))
            link = f"http://127.0.0.1:{p.port}{q(url)}"
            outs = [o.path(f"c{i}.out") for i in range(2)]
            t0 = time.monotonic()
            gets = [in_thread(lambda out=out: curl_get(link, out)) for out in outs]
            res = [g() for g in gets]
            total = time.monotonic() - t0
            for i, (rc, status, secs) in enumerate(res):
                t.eq(f"curl {i}: exit status, HTTP status", (rc, status), (0, "200"))
                t.ok(f"curl {i} took {secs:.2f} s >= 2.5", secs >= 2.5)
                t.eq(f"curl {i}: body sha256", sha_of(outs[i]), want)
            t.ok(f"both took {total:.2f} s >= 4 - {SLACK}", total >= 4 - SLACK)


@case("serve_rate_disconnect_and_sigterm_while_throttled")
def serve_rate_disconnect_and_sigterm_while_throttled(bg):
    """A client that goes away while its body is throttled leaves peerd serving (the next
    request is answered with the right bytes, nothing crashed); SIGTERM with a throttled body
    in flight stops peerd with exit status 0 (every suspended connection resumed before
    libmicrohttpd stops) and cuts that body short"""
    size = 4 * MiB
    with stored(bg, "c.bin", size) as (o, agent, t, url, _):
        data = o.data["c.bin"]
        with Peerd(bg, agent.home, "--serve-rate", "256K", workdir=o.dir) as p:
            s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            s.sendall(f"GET {q(url)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got = 0
            while got < 300 * KiB:          # past the bucket's 256 KiB: throttled now
                b = s.recv(65536)
                if not b:
                    break
                got += len(b)
            t.ok(f"the first client read {got} bytes, then goes away", got >= 300 * KiB)
            s.close()
            r = p.request("GET", q(url), {"Range": "bytes=1000-1999"})
            t.eq("next request: 206", r.status, 206)
            t.ok("... with the right bytes", r.body == data[1000:2000])
            t.eq("/v1/health", p.request("GET", "/v1/health").status, 200)
            # Suspended, the gone client's connection is seen closed once resumed: then
            # only the /metrics request's own is open.
            deadline = time.monotonic() + 10
            while ((n := p.metrics()[1].get("bgcopy_peerd_connections")) != 1
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            t.eq("the gone client's connection closed: open connections", n, 1)
            t.ok("peerd still running", p.alive())

            out = o.path("cut.out")
            get = in_thread(lambda: curl_get(f"http://127.0.0.1:{p.port}{q(url)}", out))
            before = throttled(p)
            deadline = time.monotonic() + 10
            while throttled(p) <= before and time.monotonic() < deadline:
                time.sleep(0.05)
            t.ok("the second client's body is throttled", throttled(p) > before)
            t0 = time.monotonic()
            rc = p.stop()
            t.note(f"peerd stopped in {time.monotonic() - t0:.2f} s")
            t.eq("exit status 0 (not killed after 10 s)", rc, 0)
            crc, status, _ = get()
            t.ok(f"the throttled body was cut (curl exit {crc}, {os.path.getsize(out)} bytes)",
                 crc != 0 and os.path.getsize(out) < size)


@case("serve_rate_from_config_and_bad_option")
def serve_rate_from_config_and_bad_option(bg):
    """serve_rate = 512K in bgcopy.conf is used without the option (gauge, and a 2 MiB body
    takes at least (2 - 0.5) / 0.5 s); --serve-rate 0 overrides it (nothing throttled);
    --serve-rate 10X exits 2 with one line naming the option"""
    size = 2 * MiB
    with stored(bg, "d.bin", size) as (o, agent, t, url, want):
        conf = o.path("bgcopy.conf")
        with open(conf, "w") as f:
            f.write("serve_rate = 512K\n")
        with Peerd(bg, agent.home, workdir=o.dir, env_extra={"BGCOPY_CONFIG": conf}) as p:
            _, m = p.metrics()
            t.eq("serve_rate gauge from the file", m.get("bgcopy_peerd_serve_rate_bytes"),
                 512 * KiB)
            out = o.path("conf.out")
            rc, status, secs = curl_get(f"http://127.0.0.1:{p.port}{q(url)}", out)
            t.eq("curl: exit status, HTTP status", (rc, status), (0, "200"))
            t.ok(f"curl took {secs:.2f} s >= 3 - {SLACK}", secs >= 3 - SLACK)
            t.eq("body sha256", sha_of(out), want)
        with Peerd(bg, agent.home, "--serve-rate", "0", workdir=o.dir,
                   env_extra={"BGCOPY_CONFIG": conf}) as p:
            _, m = p.metrics()
            t.eq("--serve-rate 0 over the file: gauge", m.get("bgcopy_peerd_serve_rate_bytes"), 0)
            rc, status, _ = curl_get(f"http://127.0.0.1:{p.port}{q(url)}", out)
            t.eq("curl: exit status, HTTP status", (rc, status), (0, "200"))
            t.eq("body sha256", sha_of(out), want)
            t.eq("nothing throttled", throttled(p), 0)
        r = subprocess.run([peerd_exe(bg), "--home", agent.home, "--port", "0",
                            "--serve-rate", "10X"], capture_output=True, text=True, timeout=10,
                           env=dict(os.environ, BGCOPY_CONFIG=""))
        lines = r.stderr.splitlines()
        t.eq("--serve-rate 10X: exit status", r.returncode, 2)
        t.ok(f"one line naming the option and the value: {lines}",
             len(lines) == 1 and "--serve-rate" in lines[0] and "'10X'" in lines[0])


@case("serve_rate_partial_body_limited")
def serve_rate_partial_body_limited(bg):
    """/v1/partial bodies take from the same bucket: 4 chunks committed of a download in
    progress (about 1 MiB) at --serve-rate 256K take curl at least (1 MiB - 256 KiB) / 256 KiB
    = 3 s, and are exactly the committed bytes; the throttled-seconds counter grew"""
    t = bg.t
    size = 6 * CHUNK
    n = 4 * CHUNK
    data = pattern(size)
    with Home() as h, Writer(bg, h, size, "--pause-after", "4") as w:
        w.wait_committed(n)
        with Peerd(bg, h.home, "--serve-rate", "256K", workdir=h.dir) as p:
            out = h.path("partial.out")
            rc, status, secs = curl_get(f"http://127.0.0.1:{p.port}{pq()}", out)
            t.eq("curl: exit status, HTTP status", (rc, status), (0, "206"))
            bound = (n - 256 * KiB) / (256 * KiB)
            t.ok(f"curl took {secs:.2f} s >= {bound:.2f} - {SLACK}", secs >= bound - SLACK)
            with open(out, "rb") as f:
                t.ok("exactly the committed bytes", f.read() == data[:n])
            ts = throttled(p)
            t.ok(f"throttled seconds grew: {ts}", ts >= 1)


@case("serve_rate_max_rate_names_and_config_keys")
def serve_rate_max_rate_names_and_config_keys(bg):
    """bgcopy-peerd --max-rate is the upload limit (the gauge shows it), --serve-rate its
    older name; bgcopy.conf serve_max_rate gives it, and serve_rate (the older key) still
    does; none is no limit; a bad value is refused with exit 2 and one line naming the
    option as written"""
    with stored(bg, "s.bin", 100_000) as (o, agent, t, url, want):
        conf = o.path("bgcopy.conf")
        for args, text, gauge in ((("--max-rate", "3M"), "", 3 * MiB),
                                  (("--serve-rate", "5K"), "", 5 * KiB),
                                  ((), "serve_max_rate = 2M\n", 2 * MiB),
                                  ((), "serve_rate = 1M\n", MiB),
                                  (("--max-rate", "none"), "serve_max_rate = 2M\n", 0)):
            with open(conf, "w") as f:
                f.write(text)
            with Peerd(bg, agent.home, *args, workdir=o.dir, env_extra={"BGCOPY_CONFIG": conf}) as p:
                _, m = p.metrics()
                t.eq(f"gauge with {' '.join(args) or text.strip()!r}", m.get("bgcopy_peerd_serve_rate_bytes"), gauge)
        env = dict(os.environ, BGCOPY_CONFIG="")
        for opt in ("--max-rate", "--serve-rate"):
            r = subprocess.run([peerd_exe(bg), "--home", agent.home, opt, "5Q"], capture_output=True,
                               text=True, env=env, timeout=30)
            t.eq(f"{opt} 5Q: exit status", r.returncode, 2)
            t.eq(f"{opt} 5Q: one line on stderr", r.stderr.count("\n"), 1)
            t.ok(f"{opt} 5Q: names the option ({r.stderr.strip()!r})", f"{opt}: expected bytes per second" in r.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
