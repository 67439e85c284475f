#!/usr/bin/env python3
"""A4 on loopback: ECHO keepalive every --keepalive of idle time, offline detection by the server
after keepalive*3+2s of silence (agent frozen with SIGSTOP), reconnection after SIGCONT, and the
agent's own dead-server detection (toriid frozen with SIGSTOP, 3 missed ECHOs)."""

import os
import signal
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toriilab  # noqa: E402
from toriilab import check, ok  # noqa: E402

KEEPALIVE_S = 1.0
OFFLINE_AFTER_S = KEEPALIVE_S * 3 + 2  # limits.hpp: interval * kMissedEchoes + kOfflineGrace
MARGIN_S = 2.0  # server timer granularity (100 ms) + polling + CLI latency, under load


def main():
    t0 = time.monotonic()
    with toriilab.Lab("keepalive") as lab:
        state, agent = lab.new_online_agent("ka1", keepalive="1s")
        try:
            check("ECHOs flow: torii_echoes_total grows and the agent counts echoes_sent")
            e0 = lab.metrics()["torii_echoes_total"]
            sent0 = lab.agent_status(state).get("echoes_sent", 0)
            e1 = toriilab.wait_until(
                lambda: (lambda v: v if v >= e0 + 2 else None)(lab.metrics()["torii_echoes_total"]),
                KEEPALIVE_S * 2 + 2, "torii_echoes_total to grow by 2")
            sent1 = lab.agent_status(state).get("echoes_sent", 0)
            assert sent1 > sent0, f"agent echoes_sent did not grow ({sent0} -> {sent1})"
            ok(f"torii_echoes_total {e0:.0f} -> {e1:.0f}, agent echoes_sent {sent0} -> {sent1}")

            # A4: a frozen agent sends nothing; the server must mark it offline in time.
            check(f"SIGSTOP agent: offline within {OFFLINE_AFTER_S:.0f}s + {MARGIN_S}s margin, "
                  "audit session.offline")
            seq = lab.last_seq()
            agent.signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            # Its last message may have arrived just before the stop, so the deadline counts
            # from the stop, plus the margin.
            toriilab.wait_until(lambda: not lab.online("ka1"), OFFLINE_AFTER_S + MARGIN_S,
                                "ka1 to be marked offline", interval=0.1)
            took = time.monotonic() - stopped_at
            assert took >= OFFLINE_AFTER_S - KEEPALIVE_S - 0.5, \
                f"marked offline after only {took:.1f}s (expected about {OFFLINE_AFTER_S:.0f}s)"
            ev = lab.wait_audit("session.offline", "ka1", after_seq=seq, timeout=2)
            m = lab.metrics()
            assert m["torii_offline_timeouts_total"] >= 1, \
                f"torii_offline_timeouts_total = {m['torii_offline_timeouts_total']}"
            assert m["torii_sessions_active"] == 0, \
                f"torii_sessions_active = {m['torii_sessions_active']} after offline"
            ok(f"offline after {took:.1f}s: {ev[0]['detail']}")

            check("SIGCONT: the agent notices, reconnects (reconnects >= 1) and is online again")
            agent.signal(signal.SIGCONT)
            lab.wait_online("ka1", timeout=15)
            lab.wait_established(state, timeout=10)
            st = lab.agent_status(state)
            assert st["reconnects"] >= 1, f"agent status reconnects = {st['reconnects']}"
            assert agent.poll() is None, f"agent exited ({agent.poll()})"
            lab.wait_audit("session.open", "ka1", after_seq=seq)
            ok(f"established again, reconnects {st['reconnects']}")

            # A4, agent side: a frozen server answers no ECHO; after kMissedEchoes (3) unanswered
            # ones the agent gives the session up and reconnects once the server is back.
            check("SIGSTOP toriid: the agent declares the server dead after 3 missed ECHOs; "
                  "SIGCONT: established again")
            r0 = lab.agent_status(state)["reconnects"]
            lab.server.signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            toriilab.wait_until(lambda: "no ECHO reply" in agent.log(), 3 * KEEPALIVE_S + 2 + 2,
                                "the agent to log 'no ECHO reply'", interval=0.1)
            took = time.monotonic() - frozen_at
            toriilab.wait_until(lambda: lab.agent_status(state)["state"] != "established", 2,
                                "agent status to leave 'established'")
            ok(f"agent gave up after {took:.1f}s")
            lab.server.signal(signal.SIGCONT)
            lab.wait_established(state, timeout=20)
            lab.wait_online("ka1", timeout=5)
            st = lab.agent_status(state)
            assert st["reconnects"] > r0, f"reconnects {r0} -> {st['reconnects']}"
            assert agent.poll() is None and lab.server_alive(), "a process died"
            ok(f"established again, reconnects {st['reconnects']}")
        finally:
            # Never leave a stopped process behind, whatever failed above.
            for p in (agent, lab.server):
                try:
                    p.signal(signal.SIGCONT)
                except OSError:
                    pass

    print(f"PASS test_keepalive_offline ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
