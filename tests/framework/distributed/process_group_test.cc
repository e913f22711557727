#include "posttrain/distributed/process_group.h"

#include "gtest/gtest.h"

namespace posttrain {
namespace {

TEST(ProcessGroupTest, SingleRankAllReduceMeanIsTheIdentityThroughGloo) {
  auto group = ProcessGroup::CreateLocal();
  ASSERT_TRUE(group.ok()) << group.status();
  EXPECT_EQ((*group)->world_size(), 1);
  at::Tensor a = at::arange(6, at::kFloat).view({2, 3}), b = at::tensor({1.5, -2.0}, at::kDouble);
  at::Tensor a0 = a.clone(), b0 = b.clone();
  std::vector<at::Tensor> tensors = {a, at::Tensor(), b};
  ASSERT_TRUE((*group)->AllReduceMean(tensors).ok());
  EXPECT_TRUE(at::equal(a, a0));
  EXPECT_TRUE(at::equal(b, b0));
}

}  // namespace
}  // namespace posttrain
