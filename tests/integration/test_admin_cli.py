#!/usr/bin/env python3
"""The admin CLI (torii) and the admin API against a live toriid on loopback: help of every
command, groups, device add with and without an ID, clear errors with exit 1 (duplicates,
unknown device, bad names), a wrong admin token (HTTP 401), human `torii log`, and the
Prometheus metrics the operator relies on."""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toriilab  # noqa: E402
from toriilab import check, ok  # noqa: E402

HELP_COMMANDS = {
    toriilab.TORII: [[], ["group"], ["group", "create"], ["group", "list"], ["device"],
                     ["device", "add"], ["device", "list"], ["device", "show"],
                     ["device", "revoke"], ["device", "disconnect"], ["log"]],
    toriilab.AGENT: [[], ["enroll"], ["run"], ["status"]],
    toriilab.TORIID: [[]],
}


def expect_error(lab, args, needle, what):
    p = lab.cli(*args, check=False)
    assert p.returncode == 1, f"{what}: `torii {' '.join(args)}` exited {p.returncode}, expected 1"
    assert needle in p.stderr, f"{what}: stderr {p.stderr!r} does not say {needle!r}"
    ok(f"{what}: exit 1, {p.stderr.strip().splitlines()[0]}")
    return p


def main():
    t0 = time.monotonic()

    check("--help of every command and subcommand exits 0 with a usage text")
    for exe, cmds in HELP_COMMANDS.items():
        for cmd in cmds:
            p = toriilab.run([exe, *cmd, "--help"])
            name = " ".join([os.path.basename(exe), *cmd])
            assert p.returncode == 0, f"`{name} --help` exited {p.returncode}: {p.stderr}"
            assert "Usage:" in p.stdout, f"`{name} --help` printed no usage: {p.stdout!r}"
    ok(f"{sum(len(c) for c in HELP_COMMANDS.values())} help texts")

    with toriilab.Lab("admin") as lab:
        check("group create / group list --json")
        g = lab.cli("group", "create", "fleet", "--json")
        assert g.get("name") == "fleet", f"group create --json answered {g}"
        groups = lab.cli("group", "list", "--json")["groups"]
        names = sorted(x["name"] for x in groups)
        assert names == ["fleet", "g1"], f"group list --json: {names}"
        assert all(x.get("created_at") for x in groups), f"groups without created_at: {groups}"
        ok(f"groups {names}")

        check("duplicate group: exit 1 with a message")
        expect_error(lab, ["group", "create", "g1"], "already exists", "duplicate group")
        expect_error(lab, ["group", "create", "bad group!"], "invalid group name", "bad group name")

        check("device add without an ID: the server generates one")
        dev = lab.cli("device", "add", "--group", "fleet", "--json")
        for k in ("id", "group", "token", "expires_at", "enroll_command"):
            assert dev.get(k), f"device add --json lacks {k}: {dev}"
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", dev["id"]), f"bad id {dev['id']}"
        assert dev["group"] == "fleet", f"generated device in group {dev['group']}"
        cmd = dev["enroll_command"]
        for part in (f"--id {dev['id']}", f"--token {dev['token']}", lab.fingerprint,
                     f"--server {lab.control}"):
            assert part in cmd, f"enroll_command lacks {part!r}: {cmd}"
        listed = lab.devices()
        assert dev["id"] in listed and listed[dev["id"]]["state"] == "pending", \
            f"generated device not listed as pending: {listed.get(dev['id'])}"
        dev2 = lab.cli("device", "add", "--group", "fleet", "--json")
        assert dev2["id"] != dev["id"] and dev2["token"] != dev["token"], "IDs/tokens repeat"
        # The printed command works as is (here with a state dir of ours).
        argv = cmd.split()
        assert argv[0] == "torii-agent", f"enroll_command does not start with torii-agent: {cmd}"
        i = argv.index("--state-dir")
        argv[i + 1] = lab.path("from-enroll-command")
        p = toriilab.run([toriilab.AGENT, *argv[1:]])
        assert p.returncode == 0, f"the printed enroll_command failed: {p.stderr}"
        ok(f"generated id {dev['id']}, enroll_command works")

        check("device errors: duplicate ID, unknown group, bad ID, TTL out of range -> exit 1")
        lab.add_device("known")
        expect_error(lab, ["device", "add", "known", "--group", "g1"], "already exists",
                     "duplicate device")
        expect_error(lab, ["device", "add", "x1", "--group", "nogroup"], "no group",
                     "unknown group")
        expect_error(lab, ["device", "add", "bad id!", "--group", "g1"], "invalid device ID",
                     "bad device ID")
        expect_error(lab, ["device", "add", "x2", "--group", "g1", "--ttl", "10s"], "60 s",
                     "TTL below the minimum")

        check("unknown device: show/revoke/disconnect exit 1 with 'no device'")
        for sub in ("show", "revoke", "disconnect"):
            expect_error(lab, ["device", sub, "nope"], "no device", f"device {sub} nope")
        expect_error(lab, ["device", "disconnect", "known"], "not online",
                     "disconnect an offline device")

        check("device show --json and device list (human)")
        shown = lab.device("known")
        assert shown["id"] == "known" and shown["online"] is False, f"device show: {shown}"
        p = lab.cli("device", "list")
        assert p.stdout.splitlines()[0].split()[:3] == ["ID", "GROUP", "STATE"], \
            f"device list header: {p.stdout.splitlines()[0]!r}"
        assert re.search(r"^known\s+g1\s+pending", p.stdout, re.M), f"device list:\n{p.stdout}"
        ok("device show and list")

        check("a wrong admin token: HTTP 401 from the API, clear CLI error, counted")
        m0 = lab.metrics()["torii_admin_unauthorized_total"]
        wrong = lab.path("wrong.token")
        with open(wrong, "w") as f:
            f.write("0" * 64 + "\n")
        os.chmod(wrong, 0o600)
        p = lab.cli("group", "list", check=False, extra_global=["--token-file", wrong])
        assert p.returncode == 1, f"wrong token: exit {p.returncode}"
        assert "invalid admin token" in p.stderr and "not accepted" in p.stderr, \
            f"wrong token: unclear error {p.stderr!r}"
        req = urllib.request.Request(f"http://{lab.api}/v1/groups",
                                     headers={"Authorization": "Bearer " + "0" * 64})
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError("the admin API accepted a wrong token")
        except urllib.error.HTTPError as e:
            assert e.code == 401, f"wrong token: HTTP {e.code}, expected 401"
            body = json.loads(e.read().decode())
            assert "invalid admin token" in body.get("error", ""), f"401 body {body}"
        try:
            urllib.request.urlopen(f"http://{lab.api}/v1/devices", timeout=5)
            raise AssertionError("the admin API answered without a token")
        except urllib.error.HTTPError as e:
            assert e.code == 401, f"no token: HTTP {e.code}, expected 401"
        m1 = lab.metrics()["torii_admin_unauthorized_total"]
        assert m1 >= m0 + 3, f"torii_admin_unauthorized_total {m0:.0f} -> {m1:.0f}, expected +3"
        p = lab.cli("group", "list", check=False,
                    extra_global=["--token-file", lab.path("missing.token")])
        assert p.returncode == 1 and "cannot read the admin token" in p.stderr, \
            f"missing token file: exit {p.returncode}, {p.stderr!r}"
        ok(f"401; CLI says {p.stderr.strip().splitlines()[0]!r} for a missing file")

        check("`torii log` human output: header and the events so far")
        p = lab.cli("log")
        lines = p.stdout.splitlines()
        assert lines and lines[0].split()[:3] == ["SEQ", "TIME", "KIND"], \
            f"torii log header: {lines[:1]}"
        for kind in ("server.start", "group.create", "device.add"):
            assert any(kind in line for line in lines[1:]), f"`torii log` lacks {kind}:\n{p.stdout}"
        p = lab.cli("log", "-n", "2")
        assert len(p.stdout.splitlines()) == 3, f"`torii log -n 2`:\n{p.stdout}"
        events = lab.cli("log", "--json", "-n", "1000")["events"]
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"audit seqs {seqs}"
        for e in events:
            assert set(e) >= {"seq", "time", "kind", "device_id", "source", "detail"}, e
        after = lab.cli("log", "--json", "--after", str(seqs[-3]))["events"]
        assert [e["seq"] for e in after] == seqs[-2:], f"--after: {[e['seq'] for e in after]}"
        ok(f"{len(events)} events, human and JSON agree")

        check("/metrics (no token) exposes the operator's metrics")
        with urllib.request.urlopen(f"http://{lab.api}/metrics", timeout=5) as r:
            ctype = r.headers.get("Content-Type", "")
            text = r.read().decode()
        assert ctype.startswith("text/plain"), f"/metrics content type {ctype!r}"
        m = toriilab.parse_metrics(text)
        for name in ("torii_sessions_active", 'torii_tls_handshakes_total{result="ok"}',
                     'torii_tls_handshakes_total{result="failed"}', "torii_auth_failures_total",
                     'torii_messages_total{direction="in"}', 'torii_messages_total{direction="out"}'):
            assert name in m, f"/metrics lacks {name}"
        for family in ("torii_sessions_active", "torii_tls_handshakes_total",
                       "torii_auth_failures_total", "torii_messages_total"):
            assert f"# TYPE {family} " in text, f"/metrics lacks a TYPE line for {family}"
        ok("torii_sessions_active, torii_tls_handshakes_total, torii_auth_failures_total, "
           "torii_messages_total present")

    print(f"PASS test_admin_cli ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
