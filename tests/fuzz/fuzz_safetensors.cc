// safetensors: the 8-byte header length, the JSON header (dtypes, shapes, offsets),
// then the tensors read back.
#include "fuzz_util.h"
#include "posttrain/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = posttrain::fuzz::WriteTemp(data, size, ".safetensors");
  auto file = posttrain::SafetensorsFile::Open(path);
  if (file.ok()) {
    for (const posttrain::SafetensorsEntry& e : file->entries()) {
      auto t = file->Get(e.name);
      if (t.ok()) (void)t->numel();
    }
  }
  return 0;
}
