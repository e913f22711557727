// config.json: architectures, sizes, rope_scaling, token ids.
#include "nlohmann/json.hpp"
#include "posttrain/model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded()) (void)posttrain::ModelConfig::FromJson(j);
  return 0;
}
