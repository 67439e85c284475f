// libFuzzer target (A6, A9, A11): every input the tunnel layer takes from outside — control
// messages for the PeerManager (instructions, responses, closes, relayed packets), datagrams on
// the tunnel socket, IP packets from the TUN device, datagrams at the server's relay — as a script
// of steps against one PeerManager (with a real DTLS context) and one RelayTable. Nothing may
// crash or grow without bound.
#include <cstdint>
#include <filesystem>
#include <optional>

#include "core/control/frame.hpp"
#include "core/p2p/peer_manager.hpp"
#include "core/p2p/relay_table.hpp"
#include "pki/pki.hpp"

using namespace torii;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<dtls::Context> context() {
  static std::shared_ptr<dtls::Context> ctx = [] {
    const fs::path dir = fs::temp_directory_path() / "torii-p2p-fuzz-ca";
    fs::create_directories(dir);
    auto ca = pki::CertificateAuthority::open(dir);
    auto key = pki::generate_p256_key();
    auto issued = ca.issue_device_cert(pki::make_csr(key.get(), "fuzz"), "fuzz", "g", 0,
                                       std::chrono::hours(24 * 365 * 100));
    return dtls::Context::create(const_cast<X509*>(ca.cert()), issued.cert.get(), key.get());
  }();
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  p2p::PeerConfig cfg;
  cfg.device_id = "fuzz";
  cfg.group = "g";
  cfg.dtls = context();
  cfg.seed = 1;
  p2p::PeerManager pm(cfg);
  pm.set_overlay(*Endpoint::parse_address("100.64.0.1"), 10, *Endpoint::parse_address("fd00::1"),
                 64);
  pm.set_server(*Endpoint::parse_address("198.51.100.1"), 3480);
  pm.set_candidates({*Endpoint::parse("192.168.1.2:5000")});
  p2p::RelayTable relay;
  relay.open(1, std::array<uint8_t, 32>{});
  Instant now = instant_from_ms(1000);
  const Endpoint peer = *Endpoint::parse("203.0.113.5:6000");
  size_t i = 0;
  while (i + 2 <= size) {
    const uint8_t op = data[i] % 5;
    const size_t n = std::min<size_t>(data[i + 1] * 4u, size - i - 2);
    std::span<const uint8_t> chunk(data + i + 2, n);
    i += 2 + n;
    p2p::PeerActions out;
    switch (op) {
      case 0: {
        ::torii::control::v1::Envelope env;
        if (control::decode_envelope(chunk.data(), chunk.size(), env) == control::DecodeError::none)
          pm.on_control(now, env, out);
        break;
      }
      case 1:
        pm.on_udp(now, peer, chunk, out);
        break;
      case 2:
        pm.on_ip(now, chunk, out);
        break;
      case 3: {
        std::array<uint8_t, 32> a, b;
        relay.on_datagram(now, 0, peer, chunk, a, b);
        break;
      }
      case 4:
        now += Duration(chunk.empty() ? 1 : chunk[0] * 100);
        pm.tick(now, out);
        break;
    }
    if (pm.tunnel_count() > 4096) __builtin_trap();
  }
  return 0;
}
