// `torii log`: the server's audit log (enrollments, failed authentications, sessions, admin
// actions), newest last.
#include <iostream>
#include <memory>

#include "apps/torii/common.hpp"

namespace torii::cli {

namespace {

struct LogOptions {
  int limit = 50;
  std::optional<int64_t> after;
  bool json = false;
};

}  // namespace

void register_log_command(CLI::App& cmd, const Globals& g, Action& action) {
  auto opt = std::make_shared<LogOptions>();
  cmd.add_option("-n,--limit", opt->limit, "How many events to show (1-1000)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd.add_option("--after", opt->after,
                 "Show events with a sequence number above SEQ, oldest first (default: the newest)")
      ->check(CLI::NonNegativeNumber);
  cmd.add_flag("--json", opt->json, "Print {\"events\": [...]} as JSON");
  cmd.callback([&g, &action, opt] {
    action = [&g, opt] {
      std::string target = "/v1/audit?limit=" + std::to_string(opt->limit);
      if (opt->after) target += "&after=" + std::to_string(*opt->after);
      const auto j = call_api(g, "GET", target);
      if (opt->json) {
        print_json(j);
        return;
      }
      const auto& events = j.at("events");
      if (events.empty()) {
        std::cout << "No audit events.\n";
        return;
      }
      std::vector<std::vector<std::string>> rows;
      for (const auto& e : events) {
        rows.push_back({text_or_dash(e, "seq"), text_or_dash(e, "time"), text_or_dash(e, "kind"),
                        text_or_dash(e, "device_id"), text_or_dash(e, "source"),
                        text_or_dash(e, "detail")});
      }
      print_table({"SEQ", "TIME", "KIND", "DEVICE", "SOURCE", "DETAIL"}, rows);
    };
  });
}

}  // namespace torii::cli
