// Endpoint and token discovery, the API call wrapper and output helpers for the `torii` CLI.
#include "apps/torii/common.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>

#include "net/http_client.hpp"

namespace torii::cli {

namespace {

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  s.erase(s.find_last_not_of(ws) + 1);
  return s;
}

std::string join_path(const std::string& dir, const char* name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::string token_path(const Globals& g) {
  return g.token_file.empty() ? join_path(g.data_dir, "admin.token") : g.token_file;
}

std::string token_read_error(const Globals& g, const std::string& path, int err) {
  std::string msg = "cannot read the admin token from " + path + ": " + std::strerror(err);
  if (err == EACCES || err == EPERM) {
    msg += "\n  run torii as the user that owns toriid's data directory";
    if (g.token_file.empty()) msg += " (" + g.data_dir + ")";
    msg += ", e.g. with sudo -u, or pass --token-file FILE with a readable copy";
  } else if (err == ENOENT && g.token_file.empty()) {
    msg +=
        "\n  toriid writes it when it starts; pass the --data-dir toriid uses (or set "
        "TORII_DATA_DIR), or pass --token-file FILE";
  } else {
    msg += "\n  pass --token-file FILE (or set TORII_TOKEN_FILE) to use another file";
  }
  return msg;
}

}  // namespace

std::string discover_api(const Globals& g) {
  if (!g.api.empty()) return g.api;
  std::ifstream in(join_path(g.data_dir, "api.endpoint"));
  std::string line;
  if (in && std::getline(in, line)) {
    line = trim(line);
    if (!line.empty()) return line;
  }
  return kDefaultApi;
}

std::string read_admin_token(const Globals& g) {
  const std::string path = token_path(g);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CliError(token_read_error(g, path, errno));
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      throw CliError("admin token file " + path + " is not a regular file");
    }
    if (st.st_mode & 077) {
      // Anyone who can read the token can administer every device; say so, but do not refuse:
      // the operator may be mid-way through fixing it.
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      std::cerr << "torii: warning: admin token file " << path
                << " is accessible to group or other users (mode " << mode << "); run: chmod 600 "
                << path << "\n";
    }
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw CliError(token_read_error(g, path, err));
    }
    if (n == 0 || text.size() > 64 * 1024) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  const std::string token = trim(text.substr(0, text.find('\n')));
  if (token.empty()) throw CliError("admin token file " + path + " is empty");
  return token;
}

nlohmann::json call_api(const Globals& g, std::string_view method, const std::string& target,
                        const nlohmann::json& body) {
  const std::string api = discover_api(g);
  const std::string token = read_admin_token(g);
  net::HttpResponse res;
  try {
    res = net::HttpClient(api).request(method, target, body, token);
  } catch (const net::HttpClientError& e) {
    std::string msg = e.what();
    if (e.kind() == net::HttpClientError::Kind::unreachable) {
      msg += " (toriid --data-dir " + g.data_dir + ")";
    }
    throw CliError(msg);
  }
  nlohmann::json j = nlohmann::json::parse(res.body, nullptr, false);
  if (res.status >= 200 && res.status < 300) {
    if (j.is_discarded()) {
      throw CliError("the admin API at " + api + " sent a response that is not JSON (HTTP " +
                     std::to_string(res.status) + ")");
    }
    return j;
  }
  std::string msg;
  if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_string()) {
    msg = j["error"].get<std::string>();
  } else {
    msg = "the admin API at " + api + " answered HTTP " + std::to_string(res.status) + ": " +
          trim(res.body.substr(0, 500));
  }
  if (res.status == 401) {
    msg += "\n  the token in " + token_path(g) + " is not accepted by the server at " + api +
           "; check --data-dir / --token-file / --api point at the same toriid";
  }
  throw CliError(msg);
}

std::string url_segment(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

std::optional<int64_t> parse_duration_seconds(std::string_view text) {
  if (text.size() < 2) return std::nullopt;
  int64_t unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    default:
      return std::nullopt;
  }
  const std::string_view num = text.substr(0, text.size() - 1);
  int64_t n = 0;
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
  if (ec != std::errc() || p != num.data() + num.size() || n <= 0) return std::nullopt;
  if (n > std::numeric_limits<int64_t>::max() / unit / 1000) return std::nullopt;
  return n * unit;
}

CLI::Validator duration_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        if (parse_duration_seconds(s)) return {};
        return "invalid duration '" + s +
               "': expected a positive number followed by s, m, h or d (e.g. 90s, 30m, 24h, 7d)";
      },
      "DURATION", "duration");
}

void print_json(const nlohmann::json& j) {
  std::cout << j.dump(2) << "\n";
}

void print_table(const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(headers.size());
  for (size_t i = 0; i < headers.size(); ++i) width[i] = headers[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], r[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < headers.size(); ++i) {
      const std::string& c = i < cells.size() ? cells[i] : std::string();
      out += c;
      if (i + 1 < headers.size()) out += std::string(width[i] - c.size() + 2, ' ');
    }
    std::cout << out << "\n";
  };
  line(headers);
  for (const auto& r : rows) line(r);
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string relative_time(int64_t then_ms, int64_t now) {
  const int64_t diff = now - then_ms;
  const bool future = diff < 0;
  const int64_t s = (future ? -diff : diff) / 1000;
  if (s < 1) return "just now";
  std::string amount;
  if (s < 60) {
    amount = std::to_string(s) + "s";
  } else if (s < 3600) {
    amount = std::to_string(s / 60) + "m";
  } else if (s < 86400) {
    amount = std::to_string(s / 3600) + "h";
  } else {
    amount = std::to_string(s / 86400) + "d";
  }
  return future ? "in " + amount : amount + " ago";
}

std::string text_or_dash(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  if (it->is_string()) {
    const auto& s = it->get_ref<const std::string&>();
    return s.empty() ? "-" : s;
  }
  return it->dump();
}

}  // namespace torii::cli
