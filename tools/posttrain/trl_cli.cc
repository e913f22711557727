#include "trl_cli.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "posttrain/api/trainer.h"
#include "posttrain/core/did_you_mean.h"
#include "posttrain/core/status.h"

namespace posttrain::cli {
namespace {

namespace fs = std::filesystem;

// A TOML literal for one value: numbers and booleans as they are, else a string.
std::string Literal(const std::string& v) {
  double d;
  std::int64_t i;
  if (v == "true" || v == "false" || absl::SimpleAtoi(v, &i) || (absl::SimpleAtod(v, &d) && !v.empty() && v != "inf" && v != "nan")) {
    return v;
  }
  std::string quoted = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') quoted.push_back('\\');
    quoted.push_back(c);
  }
  return quoted + "\"";
}

std::string ListLiteral(const std::vector<std::string>& values) {
  std::vector<std::string> items;
  for (const std::string& v : values) {
    for (absl::string_view part : absl::StrSplit(v, ',', absl::SkipEmpty())) items.push_back(Literal(std::string(part)));
  }
  return "[" + absl::StrJoin(items, ", ") + "]";
}

}  // namespace

absl::StatusOr<Recipe> CommandLineRecipe(const Registry& registry, const std::string& trainer,
                                         const std::vector<std::string>& args) {
  // --key value..., --key=value, --flag (true).
  std::vector<std::pair<std::string, std::vector<std::string>>> flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!absl::StartsWith(a, "--") || a.size() == 2) {
      return absl::InvalidArgumentError(absl::StrCat("posttrain ", trainer, ": expected a --flag, got '", a, "'"));
    }
    std::string key = a.substr(2);
    std::vector<std::string> values;
    if (const size_t eq = key.find('='); eq != std::string::npos) {
      values.push_back(key.substr(eq + 1));
      key.resize(eq);
    } else {
      while (i + 1 < args.size() && !absl::StartsWith(args[i + 1], "--")) values.push_back(args[++i]);
    }
    std::replace(key.begin(), key.end(), '-', '_');
    flags.emplace_back(key, values.empty() ? std::vector<std::string>{"true"} : values);
  }
  std::string base;
  for (const auto& [key, values] : flags) {
    if (key != "config") continue;
    std::ifstream in(values[0]);
    if (!in) return absl::NotFoundError(absl::StrCat("--config: cannot read '", values[0], "'"));
    std::stringstream text;
    text << in.rdbuf();
    base = text.str();
  }
  absl::StatusOr<Recipe> parsed_base = Recipe::Parse(base, "--config");
  if (!parsed_base.ok()) return parsed_base.status();
  const Recipe& from_config = *parsed_base;

  std::vector<std::string> overrides = {"trainer.type=" + trainer};
  std::vector<std::string> sampler_overrides;  // applied once the recipe has a sampler
  std::string rewards_text;
  bool output_dir = false;
  const RegisteredComponent* trainer_component = registry.Find(ComponentKind::kTrainer, trainer);
  if (trainer_component == nullptr) return registry.UnknownName(ComponentKind::kTrainer, trainer, "posttrain");
  // The plugins whose options a flag may name: the recipe's (or the defaults').
  auto type_of = [&](const std::string& table, const std::string& fallback) -> std::string {
    for (const auto& [key, values] : flags) {
      if (table == "data" && key == "dataset_name") {
        const std::string& path = values[0];
        return absl::EndsWith(path, ".txt") ? "text" : "jsonl";
      }
    }
    const std::string t = from_config.ComponentType(table);
    return t.empty() ? fallback : t;
  };
  bool peft = from_config.HasComponent("peft");
  for (const auto& [key, values] : flags) peft |= key == "use_peft";
  const std::vector<std::pair<std::string, const RegisteredComponent*>> tables = {
      {"trainer", trainer_component},
      {"data", registry.Find(ComponentKind::kDataAdapter, type_of("data", "jsonl"))},
      {"sampler", registry.Find(ComponentKind::kSampler, type_of("sampler", "default"))},
      {"peft", peft ? registry.Find(ComponentKind::kAdapter, type_of("peft", "lora")) : nullptr}};
  static const std::map<std::string, std::string> kPeftFlags = {
      {"lora_r", "r"}, {"lora_alpha", "lora_alpha"}, {"lora_dropout", "lora_dropout"},
      {"lora_target_modules", "target_modules"}, {"use_rslora", "use_rslora"}, {"use_dora", "use_dora"}};
  for (const auto& [key, values] : flags) {
    if (key == "config") continue;
    if (key == "model_name_or_path") {
      overrides.push_back("model.path=" + Literal(values[0]));
    } else if (key == "dataset_name") {
      std::error_code ec;
      if (!fs::is_regular_file(values[0], ec)) {
        return absl::NotFoundError(absl::StrCat("--dataset_name '", values[0],
                                                "' is not a local file: posttrain reads .jsonl, .jsonl.gz or .txt files "
                                                "(nothing is downloaded)"));
      }
      overrides.push_back("data.type=" + Literal(type_of("data", "jsonl")));
      overrides.push_back("data.path=" + Literal(values[0]));
    } else if (key == "output_dir" || key == "seed" || key == "overwrite_output_dir") {
      output_dir |= key == "output_dir";
      overrides.push_back(key + "=" + Literal(values[0]));
    } else if (key == "use_peft") {
      if (values[0] == "true") overrides.push_back("peft.type=" + Literal(type_of("peft", "lora")));
    } else if (key == "reward_funcs") {
      for (const std::string& v : values) {
        for (absl::string_view name : absl::StrSplit(v, ',', absl::SkipEmpty())) {
          rewards_text += absl::StrCat("\n[[rewards]]\ntype = ", Literal(std::string(name)), "\n");
        }
      }
    } else {
      const std::string option = kPeftFlags.count(key) ? kPeftFlags.at(key) : key;
      bool placed = false;
      for (const auto& [table, component] : tables) {
        if (component == nullptr || (kPeftFlags.count(key) && table != "peft")) continue;
        const OptionSpec* spec = component->registration.schema.Find(option);
        if (spec == nullptr) continue;
        const bool list = spec->type == OptionType::kStringList || spec->type == OptionType::kFloatList;
        const std::string o = absl::StrCat(table, ".", option, "=", list ? ListLiteral(values) : Literal(values[0]));
        (table == "sampler" && !from_config.HasComponent("sampler") ? sampler_overrides : overrides).push_back(o);
        placed = true;
      }
      if (!placed) {
        std::vector<std::string> known = {"config", "model_name_or_path", "dataset_name", "output_dir", "seed",
                                          "overwrite_output_dir", "use_peft", "reward_funcs"};
        for (const auto& [flag, option] : kPeftFlags) known.push_back(flag);
        for (const auto& [table, component] : tables) {
          if (component == nullptr) continue;
          for (const OptionSpec& o : component->registration.schema.options()) known.push_back(o.name);
        }
        return absl::InvalidArgumentError(absl::StrCat("posttrain ", trainer, ": unknown flag --", key,
                                                       DidYouMeanSuffix(key, known),
                                                       " (`posttrain describe ", trainer, "` lists the trainer's options)"));
      }
    }
  }
  if (!output_dir && base.find("output_dir") == std::string::npos) {
    overrides.push_back("output_dir=" + Literal("runs/" + trainer));
  }
  std::string text = base + rewards_text;
  POSTTRAIN_ASSIGN_OR_RETURN(Recipe recipe, Recipe::Parse(text, "command line", overrides));
  // An online trainer samples: the default sampler unless the recipe names one.
  if (!recipe.HasComponent("sampler")) {
    absl::StatusOr<ComponentConfig> config = recipe.Component("trainer", registry);
    if (config.ok()) {
      absl::StatusOr<std::unique_ptr<Trainer>> t = registry.Create<Trainer>(*config);
      if (t.ok() && (*t)->Needs().rollouts) {
        overrides.push_back("sampler.type=\"default\"");
        overrides.insert(overrides.end(), sampler_overrides.begin(), sampler_overrides.end());
        POSTTRAIN_ASSIGN_OR_RETURN(recipe, Recipe::Parse(text, "command line", overrides));
      }
    }
  }
  return recipe;
}

}  // namespace posttrain::cli
