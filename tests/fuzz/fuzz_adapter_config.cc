// PEFT adapter_config.json: read through the adapter plugin it names (LoRA), attached
// to stories260K and loaded with a real adapter_model.safetensors beside it. Any
// peft_type, rank, alpha, target_modules (names, regex, "all-linear") or
// modules_to_save must give an adapter or an error naming the file.
#include <filesystem>

#include "fuzz_util.h"
#include "posttrain/api/adapter.h"
#include "posttrain/core/status.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/plugin/plugin_host.h"
#include "posttrain/run/adapters.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace fs = std::filesystem;
  struct State {
    posttrain::PluginHost host;
    std::unique_ptr<posttrain::CausalLM> model;
    std::string dir;
  };
  static State* state = [] {
    auto* s = new State();
    (void)s->host.LoadDefaultDirectories();
    auto model = posttrain::LoadCausalLM("build/models/stories260K", at::kFloat);
    if (!model.ok()) {
      std::fprintf(stderr, "fuzz_adapter_config: run from the repository root after tools/setup.sh: %s\n",
                   model.status().ToString().c_str());
      std::abort();
    }
    s->model = std::move(*model);
    s->dir = "/tmp/posttrain_fuzz_adapter_" + std::to_string(::getpid());
    fs::create_directories(s->dir);
    // A real adapter (r 8 on every linear layer, an embedding saved whole) to load.
    const posttrain::RegisteredComponent* lora = s->host.registry().Find(posttrain::ComponentKind::kAdapter, "lora");
    if (lora == nullptr) {
      std::fprintf(stderr, "fuzz_adapter_config: no lora plugin\n");
      std::abort();
    }
    std::map<std::string, posttrain::OptionValue> values;
    for (const posttrain::OptionSpec& spec : lora->registration.schema.options()) {
      if (spec.default_value) values[spec.name] = *spec.default_value;
    }
    values["target_modules"] = std::vector<std::string>{"all-linear"};
    posttrain::ComponentConfig config("lora", &lora->registration.schema, values, "fuzz");
    absl::Status made = [&]() -> absl::Status {
      POSTTRAIN_ASSIGN_OR_RETURN(auto adapter, s->host.registry().Create<posttrain::Adapter>(config));
      POSTTRAIN_RETURN_IF_ERROR(adapter->Attach(s->model->config(), at::TensorOptions().dtype(at::kFloat), 0));
      return adapter->Save(s->dir, *s->model, "build/models/stories260K");
    }();
    if (!made.ok()) {
      std::fprintf(stderr, "fuzz_adapter_config: %s\n", made.ToString().c_str());
      std::abort();
    }
    return s;
  }();
  std::FILE* f = std::fopen((state->dir + "/adapter_config.json").c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto adapter = posttrain::LoadSavedAdapter(state->host.registry(), state->dir, *state->model);
  if (adapter.ok()) {
    // The loaded adapter runs on the model's first attention projection.
    const at::Tensor x = at::ones({1, 2, state->model->config().hidden_size}, at::TensorOptions().dtype(at::kFloat));
    (void)(*adapter)->Delta(0, posttrain::LinearSite::kQ, x);
  }
  return 0;
}
