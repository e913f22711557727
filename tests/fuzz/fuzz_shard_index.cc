// model.safetensors.index.json: the weight map of a sharded model, read against two
// real shards (a model directory whose index names missing tensors or files, paths
// out of the directory, or shards it does not list, must be refused by name).
#include <filesystem>

#include <ATen/ATen.h>

#include "fuzz_util.h"
#include "posttrain/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace fs = std::filesystem;
  static const std::string dir = [] {
    const std::string d = "/tmp/posttrain_fuzz_shards_" + std::to_string(::getpid());
    fs::create_directories(d);
    const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat);
    (void)posttrain::SaveSafetensors(d + "/model-00001-of-00002.safetensors",
                                     {{"model.embed_tokens.weight", at::ones({4, 2}, f32)},
                                      {"model.norm.weight", at::ones({2}, f32)}});
    (void)posttrain::SaveSafetensors(d + "/model-00002-of-00002.safetensors",
                                     {{"lm_head.weight", at::zeros({4, 2}, f32)}});
    return d;
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::FILE* f = std::fopen((dir + "/model.safetensors.index.json").c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
  (void)posttrain::LoadSafetensorsDir(dir);
  return 0;
}
