#!/usr/bin/env python3
"""Agent footprint (issue 4, target 5): the memory of one torii-agent with its server session
and N idle peer tunnels, memory per additional peer, the stripped binary size and the shared
libraries it loads.

   <P>-inet: bridge br0, 10.200.0.0/24 (tests/netns/netlab.py, "none" sites: no NAT)
 ---+-------------+-------------+-------------+---- ... ----+-------------
 <P>-srv        <P>-d1        <P>-d2        <P>-d3          <P>-d(N+1)
 toriid         measured      peer-1        peer-2          peer-N
 10.200.0.1     agent         agent         agent           agent
 (+ relay)      10.200.0.11   .0.12         .0.13           ...

Each agent runs in its own namespace (its TUN interface carries the overlay route, so two agents
cannot share one), all in group "fp", with the default keepalive (25 s). Steps:
  1. all agents online (session established, overlay address, TUN up); idle --idle s; sample the
     measured agent ("0 peers": server session only).
  2. for each count in --peers (e.g. 10,30): `torii-agent connect peer-i --wait` from the
     measured agent for the peers not yet connected (every tunnel must be direct), one
     `ping -c 3` to each new peer's overlay address (the data channel carries traffic once),
     then no traffic for --idle s (keepalives and the 5 s path pings only); sample.
A sample is /proc/PID/status (VmRSS, RssAnon, RssFile, VmHWM, Threads), /proc/PID/smaps_rollup
(Pss, private/shared clean/dirty) and a per-mapping breakdown from /proc/PID/smaps (the binary,
each shared library, heap, other anonymous memory, stacks). Per-peer memory = RSS delta / peers
between consecutive samples. The binary is measured with `strip -o TMP` + stat; the libraries
are the .so files mapped by the running agent.

  sudo bench/agent_footprint.py [--peers 10,30] [--idle 15] [--json] [--keep-tmp]
                                [--save-smaps DIR] [--hold S]
  TORII_BIN=build/release/apps (default: build/release/apps of this tree)

Needs root, iproute2, nftables (netlab), ping, strip. Everything runs in namespaces the script
creates; every process and namespace is removed on exit (normal, error, Ctrl-C, SIGTERM), see
netlab.NetLab."""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "netns"))
import netlab  # noqa: E402

GROUP = "fp"


def status_fields(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            v = v.strip()
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize", "VmData",
                     "VmStk"):
                out[k] = int(v.split()[0])  # kB
            elif k == "Threads":
                out[k] = int(v)
    return out


def smaps_rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def smaps_breakdown(pid):
    """{category: {"rss": kB, "pss": kB, "private": kB}} by mapping: the binary, each library
    (basename), [heap], [stack], anon (other anonymous: thread stacks, mmap'd malloc arenas and
    large blocks), other ([vdso], ...)."""
    cats = {}
    cur = None
    exe = os.path.realpath(f"/proc/{pid}/exe")
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
            if head:
                name = head.group(1).strip()
                if not name:
                    cur = "anon"
                elif name == exe or name.startswith(exe + " "):
                    cur = "torii-agent (binary)"
                elif name.startswith("/"):
                    cur = os.path.basename(name.split(" ")[0])
                else:
                    cur = name if name in ("[heap]", "[stack]") else "other"
                cats.setdefault(cur, {"rss": 0, "pss": 0, "private": 0})
                continue
            m = re.match(r"^(Rss|Pss|Private_Clean|Private_Dirty):\s+(\d+) kB", line)
            if m and cur:
                k = m.group(1)
                key = "private" if k.startswith("Private") else k.lower()
                cats[cur][key] += int(m.group(2))
    return cats


def sample(pid, label, peers):
    st = status_fields(pid)
    ro = smaps_rollup(pid)
    return {
        "label": label,
        "peers": peers,
        "vmrss_kb": st.get("VmRSS"),
        "vmhwm_kb": st.get("VmHWM"),
        "rss_anon_kb": st.get("RssAnon"),
        "rss_file_kb": st.get("RssFile"),
        "vmsize_kb": st.get("VmSize"),
        "threads": st.get("Threads"),
        "pss_kb": ro.get("Pss"),
        "private_kb": ro.get("Private_Clean", 0) + ro.get("Private_Dirty", 0),
        "shared_kb": ro.get("Shared_Clean", 0) + ro.get("Shared_Dirty", 0),
        "private_dirty_kb": ro.get("Private_Dirty"),
        "breakdown": smaps_breakdown(pid),
    }


def libraries(pid):
    libs = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and ".so" in parts[5]:
                libs.add(parts[5].strip())
    return sorted(libs)


def binary_sizes(path):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "torii-agent.stripped")
        subprocess.run(["strip", "-o", out, path], check=True, capture_output=True)
        stripped = os.stat(out).st_size
    return {"path": os.path.realpath(path), "size_bytes": os.stat(path).st_size,
            "stripped_bytes": stripped}


def main():
    ap = argparse.ArgumentParser(
        description="torii-agent memory with N idle peers (issue 4 target 5); see the module "
        "docstring for the set-up.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--peers", default="10,30",
                    help="peer counts to sample at, ascending, comma-separated (default 10,30)")
    ap.add_argument("--idle", type=float, default=15.0,
                    help="seconds without traffic before each sample (default 15)")
    ap.add_argument("--keepalive", default="25s", help="agents' --keepalive (default 25s, the "
                    "agent's default)")
    ap.add_argument("--json", action="store_true", help="JSON on stdout (progress on stderr)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the lab's temp dir (logs)")
    ap.add_argument("--hold", type=float, default=0, metavar="S",
                    help="keep the lab running S seconds after the last sample (inspection: "
                    "the measured agent's PID is printed)")
    ap.add_argument("--save-smaps", metavar="DIR",
                    help="copy the measured agent's /proc/PID/smaps at each sample into DIR")
    a = ap.parse_args()
    try:
        counts = [int(x) for x in a.peers.split(",") if x.strip()]
    except ValueError:
        ap.error("--peers: integers, e.g. 10,30")
    if not counts or counts != sorted(counts) or counts[0] < 1 or counts[-1] > 150:
        ap.error("--peers: ascending counts between 1 and 150")
    if a.idle < 0 or a.idle > 600:
        ap.error("--idle: 0-600 s")

    def say(msg):
        print(msg, file=sys.stderr if a.json else sys.stdout, flush=True)

    try:
        netlab.require(("ip", "nft", "ping", "strip"))
    except netlab.Unavailable as e:
        print(f"agent_footprint: {e}", file=sys.stderr)
        return 2

    result = {"peers_requested": counts, "idle_s": a.idle, "keepalive": a.keepalive,
              "samples": []}
    with netlab.NetLab(keep_tmp=a.keep_tmp) as lab:
        tor = lab.start_toriid(netlab.Toriid.relay_args(), log_level="warn")
        result["binary"] = binary_sizes(tor.agent)
        tor.cli("group", "create", GROUP)
        n = counts[-1] + 1
        say(f"{n} agents (1 measured + {n - 1} peers), each in its own namespace")
        agents = []  # (id, node, state dir, LabProc)
        for i in range(n):
            dev_id = "measured" if i == 0 else f"peer-{i}"
            site = lab.site("none")
            d = tor.add_device(dev_id, GROUP)
            state = tor.enroll(site.device, d)
            proc = tor.start_agent(site.device, state, keepalive=a.keepalive)
            agents.append((dev_id, site.device, state, proc))

        def online(state):
            s = tor.agent_status(state)
            return s.get("state") == "established" and s.get("overlay_ipv4") and s.get("interface")

        for dev_id, _node, state, _p in agents:
            netlab.wait_until(lambda: online(state), 60, f"{dev_id} online with its TUN")
        me_id, me_node, me_state, me_proc = agents[0]
        pid = me_proc.pid
        overlay = {dev_id: tor.agent_status(state)["overlay_ipv4"]
                   for dev_id, _n, state, _p in agents}

        def idle_then_sample(label, peers):
            say(f"  idle {a.idle:.0f} s, then sample ({label})")
            time.sleep(a.idle)
            if not me_proc.alive():
                raise AssertionError(f"the measured agent exited:\n{me_proc.log()}")
            s = sample(pid, label, peers)
            if a.save_smaps:
                os.makedirs(a.save_smaps, exist_ok=True)
                shutil.copyfile(f"/proc/{pid}/smaps",
                                os.path.join(a.save_smaps, f"smaps-{peers}-peers.txt"))
            say(f"  {label}: VmRSS {s['vmrss_kb']} kB, Pss {s['pss_kb']} kB, private "
                f"{s['private_kb']} kB, threads {s['threads']}")
            result["samples"].append(s)
            return s

        idle_then_sample("session only", 0)
        result["libraries"] = libraries(pid)
        connected = 0
        for target in counts:
            t0 = time.monotonic()
            for i in range(connected + 1, target + 1):
                peer = f"peer-{i}"
                p = tor.connect(me_state, peer, wait=True, timeout=40)
                if p.returncode != 0:
                    raise AssertionError(f"connect {peer} failed: {p.stdout}{p.stderr}")
                e = tor.peer(me_state, peer)
                if not e or e.get("path") != "direct":
                    raise AssertionError(f"tunnel to {peer} is not direct: {e}")
                lab.run(me_node, ["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "2",
                                  overlay[peer]], timeout=20)
            say(f"  connected peers {connected + 1}..{target} in {time.monotonic() - t0:.1f} s")
            connected = target
            idle_then_sample(f"{target} peers", target)
        up = [e for e in tor.agent_status(me_state).get("peers") or [] if e.get("state") == "up"]
        if len(up) != connected:
            raise AssertionError(f"{len(up)} tunnels up after the idle wait, expected {connected}")
        if a.hold > 0:
            say(f"  holding {a.hold:.0f} s: measured agent PID {pid} in {me_node.ns}")
            time.sleep(a.hold)
        # The peers themselves (one tunnel each), for reference.
        peer_rss = [status_fields(p.pid)["VmRSS"] for _i, _n, _s, p in agents[1:] if p.alive()]
        result["peer_agents_vmrss_kb_median"] = statistics.median(peer_rss) if peer_rss else None

    s = result["samples"]
    per_peer = []
    for prev, cur in zip(s, s[1:]):
        dp = cur["peers"] - prev["peers"]
        per_peer.append({"from": prev["peers"], "to": cur["peers"],
                         "vmrss_kb_per_peer": (cur["vmrss_kb"] - prev["vmrss_kb"]) / dp,
                         "pss_kb_per_peer": (cur["pss_kb"] - prev["pss_kb"]) / dp,
                         "private_kb_per_peer": (cur["private_kb"] - prev["private_kb"]) / dp})
    result["per_peer"] = per_peer
    at10 = next((x for x in s if x["peers"] == 10), None)
    result["target"] = {"idle_rss_limit_kb": 8 * 1024,
                        "vmrss_kb_at_10_peers": at10["vmrss_kb"] if at10 else None,
                        "met": (at10["vmrss_kb"] <= 8 * 1024) if at10 else None}

    if a.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    b = result["binary"]
    print(f"\ntorii-agent {b['path']}: {b['size_bytes'] / 1e6:.2f} MB as built, "
          f"stripped {b['stripped_bytes'] / 1e6:.2f} MB ({b['stripped_bytes']:,} bytes)")
    print("shared libraries: " + ", ".join(os.path.basename(x) for x in result["libraries"]))
    print(f"\n{'sample':14} {'VmRSS kB':>9} {'Pss kB':>7} {'private':>8} {'shared':>7} "
          f"{'RssAnon':>8} {'RssFile':>8} {'VmHWM':>7} {'threads':>7}")
    for x in s:
        print(f"{x['label']:14} {x['vmrss_kb']:9d} {x['pss_kb']:7d} {x['private_kb']:8d} "
              f"{x['shared_kb']:7d} {x['rss_anon_kb']:8d} {x['rss_file_kb']:8d} "
              f"{x['vmhwm_kb']:7d} {x['threads']:7d}")
    print("(kB; private = private clean + dirty, shared = shared clean + dirty, smaps_rollup)")
    for p in per_peer:
        print(f"per peer, {p['from']} -> {p['to']} peers: VmRSS {p['vmrss_kb_per_peer']:.1f} kB, "
              f"Pss {p['pss_kb_per_peer']:.1f} kB, private {p['private_kb_per_peer']:.1f} kB")
    if result["peer_agents_vmrss_kb_median"]:
        print("a peer agent (1 tunnel): median VmRSS "
              f"{result['peer_agents_vmrss_kb_median']:.0f} kB")
    t = result["target"]
    if t["vmrss_kb_at_10_peers"] is not None:
        print(f"target: idle RSS <= 8192 kB with 10 peers: {t['vmrss_kb_at_10_peers']} kB, "
              f"{'met' if t['met'] else 'NOT met'}")
    print("\nRSS by mapping (kB), last sample vs session only:")
    first, last = s[0]["breakdown"], s[-1]["breakdown"]
    keys = sorted(set(first) | set(last), key=lambda k: -last.get(k, {"rss": 0})["rss"])
    print(f"  {'mapping':28} {'rss 0':>7} {'rss ' + str(s[-1]['peers']):>7} "
          f"{'private':>8}")
    for k in keys:
        f0 = first.get(k, {"rss": 0, "private": 0})
        f1 = last.get(k, {"rss": 0, "private": 0})
        if f0["rss"] == 0 and f1["rss"] == 0:
            continue
        print(f"  {k:28} {f0['rss']:7d} {f1['rss']:7d} {f1['private']:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
