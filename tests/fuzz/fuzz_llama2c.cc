// llama2.c checkpoints: the 7-int32 header (sizes, a negative vocab for untied
// weights), then the weights, which must fit the file.
#include "fuzz_util.h"
#include "posttrain/model/llama2c.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = posttrain::fuzz::WriteTemp(data, size, ".bin");
  (void)posttrain::ReadLlama2cCheckpoint(path);
  return 0;
}
