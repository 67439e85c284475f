// torii — the admin CLI for a running toriid: groups, devices (add/list/show/revoke/disconnect)
// and the audit log, over toriid's admin HTTP API. This file: global options and the command table.
#include <iostream>

#include <CLI/CLI.hpp>

#include "apps/torii/common.hpp"

namespace {

using namespace torii::cli;

// One entry per subcommand family; each lives in its own file.
struct CommandFamily {
  const char* name;
  const char* description;
  void (*add)(CLI::App& cmd, const Globals& g, Action& action);
};

constexpr CommandFamily kCommands[] = {
    {"group", "Create and list device groups", register_group_commands},
    {"device", "Add, list, inspect, revoke and disconnect devices", register_device_commands},
    {"log", "Show the audit log (enrollments, sessions, admin actions)", register_log_command},
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"torii — administer a torii server (toriid) through its admin API"};
  app.name("torii");
  app.set_version_flag("--version", std::string("torii ") + TORII_VERSION);
  // Lets global options come after the subcommand too: `torii device list --api ...`.
  app.fallthrough();
  app.require_subcommand(1);

  Globals g;
  app.add_option("--api", g.api,
                 "Admin API: ADDR:PORT or unix:PATH (default: $TORII_API, else DATA_DIR/"
                 "api.endpoint, else 127.0.0.1:7444)")
      ->envname("TORII_API");
  app.add_option("-d,--data-dir", g.data_dir, "toriid's data directory")
      ->envname("TORII_DATA_DIR")
      ->capture_default_str();
  app.add_option("--token-file", g.token_file,
                 "Admin token file (default: $TORII_TOKEN_FILE, else DATA_DIR/admin.token)")
      ->envname("TORII_TOKEN_FILE");
  app.footer(
      "The admin token is read from DATA_DIR/admin.token, which toriid creates readable only by\n"
      "its own user: run torii as that user, or pass --token-file.");

  Action action;
  for (const auto& c : kCommands) c.add(*app.add_subcommand(c.name, c.description), g, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    // Point at the help of the command being parsed, e.g. "torii device add --help".
    std::string path = "torii";
    for (const CLI::App* cur = &app; !cur->get_subcommands().empty();) {
      cur = cur->get_subcommands().front();
      path += " " + cur->get_name();
    }
    std::cerr << "torii: " << e.what() << "\nRun '" << path << " --help' for usage.\n";
    return 2;
  }
  if (!action) {
    std::cerr << "torii: no command given\nRun 'torii --help' for usage.\n";
    return 2;
  }
  try {
    action();
  } catch (const std::exception& e) {
    std::cerr << "torii: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
