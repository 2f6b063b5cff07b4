#!/usr/bin/env python3
"""Integration cases for bgcopy.conf and `bgcopy config`: the defaults, a file named by
$BGCOPY_CONFIG, the user's file under $XDG_CONFIG_HOME (or ~/.config), a bad value stopping
bgcopy and bgcopy-peerd with one FILE:LINE: KEY line and exit 2, and the settings at work:
peer_key for `get` against a keyed peerd, listen and port for bgcopy-peerd, peer_caching for
new jobs.

Usage: test_config.py CASE [PATH/TO/bgcopy]    (or BGCOPY=PATH/TO/bgcopy test_config.py CASE)
       test_config.py --list                   prints the case names, one a line
       test_config.py --all [PATH/TO/bgcopy]   runs every case, prints a summary

Exit 0 when every check passed, 1 otherwise, 2 on bad usage. BGCOPY_KEEP_TMP=1 keeps the
temp dirs."""

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
from bgtest import (Bgcopy, case_registry, cmd, Daemon, field, main, new_job, Peerd, peerd_exe, poll_state,
                    started, store_file)  # noqa: E402
from origin import Origin  # noqa: E402

CASES, case = case_registry()

KEYS = ["discovery", "discovery_subnets", "peer", "peer_dns", "peer_key", "peer_caching",
        "listen", "port", "partial_wait_max", "serve_connections_per_peer", "fleet", "fleet_owner",
        "fleet_origin_max", "fleet_takeovers", "serve_max_rate", "max_rate", "max_rate_schedule"]
DEFAULTS = {"discovery": "on", "discovery_subnets": "same", "peer": [], "peer_dns": None,
            "peer_key": None, "peer_caching": "server", "listen": "127.0.0.1", "port": 7654,
            "partial_wait_max": 10, "serve_connections_per_peer": 8, "fleet": "on",
            "fleet_owner": "on", "fleet_origin_max": 1, "fleet_takeovers": 3, "serve_max_rate": 0,
            "max_rate": None, "max_rate_schedule": None}


class TempDir:
    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="bgcopy-it-config-")
        return self

    def __exit__(self, *a):
        if os.environ.get("BGCOPY_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"  kept  {self.dir}")

    def path(self, *parts):
        return os.path.join(self.dir, *parts)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def settings(doc):
    """{key: setting object} of `bgcopy config --json`."""
    return {s.get("key"): s for s in (doc or {}).get("settings") or []}


def config_json(t, agent):
    r = t.ran(agent.run("config", "--json"))
    t.eq("config --json: exit status", r.rc, 0)
    return r.doc


def run_peerd(args, env_extra, timeout=20):
    env = dict(os.environ)
    env.pop("BGCOPY_HOME", None)
    env.update(env_extra)
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env=env)
    print(f"  ran   {' '.join(args[1:])}  -> exit {p.returncode}", flush=True)
    return p


def connects(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "accepted"
    except OSError:
        return "refused"


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- cases ---------------------------------------------------------------------------------

@case("config_defaults")
def _(bg):
    """with no file (BGCOPY_CONFIG empty) `bgcopy config` lists every key with its default and
    source 'default', no file; --json has the same with files []"""
    t = bg.t
    with TempDir() as d:
        agent = Bgcopy(bg.exe, d.path("home"))
        doc = config_json(t, agent)
        t.eq("files", (doc or {}).get("files"), [])
        s = settings(doc)
        t.eq("keys, in order", [x.get("key") for x in (doc or {}).get("settings") or []], KEYS)
        for k in KEYS:
            t.eq(f"{k}: value and source", (s.get(k, {}).get("value"), s.get(k, {}).get("source")),
                 (DEFAULTS[k], "default"))
            t.eq(f"{k}: no file nor line", ("file" in s.get(k, {}), "line" in s.get(k, {})),
                 (False, False))
        r = t.ran(agent.run("config"))
        t.eq("config: exit status", r.rc, 0)
        lines = {ln.split()[0]: ln.split()[1:] for ln in r.out.splitlines() if ln.strip()}
        t.eq("text: port line", lines.get("port"), ["7654", "default"])
        t.eq("text: peer line", lines.get("peer"), ["(none)", "default"])
        t.eq("text: discovery line", lines.get("discovery"), ["on", "default"])
        t.ok("text: says no file was read", "no file read" in r.out, r.out)
        r = t.ran(agent.run("config", "extra"))
        t.eq("config with an argument: exit status", r.rc, 2)


@case("config_file_values_and_sources")
def _(bg):
    """a file named by BGCOPY_CONFIG: every key it sets shows its value and FILE:LINE (text and
    --json: source file, file, line); keys it does not set stay defaults"""
    t = bg.t
    with TempDir() as d:
        conf = write(d.path("etc", "bgcopy.conf"),
                     "# node settings\n"
                     "discovery = no\n"
                     "\n"
                     "peer = 10.1.2.3:7654\n"
                     "peer = [::1]:7655\n"
                     "  peer_dns =  peers.example.org  \n"
                     "peer_key = /etc/bgcopy/peer.key\n"
                     "peer_caching = client\n"
                     "listen = 0.0.0.0\n"
                     "port = 8765\n")
        agent = Bgcopy(bg.exe, d.path("home"), env_extra={"BGCOPY_CONFIG": conf})
        doc = config_json(t, agent)
        t.eq("files", (doc or {}).get("files"), [{"path": conf, "read": True}])
        s = settings(doc)
        want = {"discovery": ("off", 2), "peer": (["10.1.2.3:7654", "[::1]:7655"], 4),
                "peer_dns": ("peers.example.org", 6), "peer_key": ("/etc/bgcopy/peer.key", 7),
                "peer_caching": ("client", 8), "listen": ("0.0.0.0", 9), "port": (8765, 10)}
        for k, (value, line) in want.items():
            x = s.get(k, {})
            t.eq(f"{k}: value, source, file, line",
                 (x.get("value"), x.get("source"), x.get("file"), x.get("line")),
                 (value, "file", conf, line))
        t.eq("discovery_subnets: still the default",
             (s.get("discovery_subnets", {}).get("value"), s.get("discovery_subnets", {}).get("source")),
             ("same", "default"))
        r = t.ran(agent.run("config"))
        t.eq("config: exit status", r.rc, 0)
        rows = [ln.split() for ln in r.out.splitlines()]
        t.ok("text: the file listed as read", [conf, "read"] in rows, r.out)
        t.ok("text: port 8765 from FILE:10", ["port", "8765", f"{conf}:10"] in rows, r.out)
        t.ok("text: first peer from FILE:4", ["peer", "10.1.2.3:7654", f"{conf}:4"] in rows, r.out)
        t.ok("text: second peer on a line of its own", ["[::1]:7655"] in rows, r.out)
        t.ok("text: discovery_subnets default", ["discovery_subnets", "same", "default"] in rows, r.out)


@case("config_user_file_from_xdg_config_home")
def _(bg):
    """without BGCOPY_CONFIG the user's file is $XDG_CONFIG_HOME/bgcopy/bgcopy.conf, else
    $HOME/.config/bgcopy/bgcopy.conf; bgcopy config lists it as read after the system file"""
    t = bg.t
    with TempDir() as d:
        xdg = d.path("xdg")
        user = write(os.path.join(xdg, "bgcopy", "bgcopy.conf"), "port = 1111\npeer_caching = both\n")
        agent = Bgcopy(bg.exe, d.path("home"), env_extra={"XDG_CONFIG_HOME": xdg, "BGCOPY_CONFIG": None})
        doc = config_json(t, agent)
        files = (doc or {}).get("files") or []
        t.eq("files looked for", [f.get("path") for f in files], ["/etc/bgcopy/bgcopy.conf", user])
        t.eq("the user's file read", files[-1].get("read") if files else None, True)
        s = settings(doc)
        t.eq("port from the user's file",
             (s.get("port", {}).get("value"), s.get("port", {}).get("file"), s.get("port", {}).get("line")),
             (1111, user, 1))
        t.eq("peer_caching from the user's file", s.get("peer_caching", {}).get("value"), "both")

        # No XDG_CONFIG_HOME: ~/.config.
        home_dir = d.path("user-home")
        user2 = write(os.path.join(home_dir, ".config", "bgcopy", "bgcopy.conf"), "port = 2222\n")
        agent.env_extra = {"HOME": home_dir, "BGCOPY_CONFIG": None, "XDG_CONFIG_HOME": None}
        doc = config_json(t, agent)
        files = (doc or {}).get("files") or []
        t.eq("files looked for (no XDG_CONFIG_HOME)", [f.get("path") for f in files],
             ["/etc/bgcopy/bgcopy.conf", user2])
        s = settings(doc)
        t.eq("port from ~/.config", (s.get("port", {}).get("value"), s.get("port", {}).get("file")),
             (2222, user2))


@case("config_bad_value_exits_2_naming_file_line_key")
def _(bg):
    """a bad value, an unknown key, a line without '=': bgcopy config, bgcopy get and
    bgcopy-peerd each exit 2 with one line FILE:LINE: KEY: problem and do nothing else"""
    t = bg.t
    with TempDir() as d:
        bad = [
            ("# ok so far\ndiscovery = on\nport = 70000\n",
             "{f}:3: port: expected a port number 0-65535, not '70000'"),
            ("peer_caching = sometimes\n",
             "{f}:1: peer_caching: expected off, client, server or both, not 'sometimes'"),
            ("\n\n\ncolour = blue\n", "{f}:4: colour: unknown key (known: discovery, "
             "discovery_subnets, peer, peer_dns, peer_key, peer_caching, listen, port, "
             "partial_wait_max, serve_connections_per_peer, serve_max_rate, fleet, fleet_owner, "
             "fleet_origin_max, fleet_takeovers, max_rate, max_rate_schedule)"),
            ("peer 10.0.0.1:7654\n", "{f}:1: peer 10.0.0.1:7654: expected KEY = VALUE"),
            ("peer = 10.0.0.1\n", "{f}:1: peer: expected HOST:PORT (the port is missing), not '10.0.0.1'"),
            ("listen = localhost\n",
             "{f}:1: listen: expected a numeric IPv4 or IPv6 address, not 'localhost'"),
        ]
        for i, (text, line) in enumerate(bad):
            conf = write(d.path(f"bad{i}.conf"), text)
            want = line.format(f=conf)
            home = d.path(f"home{i}")
            agent = Bgcopy(bg.exe, home, env_extra={"BGCOPY_CONFIG": conf})
            r = t.ran(agent.run("config"))
            t.eq(f"bad{i}: config: exit status and stderr", (r.rc, r.err), (2, f"bgcopy: {want}\n"))
            t.eq(f"bad{i}: config: nothing on stdout", r.out, "")
            out = d.path(f"out{i}.bin")
            r = t.ran(agent.run("get", "http://127.0.0.1:9/x.bin", "-o", out))
            t.eq(f"bad{i}: get: exit status and stderr", (r.rc, r.err), (2, f"bgcopy: {want}\n"))
            t.eq(f"bad{i}: get: no output, no home made", (os.path.exists(out), os.path.exists(home)),
                 (False, False))
            p = run_peerd([peerd_exe(bg), "--home", home, "--port-file", d.path("pf")],
                          {"BGCOPY_CONFIG": conf})
            t.eq(f"bad{i}: bgcopy-peerd: exit status and stderr", (p.returncode, p.stderr),
                 (2, f"bgcopy-peerd: {want}\n"))
            t.eq(f"bad{i}: bgcopy-peerd: no port file", os.path.exists(d.path("pf")), False)
        # A file that exists but cannot be read is named (not for root, who reads anything).
        if os.geteuid() != 0:
            conf = write(d.path("locked.conf"), "port = 1\n")
            os.chmod(conf, 0)
            r = t.ran(Bgcopy(bg.exe, d.path("homeL"), env_extra={"BGCOPY_CONFIG": conf}).run("config"))
            t.ok("unreadable file: named, exit not 0", r.rc != 0 and conf in r.err, r.err)
        # A missing file named by BGCOPY_CONFIG is no error: listed as not read.
        missing = d.path("no-such.conf")
        r = t.ran(Bgcopy(bg.exe, d.path("homeM"), env_extra={"BGCOPY_CONFIG": missing})
                  .run("config", "--json"))
        t.eq("missing file: exit status", r.rc, 0)
        t.eq("missing file: listed, not read", (r.doc or {}).get("files"), [{"path": missing, "read": False}])


@case("config_peer_key_used_by_get")
def _(bg):
    """peer_key in bgcopy.conf signs a get's requests to a keyed peerd (no --peer-key): the
    file comes from the peer; without it the peer answers 401 and the origin sends the file"""
    with Origin(files={"a.bin": 300_000}) as o:
        o, a, t = started(bg, o)
        url = store_file(t, a, o, "a.bin")
        key = o.path("peer.key")
        with open(key, "w") as f:
            f.write(os.urandom(16).hex() + "\n")
        os.chmod(key, 0o600)
        conf = write(o.path("b.conf"), f"peer_key = {key}\n")
        os.makedirs(o.path("pd"), exist_ok=True)
        with Peerd(bg, a.home, "--peer-key", key, workdir=o.path("pd")) as p:
            peer = f"127.0.0.1:{p.port}"
            before = len(o.requests("/files/a.bin"))
            b = Bgcopy(bg.exe, o.path("homeB"), env_extra={"BGCOPY_CONFIG": conf})
            r = t.ran(b.get(url, o.path("out", "b.bin"), extra=["--peer", peer]))
            t.eq("B with the config's key: exit status", r.rc, 0)
            t.eq("B: bytes_from_peers", field(r.doc, "files", 0, "bytes_from_peers"), 300_000)
            t.eq("B: bytes_from_origin", field(r.doc, "files", 0, "bytes_from_origin"), 0)
            t.eq("B: peer lookup result", field(r.doc, "files", 0, "peer_lookup", "result"), "hit")
            t.eq("B: no GET of a.bin at the origin",
                 [x for x in o.requests("/files/a.bin")[before:] if x["method"] == "GET"], [])
            c = Bgcopy(bg.exe, o.path("homeC"))
            r = t.ran(c.get(url, o.path("out", "c.bin"), extra=["--peer", peer]))
            t.eq("C without a key: exit status", r.rc, 0)
            t.eq("C: bytes_from_peers", field(r.doc, "files", 0, "bytes_from_peers"), 0)
            t.eq("C: bytes_from_origin", field(r.doc, "files", 0, "bytes_from_origin"), 300_000)
            # A key the config names but that is missing: a warning, and the origin.
            conf2 = write(o.path("d.conf"), f"\npeer_key = {o.path('no-such.key')}\n")
            d = Bgcopy(bg.exe, o.path("homeD"), env_extra={"BGCOPY_CONFIG": conf2})
            r = t.ran(d.get(url, o.path("out", "d.bin"), extra=["--peer", peer]))
            t.eq("D with a missing key: exit status", r.rc, 0)
            t.ok("D: one warning naming FILE:LINE: peer_key",
                 f"bgcopy: warning: {conf2}:2: peer_key: cannot use" in r.err, r.err)
            t.eq("D: bytes_from_origin", field(r.doc, "files", 0, "bytes_from_origin"), 300_000)


@case("config_peerd_listen_and_port")
def _(bg):
    """bgcopy-peerd listens on the config's listen and port when no option is given; --port
    and --listen override them; port = 0 in the file: --port-file reports the kernel's port"""
    t = bg.t
    with TempDir() as d:
        home = d.path("home")
        pf = d.path("port")
        # A port free a moment ago (the kernel rarely hands it out again so soon).
        port = free_port("127.0.0.2")
        conf = write(d.path("p.conf"), f"listen = 127.0.0.2\nport = {port}\n")
        argv = [peerd_exe(bg), "--home", home, "--port-file", pf]
        env = dict(os.environ, BGCOPY_CONFIG=conf)
        env.pop("BGCOPY_HOME", None)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        got = wait_port_file(proc, pf)
        try:
            t.eq("port file: the config's port", got, port)
            t.eq("127.0.0.2 (the config's listen)", connects("127.0.0.2", port), "accepted")
            t.eq("127.0.0.1: nothing there", connects("127.0.0.1", port), "refused")
        finally:
            stop(proc)
        # Options win over the file.
        proc = subprocess.Popen(argv + ["--port", "0", "--listen", "127.0.0.1"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            got2 = wait_port_file(proc, pf)
            t.ok(f"--port 0 over the file: another port ({got2})", got2 is not None and got2 != port)
            t.eq("--listen 127.0.0.1 over the file", connects("127.0.0.1", got2 or 1), "accepted")
        finally:
            stop(proc)
        # port = 0 in the file: the kernel picks, --port-file tells.
        conf0 = write(d.path("p0.conf"), "port = 0\n")
        env0 = dict(env, BGCOPY_CONFIG=conf0)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env0)
        try:
            got0 = wait_port_file(proc, pf)
            t.ok(f"port = 0: a kernel port in the port file ({got0})", got0 is not None and got0 not in (0, 7654))
            t.eq("port = 0: served on 127.0.0.1 (the default listen)", connects("127.0.0.1", got0 or 1), "accepted")
        finally:
            stop(proc)


def wait_port_file(proc, pf, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            with open(pf) as f:
                text = f.read()
            if text.endswith("\n"):
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    return None


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@case("config_peer_caching_of_new_jobs")
def _(bg):
    """peer_caching in bgcopy.conf is the mode of new jobs (create, get): info --json shows it;
    --peer still makes a get's job both; without a file new jobs are server"""
    with Origin(files={"a.bin": 10_000}) as o:
        o, plain, t = started(bg, o)

        def mode_of_created(agent, label):
            r = t.ran(agent.run("create", "--name", label))
            t.eq(f"{label}: create: exit status", r.rc, 0)
            r = t.ran(agent.run("info", r.out.strip(), "--json"))
            return (r.doc or {}).get("peer_caching")

        t.eq("no file: a created job's mode", mode_of_created(plain, "plain"), "server")
        for mode in ("off", "client", "server", "both"):
            conf = write(o.path(f"{mode}.conf"), f"peer_caching = {mode}\n")
            agent = Bgcopy(bg.exe, o.path(f"home-{mode}"), env_extra={"BGCOPY_CONFIG": conf})
            t.eq(f"peer_caching = {mode}: a created job's mode", mode_of_created(agent, mode), mode)
        conf = write(o.path("off.conf"), "peer_caching = off\n")
        agent = Bgcopy(bg.exe, o.path("home-get"), env_extra={"BGCOPY_CONFIG": conf})
        r = t.ran(agent.get(o.url("/files/a.bin"), o.path("out", "g1.bin")))
        t.eq("peer_caching = off: get: exit status", r.rc, 0)
        t.eq("peer_caching = off: get's job mode", (r.doc or {}).get("peer_caching"), "off")
        r = t.ran(agent.get(o.url("/files/a.bin"), o.path("out", "g2.bin"),
                            extra=["--peer", "127.0.0.1:9"]))
        t.eq("peer_caching = off, --peer: get: exit status", r.rc, 0)
        t.eq("peer_caching = off, --peer: get's job mode", (r.doc or {}).get("peer_caching"), "both")


@case("config_daemon_peer_key_and_client_jobs")
def _(bg):
    """bgcopy daemon signs with the config's peer_key (no --peer-key) and new jobs are clients
    by the config's peer_caching: a job created then takes its file from a keyed peerd; a
    peer_key the daemon cannot use stops it at start: exit 2, one line FILE:LINE: peer_key"""
    size = 200_000
    with Origin(files={"a.bin": size}) as o:
        o, a, t = started(bg, o)
        url = store_file(t, a, o, "a.bin")
        key = o.path("peer.key")
        with open(key, "w") as f:
            f.write(os.urandom(16).hex() + "\n")
        os.chmod(key, 0o600)
        conf = write(o.path("b.conf"), f"peer_caching = client\npeer_key = {key}\n")
        b = Bgcopy(bg.exe, o.path("homeB"), env_extra={"BGCOPY_CONFIG": conf})
        os.makedirs(o.path("pd"), exist_ok=True)
        with Peerd(bg, a.home, "--peer-key", key, workdir=o.path("pd")) as p:
            job = new_job(t, b, [(url, o.path("out", "b.bin"))], "--name", "client")
            if job is None:
                return
            with Daemon(t, b, o, "--peer", f"127.0.0.1:{p.port}", label="daemonB"):
                cmd(t, b, "resume", job)
                doc, _ = poll_state(t, b, job, ("TRANSFERRED", "ERROR"), 30)
            t.eq("job: peer_caching", field(doc, "peer_caching"), "client")
            t.eq("job: state", field(doc, "state"), "TRANSFERRED")
            t.eq("job: bytes_from_peers", field(doc, "files", 0, "bytes_from_peers"), size)
            t.eq("job: bytes_from_origin", field(doc, "files", 0, "bytes_from_origin"), 0)
        bad = write(o.path("c.conf"), f"# key\npeer_key = {o.path('no-such.key')}\n")
        c = Bgcopy(bg.exe, o.path("homeC"), env_extra={"BGCOPY_CONFIG": bad})
        r = t.ran(c.run("daemon", timeout=20))
        t.eq("daemon with an unusable config key: exit status", r.rc, 2)
        t.ok("daemon: one line naming FILE:2: peer_key",
             r.err.startswith(f"bgcopy: {bad}:2: peer_key: cannot use ") and r.err.count("\n") == 1, r.err)


sys.exit(main(sys.argv, CASES, __doc__))
