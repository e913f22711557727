#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "reward_test_util.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<RewardFunction> Command(std::vector<std::string> argv, double timeout = 20.0) {
  auto reward = testing::CreateBuiltin<RewardFunction>("command", {{"command", argv}, {"timeout", timeout}});
  EXPECT_TRUE(reward.ok()) << reward.status();
  return std::move(*reward);
}

absl::StatusOr<std::vector<float>> ScoreWith(const RewardFunction& reward, const std::vector<std::string>& completions) {
  return testing::ScoreRows(reward, "Once", completions, {{{"answer", "7"}}});
}

TEST(CommandRewardTest, ScoresWithAProgramReadingJsonLines) {
  // One JSON object per line in (prompt, completion, the example's fields), one number out.
  const std::string script =
      "import json, sys\n"
      "for line in sys.stdin:\n"
      "    r = json.loads(line)\n"
      "    print(len(r['completion']) + (100 if r['answer'] == '7' and r['prompt'] == 'Once' else 0))\n"
      "    sys.stdout.flush()\n";
  auto reward = Command({"python3", "-c", script});
  EXPECT_THAT(*ScoreWith(*reward, {"a", "four", "", "h\xc3\xa9\n\"q\""}), ElementsAre(101, 104, 100, 106));
}

// Conversational examples reach the program as TRL passes them: the prompt's messages
// and the completion as one assistant message.
TEST(CommandRewardTest, ConversationalCompletionsArriveAsMessages) {
  const std::string script =
      "import json, sys\n"
      "for line in sys.stdin:\n"
      "    r = json.loads(line)\n"
      "    ok = r['prompt'] == [{'role': 'user', 'content': 'Hi'}] and r['completion'][0]['role'] == 'assistant'\n"
      "    print(len(r['completion'][0]['content']) if ok else -1)\n";
  auto reward = Command({"python3", "-c", script});
  const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(R"([{"role": "user", "content": "Hi"}])");
  const nlohmann::json metadata = nlohmann::json::object();
  std::vector<RewardInput> batch = {RewardInput{"<|im_start|>user\nHi", "abc", &metadata, &messages},
                                    RewardInput{"<|im_start|>user\nHi", "hello", &metadata, &messages}};
  EXPECT_THAT(*reward->Score(batch), ElementsAre(3, 5));
}

TEST(CommandRewardTest, ASlowProgramIsKilledAtTheTimeout) {
  auto reward = Command({"sleep", "30"}, /*timeout=*/0.5);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<float>> scores = ScoreWith(*reward, {"a", "b"});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(scores.status().code(), absl::StatusCode::kDeadlineExceeded) << scores.status();
  EXPECT_THAT(std::string(scores.status().message()), HasSubstr("timeout = 0.5 s"));
  EXPECT_THAT(std::string(scores.status().message()), HasSubstr("sleep 30"));
  EXPECT_LT(seconds, 5.0);
}

// A program that forks a sleeper and then hangs: at the timeout the sleeper (a
// grandchild of the host, in the program's process group) dies too.
TEST(CommandRewardTest, ATimeoutKillsTheProgramsChildrenToo) {
  const std::string pid_file = ::testing::TempDir() + "/command_reward_grandchild.pid";
  std::remove(pid_file.c_str());
  auto reward = Command({"sh", "-c", "sleep 300 & echo $! > " + pid_file + "; sleep 300"}, /*timeout=*/1.0);
  absl::StatusOr<std::vector<float>> scores = ScoreWith(*reward, {"a"});
  ASSERT_EQ(scores.status().code(), absl::StatusCode::kDeadlineExceeded) << scores.status();
  std::ifstream in(pid_file);
  pid_t sleeper = 0;
  ASSERT_TRUE(in >> sleeper) << "the program did not write its child's pid";
  // Killed, then reaped by init: gone, or at most a zombie, within a few seconds.
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    std::ifstream stat("/proc/" + std::to_string(sleeper) + "/stat");
    std::string pid_field, comm, state;
    gone = !(stat >> pid_field >> comm >> state) || state == "Z";
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!gone) ::kill(sleeper, SIGKILL);
  EXPECT_TRUE(gone) << "the sleeper (pid " << sleeper << ") survived the timeout";
}

TEST(CommandRewardTest, ACrashingProgramIsAnErrorWithItsStderr) {
  auto aborts = Command({"python3", "-c", "import os, sys; sys.stdin.read(); sys.stderr.write('bad input\\n'); "
                                          "sys.stderr.flush(); os.abort()"});
  absl::StatusOr<std::vector<float>> scores = ScoreWith(*aborts, {"a"});
  ASSERT_EQ(scores.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(scores.status().message()), HasSubstr("killed by signal 6"));
  EXPECT_THAT(std::string(scores.status().message()), HasSubstr("bad input"));

  auto exits = Command({"python3", "-c", "import sys; print('1'); sys.exit('division by zero')"});
  scores = ScoreWith(*exits, {"a"});
  ASSERT_EQ(scores.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(scores.status().message()), HasSubstr("exited with status 1"));
  EXPECT_THAT(std::string(scores.status().message()), HasSubstr("division by zero"));
}

TEST(CommandRewardTest, GarbageOrTheWrongNumberOfLinesIsAnError) {
  auto garbage = Command({"echo", "hello"});
  absl::StatusOr<std::vector<float>> scores = ScoreWith(*garbage, {"a"});
  ASSERT_EQ(scores.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(scores.status().message()), HasSubstr("output line 1: expected a number, got 'hello'"));

  auto too_few = Command({"echo", "0.5"});
  scores = ScoreWith(*too_few, {"a", "b"});
  ASSERT_EQ(scores.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(scores.status().message()), HasSubstr("printed 1 numbers for 2 completions"));

  // "nan" is a NaN score: the reward pipeline stops on it (tested there).
  auto nan = Command({"echo", "nan"});
  scores = ScoreWith(*nan, {"a"});
  ASSERT_TRUE(scores.ok());
  EXPECT_TRUE(std::isnan((*scores)[0]));
}

TEST(CommandRewardTest, LargeInputsDoNotDeadlockAndUnreadInputIsFine) {
  // 4 MB through a program that answers line by line: both pipes fill at once.
  std::vector<std::string> completions(2000, std::string(2000, 'x'));
  auto streaming = Command({"python3", "-c",
                            "import sys\nfor line in sys.stdin:\n    print(len(line))\n"});
  absl::StatusOr<std::vector<float>> scores = ScoreWith(*streaming, completions);
  ASSERT_TRUE(scores.ok()) << scores.status();
  EXPECT_EQ(scores->size(), 2000u);
  // A program that never reads its input and exits early.
  auto ignores = Command({"python3", "-c", "print('\\n'.join(['1'] * 2000))"});
  scores = ScoreWith(*ignores, completions);
  ASSERT_TRUE(scores.ok()) << scores.status();
  EXPECT_EQ(scores->size(), 2000u);
}

TEST(CommandRewardTest, AMissingProgramIsARecipeError) {
  auto reward = testing::CreateBuiltin<RewardFunction>(
      "command", {{"command", std::vector<std::string>{"posttrain_no_such_program"}}});
  ASSERT_FALSE(reward.ok());
  EXPECT_THAT(std::string(reward.status().message()), HasSubstr("'posttrain_no_such_program' is not an executable file on PATH"));
}

}  // namespace
}  // namespace posttrain
