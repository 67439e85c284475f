// Shared pieces of the `torii` admin CLI: global options, finding the admin API and its token,
// calling the API, and terminal output helpers used by every subcommand family.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace torii::cli {

inline constexpr const char* kDefaultDataDir = "/var/lib/torii";
inline constexpr const char* kDefaultApi = "127.0.0.1:7444";

// Global options (CLI11 fills them from flags, then the environment).
struct Globals {
  std::string api;                         // --api / TORII_API; empty: discover (see discover_api)
  std::string data_dir = kDefaultDataDir;  // --data-dir / TORII_DATA_DIR
  std::string token_file;  // --token-file / TORII_TOKEN_FILE; empty: DATA_DIR/admin.token
};

// A failure reported as "torii: <message>" with exit status 1.
class CliError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The work a chosen subcommand does; set during parsing, run after it succeeded.
using Action = std::function<void()>;

// --api, else $TORII_API (both via Globals::api), else the first line of DATA_DIR/api.endpoint
// (written by toriid), else 127.0.0.1:7444.
std::string discover_api(const Globals& g);

// --token-file, else $TORII_TOKEN_FILE, else DATA_DIR/admin.token. Throws CliError naming the
// path and how to fix access; warns on stderr if the file is accessible to group or others.
std::string read_admin_token(const Globals& g);

// Calls the admin API with the discovered endpoint and token. Returns the JSON body of a 2xx
// answer; otherwise throws CliError carrying the server's {"error"} text verbatim.
nlohmann::json call_api(const Globals& g, std::string_view method, const std::string& target,
                        const nlohmann::json& body = nullptr);

// Percent-encodes a value for use as one URL path segment (device IDs).
std::string url_segment(std::string_view s);

// "90s", "30m", "24h", "7d" -> seconds; nullopt for anything else (or zero/overflow).
std::optional<int64_t> parse_duration_seconds(std::string_view text);
// CLI11 check for options taking such durations, so a bad value is a usage error (exit 2).
CLI::Validator duration_validator();

// Output helpers.
void print_json(const nlohmann::json& j);
// Left-aligned columns separated by two spaces; the last column is not padded.
void print_table(const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows);
int64_t now_ms();
// "just now", "42s ago", "5m ago", "3h ago", "2d ago"; "in 5m" for future times.
std::string relative_time(int64_t then_ms, int64_t now);
// j[key] as display text: strings as-is ("-" if empty), numbers printed, null/missing "-".
std::string text_or_dash(const nlohmann::json& j, const char* key);

// Subcommand families, one per file. Each adds its commands under `cmd` (already created by
// main.cpp's table) and sets `action` when one of them is selected.
void register_group_commands(CLI::App& cmd, const Globals& g, Action& action);
void register_device_commands(CLI::App& cmd, const Globals& g, Action& action);
void register_log_command(CLI::App& cmd, const Globals& g, Action& action);

}  // namespace torii::cli
