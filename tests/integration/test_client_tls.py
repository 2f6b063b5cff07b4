#!/usr/bin/env python3
"""Client certificates and the certificate check command against a real nginx.

Usage: test_client_tls.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy ...)
       test_client_tls.py --list                    prints the case names, one a line
       test_client_tls.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

The fixture: scripts/mkcerts' PKI (server leaf `good`, client CA `clientca`, client
certificates `client` and `otherclient`), one nginx with three HTTPS servers on ports of
their own: `mtls` (ssl_verify_client on, trusting only the client CA), `open` (asks for no
client certificate) and `optional` (asks for one, takes any or none: optional_no_ca). The access log records the client certificate's subject and the connection
number of every request.

What is pinned:
- set-client-cert / get --cert: the file is fetched with the right certificate; without one
  the file fails with ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED (0x80072F0C); a certificate of
  another CA gets nginx's answer (HTTP 400); a key file others may read is refused when it is
  set (exit 2, one line, nothing changed) and again when it is used
  (ERROR_WINHTTP_CLIENT_CERT_NO_PRIVATE_KEY, 0x80072F99); `none` removes it; get-client-cert
  and the job document show the paths and subject, never the key;
- set-cert-check-cmd: the command reads `host HOST PORT` and the chain in PEM; exit 0
  accepts; another exit, a crash or a hang (killed after BGCOPY_CERT_CHECK_TIMEOUT_MS) fails
  the file with ERROR_WINHTTP_SECURE_FAILURE (0x80072F8F); it runs once for a job of three
  files fetched over one reused connection."""

import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bgtest import (ABSENT, Bgcopy, Daemon, case_registry, expect_error, expect_transferred,  # noqa: E402
                    field, main, new_job, poll_state, ran)
from origin import Origin, OriginError  # noqa: E402

F_SIZE = 50_000
CERT_NEEDED = ("0x80072F0C", "ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED")
NO_PRIVATE_KEY = ("0x80072F99", "ERROR_WINHTTP_CLIENT_CERT_NO_PRIVATE_KEY")
SECURE_FAILURE = ("0x80072F8F", "ERROR_WINHTTP_SECURE_FAILURE")
HTTP_400 = ("0x80190190", "BG_E_HTTP_ERROR_400")

CASES, case = case_registry()


def mkcerts_path():
    p = os.environ.get("MKCERTS") or os.path.join(HERE, "..", "..", "scripts", "mkcerts")
    return os.path.abspath(p)


class ClientTlsOrigin(Origin):
    SERVERS = ("mtls", "open", "optional")

    def __init__(self):
        super().__init__(files={"f.bin": F_SIZE, "g.bin": F_SIZE, "h.bin": F_SIZE},
                         http_extra=self._servers, extra_ports=len(self.SERVERS),
                         before_start=self._make_pki)

    def pki(self, name):
        return self.path("pki", name)

    def url_of(self, server, path):
        return f"https://127.0.0.1:{self.extra_ports[self.SERVERS.index(server)]}{path}"

    def _make_pki(self, o):
        r = subprocess.run([mkcerts_path(), self.path("pki"), f"{self.base}/crl"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise OriginError(f"mkcerts failed ({r.returncode}): {r.stdout}{r.stderr}")

    def _servers(self, o):
        fmt = ('{"server":"$server_name","uri":"$request_uri","status":"$status",'
               '"connection":"$connection","client_dn":"$ssl_client_s_dn",'
               '"client_verify":"$ssl_client_verify"}')
        out = [f"    log_format clientjson escape=json '{fmt}';"]
        for i, name in enumerate(self.SERVERS):
            verify = ""
            if name == "mtls":
                # /redir/NAME sends the client to the `optional` server, another origin.
                verify = (f"        ssl_verify_client on;\n"
                          f"        ssl_client_certificate {self.pki('clientca.pem')};\n"
                          f"        location /redir/ {{ rewrite ^/redir/(.*)$ "
                          f"{self.url_of('optional', '/files/$1')} redirect; }}\n")
            elif name == "optional":
                verify = "        ssl_verify_client optional_no_ca;\n"
            out.append(f"""    server {{
        listen 127.0.0.1:{self.extra_ports[i]} ssl;
        server_name {name};
        ssl_certificate {self.pki('good.pem')};
        ssl_certificate_key {self.pki('good.key')};
{verify}        access_log {self.dir}/logs/client.log clientjson;
        access_log {self.dir}/logs/access.log bgjson;
        root {self.dir}/www;
        location /files/ {{ }}
    }}""")
        return "\n".join(out)

    def client_log(self, server=None, settle=True):
        """The requests of the two HTTPS servers: [{server, uri, status, connection, client_dn,
        client_verify}] (after the main log has settled: nginx writes at request end)."""
        import json
        if settle:
            self.log()
        try:
            with open(self.path("logs", "client.log")) as f:
                recs = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []
        return [r for r in recs if server is None or r["server"] == server]


def setup(bg, o, env_extra=None):
    bg.t.origins.append(o)
    return Bgcopy(bg.exe, o.path("home"), env_extra=env_extra), bg.t


def out_path(o, name, sub="out"):
    d = o.path(sub)
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, name)


def key_copy(o, src, name, mode):
    """A copy of a PKI key (or bundle) with MODE, outside the PKI folder."""
    d = o.path("keys")
    os.makedirs(d, exist_ok=True)
    dst = os.path.join(d, name)
    shutil.copyfile(o.pki(src), dst)
    os.chmod(dst, mode)
    return dst


def cert_args(o, name="client"):
    return ["--cert", o.pki(f"{name}.pem"), "--key", o.pki(f"{name}.key")]


def get_mtls(t, agent, o, path, *extra):
    """`get --json --ca-file root.pem EXTRA` of PATH on the `mtls` server into out/f.bin:
    (Result, output path)."""
    out = out_path(o, "f.bin")
    r = ran(t, agent.get(o.url_of("mtls", path), out, extra=["--ca-file", o.pki("root.pem"), *extra]))
    return r, out


# ---- client certificates -----------------------------------------------------------------

@case("client_cert_get_accepted_with_right_cert")
def _(bg):
    """get --cert/--key against a server that requires a certificate of the client CA:
    transferred, and nginx saw the client certificate's subject"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        r, out = get_mtls(t, agent, o, "/files/f.bin", *cert_args(o))
        expect_transferred(t, r, out, o.sha("f.bin"))
        recs = o.client_log("mtls")
        t.eq("nginx: requests and client subject",
             [(x["uri"], x["status"], x["client_verify"], x["client_dn"]) for x in recs],
             [("/files/f.bin", "200", "SUCCESS", "CN=client.bgcopy.test")])
        cc = field(r.doc, "client_certificate")
        t.eq("document: client_certificate.cert_file", field(cc, "cert_file"), o.pki("client.pem"))
        t.eq("document: client_certificate.key_file", field(cc, "key_file"), o.pki("client.key"))
        t.eq("document: client_certificate.subject", field(cc, "subject"), "CN=client.bgcopy.test")
        with open(o.pki("client.key")) as f:
            key_body = "".join(line for line in f if not line.startswith("-----")).replace("\n", "")
        t.ok("stdout holds no key material", key_body[:40] not in r.out and "PRIVATE KEY" not in r.out)


@case("client_cert_bundle_file_accepted")
def _(bg):
    """--cert naming one file that holds the certificate and the key (mode 0600): transferred"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        r, out = get_mtls(t, agent, o, "/files/f.bin", "--cert", o.pki("client-bundle.pem"))
        expect_transferred(t, r, out, o.sha("f.bin"))
        t.eq("document: key_file is the bundle", field(r.doc, "client_certificate", "key_file"),
             o.pki("client-bundle.pem"))


@case("client_cert_missing_fails_cert_needed")
def _(bg):
    """no client certificate against the server that requires one: ERROR 0x80072F0C
    ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED, no output"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        out = out_path(o, "f.bin")
        r = ran(t, agent.get(o.url_of("mtls", "/files/f.bin"), out,
                             extra=["--ca-file", o.pki("root.pem")]))
        expect_error(t, r, out, *CERT_NEEDED)
        t.eq("document: client_certificate", field(r.doc, "client_certificate"), None)


@case("client_cert_other_ca_refused_by_server")
def _(bg):
    """a client certificate from a CA the server does not trust: the server's answer (nginx:
    HTTP 400) fails the file; no output"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        r, out = get_mtls(t, agent, o, "/files/f.bin", *cert_args(o, "otherclient"))
        expect_error(t, r, out, *HTTP_400)
        recs = o.client_log("mtls")
        t.ok("nginx saw the other CA's certificate and refused it",
             any(x["client_dn"] == "CN=otherclient.bgcopy.test" and x["client_verify"].startswith("FAILED")
                 for x in recs), f"log: {recs!r}")


@case("client_cert_key_mode_0644_refused_at_set")
def _(bg):
    """set-client-cert and get --cert with a key file readable by others: exit 2, one stderr
    line naming the file and the mode; the job keeps its setting"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        bad = key_copy(o, "client.key", "client-0644.key", 0o644)
        job = new_job(t, agent, [(o.url_of("mtls", "/files/f.bin"), out_path(o, "f.bin"))])
        r = ran(t, agent.run("set-client-cert", job, "--cert", o.pki("client.pem"), "--key", bad))
        t.eq("set-client-cert with a 0644 key: exit status", r.rc, 2)
        lines = r.err.strip().splitlines()
        t.ok("one stderr line naming the key and its mode",
             len(lines) == 1 and bad in lines[0] and "0644" in lines[0], f"stderr: {r.err!r}")
        r = ran(t, agent.run("get-client-cert", job))
        t.eq("get-client-cert after the refusal", (r.rc, r.out), (0, "none\n"))
        out = out_path(o, "g.bin")
        r = ran(t, agent.get(o.url_of("mtls", "/files/g.bin"), out,
                             extra=["--cert", o.pki("client.pem"), "--key", bad]))
        t.eq("get --key with a 0644 key: exit status", r.rc, 2)
        t.ok("get: stderr names the key", bad in r.err, f"stderr: {r.err!r}")
        t.eq("get: no output file", os.path.exists(out), False)


@case("client_cert_key_mode_0644_refused_at_use")
def _(bg):
    """a key made readable by others after set-client-cert: the transfer refuses it with
    0x80072F99 ERROR_WINHTTP_CLIENT_CERT_NO_PRIVATE_KEY and nothing reaches the server"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        key = key_copy(o, "client.key", "client.key", 0o600)
        out = out_path(o, "f.bin")
        job = new_job(t, agent, [(o.url_of("mtls", "/files/f.bin"), out)])
        r = ran(t, agent.run("set-client-cert", job, "--cert", o.pki("client.pem"), "--key", key))
        t.eq("set-client-cert: exit status", r.rc, 0)
        ran(t, agent.run("set-ca-file", job, o.pki("root.pem")))
        os.chmod(key, 0o644)
        with Daemon(t, agent, o):
            ran(t, agent.run("resume", job))
            d, _ = poll_state(t, agent, job, ("ERROR", "TRANSFERRED"), 30)
        t.eq("state", field(d, "state"), "ERROR")
        t.eq("error.code", field(d, "error", "code"), NO_PRIVATE_KEY[0])
        t.eq("error.symbol", field(d, "error", "symbol"), NO_PRIVATE_KEY[1])
        t.ok("error.message names the key and the mode",
             key in str(field(d, "error", "message")) and "0644" in str(field(d, "error", "message")),
             f"message: {field(d, 'error', 'message')!r}")
        t.eq("no output file", os.path.exists(out), False)
        t.eq("nothing reached the server", o.client_log("mtls"), [])


@case("client_cert_set_get_none")
def _(bg):
    """set-client-cert, get-client-cert (text and --json), info shows it without key
    material, a daemon fetches with it; `none` removes it and the next file fails with
    0x80072F0C"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        out = out_path(o, "f.bin")
        job = new_job(t, agent, [(o.url_of("mtls", "/files/f.bin"), out)])
        r = ran(t, agent.run("get-client-cert", job))
        t.eq("get-client-cert before: output", (r.rc, r.out), (0, "none\n"))
        r = ran(t, agent.run("set-client-cert", job, *cert_args(o)))
        t.eq("set-client-cert: exit status", r.rc, 0)
        r = ran(t, agent.run("get-client-cert", job))
        t.eq("get-client-cert: exit status", r.rc, 0)
        lines = dict(line.split(" ", 1) for line in r.out.strip().splitlines())
        t.eq("get-client-cert: cert_file, key_file, subject",
             (lines.get("cert_file"), lines.get("key_file"), lines.get("subject")),
             (o.pki("client.pem"), o.pki("client.key"), "CN=client.bgcopy.test"))
        r = ran(t, agent.run("get-client-cert", job, "--json"))
        t.eq("get-client-cert --json: subject", field(r.doc, "subject"), "CN=client.bgcopy.test")
        r = ran(t, agent.run("info", job, "--json"))
        t.eq("info: client_certificate.subject", field(r.doc, "client_certificate", "subject"),
             "CN=client.bgcopy.test")
        t.ok("info: no key material", "PRIVATE KEY" not in r.out and "BEGIN" not in r.out)
        r = ran(t, agent.run("info", job))
        t.ok("info (text) names the subject and the file",
             f"client cert    CN=client.bgcopy.test ({o.pki('client.pem')})" in r.out, f"stdout: {r.out!r}")
        ran(t, agent.run("set-ca-file", job, o.pki("root.pem")))
        with Daemon(t, agent, o):
            ran(t, agent.run("resume", job))
            d, _ = poll_state(t, agent, job, ("ERROR", "TRANSFERRED"), 30)
            t.eq("with the certificate: state", field(d, "state"), "TRANSFERRED")
            r = ran(t, agent.run("complete", job))
            out2 = out_path(o, "g.bin")
            job2 = new_job(t, agent, [(o.url_of("mtls", "/files/g.bin"), out2)])
            ran(t, agent.run("set-ca-file", job2, o.pki("root.pem")))
            ran(t, agent.run("set-client-cert", job2, *cert_args(o)))
            r = ran(t, agent.run("set-client-cert", job2, "none"))
            t.eq("set-client-cert none: exit status", r.rc, 0)
            r = ran(t, agent.run("get-client-cert", job2))
            t.eq("get-client-cert after none", r.out, "none\n")
            ran(t, agent.run("resume", job2))
            d, _ = poll_state(t, agent, job2, ("ERROR", "TRANSFERRED"), 30)
            t.eq("after none: error.code", field(d, "error", "code"), CERT_NEEDED[0])
        t.eq("the first file is there", os.path.exists(out), True)
        t.eq("the second is not", os.path.exists(out2), False)


@case("client_cert_usage_errors_change_nothing")
def _(bg):
    """set-client-cert with bad arguments (no --cert, --cert and --pkcs11, a key of another
    certificate, a missing file): exit 2, one line each, the setting stays"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        job = new_job(t, agent, [(o.url_of("mtls", "/files/f.bin"), out_path(o, "f.bin"))])
        ran(t, agent.run("set-client-cert", job, *cert_args(o)))
        for args in (["--key", o.pki("client.key")],
                     ["--cert", o.pki("client.pem"), "--pkcs11", "pkcs11:object=x"],
                     ["--cert", o.pki("client.pem"), "--key", o.pki("otherclient.key")],
                     ["--cert", o.path("nonexistent.pem"), "--key", o.pki("client.key")],
                     ["--pkcs11", "file:///x"], []):
            r = ran(t, agent.run("set-client-cert", job, *args))
            t.ok(f"set-client-cert {' '.join(args)}: exit 2, one stderr line",
                 r.rc == 2 and len(r.err.strip().splitlines()) == 1, f"exit {r.rc}, stderr {r.err!r}")
        r = ran(t, agent.run("get-client-cert", job))
        t.ok("the setting stays", "subject CN=client.bgcopy.test" in r.out, f"stdout: {r.out!r}")


@case("client_cert_connection_not_reused_across_certs")
def _(bg):
    """one origin client (tests' tls_reuse) fetches twice from a server that asks for a
    certificate but does not require one (optional_no_ca) and logs it: with the certificate then without, without then with, with
    two different certificates, and with the same certificate twice. Only the last pair shares a connection; nginx sees the
    certificate exactly where it was set"""
    exe = os.environ.get("TLS_REUSE") or os.path.join(os.path.dirname(bg.exe), "tls_reuse")
    if not os.access(exe, os.X_OK):
        print(f"tls_reuse not found ({exe}): set TLS_REUSE")
        return 77
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        cert, key = o.pki("client.pem"), o.pki("client.key")
        dn = "CN=client.bgcopy.test"
        pairs = {"cert then none": ((cert, key), ("-", "-"), (dn, ""), False),
                 "none then cert": (("-", "-"), (cert, key), ("", dn), False),
                 "cert then another cert": ((cert, key), (o.pki("otherclient.pem"), o.pki("otherclient.key")),
                                            (dn, "CN=otherclient.bgcopy.test"), False),
                 "cert then cert": ((cert, key), (cert, key), (dn, dn), True)}
        for i, (label, (a, b, dns, shared)) in enumerate(pairs.items()):
            path = "/files/" + ("f.bin", "g.bin", "h.bin")[i % 3]
            before = len(o.client_log("optional"))
            r = subprocess.run([exe, o.pki("root.pem"), o.url_of("optional", path), "0", "0", *a, *b],
                               capture_output=True, text=True, timeout=60)
            lines = r.stdout.strip().splitlines()
            t.ok(f"{label}: both transfers succeeded",
                 r.returncode == 0 and len(lines) == 2 and all(x.startswith("hr=0x00000000") for x in lines),
                 f"exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr!r}")
            recs = o.client_log("optional")[before:]
            t.eq(f"{label}: client subjects nginx saw", tuple(x["client_dn"] for x in recs), dns)
            t.eq(f"{label}: one connection for both", len({x["connection"] for x in recs}) == 1, shared)


def softhsm_token(o):
    """A SoftHSM token in the test's folder holding client.key and client.pem (label
    `client`, id 01; user PIN 1234). Returns (env for bgcopy, URI) or None when the tools are
    missing."""
    module = "/usr/lib/softhsm/libsofthsm2.so"
    engine = subprocess.run(["openssl", "engine", "pkcs11", "-t"], capture_output=True, text=True)
    if not (shutil.which("softhsm2-util") and shutil.which("pkcs11-tool") and os.path.exists(module)
            and engine.returncode == 0):
        return None
    d = o.path("hsm")
    os.makedirs(os.path.join(d, "tokens"))
    conf = os.path.join(d, "softhsm2.conf")
    with open(conf, "w") as f:
        f.write(f"directories.tokendir = {d}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=conf)

    def run(*argv):
        r = subprocess.run(argv, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise OriginError(f"{' '.join(argv)} failed: {r.stdout}{r.stderr}")
    run("softhsm2-util", "--init-token", "--free", "--label", "bgtest", "--pin", "1234", "--so-pin", "5678")
    run("openssl", "pkcs8", "-topk8", "-nocrypt", "-in", o.pki("client.key"), "-out", f"{d}/client.p8")
    run("openssl", "x509", "-in", o.pki("client.pem"), "-outform", "DER", "-out", f"{d}/client.der")
    for kind, src in (("privkey", "client.p8"), ("cert", "client.der")):
        run("pkcs11-tool", "--module", module, "--login", "--pin", "1234", "--write-object",
            f"{d}/{src}", "--type", kind, "--id", "01", "--label", "client")
    return {"SOFTHSM2_CONF": conf}, "pkcs11:token=bgtest;object=client;pin-value=1234"


@case("client_cert_not_sent_to_redirect_target_on_another_origin")
def _(bg):
    """a file whose URL (on the server that requires the certificate) redirects to another
    origin (same host, another port, asking for an optional certificate): the certificate
    went to the first, not to the second, as credentials do; the file is transferred"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        r, out = get_mtls(t, agent, o, "/redir/f.bin", *cert_args(o))
        expect_transferred(t, r, out, o.sha("f.bin"))
        t.eq("client subject at the first origin (302)",
             [(x["uri"], x["status"], x["client_dn"]) for x in o.client_log("mtls")],
             [("/redir/f.bin", "302", "CN=client.bgcopy.test")])
        t.eq("client subject at the redirect's target",
             [(x["uri"], x["status"], x["client_dn"]) for x in o.client_log("optional")],
             [("/files/f.bin", "200", "")])


@case("client_cert_pkcs11_softhsm_accepted")
def _(bg):
    """get --pkcs11 URI with the client key and certificate on a SoftHSM token (OpenSSL's
    pkcs11 engine through p11-kit): transferred, nginx saw the subject; the document shows the
    URI with its PIN hidden"""
    with ClientTlsOrigin() as o:
        bg.t.origins.append(o)
        t = bg.t
        tok = softhsm_token(o)
        if tok is None:
            print("softhsm2, opensc's pkcs11-tool or libengine-pkcs11-openssl missing")
            return 77
        env, uri = tok
        agent = Bgcopy(bg.exe, o.path("home"), env_extra=env)
        r, out = get_mtls(t, agent, o, "/files/f.bin", "--pkcs11", uri)
        expect_transferred(t, r, out, o.sha("f.bin"))
        t.eq("nginx: client subject", [x["client_dn"] for x in o.client_log("mtls")],
             ["CN=client.bgcopy.test"])
        t.eq("document: client_certificate", field(r.doc, "client_certificate"),
             {"pkcs11": "pkcs11:token=bgtest;object=client;pin-value=***"})
        t.ok("the PIN is not in the document", "1234" not in r.out)
        job = new_job(t, agent, [(o.url_of("mtls", "/files/g.bin"), out_path(o, "g.bin"))])
        r = ran(t, agent.run("set-client-cert", job, "--pkcs11", uri))
        t.eq("set-client-cert --pkcs11: exit status", r.rc, 0)
        r = ran(t, agent.run("get-client-cert", job))
        t.eq("get-client-cert", r.out, "pkcs11 pkcs11:token=bgtest;object=client;pin-value=***\n")


# ---- the certificate check command -------------------------------------------------------

HOOK = r"""#!/bin/sh
# test hook: MODE is accept, reject, hang or crash; each run appends its input to LOG
echo "--- run" >> "$2"
cat >> "$2"
case "$1" in
accept) exit 0 ;;
reject) exit 3 ;;
hang) sleep 300 & wait ;;
crash) kill -SEGV $$ ;;
esac
"""


def write_hook(o):
    p = o.path("hook.sh")
    with open(p, "w") as f:
        f.write(HOOK)
    os.chmod(p, 0o755)
    return p


def hook_runs(log):
    try:
        with open(log) as f:
            return f.read().split("--- run\n")[1:]
    except FileNotFoundError:
        return []


def run_hook_job(t, agent, o, mode, names=("f.bin",)):
    hook = write_hook(o)
    log = o.path(f"hook-{mode}.log")
    outs = [out_path(o, n) for n in names]
    job = new_job(t, agent, [(o.url_of("open", f"/files/{n}"), p) for n, p in zip(names, outs)])
    ran(t, agent.run("set-ca-file", job, o.pki("root.pem")))
    r = ran(t, agent.run("set-cert-check-cmd", job, hook, mode, log))
    t.eq("set-cert-check-cmd: exit status", r.rc, 0)
    t0 = time.monotonic()
    with Daemon(t, agent, o):
        ran(t, agent.run("resume", job))
        d, _ = poll_state(t, agent, job, ("ERROR", "TRANSFERRED"), 60)
    if field(d, "state") == "TRANSFERRED":
        ran(t, agent.run("complete", job))
    return d, outs, log, time.monotonic() - t0


@case("cert_check_cmd_accepts_and_reads_host_and_chain")
def _(bg):
    """a command that exits 0: transferred; its input is `host 127.0.0.1 PORT` then the
    chain in PEM, leaf first (good, inter, root); the document shows the command"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        d, outs, log, _ = run_hook_job(t, agent, o, "accept")
        t.eq("state", field(d, "state"), "TRANSFERRED")
        t.eq("document: cert_check_cmd", field(d, "cert_check_cmd"),
             [o.path("hook.sh"), "accept", log])
        runs = hook_runs(log)
        t.eq("the command ran once", len(runs), 1)
        if runs:
            port = o.extra_ports[ClientTlsOrigin.SERVERS.index("open")]
            first = runs[0].split("\n", 1)[0]
            t.eq("first line", first, f"host 127.0.0.1 {port}")
            pems = [b.split("-----END CERTIFICATE-----")[0] for b in runs[0].split("-----BEGIN CERTIFICATE-----\n")[1:]]
            want = []
            for name in ("good.pem", "inter.pem", "root.pem"):
                with open(o.pki(name)) as f:
                    want.append(f.read().split("-----BEGIN CERTIFICATE-----\n")[1].split("-----END CERTIFICATE-----")[0])
            t.eq("the chain, leaf first: good, inter, root", pems, want)
        t.eq("the output is there", os.path.exists(outs[0]), True)


def expect_rejected(t, o, d, outs, says):
    """The job is in ERROR 0x80072F8F, its message says SAYS, no output, and no request
    reached the server (the handshake was refused before one was sent)."""
    msg = str(field(d, "error", "message"))
    t.eq("state", field(d, "state"), "ERROR")
    t.eq("error.code", field(d, "error", "code"), SECURE_FAILURE[0])
    t.ok(f"error.message says {says!r}", says in msg, f"message: {msg!r}")
    t.eq("no output file", os.path.exists(outs[0]), False)
    t.eq("no request reached the server", o.client_log("open"), [])


def make_rejection_case(mode, says):
    def run(bg):
        with ClientTlsOrigin() as o:
            agent, t = setup(bg, o)
            d, outs, log, _ = run_hook_job(t, agent, o, mode)
            expect_rejected(t, o, d, outs, says)
    run.__doc__ = (f"a command that {'exits 3' if mode == 'reject' else 'dies of SIGSEGV'}: ERROR "
                   f"0x80072F8F ERROR_WINHTTP_SECURE_FAILURE, the message says {says!r}; no output, "
                   "no request reached the server")
    return run


case("cert_check_cmd_reject_fails_file")(make_rejection_case("reject", "exit 3"))
case("cert_check_cmd_crash_is_rejection")(make_rejection_case("crash", "signal 11"))


@case("cert_check_cmd_hang_killed_is_rejection")
def _(bg):
    """a command that never exits (and has a child): killed after the bound
    (BGCOPY_CERT_CHECK_TIMEOUT_MS=1500), a rejection; its process group is gone"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o, {"BGCOPY_CERT_CHECK_TIMEOUT_MS": "1500"})
        d, outs, log, elapsed = run_hook_job(t, agent, o, "hang")
        expect_rejected(t, o, d, outs, "killed")
        left = subprocess.run(["pgrep", "-f", "sleep 300"], capture_output=True, text=True).stdout.split()
        mine = [p for p in left if log in open(f"/proc/{p}/cmdline").read().replace("\0", " ")] if left else []
        t.eq("the command's sleeping child was killed with it", mine, [])
        t.note(f"job ended {elapsed:.1f}s after it started (bound 1.5 s, default 30 s)")


@case("cert_check_cmd_once_per_connection")
def _(bg):
    """a job of three files on one host: all transferred over one connection (nginx's
    connection number), the command ran once"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        d, outs, log, _ = run_hook_job(t, agent, o, "accept", ("f.bin", "g.bin", "h.bin"))
        t.eq("state", field(d, "state"), "TRANSFERRED")
        recs = o.client_log("open")
        t.eq("requests", sorted(x["uri"] for x in recs), ["/files/f.bin", "/files/g.bin", "/files/h.bin"])
        t.eq("connections used", len({x["connection"] for x in recs}), 1)
        t.eq("command runs", len(hook_runs(log)), 1)


@case("cert_check_cmd_usage_and_none")
def _(bg):
    """set-cert-check-cmd without a program or with a path that is not executable: exit 2;
    `none` removes the command (document null)"""
    with ClientTlsOrigin() as o:
        agent, t = setup(bg, o)
        hook = write_hook(o)
        job = new_job(t, agent, [(o.url_of("open", "/files/f.bin"), out_path(o, "f.bin"))])
        r = ran(t, agent.run("set-cert-check-cmd", job))
        t.eq("no program: exit status", r.rc, 2)
        r = ran(t, agent.run("set-cert-check-cmd", job, o.path("nonexistent")))
        t.eq("a path that is not a program: exit status", r.rc, 2)
        r = ran(t, agent.run("set-cert-check-cmd", job, hook, "accept"))
        t.eq("set: exit status", r.rc, 0)
        r = ran(t, agent.run("info", job, "--json"))
        t.eq("document: cert_check_cmd", field(r.doc, "cert_check_cmd"), [hook, "accept"])
        r = ran(t, agent.run("info", job))
        t.ok("info (text) shows the command", f"cert check     {hook} accept\n" in r.out, f"stdout: {r.out!r}")
        r = ran(t, agent.run("set-cert-check-cmd", job, "none"))
        t.eq("none: exit status", r.rc, 0)
        r = ran(t, agent.run("info", job, "--json"))
        t.eq("document: cert_check_cmd after none", field(r.doc, "cert_check_cmd"), None)


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
