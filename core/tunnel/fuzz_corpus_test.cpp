// Writes the seed corpus of the tunnel_packet fuzz target (A9) — valid and invalid probes,
// relay binds, data packets sealed with the fuzz fixture's keys, and scripts. Disabled: run it
// by hand when the formats change, then commit the files (one command):
//   TORII_TUNNEL_CORPUS_DIR=fuzz/corpus/tunnel_packet ./build/core/torii_core_test
//     --gtest_also_run_disabled_tests --gtest_filter='TunnelFuzzCorpus.*'
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/tunnel/data_channel.hpp"
#include "core/tunnel/fuzz_fixture.hpp"
#include "core/tunnel/packet.hpp"

namespace torii::tunnel {
namespace {

namespace fx = fuzz_fixture;
using Bytes = std::vector<uint8_t>;

template <typename A>
Bytes vec(const A& a) {
  return {a.begin(), a.end()};
}

Bytes seal(DataChannel& ch, Instant now, const Bytes& pt) {
  Bytes out(pt.size() + kOverhead);
  out.resize(ch.seal(now, pt, out.data()));
  return out;
}

TEST(TunnelFuzzCorpus, DISABLED_Write) {
  const char* dir = std::getenv("TORII_TUNNEL_CORPUS_DIR");
  if (!dir) GTEST_SKIP() << "set TORII_TUNNEL_CORPUS_DIR";
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const Bytes& b) {
    std::ofstream(std::filesystem::path(dir) / name, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  };
  const auto relay = relay_key(fx::kServerSecret, fx::kTunnelId);
  const Bytes hello = {'h', 'e', 'l', 'l', 'o'};

  write("probe_request", vec(make_probe(fx::kPunchKey, kProbeRequest, 0x1234, 0xDEADBEEF)));
  write("probe_reply", vec(make_probe(fx::kPunchKey, kProbeReply, 0x4321, 0xFEEDFACE)));
  auto bad_probe = make_probe(fx::kPunchKey, kProbeRequest, 1, 2);
  bad_probe[31] ^= 1;
  write("probe_bad_tag", vec(bad_probe));
  write("relay_bind", vec(make_relay_bind(relay, fx::kTunnelId, kSideInitiator, 1700000000000)));
  auto bind = vec(make_relay_bind(relay, fx::kTunnelId, kSideResponder, 1700000000000));
  bind.resize(kRelayBindSize - 1);
  write("relay_bind_truncated", bind);
  write("relay_bind_ack", vec(make_relay_bind_ack(relay, fx::kTunnelId, kSideResponder)));

  for (Cipher c : {Cipher::aes_256_gcm, Cipher::chacha20_poly1305}) {
    const std::string tag = c == Cipher::aes_256_gcm ? "aes" : "chacha";
    RekeyPolicy p;
    p.after_packets = 1;
    DataChannel tx(c, fx::kExported, true, fx::kResponderIndex, instant_from_ms(0), p);
    write("data_" + tag + "_epoch0", seal(tx, instant_from_ms(0), hello));
    write("data_" + tag + "_epoch1_keepalive", seal(tx, instant_from_ms(0), {}));
  }
  DataChannel tx(Cipher::aes_256_gcm, fx::kExported, true, fx::kResponderIndex, instant_from_ms(0));
  Bytes tampered = seal(tx, instant_from_ms(0), hello);
  tampered[kHeaderSize] ^= 0x40;
  write("data_tampered", tampered);
  write("data_short", Bytes(tampered.begin(), tampered.begin() + kOverhead - 1));
  Bytes unknown(kOverhead, 0);
  unknown[0] = 0x7F;
  write("unknown_type", unknown);
  // Script steps (see the fuzz target): low 2 bits = seal / deliver / wait / tamper.
  auto seal_op = [](uint8_t len4) { return uint8_t(len4 << 2 | 0); };
  auto deliver = [](uint8_t slot) { return uint8_t(slot << 2 | 1); };
  auto wait = [](uint8_t ms) { return uint8_t(ms << 2 | 2); };
  auto tamper = [](uint8_t slot) { return uint8_t(slot << 2 | 3); };
  write("script_replay_reorder", {seal_op(1), seal_op(2), seal_op(3), deliver(2), deliver(0),
                                  deliver(0), deliver(1), tamper(1), deliver(2)});
  Bytes rekey;  // enough packets and time for several epochs, with late deliveries
  for (uint8_t i = 0; i < 12; ++i) {
    rekey.push_back(seal_op(uint8_t(10 + i)));
    rekey.push_back(wait(9));
    if (i % 3 == 2) rekey.push_back(deliver(uint8_t(i)));
  }
  for (uint8_t i = 0; i < 12; ++i) rekey.push_back(deliver(i));
  write("script_rekey_late", rekey);
}

}  // namespace
}  // namespace torii::tunnel
