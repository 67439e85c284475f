#!/usr/bin/env python3
"""A1, A2, D1 refusals on loopback: bad, reused and expired enrollment tokens; a certificate
from another CA, an expired certificate from the real CA, and a Hello claiming another device's
ID. Each refusal must be clear, issue nothing, stop the agent (exit 4) and be audited."""

import os
import shutil
import sqlite3
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toriilab  # noqa: E402
from toriilab import check, ok  # noqa: E402

EXIT_REFUSED = 4


def assert_not_issued(lab, p, device_id):
    assert p.returncode != 0, f"enroll of {device_id} succeeded:\n{p.stdout}"
    assert not os.path.exists(os.path.join(p.state, "device.crt")), \
        f"a refused enrollment left {p.state}/device.crt"
    assert not os.path.exists(os.path.join(p.state, "agent.json")), \
        f"a refused enrollment left {p.state}/agent.json"


def fake_state_dir(lab, real_state, name, cert, key):
    """A state dir with the real agent.json and ca.crt (so TLS to the server verifies) but the
    given certificate and key."""
    fake = lab.path(name)
    os.makedirs(fake, mode=0o700)
    for f in ("agent.json", "ca.crt"):
        shutil.copy(os.path.join(real_state, f), os.path.join(fake, f))
    shutil.copy(cert, os.path.join(fake, "device.crt"))
    shutil.copy(key, os.path.join(fake, "device.key"))
    os.chmod(os.path.join(fake, "device.key"), 0o600)
    return fake


def run_refused_agent(lab, state, what):
    """Runs the agent on `state`: it must be refused and exit 4 by itself."""
    agent = lab.start_agent(state, keepalive="1s")
    rc = agent.wait(15)
    assert rc == EXIT_REFUSED, (f"{what}: agent exited {rc}, expected {EXIT_REFUSED} "
                                f"(refused)\n{agent.log()}")
    st = lab.agent_status(state)
    assert st["state"] == "refused", f"{what}: agent status state {st['state']!r}, not 'refused'"
    return agent


def main():
    t0 = time.monotonic()
    with toriilab.Lab("refusals") as lab:
        # A1/D1: wrong token -> clear error, nothing issued, audited.
        check("bad token: refused with a clear error, nothing issued, audit enroll.bad_token")
        bad = lab.add_device("bad-tok")
        p = lab.enroll(bad, token="tt1_" + "A" * 43, check=False)
        assert_not_issued(lab, p, "bad-tok")
        assert "token is not valid" in p.stderr, f"unclear bad-token error: {p.stderr!r}"
        d = lab.devices()["bad-tok"]
        assert d["state"] == "pending" and not d["cert_serial"], f"device changed: {d}"
        lab.wait_audit("enroll.bad_token", "bad-tok")
        # The genuine token still works afterwards (a failed attempt does not burn it).
        lab.enroll(bad, state=lab.path("bad-tok-retry"))
        ok(f"refused: {p.stderr.strip()}")

        # A1: tokens are single-use.
        check("reused token: second enrollment refused, audit enroll.token_used")
        used = lab.add_device("reuse")
        s_used = lab.enroll(used)
        p = lab.enroll(used, state=lab.path("reuse-again"), check=False)
        assert_not_issued(lab, p, "reuse")
        assert "already used" in p.stderr, f"unclear reused-token error: {p.stderr!r}"
        lab.wait_audit("enroll.token_used", "reuse")
        ok(f"refused: {p.stderr.strip()}")

        # A1: expired token (the minimum --ttl is 60s, so age it in the database).
        check("expired token: refused, audit enroll.token_expired")
        exp = lab.add_device("expired-tok")
        db = sqlite3.connect(os.path.join(lab.data, "torii.db"), timeout=10)
        try:
            with db:
                n = db.execute("UPDATE enrollment_tokens SET expires_at=0 WHERE device_id=?",
                               ("expired-tok",)).rowcount
        finally:
            db.close()
        assert n == 1, f"expected to age one token row, updated {n}"
        p = lab.enroll(exp, check=False)
        assert_not_issued(lab, p, "expired-tok")
        assert "expired" in p.stderr, f"unclear expired-token error: {p.stderr!r}"
        lab.wait_audit("enroll.token_expired", "expired-tok")
        ok(f"refused: {p.stderr.strip()}")

        # A1: a device revoked before it enrolled cannot use its (valid, unused) token.
        check("revoked before enrollment: refused, audit enroll.revoked")
        rv = lab.add_device("revoked-early")
        lab.cli("device", "revoke", "revoked-early")
        p = lab.enroll(rv, check=False)
        assert_not_issued(lab, p, "revoked-early")
        assert "revoked" in p.stderr, f"unclear revoked-device error: {p.stderr!r}"
        lab.wait_audit("enroll.revoked", "revoked-early")
        ok(f"refused: {p.stderr.strip()}")

        # A2/D1: a device certificate from another CA, shaped like a real one, claiming an
        # enrolled device. TLS to the server still verifies (the real ca.crt is kept).
        check("certificate from another CA: session refused, audit auth.bad_certificate, exit 4")
        fake_ca_key, fake_ca_crt = toriilab.make_ca(lab.path("fakeca"))
        fkey = toriilab.make_key(lab.path("fakeca", "device.key"))
        fcrt = toriilab.sign_device_cert(lab.path("fakeca", "work"), fake_ca_crt, fake_ca_key,
                                         fkey, "reuse", "g1", lab.path("fakeca", "device.crt"))
        fake = fake_state_dir(lab, s_used, "state-fakeca", fcrt, fkey)
        seq = lab.last_seq()
        run_refused_agent(lab, fake, "foreign-CA certificate")
        ev = lab.wait_audit("auth.bad_certificate", "reuse", after_seq=seq)
        assert not lab.find_audit("session.open", "reuse", after_seq=seq), \
            "a session was opened with a foreign-CA certificate"
        assert not lab.online("reuse"), "device online with a foreign-CA certificate"
        ok(f"audited: {ev[0]['detail']}")

        # A2: an expired certificate signed by the real CA, for the device's own key.
        check("expired certificate from the real CA: refused, audit auth.bad_certificate "
              "'certificate has expired', exit 4")
        ex = lab.add_device("expired-cert")
        s_ex = lab.enroll(ex)
        ecrt = toriilab.sign_device_cert(
            lab.path("expwork"), os.path.join(lab.data, "ca.crt"),
            os.path.join(lab.data, "ca.key"), os.path.join(s_ex, "device.key"), "expired-cert",
            "g1", lab.path("expired.crt"), startdate="20200101000000Z",
            enddate="20200102000000Z")
        o = toriilab.openssl("x509", "-in", ecrt, "-noout", "-enddate", "-subject")
        assert "2020" in o.stdout, f"expired test certificate is not from 2020: {o.stdout}"
        shutil.copy(ecrt, os.path.join(s_ex, "device.crt"))
        seq = lab.last_seq()
        run_refused_agent(lab, s_ex, "expired certificate")
        ev = lab.wait_audit("auth.bad_certificate", "expired-cert",
                            detail_contains="certificate has expired", after_seq=seq)
        assert not lab.online("expired-cert"), "device online with an expired certificate"
        ok(f"audited: {ev[0]['detail']}")

        # A3/D1: the Hello claims another existing device's ID.
        check("wrong device ID in agent.json: refused, audit auth.wrong_device_id, exit 4")
        victim = lab.add_device("victim")
        lab.enroll(victim)
        liar = lab.add_device("liar")
        s_liar = lab.enroll(liar)
        ident_path = os.path.join(s_liar, "agent.json")
        with open(ident_path) as f:
            text = f.read()
        assert '"liar"' in text, f"agent.json does not hold the device ID: {text}"
        with open(ident_path, "w") as f:
            f.write(text.replace('"liar"', '"victim"'))
        seq = lab.last_seq()
        run_refused_agent(lab, s_liar, "wrong device ID")
        ev = lab.wait_audit("auth.wrong_device_id", "liar", after_seq=seq)
        assert "victim" in ev[0]["detail"], f"audit detail does not name the claim: {ev[0]}"
        assert not lab.online("victim") and not lab.online("liar"), "a liar got online"
        ok(f"audited: {ev[0]['detail']}")

        check("every refusal counted in torii_auth_failures_total and the server still serves")
        m = lab.metrics()
        assert m.get("torii_auth_failures_total", 0) >= 7, \
            f"torii_auth_failures_total = {m.get('torii_auth_failures_total')}, expected >= 7"
        assert lab.server_alive(), "toriid died"
        ok(f"torii_auth_failures_total {m['torii_auth_failures_total']:.0f}")

    print(f"PASS test_refusals ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    try:
        main()
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"command timed out: {e}") from e
