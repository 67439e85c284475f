#!/usr/bin/env python3
"""Where CPU time goes, from `perf script -F comm,tid,ip,sym` output of a call-graph profile
(perf record --call-graph dwarf). Each sample goes to the first category, in the order below,
whose marker appears anywhere in its stack; the order puts specific work (certificate parsing,
signatures) before the generic frames that contain it (the TLS handshake, the server loop).

Usage: perf_breakdown.py SCRIPT_OUTPUT [LABEL]
"""
import collections
import sys

CATS = [
    ("bench client setup (loading credentials)", ["load_credentials"]),
    ("certificate parsing (d2i_X509; OpenSSL 3.0 OSSL_DECODER)", ["ASN1_item_d2i_ex"]),
    ("X509_verify_cert (chain building, checks, CA signature verify)", ["X509_verify_cert"]),
    ("ECDSA P-256 sign (own CertificateVerify)", ["EVP_DigestSignFinal"]),
    ("ECDSA P-256 verify (peer CertificateVerify)", ["EVP_DigestVerifyFinal"]),
    ("X25519 key generation", ["EVP_PKEY_generate", "EVP_PKEY_keygen"]),
    ("X25519 derive", ["EVP_PKEY_derive"]),
    ("SQLite in the audit thread (group commit, fsync)", ["AuditLog::run"]),
    ("SQLite in I/O threads (get_device, updates)", ["sqlite3_"]),
    ("logging (spdlog)", ["spdlog::"]),
    ("SSL_free", ["SSL_free"]),
    ("SSL_new", ["SSL_new"]),
    ("server core + protobuf", ["torii::server::ServerCore", "google::protobuf"]),
    ("TCP connect (kernel)", ["^__libc_connect", "^connect"]),
    ("accept (kernel)", ["^accept4", "^__libc_accept"]),
    ("close/shutdown (kernel)", ["^__close", "^__libc_close", "^__GI___shutdown", "^shutdown"]),
    ("epoll wait", ["epoll_wait"]),
    ("rest of the TLS handshake (state machine, key schedule, transcript, records, socket I/O)",
     ["torii::net::TlsStream::handshake"]),
    ("TLS reads/writes/close_notify after the handshake", ["SSL_read", "SSL_write", "SSL_shutdown"]),
    ("rest of the session coroutine (framing, Asio, bench client logic)",
     ["torii::net::ControlServer::serve", "register_once", "worker"]),
    ("Asio scheduler and other", ["boost::asio"]),
]


def match(pat, frame):
    return frame.startswith(pat[1:]) if pat.startswith("^") else pat in frame


def load(path):
    samples, cur = [], []
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if cur:
                samples.append(cur)
                cur = []
            continue
        if line[0] not in " \t":
            cur = []
            continue
        parts = line.strip().split(None, 1)
        cur.append(parts[1] if len(parts) > 1 else "?")
    if cur:
        samples.append(cur)
    return samples


def main():
    samples = load(sys.argv[1])
    label = sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]
    n = len(samples)
    c = collections.Counter()
    for st in samples:
        hit = next((name for name, pats in CATS if any(match(p, f) for f in st for p in pats)), "other")
        c[hit] += 1
    print(f"{label}: {n} samples")
    print("| share | where |")
    print("|---|---|")
    for k, v in c.most_common():
        print(f"| {100 * v / max(1, n):.1f} % | {k} |")


if __name__ == "__main__":
    main()
