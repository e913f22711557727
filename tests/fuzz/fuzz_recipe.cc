// TOML recipes with command-line overrides: the first line of the input is an
// override ("table.key=value"), the rest the recipe; validated against the built-in
// plugins when they load.
#include "posttrain/plugin/plugin_host.h"
#include "posttrain/recipe/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static posttrain::PluginHost* host = [] {
    auto* h = new posttrain::PluginHost();
    (void)h->LoadDefaultDirectories();
    return h;
  }();
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  std::vector<std::string> overrides;
  if (newline != std::string::npos && newline > 0) overrides.push_back(input.substr(0, newline));
  auto recipe = posttrain::Recipe::Parse(newline == std::string::npos ? input : input.substr(newline + 1), "fuzz.toml", overrides);
  if (recipe.ok()) {
    (void)recipe->Validate(host->registry());
    (void)recipe->output_dir();
  }
  return 0;
}
