#include "posttrain/distributed/process_group.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <thread>

#include "gtest/gtest.h"
#include "posttrain/distributed/collectives.h"
#include "test_support.h"

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

// Sets environment variables for a scope, restoring them after.
class ScopedEnv {
 public:
  explicit ScopedEnv(std::vector<std::pair<std::string, std::string>> vars) {
    for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                             "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE",
                             "SLURM_TASKS_PER_NODE", "TORCHELASTIC_USE_AGENT_STORE"}) {
      if (const char* v = std::getenv(name)) saved_.push_back({name, v});
      unsetenv(name);
    }
    for (const auto& [name, value] : vars) setenv(name.c_str(), value.c_str(), 1);
    set_ = std::move(vars);
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : set_) unsetenv(name.c_str());
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }

 private:
  std::vector<std::pair<std::string, std::string>> saved_, set_;
};

TEST(DistributedEnvTest, ReadsTorchrunsAndSlurmsVariables) {
  {
    ScopedEnv env({});
    auto e = DistributedEnv::FromEnvironment();
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(e->world_size, 1);
    EXPECT_EQ(e->source, "single process");
  }
  {
    ScopedEnv env({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                   {"MASTER_ADDR", "10.0.0.7"}, {"MASTER_PORT", "29555"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"}});
    auto e = DistributedEnv::FromEnvironment();
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->rank, 3);
    EXPECT_EQ(e->world_size, 4);
    EXPECT_EQ(e->local_rank, 1);
    EXPECT_EQ(e->local_world_size, 2);
    EXPECT_EQ(e->master_addr, "10.0.0.7");
    EXPECT_EQ(e->master_port, 29555);
    EXPECT_TRUE(e->agent_store);
  }
  {
    ScopedEnv env({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}, {"SLURM_TASKS_PER_NODE", "4(x2)"},
                   {"MASTER_ADDR", "node01"}, {"MASTER_PORT", "29500"}});
    auto e = DistributedEnv::FromEnvironment();
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->source, "Slurm");
    EXPECT_EQ(e->rank, 5);
    EXPECT_EQ(e->world_size, 8);
    EXPECT_EQ(e->local_rank, 1);
    EXPECT_EQ(e->local_world_size, 4);
  }
}

TEST(DistributedEnvTest, MalformedVariablesAreNamed) {
  {
    ScopedEnv env({{"RANK", "one"}, {"WORLD_SIZE", "2"}});
    auto e = DistributedEnv::FromEnvironment();
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.status().message().find("RANK='one' is not an integer"), std::string::npos) << e.status();
  }
  {
    ScopedEnv env({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "1234"}});
    auto e = DistributedEnv::FromEnvironment();
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.status().message().find("outside [0, WORLD_SIZE = 2)"), std::string::npos) << e.status();
  }
  {
    ScopedEnv env({{"RANK", "0"}, {"WORLD_SIZE", "2"}});
    auto e = DistributedEnv::FromEnvironment();
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.status().message().find("MASTER_ADDR and MASTER_PORT"), std::string::npos) << e.status();
  }
}

// Runs `body(rank, group)` for ranks 0 and 1 of one process group, a thread each,
// over a real TCPStore and Gloo; `errors[rank]` holds what went wrong ("" if nothing).
void TwoRanks(std::vector<std::string>& errors, const std::function<void(int, ProcessGroup&)>& body) {
  const int port = testing::FreePort();
  errors.assign(2, "");
  auto rank_main = [&](int rank) {
    DistributedEnv env;
    env.rank = rank;
    env.world_size = 2;
    env.master_port = port;
    env.source = "test";
    auto group = ProcessGroup::Create(env, std::chrono::seconds(30));
    if (!group.ok()) {
      errors[rank] = group.status().ToString();
      return;
    }
    body(rank, **group);
  };
  std::thread r1(rank_main, 1);
  rank_main(0);
  r1.join();
}

// Two ranks in one process (a thread each) over a real TCPStore and Gloo.
TEST(ProcessGroupTest, TwoRanksSumGatherAndBroadcast) {
  std::vector<std::string> errors;
  std::vector<double> sums(2);
  std::vector<at::Tensor> gathered(2), broadcast(2), strings_ok(2);
  std::vector<std::int64_t> offsets(2);
  TwoRanks(errors, [&](int rank, ProcessGroup& pg) {
    ProcessGroup* group = &pg;
    Collectives c(group);
    // Σ of 1.5 and 2.5; rows 2 (rank 0) and 3 (rank 1) gathered in rank order.
    sums[rank] = *c.Sum(rank == 0 ? 1.5 : 2.5);
    const at::Tensor mine = at::full({rank == 0 ? 2 : 3, 2}, static_cast<float>(rank + 1));
    gathered[rank] = *c.Gather(mine, &offsets[rank]);
    std::vector<at::Tensor> b = {at::full({3}, static_cast<double>(rank + 10), at::kDouble)};
    if (!group->Broadcast(b, 1).ok()) errors[rank] = "broadcast";
    broadcast[rank] = b[0];
    auto strings = group->AllGatherStrings(rank == 0 ? "zero" : "one, longer");
    if (!strings.ok() || (*strings)[0] != "zero" || (*strings)[1] != "one, longer") errors[rank] = "strings";
    c.set_local(true);  // evaluation: the identity
    if (*c.Sum(7.0) != 7.0 || c.world_size() != 1) errors[rank] = "local";
  });
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(errors[r], "") << "rank " << r;
    EXPECT_DOUBLE_EQ(sums[r], 4.0);
    ASSERT_EQ(gathered[r].size(0), 5);
    EXPECT_TRUE(at::equal(gathered[r].narrow(0, 0, 2), at::full({2, 2}, 1.0f)));
    EXPECT_TRUE(at::equal(gathered[r].narrow(0, 2, 3), at::full({3, 2}, 2.0f)));
    EXPECT_TRUE(at::equal(broadcast[r], at::full({3}, 11.0, at::kDouble)));
  }
  EXPECT_EQ(offsets[0], 0);
  EXPECT_EQ(offsets[1], 2);
}

// FSDP's collectives on two ranks (Gloo here; NCCL has them natively): the shards
// end to end, and a flat buffer's mean over the ranks, sliced by rank.
TEST(ProcessGroupTest, TwoRanksAllGatherFlatAndReduceScatterMean) {
  std::vector<std::string> errors;
  std::vector<at::Tensor> whole(2), mine(2);
  TwoRanks(errors, [&](int rank, ProcessGroup& group) {
    // Rank r's shard: r·10 + [0, 1, 2].
    auto gathered = group.AllGatherFlat(at::arange(3, at::kFloat) + 10.0f * static_cast<float>(rank));
    if (!gathered.ok()) errors[rank] = gathered.status().ToString();
    else whole[rank] = *gathered;
    // Rank r's buffer: [1..6] · (r + 1); the mean over ranks is [1..6] · 1.5.
    auto reduced = group.ReduceScatterMean(at::arange(1, 7, at::kFloat) * static_cast<float>(rank + 1));
    if (!reduced.ok()) errors[rank] = reduced.status().ToString();
    else mine[rank] = *reduced;
    if (group.ReduceScatterMean(at::ones({5}, at::kFloat)).ok()) errors[rank] = "5 elements over 2 ranks accepted";
  });
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(errors[r], "") << "rank " << r;
    EXPECT_TRUE(at::equal(whole[r], at::tensor({0.0f, 1.0f, 2.0f, 10.0f, 11.0f, 12.0f}))) << whole[r];
  }
  EXPECT_TRUE(at::allclose(mine[0], at::tensor({1.5f, 3.0f, 4.5f}))) << mine[0];
  EXPECT_TRUE(at::allclose(mine[1], at::tensor({6.0f, 7.5f, 9.0f}))) << mine[1];
}

}  // namespace
}  // namespace posttrain
