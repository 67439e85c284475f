// libFuzzer target: arbitrary bytes on the control stream through the frame decoder, the
// Envelope decoder and the server and agent state machines. Nothing may crash or hang. The
// server side has two established devices of one group, so the input reaches the signaling and
// relay messages (A6) as well as the session ones.
#include <cstdint>

#include "core/control/frame.hpp"
#include "core/server/server_core.hpp"
#include "core/session/agent_session.hpp"
#include "store/memory_store.hpp"

using namespace torii;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static store::MemoryStore store;
  static const bool seeded = [] {
    store.create_group({"g1", 0});
    for (const char* id : {"cam1", "cam2"}) {
      store::Device d;
      d.id = id;
      d.group = "g1";
      store::EnrollmentToken t{id, server::hash_token(id), 1'000'000'000, std::nullopt};
      store.add_device(d, t);
      store.complete_enrollment(id, t.hash, 1, std::string(id) == "cam1" ? "01" : "02", 1e12, {1});
    }
    return true;
  }();
  (void)seeded;
  server::ServerCore core({}, store);
  server::Actions out;
  const server::Now now{instant_from_ms(1000), 1000};
  const auto src = *Endpoint::parse("10.0.0.1:1");
  auto hello = [](const char* id) {
    auto f = control::make_frame(
        [&](::torii::control::v1::Envelope& e) { e.mutable_hello()->set_device_id(id); });
    return std::string(f.begin() + 4, f.end());
  };
  auto sid2 = core.on_open(now, src, server::ClientCert{true, "cam2", "g1", "02", ""}, out);
  core.on_frame(now, sid2, hello("cam2"), out);
  auto sid = core.on_open(now, src, server::ClientCert{true, "cam1", "g1", "01", ""}, out);
  // Inputs starting with 'H' run on an established session; others hit the pre-Hello state.
  if (size > 0 && data[0] == 'H') core.on_frame(now, sid, hello("cam1"), out);
  session::AgentConfig acfg;
  acfg.device_id = "cam1";
  session::AgentSession agent(acfg);
  session::AgentActions aout;
  agent.start(instant_from_ms(0), aout);

  // Split the input in two halves fed in chunks, so reassembly paths are exercised.
  control::FrameDecoder dec;
  size_t pos = 0;
  while (pos < size) {
    const size_t chunk = 1 + (data[pos] % 61);
    const size_t n = std::min(chunk, size - pos);
    if (!dec.feed(data + pos, n)) {
      core.on_stream_corrupt(now, sid, out);
      break;
    }
    while (auto f = dec.next()) {
      core.on_frame(now, sid, *f, out);
      agent.on_frame(instant_from_ms(5), *f, aout);
    }
    pos += n;
  }
  core.tick(server::Now{instant_from_ms(1'000'000), 1'000'000}, out);
  agent.tick(instant_from_ms(1'000'000), aout);
  return 0;
}
