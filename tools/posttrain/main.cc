// posttrain — the command-line host.
//
//   posttrain run RECIPE [table.key=value ...]     run a recipe
//   posttrain validate RECIPE [table.key=value ...] check everything run checks, train nothing
//   posttrain list                                  every loaded plugin component
//   posttrain describe NAME [--kind KIND]           a component's options
//   posttrain convert llama2c --checkpoint B --tokenizer M --out DIR
//   posttrain generate --model DIR --prompt TEXT [sampling options]
//   posttrain tokenize --tokenizer PATH --text TEXT
//   posttrain merge --model BASE --adapter DIR --out DIR   an adapter merged into its base
//   posttrain chat-template --tokenizer DIR --input rows.jsonl   render conversations
//   posttrain init --config config.json --out DIR [--tokenizer DIR] [--seed N]
//   posttrain launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] run RECIPE ...
//   posttrain plot RUN_DIR... [--metrics a,b] [--out FILE.png|.svg]   curves of runs' metrics
//   posttrain sft|dpo|grpo|... [--config R] --model_name_or_path P --dataset_name D [--<key> V ...]
//                                                   TRL's command line (tools/posttrain/trl_cli.h)
//
// User errors (a recipe typo, a missing file, a bad plugin) print one paragraph
// and exit 1; usage errors exit 2 (CLI11); success exits 0.
#include <csignal>
#include <cstdio>
#include <set>
#include <iostream>

#include <torch/cuda.h>
#include <torch/version.h>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "chat_commands.h"
#include "launch.h"
#include "model_commands.h"
#include "plot_command.h"
#include "trl_cli.h"
#include "posttrain/core/crash_report.h"
#include "posttrain/core/did_you_mean.h"
#include "posttrain/core/threads.h"
#include "posttrain/model/gemm.h"
#include "posttrain/plugin/plugin_host.h"
#include "posttrain/recipe/recipe.h"
#include "posttrain/run/engine.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace posttrain {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "posttrain: error: %s\n", std::string(status.message()).c_str());
  return 1;
}

absl::Status LoadPlugins(PluginHost& host, const std::vector<std::string>& extra_dirs) {
  POSTTRAIN_RETURN_IF_ERROR(host.LoadDefaultDirectories());
  for (const std::string& dir : extra_dirs) {
    POSTTRAIN_RETURN_IF_ERROR(Annotate(host.LoadDirectory(dir), "--plugin-dir"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Recipe> LoadRecipe(PluginHost& host, const std::string& path,
                                  const std::vector<std::string>& overrides) {
  POSTTRAIN_ASSIGN_OR_RETURN(Recipe recipe, Recipe::LoadFile(path, overrides));
  for (const std::string& dir : recipe.plugin_dirs()) {
    POSTTRAIN_RETURN_IF_ERROR(Annotate(host.LoadDirectory(dir), absl::StrCat(path, ": plugin_dirs")));
  }
  POSTTRAIN_RETURN_IF_ERROR(recipe.Validate(host.registry()));
  return recipe;
}

void PrintDescription(const RegisteredComponent& c) {
  const Registration& r = c.registration;
  std::printf("%s %s\n  %s\n  plugin: %s (%s)\n\noptions:\n", std::string(ComponentKindName(r.kind)).c_str(),
              r.name.c_str(), r.schema.doc().c_str(), c.plugin_name.c_str(), c.library_path.c_str());
  for (const OptionSpec& o : r.schema.options()) {
    std::string type(OptionTypeName(o.type));
    std::string def = o.default_value ? FormatOptionValue(*o.default_value) : "(required)";
    std::printf("  %-30s %-16s default %s\n      %s\n", o.name.c_str(), type.c_str(), def.c_str(),
                o.doc.c_str());
    if (!o.choices.empty()) std::printf("      one of: %s\n", absl::StrJoin(o.choices, ", ").c_str());
    if (const std::string range = o.RangeText(); !range.empty()) std::printf("      range: %s\n", range.c_str());
  }
}

// Runs `recipe` and prints what happened: before/after completions and metrics.
int RunAndReport(const Recipe& recipe, const Registry& registry) {
  absl::StatusOr<RunResult> result = RunRecipe(recipe, registry);
  if (!result.ok()) return Fail(result.status());
  // In a multi-process run, rank 0 reports.
  if (const char* rank = std::getenv("RANK"); rank != nullptr && std::string(rank) != "0") return 0;
  std::printf("\nrun finished: %lld steps on %lld examples; output in %s\n",
              static_cast<long long>(result->steps),
              static_cast<long long>(result->num_train_examples), result->output_dir.c_str());
  // Before and after: a completion of the first and of the last step, and the
  // headline metrics of the first and the last logged step.
  if (!result->first_completions.empty() && result->steps > 1) {
    std::printf("\nfirst step:  [%s] %s\n", result->first_completions[0].first.c_str(),
                result->first_completions[0].second.c_str());
  }
  if (!result->sample_completions.empty()) std::printf("\nsample completions (last step):\n");
  for (const auto& [prompt, completion] : result->sample_completions) {
    std::printf("  [%s] %s\n", prompt.c_str(), completion.c_str());
  }
  if (!result->first_metrics.empty() && result->steps > 1) {
    std::printf("\nfirst logged step -> last logged step:\n");
    for (const auto& [name, before] : result->first_metrics) {
      const bool headline = name == "loss" || name == "reward" || name == "rewards/accuracies" ||
                            (name.rfind("rewards/", 0) == 0 && name.size() > 5 && name.substr(name.size() - 5) == "/mean");
      auto after = result->last_metrics.find(name);
      if (!headline || after == result->last_metrics.end()) continue;
      std::printf("  %-32s %9.4f -> %9.4f\n", name.c_str(), before, after->second);
    }
  }
  std::printf("\nmetric means over the run:\n");
  for (const auto& [name, value] : result->mean_metrics) {
    std::printf("  %-32s %.4f\n", name.c_str(), value);
  }
  return 0;
}

void SetUpLogging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("posttrain");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::set_pattern("[%H:%M:%S] %^%l%$ %v");
}

// `posttrain <trainer> --flag value ...` (TRL's command line).
int TrainerCommand(int argc, char** argv, const CLI::App& app) {
  SetUpLogging("info");
  PluginHost host;
  if (absl::Status s = LoadPlugins(host, {}); !s.ok()) return Fail(s);
  const std::string name = argv[1];
  if (host.registry().Find(ComponentKind::kTrainer, name) == nullptr) {
    std::vector<std::string> words;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) words.push_back(sub->get_name());
    for (const RegisteredComponent* c : host.registry().All()) {
      if (c->registration.kind == ComponentKind::kTrainer) words.push_back(c->registration.name);
    }
    std::fprintf(stderr, "posttrain: usage error: '%s' is neither a command nor a trainer%s\nRun `posttrain --help` for usage.\n",
                 name.c_str(), DidYouMeanSuffix(name, words).c_str());
    return 2;
  }
  absl::StatusOr<Recipe> recipe = cli::CommandLineRecipe(host.registry(), name, std::vector<std::string>(argv + 2, argv + argc));
  if (!recipe.ok()) return Fail(recipe.status());
  if (absl::Status s = recipe->Validate(host.registry()); !s.ok()) return Fail(s);
  return RunAndReport(*recipe, host.registry());
}

}  // namespace
}  // namespace posttrain

int main(int argc, char** argv) {
  using namespace posttrain;
  InstallCrashReport(argv[0]);
  // A file-size limit (RLIMIT_FSIZE, a full quota) makes writes fail with EFBIG, which
  // the writers report, instead of killing the process mid-checkpoint.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"posttrain: post-training for transformer language models (SFT, reward, DPO, "
               "GRPO, ...) from TOML recipes and plugins."};
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the subcommand
  std::vector<std::string> plugin_dirs;
  std::string log_level = "info";
  app.add_option("--plugin-dir", plugin_dirs, "Extra plugin directory or .so (repeatable)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));

  std::string recipe_path;
  std::vector<std::string> overrides;
  CLI::App* run = app.add_subcommand("run", "Run a recipe");
  run->add_option("recipe", recipe_path, "Recipe file (.toml)")->required();
  run->add_option("overrides", overrides, "table.key=value overrides (TOML values)");
  CLI::App* validate = app.add_subcommand("validate", "Check a recipe without running it");
  validate->add_option("recipe", recipe_path, "Recipe file (.toml)")->required();
  validate->add_option("overrides", overrides, "table.key=value overrides (TOML values)");
  app.add_subcommand("list", "List every plugin component: kind, name, library");
  std::string describe_name, describe_kind;
  CLI::App* describe = app.add_subcommand("describe", "Show a component's options");
  describe->add_option("name", describe_name, "Registered name")->required();
  describe->add_option("--kind", describe_kind, "trainer, reward_function, sampler, data_adapter, adapter")
      ->check(CLI::IsMember({"trainer", "reward_function", "sampler", "data_adapter"}));

  app.add_subcommand("env", "Versions and machine facts for bug reports: posttrain, libtorch, BLAS/oneDNN, threads, devices");
  cli::AddModelCommands(app);
  cli::AddChatCommands(app);
  cli::AddLaunchCommand(app);
  cli::AddPlotCommand(app);

  // TRL's form: the first word names a trainer, not a subcommand.
  if (argc >= 2 && argv[1][0] != '-') {
    bool subcommand = true;
    try {
      app.get_subcommand(argv[1]);
    } catch (const CLI::OptionNotFound&) {
      subcommand = false;
    }
    if (!subcommand) return TrainerCommand(argc, argv, app);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "posttrain: usage error: %s\nRun `posttrain --help` for usage.\n", e.what());
    return 2;
  }

  SetUpLogging(log_level);

  if (int rc = 0; cli::RunModelCommand(app, &rc)) return rc;
  if (int rc = 0; cli::RunChatCommand(app, &rc)) return rc;
  if (int rc = 0; cli::RunPlotCommand(app, &rc)) return rc;
  if (int rc = 0; cli::RunLaunchCommand(app, argv[0], &rc)) return rc;
  if (app.got_subcommand("env")) {
    std::printf("posttrain: %s\n", POSTTRAIN_VERSION);
    const CpuInfo& cpu = DetectCpu();
    std::printf("cpu: %s\n", cpu.Describe().c_str());
    const int fp32_training = ConfigureThreads(at::kFloat);
    const int fp32_generation = ConfigureThreads(at::kFloat, ThreadUse::kGeneration);
    const int bf16 = ConfigureThreads(at::kBFloat16);
    std::printf("threads: %d OpenMP for fp32 training, %d for fp32 generation, %d for bf16; BLAS %s "
                "(OMP_NUM_THREADS, OPENBLAS_NUM_THREADS override)\n",
                fp32_training, fp32_generation, bf16, DescribeBlasThreads().c_str());
    std::printf("libtorch: %s, oneDNN (bf16 matmul) %s, CUDA %s\n", TORCH_VERSION,
                at::hasMKLDNN() ? "built in" : "absent", torch::cuda::is_available() ? "available" : "not available");
    // The BLAS that fp32 matmul goes through: the library the loader resolved.
    {
      at::Tensor a = at::ones({8, 8});
      (void)at::mm(a, a);  // loads it if lazily bound
      std::FILE* maps = std::fopen("/proc/self/maps", "r");
      std::set<std::string> blas;
      char buf[1024];
      while (maps != nullptr && std::fgets(buf, sizeof(buf), maps) != nullptr) {
        const std::string line(buf);
        const size_t slash = line.find('/');
        if (slash != std::string::npos && (line.find("blas") != std::string::npos || line.find("lapack") != std::string::npos)) {
          blas.insert(line.substr(slash, line.find_last_not_of("\n") + 1 - slash));
        }
      }
      if (maps != nullptr) std::fclose(maps);
      std::printf("BLAS: %s\n", blas.empty() ? "(none loaded)" : absl::StrJoin(blas, ", ").c_str());
    }
    std::printf("LM-head fp32 products: %s\n", internal::MatmulUsesOneDnn() ? "oneDNN sgemm" : "libtorch (BLAS above)");
    std::printf("allocator: %s\n", DescribeAllocator().c_str());
    std::printf("devices: cpu");
    for (std::int64_t d = 0; d < static_cast<std::int64_t>(torch::cuda::device_count()); ++d) std::printf(", cuda:%lld", static_cast<long long>(d));
    std::printf("\n");
    std::printf("recommended: %s\n", cpu.native_bf16() ? "bf16 = true (autocast) for speed"
                                                       : "bf16 = false: fp32 through OpenBLAS is the fast path here");
    return 0;
  }

  PluginHost host;
  if (absl::Status s = LoadPlugins(host, plugin_dirs); !s.ok()) return Fail(s);

  if (app.got_subcommand("list")) {
    std::printf("%-16s %-20s %s\n", "KIND", "NAME", "LIBRARY");
    for (const RegisteredComponent* c : host.registry().All()) {
      std::printf("%-16s %-20s %s\n", std::string(ComponentKindName(c->registration.kind)).c_str(),
                  c->registration.name.c_str(), c->library_path.c_str());
    }
    return 0;
  }
  if (app.got_subcommand("describe")) {
    std::vector<const RegisteredComponent*> found;
    for (const RegisteredComponent* c : host.registry().All()) {
      if (c->registration.name == describe_name &&
          (describe_kind.empty() || ComponentKindName(c->registration.kind) == describe_kind)) {
        found.push_back(c);
      }
    }
    if (found.empty()) {
      std::vector<std::string> names;
      for (const RegisteredComponent* c : host.registry().All()) names.push_back(c->registration.name);
      return Fail(absl::NotFoundError(absl::StrCat("no component named '", describe_name, "'",
                                                   DidYouMeanSuffix(describe_name, names),
                                                   "; `posttrain list` shows them all")));
    }
    for (size_t i = 0; i < found.size(); ++i) {
      if (i > 0) std::printf("\n");
      PrintDescription(*found[i]);
    }
    return 0;
  }

  absl::StatusOr<Recipe> recipe = LoadRecipe(host, recipe_path, overrides);
  if (!recipe.ok()) return Fail(recipe.status());
  if (app.got_subcommand("validate")) {
    if (absl::Status s = CheckRecipe(*recipe, host.registry()); !s.ok()) return Fail(s);
    std::printf("%s: OK\n", recipe_path.c_str());
    return 0;
  }
  return RunAndReport(*recipe, host.registry());
}
