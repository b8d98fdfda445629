// BRAID_IB_HCA's syntax (NCCL_IB_HCA's): prefixes, ':port', '^' excludes, '=' exact names.
#include <gtest/gtest.h>

#include "transports/ib/ib_transport.h"

namespace braid::ib {
namespace {

TEST(IbHca, EmptySelectsEverything) {
  EXPECT_TRUE(hcaMatches("", "mlx5_0", 1));
  EXPECT_TRUE(hcaMatches("", "rxe0", 2));
}

TEST(IbHca, PrefixesAndPorts) {
  EXPECT_TRUE(hcaMatches("mlx5_0", "mlx5_0", 1));
  EXPECT_TRUE(hcaMatches("mlx5_0", "mlx5_0", 2));
  EXPECT_TRUE(hcaMatches("mlx5_0", "mlx5_01", 1));  // a prefix, as NCCL
  EXPECT_FALSE(hcaMatches("mlx5_0", "mlx5_1", 1));
  EXPECT_TRUE(hcaMatches("mlx5", "mlx5_3", 1));
  EXPECT_TRUE(hcaMatches("mlx5_0:1", "mlx5_0", 1));
  EXPECT_FALSE(hcaMatches("mlx5_0:1", "mlx5_0", 2));
  EXPECT_TRUE(hcaMatches("mlx5_0:1,mlx5_2:2", "mlx5_2", 2));
  EXPECT_FALSE(hcaMatches("mlx5_0:1,mlx5_2:2", "mlx5_2", 1));
}

TEST(IbHca, ExactNames) {
  EXPECT_TRUE(hcaMatches("=mlx5_0", "mlx5_0", 1));
  EXPECT_FALSE(hcaMatches("=mlx5_0", "mlx5_01", 1));
  EXPECT_TRUE(hcaMatches("=rxe_a0,rxe_b0", "rxe_b0", 1));
  EXPECT_FALSE(hcaMatches("=rxe_a0,rxe_b0", "rxe_a1", 1));
}

TEST(IbHca, Exclusions) {
  EXPECT_TRUE(hcaMatches("^mlx5_1", "mlx5_0", 1));
  EXPECT_FALSE(hcaMatches("^mlx5_1", "mlx5_1", 1));
  EXPECT_FALSE(hcaMatches("^mlx5_1", "mlx5_10", 1));  // prefix
  EXPECT_TRUE(hcaMatches("^=mlx5_1", "mlx5_10", 1));  // exact
  EXPECT_FALSE(hcaMatches("^mlx5_0:2", "mlx5_0", 2));
  EXPECT_TRUE(hcaMatches("^mlx5_0:2", "mlx5_0", 1));
}

}  // namespace
// A spec that does not parse is refused naming the item (every one gave "not selected").
TEST(IbHca, ASpecThatDoesNotParseIsRefused) {
  for (const char* ok : {"", "mlx5_0", "mlx5_0:1,mlx5_1:2", "^mlx5_1", "=rxe_a0:1", "mlx5"}) {
    EXPECT_TRUE(checkHcaSpec(ok).isOk()) << ok;
  }
  for (const char* bad : {",", "rxe_a0:0", "rxe_a0:x", "rxe_a0:", ":1", "=", "^", "a:1,b:-2"}) {
    Status s = checkHcaSpec(bad);
    EXPECT_EQ(s.code(), braidInvalidArgument) << bad;
    EXPECT_NE(s.message().find("BRAID_IB_HCA"), std::string::npos) << s.message();
  }
}

}  // namespace braid::ib
