"""Shared harness for the loopback integration tests (not a test itself).

    with toriilab.Lab("name") as lab:
        lab.cli("group", "create", "g1")
        dev = lab.add_device("dev1", group="g1")      # {id, token, enroll_command, ...}
        state = lab.enroll(dev)                       # agent state directory
        agent = lab.start_agent(state, keepalive="1s")
        lab.wait_until(lambda: lab.device("dev1")["online"], 10, "dev1 online")

Lab picks free ports, starts toriid in a temporary directory with all four addresses
(control and admin API on 127.0.0.1, STUN on 127.0.0.1, STUN alternate on 127.0.0.2), waits until
the admin API answers, and on exit ALWAYS kills every process it started (whole process groups,
SIGCONT first for stopped ones) and removes its temporary directory, printing the tail of every
process log when the test failed. Every wait is bounded.

Environment: TORII_BIN (folder with toriid, torii, torii-agent; default build/release/apps).
Standard library only.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("TORII_SRC", os.path.dirname(os.path.dirname(HERE)))
BIN = os.environ.get("TORII_BIN", os.path.join(SRC, "build", "release", "apps"))

TORIID = os.path.join(BIN, "toriid")
TORII = os.path.join(BIN, "torii")
AGENT = os.path.join(BIN, "torii-agent")

PRIMARY_IP = "127.0.0.1"
ALT_IP = "127.0.0.2"

# Timeouts (seconds) for one CLI call and for process start/stop.
CLI_TIMEOUT = 15
START_TIMEOUT = 15
STOP_TIMEOUT = 10


def check(msg):
    """Prints what the test is about to check (so ctest output tells the story)."""
    print(f"CHECK: {msg}", flush=True)


def ok(msg):
    print(f"  ok: {msg}", flush=True)


class Fatal(Exception):
    """Raised by a wait_until predicate to stop waiting at once (e.g. the process died)."""


def wait_until(predicate, timeout, what, interval=0.05):
    """Polls predicate() until it returns a truthy value (returned) or timeout seconds pass.

    Raises AssertionError naming `what` and the last value or exception seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Fatal:
            raise
        except Exception as e:  # noqa: BLE001 - reported in the assertion message
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def free_tcp_port(ip=PRIMARY_IP):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def free_udp_port_pair():
    """Two UDP ports each free on both PRIMARY_IP and ALT_IP (the STUN server binds every
    address/port combination for RFC 5780)."""
    for _ in range(50):
        held = []
        try:
            ports = []
            for _ in range(2):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind((PRIMARY_IP, 0))
                p = s.getsockname()[1]
                s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s2)
                s2.bind((ALT_IP, p))
                ports.append(p)
            return ports
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free UDP port pair on 127.0.0.1 and 127.0.0.2")


def pem_to_der(pem_text):
    m = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem_text, re.S)
    assert m, "no PEM certificate found"
    return base64.b64decode("".join(m.group(1).split()))


def sha256_hex_of_cert_file(path):
    with open(path) as f:
        return hashlib.sha256(pem_to_der(f.read())).hexdigest()


def file_mode(path):
    return os.stat(path).st_mode & 0o777


def run(argv, timeout=CLI_TIMEOUT, **kw):
    """subprocess.run with captured text output and a bounded time."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def openssl(*args, cwd=None):
    p = run(["openssl", *args], cwd=cwd)
    assert p.returncode == 0, f"openssl {' '.join(args)} failed: {p.stderr}"
    return p


def make_ca(directory, name="torii CA fake"):
    """A self-signed P-256 CA (key, cert) with openssl, in `directory`."""
    os.makedirs(directory, exist_ok=True)
    key = os.path.join(directory, "ca.key")
    crt = os.path.join(directory, "ca.crt")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", crt, "-subj", f"/CN={name}", "-days", "30",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return key, crt


def make_key(path):
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    os.chmod(path, 0o600)
    return path


def sign_device_cert(workdir, ca_crt, ca_key, device_key, device_id, group, out,
                     startdate=None, enddate=None):
    """Signs a device certificate shaped like toriid's (CN=<id>, OU=<group>, SAN URI
    torii:device:<id>, EKU clientAuth, CA:FALSE) for device_key with `openssl ca`, which (unlike
    `openssl x509 -req` in OpenSSL 3.0) accepts explicit start/end dates, e.g. in the past."""
    os.makedirs(workdir, exist_ok=True)
    open(os.path.join(workdir, "index.txt"), "w").close()
    with open(os.path.join(workdir, "serial"), "w") as f:
        f.write(os.urandom(8).hex() + "\n")
    cnf = os.path.join(workdir, "ca.cnf")
    with open(cnf, "w") as f:
        f.write(f"""
[ca]
default_ca = CA_default
[CA_default]
dir = {workdir}
database = {workdir}/index.txt
new_certs_dir = {workdir}
serial = {workdir}/serial
default_md = sha256
default_days = 30
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
[policy_any]
organizationalUnitName = supplied
commonName = supplied
[device_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:torii:device:{device_id}
""")
    csr = os.path.join(workdir, "device.csr")
    openssl("req", "-new", "-key", device_key, "-subj", f"/OU={group}/CN={device_id}", "-out", csr)
    args = ["ca", "-batch", "-config", cnf, "-cert", ca_crt, "-keyfile", ca_key, "-in", csr,
            "-out", out, "-extensions", "device_ext", "-notext", "-preserveDN"]
    if startdate:
        args += ["-startdate", startdate]
    if enddate:
        args += ["-enddate", enddate]
    openssl(*args)
    return out


def parse_metrics(text):
    """Prometheus text -> {'name' or 'name{labels}': float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            pass
    return out


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when the test process dies, even by SIGKILL (ctest
    timeout), so no toriid or agent outlives its test. Linux prctl(PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except Exception:  # noqa: BLE001 - best effort; cleanup in Lab.__exit__ still applies
        pass


def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


class PortInUse(Fatal):
    pass


class Proc:
    """A started process with its log file, run in its own process group."""

    def __init__(self, name, argv, log_path, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                      cwd=cwd, preexec_fn=_die_with_parent)
        self.pid = self.popen.pid

    def poll(self):
        return self.popen.poll()

    def wait(self, timeout):
        """Exit code, or AssertionError if still running after timeout seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} (pid {self.pid}) still running after {timeout}s")

    def signal(self, sig):
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def kill_group(self):
        """SIGCONT + SIGKILL to the whole process group, then reap. Safe to call twice."""
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()


class Lab:
    def __init__(self, name, config=None, start=True, group="g1"):
        """config: TOML text for toriid --config (addresses still come from flags).
        group: a group created at start (None for none)."""
        self.name = name
        self.config_text = config
        self.autostart = start
        self.initial_group = group
        self.procs = []
        self.server = None
        self.fingerprint = None
        self._n = 0

    # ---- lifetime -------------------------------------------------------------------------

    def __enter__(self):
        # SIGTERM/SIGHUP (e.g. an interrupted ctest) unwind through __exit__ like an error, so
        # processes and temp dirs are still cleaned up. (SIGKILL cannot be caught: the children
        # then die with us through PR_SET_PDEATHSIG.)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _exit_on_signal)
        for exe in (TORIID, TORII, AGENT):
            if not os.access(exe, os.X_OK):
                raise RuntimeError(f"{exe} not found or not executable (set TORII_BIN)")
        self.tmp = tempfile.mkdtemp(prefix=f"torii-it-{self.name}-")
        try:
            self.data = os.path.join(self.tmp, "server")
            self.config_path = None
            if self.config_text is not None:
                self.config_path = os.path.join(self.tmp, "toriid.toml")
                with open(self.config_path, "w") as f:
                    f.write(self.config_text)
            for attempt in range(3):
                self.pick_ports()
                if not self.autostart:
                    break
                try:
                    self.start_server()
                    break
                except PortInUse:
                    # Another process took a port between our probe and toriid's bind.
                    if attempt == 2:
                        raise
                    shutil.rmtree(self.data, ignore_errors=True)
            if self.autostart:
                if self.initial_group:
                    self.cli("group", "create", self.initial_group)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None:
                self.dump_logs()
        finally:
            for p in reversed(self.procs):
                p.kill_group()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def pick_ports(self):
        self.control_port = free_tcp_port()
        self.api_port = free_tcp_port()
        self.stun_port, self.stun_alt_port = free_udp_port_pair()
        self.control = f"{PRIMARY_IP}:{self.control_port}"
        self.api = f"{PRIMARY_IP}:{self.api_port}"
        self.stun = f"{PRIMARY_IP}:{self.stun_port}"
        self.stun_alt = f"{ALT_IP}:{self.stun_alt_port}"

    def dump_logs(self, lines=40):
        for p in self.procs:
            text = p.log().splitlines()
            print(f"----- log of {p.name} (pid {p.pid}, exit {p.poll()}), last {lines} lines -----")
            for line in text[-lines:]:
                print(f"  {line}")
        sys.stdout.flush()

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def _spawn(self, name, argv):
        self._n += 1
        p = Proc(name, argv, self.path(f"{self._n:02d}-{name}.log"))
        self.procs.append(p)
        return p

    # ---- server ---------------------------------------------------------------------------

    def server_argv(self):
        argv = [TORIID]
        if self.config_path:
            argv += ["--config", self.config_path]
        argv += ["--data-dir", self.data, "--listen", self.control, "--stun", self.stun,
                 "--stun-alt", self.stun_alt, "--api", self.api, "--advertise", self.control,
                 "--relay", "127.0.0.1:0"]  # loopback only, any free port
        return argv

    def start_server(self):
        """Starts toriid and waits until it printed the CA fingerprint and the API answers."""
        p = self._spawn("toriid", self.server_argv())
        self.server = p

        def ready():
            if p.poll() is not None:
                if "in use" in p.log():
                    raise PortInUse(p.log())
                raise Fatal(f"toriid exited with {p.poll()} at start:\n{p.log()}")
            m = re.search(r"CA fingerprint \(SHA-256\): ([0-9a-f]{64})", p.log())
            if not m:
                return None
            if not os.path.exists(os.path.join(self.data, "admin.token")):
                return None
            r = self.cli("group", "list", check=False)
            return m.group(1) if r.returncode == 0 else None

        self.fingerprint = wait_until(ready, START_TIMEOUT, "toriid to answer on its admin API")
        return p

    def stop_server(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Signals toriid and returns its exit code (bounded wait)."""
        p = self.server
        p.signal(sig)
        return p.wait(timeout)

    def restart_server(self):
        rc = self.stop_server()
        assert rc == 0, f"toriid exited with {rc} on SIGTERM"
        return self.start_server()

    def server_alive(self):
        return self.server is not None and self.server.poll() is None

    # ---- admin CLI ------------------------------------------------------------------------

    def cli(self, *args, check=True, timeout=CLI_TIMEOUT, extra_global=()):
        """Runs `torii --data-dir D args...`. With --json and success: the parsed JSON.
        Otherwise the CompletedProcess. check=True raises AssertionError on a non-zero exit."""
        argv = [TORII, "--data-dir", self.data, *extra_global, *args]
        p = run(argv, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"`torii {' '.join(args)}` exited {p.returncode}:\n"
                                 f"stdout: {p.stdout}\nstderr: {p.stderr}")
        if "--json" in args and p.returncode == 0:
            try:
                return json.loads(p.stdout)
            except json.JSONDecodeError as e:
                raise AssertionError(f"`torii {' '.join(args)}` printed invalid JSON ({e}): "
                                     f"{p.stdout!r}")
        return p

    def add_device(self, device_id=None, group=None, ttl=None):
        args = ["device", "add"]
        if device_id:
            args.append(device_id)
        args += ["--group", group or self.initial_group, "--json"]
        if ttl:
            args += ["--ttl", ttl]
        return self.cli(*args)

    def devices(self):
        """{id: device} from `torii device list --json`."""
        return {d["id"]: d for d in self.cli("device", "list", "--json")["devices"]}

    def device(self, device_id):
        return self.cli("device", "show", device_id, "--json")

    def online(self, device_id):
        return bool(self.devices()[device_id]["online"])

    def audit(self, limit=1000):
        return self.cli("log", "--json", "-n", str(limit))["events"]

    def audit_kinds(self, device_id=None):
        return [e["kind"] for e in self.audit()
                if device_id is None or e["device_id"] == device_id]

    def find_audit(self, kind, device_id=None, detail_contains=None, after_seq=0):
        return [e for e in self.audit()
                if e["kind"] == kind and e["seq"] > after_seq
                and (device_id is None or e["device_id"] == device_id)
                and (detail_contains is None or detail_contains in e["detail"])]

    def wait_audit(self, kind, device_id=None, detail_contains=None, after_seq=0, timeout=10):
        return wait_until(
            lambda: self.find_audit(kind, device_id, detail_contains, after_seq), timeout,
            f"audit event {kind} (device {device_id or '*'}"
            + (f", detail containing {detail_contains!r}" if detail_contains else "") + ")")

    def last_seq(self):
        ev = self.cli("log", "--json", "-n", "1")["events"]
        return ev[-1]["seq"] if ev else 0

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.api}/metrics", timeout=5) as r:
            assert r.status == 200, f"/metrics answered {r.status}"
            return parse_metrics(r.read().decode())

    # ---- agent ----------------------------------------------------------------------------

    def enroll_argv(self, device_id, token, state, fingerprint=None, server=None):
        return [AGENT, "enroll", "--server", server or self.control,
                "--ca-sha256", fingerprint or self.fingerprint, "--id", device_id,
                "--token", token, "--state-dir", state]

    def enroll(self, dev, state=None, fingerprint=None, check=True, token=None):
        """Enrolls device `dev` (the dict from add_device). Returns the state directory, or with
        check=False the CompletedProcess (with .state set)."""
        state = state or self.path(f"agent-{dev['id']}")
        p = run(self.enroll_argv(dev["id"], token or dev["token"], state, fingerprint))
        p.state = state
        if not check:
            return p
        assert p.returncode == 0, (f"enroll of {dev['id']} failed ({p.returncode}):\n"
                                   f"{p.stdout}{p.stderr}")
        return state

    def start_agent(self, state, keepalive="1s", extra=()):
        # Loopback tests share the host's namespace: no TUN interface there (the netns tests in
        # tests/netns exercise tunnels inside namespaces they create).
        argv = [AGENT, "run", "--state-dir", state, "--keepalive", keepalive, "--no-tunnel", *extra]
        return self._spawn(f"torii-agent-{os.path.basename(state)}", argv)

    def agent_status(self, state):
        p = run([AGENT, "status", "--state-dir", state, "--json"])
        assert p.returncode == 0, f"torii-agent status failed ({p.returncode}): {p.stderr}"
        return json.loads(p.stdout)

    def wait_established(self, state, timeout=10):
        return wait_until(lambda: self.agent_status(state).get("state") == "established",
                          timeout, f"agent in {state} to be established")

    def wait_online(self, device_id, online=True, timeout=10):
        return wait_until(lambda: self.online(device_id) == online, timeout,
                          f"device {device_id} online={online} in `torii device list`")

    def new_online_agent(self, device_id, keepalive="1s", group=None):
        """add + enroll + run + wait until established and online; returns (state, proc)."""
        dev = self.add_device(device_id, group=group)
        state = self.enroll(dev)
        proc = self.start_agent(state, keepalive=keepalive)
        self.wait_established(state)
        self.wait_online(device_id)
        return state, proc
