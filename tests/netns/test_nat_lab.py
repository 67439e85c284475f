#!/usr/bin/env python3
"""A3 through real NAT routers: one site of every netlab NAT kind (full-cone, restricted,
port-restricted, symmetric, none), each with an enrolled torii-agent; toriid's STUN service
(10.200.0.1:3478, alternate 10.200.0.2:3479, RFC 5780) must classify each device's NAT as its
kind in `torii device show --json` (nat_mapping, nat_filtering, nat_type). Also checks the
public endpoint the server learnt is the router's outside address. Exits 77 (skipped) when not
root or network namespaces / nftables are unavailable. Budget: under 60 s."""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netlab  # noqa: E402

BUDGET_S = 60

EI, AD, APD = "endpoint-independent", "address-dependent", "address-and-port-dependent"
# kind -> (nat_mapping, nat_filtering, nat_type); None: not asserted.
EXPECTED = {
    "full-cone": (EI, EI, "full-cone"),
    "restricted": (EI, AD, "restricted-cone"),
    "port-restricted": (EI, APD, "port-restricted-cone"),
    # Conntrack filters replies by address and port; mapping is what defines "symmetric".
    "symmetric": (APD, APD, "symmetric"),
    "none": ("no-nat", EI, "none"),
}


def check(msg):
    print(f"CHECK: {msg}", flush=True)


def ok(msg):
    print(f"  ok: {msg}", flush=True)


def main():
    netlab.skip_unless_available(("ip", "nft"))
    t0 = time.monotonic()
    with netlab.NetLab() as lab:
        check("lab: srv (toriid) + one site per NAT kind, each with an enrolled agent")
        tor = lab.start_toriid()
        tor.cli("group", "create", "lab")
        agents = {}  # kind -> (site, device id, state dir)
        for kind in netlab.KINDS:
            site = lab.site(kind)
            dev_id = f"site{site.index}-{kind}"
            state = tor.enroll(site.device, tor.add_device(dev_id, "lab"))
            tor.start_agent(site.device, state)
            agents[kind] = (site, dev_id, state)
        ok(f"lab {lab.prefix} built, toriid up, {len(agents)} agents started "
           f"({time.monotonic() - t0:.1f}s)")

        check("every agent finished NAT discovery and the server stored its report")

        def reported(kind):
            site, dev_id, state = agents[kind]

            def done():
                st = tor.agent_status(state)
                if st.get("state") != "established" or not st.get("nat_mapping"):
                    return None
                d = tor.device(dev_id)
                if not d.get("online") or d.get("nat_mapping") != st["nat_mapping"]:
                    return None
                return d
            return netlab.wait_until(done, max(5.0, BUDGET_S - 15 - (time.monotonic() - t0)),
                                     f"{dev_id}: NAT report in agent status and on the server")

        shown = {kind: reported(kind) for kind in netlab.KINDS}
        ok(f"all reported ({time.monotonic() - t0:.1f}s)")

        print(f"  {'kind':16} {'nat_mapping':28} {'nat_filtering':28} {'nat_type':22} "
              f"public_endpoint")
        for kind in netlab.KINDS:
            d = shown[kind]
            print(f"  {kind:16} {d['nat_mapping']:28} {d['nat_filtering']:28} "
                  f"{d['nat_type']:22} {d.get('public_endpoint')}")

        failures = []
        for kind in netlab.KINDS:
            site, dev_id, _ = agents[kind]
            d = shown[kind]
            check(f"{kind}: classified as {EXPECTED[kind]}, public address {site.outside_ip}")
            want_map, want_filter, want_type = EXPECTED[kind]
            got = (d["nat_mapping"], d["nat_filtering"], d["nat_type"])
            if (want_map, want_filter, want_type) != got:
                failures.append(f"{kind}: expected mapping/filtering/type {EXPECTED[kind]}, "
                                f"toriid reported {got}")
                continue
            pub = d.get("public_endpoint") or ""
            if pub.rpartition(":")[0] != site.outside_ip:
                failures.append(f"{kind}: public_endpoint {pub!r} is not on {site.outside_ip}")
                continue
            ok(f"{dev_id}: {got}, public {pub}")
        assert not failures, "NAT classification wrong:\n  " + "\n  ".join(failures)

    elapsed = time.monotonic() - t0
    assert elapsed < BUDGET_S, f"took {elapsed:.1f}s, budget {BUDGET_S}s"
    print(f"PASS test_nat_lab ({elapsed:.1f}s)")


if __name__ == "__main__":
    main()
