// A small synchronous HTTP/1.1 client for the `torii` CLI and tests: one request per connection
// to the admin API over TCP ("HOST:PORT") or a unix socket ("unix:/path"), with a deadline.
#pragma once
#include <chrono>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace torii::net {

class HttpClientError : public std::runtime_error {
 public:
  enum class Kind {
    bad_endpoint,  // the endpoint text is not HOST:PORT or unix:/path
    unreachable,   // resolve or connect failed (server not running, wrong address, no permission)
    timeout,       // no complete response before the deadline
    protocol,      // connection lost mid-exchange or the response is not valid HTTP
  };
  HttpClientError(Kind k, const std::string& what) : std::runtime_error(what), kind_(k) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

class HttpClient {
 public:
  // endpoint: "127.0.0.1:7444", "[::1]:7444", "localhost:7444" or "unix:/path". Not validated
  // until the first request.
  explicit HttpClient(std::string endpoint,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Sends `method target` (e.g. "GET", "/v1/devices"). A non-null `body` is sent as JSON. A
  // non-empty `bearer_token` is sent as "Authorization: Bearer <token>". Returns whatever status
  // the server answered (4xx/5xx are not exceptions); throws HttpClientError when no response
  // arrives, with a message naming the endpoint, e.g. "cannot reach the torii admin API at
  // 127.0.0.1:7444: Connection refused — is toriid running?".
  HttpResponse request(std::string_view method, const std::string& target,
                       const nlohmann::json& body = nullptr,
                       const std::string& bearer_token = "") const;

  // Same with a raw body and content type (empty body: none sent). For tests of malformed input.
  HttpResponse request_raw(std::string_view method, const std::string& target, std::string body,
                           const std::string& content_type,
                           const std::string& bearer_token = "") const;

  const std::string& endpoint() const { return endpoint_; }

 private:
  std::string endpoint_;
  std::chrono::milliseconds timeout_;
};

}  // namespace torii::net
