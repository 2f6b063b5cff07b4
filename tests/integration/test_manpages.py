#!/usr/bin/env python3
"""The manual pages (doc/man) and the --help texts against the code: one source of truth.

What the code accepts is read from the source tree (found from this file's own path):
- bgcopy's long options, per command: the `struct option` tables and the option literals
  ("--json", "--max-size", ...) that agent/cli/*.c compares arguments with, grouped by the
  function they are in and attributed to every command whose function (the command table
  of cli.c) reaches that function by direct calls; agent/cli/main.c's main() gives the
  global options;
- bgcopy's command names: cli.c's command table; the subcommands of cache and crl: the
  names their functions compare `sub` with;
- bgcopy-peerd's long options: the `struct option` table of peerd/main.c;
- the bgcopy.conf keys: cache/config.c's key-name table (and the older names
  bg_config_key_parse accepts);
- the security flags (agent/bits/flags.c, bits.h) and the HRESULTs (agent/bits/bits.h);
- the environment variables: every getenv() of agent/, cache/ and peerd/.

What is documented is read from the pages: a COMMANDS subsection (.SS) per command (or
group of commands) in bgcopy(1), its options as .TP tags; the OPTIONS tags of bgcopy(1) and
bgcopy-peerd(8); the KEYS tags of bgcopy.conf(5); the SECURITY FLAGS, HRESULTS and
ENVIRONMENT tags of bgcopy(1). What --help prints is read from running
$BGCOPY --help and $BGCOPY_PEERD --help.

Every case fails with the names that are missing or stale. Python 3.11 standard library.

Usage: test_manpages.py CASE [PATH/TO/bgcopy]    (or BGCOPY=PATH/TO/bgcopy test_manpages.py CASE)
       test_manpages.py --list                   prints the case names, one a line
       test_manpages.py --all [PATH/TO/bgcopy]   runs every case, prints a summary"""

import os
import re
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgtest import SKIPPED, case_registry, main, peerd_exe  # noqa: E402

CASES, case = case_registry()

SRC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MAN = os.path.join(SRC, "doc", "man")
PAGES = ["bgcopy.1", "bgcopy-peerd.8", "bgcopy.conf.5"]

# Options the one-screen `bgcopy --help` leaves out of a command's lines on purpose, each
# with its reason. Every other option a command accepts must be on its lines.
HELP_LEFT_OUT = {
    ("get", "output"): "shown by its short form, `-o FILE`; --output is the long spelling "
                       "of the same option",
    ("get", "help"): "the usage line at the top names --help once for every command",
    ("config", "help"): "the usage line at the top names --help once for every command",
    ("peers", "help"): "the usage line at the top names --help once for every command",
}
PEERD_HELP_LEFT_OUT = {}


# ---- the source -------------------------------------------------------------------------

def _read(*parts):
    with open(os.path.join(SRC, *parts), encoding="utf-8") as f:
        return f.read()


def _strip_comments(text):
    """C source without its comments (string literals holding "/*" do not occur in the files
    read here)."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


DEF_RE = re.compile(r"^([A-Za-z_]\w*)\(", re.M)  # a definition: the name at column 0 (BSD style)


def c_functions(text):
    """{name: body} of the functions of one C file: each from its name at column 0 to the
    next one (file-scope text between two functions goes with the first)."""
    text = _strip_comments(text)
    marks = [(m.start(), m.group(1)) for m in DEF_RE.finditer(text)]
    out = {}
    for i, (at, name) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        out[name] = out.get(name, "") + text[at:end]
    return out


TABLE_OPT_RE = re.compile(r'\{\s*"([a-z0-9][a-z0-9-]*)"\s*,\s*(?:no|required|optional)_argument')
LITERAL_OPT_RE = re.compile(r'"--([a-z0-9][a-z0-9-]*)=?"')  # a literal that is one option, whole


def options_in(body):
    return set(TABLE_OPT_RE.findall(body)) | set(LITERAL_OPT_RE.findall(body))


def _cli_table():
    """({function: body} of agent/cli/*.c but main.c, [(command, function)] of cli.c's
    command table)."""
    funcs = {}
    for name in sorted(os.listdir(os.path.join(SRC, "agent", "cli"))):
        if name.endswith(".c") and name != "main.c":
            for fn, body in c_functions(_read("agent", "cli", name)).items():
                funcs[fn] = funcs.get(fn, "") + body
    table = re.search(r"\bcommands\[\]\s*=\s*\{(.*?)\n\};", _strip_comments(_read("agent", "cli", "cli.c")),
                      re.S)
    assert table, "the command table of agent/cli/cli.c was not found"
    entries = re.findall(r'\{\s*"([a-z][a-z0-9-]*)"\s*,\s*(\w+)\s*\}', table.group(1))
    assert entries, "the command table of agent/cli/cli.c is empty?"
    return funcs, entries


def cli_source():
    """(commands, per_command, global_opts): the command table's names in order, {command:
    set of long options}, and main()'s global options."""
    funcs, entries = _cli_table()
    calls = {fn: {c for c in re.findall(r"\b([A-Za-z_]\w*)\s*\(", body) if c in funcs and c != fn}
             for fn, body in funcs.items()}

    def reach(fn):
        seen, todo = set(), [fn]
        while todo:
            f = todo.pop()
            if f not in seen:
                seen.add(f)
                todo.extend(calls.get(f, ()))
        return seen

    per = {}
    for name, fn in entries:
        assert fn in funcs, f"command {name}: its function {fn} was not found in agent/cli"
        opts = set()
        for f in reach(fn):
            opts |= options_in(funcs[f])
        per[name] = opts
    glob = options_in(c_functions(_read("agent", "cli", "main.c"))["main"])
    return [n for n, _ in entries], per, glob


def cli_subcommands():
    """{command: set of subcommands} for the commands whose function compares a `sub`
    argument with names (cache, crl)."""
    funcs, entries = _cli_table()
    out = {}
    for name, fn in entries:
        subs = set(re.findall(r'strcmp\(sub,\s*"([a-z][a-z0-9-]*)"\)', funcs.get(fn, "")))
        if subs:
            out[name] = subs
    return out


def peerd_source():
    return options_in(c_functions(_read("peerd", "main.c"))["main"])


def config_source():
    """(keys, older names, the keys the unknown-key message lists)."""
    text = _strip_comments(_read("cache", "config.c"))
    table = re.search(r"key_names\[[^\]]*\]\s*=\s*\{(.*?)\};", text, re.S)
    assert table, "the key-name table of cache/config.c was not found"
    keys = re.findall(r'\[BG_CONF_\w+\]\s*=\s*"([a-z_]+)"', table.group(1))
    funcs = c_functions(text)
    aliases = set(re.findall(r'strcmp\(name,\s*"([a-z_]+)"\)', funcs["bg_config_key_parse"]))
    joined = re.sub(r'"\s*"', "", funcs["read_file"])  # adjacent literals as the compiler joins them
    known = re.search(r"unknown key \(known: ([a-z_, ]+)\)", joined)
    return keys, aliases, [k.strip() for k in known.group(1).split(",")] if known else None


def flags_source():
    """{(value, long name, short name)} of agent/bits/flags.c's table."""
    values = dict(re.findall(r"#define (BG_\w+) (0x[0-9A-Fa-f]+)u", _read("agent", "bits", "bits.h")))
    rows = re.findall(r'\{"(BG_\w+)",\s*"([a-z-]+)",\s*(BG_\w+)\}', _read("agent", "bits", "flags.c"))
    return {(int(values[v], 16), ln, sn) for ln, sn, v in rows}


def hresults_source():
    """{(code, symbol)} of bits.h's table, but S_OK: success is no code bgcopy reports (a job
    without an error has `"error": null`)."""
    return {(int(code, 16), sym) for sym, code in
            re.findall(r"XX\((\w+),\s*(0x[0-9A-Fa-f]+)u", _read("agent", "bits", "bits.h"))
            if sym != "S_OK"}


# Variables bgcopy(1) documents that no getenv() of the tree reads: the libraries read them.
ENV_READ_BY_LIBRARIES = {
    "http_proxy": "libcurl's proxy for http URLs",
    "https_proxy": "libcurl's proxy for https URLs",
    "KRB5CCNAME": "the Kerberos credential cache GSS-API uses for negotiate",
    "DBUS_SYSTEM_BUS_ADDRESS": "libdbus/sd-bus: the system bus of NetworkManager and avahi",
    "TZ": "the C library's local time, which max_rate_schedule uses",
}


def env_source():
    """Every environment variable a getenv() of agent/, cache/ or peerd/ reads (through a
    macro too, as BG_CLOCK_OFFSET_ENV)."""
    names, macros, calls = set(), {}, []
    for top in ("agent", "cache", "peerd"):
        for root, _, files in os.walk(os.path.join(SRC, top)):
            for f in files:
                if f.endswith((".c", ".h")):
                    with open(os.path.join(root, f), encoding="utf-8") as fh:
                        text = _strip_comments(fh.read())
                    macros.update(re.findall(r'#define (\w+_ENV) "(\w+)"', text))
                    calls += re.findall(r"\bgetenv\(\s*(\"\w+\"|\w+)\s*\)", text)
    for c in calls:
        if c.startswith('"'):
            names.add(c.strip('"'))
        else:
            assert c in macros, f"getenv({c}): the macro's value was not found"
            names.add(macros[c])
    return names


# ---- the pages ---------------------------------------------------------------------------

def _plain(line):
    """A roff line as text: \\- is -, fonts and quotes go."""
    line = line.replace("\\-", "-").replace("\\(aq", "'").replace("\\(dq", '"').replace("\\e", "\\")
    line = re.sub(r"\\f[BIRP]", "", line)
    line = line.replace("\\c", "").replace("\\&", "")
    return line


def page_structure(name):
    """[(section, subsection, tag)]: the text of every .TP tag line, plainly, with where it is."""
    with open(os.path.join(MAN, name), encoding="utf-8") as f:
        lines = f.read().split("\n")
    out, sh, ss, want_tag = [], "", "", False
    for raw in lines:
        line = _plain(raw)
        if line.startswith(".SH"):
            sh, ss = line[3:].strip().strip('"'), ""
        elif line.startswith(".SS"):
            ss = line[3:].strip().strip('"')
        elif line.startswith(".TP"):
            want_tag = True
        elif want_tag and not line.startswith((".PD", '.\\"')):
            out.append((sh, ss, line))
            want_tag = False
    return out


def section_text(name, section):
    """The plain text of one .SH section of a page."""
    with open(os.path.join(MAN, name), encoding="utf-8") as f:
        out, sh = [], ""
        for line in map(_plain, f.read().split("\n")):
            if line.startswith(".SH"):
                sh = line[3:].strip().strip('"')
            elif sh == section:
                out.append(line)
    return "\n".join(out)


OPT_RE = re.compile(r"(?<![\w-])--([a-z0-9][a-z0-9-]*)")


def tag_options(tag):
    return set(OPT_RE.findall(tag))


def man_commands(tags):
    """{subsection title: set of options in its tags} for bgcopy(1)'s COMMANDS, and the
    subsection titles of COMMANDS even when they have no tag."""
    per = {}
    with open(os.path.join(MAN, "bgcopy.1"), encoding="utf-8") as f:
        sh = ""
        for line in map(_plain, f.read().split("\n")):
            if line.startswith(".SH"):
                sh = line[3:].strip().strip('"')
            elif line.startswith(".SS") and sh == "COMMANDS":
                per.setdefault(line[3:].strip().strip('"'), set())
    for sh, ss, tag in tags:
        if sh == "COMMANDS":
            per.setdefault(ss, set()).update(tag_options(tag))
    return per


def help_blocks(text):
    """(head, {command: set of options}) of `bgcopy --help`: head is the options of the
    usage lines at the top (up to the first blank line); a command's block is the line
    (indented two spaces) that names it, at its start or after a '|', with the lines indented
    deeper that follow; its options are every --option of the block."""
    lines = text.split("\n")
    first_blank = lines.index("") if "" in lines else len(lines)
    head = set(OPT_RE.findall("\n".join(lines[:first_blank])))
    blocks, names, opts = {}, [], set()

    def close():
        for n in names:
            blocks.setdefault(n, set()).update(opts)
    for line in lines[first_blank:]:
        if re.match(r"  [a-z]", line):
            close()
            names = re.findall(r"(?:^[ \t]+|\|[ \t]+)([a-z][a-z0-9-]*)", line)
            opts = set(OPT_RE.findall(line))
        elif line.startswith("   ") and names:
            opts |= set(OPT_RE.findall(line))
        else:
            close()
            names, opts = [], set()
    close()
    return head, blocks


def help_text(exe):
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout


def _missing(what, names):
    return f"{what}: {' '.join(sorted(names))}" if names else ""


# ---- the cases ---------------------------------------------------------------------------

@case("manpage_bgcopy_documents_every_command_and_option")
def bgcopy_page(bg):
    """bgcopy(1) has a COMMANDS subsection for every command of the command table and no
    other; each command's options (its .SS's tags) are exactly those the code accepts for
    it; the OPTIONS section has exactly main()'s global options."""
    t = bg.t
    commands, per, glob = cli_source()
    tags = page_structure("bgcopy.1")
    sections = man_commands(tags)
    owner = {}
    for title in sections:
        for word in re.split(r"[,\s]+", title):
            if word:
                owner.setdefault(word, title)
    t.ok(f"the code has commands ({len(commands)}) and options", len(commands) > 30 and per["get"])
    t.ok("every command has a COMMANDS subsection in bgcopy(1)", not set(commands) - set(owner),
         _missing("undocumented commands", set(commands) - set(owner)))
    t.ok("every COMMANDS subsection names commands the code has", not set(owner) - set(commands),
         _missing("stale commands in bgcopy(1)", set(owner) - set(commands)))
    undocumented, stale = [], []
    for name in commands:
        title = owner.get(name)
        if title is None:
            continue
        documented = sections[title]
        group = [w for w in re.split(r"[,\s]+", title) if w in per]
        accepted = set().union(*(per[w] for w in group))
        undocumented += [f"{name} --{o}" for o in sorted(per[name] - documented)]
        stale += [f"[{title}] --{o}" for o in sorted(documented - accepted)]
    t.ok("every option of every command is a tag of its subsection", not undocumented,
         "undocumented: " + " ".join(undocumented))
    t.ok("every option tag of COMMANDS is accepted by its command(s)", not set(stale),
         "stale in bgcopy(1): " + " ".join(sorted(set(stale))))
    subs = cli_subcommands()
    t.ok("the code has subcommands (cache, crl)", {"cache", "crl"} <= set(subs), str(subs))
    for name, want in sorted(subs.items()):
        got = set()
        for sh, ss, tag in tags:
            m = re.match(r"(?:\.\w+\s+)?" + re.escape(name) + r"\s+([a-z][a-z0-9-]*)",
                         tag.replace('"', ""))
            if sh == "COMMANDS" and ss == name and m:
                got.add(m.group(1))
        t.ok(f"the {name} subsection has a tag per {name} subcommand, and no other", got == want,
             " ".join(filter(None, [_missing("undocumented", want - got),
                                    _missing("stale", got - want)])))
    documented = set().union(*(tag_options(tag) for sh, _, tag in tags if sh == "OPTIONS"))
    t.ok("the global options are the OPTIONS tags", documented == glob,
         " ".join(filter(None, [_missing("undocumented", glob - documented),
                                _missing("stale", documented - glob)])))


@case("manpage_bgcopy_help_lists_every_command_and_option")
def bgcopy_help(bg):
    """`bgcopy --help` names every command of the command table, each with the long options
    the code accepts for it on its lines (but the few of HELP_LEFT_OUT, each with its
    reason), the global options in its usage lines, and no option the code lacks."""
    t = bg.t
    commands, per, glob = cli_source()
    rc, text = help_text(bg.exe)
    t.eq("bgcopy --help exits 0", rc, 0)
    head, blocks = help_blocks(text)
    t.ok("every command has lines of its own in --help", not set(commands) - set(blocks),
         _missing("commands missing from --help", set(commands) - set(blocks)))
    t.ok("the usage lines name the global options", head == glob,
         " ".join(filter(None, [_missing("missing", glob - head), _missing("stale", head - glob)])))
    missing, stale = [], []
    for name in commands:
        shown = blocks.get(name, set())
        missing += [f"{name} --{o}" for o in sorted(per[name] - shown)
                    if (name, o) not in HELP_LEFT_OUT]
    code = set(glob).union(*per.values())
    shown_all = set(OPT_RE.findall(text))
    for name, shown in blocks.items():
        if name in per:
            stale += [f"{name} --{o}" for o in sorted(shown - code)]
    t.ok("every option of every command is on its --help lines (or left out with a reason)",
         not missing, "missing from bgcopy --help: " + " ".join(missing))
    t.ok("--help names no option the code lacks", not shown_all - code and not stale,
         _missing("stale options in bgcopy --help", shown_all - code) + " " + " ".join(stale))
    for name, want in sorted(cli_subcommands().items()):
        got = set()
        for line in text.split("\n"):
            if line.startswith(f"  {name} "):
                got |= set(re.findall(r"(?<![\w-])" + re.escape(name) + r"\s+([a-z][a-z0-9-]*)", line))
                got |= set(re.findall(r"\|\s+([a-z][a-z0-9-]*)", line))
        got.discard(name)
        t.ok(f"--help names every {name} subcommand, and no other", got == want,
             " ".join(filter(None, [_missing("missing", want - got), _missing("stale", got - want)])))
    left = {(n, o) for n, o in HELP_LEFT_OUT if o in blocks.get(n, set())}
    t.ok("the left-out options are really left out of their commands' lines", not left,
         "on the lines after all (drop them from HELP_LEFT_OUT): "
         + " ".join(f"{n} --{o}" for n, o in sorted(left)))
    bad = {(n, o) for n, o in HELP_LEFT_OUT if o not in per.get(n, set())}
    t.ok("the left-out list names only options the code has", not bad,
         "HELP_LEFT_OUT entries the code lacks: " + " ".join(f"{n} --{o}" for n, o in sorted(bad)))


@case("manpage_peerd_documents_every_option")
def peerd_page(bg):
    """bgcopy-peerd(8)'s OPTIONS tags and `bgcopy-peerd --help` against peerd/main.c's
    option table, both ways; the bgcopy.conf keys both say peerd reads are the same."""
    t = bg.t
    code = peerd_source()
    t.ok("peerd/main.c has an option table", len(code) > 5)
    documented = set().union(*(tag_options(tag) for sh, _, tag in page_structure("bgcopy-peerd.8")
                               if sh == "OPTIONS"))
    t.ok("every peerd option is an OPTIONS tag of bgcopy-peerd(8)", not code - documented,
         _missing("undocumented", code - documented))
    t.ok("every OPTIONS tag of bgcopy-peerd(8) is a peerd option", not documented - code,
         _missing("stale in bgcopy-peerd(8)", documented - code))
    rc, text = help_text(peerd_exe(bg))
    t.eq("bgcopy-peerd --help exits 0", rc, 0)
    shown = set(OPT_RE.findall(text))
    missing = code - shown - set(PEERD_HELP_LEFT_OUT)
    t.ok("every peerd option is in its --help", not missing,
         _missing("options missing from bgcopy-peerd --help", missing))
    t.ok("peerd's --help names no option it lacks", not shown - code,
         _missing("stale options in bgcopy-peerd --help", shown - code))
    keys, aliases, _ = config_source()
    names = set(keys) | aliases
    words = r"(?<![\w-])([a-z_]+)(?![\w-])"  # whole words: no "peer" out of "--connections-per-peer"
    in_help = names & set(re.findall(words, text))
    in_page = names & set(re.findall(words, section_text("bgcopy-peerd.8", "CONFIGURATION")))
    t.ok("the bgcopy.conf keys peerd's --help names are the ones its page's CONFIGURATION names",
         in_help == in_page and len(in_help) > 3,
         " ".join(filter(None, [_missing("only in --help", in_help - in_page),
                                _missing("only in bgcopy-peerd(8)", in_page - in_help)])))


@case("manpage_conf_documents_every_key")
def conf_page(bg):
    """bgcopy.conf(5)'s KEYS tags are exactly cache/config.c's key names; the older names
    are mentioned; the unknown-key message lists the same keys."""
    t = bg.t
    keys, aliases, known = config_source()
    t.ok("cache/config.c has a key table", len(keys) > 10)
    documented = {tag.split()[1] for sh, _, tag in page_structure("bgcopy.conf.5")
                  if sh == "KEYS" and tag.startswith(".B ") and len(tag.split()) == 2}
    t.ok("every key is a KEYS tag of bgcopy.conf(5)", not set(keys) - documented,
         _missing("undocumented keys", set(keys) - documented))
    t.ok("every KEYS tag of bgcopy.conf(5) is a key", not documented - set(keys),
         _missing("stale keys in bgcopy.conf(5)", documented - set(keys)))
    with open(os.path.join(MAN, "bgcopy.conf.5"), encoding="utf-8") as f:
        words = set(re.findall(r"[a-z_]+", _plain(f.read())))
    t.ok("the older key names are mentioned", aliases <= words,
         _missing("older names not in bgcopy.conf(5)", aliases - words))
    t.ok("the unknown-key message lists every key", known is not None and set(known) == set(keys),
         f"message: {known}; " + " ".join(filter(None, [
             _missing("missing", set(keys) - set(known or ())),
             _missing("stale", set(known or ()) - set(keys))])))


@case("manpage_bgcopy_security_flags_and_hresults")
def flags_and_codes(bg):
    """bgcopy(1)'s SECURITY FLAGS tags are the flag table (value, long and short name) and its
    HRESULTS tags the codes of agent/bits/bits.h (code and symbol), both ways."""
    t = bg.t
    tags = page_structure("bgcopy.1")
    flags = flags_source()
    t.ok("the flag table was read", len(flags) >= 9)
    documented = set()
    for sh, _, tag in tags:
        if sh == "SECURITY FLAGS":
            m = re.search(r"(0x[0-9A-Fa-f]{4})\W+(BG_\w+)\W+([a-z-]+)", tag)
            if m:
                documented.add((int(m.group(1), 16), m.group(2), m.group(3)))
    show = lambda s: " ".join(f"0x{v:04X}={ln}/{sn}" for v, ln, sn in sorted(s))  # noqa: E731
    t.ok("every security flag is documented with its value and names", flags <= documented,
         "missing: " + show(flags - documented))
    t.ok("every documented flag is in the table", documented <= flags,
         "stale: " + show(documented - flags))
    codes = hresults_source()
    t.ok("the HRESULT table was read", len(codes) > 20)
    documented = set()
    for sh, _, tag in tags:
        if sh == "HRESULTS":
            m = re.search(r"(0x[0-9A-Fa-f]{8})\s+([A-Z_][A-Z0-9_]+)", tag)
            if m:
                documented.add((int(m.group(1), 16), m.group(2)))
    show = lambda s: " ".join(f"0x{c:08X}={n}" for c, n in sorted(s))  # noqa: E731
    t.ok("every HRESULT is documented with its symbol", codes <= documented,
         "missing: " + show(codes - documented))
    t.ok("every documented HRESULT is in bits.h", documented <= codes,
         "stale: " + show(documented - codes))


@case("manpage_bgcopy_documents_every_environment_variable")
def environment(bg):
    """bgcopy(1)'s ENVIRONMENT tags name every variable a getenv() of the tree reads, and
    nothing else but the few ENV_READ_BY_LIBRARIES, each with its reader."""
    t = bg.t
    code = env_source()
    t.ok("the tree reads environment variables", {"BGCOPY_HOME", "BGCOPY_CONFIG"} <= code, str(code))
    documented = set()
    for sh, _, tag in page_structure("bgcopy.1"):
        if sh == "ENVIRONMENT":
            documented |= set(re.findall(r"\b[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+\b|\b[A-Z]{2,}\b", tag))
    documented -= {"BR", "B"}
    t.ok("every variable read is an ENVIRONMENT tag of bgcopy(1)", not code - documented,
         _missing("undocumented", code - documented))
    stale = documented - code - set(ENV_READ_BY_LIBRARIES)
    t.ok("every ENVIRONMENT tag is read by the tree or a library it uses", not stale,
         _missing("stale", stale))


@case("manpage_pages_format_cleanly")
def pages_format(bg):
    """groff -man -ww -z on each page: exit 0, no warning; and mandoc -Tlint -Wwarning when
    mandoc is installed (style notes are not counted). Skipped without groff."""
    t = bg.t
    groff = shutil.which("groff")
    if groff is None:
        t.note("groff is not installed: nothing to check (scripts/setup installs groff-base)")
        return SKIPPED
    for page in PAGES:
        path = os.path.join(MAN, page)
        r = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", path], capture_output=True,
                           text=True, timeout=60)
        t.ok(f"groff -man -ww -z {page}: exit 0, no warning", r.returncode == 0 and not r.stderr.strip(),
             f"exit {r.returncode}: {r.stderr.strip()}")
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        t.note("mandoc is not installed: its lint is not run")
        return None
    for page in PAGES:
        r = subprocess.run([mandoc, "-Tlint", "-Wwarning", os.path.join(MAN, page)],
                           capture_output=True, text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        t.ok(f"mandoc -Tlint -Wwarning {page}: nothing to say", r.returncode == 0 and not out, out)
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv, CASES, __doc__))
