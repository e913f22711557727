#include "posttrain/run/reward_pipeline.h"

#include <atomic>
#include <cmath>
#include <stdexcept>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;

// Scores = completion length; or misbehaves as told.
class FakeReward final : public RewardFunction {
 public:
  enum class Mode { kLength, kNanOnX, kThrow, kError, kWrongSize };
  explicit FakeReward(Mode mode) : mode_(mode) {}
  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    calls_++;
    std::vector<float> out;
    for (const RewardInput& in : batch) {
      if (mode_ == Mode::kNanOnX && in.completion == "x") {
        out.push_back(std::nanf(""));
      } else {
        out.push_back(static_cast<float>(in.completion.size()));
      }
    }
    if (mode_ == Mode::kThrow) throw std::runtime_error("boom");
    if (mode_ == Mode::kError) return absl::UnavailableError("server down");
    if (mode_ == Mode::kWrongSize) out.pop_back();
    return out;
  }
  mutable std::atomic<int> calls_{0};

 private:
  Mode mode_;
};

struct Fixture {
  std::vector<Example> examples;
  std::vector<const Example*> prompts;
  std::vector<Rollout> rollouts;
  explicit Fixture(std::vector<std::string> completions) {
    examples.resize(2);
    examples[0].prompt = "p0";
    examples[0].source = "d.jsonl";
    examples[0].line = 3;
    examples[1].prompt = "p1";
    examples[1].source = "d.jsonl";
    examples[1].line = 4;
    prompts = {&examples[0], &examples[1]};
    for (size_t i = 0; i < completions.size(); ++i) {
      Rollout r;
      r.prompt_index = static_cast<std::int64_t>(i % 2);
      r.completion = completions[i];
      rollouts.push_back(r);
    }
  }
};

TEST(RewardPipelineTest, WeightedSumAndPerFunctionScoresAcrossChunks) {
  RewardPipeline pipeline(/*chunk_size=*/2);
  pipeline.Add("len", 1.0, std::make_unique<FakeReward>(FakeReward::Mode::kLength));
  pipeline.Add("half", 0.5, std::make_unique<FakeReward>(FakeReward::Mode::kLength));
  Fixture f({"a", "bb", "ccc", "dddd", "eeeee"});
  absl::StatusOr<RewardTable> table = pipeline.Score(f.prompts, f.rollouts);
  ASSERT_TRUE(table.ok()) << table.status();
  // total = 1.0 * len + 0.5 * len = 1.5 * len
  EXPECT_THAT(table->total, ::testing::ElementsAre(1.5f, 3.0f, 4.5f, 6.0f, 7.5f));
  EXPECT_THAT(table->per_function.at("half"), ::testing::ElementsAre(1, 2, 3, 4, 5));
}

TEST(RewardPipelineTest, NaNNamesTheRewardAndTheSample) {
  RewardPipeline pipeline(2);
  pipeline.Add("picky", 1.0, std::make_unique<FakeReward>(FakeReward::Mode::kNanOnX));
  Fixture f({"ok", "ok", "ok", "x"});
  absl::Status s = pipeline.Score(f.prompts, f.rollouts).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("reward 'picky' returned NaN for sample 3 (prompt from d.jsonl:4)"));
}

TEST(RewardPipelineTest, ExceptionsAndErrorsBecomeStatusesNamingTheReward) {
  for (auto [mode, expected] :
       std::vector<std::pair<FakeReward::Mode, std::string>>{
           {FakeReward::Mode::kThrow, "reward 'bad' threw: boom"},
           {FakeReward::Mode::kError, "server down"},
           {FakeReward::Mode::kWrongSize, "returned 1 scores for 2 samples"}}) {
    RewardPipeline pipeline(2);
    pipeline.Add("bad", 1.0, std::make_unique<FakeReward>(mode));
    Fixture f({"a", "b"});
    absl::Status s = pipeline.Score(f.prompts, f.rollouts).status();
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.message()), HasSubstr(expected));
    EXPECT_THAT(std::string(s.message()), HasSubstr("'bad'"));
  }
}

TEST(RewardPipelineTest, SkipErrorsLeavesNaNsOutOfTheTotalAndCountsThem) {
  RewardPipeline pipeline(2);
  pipeline.Add("len", 1.0, std::make_unique<FakeReward>(FakeReward::Mode::kLength));
  pipeline.Add("picky", 10.0, std::make_unique<FakeReward>(FakeReward::Mode::kNanOnX), /*skip_errors=*/true);
  pipeline.Add("down", 1.0, std::make_unique<FakeReward>(FakeReward::Mode::kError), /*skip_errors=*/true);
  Fixture f({"ok", "ab", "abc", "x"});
  absl::StatusOr<RewardTable> table = pipeline.Score(f.prompts, f.rollouts);
  ASSERT_TRUE(table.ok()) << table.status();
  // len + 10·picky, picky skipped on "x", "down" skipped everywhere.
  EXPECT_THAT(table->total, ::testing::ElementsAre(22.0f, 22.0f, 33.0f, 1.0f));
  EXPECT_TRUE(std::isnan(table->per_function.at("picky")[3]));
  EXPECT_EQ(table->skipped.at("picky"), 1);
  EXPECT_EQ(table->skipped.at("down"), 4);
  EXPECT_EQ(table->skipped.count("len"), 0u);
  std::map<std::string, double> metrics;
  AddRewardMetrics(*table, &metrics);
  EXPECT_DOUBLE_EQ(metrics.at("rewards/picky/mean"), 7.0 / 3.0);  // over the 3 it scored
  EXPECT_DOUBLE_EQ(metrics.at("rewards/picky/skipped"), 1.0);
  EXPECT_DOUBLE_EQ(metrics.at("rewards/down/skipped"), 4.0);
}

// Scores = completion length, but each call waits until released.
class GatedReward final : public RewardFunction {
 public:
  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    calls_++;
    std::unique_lock<std::mutex> lock(mutex_);
    released_.wait(lock, [&] { return open_; });
    std::vector<float> out;
    for (const RewardInput& in : batch) out.push_back(static_cast<float>(in.completion.size()));
    return out;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = true;
    released_.notify_all();
  }
  mutable std::atomic<int> calls_{0};

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable released_;
  bool open_ = false;
};

TEST(RewardPipelineTest, ASessionScoresWhileRolloutsArriveAndChunksWhenWorkersAreBusy) {
  RewardPipeline pipeline(/*chunk_size=*/2, /*workers=*/1);
  auto gated = std::make_unique<GatedReward>();
  GatedReward* reward = gated.get();
  pipeline.Add("len", 2.0, std::move(gated));
  Fixture f({"a", "bb", "ccc", "dddd", "eeeee"});
  RewardPipeline::Session session = pipeline.Start(f.prompts, f.rollouts.size());
  // The worker is idle: the first rollout is scored at once, on the worker thread,
  // while this thread goes on ("generating").
  session.Submit(3, f.rollouts[3]);
  for (int i = 0; i < 5000 && reward->calls_.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(reward->calls_.load(), 1);
  // The worker is busy: the next rollouts wait to fill a chunk of 2.
  session.Submit(1, f.rollouts[1]);
  session.Submit(0, f.rollouts[0]);
  reward->Release();
  // Finish scores the rest (never submitted: taken from the rollouts).
  absl::StatusOr<RewardTable> table = session.Finish(f.rollouts);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_THAT(table->total, ::testing::ElementsAre(2, 4, 6, 8, 10));
  EXPECT_EQ(reward->calls_.load(), 3);  // {3}, {1, 0}, {2, 4}
}

}  // namespace
}  // namespace posttrain
