// `torii group create|list`: device groups (every device belongs to exactly one).
#include <iostream>
#include <memory>

#include "apps/torii/common.hpp"

namespace torii::cli {

void register_group_commands(CLI::App& cmd, const Globals& g, Action& action) {
  cmd.require_subcommand(1);

  auto create = std::make_shared<std::pair<std::string, bool>>();  // name, --json
  CLI::App* c = cmd.add_subcommand("create", "Create a group");
  c->add_option("name", create->first, "Group name")->required();
  c->add_flag("--json", create->second, "Print the created group as JSON");
  c->callback([&g, &action, create] {
    action = [&g, create] {
      const auto j = call_api(g, "POST", "/v1/groups", {{"name", create->first}});
      if (create->second) {
        print_json(j);
      } else {
        std::cout << "Created group " << j.value("name", create->first) << "\n";
      }
    };
  });

  auto list_json = std::make_shared<bool>(false);
  CLI::App* l = cmd.add_subcommand("list", "List groups");
  l->add_flag("--json", *list_json, "Print {\"groups\": [...]} as JSON");
  l->callback([&g, &action, list_json] {
    action = [&g, list_json] {
      const auto j = call_api(g, "GET", "/v1/groups");
      if (*list_json) {
        print_json(j);
        return;
      }
      const auto& groups = j.at("groups");
      if (groups.empty()) {
        std::cout << "No groups yet. Create one with: torii group create NAME\n";
        return;
      }
      std::vector<std::vector<std::string>> rows;
      for (const auto& gr : groups) {
        rows.push_back({text_or_dash(gr, "name"), text_or_dash(gr, "created_at")});
      }
      print_table({"NAME", "CREATED"}, rows);
    };
  });
}

}  // namespace torii::cli
