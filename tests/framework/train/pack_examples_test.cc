// PackExamples (TRL's packing, strategy "bfd") on a hand-worked case: lengths
// 7, 5, 4, 3, 3, 2 and an over-long 12 into rows of 10.
//   12 → row 0 (alone: longer than a row)
//    7 → row 1 (room 3)        5 → row 2 (room 5)
//    4 → row 2, the tightest fit (room 5 → 1; row 1 has only 3)
//    3 → row 1, exactly filling it (room 3 → 0)
//    3 → row 3 (nothing has room: 1) (room 7)
//    2 → row 3, the only fit (room 7 → 5; row 2's 1 is too small)
#include <gtest/gtest.h>

#include "posttrain/train/tokenize.h"

namespace posttrain {
namespace {

TokenizedExample Seq(std::int64_t index, std::int64_t prompt, std::int64_t completion) {
  TokenizedExample t;
  t.index = index;
  t.prompt_ids.assign(static_cast<size_t>(prompt), 1);
  t.completion_ids.assign(static_cast<size_t>(completion), 100 + index);
  return t;
}

TEST(PackExamplesTest, BestFitDecreasingAsWorkedByHand) {
  const std::vector<TokenizedExample> data = {Seq(0, 2, 5), Seq(1, 1, 4), Seq(2, 0, 4), Seq(3, 1, 2),
                                              Seq(4, 1, 2), Seq(5, 1, 1), Seq(6, 2, 10)};
  std::vector<std::int64_t> first;
  const std::vector<TokenizedExample> rows = PackExamples(data, 10, &first);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(first, (std::vector<std::int64_t>{6, 0, 1, 4}));
  const std::vector<std::vector<std::int64_t>> expected = {{6}, {0, 3}, {1, 2}, {4, 5}};
  for (size_t r = 0; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r].index, static_cast<std::int64_t>(r));
    EXPECT_TRUE(rows[r].prompt_ids.empty() && rows[r].completion_ids.empty());
    std::vector<std::int64_t> members;
    for (const TokenizedExample& m : rows[r].packed) {
      members.push_back(m.index);
      // Each member keeps its own prompt and completion.
      EXPECT_EQ(m.prompt_ids, data[static_cast<size_t>(m.index)].prompt_ids);
      EXPECT_EQ(m.completion_ids, data[static_cast<size_t>(m.index)].completion_ids);
    }
    EXPECT_EQ(members, expected[r]) << "row " << r;
  }
}

TEST(PackExamplesTest, EverySequenceOnceAndNoRowOverLength) {
  std::vector<TokenizedExample> data;
  for (std::int64_t i = 0; i < 200; ++i) data.push_back(Seq(i, i % 5, 1 + (i * 37) % 60));  // <= 64 each
  std::vector<std::int64_t> first;
  const std::vector<TokenizedExample> rows = PackExamples(data, 64, &first);
  std::vector<int> seen(data.size(), 0);
  std::int64_t total = 0;
  for (const TokenizedExample& row : rows) {
    std::int64_t used = 0;
    for (const TokenizedExample& m : row.packed) {
      ++seen[static_cast<size_t>(m.index)];
      used += static_cast<std::int64_t>(m.prompt_ids.size() + m.completion_ids.size());
    }
    EXPECT_LE(used, 64);
    total += used;
  }
  for (int s : seen) EXPECT_EQ(s, 1);
  // Best fit wastes little: fewer than 10% more rows than the bound total / 64.
  EXPECT_LE(static_cast<double>(rows.size()), 1.1 * static_cast<double>(total) / 64 + 1);
}

}  // namespace
}  // namespace posttrain
