"""Test origin for bgcopy integration tests: a private nginx on 127.0.0.1.

    with Origin(files={"a.bin": 200_000},
                locations="location = /r/302 { return 302 @BASE@/files/a.bin; }",
                second=True, https=True) as o:
        agent = Bgcopy(exe, o.dir + "/home")
        r = agent.get(o.url("/r/302"), o.out("a.bin"), flags="redirect-report")
        o.log()          # parsed access log records, one dict per request

What it does:
- makes a world-readable temp dir (nginx workers run as nobody when the master is root;
  as root the config also says `user root;`), writes the served files under www/files/
  (random bytes of the sizes given), and an nginx config whose pid, error log, access log
  and every *_temp_path live in that dir;
- one plain HTTP server (o.base), optionally a second one on another port (o.base2: a
  different host:port for cross-host redirect tests), optionally an HTTPS server (o.tls_base)
  with a leaf certificate (SAN IP:127.0.0.1, DNS:localhost) signed by a CA made here with the
  openssl CLI (o.ca_file, for `bgcopy --ca-file`);
- every server serves /files/ from www/ plus the `location` blocks the test gives. In those
  blocks @BASE@ @BASE2@ @TLSBASE@ @PORT@ @PORT2@ @TLSPORT@ are replaced by the real values
  (a callable taking the Origin is accepted too);
- ports come from the kernel; nginx runs in the foreground as our child (`daemon off`), and
  start waits until every port accepts connections (polling, no fixed sleep);
- the access log is one JSON object per request (log_format escape=json), see log();
  nginx writes a request's line when the request ends, which can be just after the client
  has read the last byte and exited, so log() first waits (bounded) until every request
  nginx has counted (stub_status on a port of its own, not logged) has its line;
- __exit__ stops nginx (TERM to the pid from the pid file, wait; KILL after 5 s) even when
  the test failed, and removes the dir unless BGCOPY_KEEP_TMP=1;
- stop() stops nginx in the middle of a test (TERM: transfers in flight are cut, new
  connections refused) and restart() starts it again on the same ports with the same
  config; the access log goes on in the same file.

Python 3.11 standard library only."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

MiB = 1024 * 1024

LOG_FIELDS = [
    ("port", "$server_port"),
    ("method", "$request_method"),
    ("uri", "$request_uri"),
    ("request", "$request"),
    ("status", "$status"),
    ("bytes_sent", "$bytes_sent"),
    ("body_bytes_sent", "$body_bytes_sent"),
    ("range", "$http_range"),
    ("if_range", "$http_if_range"),
    ("if_modified_since", "$http_if_modified_since"),
    ("if_none_match", "$http_if_none_match"),
    ("want_repr_digest", "$http_want_repr_digest"),
    ("authorization", "$http_authorization"),
    ("cookie", "$http_cookie"),
    ("proxy_authorization", "$http_proxy_authorization"),
    ("x_api_token", "$http_x_api_token"),
    ("content_range", "$sent_http_content_range"),
    ("location", "$sent_http_location"),
    ("etag", "$sent_http_etag"),
    ("user_agent", "$http_user_agent"),
    ("accept_encoding", "$http_accept_encoding"),
    ("content_encoding", "$sent_http_content_encoding"),
    ("request_time", "$request_time"),
]
INT_FIELDS = ("port", "status", "bytes_sent", "body_bytes_sent")


def find_nginx():
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx", "/sbin/nginx"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("nginx not found (Debian: apt-get install nginx-light)")


def free_port():
    """A port the kernel just handed out on 127.0.0.1 (closed again, so a small race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def range_start(header):
    """First byte of a `bytes=N-...` Range header, or None."""
    m = re.match(r"\s*bytes\s*=\s*(\d+)\s*-", header or "")
    return int(m.group(1)) if m else None


class OriginError(RuntimeError):
    pass


class Origin:
    # What a subclass serving with another implementation changes (lighttpd_origin.py).
    NAME = "nginx"
    CONF = "nginx.conf"
    PID = "nginx.pid"

    def __init__(self, files=None, locations="", locations2="", tls_locations="",
                 second=False, https=False, http_extra="", extra_ports=0, before_start=None):
        """files: {name: size_in_bytes | bytes}, served as /files/NAME on every server.
        locations / locations2 / tls_locations: extra nginx `location` blocks for the main,
        second and HTTPS server (str with @TOKENS@, or callable(origin) -> str).
        http_extra: directives added to the http{} block.
        extra_ports: how many more kernel-chosen ports to pick (o.extra_ports, a list), for
        servers the test writes itself in http_extra; start waits for them too, and log()
        names them 'extra0', 'extra1', ...
        before_start: callable(origin) run once the ports are picked and before the config is
        written and nginx started (e.g. to make certificates that embed o.base); run again
        when a port was taken and new ones are picked."""
        self.files_spec = dict(files or {})
        self.locations = locations
        self.locations2 = locations2
        self.tls_locations = tls_locations
        self.want_second = second or bool(locations2)
        self.want_https = https or bool(tls_locations)
        self.http_extra = http_extra
        self.want_extra_ports = extra_ports
        self.before_start = before_start
        self.extra_ports = []
        self.data = {}
        self.dir = None
        self.proc = None
        self.port = self.port2 = self.tls_port = None
        self.status_port = None
        self._status_queries = 0
        self._lines_at_launch = 0
        self.ca_file = None
        self._final_records = None

    # ---- URLs and paths -------------------------------------------------------------
    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def base2(self):
        return f"http://127.0.0.1:{self.port2}" if self.port2 else None

    @property
    def tls_base(self):
        return f"https://127.0.0.1:{self.tls_port}" if self.tls_port else None

    def url(self, path):
        return self.base + path

    def url2(self, path):
        return self.base2 + path

    def tls_url(self, path):
        return self.tls_base + path

    def file_path(self, name):
        return os.path.join(self.dir, "www", "files", name)

    def sha(self, name):
        return sha256_bytes(self.data[name])

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    # ---- lifecycle ------------------------------------------------------------------
    def __enter__(self):
        self.server_exe = self._find_server()
        self.dir = tempfile.mkdtemp(prefix="bgcopy-it-")
        os.chmod(self.dir, 0o755)
        for sub in ("www/files", "logs", "tmp", "home", "out"):
            os.makedirs(self.path(sub), exist_ok=True)
            os.chmod(self.path(sub), 0o755)
        try:
            for name, spec in self.files_spec.items():
                self.put_file(name, os.urandom(spec) if isinstance(spec, int) else bytes(spec))
            if self.want_https:
                self._make_certs()
            self._start()
        except BaseException:
            self._stop()
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop()
        self._cleanup()
        return False

    def _cleanup(self):
        # Keep the parsed log: tests print it on failure after the origin is gone.
        if self.dir and self._final_records is None:
            try:
                self._final_records = self.log()
            except (OSError, ValueError):
                self._final_records = []
        if self.dir and os.environ.get("BGCOPY_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        elif self.dir:
            print(f"(kept {self.dir})")

    def put_file(self, name, data, mtime=None):
        """Serve DATA as /files/NAME. Written to a temp file and renamed (a new inode, like a
        release being replaced); MTIME (epoch seconds) sets Last-Modified and so the ETag."""
        final = self.file_path(name)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = final + ".new"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.rename(tmp, final)
        self.data[name] = bytes(data)

    def _subst(self, text):
        if callable(text):
            text = text(self)
        repl = {
            "@BASE@": self.base, "@BASE2@": self.base2 or "", "@TLSBASE@": self.tls_base or "",
            "@PORT@": str(self.port), "@PORT2@": str(self.port2 or ""),
            "@TLSPORT@": str(self.tls_port or ""), "@DIR@": self.dir,
        }
        for k, v in repl.items():
            text = text.replace(k, v)
        return text

    def _make_certs(self):
        d = self.path("tls")
        os.makedirs(d, exist_ok=True)

        def ossl(*args):
            r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
            if r.returncode != 0:
                raise OriginError(f"openssl {' '.join(args)} failed: {r.stderr.strip()}")

        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3",
             "-subj", "/CN=bgcopy test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        ossl("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1")
        with open(os.path.join(d, "leaf.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        ossl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
             "-sha256", "-extfile", "leaf.ext", "-out", "leaf.pem")
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)
        self.ca_file = os.path.join(d, "ca.pem")

    def _config(self):
        d = self.dir
        fmt = "{" + ",".join(f'"{k}":"{v}"' for k, v in LOG_FIELDS) + "}"
        user = "user root;\n" if os.geteuid() == 0 else ""
        common = f"""        root {d}/www;
        location /files/ {{ }}
"""
        servers = f"""    server {{
        listen 127.0.0.1:{self.port};
        server_name origin;
{common}{self._subst(self.locations)}
    }}
"""
        if self.port2:
            servers += f"""    server {{
        listen 127.0.0.1:{self.port2};
        server_name origin2;
{common}{self._subst(self.locations2)}
    }}
"""
        if self.tls_port:
            servers += f"""    server {{
        listen 127.0.0.1:{self.tls_port} ssl;
        server_name origin-tls;
        ssl_certificate {d}/tls/leaf.pem;
        ssl_certificate_key {d}/tls/leaf.key;
{common}{self._subst(self.tls_locations)}
    }}
"""
        return f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format bgjson escape=json '{fmt}';
    access_log {d}/logs/access.log bgjson;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ }}
    default_type application/octet-stream;
    server_tokens off;
    keepalive_timeout 10s;
    sendfile on;
{self._subst(self.http_extra)}
    server {{
        listen 127.0.0.1:{self.status_port};
        access_log off;
        location = /status {{ stub_status; }}
    }}
{servers}}}
"""

    def _start(self):
        last_err = None
        for _attempt in range(3):
            self.port = free_port()
            self.port2 = free_port() if self.want_second else None
            self.tls_port = free_port() if self.want_https else None
            self.extra_ports = []
            self.status_port = None
            while len(self.extra_ports) < self.want_extra_ports or self.status_port is None:
                p = free_port()
                if p in (self.port, self.port2, self.tls_port, *self.extra_ports):
                    continue
                if len(self.extra_ports) < self.want_extra_ports:
                    self.extra_ports.append(p)
                else:
                    self.status_port = p
            if self.before_start is not None:
                self.before_start(self)
            with open(self.path(self.CONF), "w") as f:
                f.write(self._config())
            try:
                self._launch("wb")
                return
            except OriginError as e:
                last_err = e
                self._stop()
                if "Address already in use" not in str(e):
                    break
        raise last_err

    def _launch(self, stderr_mode):
        """Runs nginx with the config in the dir and waits until every port accepts."""
        self.stderr_path = self.path("logs", self.NAME + ".stderr")
        self._status_queries = 0
        self._lines_at_launch = len(self._log_lines())
        with open(self.stderr_path, stderr_mode) as errf:
            self.proc = subprocess.Popen(
                self._argv(), stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                start_new_session=True)
        ports = [p for p in (self.port, self.port2, self.tls_port, *self.extra_ports,
                             self.status_port) if p]
        self._wait_ready(ports, timeout=30)

    def _find_server(self):
        return find_nginx()

    def _argv(self):
        return [self.server_exe, "-c", self.path(self.CONF), "-p", self.dir + "/",
                "-e", self.path("logs", "error.log")]

    def stop(self):
        """Stops nginx now, as __exit__ does (TERM: connections in flight are closed, new
        ones refused), keeping the dir, the ports and the logs for restart()."""
        self._stop()

    def restart(self):
        """Starts nginx again after stop(), on the same ports with the same config (no new
        port is picked: a client that resumes reaches the same URLs). The access log
        continues in the same file. Raises OriginError if a port is taken meanwhile."""
        if self.proc is not None:
            raise OriginError("restart() while nginx is running; stop() first")
        try:
            self._launch("ab")
        except BaseException:
            self._stop()
            raise

    def _wait_ready(self, ports, timeout):
        deadline = time.monotonic() + timeout
        pending = list(ports)
        while pending:
            if self.proc.poll() is not None:
                raise OriginError(f"{self.NAME} exited with {self.proc.returncode}: {self._diag()}")
            try:
                with socket.create_connection(("127.0.0.1", pending[0]), timeout=0.5):
                    pending.pop(0)
                    continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise OriginError(f"{self.NAME} not accepting on {pending} after {timeout}s: {self._diag()}")
            time.sleep(0.02)
        # nginx writes its pid file just after it listens. A port that accepted may also
        # be another server's, picked by a test running beside this one: nginx then
        # retries its bind for a few seconds and exits ("Address already in use"), which
        # _start() answers with other ports. So its exit is watched here too.
        while not os.path.exists(self.path(self.PID)):
            if self.proc.poll() is not None:
                raise OriginError(f"{self.NAME} exited with {self.proc.returncode}: {self._diag()}")
            if time.monotonic() > deadline:
                raise OriginError(f"{self.NAME} wrote no pid file")
            time.sleep(0.02)

    def _diag(self):
        out = []
        for p in (self.path("logs", self.NAME + ".stderr"), self.path("logs", "error.log")):
            try:
                with open(p, errors="replace") as f:
                    out.append(f.read()[-2000:].strip())
            except OSError:
                pass
        return " | ".join(x for x in out if x)

    def _stop(self):
        if self.proc is None:
            return
        pid = None
        try:
            with open(self.path(self.PID)) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            pass
        if pid is None or pid != self.proc.pid:
            pid = self.proc.pid
        if self.proc.poll() is None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self.proc = None

    # ---- access log -----------------------------------------------------------------
    def _requests_counted(self):
        """Requests nginx has begun since it started (its stub_status counter) less our
        own status queries, or None when nginx does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.status_port), timeout=2) as s:
                s.sendall(b"GET /status HTTP/1.0\r\nHost: status\r\n\r\n")
                self._status_queries += 1  # counted by nginx once it has the request
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
        except OSError:
            return None
        m = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", data)
        return int(m.group(3)) - self._status_queries if m else None

    def _log_lines(self):
        try:
            with open(self.path("logs", "access.log"), encoding="utf-8", errors="replace") as f:
                return [line for line in f.read().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def log(self, settle=True, timeout=5.0):
        """All requests so far, oldest first: dicts with the LOG_FIELDS keys. Empty header
        values are None; port, status and byte counts are ints; 'server' is 'main',
        'second' or 'tls'. With SETTLE, first waits up to TIMEOUT seconds until every
        request nginx has begun is logged (requests still in flight when it gives up are
        missing, as without SETTLE). The counter starts again at 0 when nginx is restarted,
        so settling then only covers the requests since the restart."""
        if self._final_records is not None:
            return list(self._final_records)
        lines = self._log_lines()
        if settle and self.proc is not None and self.status_port:
            deadline = time.monotonic() + timeout
            while True:
                counted = self._requests_counted()
                if counted is None or len(lines) - self._lines_at_launch >= counted:
                    break
                if time.monotonic() > deadline:
                    print(f"(origin log: {counted - len(lines) + self._lines_at_launch} "
                          f"request(s) still in flight after {timeout:g} s)")
                    break
                time.sleep(0.01)
                lines = self._log_lines()
        recs = []
        for line in lines:
            r = json.loads(line)
            for k, v in list(r.items()):
                if v in ("", "-"):
                    r[k] = None
            for k in INT_FIELDS:
                if r.get(k) is not None:
                    r[k] = int(r[k])
            names = {p: f"extra{i}" for i, p in enumerate(self.extra_ports)}
            names.update({self.port: "main", self.port2: "second", self.tls_port: "tls"})
            r["server"] = names.get(r["port"], "?")
            recs.append(r)
        return recs

    def requests(self, uri=None, server=None, settle=True):
        return [r for r in self.log(settle)
                if (uri is None or r["uri"] == uri) and (server is None or r["server"] == server)]

    def wait_requests(self, uri, count, timeout=10.0, server=None):
        """Poll the access log until at least COUNT requests for URI are logged (nginx logs a
        request when it ends, e.g. when it notices a killed client). Returns what is there."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.requests(uri, server, settle=False)
            if len(recs) >= count or time.monotonic() > deadline:
                return recs
            time.sleep(0.05)

    def format_log(self, recs=None):
        recs = self.log() if recs is None else recs
        keys = ("server", "method", "uri", "status", "bytes_sent", "range", "if_range",
                "content_range", "location", "authorization", "cookie")
        return "\n".join("  " + " ".join(f"{k}={r.get(k)!r}" for k in keys) for r in recs) or "  (no requests)"


if __name__ == "__main__":
    # Self-test of the fixture (no bgcopy needed): serve a file and a redirect, fetch them
    # with curl, check the parsed log, stop.
    import sys

    with Origin(files={"a.bin": 100_000},
                locations="""location = /r/302 { return 302 @BASE@/files/a.bin; }
        location = /r/300 { add_header Location @BASE@/files/a.bin always; return 300; }
        location = /rel/go { return 302 ../files/a.bin; }
        location = /abs/go { absolute_redirect off; return 302 /files/a.bin; }
        location = /x/go { return 302 @BASE2@/files/a.bin; }""",
                second=True, https=True) as o:
        print("origin at", o.base, o.base2, o.tls_base, "dir", o.dir)
        def curl(*a):
            return subprocess.run(["curl", "-sS", *a], capture_output=True, timeout=20)
        r = curl("-o", o.path("out", "c1"), o.url("/files/a.bin"))
        assert r.returncode == 0 and sha256_file(o.path("out", "c1")) == o.sha("a.bin"), r
        r = curl("-L", "-o", o.path("out", "c2"), o.url("/r/302"))
        assert r.returncode == 0 and sha256_file(o.path("out", "c2")) == o.sha("a.bin"), r
        r = curl("-D", "-", "-o", "/dev/null", o.url("/r/300"))
        print(r.stdout.decode().strip())
        assert b" 300 " in r.stdout and f"Location: {o.base}/files/a.bin".encode() in r.stdout
        for p, loc in (("/rel/go", "../files/a.bin"), ("/abs/go", "/files/a.bin")):
            r = curl("-D", "-", "-o", "/dev/null", o.url(p))
            assert f"Location: {loc}\r\n".encode() in r.stdout, r.stdout
        r = curl("--cacert", o.ca_file, "-o", o.path("out", "c3"), o.tls_url("/files/a.bin"))
        assert r.returncode == 0 and sha256_file(o.path("out", "c3")) == o.sha("a.bin"), r
        r = curl("-L", "-H", "Authorization: Bearer x", "-o", "/dev/null", o.url("/x/go"))
        assert r.returncode == 0, r
        r = curl("-r", "1000-", "-H", "If-Range: nope", "-o", "/dev/null", o.url("/files/a.bin"))
        r = curl("-r", "1000-", "-o", o.path("out", "c4"), o.url("/files/a.bin"))
        assert open(o.path("out", "c4"), "rb").read() == o.data["a.bin"][1000:]
        recs = o.wait_requests("/files/a.bin", 6)
        print(o.format_log())
        st = [(r["server"], r["uri"], r["status"]) for r in o.log()]
        assert ("main", "/r/302", 302) in st and ("main", "/r/300", 300) in st, st
        assert ("tls", "/files/a.bin", 200) in st and ("second", "/files/a.bin", 200) in st, st
        last = o.requests("/files/a.bin", "main")[-1]
        assert last["status"] == 206 and range_start(last["range"]) == 1000, last
        ifr = o.requests("/files/a.bin", "main")[-2]
        assert ifr["status"] == 200 and ifr["if_range"] == "nope", ifr
        xr = [r for r in o.log() if r["uri"] == "/x/go"][0]
        assert xr["authorization"] == "Bearer x", xr
        sec = o.requests("/files/a.bin", "second")[0]
        print("second server saw authorization:", sec["authorization"])
        pid = o.proc.pid
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    print("origin self-test OK")
    sys.exit(0)
