"""Nodes in network namespaces on one bridge, each with its own D-Bus system bus and
avahi-daemon: what `scripts/harness --netns` builds its scenarios on (Python 3 standard
library; root and iproute2 needed).

    lab = Lab("/tmp/dir")                 # per-run names and subnet (from the PID)
    try:
        a = lab.add_node("A")             # namespace PREFIX-A, 10.X.Y.11 on the bridge
        a.start_dbus(); a.start_avahi(); lab.wait_avahi()
        a.run(["avahi-browse", "-rpt", "_bgcopy._tcp"])
        p = a.start(["bgcopy-peerd", ...], "peerd")   # a process in A's namespace
        lab.call_in(a, lambda: socket.create_connection((a.ip, 7654)))
    finally:
        lab.close()                       # kills by PID, newest first; deletes namespaces

The bridge lives in its own namespace (PREFIX-br), so nothing outside the namespaces made
here sees a packet of the run: no address, route or link of the host is touched. Each node
namespace has lo and eth0 (a veth whose other end is on the bridge), IPv4 only (IPv6 off),
multicast on. A per-run prefix (bgh + PID) and subnet (10.(128 + PID/256).(PID%256).0/24,
the PID below 32768) keep two concurrent runs apart; namespaces a killed run left behind
(its PID gone) are deleted by the next run. Processes are started through
`ip netns exec NS` (which also bind-mounts /etc/netns/NS/* over /etc/*: a node's own
resolv.conf) with DBUS_SYSTEM_BUS_ADDRESS set to the node's bus; avahi-daemon runs under
`unshare -m` with a tmpfs over /run, as its pid file and socket paths are compiled in.
Each child gets SIGTERM when the harness dies (PR_SET_PDEATHSIG)."""

import ctypes
import os
import re
import shutil
import signal
import subprocess
import threading
import time

CLONE_NEWNET = 0x40000000
NETNS_RUN = "/var/run/netns"
ETC_NETNS = "/etc/netns"
ETC_MARK = os.path.join(ETC_NETNS, ".made-by-bgcopy-harness")

try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


class NetnsError(RuntimeError):
    """The namespaces or a node's services could not be set up."""


def _die_with_parent():
    if _LIBC is not None:
        _LIBC.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def missing_tools():
    """Why this machine cannot run the lab (a list of reasons; empty: it can)."""
    why = []
    if os.geteuid() != 0:
        why.append("not root")
    for tool in ("ip", "unshare", "dbus-daemon", "avahi-daemon"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            why.append(f"no {tool} binary")
    if not why:
        p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        if p.returncode != 0:
            why.append(f"`ip netns` does not work: {p.stderr.strip()}")
    return why


def _ip(*args, check=True):
    p = subprocess.run(["ip", *args], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {p.stderr.strip() or p.returncode}")
    return p


def _tail(path, n=1200):
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()[-n:].strip()
    except OSError:
        return ""
    return f"\n  {path}:\n  " + text.replace("\n", "\n  ") if text else ""


def wait_for(pred, what, timeout=10.0, proc=None, errfile=None):
    """Polls pred() every 20 ms until it is true (returns its value); NetnsError when proc
    exited or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise NetnsError(f"{what}: exited with status {proc.returncode}" + _tail(errfile))
        if time.monotonic() > deadline:
            raise NetnsError(f"{what}: not ready after {timeout:g}s" + _tail(errfile))
        time.sleep(0.02)


DBUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <!-- a bus of this node alone: anyone may own, send and receive (receiving must be
       allowed explicitly, or replies to avahi's clients are dropped) -->
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

AVAHI_CONF = """[server]
host-name={host}
use-ipv4=yes
use-ipv6=no
allow-interfaces={iface}
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
publish-aaaa-on-ipv4=no
"""


class Node:
    """One namespace on the lab's bridge: its name, address, directory and processes."""

    def __init__(self, lab, name, ns, ip, index):
        self.lab, self.name, self.ns, self.ip, self.index = lab, name, ns, ip, index
        self.iface = "eth0"
        self.dir = os.path.join(lab.root, f"ns-{name}")
        self.bus = os.path.join(self.dir, "dbus.sock")
        self.dbus = None
        self.avahi = None
        self.avahi_log = os.path.join(self.dir, "avahi.log")

    # ---- environment and processes
    def env(self, extra=None):
        """The environment of a process of this node: the caller's, minus proxies, with the
        node's system bus."""
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        env["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={self.bus}"
        env.update(extra or {})
        return env

    def argv(self, argv):
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, argv, env=None, timeout=60, **kw):
        """Runs argv in the namespace to completion (subprocess.run, text, captured)."""
        return subprocess.run(self.argv(argv), env=self.env(env), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)

    def start(self, argv, label, env=None, stdout=None):
        """Starts argv in the namespace in the background; its stderr (and stdout unless
        given) goes to DIR/LABEL.log. The lab stops it at the end (newest first)."""
        logf = os.path.join(self.dir, f"{label}.log")
        with open(logf, "ab") as err:
            p = subprocess.Popen(self.argv(argv), env=self.env(env), stdin=subprocess.DEVNULL,
                                 stdout=stdout if stdout is not None else err, stderr=err,
                                 preexec_fn=_die_with_parent)
        p.label, p.logfile = f"{self.name}/{label}", logf
        p.node = self
        self.lab.procs.append(p)
        return p

    # ---- D-Bus and avahi-daemon
    def start_dbus(self):
        with open(os.path.join(self.dir, "dbus.conf"), "w") as f:
            f.write(DBUS_CONF.format(sock=self.bus))
        self.dbus = self.start(["dbus-daemon", f"--config-file={self.dir}/dbus.conf",
                                "--nofork", "--nopidfile"], "dbus")
        wait_for(lambda: os.path.exists(self.bus), f"dbus-daemon of {self.name}",
                 proc=self.dbus, errfile=self.dbus.logfile)

    def start_avahi(self):
        """Starts avahi-daemon (not waiting: wait_avahi, or the lab's, waits for it)."""
        conf = os.path.join(self.dir, "avahi.conf")
        with open(conf, "w") as f:
            f.write(AVAHI_CONF.format(host=f"{self.lab.prefix}-{self.name}".lower(),
                                      iface=self.iface))
        if os.path.exists(self.avahi_log):
            os.unlink(self.avahi_log)
        self.avahi = self.start(
            ["unshare", "-m", "sh", "-c",
             "mount -t tmpfs -o mode=755 tmpfs /run && exec avahi-daemon --no-drop-root "
             f"--no-chroot --no-rlimits -f {conf}"], "avahi")

    def wait_avahi(self, timeout=15):
        def up():
            try:
                with open(self.avahi_log, encoding="utf-8", errors="replace") as f:
                    return "startup complete" in f.read()
            except OSError:
                return False
        wait_for(up, f"avahi-daemon of {self.name}", timeout, proc=self.avahi,
                 errfile=self.avahi_log)

    def stop_avahi(self):
        self.lab.stop_proc(self.avahi)
        self.avahi = None

    # ---- files of the namespace
    def resolv_conf(self, nameserver):
        """/etc/netns/NS/resolv.conf: `ip netns exec` shows it as this node's
        /etc/resolv.conf."""
        d = os.path.join(ETC_NETNS, self.ns)
        if not os.path.isdir(ETC_NETNS):
            os.makedirs(ETC_NETNS, exist_ok=True)
            # Marks /etc/netns as made by a run (which may not be this one's last).
            open(ETC_MARK, "w").close()
        os.makedirs(d, exist_ok=True)
        self.lab.etc_dirs.append(d)
        with open(os.path.join(d, "resolv.conf"), "w") as f:
            f.write(f"nameserver {nameserver}\noptions timeout:1 attempts:2\n")


class Lab:
    """A bridge namespace and the node namespaces on it, for one run."""

    def __init__(self, root, prefix=None):
        pid = os.getpid()
        self.root = root
        self.prefix = prefix or f"bgh{pid}"
        self.net = f"10.{128 + (pid >> 8) % 128}.{pid & 255}"
        self.bridge_ns = f"{self.prefix}-br"
        self.nodes = []
        self.procs = []
        self.etc_dirs = []
        self.namespaces = []
        self._remove_stale()
        self._add_ns(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        # No multicast snooping: mDNS must reach every port whatever IGMP says.
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")

    def _remove_stale(self):
        """Deletes what a killed run left: namespaces bghPID-* (and /etc/netns entries)
        whose PID is ours or no longer runs. A live run's are never touched."""
        for ns in self._namespaces():
            m = re.match(r"bgh(\d+)-", ns)
            if not m:
                continue
            pid = int(m.group(1))
            if pid != os.getpid():
                try:
                    os.kill(pid, 0)
                    continue          # that run is alive
                except ProcessLookupError:
                    pass
                except PermissionError:
                    continue
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(os.path.join(ETC_NETNS, ns), ignore_errors=True)

    @staticmethod
    def _namespaces():
        p = _ip("netns", "list", check=False)
        return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]

    def _add_ns(self, ns):
        _ip("netns", "add", ns)
        self.namespaces.append(ns)

    def add_node(self, name, index=None):
        """A new namespace PREFIX-NAME with address NET.INDEX/24 on the bridge (INDEX
        default: one past the highest in use, from 11; never one a node still holds)."""
        if index is None:
            index = max([10] + [n.index for n in self.nodes if n.index > 10]) + 1
        ns = f"{self.prefix}-{name}"
        node = Node(self, name, ns, f"{self.net}.{index}", index)
        os.makedirs(node.dir, exist_ok=True)
        self._add_ns(ns)
        port = node.port = f"p{index}"
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name",
            node.iface, "netns", ns)
        _ip("-n", self.bridge_ns, "link", "set", port, "master", "br0", "multicast", "on", "up")
        for key in ("all", "default", "lo"):
            _ip("netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        _ip("-n", ns, "addr", "add", f"{node.ip}/24", "dev", node.iface)
        _ip("-n", ns, "link", "set", node.iface, "multicast", "on", "up")
        self.nodes.append(node)
        return node

    def remove_node(self, node):
        """Stops node's processes (newest first) and deletes its namespace."""
        for p in reversed([p for p in self.procs if p.node is node]):
            self.stop_proc(p)
        self.procs = [p for p in self.procs if p.node is not node]
        # The veth first, at once: a deleted namespace takes its links along only later,
        # and the next node with this index wants the port's name.
        _ip("-n", self.bridge_ns, "link", "del", node.port, check=False)
        _ip("netns", "del", node.ns, check=False)
        self.namespaces = [ns for ns in self.namespaces if ns != node.ns]
        d = os.path.join(ETC_NETNS, node.ns)
        if d in self.etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
            self.etc_dirs.remove(d)
        self.nodes = [n for n in self.nodes if n is not node]

    def shape(self, node, egress=None, ingress=None):
        """Caps node's link with a token bucket filter (tc tbf): egress what it sends (on its
        eth0), ingress what the bridge sends it (on the bridge's port); rates as tc writes
        them ("32mbit"). Raises NetnsError when tc cannot (no tc, no sch_tbf)."""
        for ns, dev, rate in ((node.ns, node.iface, egress), (self.bridge_ns, node.port, ingress)):
            if rate is None:
                continue
            p = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev,
                                "root", "tbf", "rate", rate, "burst", "256kb", "latency",
                                "100ms"], capture_output=True, text=True)
            if p.returncode != 0:
                raise NetnsError(f"tc tbf {rate} on {dev} in {ns}: {p.stderr.strip()}")

    def wait_avahi(self, timeout=15):
        for n in self.nodes:
            if n.avahi is not None:
                n.wait_avahi(timeout)

    def call_in(self, node, fn, timeout=30):
        """fn() in a thread that entered node's network namespace (setns is per thread):
        sockets it creates live there. Returns fn's value or raises its exception."""
        box = {}

        def body():
            try:
                fd = os.open(os.path.join(NETNS_RUN, node.ns), os.O_RDONLY)
                try:
                    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
                        e = ctypes.get_errno()
                        raise OSError(e, f"setns {node.ns}: {os.strerror(e)}")
                finally:
                    os.close(fd)
                box["v"] = fn()
            except BaseException as e:  # handed to the caller
                box["e"] = e
        t = threading.Thread(target=body, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise NetnsError(f"call in {node.ns}: no answer after {timeout}s")
        if "e" in box:
            raise box["e"]
        return box.get("v")

    def stop_proc(self, p, grace=5.0):
        if p is None or p.poll() is not None:
            return
        try:
            p.terminate()
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass

    def close(self):
        """Stops every process started (by PID, newest first), deletes the namespaces
        (which takes their veths along) and the /etc/netns entries. Safe to call twice."""
        for p in reversed(self.procs):
            try:
                self.stop_proc(p)
            except Exception:  # keep tearing down
                pass
        self.procs = []
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns, check=False)
        self.namespaces = []
        for d in self.etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.etc_dirs = []
        # /etc/netns goes when a run made it and no run uses it any more.
        try:
            if os.listdir(ETC_NETNS) == [os.path.basename(ETC_MARK)]:
                os.unlink(ETC_MARK)
                os.rmdir(ETC_NETNS)
        except OSError:
            pass
