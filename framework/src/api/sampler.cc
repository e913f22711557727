#include "posttrain/api/sampler.h"

namespace posttrain {

absl::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kSource: return "source";
  }
  return "?";
}

}  // namespace posttrain
