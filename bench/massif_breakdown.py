#!/usr/bin/env python3
"""Per-session heap breakdown of toriid from a valgrind massif profile (bench/memory.sh).

Usage: massif_breakdown.py MASSIF_OUT SESSIONS

Takes the peak snapshot (all sessions open), walks every allocation stack of its heap tree and
puts its bytes in the category of the innermost frame that names a component, then divides by
SESSIONS.
Bytes that exist without sessions (start-up, caches) are included, so run with enough sessions
(>= 1000) for them to be small per session.
"""
import collections
import re
import sys

MARKERS = [
    ("OpenSSL: SSL object from SSL_new (ssl_st with record-layer arrays, CERT copy)", ["SSL_new"]),
    ("OpenSSL: record-layer AES-GCM cipher contexts (read + write)", ["EVP_CipherInit"]),
    ("OpenSSL: SSL_SESSION", ["SSL_SESSION_new", "ssl_session_dup"]),
    ("OpenSSL: key share kept after the handshake", ["EVP_PKEY_generate", "EVP_PKEY_keygen"]),
    ("OpenSSL: peer certificate (parsed X509, EC public key, EC_GROUP copy)",
     ["X509_new_ex", "d2i", "EC_KEY_set_group", "EC_GROUP_dup", "BN_MONT_CTX", "ASN1_item",
      "ASN1_STRING", "X509_PUBKEY", "EC_POINT", "o2i", "X509V3", "X509_NAME"]),
    ("OpenSSL: verification leftovers (chain stacks)", ["X509_verify_cert", "X509_STORE_CTX", "OPENSSL_sk_dup"]),
    ("OpenSSL: other state left by the handshake", ["TlsStream::handshake"]),
    ("OpenSSL: locks", ["CRYPTO_THREAD_lock_new"]),
    ("toriid: serve() coroutine frame (holds the 1 KiB read buffer)", ["ControlServer::serve("]),
    ("toriid: co_spawn entry frame", ["co_spawn_entry_point"]),
    ("toriid: write_loop frames / delivery", ["write_loop", "deliver"]),
    ("toriid: Conn object (make_shared), socket, strand", ["accept_loop"]),
    ("toriid: ServerCore session records", ["ServerCore"]),
    ("SQLite page cache (bounded, not per session)", ["sqlite"]),
    ("Asio: strand implementations", ["strand_executor_service"]),
    ("Asio: reactor descriptor state", ["object_pool", "register_descriptor"]),
    ("toriid: audit queue, logging", ["AuditLog", "spdlog"]),
]


def load_peak(path):
    lines = open(path).read().split("\n")
    peak = None
    for i, l in enumerate(lines):
        if l == "heap_tree=peak":
            peak = i
    if peak is None:
        sys.exit("no peak snapshot in " + path)
    hdr = {}
    j = peak - 1
    while not lines[j].startswith("snapshot="):
        if "=" in lines[j]:
            k, v = lines[j].split("=", 1)
            hdr[k] = v
        j -= 1

    def parse(i):
        m = re.match(r"\s*n(\d+): (\d+) (.*)", lines[i])
        node = {"b": int(m.group(2)), "desc": m.group(3), "kids": []}
        i += 1
        for _ in range(int(m.group(1))):
            kid, i = parse(i)
            node["kids"].append(kid)
        return node, i

    root, _ = parse(peak + 1)
    return hdr, root


def main():
    path, n = sys.argv[1], float(sys.argv[2])
    hdr, root = load_peak(path)
    leaves = []

    def walk(node, path_):
        here = path_ + [node["desc"]]
        own = node["b"] - sum(k["b"] for k in node["kids"])
        if own > 0:
            leaves.append((own, here))
        for k in node["kids"]:
            walk(k, here)

    walk(root, [])
    cat = collections.Counter()
    for b, stack in leaves:
        # The innermost frame (nearest the allocation) that names a component decides.
        name = "other (below massif's threshold or unattributed)"
        for f in stack[1:]:
            hit = next((label for label, pats in MARKERS if any(p in f for p in pats)), None)
            if hit:
                name = hit
                break
        cat[name] += b
    extra = int(hdr.get("mem_heap_extra_B", 0))
    print(f"peak snapshot: useful heap {root['b']} B, malloc overhead {extra} B, {n:.0f} sessions")
    print(f"| component | bytes per session |")
    print(f"|---|---|")
    for k, v in cat.most_common():
        print(f"| {k} | {v / n:.0f} |")
    print(f"| malloc overhead (headers, alignment; massif 'extra-heap') | {extra / n:.0f} |")
    print(f"| **total heap** | **{(root['b'] + extra) / n:.0f}** |")


if __name__ == "__main__":
    main()
