// braid-info: the library version and every configuration variable with its type, default, the
// value this environment gives it, and what it does.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "braid/braid.h"
#include "src/core/config.h"

namespace braid {
namespace {

// Empty strings are shown as "" so that the columns stay readable.
std::string shown(const std::string& v) { return v.empty() ? "\"\"" : v; }

int infoMain(int argc, char** argv) {
  if (argc > 1) {
    std::string a = argv[1];
    bool help = a == "-h" || a == "--help";
    std::fprintf(help ? stdout : stderr,
                 "usage: %s\nPrints the braid version and the BRAID_* configuration variables: "
                 "type, default, the value in this environment, and what each one does.\n",
                 argv[0]);
    return help ? 0 : 2;
  }
  int version = 0;
  braidResult_t r = braidGetVersion(&version);
  if (r != braidSuccess) {
    std::fprintf(stderr, "braidGetVersion failed: %s: %s\n", braidGetErrorString(r),
                 braidGetLastError(nullptr));
    return 1;
  }
  std::printf("braid %d.%d.%d (version code %d)\n\n", version / 10000, version / 100 % 100,
              version % 100, version);

  struct Row {
    std::string cells[5];
  };
  std::vector<Row> rows{{{"variable", "type", "default", "current", "help"}}};
  forEachConfigEntry([&](const ConfigEntry& e) {
    std::string current = shown(e.currentValue);
    if (e.currentValue != e.defaultValue) current += " *";
    rows.push_back({{e.env, e.type, shown(e.defaultValue), current, e.help}});
  });
  size_t width[4] = {0, 0, 0, 0};
  for (const Row& row : rows) {
    for (size_t c = 0; c < 4; ++c) width[c] = std::max(width[c], row.cells[c].size());
  }
  for (const Row& row : rows) {
    std::string line;
    for (size_t c = 0; c < 4; ++c) {
      line += row.cells[c];
      line.append(width[c] + 2 - row.cells[c].size(), ' ');
    }
    line += row.cells[4];
    std::printf("%s\n", line.c_str());
  }
  std::printf("\n* set in this environment to something other than the default\n");
  Config config;
  if (Status s = Config::fromEnv(&config); !s.isOk()) {
    std::fprintf(stderr,
                 "\nbraid-info: the environment holds an invalid setting (the table shows the "
                 "defaults): %s\n",
                 s.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace braid

int main(int argc, char** argv) { return braid::infoMain(argc, argv); }
