// braid as a downstream project gets it: `cmake --install` into a prefix, then programs built
// against that prefix alone, with find_package (shared and static, C and C++), with
// pkg-config (a static link from the .pc file's flags only), built with AddressSanitizer (its
// leak check must pass), and the installed tools run without LD_LIBRARY_PATH.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "harness/shell.h"

namespace {

using braid::test::sh;
using braid::test::Shell;

class Install : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* build = std::getenv("TEST_BUILD_DIR");
    const char* source = std::getenv("TEST_SOURCE_DIR");
    const char* cc = std::getenv("TEST_CC");
    if (build == nullptr || source == nullptr || cc == nullptr) {
      GTEST_SKIP() << "TEST_BUILD_DIR, TEST_SOURCE_DIR or TEST_CC not set (run by ctest)";
    }
    if (std::getenv("TEST_SANITIZED") != nullptr &&
        std::string(std::getenv("TEST_SANITIZED")) == "ON") {
      GTEST_SKIP() << "a sanitizer build's library needs sanitized consumers: packaging is "
                      "tested in the release build";
    }
    build_ = build;
    consumer_ = std::string(source) + "/tests/unit/install";
    cc_ = cc;
    char tmpl[] = "/tmp/braid-install-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    Shell r = sh("timeout 120 cmake --install " + build_ + " --prefix " + dir_ + "/prefix");
    ASSERT_EQ(r.exitCode, 0) << r.out;
    r = sh("dirname $(find " + dir_ + "/prefix -name braid.pc)");
    ASSERT_EQ(r.exitCode, 0) << r.out;
    pcDir_ = r.out.substr(0, r.out.find('\n'));
    ASSERT_FALSE(pcDir_.empty());
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) (void)sh("rm -rf " + dir_);
  }
  // Runs a built program with no launcher and no library path: a job of one rank.
  Shell runAlone(const std::string& prog) {
    return sh("env -u LD_LIBRARY_PATH -u BRAID_RANK -u BRAID_WORLD_SIZE timeout 60 " + prog);
  }
  std::string build_, consumer_, cc_, dir_, pcDir_;
};

TEST_F(Install, FindPackageBuildsSharedStaticCAndCxxConsumers) {
  Shell r = sh("timeout 300 cmake -S " + consumer_ + " -B " + dir_ +
               "/cmake -DCMAKE_PREFIX_PATH=" + dir_ + "/prefix -DCMAKE_C_COMPILER=" + cc_ +
               " && timeout 300 cmake --build " + dir_ + "/cmake");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  for (const char* prog : {"c_shared", "c_static", "cxx_shared"}) {
    Shell p = runAlone(dir_ + "/cmake/" + prog);
    EXPECT_EQ(p.exitCode, 0) << prog << "\n" << p.out;
    EXPECT_NE(p.out.find("ok"), std::string::npos) << prog << "\n" << p.out;
  }
}

TEST_F(Install, PkgConfigLinksStaticallyFromItsFlagsAlone) {
  // Only the archive where the linker looks first: the .pc's private libraries must be enough.
  const std::string pc = "PKG_CONFIG_PATH=" + pcDir_ + " pkg-config ";
  Shell r = sh("mkdir -p " + dir_ + "/a && cp " + pcDir_ + "/../libbraid.a " + dir_ + "/a/ && " +
               cc_ + " " + consumer_ + "/consumer.c -o " + dir_ + "/c_pc_static $(" + pc +
               "--cflags braid) -L" + dir_ + "/a $(" + pc + "--static --libs braid)");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  Shell p = runAlone(dir_ + "/c_pc_static");
  EXPECT_EQ(p.exitCode, 0) << p.out;
  // And the shared library from the same file.
  r = sh(cc_ + " " + consumer_ + "/consumer.c -o " + dir_ + "/c_pc_shared $(" + pc +
         "--cflags --libs braid) -Wl,-rpath," + pcDir_ + "/..");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  p = runAlone(dir_ + "/c_pc_shared");
  EXPECT_EQ(p.exitCode, 0) << p.out;
  // And the archive as installed, beside the shared library: braid-static.pc names it by
  // path (-lbraid would take the shared library; the program then needs a library path).
  r = sh(cc_ + " " + consumer_ + "/consumer.c -o " + dir_ + "/c_pc_archive $(" + pc +
         "--cflags --libs braid-static)");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  p = runAlone(dir_ + "/c_pc_archive");
  EXPECT_EQ(p.exitCode, 0) << p.out;
  Shell ldd = sh("ldd " + dir_ + "/c_pc_archive");
  EXPECT_EQ(ldd.out.find("libbraid"), std::string::npos) << ldd.out;
}

// A user's AddressSanitizer build links the release library: its leak check at exit must not
// find braid's kept topology (it did: every such program exited 1 with 14 KB "leaked").
TEST_F(Install, AnAddressSanitizedProgramLinkingBraidPassesItsLeakCheck) {
  const std::string pc = "PKG_CONFIG_PATH=" + pcDir_ + " pkg-config ";
  Shell r = sh(cc_ + " -fsanitize=address -g " + consumer_ + "/consumer.c -o " + dir_ +
               "/c_asan $(" + pc + "--cflags --libs braid) -Wl,-rpath," + pcDir_ + "/..");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  Shell p = runAlone("env ASAN_OPTIONS=detect_leaks=1 " + dir_ + "/c_asan");
  if (p.out.find("does not work under ptrace") != std::string::npos) {
    GTEST_SKIP() << "LeakSanitizer cannot run here (ptrace)";
  }
  EXPECT_EQ(p.exitCode, 0) << p.out;
  EXPECT_EQ(p.out.find("LeakSanitizer"), std::string::npos) << p.out;
}

TEST_F(Install, InstalledToolsRunWithoutALibraryPath) {
  Shell p = runAlone(dir_ + "/prefix/bin/braidrun -np 2 " + dir_ + "/prefix/bin/braid-example");
  EXPECT_EQ(p.exitCode, 0) << p.out;
  EXPECT_EQ(p.out.find("cannot open shared object"), std::string::npos) << p.out;
}

// The shared library exports the C API and nothing else (it exported ~40 instances of the
// standard library's templates, which could bind a program's own), and all of the C API.
TEST_F(Install, TheSharedLibraryExportsTheCApiOnly) {
  Shell lib = sh("ls " + pcDir_ + "/../libbraid.so");
  ASSERT_EQ(lib.exitCode, 0) << lib.out;
  Shell r = sh("nm -D --defined-only " + pcDir_ + "/../libbraid.so | awk '{print $3}' | sort");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  Shell api = sh("sed -n 's/^BRAID_API[^(]*[ *]\\(braid[A-Za-z0-9_]*\\)(.*/\\1/p' " + dir_ +
                 "/prefix/include/braid/braid.h | sort");
  ASSERT_EQ(api.exitCode, 0) << api.out;
  ASSERT_FALSE(api.out.empty());
  EXPECT_EQ(r.out, api.out);
}

}  // namespace
