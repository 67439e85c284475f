// bench_sslmem: where a server-side TLS session's memory goes inside OpenSSL, measured in
// process with torii's real contexts. Every OpenSSL allocation goes through counting hooks
// (CRYPTO_set_mem_functions) that attribute it to the side (server or client) whose SSL call made
// it, so server bytes are measured although both ends run here over memory BIO pairs.
//
// Reports, per server connection: after SSL_new; after a full mutual TLS 1.3 handshake plus one
// small message each way (what an idle torii session holds); and after dropping the session
// object (SSL_set_session(ssl, NULL), which releases the parsed peer certificate and
// SSL_SESSION), checking that the connection still carries data, KeyUpdate and close_notify.
// Also: one parsed device certificate alone.
//
//   bench_sslmem --data-dir D [--connections 200]
#include <malloc.h>

#include <map>

#include <CLI/CLI.hpp>

#include "bench/bench_common.hpp"

using namespace torii;
using namespace torii::bench;

namespace {

// Allocation header: size and side, 16 bytes to keep alignment.
struct Hdr {
  size_t size;
  size_t side;
};
enum Side : size_t { kOther = 0, kServer = 1, kClient = 2 };
thread_local Side g_side = kOther;
std::atomic<int64_t> g_bytes[3];
std::atomic<int64_t> g_blocks[3];
std::atomic<int64_t> g_usable[3];  // what malloc really reserves (usable size + 8-byte header)

void* count_malloc(size_t n, const char*, int) {
  auto* h = static_cast<Hdr*>(std::malloc(n + sizeof(Hdr)));
  if (!h) return nullptr;
  h->size = n;
  h->side = g_side;
  g_bytes[h->side] += int64_t(n);
  g_blocks[h->side] += 1;
  g_usable[h->side] += int64_t(malloc_usable_size(h) + 8);
  return h + 1;
}
void count_free(void* p, const char*, int) {
  if (!p) return;
  auto* h = static_cast<Hdr*>(p) - 1;
  g_bytes[h->side] -= int64_t(h->size);
  g_blocks[h->side] -= 1;
  g_usable[h->side] -= int64_t(malloc_usable_size(h) + 8);
  std::free(h);
}
void* count_realloc(void* p, size_t n, const char* f, int l) {
  if (!p) return count_malloc(n, f, l);
  if (n == 0) {
    count_free(p, f, l);
    return nullptr;
  }
  void* q = count_malloc(n, f, l);
  if (!q) return nullptr;
  auto* h = static_cast<Hdr*>(p) - 1;
  std::memcpy(q, p, std::min(n, h->size));
  count_free(p, f, l);
  return q;
}

struct As {
  Side prev;
  explicit As(Side s) : prev(g_side) { g_side = s; }
  ~As() { g_side = prev; }
};

struct Snapshot {
  int64_t bytes, blocks, usable;
};
Snapshot snap(Side s) {
  return {g_bytes[s].load(), g_blocks[s].load(), g_usable[s].load()};
}

struct Pair {
  SSL* c = nullptr;
  SSL* s = nullptr;
};

bool pump_handshake(Pair& p) {
  bool cd = false, sd = false;
  for (int i = 0; i < 20 && !(cd && sd); ++i) {
    if (!cd) {
      As a(kClient);
      const int r = SSL_do_handshake(p.c);
      if (r == 1)
        cd = true;
      else if (SSL_get_error(p.c, r) != SSL_ERROR_WANT_READ)
        return false;
    }
    if (!sd) {
      As a(kServer);
      const int r = SSL_do_handshake(p.s);
      if (r == 1)
        sd = true;
      else if (SSL_get_error(p.s, r) != SSL_ERROR_WANT_READ)
        return false;
    }
  }
  return cd && sd;
}

// Sends `n` bytes from one end and reads them at the other; true if they arrived intact.
bool exchange(SSL* from, Side fs, SSL* to, Side ts, size_t n) {
  std::vector<uint8_t> out(n), in(n);
  for (size_t i = 0; i < n; ++i) out[i] = uint8_t(i * 7 + 1);
  size_t put = 0, got = 0;
  {
    As a(fs);
    if (SSL_write_ex(from, out.data(), n, &put) != 1 || put != n) return false;
  }
  As a(ts);
  while (got < n) {
    size_t k = 0;
    if (SSL_read_ex(to, in.data() + got, n - got, &k) != 1) return false;
    got += k;
  }
  return in == out;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any OpenSSL call: every allocation below is counted.
  if (CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free) != 1) {
    std::cerr << "bench_sslmem: CRYPTO_set_mem_functions failed (OpenSSL already allocated)\n";
    return 1;
  }
  CLI::App app{"bench_sslmem — OpenSSL memory per server-side TLS 1.3 session"};
  fs::path data_dir, creds_dir;
  size_t n = 200;
  bool drop = true;
  app.add_option("-d,--data-dir", data_dir, "toriid data directory (CA, server key)")->required();
  app.add_option("--creds", creds_dir, "Credentials folder (default <data-dir>/bench)");
  app.add_flag("!--keep-session", drop, "Do not drop the SSL_SESSION (checks the harness)");
  app.add_option("--connections", n, "Connections to measure over")->check(CLI::Range(1, 100000));
  CLI11_PARSE(app, argc, argv);
  try {
    auto creds = load_credentials(creds_dir.empty() ? data_dir / "bench" : creds_dir);
    if (creds.count < n) n = creds.count;
    auto ca = pki::CertificateAuthority::open(data_dir);
    auto sctx = net::make_server_context(ca);
    auto cctx = creds.client_context();
    std::vector<pki::X509Ptr> certs;
    for (size_t i = 0; i < n; ++i) certs.push_back(creds.cert(i));

    // One parsed device certificate.
    Snapshot c0 = snap(kServer);
    std::vector<pki::X509Ptr> parsed;
    {
      As a(kServer);
      for (size_t i = 0; i < n; ++i) parsed.push_back(creds.cert(i));
    }
    Snapshot c1 = snap(kServer);
    {
      As a(kServer);
      parsed.clear();
    }

    std::vector<Pair> pairs(n);
    const Snapshot s0 = snap(kServer);
    for (size_t i = 0; i < n; ++i) {
      {
        As a(kClient);
        pairs[i].c = SSL_new(cctx.get());
        Credentials::use_device(pairs[i].c, certs[i].get());
      }
      {
        As a(kServer);
        pairs[i].s = SSL_new(sctx.get());
      }
      BIO *cb = nullptr, *sb = nullptr;
      {
        As a(kOther);
        BIO_new_bio_pair(&cb, 0, &sb, 0);
      }
      SSL_set_bio(pairs[i].c, cb, cb);
      SSL_set_bio(pairs[i].s, sb, sb);
      SSL_set_connect_state(pairs[i].c);
      SSL_set_accept_state(pairs[i].s);
    }
    const Snapshot s1 = snap(kServer);
    size_t ok = 0;
    for (auto& p : pairs) {
      if (!pump_handshake(p)) continue;
      // Hello -> Welcome sized messages, like an idle session that has registered.
      if (exchange(p.c, kClient, p.s, kServer, 90) && exchange(p.s, kServer, p.c, kClient, 40))
        ++ok;
    }
    const Snapshot s2 = snap(kServer);
    if (drop) {
      As a(kServer);
      for (auto& p : pairs) SSL_set_session(p.s, nullptr);
    }
    const Snapshot s3 = snap(kServer);
    // The connection must keep working without its SSL_SESSION: data both ways, a KeyUpdate
    // from each side, then close_notify both ways.
    size_t still = 0;
    std::map<std::string, size_t> failed_at;
    for (auto& p : pairs) {
      std::string stage = "data both ways";
      bool good =
          exchange(p.c, kClient, p.s, kServer, 30) && exchange(p.s, kServer, p.c, kClient, 30);
      if (good) {
        stage = "client KeyUpdate";
        {
          As a(kClient);
          good = SSL_key_update(p.c, SSL_KEY_UPDATE_REQUESTED) == 1;
        }
        good = good && exchange(p.c, kClient, p.s, kServer, 20) &&
               exchange(p.s, kServer, p.c, kClient, 20);
      }
      if (good) {
        stage = "server KeyUpdate";
        {
          As a(kServer);
          good = SSL_key_update(p.s, SSL_KEY_UPDATE_NOT_REQUESTED) == 1;
        }
        good = good && exchange(p.s, kServer, p.c, kClient, 20) &&
               exchange(p.c, kClient, p.s, kServer, 20);
      }
      if (good) {
        stage = "close_notify";
        {
          As a(kClient);
          good = SSL_shutdown(p.c) >= 0;
        }
        As a(kServer);
        uint8_t b[16];
        size_t k = 0;
        const int r = SSL_read_ex(p.s, b, sizeof b, &k);
        good = good && r == 0 && SSL_get_error(p.s, r) == SSL_ERROR_ZERO_RETURN &&
               SSL_shutdown(p.s) >= 0;
      }
      if (good)
        ++still;
      else
        ++failed_at[stage + ": " + net::openssl_errors()];
      ERR_clear_error();
    }
    for (auto& p : pairs) {
      {
        As a(kClient);
        SSL_free(p.c);
      }
      As a(kServer);
      SSL_free(p.s);
    }
    const Snapshot s4 = snap(kServer);
    auto per = [&](const Snapshot& a, const Snapshot& b) {
      return nlohmann::json{{"bytes", double(b.bytes - a.bytes) / double(n)},
                            {"blocks", double(b.blocks - a.blocks) / double(n)},
                            {"malloc_footprint", double(b.usable - a.usable) / double(n)}};
    };
    nlohmann::json j{
        {"openssl", OpenSSL_version(OPENSSL_VERSION)},
        {"connections", n},
        {"handshakes_ok", ok},
        {"per_parsed_device_certificate", per(c0, c1)},
        {"server_ssl_after_SSL_new", per(s0, s1)},
        {"server_ssl_idle_after_handshake", per(s0, s2)},
        {"server_ssl_idle_after_SSL_set_session_null", per(s0, s3)},
        {"released_by_SSL_set_session_null", per(s3, s2)},
        {"session_dropped", drop},
        {"connections_still_working_after_drop", still},
        {"failures", failed_at},
        {"server_bytes_left_after_SSL_free", per(s0, s4)},
    };
    std::cout << j.dump(1) << "\n";
    return ok == n ? 0 : 1;  // whether the connection survives the drop is a finding, not a failure
  } catch (const std::exception& e) {
    std::cerr << "bench_sslmem: " << e.what() << "\n";
    return 1;
  }
}
