// Simulated UDP network with RFC 4787 NATs (requirements A6, A11): realms, NAT translation and
// filtering, and the event queue that carries datagrams and timers in simulated time.
//
// Routing model. Every node lives in a realm: the public internet or the LAN of one NAT (whose
// own outside address lives in its parent realm, so NATs nest for carrier-grade NAT). A sent
// datagram climbs out of the sender's realm, translated by each NAT on the way, until a realm
// holds its destination address; that outbound part happens at send time, as a home NAT sits
// next to its hosts. The arrival event then descends through the NATs that own the destination,
// and their inbound translation and filtering run at arrival time. That order matters for hole
// punching: a peer's packet must meet the NAT state left by our own packet sent meanwhile.
#include "core/sim/network.hpp"

#include <algorithm>
#include <deque>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace torii::sim {
namespace {

constexpr uint32_t kPublic = std::numeric_limits<uint32_t>::max();  // realm of the internet
constexpr NodeId kNoNode = std::numeric_limits<NodeId>::max();      // in traces: nobody there

struct EndpointLess {
  bool operator()(const Endpoint& a, const Endpoint& b) const {
    return std::tie(a.family, a.addr, a.port) < std::tie(b.family, b.addr, b.port);
  }
};

struct KeyLess {
  bool operator()(const std::pair<Endpoint, Endpoint>& a,
                  const std::pair<Endpoint, Endpoint>& b) const {
    EndpointLess less;
    if (less(a.first, b.first)) return true;
    if (less(b.first, a.first)) return false;
    return less(a.second, b.second);
  }
};

Endpoint address_only(Endpoint e) {
  e.port = 0;
  return e;
}

Endpoint with_port(Endpoint e, uint16_t port) {
  e.port = port;
  return e;
}

Endpoint parse_or_throw(const std::string& text) {
  auto e = Endpoint::parse_address(text);
  if (!e) throw std::invalid_argument("sim: not an IP address: '" + text + "'");
  return *e;
}

// Decorrelates the generators of the loss model and of each NAT from one seed, so that adding a
// NAT or changing loss does not shift anyone else's random choices.
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

struct NatMapping {
  Endpoint internal;
  Endpoint dst_key;  // the part of the destination the mapping is keyed on
  Instant refreshed;
  std::set<Endpoint, EndpointLess> contacted;  // destinations sent to, for filtering
};

struct NatState {
  NatConfig cfg;
  Endpoint outside;  // port 0
  std::map<uint16_t, NatMapping> by_port;
  std::map<std::pair<Endpoint, Endpoint>, uint16_t, KeyLess> by_key;
  std::set<uint16_t> retired;  // ports of mappings dropped by rebind()
  uint32_t cursor = 0;         // next candidate for sequential allocation
  std::mt19937_64 rng;

  bool expired(const NatMapping& m, Instant now) const {
    return now >= m.refreshed + cfg.mapping_timeout;
  }
};

struct Node {
  std::string name;
  uint32_t realm = kPublic;
  std::vector<Endpoint> addresses;  // port 0; a NAT's single entry is its outside address
  bool down = false;
  std::shared_ptr<Receiver> receiver;  // shared so a receiver may replace itself while running
  std::unique_ptr<NatState> nat;
};

struct TraceEntry {
  Instant at;
  const char* what;
  NodeId node;
  Endpoint from, to;
  size_t bytes;
};

struct Event {
  Instant at;
  uint64_t seq;
  std::function<void()> fn;
};

// Heap order: the earliest event, and among equal times the first inserted, on top.
struct EventLater {
  bool operator()(const Event& a, const Event& b) const {
    return std::tie(a.at, a.seq) > std::tie(b.at, b.seq);
  }
};

}  // namespace

struct Network::Impl {
  uint64_t seed;
  Duration latency;
  Duration lan_latency = std::chrono::milliseconds(1);
  Instant now{};
  uint64_t seq = 0;
  std::vector<Event> heap;
  std::vector<Node> nodes;
  std::map<uint32_t, std::unordered_map<Endpoint, NodeId, EndpointHash>> realms;
  std::mt19937_64 loss_rng;
  double loss = 0;
  Stats stats;
  std::deque<TraceEntry> trace;
  size_t trace_limit = 64;

  Impl(uint64_t s, Duration l) : seed(s), latency(l), loss_rng(splitmix64(s)) {}

  Node& node(NodeId id) {
    if (id >= nodes.size()) throw std::out_of_range("sim: unknown node id");
    return nodes[id];
  }
  const Node& node(NodeId id) const {
    if (id >= nodes.size()) throw std::out_of_range("sim: unknown node id");
    return nodes[id];
  }
  NatState& nat(NodeId id) {
    Node& n = node(id);
    if (!n.nat) throw std::invalid_argument("sim: '" + n.name + "' is not a NAT");
    return *n.nat;
  }
  Node& host(NodeId id) {
    Node& n = node(id);
    if (n.nat) throw std::invalid_argument("sim: '" + n.name + "' is a NAT, not a host");
    return n;
  }

  uint32_t realm_for(std::optional<NodeId> behind_nat) {
    if (!behind_nat) return kPublic;
    nat(*behind_nat);  // validates
    return *behind_nat;
  }

  void claim(uint32_t realm, const Endpoint& addr, NodeId id) {
    auto [it, inserted] = realms[realm].emplace(address_only(addr), id);
    if (!inserted)
      throw std::invalid_argument("sim: address " + addr.address_string() + " already used by '" +
                                  nodes[it->second].name + "'");
  }

  std::optional<NodeId> lookup(uint32_t realm, const Endpoint& dst) const {
    auto r = realms.find(realm);
    if (r == realms.end()) return std::nullopt;
    auto it = r->second.find(address_only(dst));
    if (it == r->second.end()) return std::nullopt;
    return it->second;
  }

  void schedule(Instant t, std::function<void()> fn) {
    heap.push_back(Event{std::max(t, now), seq++, std::move(fn)});
    std::push_heap(heap.begin(), heap.end(), EventLater{});
  }

  void record(const char* what, NodeId node, const Endpoint& from, const Endpoint& to,
              size_t bytes) {
    if (trace_limit == 0) return;
    trace.push_back(TraceEntry{now, what, node, from, to, bytes});
    while (trace.size() > trace_limit) trace.pop_front();
  }

  void drop(uint64_t& counter, const char* what, NodeId node, const Endpoint& from,
            const Endpoint& to, size_t bytes) {
    ++counter;
    record(what, node, from, to, bytes);
  }

  void expire(NatState& n) {
    for (auto it = n.by_port.begin(); it != n.by_port.end();) {
      if (n.expired(it->second, now)) {
        n.by_key.erase({it->second.internal, it->second.dst_key});
        it = n.by_port.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::optional<uint16_t> allocate(NatState& n, uint16_t internal_port) {
    auto is_free = [&n](uint32_t p) {
      return p != 0 && p <= 65535 && !n.by_port.count(uint16_t(p)) && !n.retired.count(uint16_t(p));
    };
    if (n.cfg.allocation == PortAllocation::preserving && is_free(internal_port))
      return internal_port;
    if (n.cfg.allocation == PortAllocation::random) {
      for (int i = 0; i < 64; ++i) {
        auto p = uint32_t(1024 + n.rng() % (65536 - 1024));
        if (is_free(p)) return uint16_t(p);
      }
      // A nearly full port space: fall back to scanning, as a real NAT would.
    }
    uint32_t first = n.cfg.first_port;
    for (uint32_t i = first; i <= 65535; ++i) {
      uint32_t p = n.cursor;
      n.cursor = n.cursor >= 65535 ? first : n.cursor + 1;
      if (is_free(p)) return uint16_t(p);
    }
    return std::nullopt;
  }

  // Outbound translation at a NAT: finds or creates the mapping, refreshes it and records the
  // destination for filtering. nullopt when no external port is left.
  std::optional<Endpoint> translate_out(NatState& n, const Endpoint& src, const Endpoint& dst) {
    expire(n);
    Endpoint key = dst;
    if (n.cfg.mapping == Mapping::endpoint_independent) key = Endpoint{};
    if (n.cfg.mapping == Mapping::address_dependent) key.port = 0;
    uint16_t port;
    auto it = n.by_key.find({src, key});
    if (it != n.by_key.end()) {
      port = it->second;
    } else {
      auto p = allocate(n, src.port);
      if (!p) return std::nullopt;
      port = *p;
      n.by_key.emplace(std::make_pair(src, key), port);
      n.by_port.emplace(port, NatMapping{src, key, now, {}});
    }
    NatMapping& m = n.by_port.at(port);
    m.refreshed = now;
    m.contacted.insert(dst);
    return with_port(n.outside, port);
  }

  static bool admits(const NatState& n, const NatMapping& m, const Endpoint& from) {
    switch (n.cfg.filtering) {
      case Filtering::endpoint_independent:
        return true;
      case Filtering::address_dependent: {
        // Contacted endpoints are ordered by address first, so those of `from`'s address start
        // at the address with port 0.
        auto it = m.contacted.lower_bound(address_only(from));
        return it != m.contacted.end() && it->same_address(from);
      }
      case Filtering::address_and_port_dependent:
        return m.contacted.count(from) > 0;
    }
    return false;
  }

  void send(NodeId sender, Endpoint src, const Endpoint& dst, std::span<const uint8_t> data) {
    Node& h = host(sender);
    bool own = std::any_of(h.addresses.begin(), h.addresses.end(),
                           [&src](const Endpoint& a) { return a.same_address(src); });
    if (!own)
      throw std::invalid_argument("sim: " + src.address_string() + " is not an address of '" +
                                  h.name + "'");
    ++stats.sent;
    if (h.down)
      return drop(stats.dropped_link_down, "drop link-down", sender, src, dst, data.size());
    uint32_t realm = h.realm;
    bool hairpin = false;
    while (!lookup(realm, dst)) {
      if (realm == kPublic)
        return drop(stats.dropped_no_route, "drop no-route", sender, src, dst, data.size());
      NodeId nat_id = realm;
      Node& n = nodes[nat_id];
      NatState& st = *n.nat;
      if (st.cfg.block_udp)
        return drop(stats.dropped_filter, "drop udp-blocked (out)", nat_id, src, dst, data.size());
      hairpin = dst.same_address(st.outside);
      if (hairpin && !st.cfg.hairpin)
        return drop(stats.dropped_no_route, "drop no-hairpin", nat_id, src, dst, data.size());
      if (!hairpin && n.down)
        return drop(stats.dropped_link_down, "drop link-down (out)", nat_id, src, dst, data.size());
      auto ext = translate_out(st, src, dst);
      if (!ext)
        return drop(stats.dropped_no_mapping, "drop ports-exhausted", nat_id, src, dst,
                    data.size());
      src = *ext;
      realm = n.realm;
      if (hairpin) {
        ++stats.hairpinned;
        record("hairpin", nat_id, src, dst, data.size());
        break;
      }
    }
    if (loss > 0 && double(loss_rng() >> 11) * 0x1.0p-53 < loss)
      return drop(stats.dropped_loss, "drop loss", sender, src, dst, data.size());
    Duration d = realm == kPublic && !hairpin ? latency : lan_latency;
    schedule(now + d, [this, realm, src, dst, hairpin,
                       bytes = std::vector<uint8_t>(data.begin(), data.end())] {
      arrive(realm, src, dst, hairpin, bytes);
    });
  }

  void arrive(uint32_t realm, const Endpoint& src, Endpoint dst, bool hairpin,
              const std::vector<uint8_t>& bytes) {
    for (;;) {
      auto id = lookup(realm, dst);
      if (!id)
        return drop(stats.dropped_no_route, "drop no-route", kNoNode, src, dst, bytes.size());
      Node& n = nodes[*id];
      if (!n.nat) {
        if (n.down)
          return drop(stats.dropped_link_down, "drop link-down", *id, src, dst, bytes.size());
        if (!n.receiver)
          return drop(stats.dropped_no_route, "drop no-receiver", *id, src, dst, bytes.size());
        ++stats.delivered;
        record("delivered", *id, src, dst, bytes.size());
        auto receiver = n.receiver;
        (*receiver)(now, dst, src, std::span<const uint8_t>(bytes));
        return;
      }
      NatState& st = *n.nat;
      if (st.cfg.block_udp)
        return drop(stats.dropped_filter, "drop udp-blocked (in)", *id, src, dst, bytes.size());
      if (n.down && !hairpin)
        return drop(stats.dropped_link_down, "drop link-down (in)", *id, src, dst, bytes.size());
      expire(st);
      auto m = st.by_port.find(dst.port);
      if (m == st.by_port.end())
        return drop(stats.dropped_no_mapping, "drop no-mapping", *id, src, dst, bytes.size());
      if (!admits(st, m->second, src))
        return drop(stats.dropped_filter, "drop filtered", *id, src, dst, bytes.size());
      dst = m->second.internal;
      realm = *id;
      hairpin = false;  // a nested NAT further in sees an ordinary inbound packet
    }
  }
};

const char* to_string(Mapping m) {
  switch (m) {
    case Mapping::endpoint_independent:
      return "endpoint-independent";
    case Mapping::address_dependent:
      return "address-dependent";
    case Mapping::address_and_port_dependent:
      return "address-and-port-dependent";
  }
  return "?";
}

const char* to_string(Filtering f) {
  switch (f) {
    case Filtering::endpoint_independent:
      return "endpoint-independent";
    case Filtering::address_dependent:
      return "address-dependent";
    case Filtering::address_and_port_dependent:
      return "address-and-port-dependent";
  }
  return "?";
}

const char* to_string(PortAllocation a) {
  switch (a) {
    case PortAllocation::preserving:
      return "preserving";
    case PortAllocation::sequential:
      return "sequential";
    case PortAllocation::random:
      return "random";
  }
  return "?";
}

std::string short_name(const NatConfig& cfg) {
  if (cfg.block_udp) return "udp-blocked";
  std::string s;
  if (cfg.mapping == Mapping::endpoint_independent) {
    s = cfg.filtering == Filtering::endpoint_independent ? "full-cone"
        : cfg.filtering == Filtering::address_dependent  ? "restricted"
                                                         : "port-restricted";
  } else {
    s = "symmetric";
    if (cfg.mapping == Mapping::address_dependent) s += "-adm";
    if (cfg.filtering == Filtering::endpoint_independent) s += "-eif";
    if (cfg.filtering == Filtering::address_dependent) s += "-adf";
  }
  if (cfg.allocation == PortAllocation::random) s += "-random";
  if (cfg.allocation == PortAllocation::preserving) s += "-preserving";
  if (cfg.hairpin) s += "-hairpin";
  return s;
}

Network::Network(uint64_t seed, Duration one_way_latency)
    : impl_(std::make_unique<Impl>(seed, one_way_latency)) {}

Network::~Network() = default;

NodeId Network::add_nat(std::string name, const std::string& public_address, NatConfig cfg,
                        std::optional<NodeId> behind_nat) {
  if (cfg.first_port == 0) throw std::invalid_argument("sim: NatConfig.first_port must be > 0");
  Endpoint addr = parse_or_throw(public_address);
  uint32_t realm = impl_->realm_for(behind_nat);
  auto id = NodeId(impl_->nodes.size());
  impl_->claim(realm, addr, id);
  Node n;
  n.name = std::move(name);
  n.realm = realm;
  n.addresses.push_back(addr);
  n.nat = std::make_unique<NatState>();
  n.nat->cfg = cfg;
  n.nat->outside = addr;
  n.nat->cursor = cfg.first_port;
  n.nat->rng.seed(splitmix64(impl_->seed ^ splitmix64(id + 1)));
  impl_->nodes.push_back(std::move(n));
  impl_->realms[id];  // the NAT's LAN, empty so far
  return id;
}

NodeId Network::add_host(std::string name, const std::string& address,
                         std::optional<NodeId> behind_nat) {
  Endpoint addr = parse_or_throw(address);
  uint32_t realm = impl_->realm_for(behind_nat);
  auto id = NodeId(impl_->nodes.size());
  impl_->claim(realm, addr, id);
  Node n;
  n.name = std::move(name);
  n.realm = realm;
  n.addresses.push_back(addr);
  impl_->nodes.push_back(std::move(n));
  return id;
}

void Network::add_address(NodeId host, const std::string& address) {
  Node& n = impl_->host(host);
  Endpoint addr = parse_or_throw(address);
  impl_->claim(n.realm, addr, host);
  n.addresses.push_back(addr);
}

void Network::set_receiver(NodeId host, Receiver r) {
  impl_->host(host).receiver = r ? std::make_shared<Receiver>(std::move(r)) : nullptr;
}

void Network::send(NodeId host, uint16_t local_port, const Endpoint& dst,
                   std::span<const uint8_t> data) {
  impl_->send(host, with_port(impl_->host(host).addresses.front(), local_port), dst, data);
}

void Network::send(NodeId host, const Endpoint& local, const Endpoint& dst,
                   std::span<const uint8_t> data) {
  impl_->send(host, local, dst, data);
}

Endpoint Network::address_of(NodeId host, uint16_t port) const {
  return with_port(impl_->node(host).addresses.front(), port);
}

Endpoint Network::public_address_of(NodeId nat) const {
  const Node& n = impl_->node(nat);
  if (!n.nat) throw std::invalid_argument("sim: '" + n.name + "' is not a NAT");
  return n.nat->outside;
}

const std::string& Network::name_of(NodeId node) const {
  return impl_->node(node).name;
}

size_t Network::mapping_count(NodeId nat) const {
  const Node& n = impl_->node(nat);
  if (!n.nat) throw std::invalid_argument("sim: '" + n.name + "' is not a NAT");
  return size_t(std::count_if(n.nat->by_port.begin(), n.nat->by_port.end(), [&](const auto& m) {
    return !n.nat->expired(m.second, impl_->now);
  }));
}

Instant Network::now() const {
  return impl_->now;
}

void Network::at(Instant t, std::function<void()> fn) {
  impl_->schedule(t, std::move(fn));
}

void Network::after(Duration d, std::function<void()> fn) {
  impl_->schedule(impl_->now + d, std::move(fn));
}

bool Network::step() {
  auto& heap = impl_->heap;
  if (heap.empty()) return false;
  std::pop_heap(heap.begin(), heap.end(), EventLater{});
  Event e = std::move(heap.back());
  heap.pop_back();
  impl_->now = e.at;
  e.fn();
  return true;
}

void Network::run_until(Instant t) {
  while (!impl_->heap.empty() && impl_->heap.front().at <= t) step();
  impl_->now = std::max(impl_->now, t);
}

bool Network::run_while(const std::function<bool()>& pred, Instant deadline) {
  for (;;) {
    if (!pred()) return true;
    if (impl_->heap.empty() || impl_->heap.front().at > deadline) {
      impl_->now = std::max(impl_->now, deadline);
      return false;
    }
    step();
  }
}

void Network::rebind(NodeId nat) {
  NatState& n = impl_->nat(nat);
  for (const auto& [port, m] : n.by_port) n.retired.insert(port);
  n.by_port.clear();
  n.by_key.clear();
}

void Network::set_loss(double p) {
  impl_->loss = std::clamp(p, 0.0, 1.0);
}

void Network::set_link_down(NodeId node, bool down) {
  impl_->node(node).down = down;
}

void Network::set_lan_latency(Duration d) {
  impl_->lan_latency = d;
}

const Network::Stats& Network::stats() const {
  return impl_->stats;
}

std::string Network::trace() const {
  std::string out;
  for (const auto& e : impl_->trace) {
    out += "t=" + std::to_string(to_ms(e.at)) + "ms " + e.what + " " + e.from.to_string() + " -> " +
           e.to.to_string() + " at " +
           (e.node < impl_->nodes.size() ? impl_->nodes[e.node].name : std::string("-")) + " (" +
           std::to_string(e.bytes) + " B)\n";
  }
  return out;
}

void Network::set_trace_limit(size_t n) {
  impl_->trace_limit = n;
  while (impl_->trace.size() > n) impl_->trace.pop_front();
}

}  // namespace torii::sim
