#!/usr/bin/env python3
"""A5 on loopback: clean closes in both directions and revocation.
 - agent SIGTERM: exit 0, TLS close_notify seen by the server (audit session.close), offline;
 - `torii device disconnect`: the server closes, the agent reconnects by itself;
 - `torii device revoke`: the live session drops within 1 s, the agent exits 3 and stays away,
   a later `torii-agent run` is refused (exit 3, audit auth.revoked);
 - toriid SIGTERM: agents see the close and go to backoff; toriid exits 0."""

import os
import signal
import sqlite3
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toriilab  # noqa: E402
from toriilab import check, ok  # noqa: E402

EXIT_REVOKED = 3
REVOKE_DROP_LIMIT_S = 1.0


def main():
    t0 = time.monotonic()
    with toriilab.Lab("close") as lab:
        s_term, a_term = lab.new_online_agent("c-term")
        s_disc, a_disc = lab.new_online_agent("c-disc")
        s_rev, a_rev = lab.new_online_agent("c-rev")

        # A5: the device closes: Close message, then TLS close_notify; the server records it.
        check("agent SIGTERM: exit 0, audit session.close with close_notify, device offline")
        seq = lab.last_seq()
        seen_online = lab.device("c-term")["last_seen_ms"]
        assert seen_online, "online device without last_seen"
        a_term.signal(signal.SIGTERM)
        rc = a_term.wait(10)
        assert rc == 0, f"agent exited {rc} on SIGTERM, expected 0\n{a_term.log()}"
        ev = lab.wait_audit("session.close", "c-term", detail_contains="close_notify",
                            after_seq=seq)
        lab.wait_online("c-term", online=False, timeout=2)
        st = lab.agent_status(s_term)
        assert st["state"] == "stopped", f"status after SIGTERM: {st['state']!r}"
        # A4: an offline device keeps its last presence (not "never" until the next periodic
        # presence flush, which is 10 s away).
        toriilab.wait_until(lambda: (lab.device("c-term")["last_seen_ms"] or 0) >= seen_online,
                            1.0, "c-term's last_seen to survive going offline")
        ok(f"exit 0, audited: {ev[0]['detail']}; last_seen kept")

        # A5: the server closes (administrator); the agent is not refused, so it comes back.
        check("`torii device disconnect`: session closed by the server, agent reconnects")
        seq = lab.last_seq()
        lab.cli("device", "disconnect", "c-disc")
        lab.wait_audit("session.close", "c-disc", detail_contains="administrator", after_seq=seq)
        toriilab.wait_until(lambda: lab.agent_status(s_disc)["reconnects"] >= 1, 10,
                            "c-disc agent to count a reconnect")
        lab.wait_audit("session.open", "c-disc", after_seq=seq, timeout=15)
        lab.wait_online("c-disc", timeout=10)
        lab.wait_established(s_disc)
        assert a_disc.poll() is None, f"agent exited ({a_disc.poll()}) after a disconnect"
        ok(f"online again, reconnects {lab.agent_status(s_disc)['reconnects']}")

        # A5: revocation ends the live session at once and for good.
        check(f"`torii device revoke`: session drops within {REVOKE_DROP_LIMIT_S}s, agent exits 3")
        seq = lab.last_seq()
        started = time.monotonic()
        lab.cli("device", "revoke", "c-rev")
        returned = time.monotonic()
        toriilab.wait_until(lambda: not lab.online("c-rev"), REVOKE_DROP_LIMIT_S,
                            "c-rev offline after revoke", interval=0.05)
        dropped = time.monotonic()
        assert dropped - returned <= REVOKE_DROP_LIMIT_S, \
            f"session dropped {dropped - returned:.2f}s after revoke returned"
        rc = a_rev.wait(5)
        exited = time.monotonic()
        assert rc == EXIT_REVOKED, f"revoked agent exited {rc}, expected {EXIT_REVOKED}\n" \
                                   f"{a_rev.log()}"
        st = lab.agent_status(s_rev)
        assert st["state"] == "revoked", f"revoked agent status {st['state']!r}"
        d = lab.device("c-rev")
        assert d["state"] == "revoked" and d["revoked_at"], f"device after revoke: {d}"
        lab.wait_audit("device.revoke", "c-rev", after_seq=seq)
        lab.wait_audit("session.close", "c-rev", detail_contains="revoked", after_seq=seq)
        ok(f"offline {dropped - returned:.2f}s after the command returned "
           f"({dropped - started:.2f}s after it started); agent exited 3 after "
           f"{exited - returned:.2f}s")

        check("the revoked agent does not come back; a new `torii-agent run` is refused (exit 3)")
        time.sleep(1.5)  # longer than the first backoff delay (at most 1 s)
        assert not lab.find_audit("session.open", "c-rev", after_seq=seq), \
            "a revoked device opened a session"
        seq = lab.last_seq()
        again = lab.start_agent(s_rev)
        rc = again.wait(15)
        assert rc == EXIT_REVOKED, f"agent on a revoked device exited {rc}, expected 3\n" \
                                   f"{again.log()}"
        assert "revoked" in again.log(), f"agent output does not say revoked:\n{again.log()}"
        ev = lab.wait_audit("auth.revoked", "c-rev", after_seq=seq)
        assert not lab.online("c-rev"), "revoked device online"
        ok(f"refused, audited: {ev[0]['detail']}")

        # A5: the server shuts down cleanly; the connected agents see the close and retry.
        check("toriid SIGTERM: exits 0, both connected agents see the close and back off")
        a_term2 = lab.start_agent(s_term)
        lab.wait_established(s_term)
        lab.wait_online("c-term")
        assert lab.agent_status(s_disc)["state"] == "established"
        seq = lab.last_seq()
        rc = lab.stop_server()
        assert rc == 0, f"toriid exited {rc} on SIGTERM\n{lab.server.log()}"

        def saw_close(state):
            st = lab.agent_status(state)
            return st if st["state"] in ("backoff", "connecting") else None

        for state, proc in ((s_disc, a_disc), (s_term, a_term2)):
            st = toriilab.wait_until(lambda: saw_close(state), 5,
                                     f"agent in {os.path.basename(state)} in backoff/connecting")
            # status.json's last_error moves on with the first failed reconnect (the first
            # backoff can be 0.5 s), so the agent's log is the record of how the session ended.
            toriilab.wait_until(
                lambda: "session ended: closed by server: server shutting down" in proc.log(), 5,
                f"agent in {os.path.basename(state)} to log the server's shutdown close")
            assert proc.poll() is None, f"agent exited ({proc.poll()}) on server shutdown"
            ok(f"{os.path.basename(state)}: {st['state']}, logged 'closed by server: server "
               f"shutting down'")
        # The server wrote its closes to the audit log before it stopped.
        db = sqlite3.connect(os.path.join(lab.data, "torii.db"), timeout=10)
        try:
            rows = db.execute("SELECT device_id, detail FROM audit WHERE seq > ? AND "
                              "kind = 'session.close'", (seq,)).fetchall()
            stop = db.execute("SELECT count(*) FROM audit WHERE kind = 'server.stop'").fetchone()
        finally:
            db.close()
        closed = {d for d, detail in rows if "shutdown" in detail}
        assert closed == {"c-disc", "c-term"}, f"shutdown closes audited for {closed} ({rows})"
        assert stop[0] == 1, "no server.stop audit event"
        ok("toriid exit 0; session.close (shutdown) audited for both devices")

        check("an agent in backoff stops at once on SIGTERM (exit 0, state stopped)")
        for state, proc in ((s_disc, a_disc), (s_term, a_term2)):
            t = time.monotonic()
            proc.signal(signal.SIGTERM)
            rc = proc.wait(3)
            assert rc == 0, f"agent exited {rc} on SIGTERM during backoff\n{proc.log()}"
            st = lab.agent_status(state)
            assert st["state"] == "stopped", f"status after SIGTERM: {st['state']!r}"
            ok(f"{os.path.basename(state)}: exit 0 after {time.monotonic() - t:.2f}s")

    print(f"PASS test_close_revoke ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
