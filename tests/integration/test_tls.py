#!/usr/bin/env python3
"""TLS integration cases: the security-flag matrix and CRL handling of `bgcopy get`
against a real nginx serving certificates from scripts/mkcerts (see origin.py).

Usage: test_tls.py CASE [PATH/TO/bgcopy]     (or BGCOPY=PATH/TO/bgcopy test_tls.py CASE)
       test_tls.py --list                    prints the case names, one a line
       test_tls.py --all [PATH/TO/bgcopy]    runs every case, prints a summary

Environment: BGCOPY (the binary), MKCERTS (default: scripts/mkcerts of this tree),
TLS_REUSE (the tls_reuse test program, for tls_strict_after_lenient_same_process_not_reused),
BGCOPY_KEEP_TMP=1 keeps the temp dirs.

The fixture: one nginx with a plain HTTP server that serves the CRLs under /crl/ (and
answers 404 for /crl/missing.crl) and one HTTPS server per leaf of the test PKI on its own
port. The PKI is made per case by mkcerts once the ports are known, because every
certificate names CRL_BASE_URL = http://127.0.0.1:HTTPPORT/crl.

The rule under test (the security flags, as README.md states it): each leaf has fault classes; each
ignore flag removes its own class; with crl-check (0x01) revoked adds REVOKED and
crlunreachable and missinginter add REVFAILED, which no flag ignores. No fault left: exit 0,
TRANSFERRED. Otherwise exit 1, ERROR, the code of the first class in PRECEDENCE."""

import os
import re
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bgtest import _show, ABSENT, Bgcopy, case_registry, field, listing, main  # noqa: E402
from origin import Origin, OriginError, sha256_file  # noqa: E402

F_SIZE = 100_000   # the served files /files/f.bin, g.bin, h.bin

LEAVES = ("good", "expired", "notyet", "wronghost", "selfsigned", "missinginter", "wrongusage",
          "revoked", "crlunreachable", "expiredwronghost", "untrustedroot", "revokedinter")
FAULTS = {"good": set(), "expired": {"DATE"}, "notyet": {"DATE"}, "wronghost": {"CN"},
          "selfsigned": {"CA"}, "missinginter": {"CA"}, "wrongusage": {"USAGE"},
          "revoked": set(), "crlunreachable": set(), "expiredwronghost": {"DATE", "CN"},
          "untrustedroot": {"CA"}, "revokedinter": set()}
# What CRL checking adds. missinginter: its issuer is not in the chain, so the signature of
# inter.crl cannot be checked. selfsigned and untrustedroot carry no CDP.
CRL_FAULTS = {"revoked": "REVOKED", "crlunreachable": "REVFAILED", "missinginter": "REVFAILED",
              "revokedinter": "REVOKED"}
IGNORES = {0x02: "CN", 0x04: "DATE", 0x08: "CA", 0x10: "USAGE"}
PRECEDENCE = ("REVOKED", "REVFAILED", "CA", "DATE", "USAGE", "CN")
CODES = {"REVOKED": ("0x80072F8A", "ERROR_WINHTTP_SECURE_CERT_REVOKED"),
         "REVFAILED": ("0x80072F19", "ERROR_WINHTTP_SECURE_CERT_REV_FAILED"),
         "CA": ("0x80072F0D", "ERROR_WINHTTP_SECURE_INVALID_CA"),
         "DATE": ("0x80072F05", "ERROR_WINHTTP_SECURE_CERT_DATE_INVALID"),
         "USAGE": ("0x80072F93", "ERROR_WINHTTP_SECURE_CERT_WRONG_USAGE"),
         "CN": ("0x80072F06", "ERROR_WINHTTP_SECURE_CERT_CN_INVALID")}
FLAG_NAMES = {0x01: "crl-check", 0x02: "ignore-cn-invalid", 0x04: "ignore-date-invalid",
              0x08: "ignore-unknown-ca", 0x10: "ignore-wrong-usage"}
# Subject CNs that may be named in a certificate error (the leaf's is added per leaf).
CA_CNS = ("bgcopy Test Root", "bgcopy Test Intermediate", "bgcopy Test Intermediate 2",
          "bgcopy Untrusted Root")

CASES, case = case_registry()


def expected_class(leaf, flags):
    """The fault class the get must fail with, or None for success."""
    left = set(FAULTS[leaf]) - {cls for bit, cls in IGNORES.items() if flags & bit}
    if flags & 0x01 and leaf in CRL_FAULTS:
        left.add(CRL_FAULTS[leaf])
    return next((c for c in PRECEDENCE if c in left), None)


def flag_text(flags):
    return f"0x{flags:02X} " + ("|".join(n for b, n in FLAG_NAMES.items() if flags & b) or "(none)")


# ---- fixture -------------------------------------------------------------------------

def mkcerts_path():
    p = os.environ.get("MKCERTS") or os.path.join(HERE, "..", "..", "scripts", "mkcerts")
    return os.path.abspath(p)


class TlsOrigin(Origin):
    """Origin plus the test PKI: o.pki(NAME) is a file of the PKI, o.leaf_url(LEAF, PATH)
    the URL of PATH on LEAF's HTTPS server, o.crl_url(NAME) the URL the certificates name,
    o.serve_crl(NAME, SRC) replaces what /crl/NAME answers."""

    def __init__(self, files=None):
        super().__init__(files=files or {"f.bin": F_SIZE, "g.bin": F_SIZE, "h.bin": F_SIZE},
                         locations="location /crl/ { alias @DIR@/crl/; }",
                         http_extra=self._leaf_servers, extra_ports=len(LEAVES),
                         before_start=self._make_pki)

    def pki(self, name):
        return self.path("pki", name)

    @property
    def root_ca(self):
        return self.pki("root.pem")

    def leaf_port(self, leaf):
        return self.extra_ports[LEAVES.index(leaf)]

    def leaf_url(self, leaf, path):
        return f"https://127.0.0.1:{self.leaf_port(leaf)}{path}"

    def crl_url(self, name):
        return f"{self.base}/crl/{name}"

    def serve_crl(self, name, src):
        """/crl/NAME answers the bytes of SRC from now on (temp file + rename)."""
        dst = self.path("crl", name)
        shutil.copyfile(src, dst + ".new")
        os.chmod(dst + ".new", 0o644)
        os.rename(dst + ".new", dst)

    def _make_pki(self, o):
        d = self.path("pki")
        r = subprocess.run([mkcerts_path(), d, f"{self.base}/crl"], capture_output=True, text=True)
        if r.returncode != 0:
            raise OriginError(f"mkcerts failed ({r.returncode}): {r.stdout}{r.stderr}")
        os.makedirs(self.path("crl"), mode=0o755, exist_ok=True)
        os.chmod(self.path("crl"), 0o755)
        for name in ("inter.crl", "inter2.crl", "root.crl"):
            self.serve_crl(name, self.pki(name))

    def _leaf_servers(self, o):
        out = []
        for leaf in LEAVES:
            out.append(f"""    server {{
        listen 127.0.0.1:{self.leaf_port(leaf)} ssl;
        server_name leaf-{leaf};
        ssl_certificate {self.pki(leaf + '.pem')};
        ssl_certificate_key {self.pki(leaf + '.key')};
        root {self.dir}/www;
        location /files/ {{ }}
    }}""")
        return "\n".join(out)


def started(bg, o):
    bg.t.origins.append(o)
    return o, bg.t


def agent_for(bg, o, home):
    return Bgcopy(bg.exe, o.path(home))


# ---- the matrix ----------------------------------------------------------------------

def check_combination(o, leaf, r, out, cls):
    """Compares one get against the rule. Returns (ok, got_summary, problems)."""
    problems = []
    doc = r.doc if isinstance(r.doc, dict) else None
    state = field(doc, "state")
    code = field(doc, "error", "code")
    got = f"exit {r.rc}, {_show(state)}" + (f", {code} {field(doc, 'error', 'symbol')}" if code not in (ABSENT, None) else "")
    if doc is None:
        problems.append(f"--json printed no job document: stdout {r.out[:200]!r}")
    if cls is None:
        want_sha = o.sha("f.bin")
        if r.rc != 0:
            problems.append(f"exit status {r.rc}, expected 0")
        if state != "TRANSFERRED":
            problems.append(f"state {_show(state)}, expected 'TRANSFERRED'")
        if field(doc, "error") is not None:
            problems.append(f"error {_show(field(doc, 'error'))}, expected null")
        if field(doc, "files", 0, "sha256") != want_sha:
            problems.append(f"files[0].sha256 {_show(field(doc, 'files', 0, 'sha256'))}, expected {want_sha}")
        file_sha = sha256_file(out) if os.path.exists(out) else ABSENT
        if file_sha != want_sha:
            problems.append(f"SHA-256 of the output {_show(file_sha)}, expected {want_sha}")
        return not problems, got, problems
    want_code, want_sym = CODES[cls]
    if r.rc != 1:
        problems.append(f"exit status {r.rc}, expected 1")
    if state != "ERROR":
        problems.append(f"state {_show(state)}, expected 'ERROR'")
    if code != want_code:
        problems.append(f"error.code {_show(code)}, expected {want_code!r}")
    sym = field(doc, "error", "symbol")
    if sym != want_sym:
        problems.append(f"error.symbol {_show(sym)}, expected {want_sym!r}")
    msg = field(doc, "error", "message")
    msg = msg if isinstance(msg, str) else ""
    if cls != "REVFAILED":
        cns = (f"{leaf}.leaf.bgcopy.test",) + CA_CNS
        if not re.search(r"CN\s*=\s*(" + "|".join(re.escape(c) for c in cns) + ")", msg):
            problems.append(f"error.message names no certificate subject (CN=...): {msg!r}")
    if cls == "DATE":
        word = "not yet valid" if leaf == "notyet" else "expired"
        if word not in msg.lower():
            problems.append(f"error.message does not say {word!r}: {msg!r}")
    if want_code.lower() not in r.err.lower():
        problems.append(f"stderr does not name {want_code}: {r.err.strip()[:300]!r}")
    if os.path.exists(out):
        problems.append("the output file exists")
    left = listing(os.path.dirname(out))
    if left not in ([], ABSENT):
        problems.append(f"output folder not empty: {left!r}")
    return not problems, got, problems


def make_matrix_case(leaf):
    def run(bg):
        with TlsOrigin() as o:
            o, t = started(bg, o)
            url = o.leaf_url(leaf, "/files/f.bin")
            print(f"checks: get {url} (leaf '{leaf}', faults {sorted(FAULTS[leaf]) or '{}'}) under "
                  f"all 32 combinations of flags 0x01..0x10; one fresh --home per combination")
            timeouts = 0
            for flags in range(32):
                cls = expected_class(leaf, flags)
                want = "exit 0, TRANSFERRED" if cls is None else f"exit 1, ERROR, {' '.join(CODES[cls])}"
                if timeouts >= 3:
                    t.ok(f"{flag_text(flags)}: not run (3 gets timed out already)", False)
                    continue
                agent = agent_for(bg, o, f"home-{flags:02x}")
                out = o.path("out", f"{flags:02x}", "f.bin")
                os.makedirs(os.path.dirname(out), exist_ok=True)
                r = agent.get(url, out, flags=f"0x{flags:02X}", extra=["--ca-file", o.root_ca], timeout=20)
                if r.rc == "TIMEOUT":
                    timeouts += 1
                good, got, problems = check_combination(o, leaf, r, out, cls)
                if good:
                    t.ok(f"{flag_text(flags)}: expected {want}; got {got}", True)
                else:
                    t.results.append(r)
                    detail = "\n          ".join(
                        problems + [f"message: {field(r.doc, 'error', 'message')!r}",
                                    f"stderr:  {r.err.strip()[:400]!r}",
                                    f"argv:    {' '.join(r.argv)}"])
                    t.ok(f"{flag_text(flags)}: expected {want}; got {got}", False, detail)
            crl = [x["uri"] for x in o.log() if x["server"] == "main"]
            t.note(f"CRL requests over the 32 gets: {len(crl)} "
                   f"({', '.join(sorted(set(crl)))})" if crl else "no CRL requests")
    return run


for _leaf in LEAVES:
    case(f"tls_matrix_{_leaf}")(make_matrix_case(_leaf))


# ---- CRL cache -----------------------------------------------------------------------

def expect_transferred(t, r, o, out, name):
    t.eq(f"get {name}: exit status", r.rc, 0)
    t.eq(f"get {name}: state", field(r.doc, "state"), "TRANSFERRED")
    t.eq(f"get {name}: error", field(r.doc, "error"), None)
    got = sha256_file(out) if os.path.exists(out) else ABSENT
    t.eq(f"get {name}: SHA-256 of the output", got, o.sha(name))


def crl_counts(o, wait_for=None):
    """{name: requests} for inter.crl, root.crl and missing.crl; first waits (briefly) until
    WAIT_FOR = {name: n} is reached, since nginx logs a request only when it ends."""
    for name, n in (wait_for or {}).items():
        o.wait_requests(f"/crl/{name}", n, timeout=3)
    return {n: len(o.requests(f"/crl/{n}")) for n in ("inter.crl", "root.crl", "missing.crl")}


def crl_entries(doc):
    """The entries of `crl list --json`: a list of objects (or {"crls": [...]})."""
    if isinstance(doc, dict) and isinstance(doc.get("crls"), list):
        return doc["crls"]
    return doc


def check_crl_list(t, agent, o, want_urls):
    s = t.ran(agent.run("crl", "list", "--json"))
    t.eq("crl list --json: exit status", s.rc, 0)
    entries = crl_entries(s.doc)
    if not t.ok("crl list --json prints a JSON list of objects",
                isinstance(entries, list) and all(isinstance(e, dict) for e in entries),
                f"stdout: {s.out[:300]!r}"):
        return
    t.eq("crl list: urls", sorted(e.get("url") for e in entries), sorted(want_urls))
    for e in entries:
        t.ok(f"crl list: {e.get('url')} has next_update ({e.get('next_update', '(absent)')!r})",
             "next_update" in e, f"entry: {e!r}")


def get_file(t, agent, o, name, flags=0x01, leaf="good"):
    out = o.path("out", agent.home.rsplit("/", 1)[-1], name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    r = t.ran(agent.get(o.leaf_url(leaf, f"/files/{name}"), out, flags=f"0x{flags:02X}",
                        extra=["--ca-file", o.root_ca], timeout=30))
    return r, out


@case("tls_crl_cached_not_refetched")
def _(bg):
    """two gets with crl-check against 'good' (same --home, two files) fetch inter.crl and root.crl
    once each; crl list shows both; crl clear empties it; a third get fetches both again"""
    with TlsOrigin() as o:
        o, t = started(bg, o)
        agent = agent_for(bg, o, "home")
        inter, root = o.crl_url("inter.crl"), o.crl_url("root.crl")
        r, out = get_file(t, agent, o, "f.bin")
        expect_transferred(t, r, o, out, "f.bin")
        t.eq("CRL requests after the first get", crl_counts(o, {"inter.crl": 1, "root.crl": 1}),
             {"inter.crl": 1, "root.crl": 1, "missing.crl": 0})
        r, out = get_file(t, agent, o, "g.bin")
        expect_transferred(t, r, o, out, "g.bin")
        o.wait_requests("/files/g.bin", 1, timeout=3)
        t.eq("the HTTPS server served both files (both gets verified a connection)",
             sorted(x["uri"] for x in o.log() if x["server"] != "main" and x["status"] == 200),
             ["/files/f.bin", "/files/g.bin"])
        t.eq("CRL requests after the second get (cached CRLs used)", crl_counts(o),
             {"inter.crl": 1, "root.crl": 1, "missing.crl": 0})
        check_crl_list(t, agent, o, [inter, root])
        s = t.ran(agent.run("crl", "clear"))
        t.eq("crl clear: exit status", s.rc, 0)
        s = t.ran(agent.run("crl", "list", "--json"))
        t.eq("crl list --json after clear: exit status", s.rc, 0)
        t.eq("crl list --json after clear", crl_entries(s.doc), [])
        r, out = get_file(t, agent, o, "h.bin")
        expect_transferred(t, r, o, out, "h.bin")
        t.eq("CRL requests after the third get (fetched again after clear)",
             crl_counts(o, {"inter.crl": 2, "root.crl": 2}),
             {"inter.crl": 2, "root.crl": 2, "missing.crl": 0})


@case("tls_crl_fetched_by_concurrent_gets_in_one_home")
def _(bg):
    with TlsOrigin() as o:
        o, t = started(bg, o)
        agent = agent_for(bg, o, "home")
        rounds = 8
        print(f"checks: {rounds} rounds of two gets with crl-check started together on one home "
              "(each round after crl clear, so both download the same two CRLs at once): every "
              "get succeeds; the fetches never write into or rename each other's file")
        results = []
        for i in range(rounds):
            t.eq(f"round {i}: crl clear", agent.run("crl", "clear").rc, 0)
            procs = []
            for name in ("f.bin", "g.bin"):
                out = o.path("out", f"r{i}-{name}")
                argv = agent.argv(*Bgcopy.get_args(o.leaf_url("good", f"/files/{name}"), out,
                                                   flags="crl-check", extra=["--ca-file", o.root_ca]))
                procs.append((name, out, subprocess.Popen(argv, stdout=subprocess.PIPE,
                                                          stderr=subprocess.PIPE, text=True,
                                                          env=agent.env())))
            for name, out, p in procs:
                so, se = p.communicate(timeout=60)
                results.append((i, name, p.returncode, se.strip()[-200:]))
                t.ok(f"round {i} {name}: exit 0, right bytes",
                     p.returncode == 0 and sha256_file(out) == o.sha(name), f"exit {p.returncode}: {se.strip()[-300:]!r}")
        t.eq("gets that failed", [r for r in results if r[2] != 0], [])


@case("tls_crl_expired_refetched")
def _(bg):
    """/crl/inter.crl serves a CRL past its nextUpdate: get 'good' with crl-check fails with
    0x80072F19; once a current CRL is served, the next get downloads it (the cached expired one
    is not used) and succeeds"""
    with TlsOrigin() as o:
        o, t = started(bg, o)
        agent = agent_for(bg, o, "home")
        o.serve_crl("inter.crl", o.pki("inter-expired.crl"))
        r, out = get_file(t, agent, o, "f.bin")
        t.eq("get f.bin: exit status", r.rc, 1)
        t.eq("get f.bin: state", field(r.doc, "state"), "ERROR")
        t.eq("get f.bin: error.code", field(r.doc, "error", "code"), "0x80072F19")
        t.eq("get f.bin: error.symbol", field(r.doc, "error", "symbol"),
             "ERROR_WINHTTP_SECURE_CERT_REV_FAILED")
        t.note(f"error.message: {field(r.doc, 'error', 'message')!r}")
        t.eq("get f.bin: output file exists", os.path.exists(out), False)
        t.eq("/crl/inter.crl requests after the first get",
             crl_counts(o, {"inter.crl": 1})["inter.crl"], 1)
        o.serve_crl("inter.crl", o.pki("inter.crl"))
        r, out = get_file(t, agent, o, "g.bin")
        expect_transferred(t, r, o, out, "g.bin")
        t.eq("/crl/inter.crl requests after the second get",
             crl_counts(o, {"inter.crl": 2})["inter.crl"], 2)


@case("tls_crl_refresh_redownloads")
def _(bg):
    """after a get with crl-check, `crl refresh` exits 0 and downloads each cached CRL again"""
    with TlsOrigin() as o:
        o, t = started(bg, o)
        agent = agent_for(bg, o, "home")
        r, out = get_file(t, agent, o, "f.bin")
        expect_transferred(t, r, o, out, "f.bin")
        t.eq("CRL requests after the get", crl_counts(o, {"inter.crl": 1, "root.crl": 1}),
             {"inter.crl": 1, "root.crl": 1, "missing.crl": 0})
        s = t.ran(agent.run("crl", "refresh"))
        t.eq("crl refresh: exit status", s.rc, 0)
        t.eq("CRL requests after crl refresh", crl_counts(o, {"inter.crl": 2, "root.crl": 2}),
             {"inter.crl": 2, "root.crl": 2, "missing.crl": 0})
        check_crl_list(t, agent, o, [o.crl_url("inter.crl"), o.crl_url("root.crl")])


# ---- no reuse of a lenient verification by a strict transfer ---------------------------

@case("tls_strict_after_lenient_same_process_not_reused")
def _(bg):
    """one origin client fetches a URL twice, lenient flags then strict ones; the second transfer
    is verified anew (no TLS session or connection reuse across flag sets)"""
    exe = os.environ.get("TLS_REUSE", "")
    t = bg.t
    if not t.ok(f"TLS_REUSE names the tls_reuse program ({exe!r})", exe and os.access(exe, os.X_OK)):
        return
    with TlsOrigin() as o:
        o, t = started(bg, o)
        for leaf, f1, f2, want in (("untrustedroot", 0x08, 0x00, ["0x00000000", "0x80072F0D"]),
                                   ("wronghost", 0x02, 0x00, ["0x00000000", "0x80072F06"]),
                                   ("good", 0x00, 0x00, ["0x00000000", "0x00000000"])):
            argv = [exe, o.root_ca, o.leaf_url(leaf, "/files/f.bin"), f"0x{f1:02X}", f"0x{f2:02X}"]
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                rc, so, se = p.returncode, p.stdout, p.stderr
            except subprocess.TimeoutExpired:
                rc, so, se = "TIMEOUT", "", "(killed after 60s)"
            # One line per fetch, "hr=0x%08X" first (tls_reuse may add details after it).
            got = re.findall(r"^hr=(0x[0-9A-Fa-f]{8})\b", so, re.M)
            got = [g[:2] + g[2:].upper() for g in got]
            t.ok(f"{leaf}: flags 0x{f1:02X} then 0x{f2:02X}: expected {' '.join(want)}; got {' '.join(got) or '(none)'}",
                 got == want,
                 f"$ {' '.join(argv)}\n          exit {rc}\n          stdout: {so.strip()!r}\n          stderr: {se.strip()[:500]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
