// Admin HTTP API server: Beast over TCP or a unix socket, one coroutine per connection, every
// handler on one strand. Routing, token check and JSON validation live here; the work is the
// backend's.
#include "net/admin_api.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "net/admin_json.hpp"

namespace torii::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using unix_proto = asio::local::stream_protocol;
using Strand = asio::strand<asio::io_context::executor_type>;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;
using Sha256 = std::array<unsigned char, 32>;

namespace {

constexpr size_t kMaxHeaderBytes = 8 * 1024;
constexpr int kDefaultAuditLimit = 100;
constexpr int kMaxAuditLimit = 1000;
// Enrollment tokens are meant to be short-lived; the cap also keeps seconds->ms far from overflow.
constexpr int64_t kMaxTtlSeconds = 365LL * 24 * 3600;

// A client mistake the handler reports as 400 with this message.
struct BadRequest : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Sha256 sha256(std::string_view s) {
  Sha256 out{};
  unsigned int len = 0;
  if (EVP_Digest(s.data(), s.size(), out.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != out.size()) {
    throw std::runtime_error("SHA-256 failed");
  }
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding of one path segment or query value; malformed escapes are a 400.
std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) throw BadRequest("malformed percent-escape in URL");
      int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) throw BadRequest("malformed percent-escape in URL");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> segs;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    segs.push_back(percent_decode(path.substr(start, end - start), false));
    start = end + 1;
  }
  return segs;
}

std::unordered_map<std::string, std::string> parse_query(std::string_view q) {
  std::unordered_map<std::string, std::string> out;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string key = percent_decode(part.substr(0, eq), true);
    std::string value =
        eq == std::string_view::npos ? std::string{} : percent_decode(part.substr(eq + 1), true);
    out[std::move(key)] = std::move(value);
  }
  return out;
}

int64_t parse_int_param(const std::string& name, const std::string& text, int64_t lo, int64_t hi) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v < lo || v > hi) {
    throw BadRequest("query parameter '" + name + "' must be an integer from " +
                     std::to_string(lo) + " to " + std::to_string(hi) + ", got '" + text + "'");
  }
  return v;
}

nlohmann::json parse_json_object(const std::string& body) {
  if (body.empty()) throw BadRequest("request body must be a JSON object");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() starts with "[json.exception.parse_error.101] "; the rest is the useful part.
    std::string what = e.what();
    if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    throw BadRequest("request body is not valid JSON: " + what);
  }
  if (!j.is_object()) throw BadRequest("request body must be a JSON object");
  return j;
}

// A string field; nullopt when absent or null (if !required).
std::optional<std::string> string_field(const nlohmann::json& j, const char* name, bool required) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) {
    if (required) throw BadRequest(std::string("field '") + name + "' is required (a string)");
    return std::nullopt;
  }
  if (!it->is_string()) {
    throw BadRequest(std::string("field '") + name + "' must be a string, not " + it->type_name());
  }
  return it->get<std::string>();
}

Response make_response(unsigned status, bool keep_alive) {
  Response res{static_cast<http::status>(status), 11};
  res.set(http::field::server, "torii-admin");
  res.keep_alive(keep_alive);
  return res;
}

Response json_response(unsigned status, const nlohmann::json& body) {
  Response res = make_response(status, true);
  res.set(http::field::content_type, "application/json");
  // Responses may carry one-time enrollment tokens; nothing here should sit in a cache.
  res.set(http::field::cache_control, "no-store");
  res.body() = body.dump() + "\n";
  return res;
}

Response error_response(unsigned status, const std::string& message) {
  return json_response(status, {{"error", message}});
}

Response method_not_allowed(http::verb got, const char* allowed, const std::string& path) {
  Response res = error_response(405, "method " + std::string(http::to_string(got)) +
                                         " is not allowed on " + path + "; use " + allowed);
  res.set(http::field::allow, allowed);
  return res;
}

std::string endpoint_text(const tcp::endpoint& ep) {
  if (ep.address().is_v6())
    return "[" + ep.address().to_string() + "]:" + std::to_string(ep.port());
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

std::string peer_text(const tcp::socket& s) {
  beast::error_code ec;
  auto ep = s.remote_endpoint(ec);
  return ec ? std::string("?") : endpoint_text(ep);
}
std::string peer_text(const unix_proto::socket&) {
  return "unix";
}

}  // namespace

struct AdminApi::Impl {
  Impl(asio::io_context& io, std::string spec, std::string token, AdminBackend& backend)
      : io(io), strand(asio::make_strand(io)), spec(std::move(spec)), backend(backend) {
    if (token.empty()) throw std::invalid_argument("the admin API token must not be empty");
    // Comparing digests makes the check constant-time without leaking the token's length.
    token_hash = sha256(token);
  }

  asio::io_context& io;
  Strand strand;
  std::string spec;
  Sha256 token_hash{};
  AdminBackend& backend;

  std::optional<tcp::acceptor> tcp_acceptor;
  std::optional<unix_proto::acceptor> unix_acceptor;
  std::string unix_path;
  dev_t unix_dev = 0;
  ino_t unix_ino = 0;
  std::string bound;
  uint16_t bound_port = 0;
  bool started = false;
  bool stopped = false;

  std::atomic<uint64_t> unauthorized{0};

  // Open connections by id, each with a function that closes its socket (for stop()). Touched
  // only on the strand.
  uint64_t next_conn_id = 0;
  std::unordered_map<uint64_t, std::function<void()>> conns;

  void start();
  void start_tcp();
  void start_unix();
  void do_stop();

  // `self` keeps this object alive for as long as the coroutine frame exists.
  template <class Acceptor>
  asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self, Acceptor& acceptor);
  template <class Socket>
  asio::awaitable<void> session(std::shared_ptr<Impl> self, Socket socket);

  Response handle(const Request& req, const std::string& peer);
  Response route(const Request& req, const std::string& path, std::string_view query);
  std::optional<Response> check_auth(const Request& req, const std::string& peer);

  [[noreturn]] void fail_listen(const std::string& why) const {
    throw std::runtime_error("cannot listen on " + spec + " for the admin API: " + why);
  }
};

// --- listening -------------------------------------------------------------------------------

void AdminApi::Impl::start() {
  if (started) throw std::logic_error("AdminApi::start called twice");
  started = true;
  if (spec.rfind("unix:", 0) == 0) {
    start_unix();
  } else {
    start_tcp();
  }
}

void AdminApi::Impl::start_tcp() {
  const std::string bad = "invalid admin API listen address '" + spec +
                          "': expected ADDR:PORT (e.g. 127.0.0.1:7444, [::1]:7444) or unix:/path";
  std::string host, port_text;
  if (!spec.empty() && spec[0] == '[') {
    auto close = spec.find("]:");
    if (close == std::string::npos) throw std::runtime_error(bad);
    host = spec.substr(1, close - 1);
    port_text = spec.substr(close + 2);
  } else {
    auto colon = spec.rfind(':');
    if (colon == std::string::npos) throw std::runtime_error(bad);
    host = spec.substr(0, colon);
    port_text = spec.substr(colon + 1);
  }
  if (host == "localhost") host = "127.0.0.1";
  beast::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  uint16_t port = 0;
  auto [p, perr] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec || perr != std::errc() || p != port_text.data() + port_text.size() || port_text.empty()) {
    throw std::runtime_error(bad);
  }
  tcp::endpoint ep(addr, port);
  tcp::acceptor acc(strand);
  acc.open(ep.protocol(), ec);
  if (ec) fail_listen(ec.message());
  // Lets toriid restart at once while old connections sit in TIME_WAIT.
  acc.set_option(asio::socket_base::reuse_address(true), ec);
  acc.bind(ep, ec);
  if (ec) fail_listen(ec.message());
  acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail_listen(ec.message());
  auto local = acc.local_endpoint(ec);
  if (ec) fail_listen(ec.message());
  bound = endpoint_text(local);
  bound_port = local.port();
  tcp_acceptor.emplace(std::move(acc));
}

void AdminApi::Impl::start_unix() {
  unix_path = spec.substr(5);
  if (unix_path.empty()) {
    throw std::runtime_error("invalid admin API listen address '" + spec +
                             "': expected unix:/path/to/socket");
  }
  unix_proto::endpoint ep;
  try {
    ep = unix_proto::endpoint(unix_path);
  } catch (const std::exception& e) {
    fail_listen(std::string("socket path is too long (") + e.what() + ")");
  }
  struct stat st {};
  if (::lstat(unix_path.c_str(), &st) == 0) {
    // Only a socket left behind by a dead server may be replaced: never delete a regular file,
    // and never steal the socket of a server that still answers.
    if (!S_ISSOCK(st.st_mode)) fail_listen(unix_path + " exists and is not a socket");
    unix_proto::socket probe(io);
    beast::error_code ec;
    probe.connect(ep, ec);
    if (!ec) fail_listen("another process is already listening on " + unix_path);
    if (::unlink(unix_path.c_str()) != 0 && errno != ENOENT) {
      fail_listen("cannot remove stale socket " + unix_path + ": " + std::strerror(errno));
    }
  }
  unix_proto::acceptor acc(strand);
  beast::error_code ec;
  acc.open(ep.protocol(), ec);
  if (ec) fail_listen(ec.message());
  acc.bind(ep, ec);
  if (ec) fail_listen(ec.message());
  // chmod before listen(): until listen, connects are refused, so there is no window in which
  // the socket is reachable with the umask's wider mode.
  if (::chmod(unix_path.c_str(), 0600) != 0) {
    int err = errno;
    ::unlink(unix_path.c_str());
    fail_listen("cannot chmod 0600 " + unix_path + ": " + std::strerror(err));
  }
  acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    ::unlink(unix_path.c_str());
    fail_listen(ec.message());
  }
  if (::stat(unix_path.c_str(), &st) == 0) {
    unix_dev = st.st_dev;
    unix_ino = st.st_ino;
  }
  bound = "unix:" + unix_path;
  unix_acceptor.emplace(std::move(acc));
}

void AdminApi::Impl::do_stop() {
  if (stopped) return;
  stopped = true;
  beast::error_code ec;
  if (tcp_acceptor) tcp_acceptor->close(ec);
  if (unix_acceptor) {
    unix_acceptor->close(ec);
    // Remove the socket file only if it is still ours (a new server may have replaced it).
    struct stat st {};
    if (::lstat(unix_path.c_str(), &st) == 0 && st.st_dev == unix_dev && st.st_ino == unix_ino) {
      ::unlink(unix_path.c_str());
    }
  }
  auto open = conns;  // closers do not erase synchronously, but stay safe if that changes
  for (auto& [id, close] : open) close();
}

// --- connections -----------------------------------------------------------------------------

template <class Acceptor>
asio::awaitable<void> AdminApi::Impl::accept_loop(std::shared_ptr<Impl> self, Acceptor& acceptor) {
  for (;;) {
    beast::error_code ec;
    auto socket = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopped || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // E.g. EMFILE: back off briefly instead of spinning on the error.
      spdlog::warn("admin API: accept on {} failed: {}", bound, ec.message());
      asio::steady_timer t(strand, std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopped) co_return;
      continue;
    }
    if (conns.size() >= AdminApi::kMaxConnections) {
      spdlog::warn("admin API: {} connections open; refusing a new one", AdminApi::kMaxConnections);
      socket.close(ec);
      continue;
    }
    asio::co_spawn(strand, session(self, std::move(socket)), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        spdlog::error("admin API: connection failed: {}", x.what());
      }
    });
  }
}

template <class Socket>
asio::awaitable<void> AdminApi::Impl::session(std::shared_ptr<Impl> self, Socket socket) {
  using Protocol = typename Socket::protocol_type;
  beast::basic_stream<Protocol> stream(std::move(socket));
  const std::string peer = peer_text(stream.socket());

  const uint64_t id = next_conn_id++;
  conns.emplace(id, [&stream] {
    beast::error_code ec;
    stream.socket().shutdown(asio::socket_base::shutdown_both, ec);
    stream.close();
  });
  struct Unregister {
    Impl* impl;
    uint64_t id;
    ~Unregister() { impl->conns.erase(id); }
  } unregister{this, id};

  beast::flat_buffer buffer;
  beast::error_code ec;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    parser.body_limit(AdminApi::kMaxBodyBytes);
    // One deadline for headers and body: a client that trickles bytes cannot hold the slot.
    stream.expires_after(std::chrono::seconds(AdminApi::kReadTimeoutSeconds));
    co_await http::async_read(stream, buffer, parser,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (stopped) co_return;
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset) {
      break;
    }
    if (ec) {
      Response res;
      if (ec == http::error::body_limit) {
        res = error_response(413, "request body too large (limit " +
                                      std::to_string(AdminApi::kMaxBodyBytes) + " bytes)");
      } else if (ec == http::error::header_limit) {
        res = error_response(
            431, "request headers too large (limit " + std::to_string(kMaxHeaderBytes) + " bytes)");
      } else if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
        res = error_response(400, "malformed HTTP request: " + ec.message());
      } else {
        break;  // a socket error: nobody to answer
      }
      res.keep_alive(false);
      res.prepare_payload();
      stream.expires_after(std::chrono::seconds(AdminApi::kReadTimeoutSeconds));
      co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
      if (stopped || ec) co_return;
      // Lingering close: if we closed with the client's unread body in our receive buffer, the
      // kernel would reset the connection and the client might never see the error response.
      stream.socket().shutdown(asio::socket_base::shutdown_send, ec);
      stream.expires_after(std::chrono::seconds(2));
      std::array<char, 16 * 1024> sink;
      size_t drained = 0;
      while (drained < 4 * AdminApi::kMaxBodyBytes) {
        size_t n = co_await stream.async_read_some(asio::buffer(sink),
                                                   asio::redirect_error(asio::use_awaitable, ec));
        if (stopped || ec) break;
        drained += n;
      }
      break;
    }

    Request req = parser.release();
    Response res = handle(req, peer);
    res.keep_alive(req.keep_alive() && res.keep_alive());
    res.prepare_payload();
    stream.expires_after(std::chrono::seconds(AdminApi::kReadTimeoutSeconds));
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
    if (stopped || ec || !res.keep_alive()) break;
  }
  if (!stopped) {
    stream.socket().shutdown(asio::socket_base::shutdown_send, ec);
    stream.close();
  }
}

// --- requests --------------------------------------------------------------------------------

std::optional<Response> AdminApi::Impl::check_auth(const Request& req, const std::string& peer) {
  auto reject = [&](const std::string& why) {
    unauthorized.fetch_add(1, std::memory_order_relaxed);
    // Never log the presented credential, not even a prefix: it may be the real token mistyped.
    spdlog::warn("admin API: rejected {} {} from {}: {}", std::string(req.method_string()),
                 std::string(req.target()), peer, why);
    Response res = error_response(401, why);
    res.set(http::field::www_authenticate, "Bearer realm=\"torii-admin\"");
    return res;
  };
  auto it = req.find(http::field::authorization);
  if (it == req.end()) {
    return reject("missing Authorization header; send 'Authorization: Bearer <admin token>'");
  }
  std::string_view value = it->value();
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() < kScheme.size() || !iequals(value.substr(0, kScheme.size()), kScheme)) {
    return reject("malformed Authorization header; expected 'Bearer <admin token>'");
  }
  std::string_view presented = value.substr(kScheme.size());
  while (!presented.empty() && presented.front() == ' ') presented.remove_prefix(1);
  while (!presented.empty() && presented.back() == ' ') presented.remove_suffix(1);
  const Sha256 h = sha256(presented);
  if (CRYPTO_memcmp(h.data(), token_hash.data(), h.size()) != 0) {
    return reject("invalid admin token");
  }
  return std::nullopt;
}

Response AdminApi::Impl::handle(const Request& req, const std::string& peer) {
  std::string_view target = req.target();
  const auto qpos = target.find('?');
  const std::string path(target.substr(0, qpos));
  const std::string_view query =
      qpos == std::string_view::npos ? std::string_view{} : target.substr(qpos + 1);
  try {
    if (path == "/metrics") {
      if (req.method() != http::verb::get) return method_not_allowed(req.method(), "GET", path);
      Response res = make_response(200, true);
      res.set(http::field::content_type, "text/plain; version=0.0.4");
      res.body() = backend.metrics_text();
      return res;
    }
    if (path != "/v1" && path.rfind("/v1/", 0) != 0) {
      return error_response(404, "no such endpoint: " + path);
    }
    // Authenticate before routing, so probing without the token learns nothing about routes.
    if (auto denied = check_auth(req, peer)) return std::move(*denied);
    Response res = route(req, path, query);
    spdlog::debug("admin API: {} {} from {} -> {}", std::string(req.method_string()), path, peer,
                  res.result_int());
    return res;
  } catch (const AdminError& e) {
    int status = e.status();
    if (status < 400 || status > 599) {
      spdlog::error("admin API: {} {}: backend error with status {}: {}",
                    std::string(req.method_string()), path, status, e.what());
      return error_response(500, "internal error");
    }
    return error_response(static_cast<unsigned>(status), e.what());
  } catch (const BadRequest& e) {
    return error_response(400, e.what());
  } catch (const std::exception& e) {
    spdlog::error("admin API: {} {} failed: {}", std::string(req.method_string()), path, e.what());
    return error_response(500, "internal error");
  }
}

Response AdminApi::Impl::route(const Request& req, const std::string& path,
                               std::string_view query) {
  if (path.size() <= 4) return error_response(404, "no such endpoint: " + path);
  const auto segs = split_path(std::string_view(path).substr(4));  // after "/v1/"
  const http::verb m = req.method();

  if (segs.size() == 1 && segs[0] == "groups") {
    if (m == http::verb::get) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& g : backend.list_groups()) arr.push_back(group_to_json(g));
      return json_response(200, {{"groups", std::move(arr)}});
    }
    if (m == http::verb::post) {
      const auto body = parse_json_object(req.body());
      const std::string name = *string_field(body, "name", true);
      return json_response(201, group_to_json(backend.create_group(name)));
    }
    return method_not_allowed(m, "GET, POST", path);
  }

  if (segs.size() == 1 && segs[0] == "devices") {
    if (m == http::verb::get) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& d : backend.list_devices()) arr.push_back(device_view_to_json(d));
      return json_response(200, {{"devices", std::move(arr)}});
    }
    if (m == http::verb::post) {
      const auto body = parse_json_object(req.body());
      const std::string id = string_field(body, "id", false).value_or("");
      const std::string group = *string_field(body, "group", true);
      std::optional<Duration> ttl;
      if (auto it = body.find("ttl_seconds"); it != body.end() && !it->is_null()) {
        if (!it->is_number_integer() || it->get<int64_t>() < 1 ||
            it->get<int64_t>() > kMaxTtlSeconds) {
          throw BadRequest("field 'ttl_seconds' must be an integer from 1 to " +
                           std::to_string(kMaxTtlSeconds) + " (365 days)");
        }
        ttl = std::chrono::seconds(it->get<int64_t>());
      }
      return json_response(201, new_device_to_json(backend.add_device(id, group, ttl)));
    }
    return method_not_allowed(m, "GET, POST", path);
  }

  if (segs.size() == 2 && segs[0] == "devices" && !segs[1].empty()) {
    if (m != http::verb::get) return method_not_allowed(m, "GET", path);
    return json_response(200, device_view_to_json(backend.get_device(segs[1])));
  }

  if (segs.size() == 3 && segs[0] == "devices" && !segs[1].empty() &&
      (segs[2] == "revoke" || segs[2] == "disconnect")) {
    if (m != http::verb::post) return method_not_allowed(m, "POST", path);
    if (segs[2] == "revoke") {
      backend.revoke_device(segs[1]);
      return json_response(200, {{"revoked", segs[1]}});
    }
    backend.disconnect_device(segs[1]);
    return json_response(200, {{"disconnected", segs[1]}});
  }

  if (segs.size() == 1 && segs[0] == "audit") {
    if (m != http::verb::get) return method_not_allowed(m, "GET", path);
    const auto params = parse_query(query);
    int64_t limit = kDefaultAuditLimit;
    int64_t after = -1;
    if (auto it = params.find("limit"); it != params.end()) {
      limit = parse_int_param("limit", it->second, 1, kMaxAuditLimit);
    }
    if (auto it = params.find("after"); it != params.end()) {
      after = parse_int_param("after", it->second, 0, INT64_MAX);
    }
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& e : backend.audit(static_cast<size_t>(limit), after)) {
      arr.push_back(audit_event_to_json(e));
    }
    return json_response(200, {{"events", std::move(arr)}});
  }

  return error_response(404, "no such endpoint: " + path);
}

// --- public API ------------------------------------------------------------------------------

AdminApi::AdminApi(asio::io_context& io, std::string listen_spec, std::string admin_token,
                   AdminBackend& backend)
    : impl_(std::make_shared<Impl>(io, std::move(listen_spec), std::move(admin_token), backend)) {}

AdminApi::~AdminApi() {
  if (impl_->started) impl_->do_stop();
}

void AdminApi::start() {
  impl_->start();
  auto impl = impl_;
  auto on_done = [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      spdlog::error("admin API: accept loop failed: {}", x.what());
    }
  };
  if (impl->tcp_acceptor) {
    asio::co_spawn(impl->strand, impl->accept_loop(impl, *impl->tcp_acceptor), on_done);
  } else {
    asio::co_spawn(impl->strand, impl->accept_loop(impl, *impl->unix_acceptor), on_done);
  }
  spdlog::info("admin API listening on {}", impl->bound);
}

void AdminApi::stop() {
  asio::dispatch(impl_->strand, [impl = impl_] { impl->do_stop(); });
}

std::string AdminApi::bound_endpoint() const {
  return impl_->bound;
}
uint16_t AdminApi::port() const {
  return impl_->bound_port;
}
uint64_t AdminApi::unauthorized_count() const {
  return impl_->unauthorized.load();
}

}  // namespace torii::net
