// libFuzzer target: arbitrary bytes on the control stream through the frame decoder, the
// Envelope decoder and the server and agent state machines. Nothing may crash or hang.
#include <cstdint>

#include "core/control/frame.hpp"
#include "core/server/server_core.hpp"
#include "core/session/agent_session.hpp"
#include "store/memory_store.hpp"

using namespace torii;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static store::MemoryStore store;
  server::ServerCore core({}, store);
  server::Actions out;
  const server::Now now{instant_from_ms(1000), 1000};
  const auto src = *Endpoint::parse("10.0.0.1:1");
  auto sid = core.on_open(now, src, server::ClientCert{true, "cam1", "g1", "01", ""}, out);
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
