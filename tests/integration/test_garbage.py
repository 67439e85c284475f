#!/usr/bin/env python3
"""D1 on loopback: hostile input does not take the server down.
 - control port: random bytes (0, 1, 5, 300, 70000), a truncated TLS ClientHello, and after a
   valid TLS 1.3 handshake (no client certificate) an oversized frame header, junk protobuf,
   an unsupported protocol version and a message out of order;
 - STUN ports (both addresses, both ports): random and malformed datagrams;
then a fresh agent still enrolls and connects, /metrics answers and counts the garbage.
 - lockout (own toriid, started with --config TOML, [limits] auth_failures_per_source = 5):
   30 bad-token enrollments from 127.0.0.1 -> abuse.lockout, torii_auth_lockouts_total >= 1,
   and the locked-out source is refused even with a valid token."""

import os
import random
import socket
import ssl
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toriilab  # noqa: E402
from toriilab import check, ok  # noqa: E402

SEED = 20261122
IO_TIMEOUT = 5.0
STUN_MAGIC = 0x2112A442
IDLE_LIMIT_S = 10.0  # kTlsHandshakeTimeout == kFirstMessageTimeout


def connect(lab):
    s = socket.create_connection((toriilab.PRIMARY_IP, lab.control_port), timeout=IO_TIMEOUT)
    s.settimeout(IO_TIMEOUT)
    return s


def drain_until_closed(sock):
    """Reads until the peer closes; returns (bytes read, how it ended). Bounded by the socket
    timeout: a server that keeps the connection open fails the test."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ssl.SSLZeroReturnError:
            return data, "close_notify"
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            return data, "reset"
        except ssl.SSLError as e:
            return data, f"tls error {e.reason}"
        except socket.timeout:
            raise AssertionError(f"server kept the connection open for {IO_TIMEOUT}s after "
                                 f"garbage (read {len(data)} bytes)")
        if not chunk:
            return data, "eof"
        data += chunk


def send_raw(lab, payload):
    s = connect(lab)
    try:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may hang up before it read everything (EPIPE, ENOTCONN): fine
        return drain_until_closed(s)
    finally:
        s.close()


def client_hello():
    """The bytes of a real TLS 1.3 ClientHello (generated with a memory BIO)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_side=False)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, "could not build a ClientHello"
    return hello


def tls_session(lab):
    """A TLS 1.3 session to the control port without a client certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    s = ctx.wrap_socket(connect(lab), server_hostname="torii")
    assert s.version() == "TLSv1.3", f"negotiated {s.version()}"
    return s


def read_varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def error_of(frames):
    """(code, message) of the first Error envelope (field 19) in framed bytes, else None."""
    i = 0
    while i + 4 <= len(frames):
        (n,) = struct.unpack(">I", frames[i:i + 4])
        body = frames[i + 4:i + 4 + n]
        i += 4 + n
        j = 0
        while j < len(body):
            key, j = read_varint(body, j)
            field, wire = key >> 3, key & 7
            if wire == 0:
                _, j = read_varint(body, j)
            elif wire == 2:
                ln, j = read_varint(body, j)
                sub = body[j:j + ln]
                j += ln
                if field == 19:
                    code, msg, k = 0, "", 0
                    while k < len(sub):
                        kk, k = read_varint(sub, k)
                        if kk & 7 == 0:
                            code, k = read_varint(sub, k)
                        else:
                            ln2, k = read_varint(sub, k)
                            msg = sub[k:k + ln2].decode(errors="replace")
                            k += ln2
                    return code, msg
            else:
                return None
    return None


def tls_garbage(lab, payload, what):
    s = tls_session(lab)
    try:
        s.sendall(payload)
        data, how = drain_until_closed(s)
    finally:
        s.close()
    err = error_of(data)
    assert err, f"{what}: no Error message from the server before it closed ({how}, {data!r})"
    return err, how


def stun_binding_request(txid):
    return struct.pack(">HHI", 0x0001, 0, STUN_MAGIC) + txid


def garbage_main(rng):
    with toriilab.Lab("garbage") as lab:
        m0 = lab.metrics()

        # Opened first, checked last: silent peers must not hold connections forever
        # (limits.hpp: kTlsHandshakeTimeout and kFirstMessageTimeout, 10 s each).
        idle_opened = time.monotonic()
        idle_tcp = connect(lab)
        idle_tls = tls_session(lab)

        check("random bytes on the control port (0, 1, 5, 300, 70000 bytes) are closed")
        sizes = [0, 1, 5, 300, 70000]
        for n in sizes:
            payload = bytes(rng.getrandbits(8) for _ in range(n))
            _, how = send_raw(lab, payload)
            ok(f"{n} random bytes: server hung up ({how})")

        check("a truncated TLS ClientHello is closed")
        hello = client_hello()
        _, how = send_raw(lab, hello[: len(hello) // 2])
        ok(f"{len(hello) // 2} of {len(hello)} ClientHello bytes: server hung up ({how})")

        check("after a valid TLS 1.3 handshake: bad frames get an Error and the server closes")
        cases = [
            ("oversized frame header", b"\xff\xff\xff\xff" + bytes(rng.getrandbits(8)
                                                              for _ in range(200))),
            ("well-formed length, junk protobuf", struct.pack(">I", 24) + b"\xff" * 24),
            ("unsupported protocol version 99", struct.pack(">I", 5) + b"\x08\x63\x82\x01\x00"),
            ("Echo before Hello", struct.pack(">I", 5) + b"\x08\x01\x82\x01\x00"),
        ]
        for what, payload in cases:
            (code, msg), how = tls_garbage(lab, payload, what)
            ok(f"{what}: Error code {code} {msg!r}, then {how}")

        check("random and malformed datagrams on all four STUN sockets are dropped")
        stun_targets = [(toriilab.PRIMARY_IP, lab.stun_port), (toriilab.PRIMARY_IP, lab.stun_alt_port),
                        (toriilab.ALT_IP, lab.stun_port), (toriilab.ALT_IP, lab.stun_alt_port)]
        datagrams = [bytes(rng.getrandbits(8) for _ in range(n)) for n in (0, 1, 19, 100, 548, 1400)]
        txid = bytes(rng.getrandbits(8) for _ in range(12))
        # A STUN header whose length field promises more than the datagram holds.
        datagrams.append(struct.pack(">HHI", 0x0001, 64, STUN_MAGIC) + txid)
        # A Binding request whose attribute runs past the end of the message.
        datagrams.append(struct.pack(">HHI", 0x0001, 8, STUN_MAGIC) + txid +
                         struct.pack(">HH", 0x0001, 200) + b"\0\0\0\0")
        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for target in stun_targets:
                for dg in datagrams:
                    u.sendto(dg, target)
                    sent += 1
        s0 = m0
        toriilab.wait_until(
            lambda: lab.metrics()["torii_stun_requests_total"] >= s0["torii_stun_requests_total"] + sent,
            5, f"toriid to receive all {sent} STUN datagrams")
        m = lab.metrics()
        dropped = m["torii_stun_dropped_total"] - s0["torii_stun_dropped_total"]
        answered = m["torii_stun_responses_total"] - s0["torii_stun_responses_total"]
        assert dropped == sent, f"{sent} garbage datagrams, {dropped:.0f} counted as dropped"
        assert answered == 0, f"toriid answered {answered:.0f} garbage datagrams"
        ok(f"{sent} datagrams received and dropped, none answered")

        check("STUN still answers a valid Binding request on each socket")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(2)
            for target in stun_targets:
                tid = os.urandom(12)
                u.sendto(stun_binding_request(tid), target)
                resp, src = u.recvfrom(2048)
                mtype, _, cookie = struct.unpack(">HHI", resp[:8])
                assert mtype == 0x0101 and cookie == STUN_MAGIC and resp[8:20] == tid, \
                    f"bad Binding response from {target}: {resp[:20].hex()}"
        ok("Binding success responses from all four sockets")

        check("toriid is alive, no connection leaked, counters show the garbage")
        assert lab.server_alive(), f"toriid died:\n{lab.server.log()}"
        toriilab.wait_until(lambda: lab.metrics()["torii_connections_active"] == 2, 5,
                            "torii_connections_active back to 2 (the two idle connections)")
        m = lab.metrics()
        hs_failed = (m['torii_tls_handshakes_total{result="failed"}']
                     - m0['torii_tls_handshakes_total{result="failed"}'])
        malformed = m["torii_messages_malformed_total"] - m0["torii_messages_malformed_total"]
        garbage_conns = len(sizes) + 1
        assert hs_failed >= garbage_conns, \
            f"{garbage_conns} garbage connections but only {hs_failed:.0f} failed handshakes counted"
        assert malformed >= len(cases), \
            f"{len(cases)} bad frames but torii_messages_malformed_total grew by {malformed:.0f}"
        assert m["torii_sessions_active"] == 0, "a garbage connection became a session"
        ok(f"handshakes failed +{hs_failed:.0f}, malformed messages +{malformed:.0f}")

        check("silent peers are dropped: TCP without ClientHello and TLS without a first "
              f"message, each within {IDLE_LIMIT_S:.0f}s + margin")
        for sock, what in ((idle_tcp, "silent TCP connection"), (idle_tls, "silent TLS session")):
            left = idle_opened + IDLE_LIMIT_S + 3 - time.monotonic()
            sock.settimeout(max(left, 0.1))
            try:
                _, how = drain_until_closed(sock)
            except AssertionError:
                raise AssertionError(f"{what} still open {time.monotonic() - idle_opened:.1f}s "
                                     f"after it was opened (limit {IDLE_LIMIT_S:.0f}s)")
            finally:
                sock.close()
            ok(f"{what} closed by the server after {time.monotonic() - idle_opened:.1f}s ({how})")

        check("a fresh agent still enrolls, connects and reports its NAT type")
        state, _ = lab.new_online_agent("fresh-after-garbage")
        dev = toriilab.wait_until(
            lambda: (lambda d: d if d["nat_type"] else None)(lab.device("fresh-after-garbage")),
            10, "NAT attributes of the fresh agent")
        assert dev["nat_type"] == "none", f"nat_type {dev['nat_type']!r}"
        assert lab.server_alive(), "toriid died"
        ok(f"online, nat {dev['nat_type']}")


LOCKOUT_CONFIG = """\
# toriid configuration for the lockout test (addresses come from the command line)
log_level = "info"

[limits]
auth_failures_per_source = 5
token_ttl_seconds = 120
"""


def lockout_main():
    with toriilab.Lab("lockout", config=LOCKOUT_CONFIG) as lab:
        check("--config TOML is applied: token_ttl_seconds = 120 gives 120 s tokens")
        before_ms = time.time() * 1000
        dev = lab.add_device("lock-target")
        ttl_s = (dev["expires_at_ms"] - before_ms) / 1000
        assert 110 <= ttl_s <= 130, f"token valid for {ttl_s:.0f}s, config says 120s"
        ok(f"token valid {ttl_s:.0f}s")

        check("30 bad-token enrollments from 127.0.0.1: lockout after 5 (config), audited")
        for i in range(30):
            p = lab.enroll(dev, state=lab.path(f"bad-{i:02d}"), token=f"tt1_wrong{i:02d}" + "x" * 38,
                           check=False)
            assert p.returncode != 0, f"bad-token enrollment #{i + 1} succeeded"
            assert not os.path.exists(os.path.join(p.state, "device.crt")), \
                f"bad-token enrollment #{i + 1} left a certificate"
        ev = lab.wait_audit("abuse.lockout")
        assert "127.0.0.1" in ev[0]["detail"], f"lockout does not name the source: {ev[0]}"
        bad = lab.find_audit("enroll.bad_token", "lock-target")
        assert len(bad) == 5, (f"{len(bad)} bad-token attempts reached enrollment; "
                               f"auth_failures_per_source = 5 should stop them at 5")
        m = lab.metrics()
        assert m["torii_auth_lockouts_total"] >= 1, \
            f"torii_auth_lockouts_total = {m['torii_auth_lockouts_total']}"
        assert m["torii_connections_rejected_total"] >= 25, \
            f"torii_connections_rejected_total = {m['torii_connections_rejected_total']}, " \
            f"expected >= 25 (attempts 6-30)"
        ok(f"lockout: {ev[0]['detail']}; lockouts {m['torii_auth_lockouts_total']:.0f}, "
           f"rejected {m['torii_connections_rejected_total']:.0f}")

        check("while locked out, even the valid token from 127.0.0.1 is refused")
        p = lab.enroll(dev, state=lab.path("good-while-locked"), check=False)
        assert p.returncode != 0, "enrollment from a locked-out source succeeded"
        assert not os.path.exists(os.path.join(p.state, "device.crt")), "certificate issued"
        assert lab.devices()["lock-target"]["state"] == "pending", "device enrolled while locked"
        assert lab.server_alive(), "toriid died"
        ok(f"refused: {p.stderr.strip()}")


def main():
    t0 = time.monotonic()
    print(f"random seed {SEED}")
    garbage_main(random.Random(SEED))
    lockout_main()
    print(f"PASS test_garbage ({time.monotonic() - t0:.1f}s)")


if __name__ == "__main__":
    main()
