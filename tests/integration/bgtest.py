"""The integration-test library: what every case script (test_*.py) imports.

- the case registry and the command line: `CASES, case = case_registry()`, `@case(NAME)`,
  `main(sys.argv, CASES, __doc__)` (SCRIPT --list, SCRIPT CASE, SCRIPT --all), SKIPPED;
- Checker (t.ok, t.eq, t.note, t.ran; on failure the commands run and the origins' access
  logs are printed) and Run (what a case function gets: bg.exe, bg.t);
- Bgcopy and Result: bgcopy with a private --home, in the foreground, the background or on
  a terminal; `started(bg, origin)` registers an origin and gives (origin, Bgcopy, Checker);
  `ran` adds the checks every hostile run gets (own exit, no sanitizer report);
- the shared expectations of a get (expect_transferred, expect_error, store) and of a get
  in the background (wait_partial, stop_background, background_result);
- Peerd (bgcopy-peerd on a home, a context manager) with q, sign, repr_digest, store_file,
  origin_validators;
- Daemon (the job service, a context manager) with cmd, new_job, info, poll_state,
  complete_and_check.

Server helpers stay in their own modules: origin.py (nginx), lighttpd_origin.py, hostile.py,
proxies.py. Python 3.11 standard library only."""

import base64
import glob
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from origin import MiB, sha256_bytes, sha256_file  # noqa: E402


# ---- the case registry, the checker and the command line ---------------------------------

ABSENT = object()         # "this key is missing" in job documents


SKIPPED = 77  # a case returns it when this machine cannot run it (ctest: SKIP_RETURN_CODE)


def case_registry():
    """(CASES, case): an empty {name: function} table and the decorator that fills it; every
    case script makes its own."""
    cases = {}

    def case(name):
        def deco(fn):
            assert name not in cases, name
            cases[name] = fn
            return fn
        return deco
    return cases, case


class Checker:
    """Collects checks of one case; prints each; remembers context to dump on failure."""

    def __init__(self, name):
        self.name = name
        self.failed = 0
        self.results = []
        self.origins = []

    def ok(self, what, cond, detail=""):
        if cond:
            print(f"  ok    {what}", flush=True)
        else:
            self.failed += 1
            print(f"  FAIL  {what}" + (f"\n          {detail}" if detail else ""), flush=True)
        return bool(cond)

    def eq(self, what, got, want):
        if got == want:
            print(f"  ok    {what}: {_show(got)}", flush=True)
            return True
        self.failed += 1
        print(f"  FAIL  {what}\n          expected: {_show(want)}\n          got:      {_show(got)}", flush=True)
        return False

    def note(self, text):
        print(f"  note  {text}", flush=True)

    def ran(self, result):
        """Registers a bgcopy Result (shown on failure) and returns it."""
        self.results.append(result)
        print(f"  ran   {' '.join(result.argv[1:])}  -> exit {result.rc} ({result.elapsed:.2f}s)", flush=True)
        return result

    def dump(self):
        for r in self.results:
            print(r.describe())
        for o in self.origins:
            print(f"access log of {o.base}" + (f" / {o.base2}" if o.base2 else "")
                  + (f" / {o.tls_base}" if o.tls_base else "") + ":")
            print(o.format_log())


def _show(v):
    if v is ABSENT:
        return "(absent)"
    return repr(v)


class Run:
    """What a case function gets: the bgcopy path and the checker."""

    def __init__(self, exe, t):
        self.exe, self.t = exe, t


def run_case(name, exe, cases):
    """Runs one case: True when it passed, False when it failed, SKIPPED."""
    t = Checker(name)
    print(f"== {name}", flush=True)
    if cases[name].__doc__:  # what the case checks, in a word: its docstring
        print("checks: " + " ".join(cases[name].__doc__.split()), flush=True)
    try:
        if cases[name](Run(exe, t)) == SKIPPED and not t.failed:
            print(f"== {name}: skipped", flush=True)
            return SKIPPED
    except Exception as e:  # a crash in the case is a failure with its traceback
        traceback.print_exc()
        t.failed += 1
        print(f"  FAIL  case raised {type(e).__name__}: {e}")
    if t.failed:
        print(f"-- context for {name}:")
        t.dump()
        print(f"== {name}: FAILED ({t.failed} check(s))", flush=True)
    else:
        print(f"== {name}: passed", flush=True)
    return t.failed == 0


def main(argv, cases, doc=None, needs_exe=True):
    """The command line of a case script: its CASES by name. NEEDS_EXE: a bgcopy binary
    must be given (BGCOPY or the last argument); otherwise bg.exe may be empty."""

    def _term(signum, frame):
        raise SystemExit(f"terminated by signal {signum}")
    signal.signal(signal.SIGTERM, _term)
    # Hermetic: no bgcopy.conf of this machine or user (/etc/bgcopy, ~/.config) reaches a
    # child. A case that wants a config file names it for its own runs (Bgcopy env_extra,
    # Peerd env_extra).
    os.environ["BGCOPY_CONFIG"] = ""

    if len(argv) >= 2 and argv[1] == "--list":
        print("\n".join(cases))
        return 0
    if len(argv) < 2 or len(argv) > 3:
        print(doc or __doc__, file=sys.stderr)
        return 2
    exe = argv[2] if len(argv) == 3 else os.environ.get("BGCOPY", "")
    if needs_exe:
        if not exe or not os.access(exe, os.X_OK):
            print(f"bgcopy binary not found or not executable: {exe!r} (set BGCOPY or pass it)", file=sys.stderr)
            return 2
        exe = os.path.abspath(exe)
    if argv[1] == "--all":
        failed = [n for n in cases if run_case(n, exe, cases) is False]
        print(f"{len(cases) - len(failed)} passed, {len(failed)} failed" + (": " + " ".join(failed) if failed else ""))
        return 1 if failed else 0
    if argv[1] not in cases:
        print(f"unknown case {argv[1]!r}; --list shows the names", file=sys.stderr)
        return 2
    res = run_case(argv[1], exe, cases)
    return SKIPPED if res == SKIPPED else 0 if res else 1


# ---- job documents and output folders ----------------------------------------------------

def field(doc, *path):
    """doc[path[0]][path[1]]..., or ABSENT."""
    cur = doc
    for p in path:
        try:
            cur = cur[p]
        except (TypeError, KeyError, IndexError):
            return ABSENT
    return cur


def listing(d):
    try:
        return sorted(os.listdir(d))
    except FileNotFoundError:
        return ABSENT


def partials(d, name):
    return sorted(glob.glob(os.path.join(d, f".{name}.bgcopy-*.part")))


# ---- running bgcopy ----------------------------------------------------------------------

class Result:
    def __init__(self, argv, rc, out, err, elapsed):
        self.argv, self.rc, self.out, self.err, self.elapsed = argv, rc, out, err, elapsed
        try:
            self.doc = json.loads(out) if out.strip() else None
        except ValueError:
            self.doc = None

    def file0(self):
        """files[0] of the job document, or {} when there is none."""
        try:
            return self.doc["files"][0] or {}
        except (TypeError, KeyError, IndexError):
            return {}

    def error(self):
        try:
            return self.doc.get("error") or {}
        except AttributeError:
            return {}

    def describe(self):
        cmd = " ".join(_shell_quote(a) for a in self.argv)
        return (f"$ {cmd}\n  exit {self.rc} after {self.elapsed:.2f}s\n"
                f"  stdout: {_clip(self.out)}\n  stderr: {_clip(self.err)}")


def _clip(s, n=3000):
    s = s.rstrip()
    if not s:
        return "(empty)"
    s = s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"
    return s.replace("\n", "\n          ")


def _shell_quote(a):
    return a if re.fullmatch(r"[\w@%+=:,./|-]+", a) else "'" + a.replace("'", "'\\''") + "'"


class Bgcopy:
    """Runs the bgcopy binary with a private --home."""

    def __init__(self, exe, home, ca_file=None, env_extra=None):
        self.exe = exe
        self.home = home
        self.ca_file = ca_file
        self.env_extra = dict(env_extra or {})  # e.g. {"BGCOPY_CONFIG": path}; None unsets

    def argv(self, *args, global_args=()):
        return [self.exe, "--home", self.home, *global_args, *args]

    def run(self, *args, timeout=60, global_args=(), cwd=None):
        argv = self.argv(*args, global_args=global_args)
        t0 = time.monotonic()
        try:
            # errors="replace": a bad byte in the output is a finding to show, not a crash.
            p = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                               stdin=subprocess.DEVNULL, env=self.env(), cwd=cwd)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc = "TIMEOUT"
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            err += f"\n(killed after {timeout}s)"
        return Result(argv, rc, out, err, time.monotonic() - t0)

    @staticmethod
    def get_args(url, out, flags=None, extra=(), json_out=True):
        args = ["get"]
        if json_out:
            args.append("--json")
        if flags is not None:
            args += ["--security-flags", str(flags)]
        args += list(extra)
        args.append(url)
        if out is not None:
            args += ["-o", out]
        return args

    def get(self, url, out, flags=None, extra=(), json_out=True, timeout=60):
        return self.run(*self.get_args(url, out, flags, extra, json_out), timeout=timeout)

    def popen_get(self, url, out, flags=None, extra=(), json_out=False, log_prefix=None):
        """Starts a get in the background; its stdout/stderr go to LOG_PREFIX.out/.err."""
        argv = self.argv(*self.get_args(url, out, flags, extra, json_out))
        so = open(log_prefix + ".out", "wb") if log_prefix else subprocess.DEVNULL
        se = open(log_prefix + ".err", "wb") if log_prefix else subprocess.DEVNULL
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=so, stderr=se, env=self.env())
        finally:
            if log_prefix:
                so.close()
                se.close()

    def run_on_terminal(self, *args, timeout=60, global_args=()):
        """Runs a command with stdout and stderr on a pseudo-terminal (raw mode: the bytes
        the program wrote, no \\n -> \\r\\n translation). Returns a Result whose `out` holds
        everything read from the terminal (both streams, interleaved) and `err` is empty."""
        import pty
        import select
        import tty
        argv = self.argv(*args, global_args=global_args)
        master, slave = pty.openpty()
        tty.setraw(slave)
        chunks = []
        t0 = time.monotonic()
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                 env=self.env())
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        os.close(slave)  # the child holds the only other end: EOF (EIO) when it exits
        deadline = t0 + timeout
        rc = None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    p.kill()
                    p.wait()
                    rc = "TIMEOUT"
                    chunks.append(f"\n(killed after {timeout}s)".encode())
                    break
                ready, _, _ = select.select([master], [], [], min(left, 1.0))
                if not ready:
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave fd is closed
                    data = b""
                if not data:
                    break
                chunks.append(data)
            if rc is None:
                rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            os.close(master)
            if p.poll() is None:
                p.kill()
                p.wait()
        return Result(argv, rc, b"".join(chunks).decode(errors="replace"), "",
                      time.monotonic() - t0)

    def env(self):
        """The environment of bgcopy commands: the test's own without BGCOPY_HOME and
        without proxy variables (every request goes to loopback; a case that wants a proxy
        sets one), and with no bgcopy.conf (BGCOPY_CONFIG empty) unless env_extra names one."""
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        env.pop("BGCOPY_HOME", None)
        env.setdefault("BGCOPY_CONFIG", "")
        for k, v in self.env_extra.items():  # None: the variable unset
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def json(self, *args, timeout=60):
        """Runs a command that prints JSON; returns (Result, parsed or None)."""
        r = self.run(*args, timeout=timeout)
        return r, r.doc


def started(bg, h):
    bg.t.origins.append(h)
    return h, Bgcopy(bg.exe, h.path("home")), bg.t


SANITIZER = re.compile(r"ERROR: \w+Sanitizer|runtime error:|SUMMARY: \w+Sanitizer|LeakSanitizer")


def ran(t, r):
    """Registers a bgcopy Result and checks that it ended by itself with an exit status (not
    a signal, not our timeout) and printed no sanitizer report."""
    t.ran(r)
    t.ok(f"ended by itself with an exit status (got {r.rc})", isinstance(r.rc, int) and r.rc >= 0)
    m = SANITIZER.search(r.err)
    t.ok("no sanitizer report on stderr", m is None, f"stderr: {r.err[max(0, m.start() - 200):][:1500]!r}"
         if m else "")
    return r


# ---- shared expectations -----------------------------------------------------------------

def expect_transferred(t, r, out, want_sha, size=None, remote_url=ABSENT, cache_key=ABSENT, json_doc=True):
    """Exit 0, TRANSFERRED, file written with WANT_SHA, nothing else in the output folder."""
    t.eq("exit status", r.rc, 0)
    if json_doc:
        t.ok("--json printed a job document on stdout", isinstance(r.doc, dict), f"stdout: {r.out[:300]!r}")
        t.eq("state", field(r.doc, "state"), "TRANSFERRED")
        t.eq("error", field(r.doc, "error"), None)
        if remote_url is not ABSENT:
            t.eq("files[0].remote_url", field(r.doc, "files", 0, "remote_url"), remote_url)
        if cache_key is not ABSENT:
            t.eq("files[0].cache_key", field(r.doc, "files", 0, "cache_key"), cache_key)
        t.eq("files[0].sha256", field(r.doc, "files", 0, "sha256"), want_sha)
        t.eq("files[0].done", field(r.doc, "files", 0, "done"), True)
        t.eq("files_transferred / files_total", (field(r.doc, "files_transferred"),
                                                 field(r.doc, "files_total")), (1, 1))
        if "get" in r.argv:
            t.eq("priority of a get's job", field(r.doc, "priority"), "foreground")
        if size is not None:
            t.eq("files[0].bytes_transferred", field(r.doc, "files", 0, "bytes_transferred"), size)
            t.eq("files[0].bytes_total", field(r.doc, "files", 0, "bytes_total"), size)
            t.eq("bytes_transferred / bytes_total", (field(r.doc, "bytes_transferred"),
                                                     field(r.doc, "bytes_total")), (size, size))
    got = sha256_file(out) if os.path.exists(out) else ABSENT
    t.eq(f"SHA-256 of output {os.path.basename(out)}", got, want_sha)
    t.eq("output folder holds only the output file", listing(os.path.dirname(out)), [os.path.basename(out)])


def expect_error(t, r, out, code, symbol=None, remote_url=ABSENT, allow_partial=False):
    """Exit 1, ERROR with CODE, no output file, nothing left in the output folder."""
    t.eq("exit status", r.rc, 1)
    t.ok("--json printed a job document on stdout (also on ERROR)", isinstance(r.doc, dict),
         f"stdout: {r.out[:300]!r}")
    t.eq("state", field(r.doc, "state"), "ERROR")
    t.eq("error.code", field(r.doc, "error", "code"), code)
    if symbol is not None:
        t.eq("error.symbol", field(r.doc, "error", "symbol"), symbol)
    if remote_url is not ABSENT:
        t.eq("files[0].remote_url", field(r.doc, "files", 0, "remote_url"), remote_url)
    t.ok("stderr names the HRESULT", code.lower() in r.err.lower(), f"stderr: {r.err.strip()[:300]!r}")
    if symbol is not None:
        t.ok("stderr names the symbol", symbol in r.err, f"stderr: {r.err.strip()[:300]!r}")
    t.eq("output file exists", os.path.exists(out), False)
    left = listing(os.path.dirname(out))
    if allow_partial and left is not ABSENT:
        left = [x for x in left if not (x.startswith(f".{os.path.basename(out)}.bgcopy-") and x.endswith(".part"))]
    t.eq("output folder left empty", left, [])


def store(t, agent, want):
    """The store holds exactly the keys of WANT ({url: content bytes}) with their SHA-256 and
    size, and `cache verify` finds nothing wrong."""
    s = ran(t, agent.run("cache", "list", "--json"))
    t.eq("cache list --json: exit", s.rc, 0)
    entries = {e.get("url"): e for e in (s.doc or []) if isinstance(e, dict)} if isinstance(s.doc, list) else {}
    t.eq("store keys (cache list --json)", sorted(entries), sorted(want))
    for url, data in want.items():
        t.eq(f"store entry {url}: (sha256, size)", (field(entries, url, "sha256"), field(entries, url, "size")),
             (sha256_bytes(data), len(data)))
    v = ran(t, agent.run("cache", "verify", "--json"))
    t.eq("cache verify --json: (exit, corrupt, keys_removed)",
         (v.rc, field(v.doc, "corrupt"), field(v.doc, "keys_removed")), (0, 0, 0))


# ---- a get in the background -------------------------------------------------------------

def wait_partial(t, o, p, out, log_name, at_least, timeout=30):
    """Polls the partial file of OUT (.NAME.bgcopy-*.part) until it holds AT_LEAST bytes while
    P, a background get whose output went to LOG_NAME.out/.err, runs. Returns the size seen,
    or None after a failed check (P exited first, or TIMEOUT seconds passed)."""
    outdir, name = os.path.dirname(out), os.path.basename(out)
    want = f"{at_least / MiB:g} MiB" if at_least >= MiB else f"{at_least} byte(s)"
    deadline = time.monotonic() + timeout
    size = 0
    while True:
        parts = partials(outdir, name)
        size = max((os.path.getsize(x) for x in parts if os.path.exists(x)), default=0)
        if size >= at_least:
            return size
        if p.poll() is not None:
            t.ok(f"{log_name} still running when the partial reached {want}", False,
                 f"it exited with {p.returncode} with partial size {size}; folder: {listing(outdir)}; "
                 f"stderr: {open(o.path(log_name + '.err'), errors='replace').read()[-500:]!r}")
            return None
        if time.monotonic() > deadline:
            t.ok(f"partial file .NAME.bgcopy-*.part grew past {want} within {timeout} s", False,
                 f"folder: {listing(outdir)}, largest partial {size}")
            return None
        time.sleep(0.02)


def stop_background(p):
    """SIGKILLs a background get if it still runs, and reaps it."""
    if p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()


def background_result(p, o, log_name, t0):
    """The Result of a finished background get whose output went to LOG_NAME.out/.err."""
    def read(ext):
        try:
            with open(o.path(log_name + ext), errors="replace") as f:
                return f.read()
        except OSError:
            return ""
    return Result(list(p.args), p.returncode, read(".out"), read(".err"), time.monotonic() - t0)


def interrupted_get(t, o, agent, url, out, at_least, then, json_out=False):
    """Starts `get URL -o OUT` in the background (its output to first-get.out/.err in the
    origin's dir); once its partial holds AT_LEAST bytes calls THEN(process, partial size);
    then SIGKILLs it if it still runs. Returns (its registered Result, what THEN returned),
    or None after a failed check (it ended, or the partial did not grow, first)."""
    t0 = time.monotonic()
    p = agent.popen_get(url, out, json_out=json_out, log_prefix=o.path("first-get"))
    try:
        size = wait_partial(t, o, p, out, "first-get", at_least)
        if size is None:
            return None
        got = then(p, size)
    finally:
        stop_background(p)
    return t.ran(background_result(p, o, "first-get", t0)), got


# ---- bgcopy-peerd ------------------------------------------------------------------------

def peerd_exe(bg):
    exe = os.environ.get("BGCOPY_PEERD") or os.path.join(os.path.dirname(bg.exe), "bgcopy-peerd")
    if not os.access(exe, os.X_OK):
        raise RuntimeError(f"bgcopy-peerd not found or not executable: {exe!r} (set BGCOPY_PEERD)")
    return exe


def q(key):
    """The url= argument as clients send it: everything but unreserved characters encoded."""
    return "/v1/content?url=" + urllib.parse.quote(key, safe="")


def repr_digest(data):
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def sign(key, method, path, url, t):
    """The X-Bgcopy-Auth value (cache.h): t=T,sig=HMAC-SHA256(key, METHOD\\nPATH\\nURL\\nT)."""
    msg = f"{method}\n{path}\n{url}\n{t}".encode()
    return f"t={t},sig={hmac.new(key, msg, hashlib.sha256).hexdigest()}"


class Reply:
    def __init__(self, status, headers, body, will_close):
        self.status, self.headers, self.body, self.will_close = status, headers, body, will_close

    def h(self, name):
        return self.headers.get(name.lower(), ABSENT)


class Peerd:
    """bgcopy-peerd on a home, port from the kernel via --port-file. A context manager:
    __exit__ stops it (TERM, then KILL after 5 s) whatever happened, and prints its stderr
    when the case has failed checks."""

    def __init__(self, bg, home, *args, workdir, env_extra=None):
        self.exe = peerd_exe(bg)
        self.env_extra = env_extra
        self.t = bg.t
        self.home = home
        self.args = list(args)
        self.workdir = workdir
        self.port_file = os.path.join(workdir, "peerd.port")
        self.err_path = os.path.join(workdir, "peerd.stderr")
        self.proc = None
        self.port = None
        self.rc = None
        self._conn = None

    def __enter__(self):
        # home None: no --home, the home comes from env_extra (BGCOPY_HOME).
        argv = [self.exe, *(["--home", self.home] if self.home is not None else []),
                "--port", "0", "--port-file", self.port_file, *self.args]
        env = dict(os.environ)
        env.setdefault("BGCOPY_CONFIG", "")  # no bgcopy.conf unless env_extra names one
        if self.env_extra is not None:
            env.pop("BGCOPY_HOME", None)
            env.update(self.env_extra)
        print(f"  start {' '.join(argv[1:])}"
              + (f"  (env {self.env_extra})" if self.env_extra else ""), flush=True)
        with open(self.err_path, "wb") as errf:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                         env=env)
        try:
            deadline = time.monotonic() + 15
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"bgcopy-peerd exited with {self.proc.returncode}: {self.stderr()}")
                try:
                    with open(self.port_file) as f:
                        text = f.read()
                    if text.endswith("\n"):
                        self.port = int(text)
                        break
                except FileNotFoundError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no port file after 15 s: {self.stderr()}")
                time.sleep(0.02)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop()
        if exc_type is None:
            # Every case ends with a clean stop; under the sanitizers a report makes the exit
            # status non-zero, and the report is in the log.
            self.t.eq("peerd exit status after SIGTERM", self.rc, 0)
            log = self.stderr()
            self.t.ok("no sanitizer report in peerd's stderr",
                      "Sanitizer" not in log and "runtime error" not in log)
        if self.t.failed or exc_type is not None:
            print(f"-- peerd stderr ({self.err_path}):\n{self.stderr()}")
        return False

    def stderr(self):
        try:
            with open(self.err_path, errors="replace") as f:
                return f.read()[-4000:].strip() or "(empty)"
        except OSError:
            return "(none)"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """TERM; returns the exit status."""
        self._stop()
        return self.rc

    def _stop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.rc = self.proc.returncode
        self.proc = None

    # ---- requests -------------------------------------------------------------
    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, headers=None, keep=False):
        """One request; a fresh connection unless KEEP (then the shared keep-alive one)."""
        if keep:
            if self._conn is None:
                self._conn = self.conn()
            c = self._conn
        else:
            c = self.conn()
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            body = r.read()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, body, r.will_close)
        finally:
            if not keep:
                c.close()

    def metrics(self, headers=None):
        r = self.request("GET", "/metrics", headers)
        out = {}
        if r.status != 200:
            return r, out
        for line in r.body.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = float(value) if "." in value else int(value)
        return r, out

    def rss_anon(self):
        """RssAnon of the process in bytes (from /proc), or None once it is gone."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1]) * 1024
        except (OSError, AttributeError):
            return None
        return None


def store_file(t, agent, o, name, extra=()):
    """`bgcopy get` of /files/NAME into the home: the content is then stored under its URL."""
    url, out = o.url(f"/files/{name}"), o.path("out", name)
    r = t.ran(agent.get(url, out, extra=extra))
    t.eq(f"get {name}: exit status", r.rc, 0)
    return url


def origin_validators(o, name):
    c = http.client.HTTPConnection("127.0.0.1", o.port, timeout=10)
    try:
        c.request("HEAD", f"/files/{name}")
        r = c.getresponse()
        r.read()
        return r.getheader("ETag"), r.getheader("Last-Modified")
    finally:
        c.close()


# ---- the job service ---------------------------------------------------------------------

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


EVENT_LINE = re.compile(r"^bgcopy daemon .*?: job (\S+): (.*)$")


class DaemonLog:
    """What Checker.dump() prints for a daemon: its stderr (kept in memory, since the file
    goes with the origin's temp dir)."""

    def __init__(self, daemon):
        self.daemon = daemon

    def describe(self):
        d = self.daemon
        text = d.text().rstrip() or "(empty)"
        return (f"$ {' '.join(d.argv[1:])}   [{d.label}: started {d.starts} time(s), "
                f"exit statuses {d.exits}]\n  " + text.replace("\n", "\n  "))


class Daemon:
    """`bgcopy --home H [GLOBAL_ARGS] daemon [ARGS]` as a context manager: started on enter
    (unless start=False), stopped on exit even when the case failed: SIGTERM, then SIGKILL
    of its process group after 10 s. stderr and stdout go to LABEL.log in the origin's dir;
    every start appends to it. On exit it checks that the daemon was still running (it did
    not die on its own) and that SIGTERM stopped it with exit status 0."""

    def __init__(self, t, agent, o, *args, global_args=(), label="daemon", start=True):
        self.t, self.agent, self.o = t, agent, o
        self.args, self.global_args, self.label = list(args), list(global_args), label
        self.argv = agent.argv("daemon", *args, global_args=global_args)
        self.log_path = o.path(f"{label}.log")
        self.proc = None
        self.starts = 0
        self.exits = []
        self.kills = 0          # SIGKILLs sent on purpose
        self.died = []          # exit statuses of runs that ended without us asking
        self._text = ""
        self.autostart = start
        t.results.append(DaemonLog(self))

    # ---- lifecycle
    def __enter__(self):
        if self.autostart:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        was_running = self.proc is not None
        rc, forced = self.stop()
        if was_running:
            self.t.ok(f"{self.label} still running at the end of the case (did not die on its own)",
                      not self.died, f"it exited by itself with {self.died}")
            self.t.ok(f"{self.label} stopped by SIGTERM with exit status 0 (got {rc}"
                      f"{', after SIGKILL' if forced else ''})", rc == 0 and not forced)
        return False

    def start(self, wait=True, timeout=15):
        """Starts the daemon; with WAIT, polls its log until it says it runs."""
        self._check_died()
        if self.proc is not None:
            raise RuntimeError(f"{self.label} already running")
        self.starts += 1
        with open(self.log_path, "ab") as f:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                         env=self.agent.env(), start_new_session=True)
        if wait:
            deadline = time.monotonic() + timeout
            while self.text().count(": running (") < self.starts:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.t.ok(f"{self.label} started and logged 'running'", False,
                              f"exit {self.proc.poll()}; log: {self.text()[-1500:]!r}")
                    return False
                time.sleep(0.02)
        return True

    def _check_died(self):
        if self.proc is not None and self.proc.poll() is not None:
            self.died.append(self.proc.returncode)
            self.exits.append(self.proc.returncode)
            self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Sends SIG and waits up to TIMEOUT s; then SIGKILLs the process group. Returns
        (exit status or None when it was not running, whether SIGKILL was needed)."""
        self._check_died()
        if self.proc is None:
            return None, False
        forced = False
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            forced = True
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            rc = self.proc.wait(timeout=10)
        self.exits.append(rc)
        self.proc = None
        self.text()
        return rc, forced

    def kill9(self):
        """SIGKILL now (the daemon only: no clean-up of any kind), and reap it."""
        self._check_died()
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.kills += 1
        self.exits.append(self.proc.returncode)
        self.proc = None

    # ---- the log
    def text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                self._text = f.read()
        except OSError:
            pass
        return self._text

    def events(self, job=None):
        """[(job id, message)] of the 'job ID: MESSAGE' lines, in order."""
        out = []
        for line in self.text().splitlines():
            m = EVENT_LINE.match(line)
            if m and (job is None or m.group(1) == job):
                out.append((m.group(1), m.group(2)))
        return out

    def wait_event(self, job, pattern, timeout, count=1):
        """Polls the log until COUNT lines 'job JOB: ...' match PATTERN (a regex searched in
        the message). Returns whether they came."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            if sum(1 for _, m in self.events(job) if rx.search(m)) >= count:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def cmd(t, agent, *args, rc=0, timeout=60):
    """Runs a bgcopy command, registers it, checks its exit status."""
    r = t.ran(agent.run(*args, timeout=timeout))
    t.eq(f"{args[0]}: exit status", r.rc, rc)
    return r


def new_job(t, agent, files, *create_args):
    """`create ARGS` then `add JOB URL PATH` for each of FILES. Returns the id or None."""
    r = t.ran(agent.run("create", *create_args))
    out = r.out.strip()
    if not t.ok(f"create{''.join(' ' + a for a in create_args)}: exit 0 and a job id ({out!r})",
                r.rc == 0 and GUID.fullmatch(out) is not None, f"exit {r.rc}, stderr {r.err.strip()!r}"):
        return None
    for url, path in files:
        r = t.ran(agent.run("add", out, url, path))
        t.eq(f"add {url}: exit status", r.rc, 0)
    return out


def doc_of(agent, job):
    """The job document (info --json) or None; not registered (used in polls)."""
    r = agent.run("info", job, "--json")
    return r.doc if isinstance(r.doc, dict) else None


def info(t, agent, job):
    r = t.ran(agent.run("info", job, "--json"))
    t.ok(f"info {job[:8]} --json: exit 0 and a job document", r.rc == 0 and isinstance(r.doc, dict),
         f"exit {r.rc}; stdout {r.out[:300]!r}; stderr {r.err.strip()!r}")
    return r.doc if isinstance(r.doc, dict) else None


def poll_state(t, agent, job, states, timeout, label=None):
    """Polls `info JOB --json` until its state is one of STATES (a str or tuple) or TIMEOUT
    seconds passed. Checks it; returns (last document, distinct states seen in order)."""
    states = (states,) if isinstance(states, str) else tuple(states)
    label = label or f"job {job[:8]}"
    deadline = time.monotonic() + timeout
    seen, d = [], None
    while True:
        d = doc_of(agent, job)
        s = field(d, "state")
        if not seen or seen[-1] != s:
            seen.append(s)
        if s in states:
            t.ok(f"{label} reached {s} (states seen: {' -> '.join(map(str, seen))})", True)
            return d, seen
        if time.monotonic() > deadline:
            t.ok(f"{label} reached {' or '.join(states)} within {timeout} s", False,
                 f"states seen: {seen}; last error: {field(d, 'error')!r}")
            return d, seen
        time.sleep(0.1)


def complete_and_check(t, agent, job, outputs):
    """`complete JOB`; then every (path, sha) of OUTPUTS exists with that SHA-256, the job
    is ACKNOWLEDGED and no partial file is left beside the outputs."""
    cmd(t, agent, "complete", job)
    for path, sha in outputs:
        got = sha256_file(path) if os.path.exists(path) else ABSENT
        t.eq(f"SHA-256 of {os.path.basename(path)} after complete", got, sha)
    t.eq("state after complete", field(info(t, agent, job), "state"), "ACKNOWLEDGED")
    left = [os.path.basename(x) for p, _ in outputs for x in partials(os.path.dirname(p), os.path.basename(p))]
    t.eq("partial files of the job left after complete", left, [])
