#include "posttrain/distributed/process_group.h"

#include <atomic>
#include <c10/core/GradMode.h>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

#include <torch/version.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef POSTTRAIN_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "posttrain/core/device.h"
#include "posttrain/core/status.h"

namespace posttrain {
namespace {

const char* Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

absl::Status ReadInt(const char* name, int* out) {
  const char* value = Env(name);
  if (value == nullptr) return absl::OkStatus();
  if (!absl::SimpleAtoi(value, out)) {
    return absl::InvalidArgumentError(absl::StrCat("environment variable ", name, "='", value, "' is not an integer"));
  }
  return absl::OkStatus();
}

// Slurm's SLURM_NTASKS_PER_NODE, or the first count of SLURM_TASKS_PER_NODE ("4(x2),3").
int SlurmTasksPerNode() {
  int n = 0;
  if (const char* v = Env("SLURM_NTASKS_PER_NODE"); v != nullptr && absl::SimpleAtoi(v, &n)) return n;
  if (const char* v = Env("SLURM_TASKS_PER_NODE"); v != nullptr) {
    const std::string text(v);
    if (absl::SimpleAtoi(text.substr(0, text.find_first_of("(,")), &n)) return n;
  }
  return 1;
}

bool IsLoopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

}  // namespace

absl::StatusOr<DistributedEnv> DistributedEnv::FromEnvironment() {
  DistributedEnv env;
  if (Env("WORLD_SIZE") != nullptr || Env("RANK") != nullptr) {
    env.source = "torchrun-style environment";
    POSTTRAIN_RETURN_IF_ERROR(ReadInt("RANK", &env.rank));
    POSTTRAIN_RETURN_IF_ERROR(ReadInt("WORLD_SIZE", &env.world_size));
    env.local_rank = env.rank;
    env.local_world_size = env.world_size;
    POSTTRAIN_RETURN_IF_ERROR(ReadInt("LOCAL_RANK", &env.local_rank));
    POSTTRAIN_RETURN_IF_ERROR(ReadInt("LOCAL_WORLD_SIZE", &env.local_world_size));
  } else if (Env("SLURM_PROCID") != nullptr && Env("SLURM_NTASKS") != nullptr) {
    env.source = "Slurm";
    POSTTRAIN_RETURN_IF_ERROR(ReadInt("SLURM_PROCID", &env.rank));
    POSTTRAIN_RETURN_IF_ERROR(ReadInt("SLURM_NTASKS", &env.world_size));
    POSTTRAIN_RETURN_IF_ERROR(ReadInt("SLURM_LOCALID", &env.local_rank));
    env.local_world_size = SlurmTasksPerNode();
  } else {
    return env;
  }
  if (env.world_size < 1) return absl::InvalidArgumentError(absl::StrCat("WORLD_SIZE must be >= 1, got ", env.world_size));
  if (env.rank < 0 || env.rank >= env.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("RANK ", env.rank, " is outside [0, WORLD_SIZE = ", env.world_size, ")"));
  }
  if (env.local_rank < 0) return absl::InvalidArgumentError(absl::StrCat("LOCAL_RANK must be >= 0, got ", env.local_rank));
  if (const char* addr = Env("MASTER_ADDR"); addr != nullptr) env.master_addr = addr;
  POSTTRAIN_RETURN_IF_ERROR(ReadInt("MASTER_PORT", &env.master_port));
  if (env.world_size > 1 && (Env("MASTER_ADDR") == nullptr || Env("MASTER_PORT") == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        env.source, " says WORLD_SIZE = ", env.world_size,
        " but MASTER_ADDR and MASTER_PORT are not both set: the ranks cannot meet (set them, or start with "
        "`posttrain launch`)"));
  }
  if (env.master_port <= 0 || env.master_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("MASTER_PORT ", env.master_port, " is not a TCP port"));
  }
  if (const char* v = Env("TORCHELASTIC_USE_AGENT_STORE"); v != nullptr) {
    env.agent_store = std::string(v) == "True" || std::string(v) == "true" || std::string(v) == "1";
  }
  POSTTRAIN_RETURN_IF_ERROR(ReadInt("TORCHELASTIC_RESTART_COUNT", &env.restart_count));
  return env;
}

std::string DistributedEnv::Describe() const {
  if (world_size == 1 && source == "single process") return "single process";
  return absl::StrCat("rank ", rank, " of ", world_size, " (local ", local_rank, " of ", local_world_size, "; ", source,
                      "; store ", master_addr, ":", master_port, agent_store ? ", torchrun's agent store" : "", ")");
}

// What Gloo and NCCL implement: libtorch 2 made them backends (c10d::Backend) of a
// ProcessGroup; in 1.x they were process groups themselves. Both have the same
// collectives, which are all posttrain calls.
#if TORCH_VERSION_MAJOR >= 2
using C10dCollectives = ::c10d::Backend;
#else
using C10dCollectives = ::c10d::ProcessGroup;
#endif

struct ProcessGroup::Impl {
  c10::intrusive_ptr<C10dCollectives> group;  // Gloo or NCCL
  // NCCL has one-buffer all-gather and reduce-scatter; Gloo in libtorch 1.13 has neither.
  bool native_flat_collectives = false;
  // Heartbeats: a store connection of their own, bumped from a thread.
  c10::intrusive_ptr<::c10d::Store> heartbeat_store;
  std::thread heartbeat;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    if (heartbeat.joinable()) heartbeat.join();
  }
};

ProcessGroup::~ProcessGroup() = default;

absl::StatusOr<std::unique_ptr<ProcessGroup>> ProcessGroup::CreateLocal() {
  return Create(DistributedEnv(), std::chrono::minutes(30));
}

absl::StatusOr<std::unique_ptr<ProcessGroup>> ProcessGroup::Create(const DistributedEnv& env,
                                                                    std::chrono::milliseconds timeout, at::Device device) {
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup());
  pg->env_ = env;
  pg->device_ = device;
#ifndef POSTTRAIN_WITH_NCCL
  if (device.is_cuda()) {
    return absl::FailedPreconditionError("this posttrain was built with a CPU-only libtorch: no NCCL for CUDA ranks");
  }
#endif
  pg->impl_ = std::make_unique<Impl>();
  const std::string prefix = absl::StrCat("posttrain/attempt_", env.restart_count);
  try {
    c10::intrusive_ptr<::c10d::Store> store;
    auto options = ::c10d::ProcessGroupGloo::Options::create(timeout);
    if (env.world_size == 1) {
      store = c10::make_intrusive<::c10d::HashStore>();
      options->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      ::c10d::TCPStoreOptions store_options;
      store_options.port = static_cast<std::uint16_t>(env.master_port);
      store_options.isServer = env.rank == 0 && !env.agent_store;
      store_options.waitWorkers = false;
      store_options.timeout = timeout;
      auto tcp = c10::make_intrusive<::c10d::TCPStore>(env.master_addr, store_options);
      store = c10::make_intrusive<::c10d::PrefixStore>(prefix, tcp);
      if (const char* ifname = Env("GLOO_SOCKET_IFNAME"); ifname != nullptr) {
        options->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (IsLoopback(env.master_addr)) {
        options->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        options->devices.push_back(::c10d::ProcessGroupGloo::createDefaultDevice());
      }
      ::c10d::TCPStoreOptions client_options = store_options;
      client_options.isServer = false;
      pg->impl_->heartbeat_store =
          c10::make_intrusive<::c10d::PrefixStore>(prefix, c10::make_intrusive<::c10d::TCPStore>(env.master_addr, client_options));
    }
#ifdef POSTTRAIN_WITH_NCCL
    if (device.is_cuda()) {
      auto nccl_options = ::c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout;
      pg->impl_->group = c10::make_intrusive<::c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, nccl_options);
      pg->impl_->native_flat_collectives = true;
    } else
#endif
    {
      pg->impl_->group = c10::make_intrusive<::c10d::ProcessGroupGloo>(store, env.rank, env.world_size, options);
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot form the process group (", env.Describe(), "): ", e.what()));
  }
  if (pg->impl_->heartbeat_store) {
    Impl* impl = pg->impl_.get();
    const std::string key = absl::StrCat("heartbeat/", env.rank);
    impl->heartbeat = std::thread([impl, key] {
      std::unique_lock<std::mutex> lock(impl->mu);
      while (!impl->stop) {
        try {
          impl->heartbeat_store->add(key, 1);
        } catch (const std::exception&) {
          return;  // the store is gone (rank 0 died): collectives will say so
        }
        impl->cv.wait_for(lock, std::chrono::milliseconds(500), [impl] { return impl->stop; });
      }
    });
  }
  return pg;
}

absl::Status ProcessGroup::CollectiveError(const char* what, const std::exception& e) {
  std::string lost;
  if (impl_->heartbeat_store) {
    // Ranks whose heartbeat stops advancing over 2.5 s are gone.
    std::vector<std::int64_t> before(static_cast<size_t>(env_.world_size), -1);
    try {
      for (int r = 0; r < env_.world_size; ++r) before[static_cast<size_t>(r)] = impl_->heartbeat_store->add(absl::StrCat("heartbeat/", r), 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(2500));
      std::vector<std::string> gone;
      for (int r = 0; r < env_.world_size; ++r) {
        if (impl_->heartbeat_store->add(absl::StrCat("heartbeat/", r), 0) == before[static_cast<size_t>(r)]) gone.push_back(absl::StrCat(r));
      }
      if (!gone.empty()) lost = absl::StrCat(gone.size() == 1 ? "rank " : "ranks ", absl::StrJoin(gone, ", "), " stopped responding (lost); ");
    } catch (const std::exception&) {
      lost = env_.agent_store ? "the rendezvous store (torchrun's agent) is unreachable; "
                              : "rank 0 (which hosts the rendezvous store) is lost; ";
    }
  }
  return absl::UnavailableError(absl::StrCat(what, " failed on rank ", env_.rank, " of ", env_.world_size, ": ", lost, e.what()));
}

namespace {

// Runs `collective` on one flattened bucket per dtype of `tensors` (undefined
// ones skipped), on `device`, and copies the result back into each tensor.
void ThroughBuckets(std::vector<at::Tensor>& tensors, at::Device device,
                    const std::function<void(std::vector<at::Tensor>&)>& collective) {
  c10::NoGradGuard no_grad;
  std::map<at::ScalarType, std::vector<at::Tensor>> by_dtype;
  for (const at::Tensor& t : tensors) {
    if (t.defined()) by_dtype[t.scalar_type()].push_back(t);
  }
  for (auto& [dtype, group] : by_dtype) {
    std::vector<at::Tensor> flat_views;
    for (const at::Tensor& t : group) flat_views.push_back(t.reshape({-1}));
    std::vector<at::Tensor> bucket = {at::cat(flat_views).to(device)};
    collective(bucket);
    std::int64_t offset = 0;
    for (at::Tensor& t : group) {
      t.copy_(bucket[0].narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

}  // namespace

absl::Status ProcessGroup::AllReduceSum(std::vector<at::Tensor>& tensors) {
  if (env_.world_size == 1) return absl::OkStatus();
  try {
    ThroughBuckets(tensors, device_, [&](std::vector<at::Tensor>& bucket) { impl_->group->allreduce(bucket)->wait(); });
  } catch (const std::exception& e) {
    return CollectiveError("all-reduce", e);
  }
  return absl::OkStatus();
}

absl::Status ProcessGroup::AllReduceMean(std::vector<at::Tensor>& tensors) {
  POSTTRAIN_RETURN_IF_ERROR(AllReduceSum(tensors));
  if (env_.world_size == 1) return absl::OkStatus();
  c10::NoGradGuard no_grad;
  for (at::Tensor& t : tensors) {
    if (t.defined()) t.div_(env_.world_size);
  }
  return absl::OkStatus();
}

absl::Status ProcessGroup::Broadcast(std::vector<at::Tensor>& tensors, int root) {
  if (env_.world_size == 1) return absl::OkStatus();
  try {
    ::c10d::BroadcastOptions options;
    options.rootRank = root;
    ThroughBuckets(tensors, device_, [&](std::vector<at::Tensor>& bucket) { impl_->group->broadcast(bucket, options)->wait(); });
  } catch (const std::exception& e) {
    return CollectiveError("broadcast", e);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<at::Tensor>> ProcessGroup::AllGather(const at::Tensor& tensor) {
  if (env_.world_size == 1) return std::vector<at::Tensor>{tensor.clone()};
  try {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> input = {tensor.to(device_).contiguous()};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int r = 0; r < env_.world_size; ++r) output[0].push_back(at::empty_like(input[0]));
    impl_->group->allgather(output, input)->wait();
    for (at::Tensor& t : output[0]) t = t.to(tensor.device());  // back where the caller's tensor lives
    return output[0];
  } catch (const std::exception& e) {
    return CollectiveError("all-gather", e);
  }
}

absl::StatusOr<at::Tensor> ProcessGroup::AllGatherFlat(const at::Tensor& shard) {
  if (env_.world_size == 1) return shard.reshape({-1}).clone();
  try {
    c10::NoGradGuard no_grad;
    at::Tensor input = shard.reshape({-1}).to(device_).contiguous();
    if (impl_->native_flat_collectives) {
      at::Tensor output = at::empty({input.numel() * env_.world_size}, input.options());
      impl_->group->_allgather_base(output, input)->wait();
      return output.to(shard.device());
    }
  } catch (const std::exception& e) {
    return CollectiveError("all-gather", e);
  }
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<at::Tensor> parts, AllGather(shard.reshape({-1})));
  return at::cat(parts);
}

absl::StatusOr<at::Tensor> ProcessGroup::ReduceScatterMean(const at::Tensor& flat) {
  const std::int64_t n = flat.numel() / env_.world_size;
  if (flat.dim() != 1 || n * env_.world_size != flat.numel()) {
    return absl::InvalidArgumentError(absl::StrCat("reduce-scatter of a tensor of shape [", absl::StrJoin(flat.sizes(), ", "),
                                                   "]: expected 1-D with a multiple of ", env_.world_size, " elements"));
  }
  if (env_.world_size == 1) return flat.clone();
  try {
    c10::NoGradGuard no_grad;
    at::Tensor input = flat.to(device_).contiguous();
    if (impl_->native_flat_collectives) {
      at::Tensor output = at::empty({n}, input.options());
      ::c10d::ReduceScatterOptions options;
      options.reduceOp = ::c10d::ReduceOp::SUM;
      impl_->group->_reduce_scatter_base(output, input, options)->wait();
      return output.div_(env_.world_size).to(flat.device());
    }
    // Gloo: all-reduce the whole buffer and keep this rank's slice (twice the traffic).
    std::vector<at::Tensor> bucket = {input};
    impl_->group->allreduce(bucket)->wait();
    return bucket[0].narrow(0, env_.rank * n, n).div(env_.world_size).to(flat.device());
  } catch (const std::exception& e) {
    return CollectiveError("reduce-scatter", e);
  }
}

absl::StatusOr<std::vector<std::string>> ProcessGroup::AllGatherStrings(const std::string& text) {
  if (env_.world_size == 1) return std::vector<std::string>{text};
  const at::TensorOptions byte_options = HostOptions(at::kByte);  // host strings (Gloo)
  at::Tensor length = at::full({1}, static_cast<std::int64_t>(text.size()), HostOptions(at::kLong));
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<at::Tensor> lengths, AllGather(length));
  std::int64_t longest = 0;
  for (const at::Tensor& l : lengths) longest = std::max(longest, l.item<std::int64_t>());
  at::Tensor padded = at::zeros({std::max<std::int64_t>(1, longest)}, byte_options);
  std::memcpy(padded.data_ptr(), text.data(), text.size());
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<at::Tensor> gathered, AllGather(padded));
  std::vector<std::string> out;
  for (size_t r = 0; r < gathered.size(); ++r) {
    out.emplace_back(static_cast<const char*>(gathered[r].data_ptr()), static_cast<size_t>(lengths[r].item<std::int64_t>()));
  }
  return out;
}

absl::Status ProcessGroup::Barrier() {
  if (env_.world_size == 1) return absl::OkStatus();
  try {
    impl_->group->barrier()->wait();
  } catch (const std::exception& e) {
    return CollectiveError("barrier", e);
  }
  return absl::OkStatus();
}

}  // namespace posttrain
