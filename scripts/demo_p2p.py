#!/usr/bin/env python3
"""Demo of peer-to-peer tunnels (A6-A11), part two of scripts/demo.sh.

Builds a small lab of network namespaces (tests/netns/netlab.py): toriid on a simulated
internet, camera-1 behind a port-restricted NAT (Linux masquerade), plc-7 behind an
address-restricted NAT, and sensor-3 behind a symmetric NAT (masquerade fully-random). Each agent
brings up its TUN interface with its overlay address. camera-1 pings plc-7's overlay address (the
tunnel opens on demand, hole punched, direct), sends it a file over TCP through the tunnel, then
reaches sensor-3 through toriid's relay (a symmetric NAT with random ports against a
port-restricted one leaves nothing to punch; the relay still cannot read the traffic) and shows
`torii-agent status`. Everything runs inside namespaces the demo creates and removes; the host's
own network is never touched. Needs root.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "netns"))
import netlab  # noqa: E402


def step(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(lab, node, argv):
    print("$ " + " ".join(argv), flush=True)
    p = lab.run(node, argv, check=False, timeout=60)
    sys.stdout.write(p.stdout + p.stderr)
    return p


def main():
    try:
        netlab.require(("ip", "nft", "ping", "iperf3"))
    except netlab.Unavailable as e:
        print(f"demo_p2p: skipped ({e}); run as root with nftables, iperf3", file=sys.stderr)
        return 0
    with netlab.NetLab("demo") as lab:
        srv = lab.server()
        sites = {"camera-1": lab.site("port-restricted"), "plc-7": lab.site("restricted"),
                 "sensor-3": lab.site("symmetric")}
        step("toriid on the lab's internet, with its UDP relay")
        tor = lab.start_toriid(netlab.Toriid.relay_args())
        tor.cli("group", "create", "factory")
        states = {}
        for dev, site in sites.items():
            d = tor.add_device(dev, "factory")
            states[dev] = tor.enroll(site.device, d)
            tor.start_agent(site.device, states[dev], keepalive="5s")
            print(f"  {dev:9s} behind a {site.kind} NAT ({site.device_ip} -> {site.outside_ip})")
        netlab.wait_until(lambda: all(
            tor.agent_status(s).get("overlay_ipv4") and tor.device(d)["nat_type"]
            for d, s in states.items()) or None, 20, "agents online with overlay addresses")
        step("Devices, their NAT types and overlay addresses")
        print(tor.cli("device", "list").stdout)
        plc = tor.device("plc-7")["overlay_ipv4"]
        sensor = tor.device("sensor-3")["overlay_ipv4"]
        cam = sites["camera-1"].device

        step(f"camera-1 pings plc-7 at {plc}: the first packet opens the tunnel")
        show(lab, cam, ["ping", "-c", "4", "-i", "0.3", plc])
        step("A TCP transfer through the tunnel (iperf3, 3 s)")
        lab.popen(sites["plc-7"].device, ["iperf3", "-s", "-1", "-B", plc], name="iperf3-s")
        time.sleep(0.5)
        show(lab, cam, ["iperf3", "-c", plc, "-t", "3", "-f", "m"])
        step(f"camera-1 pings sensor-3 at {sensor}: symmetric NAT, random ports: relayed")
        show(lab, cam, ["ping", "-c", "4", "-i", "0.5", sensor])
        step("torii-agent status on camera-1")
        p = __import__("subprocess").run([tor.agent, "status", "--state-dir", states["camera-1"]],
                                         capture_output=True, text=True)
        print(p.stdout)
        step("The server brokered the tunnels; it never saw their keys (audit log)")
        for e in [e for e in tor.audit() if e["kind"].startswith("peer.")]:
            print(f"  {e['kind']:16s} {e['device_id']:10s} {e['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
