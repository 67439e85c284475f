// AdminApi over real sockets (loopback TCP and a unix socket) against a fake AdminBackend,
// driven with HttpClient: auth, every route's status and JSON, input validation and limits.
#include "net/admin_api.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "net/http_client.hpp"

namespace torii::net {
namespace {

using nlohmann::json;
const std::string kToken = "s3cret-admin-token-0123456789abcdef";

// Records what the API passed in and answers from in-memory state, with the status codes
// admin_backend.hpp documents.
class FakeBackend : public AdminBackend {
 public:
  std::vector<store::Group> groups;
  std::map<std::string, DeviceView> devices;
  std::vector<store::AuditEvent> events;
  bool fail_internally = false;

  struct AddCall {
    std::string id, group;
    std::optional<Duration> ttl;
  };
  std::optional<AddCall> last_add;
  std::optional<std::pair<size_t, int64_t>> last_audit;
  std::vector<std::string> revoked, disconnected;

  store::Group create_group(const std::string& name) override {
    if (fail_internally) throw std::runtime_error("disk on fire");
    for (const auto& g : groups) {
      if (g.name == name) throw AdminError(409, "group '" + name + "' already exists");
    }
    groups.push_back({name, 1700000000123});
    return groups.back();
  }
  std::vector<store::Group> list_groups() override { return groups; }
  NewDevice add_device(const std::string& id, const std::string& group,
                       std::optional<Duration> ttl) override {
    last_add = AddCall{id, group, ttl};
    bool known = false;
    for (const auto& g : groups) known |= g.name == group;
    if (!known) throw AdminError(404, "no group named '" + group + "'");
    NewDevice d;
    d.id = id.empty() ? "dev-generated" : id;
    d.group = group;
    d.token = "enroll-token-xyz";
    d.expires_at = 1700000000000 + (ttl ? ttl->count() : 86400000);
    d.enroll_command =
        "torii-agent enroll --server 10.0.0.1:7443 --id " + d.id + " --token enroll-token-xyz";
    return d;
  }
  std::vector<DeviceView> list_devices() override {
    std::vector<DeviceView> out;
    for (const auto& [id, v] : devices) out.push_back(v);
    return out;
  }
  DeviceView get_device(const std::string& id) override {
    auto it = devices.find(id);
    if (it == devices.end()) throw AdminError(404, "no device with ID '" + id + "'");
    return it->second;
  }
  void revoke_device(const std::string& id) override {
    get_device(id);
    revoked.push_back(id);
  }
  void disconnect_device(const std::string& id) override {
    if (!get_device(id).online) throw AdminError(409, "device '" + id + "' is not connected");
    disconnected.push_back(id);
  }
  std::vector<store::AuditEvent> audit(size_t limit, int64_t after_seq) override {
    last_audit = {limit, after_seq};
    return events;
  }
  std::string metrics_text() override { return "torii_devices_online 1\n"; }
};

DeviceView sample_device() {
  DeviceView v;
  v.device.id = "cam-01";
  v.device.group = "cameras";
  v.device.state = store::DeviceState::active;
  v.device.created_at = 1700000000000;
  v.device.enrolled_at = 1700000001000;
  v.device.cert_serial = "0a1b2c";
  v.device.cert_not_after = 1731536001000;
  v.device.attributes.nat_type = "full-cone";
  v.device.attributes.nat_mapping = "endpoint-independent";
  v.device.attributes.nat_filtering = "endpoint-independent";
  v.device.attributes.public_endpoint = "203.0.113.7:40000";
  v.device.attributes.local_addresses = {"192.168.1.20", "fe80::1"};
  v.device.attributes.agent_version = "0.1.0";
  v.device.attributes.firmware_version = "fw-2.3";
  v.device.attributes.os_version = "Linux 6.1";
  v.device.last_seen = 1700000005456;
  v.device.rtt_ms = 12;
  v.online = true;
  v.connected_since = 1700000002000;
  v.session_source = "203.0.113.7:40001";
  return v;
}

class AdminApiTest : public ::testing::Test {
 protected:
  void start(const std::string& spec = "127.0.0.1:0") {
    api = std::make_unique<AdminApi>(io, spec, kToken, backend);
    api->start();
    io_thread = std::thread([this] { io.run(); });
    client = std::make_unique<HttpClient>(api->bound_endpoint(), std::chrono::seconds(5));
  }
  void TearDown() override {
    if (api) api->stop();
    if (io_thread.joinable()) io_thread.join();
    api.reset();
  }

  HttpResponse get(const std::string& target, const std::string& token = kToken) {
    return client->request("GET", target, nullptr, token);
  }
  HttpResponse post(const std::string& target, const json& body = nullptr,
                    const std::string& token = kToken) {
    return client->request("POST", target, body, token);
  }
  HttpResponse post_raw(const std::string& target, const std::string& body) {
    return client->request_raw("POST", target, body, "application/json", kToken);
  }
  static json parse(const HttpResponse& r) { return json::parse(r.body); }
  static std::string error_of(const HttpResponse& r) {
    return parse(r).at("error").get<std::string>();
  }

  boost::asio::io_context io;
  FakeBackend backend;
  std::unique_ptr<AdminApi> api;
  std::unique_ptr<HttpClient> client;
  std::thread io_thread;
};

TEST_F(AdminApiTest, RejectsMissingAndWrongTokensAndCountsThem) {
  start();
  auto r = get("/v1/groups", "");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_NE(error_of(r).find("Authorization"), std::string::npos);

  r = get("/v1/groups", "wrong");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(error_of(r), "invalid admin token");
  // Same length, one character off.
  std::string near = kToken;
  near.back() = 'X';
  EXPECT_EQ(get("/v1/groups", near).status, 401);
  EXPECT_EQ(get("/v1/groups", kToken + "x").status, 401);
  // Unknown /v1 routes are 401 too without a token: routes are not revealed before auth.
  EXPECT_EQ(get("/v1/nope", "").status, 401);
  EXPECT_EQ(api->unauthorized_count(), 5u);
  EXPECT_TRUE(backend.groups.empty());

  EXPECT_EQ(get("/v1/groups").status, 200);
  EXPECT_EQ(api->unauthorized_count(), 5u);
}

TEST_F(AdminApiTest, MetricsNeedsNoToken) {
  start();
  auto r = get("/metrics", "");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4");
  EXPECT_EQ(r.body, "torii_devices_online 1\n");
  EXPECT_EQ(client->request("POST", "/metrics", nullptr, "").status, 405);
}

TEST_F(AdminApiTest, Groups) {
  start();
  auto r = post("/v1/groups", {{"name", "cameras"}});
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(parse(r), (json{{"name", "cameras"}, {"created_at", "2023-11-14T22:13:20.123Z"}}));

  r = post("/v1/groups", {{"name", "cameras"}});
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(error_of(r), "group 'cameras' already exists");

  post("/v1/groups", {{"name", "sensors"}});
  r = get("/v1/groups");
  ASSERT_EQ(r.status, 200);
  auto groups = parse(r).at("groups");
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0]["name"], "cameras");
  EXPECT_EQ(groups[1]["name"], "sensors");
}

TEST_F(AdminApiTest, BadJsonAndWrongTypesAre400WithAReason) {
  start();
  auto r = post_raw("/v1/groups", "{\"name\": ");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(error_of(r).find("not valid JSON"), std::string::npos) << r.body;

  r = post("/v1/groups");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r), "request body must be a JSON object");

  r = post("/v1/groups", json::array({"cameras"}));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r), "request body must be a JSON object");

  r = post("/v1/groups", {{"name", 7}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r), "field 'name' must be a string, not number");

  r = post("/v1/devices", {{"id", "d1"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r), "field 'group' is required (a string)");

  r = post("/v1/devices", {{"group", "g"}, {"ttl_seconds", "1h"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(error_of(r).find("ttl_seconds"), std::string::npos);
  r = post("/v1/devices", {{"group", "g"}, {"ttl_seconds", 0}});
  EXPECT_EQ(r.status, 400);
  r = post("/v1/devices", {{"group", "g"}, {"ttl_seconds", 1.5}});
  EXPECT_EQ(r.status, 400);
  EXPECT_FALSE(backend.last_add.has_value());
}

TEST_F(AdminApiTest, AddDevice) {
  start();
  backend.groups.push_back({"cameras", 0});
  auto r = post("/v1/devices", {{"id", "cam-01"}, {"group", "cameras"}, {"ttl_seconds", 3600}});
  ASSERT_EQ(r.status, 201) << r.body;
  ASSERT_TRUE(backend.last_add);
  EXPECT_EQ(backend.last_add->id, "cam-01");
  EXPECT_EQ(backend.last_add->group, "cameras");
  EXPECT_EQ(backend.last_add->ttl, std::optional<Duration>(std::chrono::hours(1)));
  auto j = parse(r);
  EXPECT_EQ(j["id"], "cam-01");
  EXPECT_EQ(j["group"], "cameras");
  EXPECT_EQ(j["token"], "enroll-token-xyz");
  EXPECT_EQ(j["expires_at"], "2023-11-14T23:13:20.000Z");
  EXPECT_EQ(j["expires_at_ms"], 1700003600000);
  EXPECT_EQ(j["enroll_command"],
            "torii-agent enroll --server 10.0.0.1:7443 --id cam-01 --token enroll-token-xyz");

  // No id, no ttl: the backend generates and defaults.
  r = post("/v1/devices", {{"group", "cameras"}});
  ASSERT_EQ(r.status, 201);
  EXPECT_EQ(backend.last_add->id, "");
  EXPECT_FALSE(backend.last_add->ttl.has_value());
  EXPECT_EQ(parse(r)["id"], "dev-generated");

  r = post("/v1/devices", {{"group", "nope"}});
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(error_of(r), "no group named 'nope'");
}

TEST_F(AdminApiTest, ListAndShowDevices) {
  start();
  backend.devices["cam-01"] = sample_device();
  DeviceView pending;
  pending.device.id = "new-02";
  pending.device.group = "cameras";
  pending.device.created_at = 1700000000000;
  backend.devices["new-02"] = pending;

  auto r = get("/v1/devices/cam-01");
  ASSERT_EQ(r.status, 200);
  const json expected = {
      {"id", "cam-01"},
      {"group", "cameras"},
      {"state", "active"},
      {"online", true},
      {"nat_type", "full-cone"},
      {"nat_mapping", "endpoint-independent"},
      {"nat_filtering", "endpoint-independent"},
      {"public_endpoint", "203.0.113.7:40000"},
      {"local_addresses", {"192.168.1.20", "fe80::1"}},
      {"agent_version", "0.1.0"},
      {"firmware_version", "fw-2.3"},
      {"os_version", "Linux 6.1"},
      {"last_seen", "2023-11-14T22:13:25.456Z"},
      {"last_seen_ms", 1700000005456},
      {"rtt_ms", 12},
      {"created_at", "2023-11-14T22:13:20.000Z"},
      {"enrolled_at", "2023-11-14T22:13:21.000Z"},
      {"revoked_at", nullptr},
      {"cert_serial", "0a1b2c"},
      {"cert_not_after", "2024-11-13T22:13:21.000Z"},
      {"connected_since", "2023-11-14T22:13:22.000Z"},
      {"session_source", "203.0.113.7:40001"},
      {"overlay_ipv4", ""},
      {"overlay_ipv6", ""},
      {"tunnels", nlohmann::json::array()},
  };
  EXPECT_EQ(parse(r), expected);

  r = get("/v1/devices");
  ASSERT_EQ(r.status, 200);
  auto list = parse(r).at("devices");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0], expected);
  EXPECT_EQ(list[1]["state"], "pending");
  EXPECT_EQ(list[1]["online"], false);
  EXPECT_TRUE(list[1]["last_seen"].is_null());
  EXPECT_TRUE(list[1]["last_seen_ms"].is_null());
  EXPECT_TRUE(list[1]["rtt_ms"].is_null());
  EXPECT_TRUE(list[1]["enrolled_at"].is_null());
  EXPECT_EQ(list[1]["local_addresses"], json::array());

  r = get("/v1/devices/ghost");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(error_of(r), "no device with ID 'ghost'");
  // Percent-encoded IDs are decoded before reaching the backend.
  EXPECT_EQ(get("/v1/devices/cam%2D01").status, 200);
}

TEST_F(AdminApiTest, RevokeAndDisconnect) {
  start();
  backend.devices["cam-01"] = sample_device();
  DeviceView offline;
  offline.device.id = "off-1";
  backend.devices["off-1"] = offline;

  auto r = post("/v1/devices/cam-01/revoke");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r), (json{{"revoked", "cam-01"}}));
  EXPECT_EQ(backend.revoked, std::vector<std::string>{"cam-01"});

  r = post("/v1/devices/cam-01/disconnect");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r), (json{{"disconnected", "cam-01"}}));

  r = post("/v1/devices/off-1/disconnect");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(error_of(r), "device 'off-1' is not connected");
  EXPECT_EQ(post("/v1/devices/ghost/revoke").status, 404);
  EXPECT_EQ(get("/v1/devices/cam-01/revoke").status, 405);
}

TEST_F(AdminApiTest, Audit) {
  start();
  backend.events.push_back({7, 1700000000000, "device.revoke", "cam-01", "admin", "revoked"});
  auto r = get("/v1/audit");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(backend.last_audit, (std::pair<size_t, int64_t>{100, -1}));
  EXPECT_EQ(parse(r), (json{{"events",
                             {{{"seq", 7},
                               {"time", "2023-11-14T22:13:20.000Z"},
                               {"time_ms", 1700000000000},
                               {"kind", "device.revoke"},
                               {"device_id", "cam-01"},
                               {"source", "admin"},
                               {"detail", "revoked"}}}}}));

  EXPECT_EQ(get("/v1/audit?limit=5&after=42").status, 200);
  EXPECT_EQ(backend.last_audit, (std::pair<size_t, int64_t>{5, 42}));

  r = get("/v1/audit?limit=abc");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(error_of(r), "query parameter 'limit' must be an integer from 1 to 1000, got 'abc'");
  EXPECT_EQ(get("/v1/audit?limit=0").status, 400);
  EXPECT_EQ(get("/v1/audit?after=-3").status, 400);
}

TEST_F(AdminApiTest, UnknownRoutesAndMethods) {
  start();
  EXPECT_EQ(get("/v1/widgets").status, 404);
  EXPECT_EQ(get("/v1").status, 404);
  EXPECT_EQ(get("/").status, 404);
  EXPECT_EQ(get("/v1/devices/a/b/c").status, 404);
  auto r = client->request("DELETE", "/v1/groups", nullptr, kToken);
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(error_of(r), "method DELETE is not allowed on /v1/groups; use GET, POST");
}

TEST_F(AdminApiTest, BackendFailureIs500WithoutDetails) {
  start();
  backend.fail_internally = true;
  auto r = post("/v1/groups", {{"name", "x"}});
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(error_of(r), "internal error");
}

TEST_F(AdminApiTest, OversizedBodyIsRejected) {
  start();
  const std::string big = "{\"name\": \"" + std::string(AdminApi::kMaxBodyBytes + 10, 'a') + "\"}";
  auto r = post_raw("/v1/groups", big);
  EXPECT_EQ(r.status, 413);
  EXPECT_NE(error_of(r).find("too large"), std::string::npos);
  EXPECT_TRUE(backend.groups.empty());
  // The server still works afterwards.
  EXPECT_EQ(get("/v1/groups").status, 200);
}

// Minimal blocking socket helpers for what HttpClient deliberately does not do (keep-alive,
// malformed HTTP).
int connect_tcp(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads one response with a Content-Length body; returns "" on EOF or error.
std::string read_response(int fd) {
  std::string data;
  char buf[4096];
  for (;;) {
    auto hdr_end = data.find("\r\n\r\n");
    if (hdr_end != std::string::npos) {
      auto cl = data.find("Content-Length: ");
      if (cl != std::string::npos && cl < hdr_end) {
        size_t len = std::stoul(data.substr(cl + 16));
        if (data.size() >= hdr_end + 4 + len) return data.substr(0, hdr_end + 4 + len);
      }
    }
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return "";
    data.append(buf, static_cast<size_t>(n));
  }
}

TEST_F(AdminApiTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  start();
  int fd = connect_tcp(api->port());
  ASSERT_GE(fd, 0);
  const std::string req =
      "GET /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kToken + "\r\n\r\n";
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
    std::string res = read_response(fd);
    EXPECT_EQ(res.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << res;
  }
  ::close(fd);
}

TEST_F(AdminApiTest, OnlyTheBearerSchemeIsAccepted) {
  start();
  for (const std::string scheme : {"Basic ", "Token ", ""}) {
    int fd = connect_tcp(api->port());
    ASSERT_GE(fd, 0);
    const std::string req =
        "GET /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: " + scheme + kToken + "\r\n\r\n";
    ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
    std::string res = read_response(fd);
    EXPECT_EQ(res.rfind("HTTP/1.1 401 Unauthorized\r\n", 0), 0u) << res;
    EXPECT_NE(res.find("WWW-Authenticate: Bearer"), std::string::npos) << res;
    ::close(fd);
  }
  // The scheme name is case-insensitive (RFC 7235).
  int fd = connect_tcp(api->port());
  ASSERT_GE(fd, 0);
  const std::string req =
      "GET /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: bearer " + kToken + "\r\n\r\n";
  ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  EXPECT_EQ(read_response(fd).rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  ::close(fd);
}

TEST_F(AdminApiTest, MalformedHttpIs400) {
  start();
  int fd = connect_tcp(api->port());
  ASSERT_GE(fd, 0);
  const std::string req = "GET /v1/groups HTTP/1.1\r\nBad Header Line\r\n\r\n";
  ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string res = read_response(fd);
  EXPECT_EQ(res.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << res;
  ::close(fd);
}

TEST_F(AdminApiTest, StopClosesIdleConnections) {
  start();
  int fd = connect_tcp(api->port());
  ASSERT_GE(fd, 0);
  api->stop();
  io_thread.join();  // returns only once the idle connection's coroutine has ended
  char c;
  EXPECT_EQ(::read(fd, &c, 1), 0);
  ::close(fd);
  EXPECT_LT(connect_tcp(api->port()), 0);
}

TEST_F(AdminApiTest, ListenFailuresAreClear) {
  start();
  FakeBackend other;
  boost::asio::io_context io2;
  const std::string busy = "127.0.0.1:" + std::to_string(api->port());
  AdminApi clash(io2, busy, kToken, other);
  try {
    clash.start();
    FAIL() << "expected start() to fail";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot listen on " + busy + " for the admin API: Address already in use");
  }
  AdminApi bad(io2, "nonsense", kToken, other);
  EXPECT_THROW(bad.start(), std::runtime_error);
  EXPECT_THROW(AdminApi(io2, "127.0.0.1:0", "", other), std::invalid_argument);
}

TEST(HttpClientTest, UnreachableServerSaysSo) {
  // Find a free port, then close it so nothing listens there.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  ::close(fd);
  const std::string ep = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  HttpClient client(ep);
  try {
    client.request("GET", "/v1/groups");
    FAIL() << "expected an HttpClientError";
  } catch (const HttpClientError& e) {
    EXPECT_EQ(e.kind(), HttpClientError::Kind::unreachable);
    EXPECT_EQ(std::string(e.what()), "cannot reach the torii admin API at " + ep +
                                         ": Connection refused \u2014 is toriid running?");
  }
  EXPECT_THROW(HttpClient("no-port").request("GET", "/"), HttpClientError);
}

TEST(HttpClientTest, SilentServerTimesOut) {
  // Listening but never accepting: the connect completes from the backlog, no answer comes.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  const std::string ep = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  HttpClient client(ep, std::chrono::milliseconds(200));
  try {
    client.request("GET", "/v1/groups");
    FAIL() << "expected an HttpClientError";
  } catch (const HttpClientError& e) {
    EXPECT_EQ(e.kind(), HttpClientError::Kind::timeout);
    EXPECT_EQ(std::string(e.what()),
              "no answer from the torii admin API at " + ep + " within 200 ms");
  }
  ::close(fd);
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "torii-admin-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::filesystem::path path() const { return path_; }

 private:
  std::filesystem::path path_;
};

TEST_F(AdminApiTest, UnixSocketIsPrivateReplacesStaleSocketAndIsRemovedOnStop) {
  TempDir dir;
  const std::string path = (dir.path() / "admin.sock").string();
  {
    // A socket file left by a server that died without cleaning up.
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ::close(fd);
  }
  start("unix:" + path);
  EXPECT_EQ(api->bound_endpoint(), "unix:" + path);
  EXPECT_EQ(api->port(), 0);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  EXPECT_EQ(get("/v1/groups", "").status, 401);
  auto r = post("/v1/groups", {{"name", "cameras"}});
  EXPECT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(get("/metrics", "").status, 200);

  // A second server must not steal a live socket.
  FakeBackend other;
  boost::asio::io_context io2;
  AdminApi clash(io2, "unix:" + path, kToken, other);
  EXPECT_THROW(clash.start(), std::runtime_error);

  api->stop();
  io_thread.join();
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(AdminApiUnixTest, RefusesToReplaceANonSocketFile) {
  TempDir dir;
  const auto path = dir.path() / "admin.sock";
  { std::ofstream(path) << "not a socket"; }
  FakeBackend backend;
  boost::asio::io_context io;
  AdminApi api(io, "unix:" + path.string(), kToken, backend);
  try {
    api.start();
    FAIL() << "expected start() to fail";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("exists and is not a socket"), std::string::npos);
  }
  EXPECT_TRUE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace torii::net
