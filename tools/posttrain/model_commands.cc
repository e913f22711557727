#include "model_commands.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "posttrain/chat/chat_template.h"
#include "posttrain/chat/conversation.h"
#include "posttrain/core/autocast.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"
#include "posttrain/core/threads.h"
#include "posttrain/generation/generate.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/llama2c.h"
#include "posttrain/plugin/plugin_host.h"
#include "posttrain/run/adapters.h"
#include "posttrain/run/run_directory.h"
#include "posttrain/tokenizer/tokenizer.h"

namespace posttrain::cli {
namespace {

struct ConvertArgs {
  std::string checkpoint, tokenizer, out;
} convert_args;

struct GenerateArgs {
  std::string model, dtype = "float32";
  std::vector<std::string> prompts, stop;
  std::int64_t max_new_tokens = 128, top_k = 0, num_generations = 1;
  double temperature = 0.0, top_p = 1.0, min_p = 0.0, repetition_penalty = 1.0;
  std::uint64_t seed = 0;
  bool json = false;
  bool chat = false;
  bool bf16 = false;
  std::string chat_template_path, system, adapter;
} generate_args;

struct MergeArgs {
  std::string model, adapter, out, dtype;
} merge_args;

struct InitArgs {
  std::string config, tokenizer, out, dtype = "float32";
  std::uint64_t seed = 0;
} init_args;

struct TokenizeArgs {
  std::string tokenizer, text;
  bool add_special_tokens = false;
} tokenize_args;

CLI::App* convert_cmd = nullptr;
CLI::App* convert_llama2c_cmd = nullptr;
CLI::App* generate_cmd = nullptr;
CLI::App* tokenize_cmd = nullptr;
CLI::App* init_cmd = nullptr;
CLI::App* merge_cmd = nullptr;

// A saved adapter (PEFT's files) merged into `model` in memory: the same function
// as the model with the adapter, at the speed of a plain model.
absl::Status MergeSavedAdapter(const std::string& dir, CausalLM& model) {
  PluginHost host;
  POSTTRAIN_RETURN_IF_ERROR(host.LoadDefaultDirectories());
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Adapter> adapter, LoadSavedAdapter(host.registry(), dir, model));
  return adapter->MergeInto(model);
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "posttrain: error: %s\n", std::string(status.message()).c_str());
  return 1;
}

absl::Status ConvertLlama2c() {
  namespace fs = std::filesystem;
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<CausalLM> model, ReadLlama2cCheckpoint(convert_args.checkpoint));
  POSTTRAIN_ASSIGN_OR_RETURN(ConvertedTokenizer tokenizer, ConvertSentencePieceToHf(convert_args.tokenizer));
  {
    // Every token id must index the embedding, or the first such token crashes a forward.
    const nlohmann::json parsed = nlohmann::json::parse(tokenizer.tokenizer_json, nullptr, false);
    std::int64_t tokens = 0;
    if (!parsed.is_discarded() && parsed.contains("model") && parsed["model"].contains("vocab")) {
      for (const auto& [piece, id] : parsed["model"]["vocab"].items()) tokens = std::max(tokens, id.get<std::int64_t>() + 1);
    }
    if (tokens > model->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the tokenizer '", convert_args.tokenizer, "' has ", tokens, " tokens but the checkpoint '", convert_args.checkpoint,
          "' has vocab_size ", model->config().vocab_size, ": they do not belong together"));
    }
  }
  POSTTRAIN_RETURN_IF_ERROR(SaveCausalLM(*model, convert_args.out));
  const fs::path out(convert_args.out);
  POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic((out / "tokenizer.json").string(), tokenizer.tokenizer_json));
  POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic((out / "tokenizer_config.json").string(), tokenizer.tokenizer_config_json));
  nlohmann::json special = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}};
  POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic((out / "special_tokens_map.json").string(), special.dump(2) + "\n"));
  POSTTRAIN_ASSIGN_OR_RETURN(std::string spm, ReadTextFile(convert_args.tokenizer));
  POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic((out / "tokenizer.model").string(), spm));
  std::printf("wrote %s: config.json, generation_config.json, model.safetensors (%zu tensors), "
              "tokenizer.json, tokenizer_config.json, special_tokens_map.json, tokenizer.model\n",
              convert_args.out.c_str(), model->named_parameters().size());
  return absl::OkStatus();
}

absl::Status RunGenerate() {
  const GenerateArgs& a = generate_args;
  POSTTRAIN_ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDtype(a.dtype));
  ConfigureThreads(a.bf16 ? at::kBFloat16 : dtype, ThreadUse::kGeneration);
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<CausalLM> model, LoadCausalLM(a.model, dtype));
  if (!a.adapter.empty()) POSTTRAIN_RETURN_IF_ERROR(Annotate(MergeSavedAdapter(a.adapter, *model), "--adapter"));
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(a.model));
  POSTTRAIN_RETURN_IF_ERROR(Annotate(CheckTokenizerFitsModel(*model, *tokenizer), a.model));
  SamplingParams params;
  params.max_new_tokens = a.max_new_tokens;
  params.do_sample = a.temperature > 0;
  params.temperature = a.temperature;
  params.top_k = a.top_k;
  params.top_p = a.top_p;
  params.min_p = a.min_p;
  params.repetition_penalty = a.repetition_penalty;
  params.seed = a.seed;
  params.stop_strings = a.stop;
  params.eos_token_ids = EosTokenIds(*model, tokenizer.get());
  std::vector<std::vector<std::int64_t>> prompts;
  std::vector<std::string> shown = a.prompts;
  if (a.chat) {
    // --prompt as a user turn (after an optional system turn), with the template's
    // generation prompt; generation also stops at the template's end-of-turn token.
    POSTTRAIN_ASSIGN_OR_RETURN(ChatTemplate chat, ChatTemplate::Load(a.model, a.chat_template_path));
    for (std::int64_t id : EndOfTurnTokenIds(chat, *tokenizer)) params.eos_token_ids.push_back(id);
    for (size_t i = 0; i < a.prompts.size(); ++i) {
      ChatRequest request;
      if (!a.system.empty()) request.messages.push_back({{"role", "system"}, {"content", a.system}});
      request.messages.push_back({{"role", "user"}, {"content", a.prompts[i]}});
      request.add_generation_prompt = true;
      POSTTRAIN_ASSIGN_OR_RETURN(TemplateRendering r, chat.Apply(request));
      shown[i] = r.text;
      prompts.push_back(tokenizer->Encode(r.text, /*add_special_tokens=*/false));
    }
  } else {
    for (const std::string& p : a.prompts) prompts.push_back(tokenizer->Encode(p, /*add_special_tokens=*/true));
  }
  const auto start = std::chrono::steady_clock::now();
  // --bf16: under bf16 autocast, as a run with bf16 = true samples (fp32 weights, bf16
  // products: the decode step's AVX512-BF16 path where the CPU has it).
  if (a.bf16) SetAutocast(model->device().type(), true, at::kBFloat16);
  absl::StatusOr<std::vector<Generation>> generated = Generate(*model, prompts, a.num_generations, params, tokenizer.get());
  if (a.bf16) SetAutocast(model->device().type(), false);
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<Generation> out, std::move(generated));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::int64_t tokens = 0;
  for (const Generation& g : out) {
    tokens += static_cast<std::int64_t>(g.token_ids.size());
    const std::string& prompt = shown[static_cast<size_t>(g.prompt_index)];
    if (a.json) {
      nlohmann::json line = {{"prompt", prompt}, {"completion", g.text}, {"token_ids", g.token_ids},
                             {"logprobs", g.logprobs}, {"finish_reason", FinishReasonName(g.finish_reason)}};
      std::printf("%s\n", line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("%s%s\n[%s, %zu tokens]\n\n", prompt.c_str(), g.text.c_str(),
                  std::string(FinishReasonName(g.finish_reason)).c_str(), g.token_ids.size());
    }
  }
  std::fprintf(stderr, "generated %lld tokens in %.2f s (%.1f tokens/s)\n", static_cast<long long>(tokens), seconds,
               seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0);
  return absl::OkStatus();
}

absl::Status RunTokenize() {
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(tokenize_args.tokenizer));
  std::vector<std::int64_t> ids = tokenizer->Encode(tokenize_args.text, tokenize_args.add_special_tokens);
  std::printf("%s\n", nlohmann::json(ids).dump().c_str());
  return absl::OkStatus();
}

}  // namespace

void AddModelCommands(CLI::App& app) {
  convert_cmd = app.add_subcommand("convert", "Convert a checkpoint into a Hugging Face model directory");
  convert_cmd->require_subcommand(1);
  convert_llama2c_cmd = convert_cmd->add_subcommand("llama2c", "llama2.c checkpoint + SentencePiece tokenizer → HF directory");
  convert_llama2c_cmd->add_option("--checkpoint", convert_args.checkpoint, "llama2.c .bin checkpoint")->required();
  convert_llama2c_cmd->add_option("--tokenizer", convert_args.tokenizer, "SentencePiece .model file")->required();
  convert_llama2c_cmd->add_option("--out", convert_args.out, "Output directory")->required();

  generate_cmd = app.add_subcommand("generate", "Generate completions from a Hugging Face model directory");
  GenerateArgs& g = generate_args;
  generate_cmd->add_option("--model", g.model, "Model directory (config.json, safetensors, tokenizer)")->required();
  generate_cmd->add_option("--prompt", g.prompts, "Prompt text (repeatable: one batch)")->required();
  generate_cmd->add_option("--max-new-tokens", g.max_new_tokens, "Tokens to generate at most")->capture_default_str();
  generate_cmd->add_option("--temperature", g.temperature, "0: greedy")->capture_default_str();
  generate_cmd->add_option("--top-k", g.top_k, "0: off")->capture_default_str();
  generate_cmd->add_option("--top-p", g.top_p, "1: off")->capture_default_str();
  generate_cmd->add_option("--min-p", g.min_p, "0: off")->capture_default_str();
  generate_cmd->add_option("--repetition-penalty", g.repetition_penalty, "1: off")->capture_default_str();
  generate_cmd->add_option("--num-generations", g.num_generations, "Completions per prompt")->capture_default_str();
  generate_cmd->add_option("--seed", g.seed, "Sampling seed")->capture_default_str();
  generate_cmd->add_option("--stop", g.stop, "Stop string (repeatable)");
  generate_cmd->add_option("--dtype", g.dtype, "float32 or bfloat16")->capture_default_str();
  generate_cmd->add_flag("--bf16", g.bf16,
                         "bf16 autocast over fp32 weights, as a run with bf16 = true samples (the fast path where "
                         "`posttrain env` says bf16 matmul is native)");
  generate_cmd->add_flag("--json", g.json, "One JSON line per completion (ids, logprobs, finish reason)");
  generate_cmd->add_option("--adapter", g.adapter, "A saved adapter directory (PEFT's adapter_config.json + adapter_model.safetensors) on --model");
  generate_cmd->add_flag("--chat", g.chat, "Render each --prompt as a user turn with the model's chat template");
  generate_cmd->add_option("--chat-template-path", g.chat_template_path, "With --chat: a .jinja template instead of the model's");
  generate_cmd->add_option("--system", g.system, "With --chat: a system message before the user turn");

  init_cmd = app.add_subcommand("init", "Write a model with random weights for a config.json (transformers' from_config)");
  init_cmd->add_option("--config", init_args.config, "config.json (LlamaForCausalLM family)")->required();
  init_cmd->add_option("--tokenizer", init_args.tokenizer, "Directory whose tokenizer files are copied beside it");
  init_cmd->add_option("--out", init_args.out, "Output directory")->required();
  init_cmd->add_option("--dtype", init_args.dtype, "float32 or bfloat16")->capture_default_str();
  init_cmd->add_option("--seed", init_args.seed, "Initialisation seed")->capture_default_str();

  merge_cmd = app.add_subcommand("merge", "Merge a saved adapter into its base model (PEFT's merge_and_unload) and save it");
  merge_cmd->add_option("--model", merge_args.model, "The base model directory")->required();
  merge_cmd->add_option("--adapter", merge_args.adapter, "The adapter directory")->required();
  merge_cmd->add_option("--out", merge_args.out, "Output directory: a plain Hugging Face model")->required();
  merge_cmd->add_option("--dtype", merge_args.dtype, "float32 or bfloat16 (default: the base model's)");

  tokenize_cmd = app.add_subcommand("tokenize", "Print the token ids of a text as JSON");
  tokenize_cmd->add_option("--tokenizer", tokenize_args.tokenizer, "Model directory, tokenizer.json or .model")->required();
  tokenize_cmd->add_option("--text", tokenize_args.text, "Text to encode")->required();
  tokenize_cmd->add_flag("--add-special-tokens", tokenize_args.add_special_tokens, "Apply the template (e.g. BOS)");
}

// A model with random weights for a config.json (transformers' from_config
// initialisation), e.g. a student for distillation or a benchmark shape.
absl::Status RunInit() {
  POSTTRAIN_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJsonFile(init_args.config));
  POSTTRAIN_ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDtype(init_args.dtype));
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<CausalLM> model, CausalLM::Random(config, dtype, init_args.seed));
  SaveOptions save;
  save.tokenizer_source_dir = init_args.tokenizer;
  POSTTRAIN_RETURN_IF_ERROR(SaveCausalLM(*model, init_args.out, save));
  std::printf("wrote %s: %lld layers, hidden %lld, vocab %lld, random weights (seed %llu)\n", init_args.out.c_str(),
              static_cast<long long>(config.num_hidden_layers), static_cast<long long>(config.hidden_size),
              static_cast<long long>(config.vocab_size), static_cast<unsigned long long>(init_args.seed));
  return absl::OkStatus();
}

// The adapter added into the base weights (fp32 arithmetic), saved as a plain model
// with the base's tokenizer.
absl::Status RunMerge() {
  POSTTRAIN_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJsonFile((std::filesystem::path(merge_args.model) / "config.json").string()));
  at::ScalarType dtype = config.torch_dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  if (!merge_args.dtype.empty()) {
    POSTTRAIN_ASSIGN_OR_RETURN(dtype, ParseDtype(merge_args.dtype));
  }
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<CausalLM> model, LoadCausalLM(merge_args.model, at::kFloat));
  POSTTRAIN_RETURN_IF_ERROR(MergeSavedAdapter(merge_args.adapter, *model));
  std::unique_ptr<CausalLM> out = std::move(model);
  if (dtype != at::kFloat) {
    std::map<std::string, at::Tensor> tensors;
    for (const auto& [name, t] : out->named_parameters()) tensors[name] = t;
    POSTTRAIN_ASSIGN_OR_RETURN(out, CausalLM::FromTensors(out->config(), std::move(tensors), dtype));
  }
  SaveOptions save;
  save.tokenizer_source_dir = merge_args.model;
  POSTTRAIN_RETURN_IF_ERROR(SaveCausalLM(*out, merge_args.out, save));
  std::printf("merged %s into %s: %s\n", merge_args.adapter.c_str(), merge_args.model.c_str(), merge_args.out.c_str());
  return absl::OkStatus();
}

bool RunModelCommand(const CLI::App& app, int* rc) {
  absl::Status status;
  if (app.got_subcommand(merge_cmd)) {
    status = RunMerge();
  } else if (app.got_subcommand(convert_cmd)) {
    status = ConvertLlama2c();
  } else if (app.got_subcommand(generate_cmd)) {
    status = RunGenerate();
  } else if (app.got_subcommand(tokenize_cmd)) {
    status = RunTokenize();
  } else if (app.got_subcommand(init_cmd)) {
    status = RunInit();
  } else {
    return false;
  }
  *rc = status.ok() ? 0 : Fail(status);
  return true;
}

}  // namespace posttrain::cli
