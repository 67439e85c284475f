"""A lab of Linux network namespaces with real NAT routers, for tests that need more than loopback
(NAT classification, hole punching, scans proving devices expose nothing). Not a test itself.

                     <P>-inet: bridge br0 = "the internet", 10.200.0.0/24 (no address itself)
  +--------------+-----------------+------------------+-------------------+------------------+
  |              |                 |                  |                   |                  |
 <P>-srv        <P>-stranger      <P>-r1 (router)    <P>-r2 (router)  ... <P>-d5 ("none" site:
 eth0 10.200.0.1 eth0 10.200.0.250 wan 10.200.0.11    wan 10.200.0.12       device on the bridge)
      10.200.0.2 (nmap scans)      NAT kind of site 1 NAT kind of site 2    eth0 10.200.0.15
 (toriid: control                  lan 192.168.1.1/24 lan 192.168.2.1/24
  10.200.0.1:7443,                   |                  |
  STUN 10.200.0.1:3478,            <P>-d1 (device)    <P>-d2 (device)
  alternate 10.200.0.2:3479,       eth0 192.168.1.2   eth0 192.168.2.2
  admin API on a unix socket,      default via .1.1   default via .2.1
  UDP relay 10.200.0.1:3480        (agents: TUN torii0 with the overlay address, UDP tunnel socket)
  with Toriid.relay_args())

Site N: router outside address 10.200.0.(10+N), inside LAN 192.168.N.0/24, device 192.168.N.2;
a "none" site puts its device straight on the bridge at 10.200.0.(10+N). <P> is the lab's name
prefix (unique per run), so parallel labs never collide. Every veth is created directly inside
the namespaces (`ip -n A link add X type veth peer name Y netns B`): nothing ever appears in, or
changes, the host's own namespace, interfaces, routes, firewall or sysctls.

    with NetLab() as lab:                  # or NetLab("mytest") for a readable prefix
        srv = lab.server()                 # Node for <P>-srv
        site = lab.site("port-restricted") # Site: .router, .device (Nodes), .kind, .outside_ip ...
        lab.run(site.device, ["ip", "route"])           # CompletedProcess (text)
        p = lab.popen(srv, ["iperf3", "-s"], name="iperf")  # LabProc, logged, killed at exit
        tor = lab.start_toriid()           # toriid in srv (see Toriid below)
        print(lab.scan("10.200.0.1"))      # [Port(proto='tcp', port=7443, state='open', ...)]
        lab.scan_many(["10.200.0.11", "10.200.0.12"])   # {ip: [Port]}, one parallel nmap run
        tor = lab.start_toriid(Toriid.relay_args())     # with the UDP tunnel relay (:3480)
        tor.peer(state, "dev2"), tor.connect(state, "dev2"), tor.audit("peer.refused")

On exit (normal, exception, SIGTERM/SIGINT/SIGHUP, or interpreter exit through atexit) every
process started is killed (process group, SIGTERM then SIGKILL), every process still inside a lab
namespace is killed by PID, the namespaces are deleted and the temporary directory removed.
Children also get PR_SET_PDEATHSIG so they die with the Python process even on SIGKILL; only the
(empty) namespaces and the temp dir can then outlive it: the next NetLab removes them (for
default prefixes, once their creator is gone), or `python3 netlab.py cleanup PREFIX` does.

Requires root, iproute2, nftables (nft); nmap for scan(). Standard library only.
Environment: TORII_BIN (folder with toriid, torii, torii-agent) for the torii helpers.
"""

import atexit
import collections
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import toriilab  # noqa: E402  (shared process handling)
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("TORII_SRC", os.path.dirname(os.path.dirname(HERE)))

# Addresses of the lab (fixed: they exist only inside the lab's own namespaces).
INET_NET = ipaddress.ip_network("10.200.0.0/24")
SRV_IP = "10.200.0.1"
SRV_ALT_IP = "10.200.0.2"
STRANGER_IP = "10.200.0.250"
CONTROL_PORT = 7443
STUN_PORT = 3478
STUN_ALT_PORT = 3479
RELAY_PORT = 3480  # toriid's UDP tunnel relay (pass --relay 10.200.0.1:3480, see Toriid.relay_args)

KINDS = ("full-cone", "restricted", "port-restricted", "symmetric", "none")
SKIP = 77  # exit code ctest maps to "skipped" (SKIP_RETURN_CODE)

CMD_TIMEOUT = 30  # one command inside a namespace
STOP_GRACE = 2.0  # SIGTERM -> SIGKILL for processes at cleanup


class Unavailable(Exception):
    """The lab cannot run here (not root, no netns support, a tool missing)."""


def log(msg):
    print(f"netlab: {msg}", flush=True)


# ---- NAT rule sets --------------------------------------------------------------------------
#
# All kinds use nftables: one table `netlab` per router, loaded atomically with `nft -f -`.
# (The iptables equivalents are named in each comment; nft is chosen because the two cone kinds
# that filter need dynamic sets filled by outbound packets, which iptables can only approximate
# with the `recent` match, and one tool keeps every router readable with `nft list ruleset`.)
#
# Shared by every NAT kind: the router itself offers nothing on the outside, and the inside LAN is
# not routable from outside (only replies and DNAT-ed mappings are forwarded in). Unsolicited
# packets are dropped in the filter hooks, i.e. before conntrack confirms their entry, so they
# leave no conntrack state behind: a stale inbound entry (say from the STUN server's alternate
# address) would otherwise occupy the tuple <wan ip:port, remote> and force a later outbound flow
# of the device to that remote onto another port, faking a mapping change.
#
# Port preservation: SNAT/MASQUERADE keep the device's source port whenever the resulting tuple
# is free (always, with one device per site), so internal port == external port. The two cone
# kinds rely on it: their sets hold the device's source ports, which are then the mapped ports.

_COMMON = """
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }}
    chain forward_in {{
        type filter hook forward priority filter; policy accept;
        iifname "wan" oifname "lan" ct state established,related accept
        iifname "wan" oifname "lan" ct status dnat accept
        iifname "wan" oifname "lan" drop
    }}
"""

_NAT_RULES = {
    # Endpoint-independent mapping and filtering (RFC 4787 "full cone"). Static SNAT of the device
    # to the outside address keeping ports (iptables: -t nat -A POSTROUTING -o wan -j SNAT
    # --to-source OUT), plus DNAT to the device of inbound UDP from ANY address to any port the
    # device has sent from (iptables: -t nat -A PREROUTING -i wan -p udp -j DNAT --to DEV, which
    # would also forward ports never used; the set restricts it to existing mappings, as a real
    # full cone does).
    "full-cone": """
    set mapped {{ type inet_service; flags dynamic,timeout; timeout 5m; }}
    chain remember {{
        type filter hook forward priority filter - 1; policy accept;
        iifname "lan" oifname "wan" meta l4proto udp update @mapped {{ udp sport }}
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" udp dport @mapped dnat to {dev}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" ip saddr {lan} snat to {out}
    }}
""",
    # Endpoint-independent mapping, address-dependent filtering ("restricted cone"). Like full
    # cone, but an inbound datagram is let in only if the device has sent from that port to the
    # datagram's source ADDRESS (any source port): the set holds (remote address . device port)
    # pairs filled by outbound packets. (iptables could approximate it with `-m recent --rdest`
    # on the way out and `-m recent --rcheck --rsource` on the way in, per address only.)
    "restricted": """
    set contacted {{ type ipv4_addr . inet_service; flags dynamic,timeout; timeout 5m; }}
    chain remember {{
        type filter hook forward priority filter - 1; policy accept;
        iifname "lan" oifname "wan" meta l4proto udp update @contacted {{ ip daddr . udp sport }}
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" ip saddr . udp dport @contacted dnat to {dev}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" ip saddr {lan} snat to {out}
    }}
""",
    # Plain Linux masquerading (iptables: -j MASQUERADE): endpoint-independent mapping while the
    # port is free (Linux keeps the source port when the tuple is unique), and conntrack lets in
    # only replies from the exact remote address AND port: address-and-port-dependent filtering
    # ("port-restricted cone").
    "port-restricted": """
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" ip saddr {lan} masquerade
    }}
""",
    # Masquerading with a random port for every new flow (iptables: -j MASQUERADE
    # --random-fully): address-and-port-dependent mapping ("symmetric"); filtering is conntrack's,
    # address-and-port-dependent.
    "symmetric": """
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" ip saddr {lan} masquerade fully-random
    }}
""",
}


def nat_ruleset(kind, outside_ip, lan, device_ip):
    """The nft script for a router of `kind` (not "none")."""
    body = _COMMON + _NAT_RULES[kind]
    return ("table ip netlab {\n" + body.format(out=outside_ip, lan=lan, dev=device_ip) + "}\n")


# ---- processes ------------------------------------------------------------------------------

class LabProc(toriilab.Proc):
    """A process started in a namespace, in its own process group, output in a log file (the
    integration tests' Proc, run through `ip netns exec`)."""

    def __init__(self, name, ns, argv, log_path, env=None, cwd=None):
        # `ip netns exec` execs the command in place: the PID is the command's.
        super().__init__(name, ["ip", "netns", "exec", ns, *argv], log_path, env=env, cwd=cwd)
        self.ns = ns
        self.argv = argv

    def alive(self):
        return self.popen.poll() is None

    def stop(self, grace=STOP_GRACE):
        """SIGTERM to the process group, SIGKILL after `grace` s, reap. Safe to call twice."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()


# ---- nodes and sites ------------------------------------------------------------------------

class Node:
    """One namespace of the lab. `role` is the short name (srv, stranger, r1, d1, inet)."""

    def __init__(self, lab, role, ip=None):
        self.lab = lab
        self.role = role
        self.ns = f"{lab.prefix}-{role}"
        self.ip = ip  # main address (None for the bridge namespace)

    def run(self, argv, **kw):
        return self.lab.run(self, argv, **kw)

    def popen(self, argv, **kw):
        return self.lab.popen(self, argv, **kw)

    def __repr__(self):
        return f"Node({self.ns}, {self.ip})"


Site = collections.namedtuple("Site", "index kind router device outside_ip device_ip")
Site.__doc__ = """A NAT site. router: Node or None (kind "none"); device: Node; outside_ip: the
address the internet sees (router wan, or the device itself); device_ip: the device's own."""

Port = collections.namedtuple("Port", "proto port state service")


def _ns_exists(name):
    return os.path.exists(os.path.join("/run/netns", name))


def _list_ns():
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def _kill_ns_processes(ns):
    """SIGKILL every process inside namespace `ns` (all were started by the lab)."""
    p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    for pid in p.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def delete_namespaces(prefix):
    """Kills the processes in, and deletes, every namespace named `prefix`-*, and removes the
    lab's temp dirs. For the CLI's `cleanup` after a lab was SIGKILLed; returns what was
    removed."""
    gone = []
    for ns in _list_ns():
        if ns.startswith(prefix + "-"):
            _kill_ns_processes(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
            gone.append(ns)
    tmp = tempfile.gettempdir()
    for d in os.listdir(tmp):
        if d.startswith(f"netlab-{prefix}-"):
            shutil.rmtree(os.path.join(tmp, d), ignore_errors=True)
            gone.append(os.path.join(tmp, d))
    return gone


_DEFAULT_PREFIX = re.compile(r"nl(\d+)x[0-9a-f]{4}$")


def reap_stale_labs():
    """Deletes what labs with a default prefix (nl<pid>x<hex>) left when their Python process
    was SIGKILLed (e.g. a ctest timeout): namespaces whose creating PID no longer exists and
    that hold no process (their children died with it through PR_SET_PDEATHSIG), and the temp
    dirs of those labs. Labs still running, or with a process left inside, are not touched.
    Called when a NetLab opens. Returns the prefixes reaped."""
    stale = {}
    for ns in _list_ns():
        pfx, _, _ = ns.rpartition("-")
        m = _DEFAULT_PREFIX.fullmatch(pfx)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            stale.setdefault(pfx, []).append(ns)
    reaped = []
    for pfx, names in stale.items():
        busy = False
        for ns in names:
            p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                               timeout=10)
            busy = busy or bool(p.stdout.split())
        if not busy:
            delete_namespaces(pfx)
            reaped.append(pfx)
    return reaped


def require(tools=("ip", "nft")):
    """Raises Unavailable if the lab cannot run here: not root, a tool missing, or network
    namespaces (with veth and bridge) not supported."""
    if os.geteuid() != 0:
        raise Unavailable("needs root (network namespaces, veth, nftables)")
    for t in tools:
        if shutil.which(t) is None:
            raise Unavailable(f"`{t}` not installed")
    probe = f"nlprobe{os.getpid()}x{secrets.token_hex(3)}"
    try:
        for argv in (["ip", "netns", "add", probe],
                     ["ip", "-n", probe, "link", "add", "br0", "type", "bridge"],
                     ["ip", "-n", probe, "link", "add", "v0", "type", "veth", "peer", "name",
                      "v1"]):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            if p.returncode != 0:
                raise Unavailable(f"`{' '.join(argv)}` failed: {p.stderr.strip()}")
    finally:
        if _ns_exists(probe):
            subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)


def skip_unless_available(tools=("ip", "nft")):
    """For test scripts: prints SKIP and exits 77 when require() fails. With TORII_REQUIRE_NETNS=1
    (set by scripts/test.sh, which installs every tool as root) a missing piece is a failure, so
    CI cannot pass by skipping."""
    try:
        require(tools)
    except Unavailable as e:
        if os.environ.get("TORII_REQUIRE_NETNS") == "1":
            print(f"FAIL: {e} (TORII_REQUIRE_NETNS=1: scripts/install-deps.sh should provide it)",
                  flush=True)
            sys.exit(1)
        print(f"SKIP: {e}", flush=True)
        sys.exit(SKIP)


_open_labs = weakref.WeakSet()


def _close_all_labs():
    for lab in list(_open_labs):
        lab.close()


atexit.register(_close_all_labs)


def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


class NetLab:
    def __init__(self, prefix=None, keep_tmp=False):
        """prefix: namespace name prefix; default "nl<pid>x<random>", unique per run. A prefix
        already used by existing namespaces is refused. keep_tmp: leave the temp dir (logs)."""
        self.prefix = prefix or f"nl{os.getpid()}x{secrets.token_hex(2)}"
        if not re.fullmatch(r"[A-Za-z0-9_.]{1,40}", self.prefix):
            raise ValueError(f"bad lab prefix {self.prefix!r}: letters, digits, _ and . only")
        self.keep_tmp = keep_tmp
        self.nodes = {}  # role -> Node
        self.sites = []
        self.procs = []
        self.tmp = None
        self._created = []  # namespaces, in creation order
        self._n = 0
        self._closed = False
        self._bridge_ports = 0

    # ---- lifetime -------------------------------------------------------------------------

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler, None):
                signal.signal(sig, _exit_on_signal)
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None and not (exc_type is SystemExit and exc.code in (0, None)):
                self.dump_logs()
        finally:
            self.close()
        return False

    def open(self):
        for pfx in reap_stale_labs():
            log(f"removed the namespaces of a killed lab, {pfx}")
        taken = [ns for ns in _list_ns() if ns.startswith(self.prefix + "-")]
        if taken:
            raise RuntimeError(f"lab prefix {self.prefix!r} in use by {taken} "
                               f"(remove with: python3 {__file__} cleanup {self.prefix})")
        _open_labs.add(self)
        self.tmp = tempfile.mkdtemp(prefix=f"netlab-{self.prefix}-")
        try:
            inet = self._add_ns("inet", None)
            self._ip(inet, "link", "add", "br0", "type", "bridge")
            self._ip(inet, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def close(self):
        """Kills every process, deletes every namespace, removes the temp dir. Idempotent; never
        raises (problems are printed)."""
        if self._closed:
            return
        self._closed = True
        _open_labs.discard(self)
        for p in self.procs:  # SIGTERM all first, then wait: one grace period, not one each
            if p.alive():
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + STOP_GRACE
        for p in reversed(self.procs):
            p.stop(grace=max(0.0, deadline - time.monotonic()))
        for ns in reversed(self._created):
            try:
                _kill_ns_processes(ns)
                r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True,
                                   timeout=10)
                if r.returncode != 0 and _ns_exists(ns):
                    log(f"cannot delete namespace {ns}: {r.stderr.strip()}")
            except Exception as e:  # noqa: BLE001 - keep cleaning the rest
                log(f"cleanup of {ns} failed: {e}")
        if self.tmp and not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp:
            log(f"kept {self.tmp}")

    def dump_logs(self, lines=40):
        for p in self.procs:
            text = p.log().splitlines()
            print(f"----- log of {p.name} in {p.ns} (pid {p.pid}, exit {p.poll()}), "
                  f"last {lines} lines -----")
            for line in text[-lines:]:
                print(f"  {line}")
        sys.stdout.flush()

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    # ---- building -------------------------------------------------------------------------

    def _ns_name(self, ns):
        if isinstance(ns, Node):
            return ns.ns
        if ns in self.nodes:
            return self.nodes[ns].ns
        return ns

    def _ip(self, node, *args):
        argv = ["ip", "-n", node.ns, *args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT)
        if p.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv)}` failed: {p.stderr.strip()}")

    def _sysctl(self, node, **values):
        # Written through /proc/sys inside the namespace (the `sysctl` tool may be absent).
        sets = "; ".join(f"echo {v} > /proc/sys/{k.replace('__', '/')}" for k, v in values.items())
        p = self.run(node, ["sh", "-c", sets], check=False)
        if p.returncode != 0:
            raise RuntimeError(f"sysctl in {node.ns} failed: {p.stderr.strip()}")

    def _add_ns(self, role, ip, router=False):
        if role in self.nodes:
            raise ValueError(f"namespace role {role!r} exists already")
        node = Node(self, role, ip)
        p = subprocess.run(["ip", "netns", "add", node.ns], capture_output=True, text=True,
                           timeout=CMD_TIMEOUT)
        if p.returncode != 0:
            raise RuntimeError(f"ip netns add {node.ns} failed: {p.stderr.strip()}")
        self._created.append(node.ns)
        self.nodes[role] = node
        self._ip(node, "link", "set", "lo", "up")
        # Forwarding only in routers (a new namespace may inherit the host's ip_forward).
        # No ICMP rate limit, so nmap sees every "port unreachable" (closed UDP ports) at once.
        # IPv4 only: no IPv6 link-local noise in the addresses agents report.
        self._sysctl(node, net__ipv4__ip_forward=1 if router else 0,
                     net__ipv4__icmp_ratelimit=0, net__ipv4__icmp_msgs_per_sec=100000,
                     net__ipv4__icmp_msgs_burst=100000,
                     net__ipv6__conf__all__disable_ipv6=1,
                     net__ipv6__conf__default__disable_ipv6=1)
        return node

    def _attach_to_bridge(self, node, ifname, cidrs):
        """veth from the inet bridge to `node` (named `ifname` there) with addresses `cidrs`."""
        inet = self.nodes["inet"]
        self._bridge_ports += 1
        port = f"p{self._bridge_ports}"
        self._ip(inet, "link", "add", port, "type", "veth", "peer", "name", ifname,
                 "netns", node.ns)
        self._ip(inet, "link", "set", port, "master", "br0")
        self._ip(inet, "link", "set", port, "up")
        for c in cidrs:
            self._ip(node, "addr", "add", c, "dev", ifname)
        self._ip(node, "link", "set", ifname, "up")

    def _bridge_node(self, role, ips):
        if role in self.nodes:
            return self.nodes[role]
        node = self._add_ns(role, ips[0])
        self._attach_to_bridge(node, "eth0", [f"{ip}/24" for ip in ips])
        return node

    def server(self):
        """The `srv` namespace: 10.200.0.1 and 10.200.0.2 (STUN alternate) on the bridge.
        Created on first call."""
        return self._bridge_node("srv", [SRV_IP, SRV_ALT_IP])

    def stranger(self):
        """The `stranger` namespace (10.200.0.250) that scans come from. Created on first call."""
        return self._bridge_node("stranger", [STRANGER_IP])

    def site(self, kind):
        """Adds site N (N = 1, 2, ... in call order) of NAT `kind` (one of KINDS) and returns
        its Site."""
        if kind not in KINDS:
            raise ValueError(f"unknown NAT kind {kind!r}; one of {', '.join(KINDS)}")
        n = len(self.sites) + 1
        if n > 200:
            raise ValueError("at most 200 sites")
        outside = f"10.200.0.{10 + n}"
        if kind == "none":
            dev = self._add_ns(f"d{n}", outside)
            self._attach_to_bridge(dev, "eth0", [f"{outside}/24"])
            site = Site(n, kind, None, dev, outside, outside)
        else:
            lan = f"192.168.{n}.0/24"
            gw, dev_ip = f"192.168.{n}.1", f"192.168.{n}.2"
            router = self._add_ns(f"r{n}", outside, router=True)
            self._attach_to_bridge(router, "wan", [f"{outside}/24"])
            dev = self._add_ns(f"d{n}", dev_ip)
            self._ip(router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                     "netns", dev.ns)
            self._ip(router, "addr", "add", f"{gw}/24", "dev", "lan")
            self._ip(router, "link", "set", "lan", "up")
            self._ip(dev, "addr", "add", f"{dev_ip}/24", "dev", "eth0")
            self._ip(dev, "link", "set", "eth0", "up")
            self._ip(dev, "route", "add", "default", "via", gw)
            rules = nat_ruleset(kind, outside, lan, dev_ip)
            p = self.run(router, ["nft", "-f", "-"], input=rules, check=False)
            if p.returncode != 0:
                raise RuntimeError(f"nft rules for {kind} in {router.ns} failed:\n{p.stderr}"
                                   f"\n{rules}")
            site = Site(n, kind, router, dev, outside, dev_ip)
        self.sites.append(site)
        return site

    # ---- running things -------------------------------------------------------------------

    def run(self, ns, argv, check=True, timeout=CMD_TIMEOUT, input=None, env=None):
        """Runs argv inside namespace `ns` (Node, role or full name); CompletedProcess with text
        output. check=True raises AssertionError on a non-zero exit."""
        name = self._ns_name(ns)
        p = subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True,
                           timeout=timeout, input=input, env=env)
        if check and p.returncode != 0:
            raise AssertionError(f"in {name}: `{' '.join(argv)}` exited {p.returncode}:\n"
                                 f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def popen(self, ns, argv, name=None, env=None, cwd=None):
        """Starts argv inside namespace `ns` in the background (own process group, output in a
        log file in the lab's temp dir). Returns a LabProc; it is stopped at exit."""
        self._n += 1
        name = name or os.path.basename(argv[0])
        path = self.path(f"{self._n:02d}-{name}.log")
        p = LabProc(name, self._ns_name(ns), argv, path, env=env, cwd=cwd)
        self.procs.append(p)
        return p

    # ---- scanning -------------------------------------------------------------------------

    def scan(self, target_ip, tcp="all", udp="top", top=200, udp_extra=(), states=("open",),
             min_rate=5000, max_retries=2, timeout=180):
        """nmap from the stranger namespace: a SYN scan (-sS) of `tcp` and a UDP scan (-sU) of
        `udp`, fast timing. tcp/udp: "all" (1-65535), "top" (the `top` most common ports from
        nmap-services), an nmap port list like "22,80,7000-7999", or None to skip. udp_extra:
        ports added to the UDP list. Returns [Port(proto, port, state, service)] whose state is
        in `states`, sorted. A UDP port that does not answer is "open|filtered" to nmap; inside
        the lab nothing filters unless a router drops, so pass states=("open", "open|filtered")
        to see those too. A host that drops everything (a NAT router) takes longest: every
        TCP port is sent 1 + max_retries probes at min_rate per second (about 40 s for all)."""
        if shutil.which("nmap") is None:
            raise Unavailable("nmap not installed")
        stranger = self.stranger()
        specs, kinds = [], []
        if tcp:
            specs.append("T:" + self._ports(tcp, "tcp", top))
            kinds.append("-sS")
        if udp:
            ulist = self._ports(udp, "udp", top)
            if udp_extra:
                ulist += "," + ",".join(str(x) for x in udp_extra)
            specs.append("U:" + ulist)
            kinds.append("-sU")
        if not specs:
            return []
        xml_path = self.path(f"nmap-{target_ip}-{self._n}.xml")
        self._n += 1
        argv = ["nmap", "-n", "-Pn", *kinds, "-p", ",".join(specs), "-T4",
                "--min-rate", str(min_rate), "--max-retries", str(max_retries), "--host-timeout",
                f"{timeout}s", "-e", "eth0", "-oX", xml_path, target_ip]
        self.run(stranger, argv, timeout=timeout + 30)
        root = ET.parse(xml_path).getroot()
        ports = []
        for el in root.iter("port"):
            st = el.find("state").get("state")
            svc = el.find("service")
            if st in states:
                ports.append(Port(el.get("protocol"), int(el.get("portid")), st,
                                  svc.get("name") if svc is not None else ""))
        # Ports sharing a state with many others are summarised as <extraports>, the port
        # numbers in its <extrareasons ports="1-21,23,...">.
        for ex in root.iter("extraports"):
            st = ex.get("state")
            if st not in states:
                continue
            for why in ex.iter("extrareasons"):
                for part in (why.get("ports") or "").split(","):
                    if not part:
                        continue
                    lo, _, hi = part.partition("-")
                    for n in range(int(lo), int(hi or lo) + 1):
                        ports.append(Port(why.get("proto"), n, st, ""))
        return sorted(ports)

    def scan_many(self, targets, tcp="all", udp="top", top=200, udp_extra=(), states=("open",),
                  min_rate=5000, max_retries=2, timeout=240):
        """scan() of several addresses in ONE nmap run: nmap probes the hosts in parallel, so N
        routers that drop everything take about as long as one (at min_rate packets per second
        overall, so raise it with N). Same arguments as scan(); the port lists apply to every
        target. Returns {target_ip: [Port, ...]} (sorted; every target present, [] when nothing
        matched `states`)."""
        if shutil.which("nmap") is None:
            raise Unavailable("nmap not installed")
        targets = list(targets)
        if not targets:
            return {}
        stranger = self.stranger()
        specs, kinds = [], []
        if tcp:
            specs.append("T:" + self._ports(tcp, "tcp", top))
            kinds.append("-sS")
        if udp or udp_extra:
            ulist = self._ports(udp, "udp", top) if udp else ""
            if udp_extra:
                ulist = ",".join(x for x in [ulist, *(str(p) for p in sorted(set(udp_extra)))]
                                 if x)
            specs.append("U:" + ulist)
            kinds.append("-sU")
        if not specs:
            return {t: [] for t in targets}
        xml_path = self.path(f"nmap-many-{self._n}.xml")
        self._n += 1
        argv = ["nmap", "-n", "-Pn", *kinds, "-p", ",".join(specs), "-T4",
                "--min-rate", str(min_rate), "--max-retries", str(max_retries), "--host-timeout",
                f"{timeout}s", "--min-hostgroup", str(len(targets)), "-e", "eth0", "-oX",
                xml_path, *targets]
        self.run(stranger, argv, timeout=timeout + 60)
        return _parse_nmap_hosts(ET.parse(xml_path).getroot(), states, targets)

    @staticmethod
    def _ports(spec, proto, top):
        if spec == "all":
            return "1-65535"
        if spec == "top":
            rows = []
            with open("/usr/share/nmap/nmap-services") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and not line.startswith("#"):
                        port, p = parts[1].split("/")
                        if p == proto:
                            rows.append((float(parts[2]), int(port)))
            rows.sort(reverse=True)
            return ",".join(str(port) for _, port in sorted(rows[:top], key=lambda r: r[1]))
        return str(spec)

    # ---- torii ----------------------------------------------------------------------------

    def start_toriid(self, extra_args=(), log_level="info"):
        """Starts toriid in the srv namespace (control 10.200.0.1:7443, STUN 10.200.0.1:3478 and
        alternate 10.200.0.2:3479, admin API on a unix socket in its data dir, so the `torii`
        CLI works from the host without entering any namespace). Returns a Toriid once the admin
        API answers."""
        t = Toriid(self, self.server())
        t.start(extra_args, log_level)
        return t


def _parse_nmap_hosts(root, states, targets=()):
    """{address: [Port]} from nmap XML with one <host> per target (see scan() for the
    <extraports> summaries). Targets without a <host> element map to []."""
    out = {t: [] for t in targets}
    for host in root.iter("host"):
        addr = host.find("address").get("addr")
        ports = out.setdefault(addr, [])
        for el in host.iter("port"):
            st = el.find("state").get("state")
            svc = el.find("service")
            if st in states:
                ports.append(Port(el.get("protocol"), int(el.get("portid")), st,
                                  svc.get("name") if svc is not None else ""))
        for ex in host.iter("extraports"):
            st = ex.get("state")
            if st not in states:
                continue
            for why in ex.iter("extrareasons"):
                for part in (why.get("ports") or "").split(","):
                    if not part:
                        continue
                    lo, _, hi = part.partition("-")
                    for n in range(int(lo), int(hi or lo) + 1):
                        ports.append(Port(why.get("proto"), n, st, ""))
        ports.sort()
    return out


# ---- torii helpers --------------------------------------------------------------------------

def torii_bin():
    """Folder with toriid, torii and torii-agent: $TORII_BIN, else build/release/apps or
    build/apps of the source tree."""
    if os.environ.get("TORII_BIN"):
        return os.environ["TORII_BIN"]
    for cand in (os.path.join(SRC, "build", "release", "apps"), os.path.join(SRC, "build", "apps")):
        if os.access(os.path.join(cand, "toriid"), os.X_OK):
            return cand
    return os.path.join(SRC, "build", "release", "apps")


def wait_until(predicate, timeout, what, interval=0.1):
    """Polls predicate() until truthy (returned) or `timeout` s pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - reported below
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} "
                                 f"(last: {last!r})")
        time.sleep(interval)


class Toriid:
    """toriid running in a lab namespace, with the admin CLI and agent helpers."""

    def __init__(self, lab, node):
        self.lab = lab
        self.node = node
        bindir = torii_bin()
        self.toriid = os.path.join(bindir, "toriid")
        self.torii = os.path.join(bindir, "torii")
        self.agent = os.path.join(bindir, "torii-agent")
        for exe in (self.toriid, self.torii, self.agent):
            if not os.access(exe, os.X_OK):
                raise Unavailable(f"{exe} not found or not executable (set TORII_BIN)")
        self.data = lab.path("toriid")
        self.control = f"{SRV_IP}:{CONTROL_PORT}"
        self.stun = f"{SRV_IP}:{STUN_PORT}"
        self.stun_alt = f"{SRV_ALT_IP}:{STUN_ALT_PORT}"
        self.api = "unix:" + os.path.join(self.data, "api.sock")
        self.proc = None
        self.fingerprint = None

    def start(self, extra_args=(), log_level="info"):
        argv = [self.toriid, "--data-dir", self.data, "--listen", self.control, "--stun",
                self.stun, "--stun-alt", self.stun_alt, "--api", self.api, "--advertise",
                self.control, "--log-level", log_level, *extra_args]
        p = self.lab.popen(self.node, argv, name="toriid")
        self.proc = p

        def ready():
            if not p.alive():
                raise AssertionError(f"toriid exited with {p.poll()} at start:\n{p.log()}")
            m = re.search(r"CA fingerprint \(SHA-256\): ([0-9a-f]{64})", p.log())
            if not m or not os.path.exists(os.path.join(self.data, "admin.token")):
                return None
            return m.group(1) if self.cli("group", "list", check=False).returncode == 0 else None

        self.fingerprint = wait_until(ready, 15, "toriid to answer on its admin API")
        return p

    def cli(self, *args, check=True, timeout=CMD_TIMEOUT):
        """`torii --data-dir D args...` from the host (the API is a unix socket). With --json and
        success: parsed JSON; else the CompletedProcess."""
        argv = [self.torii, "--data-dir", self.data, *args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"`torii {' '.join(args)}` exited {p.returncode}:\n"
                                 f"stdout: {p.stdout}\nstderr: {p.stderr}")
        if "--json" in args and p.returncode == 0:
            return json.loads(p.stdout)
        return p

    def add_device(self, device_id, group):
        return self.cli("device", "add", device_id, "--group", group, "--json")

    def device(self, device_id):
        return self.cli("device", "show", device_id, "--json")

    def enroll(self, node, dev, state=None):
        """Enrolls `dev` (dict from add_device) from inside `node`; returns the state dir."""
        state = state or self.lab.path(f"agent-{dev['id']}")
        self.lab.run(node, [self.agent, "enroll", "--server", self.control, "--ca-sha256",
                            self.fingerprint, "--id", dev["id"], "--token", dev["token"],
                            "--state-dir", state])
        return state

    def start_agent(self, node, state, keepalive="5s", extra=()):
        return self.lab.popen(node, [self.agent, "run", "--state-dir", state, "--keepalive",
                                     keepalive, *extra],
                              name=f"agent-{os.path.basename(state)}")

    def agent_status(self, state):
        p = subprocess.run([self.agent, "status", "--state-dir", state, "--json"],
                           capture_output=True, text=True, timeout=CMD_TIMEOUT)
        if p.returncode != 0:
            raise AssertionError(f"torii-agent status failed ({p.returncode}): {p.stderr}")
        return json.loads(p.stdout)

    # ---- peer-to-peer tunnels (A6-A11) --------------------------------------------------------

    @staticmethod
    def relay_args():
        """extra_args for start_toriid(): the UDP relay on srv's main address."""
        return ["--relay", f"{SRV_IP}:{RELAY_PORT}"]

    def peer(self, state, peer_id):
        """The entry for `peer_id` in `torii-agent status --json` peers of the agent in `state`
        (dict: id, state, path, endpoint, rtt_ms, rx_bytes, tx_bytes, method, ...), or None."""
        for p in self.agent_status(state).get("peers") or []:
            if p.get("id") == peer_id:
                return p
        return None

    def connect(self, state, peer_id, wait=True, timeout=CMD_TIMEOUT):
        """`torii-agent connect PEER --state-dir S [--wait]` (talks to the running agent over
        S/agent.sock, so it runs from the host). CompletedProcess; never raises on exit code."""
        argv = [self.agent, "connect", peer_id, "--state-dir", state, *(["--wait"] if wait else [])]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def disconnect(self, state, peer_id):
        return subprocess.run([self.agent, "disconnect", peer_id, "--state-dir", state],
                              capture_output=True, text=True, timeout=CMD_TIMEOUT)

    def audit(self, kind=None, after=None, limit=1000):
        """Audit events from `torii log --json` (oldest first), optionally only `kind` and only
        those with seq above `after`."""
        args = ["log", "--json", "-n", str(limit)]
        if after is not None:
            args += ["--after", str(after)]
        events = self.cli(*args).get("events") or []
        events.sort(key=lambda e: e.get("seq", 0))
        return [e for e in events if kind is None or e.get("kind") == kind]


# ---- command line ---------------------------------------------------------------------------

def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="netlab: namespaces with NAT routers (see the "
                                 "module docstring)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build a lab (srv, stranger, one site per KIND) and keep it "
                        "until Ctrl-C, printing how to enter each namespace")
    up.add_argument("kinds", nargs="*", default=list(KINDS), help=f"of {', '.join(KINDS)}")
    up.add_argument("--prefix")
    up.add_argument("--toriid", action="store_true", help="also start toriid in srv")
    cl = sub.add_parser("cleanup", help="kill processes in and delete namespaces PREFIX-*")
    cl.add_argument("prefix")
    sub.add_parser("list", help="list namespaces that look like labs")
    a = ap.parse_args(argv)
    if a.cmd == "cleanup":
        for ns in delete_namespaces(a.prefix):
            print(f"deleted {ns}")
        return 0
    if a.cmd == "list":
        for ns in _list_ns():
            if re.match(r"[A-Za-z0-9_.]+-(inet|srv|stranger|r\d+|d\d+)$", ns):
                print(ns)
        return 0
    require()
    with NetLab(a.prefix, keep_tmp=True) as lab:
        lab.server()
        lab.stranger()
        for k in a.kinds:
            s = lab.site(k)
            print(f"site {s.index} {k:16} device {s.device.ns} {s.device_ip}"
                  + (f" behind {s.router.ns} {s.outside_ip}" if s.router else ""))
        if a.toriid:
            t = lab.start_toriid()
            print(f"toriid: {t.control}, CLI: {t.torii} --data-dir {t.data} ...")
        print(f"enter a namespace: ip netns exec {lab.prefix}-d1 bash   (Ctrl-C here to tear down)")
        try:
            signal.pause()
        except (KeyboardInterrupt, SystemExit):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
