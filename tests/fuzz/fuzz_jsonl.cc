// JSONL data rows (and .jsonl.gz: the reader detects gzip by content) through the
// jsonl data adapter in every format, conversational ones included.
#include "fuzz_util.h"
#include "posttrain/api/data_adapter.h"
#include "posttrain/plugin/plugin_host.h"
#include "posttrain/recipe/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static posttrain::PluginHost* host = [] {
    auto* h = new posttrain::PluginHost();
    (void)h->LoadDefaultDirectories();
    return h;
  }();
  const std::string path = posttrain::fuzz::WriteTemp(data, size, ".jsonl");
  auto recipe = posttrain::Recipe::Parse("[data]\ntype = \"jsonl\"\npath = \"" + path + "\"\n[trainer]\ntype = \"sft\"\n", "fuzz.toml");
  if (!recipe.ok()) return 0;
  auto config = recipe->Component("data", host->registry());
  if (!config.ok()) return 0;
  auto adapter = host->registry().Create<posttrain::DataAdapter>(*config);
  if (adapter.ok()) (void)(*adapter)->Load();
  return 0;
}
