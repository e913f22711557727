#include "posttrain/run/adapters.h"

#include <filesystem>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_cat.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"

namespace posttrain {
namespace {

namespace fs = std::filesystem;

// A JSON value as the schema's option type; nullopt when it does not fit.
std::optional<OptionValue> ToOption(const nlohmann::json& j, OptionType type) {
  switch (type) {
    case OptionType::kBool:
      if (j.is_boolean()) return OptionValue(j.get<bool>());
      break;
    case OptionType::kInt:
      if (j.is_number_integer()) return OptionValue(j.get<std::int64_t>());
      break;
    case OptionType::kFloat:
      if (j.is_number()) return OptionValue(j.get<double>());
      break;
    case OptionType::kString:
      if (j.is_string()) return OptionValue(j.get<std::string>());
      break;
    case OptionType::kStringList:
      if (j.is_string()) return OptionValue(std::vector<std::string>{j.get<std::string>()});
      if (j.is_array()) {
        std::vector<std::string> v;
        for (const auto& e : j) {
          if (!e.is_string()) return std::nullopt;
          v.push_back(e.get<std::string>());
        }
        return OptionValue(std::move(v));
      }
      break;
    case OptionType::kFloatList:
      if (j.is_array()) {
        std::vector<double> v;
        for (const auto& e : j) {
          if (!e.is_number()) return std::nullopt;
          v.push_back(e.get<double>());
        }
        return OptionValue(std::move(v));
      }
      break;
  }
  return std::nullopt;
}

}  // namespace

bool IsAdapterDir(const std::string& dir) {
  std::error_code ec;
  return fs::exists(fs::path(dir) / "adapter_config.json", ec);
}

absl::StatusOr<std::unique_ptr<Adapter>> LoadSavedAdapter(const Registry& registry, const std::string& dir, CausalLM& model) {
  const std::string path = (fs::path(dir) / "adapter_config.json").string();
  if (!IsAdapterDir(dir)) return absl::NotFoundError(absl::StrCat("'", dir, "' holds no adapter (no adapter_config.json)"));
  POSTTRAIN_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  nlohmann::json c = nlohmann::json::parse(text, nullptr, false);
  if (c.is_discarded() || !c.is_object() || !c.contains("peft_type") || !c["peft_type"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object with \"peft_type\""));
  }
  const std::string type = absl::AsciiStrToLower(c["peft_type"].get<std::string>());
  const RegisteredComponent* component = registry.Find(ComponentKind::kAdapter, type);
  if (component == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": peft_type \"", c["peft_type"].get<std::string>(),
                                                   "\" has no adapter plugin (known: ",
                                                   absl::StrJoin(registry.Names(ComponentKind::kAdapter), ", "), ")"));
  }
  std::map<std::string, OptionValue> values;
  for (const OptionSpec& spec : component->registration.schema.options()) {
    if (!c.contains(spec.name) || c[spec.name].is_null()) continue;
    std::optional<OptionValue> v = ToOption(c[spec.name], spec.type);
    if (!v) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"", spec.name, "\" should be a ", OptionTypeName(spec.type),
                                                     ", got ", c[spec.name].dump()));
    }
    if (const std::string problem = spec.CheckValue(*v); !problem.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": \"", spec.name, "\" ", problem));
    }
    values[spec.name] = std::move(*v);
  }
  ComponentConfig config(type, &component->registration.schema, std::move(values), path);
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Adapter> adapter, registry.Create<Adapter>(config));
  POSTTRAIN_RETURN_IF_ERROR(Annotate(CallNoThrow("adapter", [&] {
    POSTTRAIN_RETURN_IF_ERROR(adapter->Attach(model.config(), at::TensorOptions().dtype(at::kFloat).device(model.device()), 0));
    return adapter->Initialize(model);
  }), path));
  POSTTRAIN_RETURN_IF_ERROR(CallNoThrow("adapter", [&] { return adapter->Load(dir, model); }));
  return adapter;
}

}  // namespace posttrain
