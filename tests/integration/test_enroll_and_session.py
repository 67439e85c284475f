#!/usr/bin/env python3
"""A1-A4 on loopback: server first start (CA, admin token), enrollment with the CA fingerprint
(plain hex and the colon form openssl prints), the agent session with its attributes, and a
toriid restart that keeps the CA and token while the agent reconnects by itself."""

import ipaddress
import os
import re
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toriilab  # noqa: E402
from toriilab import check, ok  # noqa: E402


def main():
    t0 = time.monotonic()
    with toriilab.Lab("enroll") as lab:
        d = lab.data

        # A1/A2: the first start creates the CA and the admin token, readable only by the owner.
        check("first start created ca.crt (PEM), ca.key 0600 and admin.token 0600")
        ca_crt = os.path.join(d, "ca.crt")
        with open(ca_crt) as f:
            pem = f.read()
        assert pem.startswith("-----BEGIN CERTIFICATE-----"), f"ca.crt is not PEM: {pem[:60]!r}"
        assert "(new CA created)" in lab.server.log(), "first start did not report a new CA"
        for name in ("ca.key", "admin.token"):
            mode = toriilab.file_mode(os.path.join(d, name))
            assert mode == 0o600, f"{name} has mode {oct(mode)}, expected 0o600"
        with open(os.path.join(d, "admin.token")) as f:
            token_before = f.read()
        assert len(token_before.strip()) >= 32, "admin token too short"
        ok("ca.crt PEM, ca.key and admin.token are 0600")

        # A1: the printed fingerprint is SHA-256 over the CA certificate's DER.
        check("printed CA fingerprint == sha256(DER of ca.crt), by python and by openssl")
        fp_py = toriilab.sha256_hex_of_cert_file(ca_crt)
        assert lab.fingerprint == fp_py, (f"toriid printed {lab.fingerprint}, "
                                          f"sha256(DER(ca.crt)) is {fp_py}")
        o = toriilab.openssl("x509", "-in", ca_crt, "-noout", "-fingerprint", "-sha256")
        colon_fp = o.stdout.strip().split("=", 1)[1]  # AB:CD:... (openssl's form)
        assert colon_fp.replace(":", "").lower() == lab.fingerprint, (
            f"openssl fingerprint {colon_fp} != printed {lab.fingerprint}")
        ok(f"fingerprint {lab.fingerprint}")

        # A1: enrollment with a wrong fingerprint is refused before anything is sent.
        check("enroll with a wrong --ca-sha256 is refused (server not trusted)")
        dev_x = lab.add_device("dev-wrongpin")
        wrong = ("0" if lab.fingerprint[0] != "0" else "1") + lab.fingerprint[1:]
        p = lab.enroll(dev_x, fingerprint=wrong, check=False)
        assert p.returncode != 0, "enroll with a wrong CA fingerprint succeeded"
        assert "fingerprint" in p.stderr, f"unclear error for a wrong pin: {p.stderr!r}"
        assert not os.path.exists(os.path.join(p.state, "device.crt")), "device.crt written"
        ok(f"refused: {p.stderr.strip()}")

        # A1: enroll with the plain hex fingerprint.
        check("enroll dev1 with the hex fingerprint; device.key is 0600")
        dev1 = lab.add_device("dev1")
        assert dev1["id"] == "dev1" and dev1["token"], f"device add answered {dev1}"
        assert lab.fingerprint in dev1["enroll_command"], "enroll_command lacks the fingerprint"
        s1 = lab.enroll(dev1)
        for name in ("device.key", "device.crt", "ca.crt", "agent.json"):
            assert os.path.exists(os.path.join(s1, name)), f"enroll left no {name}"
        mode = toriilab.file_mode(os.path.join(s1, "device.key"))
        assert mode == 0o600, f"agent device.key has mode {oct(mode)}, expected 0o600"
        assert toriilab.sha256_hex_of_cert_file(os.path.join(s1, "ca.crt")) == lab.fingerprint, \
            "the agent's ca.crt is not the server's CA"
        dl = lab.devices()["dev1"]
        assert dl["state"] == "active", f"dev1 state after enroll is {dl['state']}"
        ok("dev1 enrolled, key 0600, state active")

        # A1: the colon form (as openssl prints it, upper case) is accepted too.
        check("enroll dev2 with the colon-separated fingerprint")
        dev2 = lab.add_device("dev2")
        s2 = lab.enroll(dev2, fingerprint=colon_fp)
        assert os.path.exists(os.path.join(s2, "device.crt")), "colon form: no device.crt"
        ok(f"dev2 enrolled with {colon_fp[:11]}...")

        # A2-A4: the session and the attributes the server learns (A3).
        check("dev1 agent: status established, device online with NAT/addresses/version/rtt")
        agent = lab.start_agent(s1, keepalive="1s")
        lab.wait_established(s1)
        st = lab.agent_status(s1)
        assert st["state"] == "established" and st["running"], f"agent status {st}"
        assert st["device_id"] == "dev1" and st["group"] == "g1", f"agent status {st}"
        ver = toriilab.run([toriilab.AGENT, "--version"]).stdout.split()[-1]

        def attributes_known():
            dv = lab.devices()["dev1"]
            need = ("nat_type", "public_endpoint", "agent_version", "last_seen")
            if not dv["online"] or any(not dv.get(k) for k in need) or dv["rtt_ms"] is None:
                return None
            return dv

        dv = toriilab.wait_until(attributes_known, 10, "dev1 online with all attributes")
        assert dv["nat_type"] == "none", f"nat_type on loopback is {dv['nat_type']!r}, not 'none'"
        assert re.fullmatch(r"127\.0\.0\.1:\d+", dv["public_endpoint"]), \
            f"public_endpoint {dv['public_endpoint']!r} is not 127.0.0.1:PORT"
        assert dv["agent_version"] == ver, f"agent_version {dv['agent_version']!r} != {ver!r}"
        assert isinstance(dv["rtt_ms"], int) and dv["rtt_ms"] >= 0, f"rtt_ms {dv['rtt_ms']!r}"
        assert isinstance(dv["local_addresses"], list), "local_addresses is not a list"
        for a in dv["local_addresses"]:
            ip = ipaddress.ip_address(a)
            assert not ip.is_loopback, f"local_addresses lists loopback {a}"
        assert dv["group"] == "g1" and dv["state"] == "active", f"device {dv}"
        shown = lab.device("dev1")
        assert shown["online"] and shown["nat_type"] == "none", f"device show: {shown}"
        assert lab.find_audit("enroll.ok", "dev1") and lab.find_audit("session.open", "dev1"), \
            "audit lacks enroll.ok / session.open for dev1"
        ok(f"online: nat {dv['nat_type']}, public {dv['public_endpoint']}, local "
           f"{dv['local_addresses']}, agent {dv['agent_version']}, rtt {dv['rtt_ms']} ms, "
           f"last_seen {dv['last_seen']}")

        # Restart: same CA, same admin token; the agent reconnects by itself (backoff, A5).
        check("toriid restart keeps the CA fingerprint and admin token; agent reconnects alone")
        lab.restart_server()  # a new toriid process with its own log
        assert "(new CA created)" not in lab.server.log(), "restart created a new CA"
        assert lab.fingerprint == fp_py, (f"fingerprint changed on restart: {fp_py} -> "
                                          f"{lab.fingerprint}")
        with open(os.path.join(d, "admin.token")) as f:
            assert f.read() == token_before, "admin token changed on restart"
        assert toriilab.file_mode(os.path.join(d, "admin.token")) == 0o600
        assert toriilab.sha256_hex_of_cert_file(ca_crt) == fp_py, "ca.crt changed on restart"
        assert agent.poll() is None, f"agent exited ({agent.poll()}) when the server restarted"
        lab.wait_online("dev1", timeout=20)
        lab.wait_established(s1, timeout=10)
        st = lab.agent_status(s1)
        assert st["reconnects"] >= 1, f"agent status shows reconnects={st['reconnects']}"
        ok(f"same fingerprint, agent back online after {st['reconnects']} reconnect(s)")

    print(f"PASS test_enroll_and_session ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
