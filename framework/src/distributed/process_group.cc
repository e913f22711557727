#include "posttrain/distributed/process_group.h"

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "absl/strings/str_cat.h"

namespace posttrain {

struct ProcessGroup::Impl {
  c10::intrusive_ptr<::c10d::ProcessGroupGloo> group;
};

ProcessGroup::~ProcessGroup() = default;

absl::StatusOr<std::unique_ptr<ProcessGroup>> ProcessGroup::CreateLocal() {
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup());
  pg->impl_ = std::make_unique<Impl>();
  try {
    auto store = c10::make_intrusive<::c10d::HashStore>();
    auto options = ::c10d::ProcessGroupGloo::Options::create();
    options->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    pg->impl_->group = c10::make_intrusive<::c10d::ProcessGroupGloo>(store, 0, 1, options);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot create the Gloo process group: ", e.what()));
  }
  return pg;
}

absl::Status ProcessGroup::AllReduceMean(std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> defined;
  for (const at::Tensor& t : tensors) {
    if (t.defined()) defined.push_back(t);
  }
  if (defined.empty()) return absl::OkStatus();
  try {
    at::NoGradGuard no_grad;
    // One bucket per dtype.
    std::map<at::ScalarType, std::vector<at::Tensor>> by_dtype;
    for (const at::Tensor& t : defined) by_dtype[t.scalar_type()].push_back(t);
    for (auto& [dtype, group] : by_dtype) {
      std::vector<at::Tensor> flat_views;
      for (const at::Tensor& t : group) flat_views.push_back(t.reshape({-1}));
      std::vector<at::Tensor> bucket = {at::cat(flat_views)};
      impl_->group->allreduce(bucket)->wait();
      if (world_size_ > 1) bucket[0].div_(world_size_);
      std::int64_t offset = 0;
      for (at::Tensor& t : group) {
        t.copy_(bucket[0].narrow(0, offset, t.numel()).view_as(t));
        offset += t.numel();
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("all-reduce failed: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace posttrain
