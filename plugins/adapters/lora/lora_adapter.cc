// Adapter "lora": Low-Rank Adaptation (Hu et al. 2022, "LoRA: Low-Rank Adaptation of
// Large Language Models", eq. 3) in PEFT's conventions, files and names.
//
//   [peft]
//   type = "lora"
//   r = 16
//   lora_alpha = 32
//   target_modules = "all-linear"      # or ["q_proj", "v_proj"], or a regex
//
// Each targeted projection W [out, in] gets A [r, in] and B [out, r]:
//   out = W x + scaling · B (A (dropout(x))),   scaling = lora_alpha / r
//   (use_rslora: lora_alpha / √r, Kalajdzievski 2023)
// A starts Kaiming-uniform (bound 1/√in, PEFT's kaiming_uniform_(a=√5)), B zero, so
// the adapted model starts equal to the base. Targets, as PEFT matches them: a list
// of module names (a module matches when its full name ends with ".<name>"),
// "all-linear" (every projection of the decoder layers, not lm_head), or a regular
// expression over full names ("model.layers.0.self_attn.q_proj"; a single string with
// regex characters). Saved as adapter_config.json + adapter_model.safetensors with
// PEFT's tensor names (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight).
// Modules are the checkpoint's (LinearModules): Phi-3's fused qkv_proj and
// gate_up_proj are adapted whole, one A and one B, as PEFT adapts them; B's rows
// serve q, k, v (gate, up) in turn. (Dropout then draws one mask per projection
// where PEFT draws one per fused module: the same law for each projection.)
// GPT-2's modules are Conv1D (attn.c_attn: q, k, v; attn.c_proj; mlp.c_fc;
// mlp.c_proj): A [r, in] and B [out, r] as for a linear layer, the merged weight
// transposed back into the checkpoint's [in, out], and fan_in_fan_out = true in
// adapter_config.json, as PEFT sets it for Conv1D.
//
// use_dora (DoRA: Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation",
// eq. 5, as PEFT's DoraLinearLayer computes it): each adapted module also trains a
// magnitude m [out] (saved as <module>.lora_magnitude_vector), initialised to the row
// norms ||W + scaling · BA|| (||W|| at PEFT's initialisation), and
//   out = x Wᵀ + b + (g - 1) ⊙ (x Wᵀ) + g ⊙ scaling · B (A x),
//   g = m / ||W + scaling · BA||  (row norms, detached: section 4.3 of the paper),
// the dropped-out input in both terms while dropout trains; merged, W becomes
// g ⊙ (W + scaling · BA) row by row and the bias stays.
#include <c10/core/GradMode.h>
#include <cmath>
#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "posttrain/core/atomic_file.h"
#include "posttrain/core/autocast.h"
#include "posttrain/core/regex.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"
#include "posttrain/model/safetensors.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

namespace fs = std::filesystem;

bool LooksLikeRegex(const std::string& s) { return s.find_first_of(".*+?[](){}|^$\\") != std::string::npos; }

class LoraAdapter final : public Adapter {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("LoRA (PEFT's LoraConfig): low-rank A/B matrices on the targeted linear layers.")
        .Int("r", 8, "Rank of the update.").AtLeast(1)
        .Float("lora_alpha", 8.0, "Scaling numerator: scaling = lora_alpha / r (or / sqrt(r) with use_rslora).").GreaterThan(0)
        .Float("lora_dropout", 0.0, "Dropout on the adapter's input while training.").AtLeast(0).LessThan(1)
        .StringList("target_modules", {"q_proj", "v_proj"},
                    "Module names (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; Phi-3: qkv_proj, o_proj, "
                    "gate_up_proj, down_proj; GPT-NeoX: query_key_value, dense, dense_h_to_4h, dense_4h_to_h; GPT-2: "
                    "c_attn, c_proj, c_fc; OPT: q_proj, k_proj, v_proj, out_proj, fc1, fc2; BLOOM: query_key_value, dense, "
                    "dense_h_to_4h, dense_4h_to_h; Phi: q_proj, k_proj, v_proj, dense, fc1, fc2; StarCoder2: q_proj, "
                    "k_proj, v_proj, o_proj, c_fc, c_proj; DeepSeek-V3: q_a_proj, q_b_proj or q_proj, kv_a_proj_with_mqa, kv_b_proj, "
                    "o_proj, gate_proj, up_proj, down_proj; Mamba: in_proj, x_proj, dt_proj, out_proj), \"all-linear\", or a regular "
                    "expression over full module names.")
        .Bool("use_rslora", false, "Rank-stabilised scaling lora_alpha / sqrt(r).")
        .Bool("use_dora", false, "DoRA: a trained magnitude per output row on top of LoRA's direction (PEFT's use_dora).")
        .String("bias", "none", "Which biases train (only \"none\").", {"none"})
        .StringList("modules_to_save", {}, "Base modules trained whole and saved with the adapter (e.g. lm_head, embed_tokens).")
        .Bool("init_lora_weights", true, "PEFT's initialisation (A Kaiming-uniform, B zero); false: B random too.");
  }

  static absl::StatusOr<std::unique_ptr<Adapter>> Create(const ComponentConfig& config) {
    auto a = std::make_unique<LoraAdapter>();
    a->r_ = config.GetInt("r");
    a->alpha_ = config.GetFloat("lora_alpha");
    a->dropout_ = config.GetFloat("lora_dropout");
    a->targets_ = config.GetStringList("target_modules");
    a->rslora_ = config.GetBool("use_rslora");
    a->modules_to_save_ = config.GetStringList("modules_to_save");
    a->init_ = config.GetBool("init_lora_weights");
    a->dora_ = config.GetBool("use_dora");
    (void)config.GetString("bias");
    if (a->targets_.empty()) return config.Error("target_modules", "needs at least one module");
    a->scaling_ = a->rslora_ ? a->alpha_ / std::sqrt(static_cast<double>(a->r_)) : a->alpha_ / static_cast<double>(a->r_);
    return a;
  }

  absl::Status Attach(const ModelConfig& config, const at::TensorOptions& options, std::uint64_t seed) override {
    config_ = config;
    const std::string layers_prefix = DecoderLayersPrefix(config);
    const bool all_linear = targets_.size() == 1 && targets_[0] == "all-linear";
    const bool regex = !all_linear && targets_.size() == 1 && LooksLikeRegex(targets_[0]);
    std::optional<FullMatchRegex> pattern;
    if (regex) {
      absl::StatusOr<FullMatchRegex> compiled = FullMatchRegex::Compile(targets_[0]);
      if (!compiled.ok()) return Annotate(compiled.status(), "[peft] target_modules");
      pattern = std::move(*compiled);
    }
    std::set<std::string> used;
    at::Generator gen = at::detail::createCPUGenerator(seed);
    const std::vector<LinearModule> modules = LinearModules(config);
    std::vector<std::string> known;
    for (const LinearModule& m : modules) {
      if (std::find(known.begin(), known.end(), m.name()) == known.end()) known.push_back(m.name());  // GPT-2: c_proj twice
    }
    modules_.assign(static_cast<size_t>(config.num_hidden_layers), {});
    slots_.assign(static_cast<size_t>(config.num_hidden_layers), {});
    for (std::int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
      for (const LinearModule& module : modules) {
        // An MoE layer has no MLP projections to adapt: its experts are not linear
        // sites (as under transformers 5, whose fused experts PEFT's all-linear skips).
        const bool mlp = module.parts.front().site == LinearSite::kGate || module.parts.front().site == LinearSite::kUp ||
                         module.parts.front().site == LinearSite::kDown;
        if (mlp && config.is_moe_layer(layer)) continue;
        const std::string full = absl::StrCat(layers_prefix, layer, ".", module.path);
        bool match = all_linear;
        if (regex) {
          absl::StatusOr<bool> hit = pattern->Matches(full);
          if (!hit.ok()) return Annotate(hit.status(), "[peft] target_modules");
          match = *hit;
        }
        if (!all_linear && !regex) {
          for (const std::string& t : targets_) {
            if (full == t || absl::EndsWith(full, "." + t)) {
              match = true;
              used.insert(t);
            }
          }
        }
        if (!match) continue;
        const std::int64_t in = module.in_features, out = module.out_features;
        if (r_ > std::max(in, out)) {
          // rank(BA) <= min(in, out): a rank past both dimensions adds nothing but memory
          // (and a hostile adapter_config.json could ask for any).
          return absl::InvalidArgumentError(absl::StrCat("[peft] r = ", r_, " exceeds both dimensions of ", full, " (", out,
                                                         " x ", in, "); a LoRA update has rank at most ", std::min(in, out)));
        }
        Module m;
        const double bound = 1.0 / std::sqrt(static_cast<double>(in));
        m.a = at::empty({r_, in}, at::TensorOptions().dtype(at::kFloat)).uniform_(-bound, bound, gen).to(options);
        m.b = init_ ? at::zeros({out, r_}, options)
                    : at::empty({out, r_}, at::TensorOptions().dtype(at::kFloat)).uniform_(-bound, bound, gen).to(options);
        m.a.set_requires_grad(true);
        m.b.set_requires_grad(true);
        if (dora_) m.magnitude = at::zeros({out}, options);  // Initialize sets ||W + scaling · BA||
        m.name = absl::StrCat("base_model.model.", full);
        m.module = module;
        auto& layer_modules = modules_[static_cast<size_t>(layer)];
        for (size_t k = 0; k < module.parts.size(); ++k) {
          const LinearModule::Part& part = module.parts[k];
          slots_[static_cast<size_t>(layer)][static_cast<int>(part.site)] =
              Slot{static_cast<int>(layer_modules.size()), part.row_offset, part.rows, InterleavedRows(module, k, options)};
        }
        layer_modules.push_back(std::move(m));
        ++count_;
      }
    }
    if (count_ == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "[peft] target_modules = [", absl::StrJoin(targets_, ", "), "] matches no linear layer of the model (its projections: ",
          absl::StrJoin(known, ", "), " in ", layers_prefix, "<i>; lm_head and embed_tokens go in modules_to_save)"));
    }
    if (!all_linear && !regex) {
      std::vector<std::string> unused;
      for (const std::string& t : targets_) {
        if (!used.count(t)) unused.push_back(t);
      }
      if (!unused.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("[peft] target_modules: ", absl::StrJoin(unused, ", "),
                                                       " match no linear layer of the decoder (known: ",
                                                       absl::StrJoin(known, ", "), ")"));
      }
    }
    // Each module to save names base tensors (a tied lm_head is the embedding's).
    for (const std::string& module : modules_to_save_) {
      bool found = false;
      for (const auto& [name, shape] : ExpectedTensors(config_)) {
        const std::string path = ModulePath(name);
        found = found || path == module || absl::EndsWith(path, "." + module);
      }
      if (!found) {
        return absl::InvalidArgumentError(absl::StrCat(
            "[peft] modules_to_save: '", module, "' names no module of the model",
            module == "lm_head" && config_.tie_word_embeddings
                ? (config_.model_type == "gpt2"    ? " (its lm_head is tied to the input embedding: name wte)"
                   : config_.model_type == "bloom" ? " (its lm_head is tied to the input embedding: name word_embeddings)"
                                                   : " (its lm_head is tied to the input embedding: name embed_tokens)")
                : config_.model_type == "gpt_neox" ? " (e.g. embed_in, embed_out, final_layer_norm)"
                : config_.model_type == "gpt2"     ? " (e.g. wte, wpe, ln_f)"
                : config_.model_type == "gptj"     ? " (e.g. wte, ln_f, lm_head)"
                : config_.model_type == "opt"      ? " (e.g. embed_tokens, embed_positions, final_layer_norm)"
                : config_.model_type == "bloom"    ? " (e.g. word_embeddings, word_embeddings_layernorm, ln_f)"
                                                    : " (e.g. embed_tokens, lm_head, model.norm)"));
      }
    }
    return absl::OkStatus();
  }

  at::Tensor Delta(std::int64_t layer, LinearSite site, const at::Tensor& x) const override {
    const Slot* slot = SlotOf(layer, site);
    if (slot == nullptr) return at::Tensor();
    TORCH_CHECK(!dora_, "lora: a DoRA adapter's term depends on the base weight: call Adapt");
    const Module& m = modules_[static_cast<size_t>(layer)][static_cast<size_t>(slot->module)];
    at::Tensor h = x.scalar_type() == m.a.scalar_type() || AnyAutocast() ? x : x.to(m.a.scalar_type());
    if (dropout_ > 0 && training_) h = at::dropout(h, dropout_, /*train=*/true);
    return at::linear(at::linear(h, m.a), RowsOf(m, *slot)) * scaling_;
  }

  at::Tensor Adapt(std::int64_t layer, LinearSite site, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                   const at::Tensor& base) const override {
    if (!dora_) return LinearAdapter::Adapt(layer, site, x, w, b, base);
    const Slot* slot = SlotOf(layer, site);
    if (slot == nullptr) return base;
    TORCH_CHECK(initialized_, "lora: use_dora needs Initialize(base model) before the adapter runs");
    const Module& m = modules_[static_cast<size_t>(layer)][static_cast<size_t>(slot->module)];
    const at::Tensor B = RowsOf(m, *slot);
    // g = m / ||W + scaling · BA|| per output row, the norm in fp32 and detached.
    at::Tensor norm;
    {
      c10::NoGradGuard no_grad;
      norm = at::linalg_vector_norm(w.to(at::kFloat) + at::matmul(B.to(at::kFloat), m.a.to(at::kFloat)) * scaling_, 2,
                                    at::IntArrayRef{1}, false, c10::nullopt);
    }
    const at::Tensor g = MagnitudeOf(m, *slot).to(at::kFloat) / norm;  // [rows]
    at::Tensor h = x.scalar_type() == m.a.scalar_type() || AnyAutocast() ? x : x.to(m.a.scalar_type());
    at::Tensor plain;  // x Wᵀ without the bias
    if (dropout_ > 0 && training_) {
      // PEFT: with dropout on, both terms read the dropped-out input.
      h = at::dropout(h, dropout_, /*train=*/true);
      plain = at::linear(h, w.to(h.scalar_type()));
    } else {
      plain = b.defined() ? base - b : base;
    }
    const at::Tensor lora = at::linear(at::linear(h, m.a), B) * scaling_;
    return base + ((g - 1) * plain + g * lora).to(base.scalar_type());
  }

  bool MergesIntoWeights() const override { return true; }

  // For decoding (CausalLM::MergedDecodeWeights): Merged in w's dtype.
  at::Tensor MergedWeight(std::int64_t layer, LinearSite site, const at::Tensor& w) const override {
    const Slot* slot = SlotOf(layer, site);
    if (slot == nullptr) return w;
    TORCH_CHECK(!dora_ || initialized_, "lora: use_dora needs Initialize(base model) before the adapter merges");
    c10::NoGradGuard no_grad;
    const Module& m = modules_[static_cast<size_t>(layer)][static_cast<size_t>(slot->module)];
    return Merged(m, *slot, w, w.scalar_type());
  }

  absl::Status Initialize(const CausalLM& base) override {
    initialized_ = true;
    if (!dora_) return absl::OkStatus();
    c10::NoGradGuard no_grad;
    std::map<std::string, at::Tensor> by_name(base.named_parameters().begin(), base.named_parameters().end());
    for (std::int64_t layer = 0; layer < static_cast<std::int64_t>(modules_.size()); ++layer) {
      for (Module& m : modules_[static_cast<size_t>(layer)]) {
        for (size_t k = 0; k < m.module.parts.size(); ++k) {
          POSTTRAIN_ASSIGN_OR_RETURN(const PartUpdate u, UpdateOfPart(by_name, layer, m, k));
          const Slot& slot = u.slot;
          const at::Tensor updated = Merged(m, slot, u.weight, at::kDouble, /*magnitudes=*/false);
          const at::Tensor norm = at::linalg_vector_norm(updated, 2, at::IntArrayRef{1}, false, c10::nullopt).to(m.b.device());
          if (slot.rows_index.defined()) {
            m.magnitude.index_copy_(0, slot.rows_index, norm.to(m.magnitude.scalar_type()));
          } else {
            m.magnitude.narrow(0, slot.row_offset, slot.rows).copy_(norm);
          }
        }
        m.magnitude.set_requires_grad(true);
      }
    }
    return absl::OkStatus();
  }

  void MoveTo(at::Device device) override {
    for (auto& layer : modules_) {
      for (Module& m : layer) {
        if (m.a.device() == device) continue;
        m.a = m.a.detach().to(device).requires_grad_(m.a.requires_grad());
        m.b = m.b.detach().to(device).requires_grad_(m.b.requires_grad());
        if (m.magnitude.defined()) m.magnitude = m.magnitude.detach().to(device).requires_grad_(m.magnitude.requires_grad());
      }
    }
  }

  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() const override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& layer : modules_) {
      for (const Module& m : layer) {
        out.push_back({m.name + ".lora_A.weight", m.a});
        out.push_back({m.name + ".lora_B.weight", m.b});
        // PEFT's name: lora_magnitude_vector.<adapter>.weight without ".weight" and the adapter's name.
        if (m.magnitude.defined()) out.push_back({m.name + ".lora_magnitude_vector", m.magnitude});
      }
    }
    return out;
  }

  std::vector<std::string> ModulesToSave() const override {
    std::vector<std::string> names;
    for (const std::string& module : modules_to_save_) {
      // The base parameters under the module: lm_head → lm_head.weight,
      // embed_tokens → model.embed_tokens.weight.
      for (const auto& [name, shape] : ExpectedTensors(config_)) {
        const std::string path = ModulePath(name);
        if (path == module || absl::EndsWith(path, "." + module)) names.push_back(name);
      }
    }
    return names;
  }

  void SetTraining(bool training) override { training_ = training; }

  absl::Status Save(const std::string& dir, const CausalLM& base, const std::string& base_model) const override {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return absl::DataLossError(absl::StrCat("cannot create '", dir, "': ", ec.message()));
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& [name, t] : NamedParameters()) tensors.push_back({name, t.detach().to(at::kCPU).contiguous()});
    const std::vector<std::string> saved_modules = ModulesToSave();
    for (const auto& [name, t] : base.named_parameters()) {
      if (std::find(saved_modules.begin(), saved_modules.end(), name) != saved_modules.end()) {
        tensors.push_back({"base_model.model." + CheckpointName(name), t.detach().to(at::kCPU).contiguous()});
      }
    }
    POSTTRAIN_RETURN_IF_ERROR(SaveSafetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors));
    nlohmann::ordered_json c;
    c["peft_type"] = "LORA";
    c["task_type"] = "CAUSAL_LM";
    c["base_model_name_or_path"] = base_model;
    c["r"] = r_;
    c["lora_alpha"] = alpha_;
    c["lora_dropout"] = dropout_;
    const bool regex = targets_.size() == 1 && targets_[0] != "all-linear" && LooksLikeRegex(targets_[0]);
    if (regex) {
      c["target_modules"] = targets_[0];
    } else {
      // PEFT writes the resolved module names (also for "all-linear").
      std::set<std::string> names;
      for (const auto& layer : modules_) {
        for (const Module& m : layer) names.insert(m.module.name());
      }
      c["target_modules"] = std::vector<std::string>(names.begin(), names.end());
    }
    c["use_rslora"] = rslora_;
    c["bias"] = "none";
    c["modules_to_save"] = modules_to_save_.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(modules_to_save_);
    c["fan_in_fan_out"] = Conv1D();  // PEFT's flag for Conv1D weights [in, out] (GPT-2)
    c["init_lora_weights"] = init_;
    c["inference_mode"] = true;
    c["use_dora"] = dora_;
    c["layers_to_transform"] = nullptr;
    c["layers_pattern"] = nullptr;
    c["rank_pattern"] = nlohmann::ordered_json::object();
    c["alpha_pattern"] = nlohmann::ordered_json::object();
    c["revision"] = nullptr;
    return WriteFileAtomic((fs::path(dir) / "adapter_config.json").string(), c.dump(2) + "\n");
  }

  absl::Status Load(const std::string& dir, CausalLM& base) override {
    const std::string config_path = (fs::path(dir) / "adapter_config.json").string();
    POSTTRAIN_ASSIGN_OR_RETURN(std::string text, ReadTextFile(config_path));
    nlohmann::json c = nlohmann::json::parse(text, nullptr, false);
    if (c.is_discarded() || !c.is_object()) return absl::InvalidArgumentError(absl::StrCat(config_path, ": not a JSON object"));
    // Options that change LoRA's maths and are not implemented: refused by name.
    std::vector<std::string> refused;
    auto truthy = [&](const char* key) {
      return c.contains(key) && !c[key].is_null() && c[key] != false && c[key] != nlohmann::json::object() &&
             c[key] != nlohmann::json::array();
    };
    for (const char* key : {"fan_in_fan_out", "layers_to_transform", "rank_pattern", "alpha_pattern",
                            "layer_replication", "use_qalora", "lora_bias"}) {
      // fan_in_fan_out describes Conv1D weights: GPT-2's are (PEFT sets it for them either way).
      const bool conv1d_flag = std::string(key) == "fan_in_fan_out" && Conv1D();
      if (truthy(key) && !conv1d_flag) refused.push_back(absl::StrCat(key, " = ", c[key].dump()));
    }
    if (c.contains("bias") && c["bias"] != "none") refused.push_back(absl::StrCat("bias = ", c["bias"].dump()));
    if (!refused.empty()) {
      return absl::UnimplementedError(absl::StrCat(config_path, ": not supported: ", absl::StrJoin(refused, "; ")));
    }
    POSTTRAIN_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open((fs::path(dir) / "adapter_model.safetensors").string()));
    c10::NoGradGuard no_grad;
    std::set<std::string> expected;
    for (auto& [name, param] : NamedParameters()) {
      expected.insert(name);
      absl::StatusOr<at::Tensor> t = file.Get(name);
      if (!t.ok()) return absl::DataLossError(absl::StrCat(dir, ": adapter_model.safetensors lacks '", name, "'"));
      if (t->sizes() != param.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(dir, ": '", name, "' has shape [", absl::StrJoin(t->sizes(), ", "),
                                                       "], expected [", absl::StrJoin(param.sizes(), ", "), "]"));
      }
      param.copy_(*t);
    }
    const std::vector<std::string> saved_modules = ModulesToSave();
    for (const auto& [name, param] : base.named_parameters()) {
      if (std::find(saved_modules.begin(), saved_modules.end(), name) == saved_modules.end()) continue;
      expected.insert("base_model.model." + CheckpointName(name));
      POSTTRAIN_ASSIGN_OR_RETURN(at::Tensor t, file.Get("base_model.model." + CheckpointName(name)));
      if (t.sizes() != param.sizes()) return absl::InvalidArgumentError(absl::StrCat(dir, ": '", name, "' has the wrong shape"));
      at::Tensor(param).copy_(t);
    }
    for (const SafetensorsEntry& e : file.entries()) {
      if (!expected.count(e.name)) {
        return absl::InvalidArgumentError(absl::StrCat(dir, ": adapter_model.safetensors holds '", e.name,
                                                       "', which this adapter's config does not target"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status MergeInto(CausalLM& model) const override {
    c10::NoGradGuard no_grad;
    std::map<std::string, at::Tensor> by_name(model.named_parameters().begin(), model.named_parameters().end());
    for (std::int64_t layer = 0; layer < static_cast<std::int64_t>(modules_.size()); ++layer) {
      for (const Module& m : modules_[static_cast<size_t>(layer)]) {
        for (size_t k = 0; k < m.module.parts.size(); ++k) {
          // In float64, rounded once into the weight's dtype: the merged weight is the
          // nearest one to W + s·BA.
          POSTTRAIN_ASSIGN_OR_RETURN(const PartUpdate u, UpdateOfPart(by_name, layer, m, k));
          at::Tensor w = u.weight;
          const at::Tensor merged = Merged(m, u.slot, w, at::kDouble);
          if (!merged.isfinite().all().item<bool>()) {
            return absl::InvalidArgumentError(absl::StrCat("merge: the adapter's update of '", u.name, "' is not finite"));
          }
          w.copy_(merged.to(w.scalar_type()));
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  struct Module {
    at::Tensor a, b;   // [r, in], [out, r]
    at::Tensor magnitude;  // use_dora: [out] (the checkpoint's row order), else undefined
    std::string name;  // base_model.model.model.layers.<i>.<module path> (GPT-NeoX: ...gpt_neox.layers.<i>...)
    LinearModule module;
  };
  // Where a projection's term comes from: rows [row_offset, row_offset + rows) of
  // module `module`'s B (all of them unless fused); -1: not adapted.
  // GPT-NeoX's query_key_value interleaves q, k, v by head (in the checkpoint and
  // in PEFT's B): there a projection's rows of B are `rows_index`, not a block.
  struct Slot {
    int module = -1;
    std::int64_t row_offset = 0, rows = 0;
    at::Tensor rows_index;  // int64 [rows], or undefined: the block above
  };

  // The rows of B that part k of `module` takes where the module groups its rows by
  // head (LinearModule::head_groups): in each group, the part's share at its share of
  // the offset; else undefined (the part's block of rows).
  at::Tensor InterleavedRows(const LinearModule& module, size_t k, const at::TensorOptions& options) const {
    const std::int64_t groups = module.head_groups;
    if (groups <= 0) return at::Tensor();
    const LinearModule::Part& part = module.parts[k];
    const at::Tensor rows = at::arange(module.out_features, at::TensorOptions().dtype(at::kLong)).view({groups, -1});
    return rows.narrow(1, part.row_offset / groups, part.rows / groups).reshape({-1}).to(options.device());
  }

  // A base tensor's name in the model's checkpoints (GPT-NeoX: embed_out.weight for
  // lm_head.weight, ...), which PEFT's modules_to_save use; and its module's path.
  std::string CheckpointName(const std::string& name) const { return CheckpointNameOf(config_, name); }
  // Whether the model's linear modules are Conv1D (GPT-2).
  bool Conv1D() const {
    const std::vector<LinearModule> modules = LinearModules(config_);
    return !modules.empty() && modules.front().conv1d;
  }
  std::string ModulePath(const std::string& name) const {
    const std::string theirs = CheckpointName(name);
    return theirs.substr(0, theirs.rfind('.'));
  }

  // Part k of module m of decoder layer `layer` against the model's tensors by name
  // (the model holds each projection of a fused module, Phi-3's qkv_proj, apart): the
  // projection's weight and name, and its rows of B (Slot).
  struct PartUpdate {
    std::string name;
    at::Tensor weight;
    Slot slot;
  };
  absl::StatusOr<PartUpdate> UpdateOfPart(const std::map<std::string, at::Tensor>& by_name, std::int64_t layer,
                                          const Module& m, size_t k) const {
    const LinearModule::Part& part = m.module.parts[k];
    PartUpdate u;
    u.name = absl::StrCat("model.layers.", layer, ".", LinearSiteModule(part.site), ".weight");
    auto it = by_name.find(u.name);
    if (it == by_name.end()) return absl::InternalError(absl::StrCat("lora: the model has no '", u.name, "'"));
    u.weight = it->second;
    u.slot = Slot{0, part.row_offset, part.rows, InterleavedRows(m.module, k, m.b.options().dtype(at::kLong))};
    return u;
  }

  // PEFT's merge of module m's rows `slot` into their base weight w [rows, in],
  // computed in `compute`: W + scaling · BA; with DoRA (and `magnitudes`), each row
  // then times its magnitude over its norm, g ⊙ (W + scaling · BA), g = m / ||W +
  // scaling · BA||. On w's device.
  at::Tensor Merged(const Module& m, const Slot& slot, const at::Tensor& w, at::ScalarType compute,
                    bool magnitudes = true) const {
    const at::Tensor delta = at::matmul(RowsOf(m, slot).to(compute), m.a.to(compute)) * scaling_;
    at::Tensor merged = w.to(compute) + delta.to(w.device());
    if (dora_ && magnitudes) {
      const at::Tensor norm = at::linalg_vector_norm(merged, 2, at::IntArrayRef{1}, true, c10::nullopt);
      merged = merged * (MagnitudeOf(m, slot).to(w.device(), compute).unsqueeze(1) / norm);
    }
    return merged;
  }

  const Slot* SlotOf(std::int64_t layer, LinearSite site) const {
    if (layer < 0 || layer >= static_cast<std::int64_t>(slots_.size())) return nullptr;
    const Slot& slot = slots_[static_cast<size_t>(layer)][static_cast<int>(site)];
    return slot.module < 0 ? nullptr : &slot;
  }

  // The magnitudes of a projection's rows (as RowsOf takes B's).
  static at::Tensor MagnitudeOf(const Module& m, const Slot& slot) {
    if (slot.rows_index.defined()) return m.magnitude.index_select(0, slot.rows_index.to(m.magnitude.device()));
    return m.magnitude.narrow(0, slot.row_offset, slot.rows);
  }

  static at::Tensor RowsOf(const Module& m, const Slot& slot) {
    if (slot.rows_index.defined()) return m.b.index_select(0, slot.rows_index.to(m.b.device()));
    return slot.row_offset == 0 && slot.rows == m.b.size(0) ? m.b : m.b.narrow(0, slot.row_offset, slot.rows);
  }

  std::int64_t r_ = 8;
  double alpha_ = 8, dropout_ = 0, scaling_ = 1;
  std::vector<std::string> targets_, modules_to_save_;
  bool rslora_ = false, init_ = true, training_ = true, dora_ = false;
  bool initialized_ = false;  // Initialize ran (DoRA's magnitudes are set)
  ModelConfig config_;
  std::vector<std::vector<Module>> modules_;  // per decoder layer, the adapted ones
  std::vector<std::array<Slot, kNumLinearSites>> slots_;  // per decoder layer, by LinearSite
  std::int64_t count_ = 0;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_ADAPTER("lora", posttrain::LoraAdapter);
POSTTRAIN_PLUGIN("posttrain_adapter_lora");
