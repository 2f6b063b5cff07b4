#!/usr/bin/env python3
"""Integration cases for credentials by target and scheme (BITS IBackgroundCopyJob2::
SetCredentials): server Basic against nginx (auth_basic), server Digest against a private
Apache (mod_auth_digest), Negotiate against a private Kerberos realm (krb5kdc) and Apache
mod_auth_gssapi, proxy Basic and Digest against squid in front of nginx, NTLM (and
Negotiate without a ticket) against a small Python server that logs the Authorization it
gets, and what the job document shows (targets, schemes, user names; never a password).

Usage: test_auth.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_auth.py CASE)
       test_auth.py --list                    prints the case names, one a line
       test_auth.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Exit 0 when every check passed, 1 otherwise, 2 on bad usage, 77 (skipped) when a server
(squid, apache2, the Kerberos tools) is not installed. No check asserts a duration."""

import contextlib
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bgtest import (Bgcopy, case_registry, cmd, Daemon, expect_error, expect_transferred, field,
                    info, main, new_job, poll_state, ran, SKIPPED, started)  # noqa: E402
from origin import free_port, Origin, sha256_bytes  # noqa: E402
from proxies import ProxyError, Squid  # noqa: E402

CASES, case = case_registry()
PASSWORD = "pw-Zq81-secret"
HR_401 = ("0x80190191", "BG_E_HTTP_ERROR_401")
HR_407 = ("0x80190197", "BG_E_HTTP_ERROR_407")


def password_file(o, name, text):
    path = o.path(name)
    with open(path, "w") as f:
        f.write(text + "\n")
    os.chmod(path, 0o600)
    return path


def entered(t, stack, make):
    """The server MAKE() builds, entered on STACK (a contextlib.ExitStack, which stops it
    whatever happens) and registered for the failure dump; None after printing why when it
    cannot run here (the case is then skipped)."""
    try:
        srv = stack.enter_context(make())
    except ProxyError as e:
        print(f"  skip  {e}")
        return None
    t.results.append(srv)
    return srv


def stop_child(proc):
    """SIGTERM, then SIGKILL after 10 s, of a server we started."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_htpasswd(o, user, password):
    """DIR/htpasswd for nginx's auth_basic (read at each request): an apr1 hash made by
    `openssl passwd -apr1`."""
    hashed = subprocess.run(["openssl", "passwd", "-apr1", password], check=True,
                            capture_output=True, text=True).stdout.strip()
    with open(o.path("htpasswd"), "w") as f:
        f.write(f"{user}:{hashed}\n")
    os.chmod(o.path("htpasswd"), 0o644)


def no_password_in(t, what, text, password=PASSWORD):
    t.ok(f"the password appears nowhere in {what}", password not in (text or ""),
         f"found in: {(text or '')[:300]!r}")


# ---- server Basic (RFC 7617) against nginx ---------------------------------------------------

@case("auth_server_basic_nginx_wrong_401_right_downloads")
def _(bg):
    """RFC 9110 section 11.6.2 / RFC 7617: nginx auth_basic. No credentials and a wrong
    password end in ERROR BG_E_HTTP_ERROR_401; the right one downloads; the old form
    `get --user` (basic) sends `Authorization: Basic`, and the password is in no output."""
    with Origin(files={"a.bin": 50_000},
                locations="location /private/ { auth_basic \"bgcopy\"; "
                          "auth_basic_user_file @DIR@/htpasswd; alias @DIR@/www/files/; }") as o:
        o, agent, t = started(bg, o)
        write_htpasswd(o, "alice", PASSWORD)
        right = password_file(o, "right.pw", PASSWORD)
        wrong = password_file(o, "wrong.pw", "nope")
        url = o.url("/private/a.bin")

        out = o.path("out", "none.bin")
        r = ran(t, agent.get(url, out))
        expect_error(t, r, out, *HR_401)

        out = o.path("out", "wrong.bin")
        r = ran(t, agent.get(url, out, extra=("--user", "alice", "--password-file", wrong)))
        expect_error(t, r, out, *HR_401)

        out = o.path("out", "right.bin")
        r = ran(t, agent.get(url, out, extra=("--user", "alice", "--password-file", right)))
        expect_transferred(t, r, out, o.sha("a.bin"))
        t.eq("credentials in the job document", field(r.doc, "credentials"),
             [{"target": "server", "scheme": "basic", "user": "alice"}])
        no_password_in(t, "get --json and its stderr", r.out + r.err)
        auths = [x.get("authorization") or "" for x in o.requests(uri="/private/a.bin")]
        t.ok("nginx saw `Authorization: Basic` on the right get", any(a.startswith("Basic ") for a in auths),
             f"authorizations: {auths}")
        # The store keeps content fetched with credentials as private (never offered).
        cl = ran(t, agent.run("cache", "list", "--json"))
        no_password_in(t, "cache list --json", cl.out)


# ---- server Digest (RFC 7616) against Apache -------------------------------------------------

class Apache:
    """A private apache2 on 127.0.0.1 (-X: one process, our child) serving DIR/www with
    Digest authentication on /private/ (mod_auth_digest, an htdigest file we write) and an
    access log with the Authorization header's scheme."""

    MODULES = ("mpm_prefork", "authn_core", "authn_file", "authz_core", "authz_user",
               "auth_digest", "auth_basic")

    def __init__(self, users, realm="bgcopy-digest"):
        self.users, self.realm = users, realm
        self.exe = shutil.which("apache2") or "/usr/sbin/apache2"
        self.moddir = "/usr/lib/apache2/modules"
        if not os.access(self.exe, os.X_OK):
            raise ProxyError("apache2 not found (Debian: apt-get install apache2)")
        self.dir = self.proc = None

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="bgcopy-apache-")
        os.chmod(self.dir, 0o755)
        os.makedirs(self.path("www", "private"))
        os.chmod(self.path("www"), 0o755)
        os.chmod(self.path("www", "private"), 0o755)
        self.port = free_port()
        with open(self.path("htdigest"), "w") as f:
            for user, password in self.users.items():
                ha1 = hashlib.md5(f"{user}:{self.realm}:{password}".encode()).hexdigest()
                f.write(f"{user}:{self.realm}:{ha1}\n")
        os.chmod(self.path("htdigest"), 0o644)
        loads = "\n".join(f"LoadModule {m}_module {self.moddir}/mod_{m}.so" for m in self.MODULES)
        user = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
        with open(self.path("apache2.conf"), "w") as f:
            f.write(f"""{loads}
ServerRoot {self.dir}
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
PidFile {self.dir}/apache2.pid
Mutex file:{self.dir} default
ErrorLog {self.dir}/error.log
LogFormat "%m %U %>s [%{{Authorization}}i]" bg
CustomLog {self.dir}/access.log bg
{user}DocumentRoot {self.dir}/www
<Directory {self.dir}/www>
  Require all granted
</Directory>
{self.location()}""")
        self.proc = subprocess.Popen([self.exe, "-X", "-f", self.path("apache2.conf")],  # noqa: SIM115
                                     stdout=open(self.path("stdout.log"), "wb"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "APACHE_RUN_DIR": self.dir, "APACHE_LOCK_DIR": self.dir})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProxyError("apache2 exited: " + self.diag())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ProxyError("apache2 did not listen: " + self.diag())

    def location(self):
        return f"""<Location /private/>
  AuthType Digest
  AuthName "{self.realm}"
  AuthDigestProvider file
  AuthUserFile {self.dir}/htdigest
  Require valid-user
</Location>
"""

    def put(self, name, data):
        with open(self.path("www", "private", name), "wb") as f:
            f.write(data)
        os.chmod(self.path("www", "private", name), 0o644)

    def diag(self):
        out = ""
        for n in ("stdout.log", "error.log"):
            try:
                with open(self.path(n), errors="replace") as f:
                    out += f.read()[-2000:]
            except OSError:
                pass
        return out

    def log(self):
        try:
            with open(self.path("access.log"), errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def describe(self):
        return "apache2 access log:\n  " + "\n  ".join(self.log()) + "\napache2 diag:\n" + self.diag()

    def stop(self):
        stop_child(self.proc)
        self.proc = None

    def __exit__(self, *exc):
        self.stop()
        if os.environ.get("BGCOPY_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


@case("auth_server_digest_apache_wrong_401_right_downloads")
def _(bg):
    """RFC 7616 (Digest) through Apache mod_auth_digest: a wrong password ends in ERROR
    BG_E_HTTP_ERROR_401; `set-credentials --scheme digest` with the right one downloads
    and Apache logs `Authorization: Digest` (the password itself never travels); a basic
    credential alone is not accepted by a Digest-only server (401)."""
    with Origin(files={}) as o, contextlib.ExitStack() as stack:
        o, agent, t = started(bg, o)
        ap = entered(t, stack, lambda: Apache({"alice": PASSWORD}))
        if ap is None:
            return SKIPPED
        data = os.urandom(40_000)
        ap.put("d.bin", data)
        url = ap.url("/private/d.bin")
        right = password_file(o, "right.pw", PASSWORD)
        wrong = password_file(o, "wrong.pw", "nope")

        out = o.path("out", "wrong.bin")
        r = ran(t, agent.get(url, out, extra=("--user", "alice", "--auth-scheme", "digest",
                                             "--password-file", wrong)))
        expect_error(t, r, out, *HR_401)

        out = o.path("out", "basic.bin")
        r = ran(t, agent.get(url, out, extra=("--user", "alice", "--password-file", right)))
        expect_error(t, r, out, *HR_401)

        out = o.path("out", "right.bin")
        r = ran(t, agent.get(url, out, extra=("--user", "alice", "--auth-scheme", "digest",
                                             "--password-file", right)))
        expect_transferred(t, r, out, sha256_bytes(data))
        t.eq("credentials in the job document", field(r.doc, "credentials"),
             [{"target": "server", "scheme": "digest", "user": "alice"}])
        no_password_in(t, "get --json and its stderr", r.out + r.err)
        log = ap.log()
        # Apache escapes the quotes of a logged header (\").
        t.ok("apache logged a 200 with `Authorization: Digest username=\"alice\"`",
             any(" 200 [Digest username=" in x and "alice" in x for x in log), f"log: {log}")
        no_password_in(t, "apache's access log", "\n".join(log))

        # The daemon path: set-credentials --scheme digest on a job.
        out = o.path("out", "job.bin")
        job = new_job(t, agent, [(url, out)], "--name", "digest")
        cmd(t, agent, "set-credentials", job, "--scheme", "digest", "alice", "--password-file", right)
        with Daemon(t, agent, o):
            cmd(t, agent, "resume", job)
            d, _ = poll_state(t, agent, job, ("TRANSFERRED", "ERROR", "TRANSIENT_ERROR"), 30)
        t.eq("daemon job with a digest credential", field(d, "state"), "TRANSFERRED")


@case("auth_server_credentials_dropped_on_cross_host_redirect")
def _(bg):
    """RFC 9110 section 11.6.2: server credentials belong to the original host. A job with
    basic and digest credentials redirected (302) to another port that asks for Basic is
    refused there (ERROR BG_E_HTTP_ERROR_401) and that server never sees an Authorization;
    the same credentials sent to that URL directly download (they would have worked)."""
    with Origin(files={"a.bin": 20_000},
                locations="location = /x/a.bin { return 302 @BASE2@/private/a.bin; }",
                locations2="location /private/ { auth_basic \"bgcopy\"; "
                           "auth_basic_user_file @DIR@/htpasswd; alias @DIR@/www/files/; }") as o:
        o, agent, t = started(bg, o)
        write_htpasswd(o, "alice", PASSWORD)
        pw = password_file(o, "pw", PASSWORD)
        jobs = {"redirected": o.url("/x/a.bin"), "direct": o.url2("/private/a.bin")}
        docs = {}
        with Daemon(t, agent, o):
            for k, url in jobs.items():
                job = new_job(t, agent, [(url, o.path("out", k))], "--name", k)
                for scheme in ("basic", "digest"):
                    cmd(t, agent, "set-credentials", job, "--scheme", scheme, "alice", "--password-file", pw)
                cmd(t, agent, "resume", job)
                docs[k], _ = poll_state(t, agent, job, ("TRANSFERRED", "ERROR", "TRANSIENT_ERROR"), 30, label=k)
        t.eq("redirected: state, error", (field(docs["redirected"], "state"),
                                          field(docs["redirected"], "error", "code")), ("ERROR", HR_401[0]))
        t.eq("direct: state", field(docs["direct"], "state"), "TRANSFERRED")
        recs = o.requests(uri="/private/a.bin", server="second")
        # The redirected job's one request, then the direct job's two: offered two schemes,
        # libcurl waits for the server's challenge before it answers with Basic.
        t.eq("Authorization at the second server: none for the redirect, Basic for the direct job",
             [(x.get("authorization") or "")[:6] for x in recs], ["", "", "Basic "])


# ---- proxy Basic and Digest (RFC 9110 section 11.7) against squid ----------------------------

class DigestSquid(Squid):
    """squid asking for Digest proxy credentials (digest_file_auth -c: user:realm:HA1)."""

    REALM = "bgcopy-proxy"

    def __init__(self, user, password):
        super().__init__()
        self.digest_user = (user, password)
        self.helper = "/usr/lib/squid/digest_file_auth"
        if not os.access(self.helper, os.X_OK):
            raise ProxyError(f"{self.helper} not found")

    def _write_config(self):
        super()._write_config()
        user, password = self.digest_user
        ha1 = hashlib.md5(f"{user}:{self.REALM}:{password}".encode()).hexdigest()
        with open(self.path("digest"), "w") as f:
            f.write(f"{user}:{self.REALM}:{ha1}\n")
        os.chmod(self.path("digest"), 0o644)
        conf = self.path("squid.conf")
        with open(conf) as f:
            text = f.read()
        text = text.replace("http_access allow localhost",
                            f"auth_param digest program {self.helper} -c {self.dir}/digest\n"
                            f"auth_param digest realm {self.REALM}\n"
                            "acl authed proxy_auth REQUIRED\nhttp_access deny !authed\n"
                            "http_access allow localhost")
        with open(conf, "w") as f:
            f.write(text)


def proxy_case(bg, make_proxy, scheme):
    with Origin(files={"a.bin": 60_000}, https=True) as o, contextlib.ExitStack() as stack:
        o, agent, t = started(bg, o)
        p = entered(t, stack, make_proxy)
        if p is None:
            return SKIPPED
        url = o.url("/files/a.bin")
        right = password_file(o, "right.pw", PASSWORD)
        wrong = password_file(o, "wrong.pw", "nope")
        outs = {k: o.path("out", f"{k}.bin") for k in ("none", "wrong", "right", "server", "tls")}
        jobs = {k: new_job(t, agent, [(o.tls_url("/files/a.bin") if k == "tls" else url, outs[k])], "--name", k)
                for k in outs}
        if None in jobs.values():
            return
        for k, job in jobs.items():
            cmd(t, agent, "set-proxy", job, p.url)
        cmd(t, agent, "set-credentials", jobs["wrong"], "--target", "proxy", "--scheme", scheme,
            "alice", "--password-file", wrong)
        cmd(t, agent, "set-credentials", jobs["right"], "--target", "proxy", "--scheme", scheme,
            "alice", "--password-file", right)
        # https through the proxy: the credential goes in the CONNECT (RFC 9110 section 9.3.6).
        cmd(t, agent, "set-credentials", jobs["tls"], "--target", "proxy", "--scheme", scheme,
            "alice", "--password-file", right)
        cmd(t, agent, "set-ca-file", jobs["tls"], o.ca_file)
        # Server credentials only: the proxy still refuses (they are the origin's).
        cmd(t, agent, "set-credentials", jobs["server"], "--target", "server", "--scheme", scheme,
            "alice", "--password-file", right)
        docs = {}
        with Daemon(t, agent, o) as dmn:
            # The refused jobs first, the right one after them: squid 5 lets a wrong
            # digest through while a right one for the same user is being checked
            # (measured with two concurrent curl --proxy-digest runs).
            for phase in (("none", "wrong", "server"), ("right",), ("tls",)):
                for k in phase:
                    cmd(t, agent, "resume", jobs[k])
                for k in phase:
                    docs[k], _ = poll_state(t, agent, jobs[k], ("TRANSFERRED", "ERROR", "TRANSIENT_ERROR"),
                                            30, label=k)
        for k in ("none", "wrong", "server"):
            t.eq(f"{k}: state", field(docs[k], "state"), "ERROR")
            t.eq(f"{k}: error.code (407 from the proxy)", field(docs[k], "error", "code"), HR_407[0])
        t.eq("right proxy credentials: state", field(docs["right"], "state"), "TRANSFERRED")
        t.eq("https through the proxy with its credentials (CONNECT): state", field(docs["tls"], "state"),
             "TRANSFERRED")
        # Digest needs a first CONNECT for the challenge (407), Basic does not; squid logs a
        # tunnel when it closes.
        connects = p.wait_requests(1, "CONNECT")
        t.ok(f"squid logged CONNECTs to the TLS origin only ({connects})",
             bool(connects) and set(connects) == {("CONNECT", f"127.0.0.1:{o.tls_port}")})
        t.eq("right: credentials in the document", field(docs["right"], "credentials"),
             [{"target": "proxy", "scheme": scheme, "user": "alice"}])
        # get with the proxy from http_proxy and --proxy-user.
        via_env = Bgcopy(agent.exe, agent.home, env_extra={"http_proxy": p.url})
        os.makedirs(o.path("getout"), exist_ok=True)
        out = o.path("getout", "get.bin")
        r = ran(t, via_env.get(url, out, extra=("--proxy-user", "alice", "--proxy-auth-scheme", scheme,
                                                 "--proxy-password-file", right)))
        expect_transferred(t, r, out, o.sha("a.bin"))
        t.eq("get: credentials in the document", field(r.doc, "credentials"),
             [{"target": "proxy", "scheme": scheme, "user": "alice"}])
        no_password_in(t, "get --json and its stderr", r.out + r.err)
        recs = o.requests(uri="/files/a.bin")
        # The get finds the right job's copy in the node's store and has the origin confirm
        # it through the proxy (RFC 9110 section 13.1.2: 304).
        t.eq("the origin's answers: http 200 (job), 304 (get), https 200 (job)",
             sorted((x.get("server"), x.get("status")) for x in recs), [("main", 200), ("main", 304), ("tls", 200)])
        t.eq("Proxy-Authorization the origin received", [x.get("proxy_authorization") or "" for x in recs],
             ["", "", ""])
        t.eq("Authorization the origin received (proxy credentials never reach it)",
             [x.get("authorization") or "" for x in recs], ["", "", ""])
        no_password_in(t, "the origin's access log", o.format_log())
        no_password_in(t, "the daemon log", dmn.text())
        for k, job in jobs.items():
            no_password_in(t, f"info {k} --json", agent.run("info", job, "--json").out)


@case("auth_proxy_basic_squid_407_right_reaches_proxy_only")
def _(bg):
    """RFC 9110 section 11.7 with Basic (RFC 7617): squid wants proxy credentials. None,
    wrong ones, or credentials for the server target only: ERROR BG_E_HTTP_ERROR_407;
    `--target proxy --scheme basic` downloads (http, and https through CONNECT), as does
    `get --proxy-user` through http_proxy, and the nginx origin behind squid never sees a
    Proxy-Authorization nor an Authorization."""
    return proxy_case(bg, lambda: Squid(auth=("alice", PASSWORD)), "basic")


@case("auth_proxy_digest_squid_407_right_reaches_proxy_only")
def _(bg):
    """RFC 9110 section 11.7 with Digest (RFC 7616): squid's digest_file_auth; as the basic
    case: 407 without the proxy's digest credential, the file with it, nothing of it at the
    origin."""
    return proxy_case(bg, lambda: DigestSquid("alice", PASSWORD), "digest")


# ---- NTLM and Negotiate (RFC 4559): the scheme is sent --------------------------------------

class ChallengeServer:
    """Answers every request 401 with `WWW-Authenticate: SCHEME` and logs each request's
    Authorization header."""

    def __init__(self, scheme):
        self.scheme, self.seen = scheme, []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.seen.append(self.headers.get("Authorization", ""))
                body = b"no\n"
                self.send_response(401)
                self.send_header("WWW-Authenticate", outer.scheme)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        return False

    def describe(self):
        return f"{self.scheme} server saw Authorization: {self.seen}"


@case("auth_ntlm_negotiate_scheme_sent_unverified")
def _(bg):
    """Only that the scheme reaches the server (no NTLM or Kerberos server here): with
    `--scheme ntlm` libcurl answers a `WWW-Authenticate: NTLM` challenge with an NTLM
    type-1 message (`Authorization: NTLM TlRMTVNTUAAB...`); the server refusing it ends in
    BG_E_HTTP_ERROR_401. With `--scheme negotiate` (RFC 4559) and no Kerberos ticket,
    libcurl has no token to send: the job ends in BG_E_HTTP_ERROR_401 too, and no Basic
    or NTLM credential is sent instead."""
    with Origin(files={}) as o:
        o, agent, t = started(bg, o)
        right = password_file(o, "pw", PASSWORD)
        for scheme, header, want in (("ntlm", "NTLM", "NTLM TlRMTVNTUAAB"), ("negotiate", "Negotiate", None)):
            with ChallengeServer(header) as srv:
                t.results.append(srv)
                out = o.path("out", f"{scheme}.bin")
                env_krb = {"KRB5CCNAME": f"FILE:{o.path('no-ccache')}", "KRB5_CONFIG": o.path("no-krb5.conf")}
                a2 = Bgcopy(agent.exe, agent.home, env_extra=env_krb)
                r = ran(t, a2.get(f"http://127.0.0.1:{srv.port}/x.bin", out,
                                  extra=("--user", "alice", "--auth-scheme", scheme, "--password-file", right)))
                expect_error(t, r, out, *HR_401)
                if want:
                    t.ok(f"{scheme}: the server saw `Authorization: {want}...`",
                         any(a.startswith(want) for a in srv.seen), f"seen: {srv.seen}")
                else:
                    t.ok(f"{scheme}: no Basic or NTLM credential was sent instead",
                         not any(a.startswith(("Basic", "NTLM")) for a in srv.seen), f"seen: {srv.seen}")
                no_password_in(t, f"{scheme}: what the server saw", "\n".join(srv.seen))


# ---- Negotiate (RFC 4559) with a private Kerberos realm ---------------------------------------

class Kdc:
    """A private MIT Kerberos realm on 127.0.0.1: kdb5_util creates its database in a temp
    dir, kadmin.local adds a user and the service principal HTTP/localhost (keytab), and
    krb5kdc runs in the foreground as our child. env() is what a client and Apache need."""

    REALM = "BGCOPY.TEST"

    def __init__(self, user, password):
        self.user, self.password = user, password
        for exe in ("krb5kdc", "kdb5_util", "kadmin.local", "kinit"):
            if shutil.which(exe) is None and not os.access(f"/usr/sbin/{exe}", os.X_OK):
                raise ProxyError(f"{exe} not found (Debian: krb5-kdc krb5-admin-server krb5-user)")
        self.dir = self.proc = None

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def env(self):
        return {"KRB5_CONFIG": self.path("krb5.conf"), "KRB5_KDC_PROFILE": self.path("kdc.conf"),
                "KRB5CCNAME": f"FILE:{self.path('ccache')}"}

    def _run(self, *argv, stdin=None):
        p = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                           env={**os.environ, **self.env()}, timeout=60)
        if p.returncode != 0:
            raise ProxyError(f"{argv[0]} failed: {p.stderr.strip()[:500]}")

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="bgcopy-kdc-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        with open(self.path("krb5.conf"), "w") as f:
            f.write(f"""[libdefaults]
  default_realm = {self.REALM}
  dns_lookup_kdc = false
  dns_lookup_realm = false
  rdns = false
  dns_canonicalize_hostname = false
[realms]
  {self.REALM} = {{
    kdc = 127.0.0.1:{self.port}
  }}
[domain_realm]
  localhost = {self.REALM}
""")
        with open(self.path("kdc.conf"), "w") as f:
            f.write(f"""[kdcdefaults]
  kdc_ports = {self.port}
  kdc_tcp_ports = {self.port}
[realms]
  {self.REALM} = {{
    database_name = {self.dir}/principal
    key_stash_file = {self.dir}/stash
    acl_file = {self.dir}/kadm5.acl
  }}
[logging]
  kdc = FILE:{self.dir}/kdc.log
""")
        os.chmod(self.path("krb5.conf"), 0o644)
        try:
            self._run("kdb5_util", "create", "-s", "-r", self.REALM, "-P", "master-pw-for-tests")
            self._run("kadmin.local", "-r", self.REALM, "-q", f"addprinc -pw {self.password} {self.user}")
            self._run("kadmin.local", "-r", self.REALM, "-q", "addprinc -randkey HTTP/localhost")
            self._run("kadmin.local", "-r", self.REALM, "-q", f"ktadd -k {self.dir}/http.keytab HTTP/localhost")
            os.chmod(self.path("http.keytab"), 0o644)  # Apache's worker reads it (a test realm)
            self.proc = subprocess.Popen(["krb5kdc", "-n", "-P", self.path("kdc.pid")],
                                         stdout=open(self.path("kdc.out"), "wb"), stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env()})
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise ProxyError("krb5kdc did not start: " + self.describe())
                    time.sleep(0.05)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def kinit(self):
        self._run("kinit", self.user, stdin=self.password + "\n")

    def describe(self):
        out = ""
        for n in ("kdc.out", "kdc.log"):
            try:
                with open(self.path(n), errors="replace") as f:
                    out += f.read()[-1500:]
            except OSError:
                pass
        return "krb5kdc log:\n" + out

    def __exit__(self, *exc):
        stop_child(self.proc)
        self.proc = None
        if self.dir and os.environ.get("BGCOPY_KEEP_TMP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


class GssApache(Apache):
    """Apache with mod_auth_gssapi on /private/ (the service key from the Kdc's keytab)."""

    MODULES = Apache.MODULES + ("auth_gssapi",)

    def __init__(self, kdc):
        super().__init__({})
        self.kdc = kdc
        if not os.path.exists(f"{self.moddir}/mod_auth_gssapi.so"):
            raise ProxyError("mod_auth_gssapi not found (Debian: libapache2-mod-auth-gssapi)")

    def url(self, path):
        return f"http://localhost:{self.port}{path}"  # the service is HTTP/localhost

    def __enter__(self):
        saved = os.environ.copy()
        os.environ.update(self.kdc.env())
        try:
            return super().__enter__()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def location(self):
        return f"""<Location /private/>
  AuthType GSSAPI
  AuthName "bgcopy-negotiate"
  GssapiCredStore keytab:{self.kdc.path("http.keytab")}
  GssapiAllowedMech krb5
  Require valid-user
</Location>
"""


@case("auth_negotiate_kerberos_apache_gssapi")
def _(bg):
    """RFC 4559 (Negotiate) end to end against a private Kerberos realm (krb5kdc on
    127.0.0.1) and Apache mod_auth_gssapi for HTTP/localhost: without a ticket the job ends
    in BG_E_HTTP_ERROR_401; after kinit (KRB5CCNAME) `--auth-scheme negotiate` downloads and
    Apache logs `Authorization: Negotiate` and the Kerberos user. libcurl takes the ticket
    from the credential cache: the user and password given to bgcopy only turn the scheme
    on (documented)."""
    with Origin(files={}) as o, contextlib.ExitStack() as stack:
        o, agent, t = started(bg, o)
        kdc = entered(t, stack, lambda: Kdc("alice", PASSWORD))
        ap = kdc and entered(t, stack, lambda: GssApache(kdc))
        if ap is None:
            return SKIPPED
        data = os.urandom(30_000)
        ap.put("n.bin", data)
        url = ap.url("/private/n.bin")
        pw = password_file(o, "pw", "unused")
        krb = Bgcopy(agent.exe, agent.home, env_extra=kdc.env())
        extra = ("--user", "alice", "--auth-scheme", "negotiate", "--password-file", pw)

        out = o.path("out", "noticket.bin")
        r = ran(t, krb.get(url, out, extra=extra))
        expect_error(t, r, out, *HR_401)

        kdc.kinit()
        out = o.path("out", "n.bin")
        r = ran(t, krb.get(url, out, extra=extra))
        expect_transferred(t, r, out, sha256_bytes(data))
        log = ap.log()
        t.ok("apache logged a 200 with `Authorization: Negotiate`",
             any(" 200 [Negotiate " in x for x in log), f"log: {log}")


# ---- commands and the job document -----------------------------------------------------------

@case("auth_commands_document_shows_users_never_passwords")
def _(bg):
    """set-credentials by target and scheme (one per pair, as BITS), the old form (server,
    basic), remove-credentials, PASSPORT refused with E_NOTIMPL (exit 2, nothing changed),
    usage errors exit 2; info / info --json / list --json show targets, schemes and users,
    never a password."""
    with Origin(files={"a.bin": 1000}) as o:
        o, agent, t = started(bg, o)
        pw = password_file(o, "pw", PASSWORD)
        job = new_job(t, agent, [(o.url("/files/a.bin"), o.path("out", "a.bin"))], "--name", "creds")
        if job is None:
            return
        cmd(t, agent, "set-credentials", job, "olduser", "--password-file", pw)
        cmd(t, agent, "set-credentials", job, "--target", "proxy", "--scheme", "ntlm", "pu",
            "--password-file", pw)
        cmd(t, agent, "set-credentials", job, "--target", "server", "--scheme", "negotiate", "nu",
            "--password-file", pw)
        # One per (target, scheme): setting it again replaces it.
        cmd(t, agent, "set-credentials", job, "--target", "proxy", "--scheme", "ntlm", "pu2",
            "--password-file", pw)
        want = [{"target": "server", "scheme": "basic", "user": "olduser"},
                {"target": "server", "scheme": "negotiate", "user": "nu"},
                {"target": "proxy", "scheme": "ntlm", "user": "pu2"}]
        t.eq("credentials in info --json", field(info(t, agent, job), "credentials"), want)
        before = agent.run("info", job, "--json").out
        r = cmd(t, agent, "set-credentials", job, "--scheme", "passport", "x", "--password-file", pw, rc=2)
        t.ok("passport: one stderr line naming E_NOTIMPL",
             r.err.count("\n") == 1 and "E_NOTIMPL (0x80004001)" in r.err, f"stderr: {r.err!r}")
        for bad in (("--target", "gateway", "u"), ("--scheme", "kerberos", "u"), ("u", "v"),
                    ("--target",), ("a:b",)):
            r = cmd(t, agent, "set-credentials", job, *bad, "--password-file", pw, rc=2)
            t.eq(f"set-credentials {' '.join(bad)}: stderr lines", r.err.count("\n"), 1)
        cmd(t, agent, "remove-credentials", job, "--target", "proxy", rc=2)
        t.eq("nothing changed by the refused commands", agent.run("info", job, "--json").out, before)
        cmd(t, agent, "remove-credentials", job, "--target", "proxy", "--scheme", "ntlm")
        cmd(t, agent, "set-credentials", job, "", rc=0)  # the old form clears server basic
        t.eq("after remove-credentials and set-credentials ''", field(info(t, agent, job), "credentials"),
             [{"target": "server", "scheme": "negotiate", "user": "nu"}])
        for args in (("info", job), ("info", job, "--json"), ("list", "--json"), ("list",)):
            r = ran(t, agent.run(*args))
            no_password_in(t, " ".join(args[:1] + args[2:]), r.out + r.err)
        t.ok("info shows the negotiate user", "server negotiate user 'nu'" in agent.run("info", job).out)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
