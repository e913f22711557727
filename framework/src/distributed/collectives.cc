#include "posttrain/distributed/collectives.h"

#include <algorithm>
#include <c10/core/GradMode.h>
#include <vector>

#include "posttrain/core/device.h"
#include "posttrain/core/status.h"
#include "posttrain/distributed/process_group.h"

namespace posttrain {

const Collectives& Collectives::SingleRank() {
  static const Collectives* single = new Collectives(nullptr);
  return *single;
}

bool Collectives::Identity() const { return local_ || group_ == nullptr || group_->world_size() == 1; }

int Collectives::rank() const { return Identity() ? 0 : group_->rank(); }

int Collectives::world_size() const { return Identity() ? 1 : group_->world_size(); }

absl::StatusOr<double> Collectives::Sum(double value) const {
  if (Identity()) return value;
  at::Tensor t = at::full({1}, value, HostOptions(at::kDouble));  // a host value (Gloo)
  std::vector<at::Tensor> tensors = {t};
  POSTTRAIN_RETURN_IF_ERROR(group_->AllReduceSum(tensors));
  return t.item<double>();
}

absl::StatusOr<at::Tensor> Collectives::Sum(const at::Tensor& tensor) const {
  c10::NoGradGuard no_grad;
  at::Tensor t = tensor.detach().clone().contiguous();
  if (Identity()) return t;
  std::vector<at::Tensor> tensors = {t};
  POSTTRAIN_RETURN_IF_ERROR(group_->AllReduceSum(tensors));
  return t;
}

absl::StatusOr<at::Tensor> Collectives::Gather(const at::Tensor& tensor, std::int64_t* offset) const {
  c10::NoGradGuard no_grad;
  if (offset != nullptr) *offset = 0;
  if (Identity()) return tensor.detach().clone();
  // Rows may differ per rank: gather the counts, pad to the longest, trim.
  const at::Tensor rows = at::full({1}, tensor.size(0), tensor.options().dtype(at::kLong));
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<at::Tensor> counts, group_->AllGather(rows));
  std::vector<std::int64_t> n;
  for (const at::Tensor& c : counts) n.push_back(c.item<std::int64_t>());
  const std::int64_t longest = std::max<std::int64_t>(1, *std::max_element(n.begin(), n.end()));
  std::vector<std::int64_t> shape = tensor.sizes().vec();
  shape[0] = longest;
  at::Tensor padded = at::zeros(shape, tensor.options());
  if (tensor.size(0) > 0) padded.narrow(0, 0, tensor.size(0)).copy_(tensor.detach());
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<at::Tensor> parts, group_->AllGather(padded));
  std::vector<at::Tensor> trimmed;
  for (size_t r = 0; r < parts.size(); ++r) {
    if (offset != nullptr && static_cast<int>(r) < group_->rank()) *offset += n[r];
    trimmed.push_back(parts[r].narrow(0, 0, n[r]));
  }
  return at::cat(trimmed);
}

}  // namespace posttrain
