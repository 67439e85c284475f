// Synchronous HTTP client over Beast: each request runs a private io_context until the exchange
// completes or the deadline passes, so callers get plain blocking calls with a real timeout.
#include "net/http_client.hpp"

#include <charconv>
#include <exception>
#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace torii::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using unix_proto = asio::local::stream_protocol;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

namespace {

// Device lists can be long; this only bounds memory against a misbehaving server.
constexpr size_t kMaxResponseBytes = 64 * 1024 * 1024;

struct Outcome {
  enum class Stage { none, connect, write, read } failed = Stage::none;
  beast::error_code ec;
  std::optional<Response> response;
};

template <class Protocol, class Target>
asio::awaitable<void> exchange(beast::basic_stream<Protocol>& stream, const Target& where,
                               Request& req, std::chrono::steady_clock::time_point deadline,
                               Outcome& out) {
  beast::error_code ec;
  stream.expires_at(deadline);
  co_await stream.async_connect(where, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.failed = Outcome::Stage::connect;
    out.ec = ec;
    co_return;
  }
  stream.expires_at(deadline);
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  // A server may answer and close before reading all of a body it refuses (413); its response
  // can still be waiting in our receive buffer, so read even after a failed write.
  const beast::error_code write_ec = ec;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxResponseBytes);
  stream.expires_at(deadline);
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.failed = write_ec ? Outcome::Stage::write : Outcome::Stage::read;
    out.ec = write_ec && ec != beast::error::timeout ? write_ec : ec;
    co_return;
  }
  out.response = parser.release();
  stream.socket().shutdown(asio::socket_base::shutdown_both, ec);
}

template <class Protocol, class Target>
Outcome run(asio::io_context& io, beast::basic_stream<Protocol>& stream, const Target& where,
            Request& req, std::chrono::milliseconds timeout) {
  Outcome out;
  std::exception_ptr failure;
  asio::co_spawn(io, exchange(stream, where, req, std::chrono::steady_clock::now() + timeout, out),
                 [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) std::rethrow_exception(failure);
  return out;
}

std::string seconds_text(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + " s";
  return std::to_string(d.count()) + " ms";
}

}  // namespace

HttpClient::HttpClient(std::string endpoint, std::chrono::milliseconds timeout)
    : endpoint_(std::move(endpoint)), timeout_(timeout) {}

HttpResponse HttpClient::request(std::string_view method, const std::string& target,
                                 const nlohmann::json& body,
                                 const std::string& bearer_token) const {
  if (body.is_null()) return request_raw(method, target, "", "", bearer_token);
  return request_raw(method, target, body.dump(), "application/json", bearer_token);
}

HttpResponse HttpClient::request_raw(std::string_view method, const std::string& target,
                                     std::string body, const std::string& content_type,
                                     const std::string& bearer_token) const {
  const http::verb verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) {
    throw std::invalid_argument("unknown HTTP method '" + std::string(method) + "'");
  }
  const bool is_unix = endpoint_.rfind("unix:", 0) == 0;
  const std::string where = "the torii admin API at " + endpoint_;

  Request req{verb, target, 11};
  req.set(http::field::user_agent, "torii-cli");
  req.set(http::field::accept, "application/json");
  if (!bearer_token.empty()) req.set(http::field::authorization, "Bearer " + bearer_token);
  if (!body.empty() || verb == http::verb::post || verb == http::verb::put) {
    if (!content_type.empty()) req.set(http::field::content_type, content_type);
    req.body() = std::move(body);
  }
  // One request per connection: the CLI makes one call per run, so keep-alive buys nothing.
  req.keep_alive(false);

  asio::io_context io;
  Outcome out;
  if (is_unix) {
    const std::string path = endpoint_.substr(5);
    unix_proto::endpoint ep;
    try {
      if (path.empty()) throw std::invalid_argument("empty path");
      ep = unix_proto::endpoint(path);
    } catch (const std::exception& e) {
      throw HttpClientError(HttpClientError::Kind::bad_endpoint,
                            "invalid admin API address '" + endpoint_ + "': " + e.what());
    }
    req.set(http::field::host, "localhost");
    req.prepare_payload();
    beast::basic_stream<unix_proto> stream(io);
    out = run(io, stream, ep, req, timeout_);
  } else {
    std::string host, port;
    if (!endpoint_.empty() && endpoint_[0] == '[') {
      auto close = endpoint_.find("]:");
      if (close != std::string::npos) {
        host = endpoint_.substr(1, close - 1);
        port = endpoint_.substr(close + 2);
      }
    } else if (auto colon = endpoint_.rfind(':'); colon != std::string::npos) {
      host = endpoint_.substr(0, colon);
      port = endpoint_.substr(colon + 1);
    }
    uint16_t port_num = 0;
    auto [p, perr] = std::from_chars(port.data(), port.data() + port.size(), port_num);
    if (host.empty() || port.empty() || perr != std::errc() || p != port.data() + port.size()) {
      throw HttpClientError(HttpClientError::Kind::bad_endpoint,
                            "invalid admin API address '" + endpoint_ +
                                "': expected HOST:PORT (e.g. 127.0.0.1:7444) or unix:/path");
    }
    tcp::resolver resolver(io);
    beast::error_code ec;
    auto results = resolver.resolve(host, port, tcp::resolver::numeric_service, ec);
    if (ec) {
      throw HttpClientError(
          HttpClientError::Kind::unreachable,
          "cannot reach " + where + ": cannot resolve '" + host + "': " + ec.message());
    }
    req.set(http::field::host, endpoint_);
    req.prepare_payload();
    beast::basic_stream<tcp> stream(io);
    out = run(io, stream, results, req, timeout_);
  }

  if (out.ec == beast::error::timeout) {
    throw HttpClientError(HttpClientError::Kind::timeout,
                          "no answer from " + where + " within " + seconds_text(timeout_));
  }
  switch (out.failed) {
    case Outcome::Stage::connect:
      throw HttpClientError(
          HttpClientError::Kind::unreachable,
          "cannot reach " + where + ": " + out.ec.message() + " \u2014 is toriid running?");
    case Outcome::Stage::write:
    case Outcome::Stage::read:
      throw HttpClientError(HttpClientError::Kind::protocol,
                            "lost the connection to " + where + ": " + out.ec.message());
    case Outcome::Stage::none:
      break;
  }
  HttpResponse res;
  res.status = static_cast<int>(out.response->result_int());
  if (auto it = out.response->find(http::field::content_type); it != out.response->end()) {
    res.content_type = std::string(it->value());
  }
  res.body = std::move(out.response->body());
  return res;
}

}  // namespace torii::net
