// libFuzzer target (A9): arbitrary datagrams through every tunnel packet decoder — header,
// probe, relay bind / bind-ack, DataChannel::open with fixed keys (in and out of place) — then
// the same bytes as a script of seal / deliver / tamper / wait steps between two channels with
// a tiny rekey policy, checking that genuine packets open to what was sealed, at most once, and
// that any tampered packet is refused. Nothing may crash; a broken invariant traps.
#include <array>
#include <cstdint>
#include <cstring>
#include <span>

#include "core/tunnel/data_channel.hpp"
#include "core/tunnel/fuzz_fixture.hpp"
#include "core/tunnel/packet.hpp"

using namespace torii;
using namespace torii::tunnel;
namespace fx = torii::tunnel::fuzz_fixture;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void decoders(std::span<const uint8_t> in) {
  static const auto relay = relay_key(fx::kServerSecret, fx::kTunnelId);
  if (auto h = parse_header(in)) {
    uint8_t again[kHeaderSize];
    write_header(*h, again);
    check(std::memcmp(again, in.data(), kHeaderSize) == 0);
  }
  (void)verify_probe(fx::kPunchKey, in);
  // As the relay does: read the tunnel ID, derive that tunnel's key, verify.
  if (auto b = parse_relay_bind(in))
    (void)verify_relay_bind(relay_key(fx::kServerSecret, b->tunnel_id), in);
  else
    check(!verify_relay_bind(relay, in));
  if (parse_relay_bind_ack(in))
    (void)verify_relay_bind_ack(relay, in);
  else
    check(!verify_relay_bind_ack(relay, in));
}

void raw_open(Cipher c, std::span<const uint8_t> in) {
  static std::array<uint8_t, kMaxPacket + 1> buf, out;
  DataChannel rx(c, fx::kExported, false, fx::kInitiatorIndex, instant_from_ms(0));
  const auto a = rx.open(instant_from_ms(1), in, out.data());
  if (in.size() > buf.size()) return;
  std::memcpy(buf.data(), in.data(), in.size());
  DataChannel rx2(c, fx::kExported, false, fx::kInitiatorIndex, instant_from_ms(0));
  const auto b =
      rx2.open(instant_from_ms(1), std::span(buf.data(), in.size()), buf.data() + kHeaderSize);
  check(a == b);
  if (a) check(std::memcmp(out.data(), buf.data() + kHeaderSize, *a) == 0);
}

// Script: each input byte is one step; the low two bits pick it, the rest is its argument.
void script(Cipher c, std::span<const uint8_t> in) {
  RekeyPolicy p;
  p.after_time = std::chrono::milliseconds(40);
  p.after_packets = 5;
  p.after_bytes = 700;
  p.keep_previous = std::chrono::milliseconds(25);
  Instant now = instant_from_ms(0);
  DataChannel tx(c, fx::kExported, true, fx::kResponderIndex, now, p);
  DataChannel rx(c, fx::kExported, false, fx::kInitiatorIndex, now, p);

  constexpr size_t kSlots = 16, kMaxPt = 63 * 4;
  struct Sent {
    std::array<uint8_t, kMaxPt + kOverhead> pkt;
    size_t len = 0;
    uint8_t seed = 0;
    bool opened = false;
  };
  static std::array<Sent, kSlots> sent;
  for (auto& s : sent) s.len = 0;
  std::array<uint8_t, kMaxPt + kOverhead> work;
  size_t next_slot = 0;

  for (size_t i = 0; i < in.size() && i < 512; ++i) {
    const uint8_t arg = in[i] >> 2;
    switch (in[i] & 3) {
      case 0: {  // seal arg*4 bytes, in place
        Sent& s = sent[next_slot++ % kSlots];
        const size_t n = size_t(arg) * 4;
        s.seed = uint8_t(i);
        for (size_t k = 0; k < n; ++k) s.pkt[kHeaderSize + k] = uint8_t(s.seed + k);
        s.len = tx.seal(now, std::span(s.pkt.data() + kHeaderSize, n), s.pkt.data());
        check(s.len == n + kOverhead);
        s.opened = false;
        break;
      }
      case 1: {  // deliver a copy of a sealed packet
        Sent& s = sent[arg % kSlots];
        if (s.len == 0) break;
        std::memcpy(work.data(), s.pkt.data(), s.len);
        const auto got = rx.open(now, std::span(work.data(), s.len), work.data() + kHeaderSize);
        if (!got) break;
        check(!s.opened);  // never twice
        check(*got == s.len - kOverhead);
        for (size_t k = 0; k < *got; ++k) check(work[kHeaderSize + k] == uint8_t(s.seed + k));
        s.opened = true;
        break;
      }
      case 2:  // time passes
        now += std::chrono::milliseconds(arg);
        break;
      case 3: {  // deliver a packet with one byte changed: must be refused
        Sent& s = sent[arg % kSlots];
        if (s.len == 0) break;
        std::memcpy(work.data(), s.pkt.data(), s.len);
        work[(size_t(arg) * 7 + i) % s.len] ^= uint8_t(1 + (i % 255));
        check(!rx.open(now, std::span(work.data(), s.len), work.data() + kHeaderSize));
        break;
      }
    }
  }
  const auto& st = rx.stats();
  check(st.opened <= tx.stats().sealed);
  check(st.rekeys_received <= tx.stats().rekeys_sent);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);
  decoders(in);
  raw_open(Cipher::aes_256_gcm, in);
  raw_open(Cipher::chacha20_poly1305, in);
  script(size % 2 ? Cipher::chacha20_poly1305 : Cipher::aes_256_gcm, in);
  return 0;
}
