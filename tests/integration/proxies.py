"""Real forward proxies for bgcopy integration tests: Debian's squid and tinyproxy on 127.0.0.1.

    with Squid(deny_connect_ports=[o.tls_port], auth=("alice", "secret")) as p:
        agent.run("set-proxy", job, p.url)             # http://127.0.0.1:PORT
        agent.run("set-proxy", job, p.url_as("alice", "secret"))
        p.requests()      # [("CONNECT", "127.0.0.1:8443"), ("GET", "http://..."), ...]

    with Tinyproxy(connect_ports=[o.tls_port], auth=("alice", "secret")) as p: ...

What it does:
- makes a temp dir of its own (world-writable: squid started by root drops to the user
  `proxy`), writes a config whose pid file, logs and cache dirs all live there, takes a port
  from the kernel, and runs the proxy in the foreground as our child (squid -N -f CONF,
  tinyproxy -d -c CONF) in a session of its own;
- start waits until the port accepts connections (polling, no fixed sleep) and fails with
  the proxy's own log when the process exits first;
- __exit__ stops it by its PID (TERM, then KILL of its process group after 10 s, which also
  ends squid's auth helpers) even when the test failed, and removes the dir unless
  BGCOPY_KEEP_TMP=1;
- requests() reads the access log: (method, target) per request the proxy received, in
  order; a CONNECT's target is HOST:PORT. Both proxies write a request's line before or
  as they answer it; wait_requests() polls until a count is reached.

What each answers (measured, squid 5.7 and tinyproxy 1.11.1):
- squid refuses a CONNECT or a request its ACLs deny with 403 and `X-Squid-Error:
  ERR_ACCESS_DENIED 0`, `Server: squid/5.7`, `Via: 1.1 NAME (squid/5.7)`; without valid
  credentials 407 with `Proxy-Authenticate` and `X-Squid-Error: ERR_CACHE_ACCESS_DENIED 0`;
  a CONNECT to a port where nothing listens 503 (`X-Squid-Error: ERR_CONNECT_FAIL 111`). An
  origin's answer it relays keeps the origin's Server and gains squid's Via.
- tinyproxy refuses a CONNECT to a port not in its ConnectPort list with `403 Access
  violation`; without credentials 407 with `Proxy-Authenticate`; with wrong credentials 401
  with `WWW-Authenticate` (as an origin would); a connection it cannot make `500 Unable to
  connect`. Its own pages carry `Server: tinyproxy/1.11.1` and no Via; an origin's answer
  it relays gains `Via: 1.1 NAME (tinyproxy/1.11.1)`.

Python 3.11 standard library only."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from origin import free_port


class ProxyError(RuntimeError):
    pass


def _find(name, *paths):
    for cand in (shutil.which(name), *paths):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class _Proxy:
    """What both proxies share: the dir, the process, the port, stopping."""

    name = "proxy"

    def __init__(self, auth=None):
        self.auth = auth
        self.port = None
        self.proc = None
        self.dir = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def url_as(self, user, password):
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix=f"bgcopy-{self.name}-")
        # squid started by root works as the user `proxy` and writes its logs there.
        os.chmod(self.dir, 0o777)
        try:
            self._start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self._cleanup()
        return False

    def _cleanup(self):
        self.stop()
        if self.dir and not os.environ.get("BGCOPY_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _start(self, timeout=20):
        for _ in range(3):   # a kernel-chosen port can be taken before we bind it again
            self.port = free_port()
            self._write_config()
            with open(self.path("stdout.log"), "ab") as out:
                self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             cwd=self.dir)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                if _port_open(self.port):
                    return
                time.sleep(0.05)
            self.stop()
            if "in use" not in self.diag():
                break
        raise ProxyError(f"{self.name} did not start on 127.0.0.1:{self.port}:\n{self.diag()}")

    def stop(self):
        """TERM to the proxy's PID; KILL to its process group after 10 s."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def _read(self, *parts):
        try:
            with open(self.path(*parts), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_requests(self, count, method=None, timeout=10.0):
        """Polls the access log until it holds COUNT requests (of METHOD); returns them."""
        deadline = time.monotonic() + timeout
        while True:
            got = [r for r in self.requests() if method is None or r[0] == method]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def describe(self):
        """For a failing case's context: the access log and the proxy's own log."""
        return (f"{self.name} on 127.0.0.1:{self.port}, dir {self.dir}\n  requests: "
                f"{self.requests()}\n  log (tail):\n    "
                + self.diag()[-3000:].replace("\n", "\n    "))


class Squid(_Proxy):
    """squid 5 as a forward proxy. deny_connect_ports: CONNECT to these ports is refused
    (403); deny_paths: plain-http requests whose path starts with one of these are refused
    (403); auth=(user, password): every request needs those Basic credentials (407
    otherwise; checked by squid's basic_ncsa_auth against an htpasswd file made with
    `openssl passwd -apr1`)."""

    name = "squid"

    def __init__(self, deny_connect_ports=(), deny_paths=(), auth=None):
        super().__init__(auth)
        self.exe = _find("squid", "/usr/sbin/squid")
        self.helper = "/usr/lib/squid/basic_ncsa_auth"
        if self.exe is None:
            raise ProxyError("squid not found (Debian: apt-get install squid)")
        self.deny_connect_ports = list(deny_connect_ports)
        self.deny_paths = list(deny_paths)

    def _argv(self):
        return [self.exe, "-N", "-f", self.path("squid.conf")]

    def _write_config(self):
        d = self.dir
        lines = [
            f"http_port 127.0.0.1:{self.port}",
            f"pid_filename {d}/squid.pid",
            f"cache_log {d}/cache.log",
            "logformat bgcopy %rm %ru %>Hs",
            f"access_log stdio:{d}/access.log bgcopy",
            "cache_store_log none",
            "cache deny all",
            f"coredump_dir {d}",
            "netdb_filename none",
            "pinger_enable off",
            "icp_port 0",
            "htcp_port 0",
            "shutdown_lifetime 0 seconds",
            "visible_hostname bgcopy-test-squid",
            "acl CONNECT method CONNECT",
        ]
        if os.geteuid() == 0:
            lines.append("cache_effective_user proxy")
        if self.deny_connect_ports:
            lines.append("acl denied_ports port " + " ".join(map(str, self.deny_connect_ports)))
            lines.append("http_access deny CONNECT denied_ports")
        if self.deny_paths:
            lines.append("acl denied_paths urlpath_regex " +
                         " ".join("^" + re.escape(p) for p in self.deny_paths))
            lines.append("http_access deny denied_paths")
        if self.auth:
            user, password = self.auth
            hashed = subprocess.run(["openssl", "passwd", "-apr1", password], check=True,
                                    capture_output=True, text=True).stdout.strip()
            with open(self.path("passwd"), "w") as f:
                f.write(f"{user}:{hashed}\n")
            os.chmod(self.path("passwd"), 0o644)
            lines += [f"auth_param basic program {self.helper} {d}/passwd",
                      "auth_param basic realm bgcopy-test",
                      "acl authed proxy_auth REQUIRED",
                      "http_access deny !authed"]
        lines += ["http_access allow localhost", "http_access deny all"]
        with open(self.path("squid.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def requests(self):
        out = []
        for line in self._read("access.log").splitlines():
            parts = line.split()
            # A connection closed before a request (start's port probe) is logged as "-".
            if len(parts) >= 2 and parts[0] != "-":
                out.append((parts[0], parts[1]))
        return out

    def diag(self):
        return self._read("stdout.log") + self._read("cache.log")


class Tinyproxy(_Proxy):
    """tinyproxy 1.11. connect_ports: the only ports CONNECT may reach (403 "Access
    violation" for others; every port when empty); auth=(user, password): BasicAuth (407
    without credentials, 401 with wrong ones)."""

    name = "tinyproxy"

    def __init__(self, connect_ports=(), auth=None):
        super().__init__(auth)
        self.exe = _find("tinyproxy", "/usr/bin/tinyproxy", "/usr/sbin/tinyproxy")
        if self.exe is None:
            raise ProxyError("tinyproxy not found (Debian: apt-get install tinyproxy)")
        self.connect_ports = list(connect_ports)

    def _argv(self):
        return [self.exe, "-d", "-c", self.path("tinyproxy.conf")]

    def _write_config(self):
        d = self.dir
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 60",
            f'PidFile "{d}/tinyproxy.pid"',
            f'LogFile "{d}/tinyproxy.log"',
            "LogLevel Info",
            "MaxClients 50",
            "Allow 127.0.0.1",
            'ViaProxyName "bgcopy-test-tinyproxy"',
        ]
        lines += [f"ConnectPort {p}" for p in self.connect_ports]
        if self.auth:
            lines.append(f"BasicAuth {self.auth[0]} {self.auth[1]}")
        with open(self.path("tinyproxy.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")

    REQUEST = re.compile(r"Request \(file descriptor \d+\): (\S+) (\S+)")

    def requests(self):
        return [m.groups() for m in self.REQUEST.finditer(self._read("tinyproxy.log"))]

    def diag(self):
        return self._read("stdout.log") + self._read("tinyproxy.log")


if __name__ == "__main__":
    # Self-test (no bgcopy needed): each proxy refuses a CONNECT to a denied port, then
    # stops; curl shows what it answered.
    for cls, kw in ((Squid, {"deny_connect_ports": [9]}), (Tinyproxy, {"connect_ports": [443]})):
        with cls(**kw) as p:
            r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_connect}",
                                "-x", p.url, "https://127.0.0.1:9/"], capture_output=True,
                               text=True, timeout=30)
            print(cls.name, "CONNECT 127.0.0.1:9 ->", r.stdout, p.wait_requests(1))
            assert r.stdout == "403", r
