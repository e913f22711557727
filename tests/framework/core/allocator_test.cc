// Every posttrain program allocates through a caching allocator (CMakeLists.txt,
// posttrain_use_allocator): a large buffer freed in one step is reused in the next
// without the kernel mapping and zeroing its pages again.
#include <sys/resource.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace {

long MinorFaults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

TEST(AllocatorTest, FreedLargeBuffersAreReusedWithoutPageFaults) {
  const std::int64_t elements = 64LL * 1024 * 1024 / 4;  // 64 MiB: 16384 pages
  const long pages = 64L * 1024 * 1024 / 4096;
  {
    at::Tensor warm = at::empty({elements}, at::kFloat);
    warm.fill_(1.0f);
  }
  const long before = MinorFaults();
  for (int i = 0; i < 4; ++i) {
    at::Tensor t = at::empty({elements}, at::kFloat);
    t.fill_(static_cast<float>(i));
  }
  const long faults = MinorFaults() - before;
  // glibc's malloc maps such a buffer afresh each time: >= 4 * 16384 faults.
  EXPECT_LT(faults, pages / 4) << "freed buffers are not reused: " << faults << " page faults in 4 cycles";
}

}  // namespace
