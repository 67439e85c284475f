// Shared by the load generators in bench/ (header only: bench/CMakeLists.txt builds every *.cpp
// into its own tool). Provisioning of bench devices straight into a stopped toriid's data
// directory, loading the resulting credentials, source-address rotation for loopback clients,
// and small statistics helpers.
//
// Credentials folder (default <data-dir>/bench), written by `bench_register provision`:
//   bench.json   {"prefix": "bench-", "group": "bench", "count": N}
//   device.key   the one P-256 key every bench device shares (PEM, 0600)
//   ca.crt       the server's CA (PEM)
//   certs.der    N DER certificates back to back, device i = <prefix><i, 6 digits>
#pragma once
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/control/frame.hpp"
#include "core/server/enrollment.hpp"
#include "core/server/server_core.hpp"
#include "core/session/agent_session.hpp"
#include "core/session/limits.hpp"
#include "net/tls.hpp"
#include "pki/key_store.hpp"
#include "pki/pki.hpp"
#include "store/address_list.hpp"
#include "store/memory_store.hpp"
#include "store/sqlite_store.hpp"

namespace torii::bench {

namespace fs = std::filesystem;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
namespace pb = ::torii::control::v1;

inline Instant mono_now() {
  using namespace std::chrono;
  return Instant(duration_cast<Duration>(steady_clock::now().time_since_epoch()));
}
inline double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}
inline UnixMs wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline std::string device_id(const std::string& prefix, size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%06zu", i);
  return prefix + buf;
}

// What every bench agent reports, so the attributes the server derives from Hello + Attributes
// equal what provisioning stored and a re-registration writes nothing (steady state of devices
// reconnecting with unchanged attributes). `--vary-attributes` in bench_register breaks this on
// purpose.
struct BenchAttributes {
  static constexpr const char* kAgent = "bench";
  static constexpr const char* kFirmware = "bench-fw";
  static constexpr const char* kOs = "bench-os";
  static constexpr const char* kLocal = "10.0.0.2";
  static constexpr const char* kPublic = "198.51.100.7:40000";
  static constexpr pb::NatBehaviour kMapping = pb::NAT_BEHAVIOUR_ENDPOINT_INDEPENDENT;
  static constexpr pb::NatBehaviour kFiltering = pb::NAT_BEHAVIOUR_ADDRESS_AND_PORT_DEPENDENT;

  static session::AgentConfig agent_config(const std::string& id, Duration keepalive);
  static pb::Attributes message(const std::string& public_endpoint = kPublic);
  // What the server stores after a bench agent's Hello and Attributes: asked of the real
  // ServerCore (over a MemoryStore), so provisioning follows the server's vocabulary.
  static store::DeviceAttributes stored();
};

inline session::AgentConfig BenchAttributes::agent_config(const std::string& id,
                                                          Duration keepalive) {
  session::AgentConfig c;
  c.device_id = id;
  c.agent_version = kAgent;
  c.firmware_version = kFirmware;
  c.os_version = kOs;
  c.local_addresses = {kLocal};
  c.keepalive_interval = keepalive;
  return c;
}

inline pb::Attributes BenchAttributes::message(const std::string& public_endpoint) {
  pb::Attributes a;
  a.set_mapping(kMapping);
  a.set_filtering(kFiltering);
  a.set_public_endpoint(public_endpoint);
  a.add_local_addresses(kLocal);
  a.mutable_versions()->set_agent(kAgent);
  a.mutable_versions()->set_firmware(kFirmware);
  a.mutable_versions()->set_os(kOs);
  return a;
}

inline store::DeviceAttributes BenchAttributes::stored() {
  store::MemoryStore st;
  const std::string id = "bench-probe";
  st.create_group({"g", 0});
  store::Device d;
  d.id = id;
  d.group = "g";
  store::EnrollmentToken tok{id, server::hash_token("t"), 1000000, std::nullopt};
  st.add_device(d, tok);
  st.complete_enrollment(id, tok.hash, 1, "01", 2000000, {1});
  server::ServerCore core({}, st);
  server::Now now{Instant(Duration(1000)), 1000};
  server::ClientCert cert{true, id, "g", "01", ""};
  server::Actions out;
  const auto sid = core.on_open(now, Endpoint::v4(0x7f000001, 1), cert, out);
  auto feed = [&](const std::vector<uint8_t>& frame) {
    core.on_frame(
        now, sid,
        std::string_view(reinterpret_cast<const char*>(frame.data()) + 4, frame.size() - 4), out);
    for (auto& a : out)
      if (auto* sa = std::get_if<server::action::SaveAttributes>(&a))
        st.update_attributes(sa->device_id, sa->attributes);
    out.clear();
  };
  session::AgentSession agent(agent_config(id, limits::kDefaultKeepaliveInterval));
  session::AgentActions acts;
  agent.start(Instant(Duration(1000)), acts);
  feed(std::get<session::agent_action::Send>(acts.at(0)).frame);
  feed(control::make_frame([](pb::Envelope& e) { *e.mutable_attributes() = message(); }));
  auto dev = st.get_device(id);
  if (!dev || dev->attributes.agent_version != kAgent)
    throw std::runtime_error("could not derive the attributes the server stores");
  return dev->attributes;
}

// ---------------------------------------------------------------------------------------------
// Provisioning (toriid must not be running: it holds the database open and caches nothing, but
// the CA files are created here if the data directory is new).

struct ProvisionOptions {
  fs::path data_dir;
  fs::path out;  // default data_dir/bench
  size_t devices = 1000;
  std::string group = "bench";
  std::string prefix = "bench-";
  std::string method = "sql";  // "sql": one transaction; "store": SqliteStore API per device
  int jobs = 2;                // threads issuing certificates
};

struct ProvisionTimes {
  double issue_s = 0, db_s = 0, files_s = 0, total_s = 0;
};

inline void sql_exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "?";
    sqlite3_free(err);
    throw std::runtime_error(std::string("sqlite: ") + sql + ": " + m);
  }
}

inline ProvisionTimes provision(const ProvisionOptions& o) {
  ProvisionTimes t;
  const double t0 = now_s();
  if (o.devices == 0 || o.devices > 1000000) throw std::runtime_error("--devices: 1..1000000");
  std::error_code ec;
  fs::create_directories(o.data_dir, ec);
  const fs::path out = o.out.empty() ? o.data_dir / "bench" : o.out;
  fs::create_directories(out, ec);
  if (ec) throw std::runtime_error("cannot create " + out.string() + ": " + ec.message());
  auto ca = pki::CertificateAuthority::open(o.data_dir);
  const fs::path db_file = o.data_dir / "torii.db";
  {
    auto store = store::SqliteStore::open(db_file);  // creates the schema if new
    if (!store->get_group(o.group)) store->create_group({o.group, wall_ms()});
  }

  // One key for all devices: the bench measures the server, not per-device key generation.
  pki::PkeyPtr key = pki::generate_p256_key();
  const auto csr = pki::make_csr(key.get(), "bench");
  const UnixMs now = wall_ms();
  struct Row {
    std::string serial;
    UnixMs not_after = 0;
    std::vector<uint8_t> der;
  };
  std::vector<Row> rows(o.devices);
  {
    const int jobs = std::clamp(o.jobs, 1, 2);
    std::atomic<size_t> next{0};
    std::exception_ptr failure;
    std::mutex fail_mu;
    auto work = [&] {
      try {
        for (size_t i; (i = next.fetch_add(1)) < o.devices;) {
          auto ic = ca.issue_device_cert(csr, device_id(o.prefix, i), o.group, now,
                                         limits::kDeviceCertValidity);
          rows[i] = Row{ic.serial_hex, ic.not_after, pki::to_der(ic.cert.get())};
        }
      } catch (...) {
        std::lock_guard lk(fail_mu);
        failure = std::current_exception();
        next = o.devices;
      }
    };
    std::vector<std::thread> th;
    for (int j = 1; j < jobs; ++j) th.emplace_back(work);
    work();
    for (auto& x : th) x.join();
    if (failure) std::rethrow_exception(failure);
  }
  t.issue_s = now_s() - t0;

  const double t1 = now_s();
  const auto attrs = BenchAttributes::stored();
  if (o.method == "store") {
    // The product's API: two fsync'd transactions per device.
    auto store = store::SqliteStore::open(db_file);
    for (size_t i = 0; i < o.devices; ++i) {
      const std::string id = device_id(o.prefix, i);
      const std::string token = server::generate_token();
      store::Device d;
      d.id = id;
      d.group = o.group;
      d.created_at = now;
      d.attributes = attrs;
      store::EnrollmentToken tok{id, server::hash_token(token), now + 3600 * 1000, std::nullopt};
      store->add_device(d, tok);
      if (!store->complete_enrollment(id, tok.hash, now, rows[i].serial, rows[i].not_after,
                                      rows[i].der))
        throw std::runtime_error("complete_enrollment refused " + id);
    }
  } else if (o.method == "sql") {
    // The same rows the store API writes (an active device with a used token), in one
    // transaction. Bench provisioning only: the product never writes the file behind the store.
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(db_file.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot open " + db_file.string());
    std::unique_ptr<sqlite3, decltype(&sqlite3_close_v2)> guard(db, &sqlite3_close_v2);
    sql_exec(db, "PRAGMA foreign_keys = ON");
    sql_exec(db, "BEGIN IMMEDIATE");
    sqlite3_stmt* dev = nullptr;
    sqlite3_stmt* tok = nullptr;
    const char* kDev =
        "INSERT INTO devices (id, group_name, state, created_at, enrolled_at, cert_serial, "
        "cert_not_after, cert_der, nat_type, nat_mapping, nat_filtering, public_endpoint, "
        "local_addresses, agent_version, firmware_version, os_version) "
        "VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    const char* kTok =
        "INSERT INTO enrollment_tokens (device_id, token_hash, expires_at, used_at) "
        "VALUES (?, ?, ?, ?)";
    if (sqlite3_prepare_v2(db, kDev, -1, &dev, nullptr) != SQLITE_OK ||
        sqlite3_prepare_v2(db, kTok, -1, &tok, nullptr) != SQLITE_OK)
      throw std::runtime_error(std::string("sqlite prepare: ") + sqlite3_errmsg(db));
    const std::string locals = store::detail::join_addresses(attrs.local_addresses);
    for (size_t i = 0; i < o.devices; ++i) {
      const std::string id = device_id(o.prefix, i);
      const auto hash = server::hash_token(server::generate_token());
      int k = 1;
      sqlite3_bind_text(dev, k++, id.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(dev, k++, o.group.c_str(), -1, SQLITE_STATIC);
      sqlite3_bind_int64(dev, k++, now);
      sqlite3_bind_int64(dev, k++, now);
      sqlite3_bind_text(dev, k++, rows[i].serial.c_str(), -1, SQLITE_STATIC);
      sqlite3_bind_int64(dev, k++, rows[i].not_after);
      sqlite3_bind_blob(dev, k++, rows[i].der.data(), int(rows[i].der.size()), SQLITE_STATIC);
      for (const std::string* s :
           {&attrs.nat_type, &attrs.nat_mapping, &attrs.nat_filtering, &attrs.public_endpoint,
            &locals, &attrs.agent_version, &attrs.firmware_version, &attrs.os_version})
        sqlite3_bind_text(dev, k++, s->c_str(), -1, SQLITE_STATIC);
      if (sqlite3_step(dev) != SQLITE_DONE)
        throw std::runtime_error("insert " + id + ": " + sqlite3_errmsg(db));
      sqlite3_reset(dev);
      sqlite3_bind_text(tok, 1, id.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_blob(tok, 2, hash.data(), int(hash.size()), SQLITE_TRANSIENT);
      sqlite3_bind_int64(tok, 3, now + 3600 * 1000);
      sqlite3_bind_int64(tok, 4, now);
      if (sqlite3_step(tok) != SQLITE_DONE)
        throw std::runtime_error("insert token " + id + ": " + sqlite3_errmsg(db));
      sqlite3_reset(tok);
    }
    sqlite3_finalize(dev);
    sqlite3_finalize(tok);
    sql_exec(db, "COMMIT");
  } else {
    throw std::runtime_error("--method: sql or store");
  }
  t.db_s = now_s() - t1;

  const double t2 = now_s();
  pki::write_file_atomic(out / "device.key", pki::private_key_to_pem(key.get()), 0600);
  pki::write_file_atomic(out / "ca.crt", pki::to_pem(ca.cert()), 0644);
  std::string blob;
  for (const auto& r : rows) blob.append(reinterpret_cast<const char*>(r.der.data()), r.der.size());
  pki::write_file_atomic(out / "certs.der", blob, 0644);
  nlohmann::json m{{"prefix", o.prefix}, {"group", o.group}, {"count", o.devices}};
  pki::write_file_atomic(out / "bench.json", m.dump() + "\n", 0644);
  t.files_s = now_s() - t2;
  t.total_s = now_s() - t0;
  return t;
}

// ---------------------------------------------------------------------------------------------
// Credentials of provisioned bench devices.

struct Credentials {
  std::string prefix;
  std::string group;
  size_t count = 0;
  pki::PkeyPtr key;
  pki::X509Ptr ca;
  std::string der_blob;
  std::vector<std::pair<uint32_t, uint32_t>> der_at;  // offset, length of device i's cert

  std::string id(size_t i) const { return device_id(prefix, i); }
  pki::X509Ptr cert(size_t i) const {
    const auto [off, len] = der_at.at(i);
    return pki::cert_from_der(reinterpret_cast<const uint8_t*>(der_blob.data()) + off, len);
  }
  // A client context holding the CA (server verified, serverAuth) and the shared key; the
  // device's certificate is set per connection with use_device().
  net::SslCtxPtr client_context() const {
    auto c0 = cert(0);
    return net::make_client_context(ca.get(), c0.get(), key.get());
  }
  // Same key in every certificate, so the SSL's key stays matched.
  static void use_device(SSL* ssl, X509* cert) {
    if (SSL_use_certificate(ssl, cert) != 1)
      throw net::TlsError("SSL_use_certificate: " + net::openssl_errors());
  }
};

inline Credentials load_credentials(const fs::path& dir) {
  Credentials c;
  const auto m = nlohmann::json::parse(read_text(dir / "bench.json"));
  c.prefix = m.at("prefix").get<std::string>();
  c.group = m.at("group").get<std::string>();
  c.count = m.at("count").get<size_t>();
  c.key = pki::private_key_from_pem(read_text(dir / "device.key"));
  c.ca = pki::cert_from_pem(read_text(dir / "ca.crt"));
  if (!c.key || !c.ca) throw std::runtime_error("unreadable key or CA in " + dir.string());
  c.der_blob = read_text(dir / "certs.der");
  const auto* base = reinterpret_cast<const unsigned char*>(c.der_blob.data());
  const unsigned char* p = base;
  const unsigned char* end = base + c.der_blob.size();
  c.der_at.reserve(c.count);
  // Split on the DER headers (SEQUENCE, definite length) instead of parsing every certificate:
  // 100k parses take a minute with OpenSSL 3.0. Certificates are parsed when used.
  while (p < end && c.der_at.size() < c.count) {
    const unsigned char* start = p;
    if (end - p < 2 || p[0] != 0x30)
      throw std::runtime_error("corrupt certs.der at offset " + std::to_string(start - base));
    size_t len = p[1], hdr = 2;
    if (len & 0x80) {
      const size_t nb = len & 0x7f;
      if (nb == 0 || nb > 3 || size_t(end - p) < 2 + nb)
        throw std::runtime_error("corrupt certs.der");
      len = 0;
      for (size_t k = 0; k < nb; ++k) len = (len << 8) | p[2 + k];
      hdr = 2 + nb;
    }
    if (size_t(end - p) < hdr + len) throw std::runtime_error("truncated certs.der");
    p += hdr + len;
    c.der_at.emplace_back(uint32_t(start - base), uint32_t(p - start));
  }
  if (!c.der_at.empty() && !c.cert(0))
    throw std::runtime_error("unreadable certificate in certs.der");
  if (c.der_at.size() != c.count)
    throw std::runtime_error("certs.der holds " + std::to_string(c.der_at.size()) +
                             " certificates, bench.json says " + std::to_string(c.count));
  return c;
}

// ---------------------------------------------------------------------------------------------
// Loopback clients: many source addresses, so neither the ephemeral port range (~28k ports per
// source address and destination) nor TIME_WAIT tuples run out.

inline asio::ip::address_v4 loopback_v4(const std::string& text) {
  auto a = asio::ip::make_address_v4(text);
  if ((a.to_uint() >> 24) != 127) throw std::runtime_error(text + " is not in 127.0.0.0/8");
  return a;
}

struct SourceRotation {
  uint32_t base = 0;   // host order; the first address used is base + 1
  uint32_t count = 1;  // how many consecutive addresses
  asio::ip::address_v4 pick(uint64_t n) const {
    return asio::ip::address_v4(base + 1 + uint32_t(n % count));
  }
  // All addresses must stay in 127.0.0.0/8.
  void check() const {
    if (((base + 1) >> 24) != 127 || ((base + count) >> 24) != 127)
      throw std::runtime_error("source addresses leave 127.0.0.0/8");
  }
};

// Binds to `src` without reserving a port (IP_BIND_ADDRESS_NO_PORT: the port is chosen at
// connect() for the full 4-tuple) and connects, bounded by `timeout`.
inline asio::awaitable<tcp::socket> connect_from(asio::ip::address_v4 src, tcp::endpoint server,
                                                 Duration timeout) {
  auto ex = co_await asio::this_coro::executor;
  tcp::socket sock(ex);
  sock.open(tcp::v4());
  int one = 1;
  ::setsockopt(sock.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  sock.bind(tcp::endpoint(src, 0));
  asio::steady_timer t(ex, timeout);
  t.async_wait([&sock](boost::system::error_code e) {
    if (!e) sock.close();
  });
  boost::system::error_code ec;
  co_await sock.async_connect(server, asio::redirect_error(asio::use_awaitable, ec));
  t.cancel();
  if (!ec && !sock.is_open()) ec = asio::error::timed_out;
  if (ec) throw boost::system::system_error(ec, "connect");
  sock.set_option(tcp::no_delay(true));
  co_return sock;
}

inline tcp::endpoint parse_server(const std::string& s) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("--server: HOST:PORT");
  auto addr = loopback_v4(s.substr(0, colon));
  return tcp::endpoint(addr, uint16_t(std::stoi(s.substr(colon + 1))));
}

// ---------------------------------------------------------------------------------------------
// Statistics

inline double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, size_t(p / 100.0 * double(v.size())));
  std::nth_element(v.begin(), v.begin() + long(k), v.end());
  return v[k];
}

inline double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

inline long vm_rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

}  // namespace torii::bench
