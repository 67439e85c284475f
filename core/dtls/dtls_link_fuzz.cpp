// libFuzzer target (A7, A8, A10): arbitrary datagrams into a server-side DTLS Link, the first
// thing a peer's bytes reach on a device-to-device path. Input: datagrams, each preceded by a
// 2-byte big-endian length (a short tail is one last datagram). Nothing may crash, and every
// datagram the link emits must fit its MTU. Corpus: fuzz/corpus/dtls_link/, seeded by the
// DISABLED_WriteFuzzCorpus test in link_test.cpp (captured ClientHellos and client flights),
// plus found_* from a 150 s libFuzzer run (~590k inputs, ASan+UBSan, no crash).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "core/dtls/link.hpp"
#include "pki/pki.hpp"

namespace {

// One CA and one device credential for the whole run, in a private temp dir removed at exit.
struct FuzzCredential {
  std::filesystem::path dir;
  std::shared_ptr<torii::dtls::Context> context;
  FuzzCredential() : dir(make_dir()) {
    auto ca = torii::pki::CertificateAuthority::open(dir);
    auto key = torii::pki::generate_p256_key();
    auto issued = ca.issue_device_cert(torii::pki::make_csr(key.get(), "fuzz"), "fuzz", "fuzz",
                                       1700000000000, std::chrono::hours(24 * 365 * 20));
    context =
        torii::dtls::Context::create(const_cast<X509*>(ca.cert()), issued.cert.get(), key.get());
  }
  ~FuzzCredential() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  static std::filesystem::path make_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "torii-dtls-fuzz-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    return tmpl;
  }
};

void check_mtu(const std::vector<std::vector<uint8_t>>& out, size_t mtu) {
  for (const auto& d : out)
    if (d.size() > mtu) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static FuzzCredential cred;
  constexpr size_t kMtu = 1200;
  torii::dtls::Link server(cred.context, /*client=*/false, kMtu);
  std::vector<std::vector<uint8_t>> out;
  server.start(out);
  size_t pos = 0;
  while (pos < size) {
    size_t len = size - pos;
    if (len >= 2) {
      len = std::min<size_t>(static_cast<size_t>(data[pos] << 8 | data[pos + 1]), size - pos - 2);
      pos += 2;
    }
    server.on_datagram(std::span<const uint8_t>(data + pos, len), out);
    pos += len;
  }
  server.tick(out);  // a timer only expires in real time; this covers the "not yet" path
  (void)server.next_timeout();
  if (server.state() == torii::dtls::LinkState::established) {
    // Only a real client could get here; the export must then work.
    if (server.export_keying_material("EXPORTER-torii-tunnel-v1", 64).size() != 64) std::abort();
  }
  server.close(out);
  check_mtu(out, kMtu);
  return 0;
}
