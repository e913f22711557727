#include "posttrain/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"

namespace posttrain {
namespace {

template <typename T>
absl::Status Read(const nlohmann::json& json, const char* key, T* out) {
  if (!json.contains(key) || json[key].is_null()) return absl::OkStatus();
  // No silent conversions: 64.5 is not a layer count, "true" not a flag.
  const nlohmann::json& v = json[key];
  const bool fits = std::is_same_v<T, bool>       ? v.is_boolean()
                    : std::is_integral_v<T>       ? v.is_number_integer()
                    : std::is_floating_point_v<T> ? v.is_number()
                                                  : v.is_string();
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: \"", key, "\" must be ",
                                                   std::is_same_v<T, bool>       ? "a boolean"
                                                   : std::is_integral_v<T>       ? "an integer"
                                                   : std::is_floating_point_v<T> ? "a number"
                                                                                 : "a string",
                                                   ", got ", v.dump()));
  }
  try {
    *out = v.get<T>();
  } catch (const nlohmann::json::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: \"", key, "\" has the wrong type (", json[key].dump(), ")"));
  }
  return absl::OkStatus();
}

// The scaling part of rope_scaling (transformers 4) or rope_parameters (5): the
// type under "rope_type" (or the older "type") and its fields; "default" is none.
absl::Status ReadRopeScaling(const nlohmann::json& rs, const char* where, std::optional<RopeScaling>* out) {
  RopeScaling s;
  const nlohmann::json* type = rs.contains("rope_type") ? &rs["rope_type"] : rs.contains("type") ? &rs["type"] : nullptr;
  if (type != nullptr && !type->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", where, ".rope_type must be a string, got ", type->dump()));
  }
  s.rope_type = type != nullptr ? type->get<std::string>() : "default";
  if (s.rope_type == "su") s.rope_type = "longrope";  // Phi-3's first name for it
  if (s.rope_type != "llama3" && s.rope_type != "linear" && s.rope_type != "default" && s.rope_type != "longrope" &&
      s.rope_type != "yarn" && s.rope_type != "dynamic") {
    return absl::UnimplementedError(absl::StrCat("config.json: ", where, " type \"", s.rope_type,
                                                 "\" is not supported (supported: default, llama3, linear, longrope, yarn, dynamic)"));
  }
  if (s.rope_type == "yarn" || s.rope_type == "dynamic") {
    if (!rs.contains("factor") || !rs["factor"].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", where, " (", s.rope_type, ") needs factor, a number"));
    }
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "factor", &s.factor));
    if (!(s.factor > 0) || !std::isfinite(s.factor)) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", where, " (", s.rope_type, ") needs factor > 0, got ", s.factor));
    }
  }
  if (s.rope_type == "yarn") {
    // transformers' _compute_yarn_parameters: `get(key) or default` for the betas,
    // the attention factor from the paper's mscale unless given.
    s.original_max_position_embeddings = 0;  // unset: max_position_embeddings
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "original_max_position_embeddings", &s.original_max_position_embeddings));
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "beta_fast", &s.beta_fast));
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "beta_slow", &s.beta_slow));
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "truncate", &s.truncate));
    if (s.beta_fast == 0) s.beta_fast = 32.0;
    if (s.beta_slow == 0) s.beta_slow = 1.0;
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "mscale", &s.mscale));
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "mscale_all_dim", &s.mscale_all_dim));
    if (!std::isfinite(s.mscale) || !std::isfinite(s.mscale_all_dim)) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", where, " (yarn) needs finite mscale and mscale_all_dim"));
    }
    auto mscale_factor = [&](double m) { return s.factor <= 1.0 ? 1.0 : 0.1 * m * std::log(s.factor) + 1.0; };
    s.attention_factor = s.mscale != 0 && s.mscale_all_dim != 0 ? mscale_factor(s.mscale) / mscale_factor(s.mscale_all_dim)
                                                                : mscale_factor(1.0);
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "attention_factor", &s.attention_factor));
    if (!(s.beta_fast > 0) || !(s.beta_slow > 0) || !std::isfinite(s.beta_fast) || !std::isfinite(s.beta_slow) ||
        !(s.attention_factor > 0) || !std::isfinite(s.attention_factor) || s.original_max_position_embeddings < 0 ||
        s.original_max_position_embeddings == 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config.json: ", where, " (yarn) needs positive beta_fast, beta_slow and attention_factor and "
          "original_max_position_embeddings > 1; got beta_fast ", s.beta_fast, ", beta_slow ", s.beta_slow,
          ", attention_factor ", s.attention_factor, ", original_max_position_embeddings ", s.original_max_position_embeddings));
    }
    *out = s;
  } else if (s.rope_type == "dynamic") {
    *out = s;
  }
  if (s.rope_type == "longrope") {
    // Completed by FinishLongRope once head_dim and the context lengths are known;
    // 0 marks factor, attention_factor and original_max_position_embeddings unset.
    s.factor = 0;
    s.attention_factor = 0;
    s.original_max_position_embeddings = 0;
    for (auto [key, factors] : {std::pair{"short_factor", &s.short_factor}, std::pair{"long_factor", &s.long_factor}}) {
      if (!rs.contains(key) || !rs[key].is_array()) {
        return absl::InvalidArgumentError(absl::StrCat("config.json: ", where, " (longrope) needs ", key, ", a list of numbers"));
      }
      for (const nlohmann::json& f : rs[key]) {
        if (!f.is_number() || !(f.get<double>() > 0) || !std::isfinite(f.get<double>())) {
          return absl::InvalidArgumentError(absl::StrCat("config.json: ", where, ".", key, " must hold positive numbers, got ", f.dump()));
        }
        factors->push_back(f.get<double>());
      }
    }
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "factor", &s.factor));
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "attention_factor", &s.attention_factor));
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "original_max_position_embeddings", &s.original_max_position_embeddings));
    *out = s;
  }
  if (s.rope_type == "linear") {  // positions divided by factor (transformers' _compute_linear_scaling_rope_parameters)
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "factor", &s.factor));
    if (!(s.factor > 0) || !std::isfinite(s.factor)) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", where, " (linear) needs factor > 0, got ", s.factor));
    }
    *out = s;
  } else if (s.rope_type == "llama3") {
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "factor", &s.factor));
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "low_freq_factor", &s.low_freq_factor));
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "high_freq_factor", &s.high_freq_factor));
    POSTTRAIN_RETURN_IF_ERROR(Read(rs, "original_max_position_embeddings", &s.original_max_position_embeddings));
    if (!(s.factor > 0) || !(s.low_freq_factor > 0) || !(s.high_freq_factor > s.low_freq_factor) ||
        s.original_max_position_embeddings <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config.json: ", where, " (llama3) needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
          "original_max_position_embeddings > 0; got factor ", s.factor, ", low_freq_factor ", s.low_freq_factor,
          ", high_freq_factor ", s.high_freq_factor, ", original_max_position_embeddings ", s.original_max_position_embeddings));
    }
    *out = s;
  }
  return absl::OkStatus();
}

// longrope's defaults as transformers' _compute_longrope_parameters takes them:
// original_max_position_embeddings from the config's top level (Phi-3) if not in
// the scaling object, else max_position_embeddings; factor = max_position_embeddings
// / original unless given; attention_factor = sqrt(1 + ln factor / ln original)
// (1 for factor <= 1) unless given. One short and one long factor per frequency.
absl::Status FinishLongRope(const nlohmann::json& json, ModelConfig* c) {
  if (!c->rope_scaling || c->rope_scaling->rope_type != "longrope") return absl::OkStatus();
  RopeScaling& s = *c->rope_scaling;
  if (s.original_max_position_embeddings == 0) {
    s.original_max_position_embeddings = c->max_position_embeddings;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "original_max_position_embeddings", &s.original_max_position_embeddings));
  }
  if (s.original_max_position_embeddings <= 1) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: longrope needs original_max_position_embeddings > 1, got ",
                                                   s.original_max_position_embeddings));
  }
  if (s.factor == 0) s.factor = static_cast<double>(c->max_position_embeddings) / static_cast<double>(s.original_max_position_embeddings);
  if (!(s.factor > 0) || !std::isfinite(s.factor)) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: longrope factor must be positive, got ", s.factor));
  }
  if (s.attention_factor == 0) {
    s.attention_factor = s.factor <= 1.0 ? 1.0
                                         : std::sqrt(1.0 + std::log(s.factor) /
                                                               std::log(static_cast<double>(s.original_max_position_embeddings)));
  }
  if (!(s.attention_factor > 0) || !std::isfinite(s.attention_factor)) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: longrope attention_factor must be positive, got ", s.attention_factor));
  }
  const auto half = static_cast<size_t>(c->rotary_dim() / 2);
  if (s.short_factor.size() != half || s.long_factor.size() != half) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: longrope needs rotary_dim / 2 = ", half,
                                                   " short_factor and long_factor entries, got ", s.short_factor.size(),
                                                   " and ", s.long_factor.size()));
  }
  return absl::OkStatus();
}

// A dropout probability (see ModelConfig::attention_dropout): a number in [0, 1].
absl::Status ReadProbability(const nlohmann::json& json, const char* key, double* out) {
  POSTTRAIN_RETURN_IF_ERROR(Read(json, key, out));
  if (!(*out >= 0 && *out <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: \"", key, "\" must be a probability in [0, 1], got ", *out));
  }
  return absl::OkStatus();
}

// Fields a family's config class does not have, which transformers keeps in
// config.json as extra attributes and its model never reads (TRL's tiny models pass
// num_key_value_heads and intermediate_size to every family's config): erased, so
// that the family's own fields decide.
void EraseFieldsNotOfTheFamily(std::initializer_list<const char*> keys, nlohmann::json* json) {
  for (const char* key : keys) json->erase(key);
}

// GPT-2's (or GPT-J's) config.json under the names the rest of FromJson reads
// (GPT2Config's and GPTJConfig's attribute_map, whose common names, when present,
// win as transformers sets them last; their own layer_norm_epsilon,
// activation_function, and n_inner: null means 4 · n_embd, whatever an extra
// intermediate_size says).
absl::StatusOr<nlohmann::json> Gpt2FieldsUnderCommonNames(const nlohmann::json& in, const char* family = "GPT-2") {
  nlohmann::json out = in;
  for (const auto& [theirs, ours] : {std::pair{"n_embd", "hidden_size"}, {"n_layer", "num_hidden_layers"},
                                     {"n_head", "num_attention_heads"}, {"n_positions", "max_position_embeddings"}}) {
    if (in.contains(theirs) && !in.contains(ours)) out[ours] = in[theirs];
    if (!out.contains(ours) && std::string(theirs) != "n_positions") {
      return absl::InvalidArgumentError(absl::StrCat("config.json lacks \"", theirs, "\" (", family, "'s ", ours, ")"));
    }
  }
  EraseFieldsNotOfTheFamily({"rms_norm_eps", "hidden_act", "intermediate_size", "num_key_value_heads", "head_dim"}, &out);
  for (const auto& [theirs, ours] : {std::pair{"layer_norm_epsilon", "rms_norm_eps"}, {"activation_function", "hidden_act"}}) {
    if (in.contains(theirs)) out[ours] = in[theirs];
  }
  if (in.contains("n_inner") && !in["n_inner"].is_null()) {
    out["intermediate_size"] = in["n_inner"];
  } else if (out["hidden_size"].is_number_integer() && out["hidden_size"].get<std::int64_t>() > 0 &&
             out["hidden_size"].get<std::int64_t>() < (std::int64_t{1} << 40)) {
    out["intermediate_size"] = 4 * out["hidden_size"].get<std::int64_t>();
  } else {
    out["intermediate_size"] = out["hidden_size"];  // as invalid as it is: the checks below name it
  }
  return out;
}

// OPT's config.json under the names the rest of FromJson reads (OPTConfig: ffn_dim,
// 3072 when absent; activation_function; init_std; dropout). OPTConfig has no
// attribute_map: common names of its own fields are extras and ignored.
nlohmann::json OptFieldsUnderCommonNames(const nlohmann::json& in) {
  nlohmann::json out = in;
  EraseFieldsNotOfTheFamily({"intermediate_size", "hidden_act", "initializer_range", "rms_norm_eps", "num_key_value_heads",
                             "head_dim"}, &out);
  out["intermediate_size"] = in.contains("ffn_dim") ? in["ffn_dim"] : nlohmann::json(3072);
  for (const auto& [theirs, ours] : {std::pair{"activation_function", "hidden_act"}, {"init_std", "initializer_range"}}) {
    if (in.contains(theirs)) out[ours] = in[theirs];
  }
  return out;
}

// GPT-NeoX's config.json as the rest of FromJson reads it: GPTNeoXConfig has no
// num_key_value_heads nor head_dim (every head has its key and value; hidden_size /
// num_attention_heads wide).
nlohmann::json NeoxFields(const nlohmann::json& in) {
  nlohmann::json out = in;
  EraseFieldsNotOfTheFamily({"num_key_value_heads", "head_dim"}, &out);
  return out;
}

// BLOOM's config.json under the names the rest of FromJson reads (BloomConfig: n_layer,
// n_head, n_embed before hidden_size, layer_norm_epsilon, hidden_dropout; the MLP is
// always 4 hidden_size wide, whatever n_inner says, as BloomMLP has it).
absl::StatusOr<nlohmann::json> BloomFieldsUnderCommonNames(const nlohmann::json& in) {
  nlohmann::json out = in;
  for (const auto& [theirs, ours] : {std::pair{"n_embed", "hidden_size"}, {"n_layer", "num_hidden_layers"},
                                     {"n_head", "num_attention_heads"}, {"layer_norm_epsilon", "rms_norm_eps"}}) {
    if (in.contains(theirs) && !in.contains(ours)) out[ours] = in[theirs];
  }
  for (const char* key : {"num_hidden_layers", "num_attention_heads", "hidden_size"}) {
    if (!out.contains(key)) return absl::InvalidArgumentError(absl::StrCat("config.json lacks \"", key, "\" (BLOOM's ",
                                                                     std::string(key) == "hidden_size" ? "hidden_size or n_embed"
                                                                     : std::string(key) == "num_hidden_layers" ? "n_layer" : "n_head", ")"));
  }
  if (out["hidden_size"].is_number_integer() && out["hidden_size"].get<std::int64_t>() > 0 &&
      out["hidden_size"].get<std::int64_t>() < (std::int64_t{1} << 40)) {
    out["intermediate_size"] = 4 * out["hidden_size"].get<std::int64_t>();
  } else {
    out["intermediate_size"] = out["hidden_size"];  // as invalid as it is: the checks below name it
  }
  out.erase("num_key_value_heads");  // BloomAttention has one key/value head per query head
  out.erase("head_dim");
  return out;
}

// Falcon's config.json under the names the rest of FromJson reads (FalconConfig:
// n_embed / n_head / n_layer of its first configs; layer_norm_epsilon; activation
// ("gelu"); ffn_hidden_size, 4 hidden_size when null; the key/value heads its
// attention uses: num_kv_heads (the heads when null) with new_decoder_architecture,
// else one with multi_query (true by default), else one per head).
absl::StatusOr<nlohmann::json> FalconFieldsUnderCommonNames(const nlohmann::json& in) {
  nlohmann::json out = in;
  EraseFieldsNotOfTheFamily({"num_key_value_heads", "head_dim", "intermediate_size", "hidden_act", "rms_norm_eps",
                             "attention_bias"}, &out);
  for (const auto& [theirs, ours, fallback] : {std::tuple{"n_embed", "hidden_size", 4544}, {"n_head", "num_attention_heads", 71},
                                              {"n_layer", "num_hidden_layers", 32}}) {
    if (in.contains(theirs) && !in[theirs].is_null()) out[ours] = in[theirs];
    if (!out.contains(ours)) out[ours] = fallback;
  }
  if (!out.contains("vocab_size")) out["vocab_size"] = 65024;
  if (in.contains("layer_norm_epsilon")) out["rms_norm_eps"] = in["layer_norm_epsilon"];
  out["hidden_act"] = in.contains("activation") ? in["activation"] : nlohmann::json("gelu");
  const nlohmann::json& hidden = out["hidden_size"];
  if (in.contains("ffn_hidden_size") && !in["ffn_hidden_size"].is_null()) {
    out["intermediate_size"] = in["ffn_hidden_size"];
  } else {
    out["intermediate_size"] = hidden.is_number_integer() && hidden.get<std::int64_t>() > 0 &&
                                       hidden.get<std::int64_t>() < (std::int64_t{1} << 40)
                                   ? nlohmann::json(4 * hidden.get<std::int64_t>())
                                   : hidden;  // as invalid as it is: the checks below name it
  }
  bool new_architecture = false, multi_query = true;
  POSTTRAIN_RETURN_IF_ERROR(Read(in, "new_decoder_architecture", &new_architecture));
  POSTTRAIN_RETURN_IF_ERROR(Read(in, "multi_query", &multi_query));
  if (new_architecture) {
    out["num_key_value_heads"] = in.contains("num_kv_heads") && !in["num_kv_heads"].is_null() ? in["num_kv_heads"]
                                                                                            : out["num_attention_heads"];
  } else {
    out["num_key_value_heads"] = multi_query ? nlohmann::json(1) : out["num_attention_heads"];
  }
  out.erase("hidden_dropout");  // read from the file itself
  return out;
}

// GPT-Neo's config.json under the names the rest of FromJson reads (GPTNeoConfig:
// num_layers and num_heads under its attribute_map's common names, which win when
// present; layer_norm_epsilon, activation_function; intermediate_size null means
// 4 · hidden_size; window_size and attention_types, whose expansion
// (attention_layers, which wins when config.json holds it, as transformers sets it
// last) marks each layer "global" or "local": a local layer attends to the last
// window_size keys, as layer_types' sliding_attention).
absl::StatusOr<nlohmann::json> GptNeoFieldsUnderCommonNames(const nlohmann::json& in) {
  nlohmann::json out = in;
  EraseFieldsNotOfTheFamily({"rms_norm_eps", "hidden_act", "num_key_value_heads", "head_dim", "sliding_window", "layer_types",
                             "use_sliding_window", "rope_theta", "rope_scaling", "rope_parameters", "attention_bias"}, &out);
  for (const auto& [theirs, ours, fallback] :
       {std::tuple{"num_layers", "num_hidden_layers", 24}, {"num_heads", "num_attention_heads", 16}}) {
    if (!out.contains(ours)) out[ours] = in.contains(theirs) ? in[theirs] : nlohmann::json(fallback);
  }
  for (const auto& [key, fallback] : {std::pair{"hidden_size", 2048}, {"max_position_embeddings", 2048}, {"vocab_size", 50257}}) {
    if (!out.contains(key)) out[key] = fallback;
  }
  for (const auto& [theirs, ours] : {std::pair{"layer_norm_epsilon", "rms_norm_eps"}, {"activation_function", "hidden_act"}}) {
    if (in.contains(theirs)) out[ours] = in[theirs];
  }
  if (!in.contains("intermediate_size") || in["intermediate_size"].is_null()) {
    const nlohmann::json& hidden = out["hidden_size"];
    out["intermediate_size"] = hidden.is_number_integer() && hidden.get<std::int64_t>() > 0 &&
                                       hidden.get<std::int64_t>() < (std::int64_t{1} << 40)
                                   ? nlohmann::json(4 * hidden.get<std::int64_t>())
                                   : hidden;  // as invalid as it is: the checks below name it
  }
  // attention_types: [[["global", "local"], 12]] → one type per layer.
  std::vector<std::string> layers;
  if (in.contains("attention_layers") && !in["attention_layers"].is_null()) {
    if (!in["attention_layers"].is_array()) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: attention_layers must be a list of \"global\" / \"local\", got ",
                                                     in["attention_layers"].dump()));
    }
    for (const nlohmann::json& t : in["attention_layers"]) layers.push_back(t.is_string() ? t.get<std::string>() : t.dump());
  } else {
    const nlohmann::json types = in.contains("attention_types") ? in["attention_types"]
                                                                : nlohmann::json::parse(R"([[["global", "local"], 12]])");
    const std::string expected = "config.json: attention_types must be a list of [[types...], repeats], got ";
    if (!types.is_array()) return absl::InvalidArgumentError(absl::StrCat(expected, types.dump()));
    for (const nlohmann::json& item : types) {
      if (!item.is_array() || item.size() != 2 || !item[0].is_array() || !item[1].is_number_integer() ||
          item[1].get<std::int64_t>() < 0 || item[1].get<std::int64_t>() > (std::int64_t{1} << 16)) {
        return absl::InvalidArgumentError(absl::StrCat(expected, types.dump()));
      }
      for (std::int64_t r = 0; r < item[1].get<std::int64_t>() && layers.size() <= (size_t{1} << 16); ++r) {
        for (const nlohmann::json& t : item[0]) layers.push_back(t.is_string() ? t.get<std::string>() : t.dump());
      }
    }
  }
  nlohmann::json layer_types = nlohmann::json::array();
  for (const std::string& t : layers) {
    if (t != "global" && t != "local") {
      return absl::InvalidArgumentError(absl::StrCat("config.json: GPT-Neo's attention types are \"global\" and \"local\", got ", t));
    }
    layer_types.push_back(t == "local" ? "sliding_attention" : "full_attention");
  }
  if (!out["num_hidden_layers"].is_number_integer() || static_cast<std::int64_t>(layers.size()) != out["num_hidden_layers"].get<std::int64_t>()) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: attention_types give ", layers.size(), " layers, num_layers is ",
                                                   out["num_hidden_layers"].dump(), " (GPTNeoConfig requires them equal)"));
  }
  out["layer_types"] = layer_types;
  out["sliding_window"] = in.contains("window_size") ? in["window_size"] : nlohmann::json(256);
  for (const char* key : {"resid_dropout", "embed_dropout"}) out.erase(key);  // read from the file itself
  return out;
}

// DBRX's config.json under the names the rest of FromJson reads (DbrxConfig:
// d_model, n_heads, n_layers, max_seq_len under its attribute_map's common names,
// which win when present as transformers sets them last; attn_config's kv_n_heads,
// rope_theta and attn_pdrop; ffn_config's ffn_hidden_size, moe_num_experts,
// moe_top_k, moe_loss_weight and ffn_act_fn's name; every default DbrxConfig's).
// The top-level num_key_value_heads, intermediate_size and hidden_act a config may
// carry are extras DbrxForCausalLM never reads. clip_qkv,
// moe_normalize_expert_weights and moe_jitter_eps are read by ReadDbrx.
absl::StatusOr<nlohmann::json> DbrxFieldsUnderCommonNames(const nlohmann::json& in) {
  nlohmann::json out = in;
  EraseFieldsNotOfTheFamily({"intermediate_size", "hidden_act", "num_key_value_heads", "head_dim", "rms_norm_eps",
                             "attention_bias", "rope_theta", "rope_scaling", "rope_parameters", "attention_dropout",
                             "num_local_experts", "num_experts_per_tok", "router_aux_loss_coef"}, &out);
  for (const auto& [theirs, ours, fallback] :
       {std::tuple{"d_model", "hidden_size", 2048}, {"n_heads", "num_attention_heads", 16},
        {"n_layers", "num_hidden_layers", 24}, {"max_seq_len", "max_position_embeddings", 2048}}) {
    if (!out.contains(ours)) out[ours] = in.contains(theirs) ? in[theirs] : nlohmann::json(fallback);
  }
  if (!out.contains("vocab_size")) out["vocab_size"] = 32000;
  for (const char* key : {"attn_config", "ffn_config"}) {
    if (in.contains(key) && !in[key].is_null() && !in[key].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: \"", key, "\" must be an object, got ", in[key].dump()));
    }
  }
  const nlohmann::json none = nlohmann::json::object();
  const nlohmann::json& attn = in.contains("attn_config") && in["attn_config"].is_object() ? in["attn_config"] : none;
  const nlohmann::json& ffn = in.contains("ffn_config") && in["ffn_config"].is_object() ? in["ffn_config"] : none;
  out["num_key_value_heads"] = attn.contains("kv_n_heads") ? attn["kv_n_heads"] : nlohmann::json(1);
  out["rope_theta"] = attn.contains("rope_theta") ? attn["rope_theta"] : nlohmann::json(10000.0);
  if (attn.contains("attn_pdrop")) out["attention_dropout"] = attn["attn_pdrop"];
  out["intermediate_size"] = ffn.contains("ffn_hidden_size") ? ffn["ffn_hidden_size"] : nlohmann::json(3584);
  out["num_local_experts"] = ffn.contains("moe_num_experts") ? ffn["moe_num_experts"] : nlohmann::json(4);
  out["num_experts_per_tok"] = ffn.contains("moe_top_k") ? ffn["moe_top_k"] : nlohmann::json(1);
  out["router_aux_loss_coef"] = ffn.contains("moe_loss_weight") ? ffn["moe_loss_weight"] : nlohmann::json(0.01);
  out["hidden_act"] = "silu";
  if (ffn.contains("ffn_act_fn") && !ffn["ffn_act_fn"].is_null()) {
    const nlohmann::json& act = ffn["ffn_act_fn"];
    if (!act.is_object() || (act.contains("name") && !act["name"].is_string())) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ffn_config.ffn_act_fn must be an object {\"name\": ...}, got ", act.dump()));
    }
    for (const auto& [key, value] : act.items()) {
      if (key != "name") {
        return absl::UnimplementedError(absl::StrCat("config.json: not supported (it changes the model's maths): ffn_config.ffn_act_fn.",
                                                     key, " = ", value.dump(), " (arguments of the experts' activation)"));
      }
    }
    if (act.contains("name")) out["hidden_act"] = act["name"];
  }
  if (in.contains("tie_word_embeddings") && in["tie_word_embeddings"] == true) {
    return absl::InvalidArgumentError("config.json: tie_word_embeddings = true is not supported for DBRX models (DbrxConfig refuses it)");
  }
  out["tie_word_embeddings"] = false;
  for (const char* key : {"resid_pdrop", "emb_pdrop"}) {  // read by ReadDbrx
    out.erase(key);
  }
  return out;
}

// DBRX's own fields (ModelConfig::dbrx): its LayerNorms, the clamp of q/k/v, the
// experts' weights' p-norm, the router's jitter, its dropouts.
absl::Status ReadDbrx(const nlohmann::json& file, ModelConfig* c) {
  c->dbrx = true;
  c->layer_norm = true;
  c->layer_norm_bias = false;  // nn.LayerNorm(d_model, bias=False), eps 1e-5
  c->rms_norm_eps = 1e-5;
  const nlohmann::json none = nlohmann::json::object();
  const nlohmann::json& attn = file.contains("attn_config") && file["attn_config"].is_object() ? file["attn_config"] : none;
  const nlohmann::json& ffn = file.contains("ffn_config") && file["ffn_config"].is_object() ? file["ffn_config"] : none;
  if (attn.contains("clip_qkv") && !attn["clip_qkv"].is_null()) {
    POSTTRAIN_RETURN_IF_ERROR(Read(attn, "clip_qkv", &c->clip_qkv));
    if (!(c->clip_qkv > 0) || !std::isfinite(c->clip_qkv)) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: attn_config.clip_qkv must be a positive number or null, got ",
                                                     attn["clip_qkv"].dump()));
    }
  }
  c->norm_topk_prob = true;
  if (ffn.contains("moe_normalize_expert_weights")) {
    if (ffn["moe_normalize_expert_weights"].is_null()) {
      c->norm_topk_prob = false;
    } else {
      POSTTRAIN_RETURN_IF_ERROR(Read(ffn, "moe_normalize_expert_weights", &c->topk_norm_p));
      if (!(c->topk_norm_p > 0) || !std::isfinite(c->topk_norm_p)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "config.json: ffn_config.moe_normalize_expert_weights must be a positive number (the p of the p-norm) or null, got ",
            ffn["moe_normalize_expert_weights"].dump()));
      }
    }
  }
  if (ffn.contains("moe_jitter_eps") && !ffn["moe_jitter_eps"].is_null()) {
    POSTTRAIN_RETURN_IF_ERROR(Read(ffn, "moe_jitter_eps", &c->router_jitter_eps));
    if (!(c->router_jitter_eps >= 0 && c->router_jitter_eps < 1)) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ffn_config.moe_jitter_eps must be in [0, 1) or null, got ",
                                                     ffn["moe_jitter_eps"].dump()));
    }
  }
  if (ffn.contains("uniform_expert_assignment") && ffn["uniform_expert_assignment"] == true) {
    return absl::UnimplementedError("config.json: not supported (it changes the model's maths): ffn_config.uniform_expert_assignment = true");
  }
  POSTTRAIN_RETURN_IF_ERROR(ReadProbability(file, "resid_pdrop", &c->residual_dropout));
  POSTTRAIN_RETURN_IF_ERROR(ReadProbability(file, "emb_pdrop", &c->embedding_dropout));
  return absl::OkStatus();
}

// Fields of other architectures' configs that change the forward maths when set to
// anything but their neutral value: refused by name rather than silently ignored.
absl::Status RefuseMathChangingFields(const nlohmann::json& json, const std::string& model_type) {
  auto set = [&](const char* key) { return json.contains(key) && !json[key].is_null(); };
  auto nonzero = [&](const char* key) {
    return set(key) && json[key].is_number() && json[key].get<double>() != 0.0;
  };
  std::vector<std::string> refused;
  if (set("mlp_bias") && json["mlp_bias"].is_boolean() && json["mlp_bias"].get<bool>()) refused.push_back("mlp_bias = true (biases on the MLP projections)");
  // Dropout the family applies is read (ModelConfig::attention_dropout and after);
  // a field of another family's is refused.
  for (const char* key : {"hidden_dropout", "resid_pdrop", "embd_pdrop", "residual_dropout", "embedding_dropout"}) {
    const std::string k = key;
    const bool read = ((model_type == "gpt_neox" || model_type == "bloom" || model_type == "falcon") && k == "hidden_dropout") ||
                      ((model_type == "gpt2" || model_type == "gptj" || model_type == "phi") && (k == "resid_pdrop" || k == "embd_pdrop")) ||
                      (model_type == "starcoder2" && (k == "residual_dropout" || k == "embedding_dropout"));
    if (nonzero(key) && !read) refused.push_back(absl::StrCat(key, " = ", json[key].dump(), " (dropout in training)"));
  }
  if (model_type != "phi3" && model_type != "gpt_neox" && model_type != "phi" && model_type != "stablelm" &&
      model_type != "glm4_moe" && set("partial_rotary_factor") && json["partial_rotary_factor"].is_number() &&
      json["partial_rotary_factor"].get<double>() != 1.0) {
    refused.push_back(absl::StrCat("partial_rotary_factor = ", json["partial_rotary_factor"].dump(), " (RoPE on part of each head)"));
  }
  for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar", "logits_scaling",
                          "embedding_multiplier", "residual_multiplier", "attention_multiplier"}) {
    const bool gemma2_field = std::string(key) != "logits_scaling" && std::string(key).find("multiplier") == std::string::npos;
    if (set(key) && !(gemma2_field && (model_type == "gemma2" || model_type == "gemma3_text")) &&
        !(!gemma2_field && model_type == "granite")) {
      refused.push_back(absl::StrCat(key, " = ", json[key].dump()));
    }
  }
  if (model_type != "cohere" && model_type != "cohere2" && set("logit_scale")) refused.push_back(absl::StrCat("logit_scale = ", json["logit_scale"].dump()));
  if (model_type != "cohere" && model_type != "glm4_moe" && set("use_qk_norm") && json["use_qk_norm"] != false) {
    refused.push_back(absl::StrCat("use_qk_norm = ", json["use_qk_norm"].dump(), model_type == "cohere2" ? " (Cohere2Attention has no q/k norm)" : " (Cohere's LayerNorm of q and k)"));
  }
  if (model_type != "olmo" && set("clip_qkv")) refused.push_back(absl::StrCat("clip_qkv = ", json["clip_qkv"].dump(), " (OLMo's clamp of q, k and v)"));
  // Mixtures of experts: Mixtral's num_local_experts and Qwen-MoE's num_experts are
  // read (ReadMixtureOfExperts), and GLM-4.5's and DeepSeek-V3's n_routed_experts; anywhere else refused.
  const bool qwen_moe = model_type == "qwen2_moe" || model_type == "qwen3_moe";
  for (const char* key : {"num_experts", "num_local_experts", "n_routed_experts"}) {
    const bool read = (model_type == "mixtral" && std::string(key) == "num_local_experts") ||
                      (qwen_moe && std::string(key) == "num_experts") ||
                      ((model_type == "glm4_moe" || model_type == "deepseek_v3") && std::string(key) == "n_routed_experts") ||
                      ((model_type == "gpt_oss" || model_type == "dbrx") && std::string(key) == "num_local_experts");
    if (nonzero(key) && !read) refused.push_back(absl::StrCat(key, " = ", json[key].dump(), " (mixture of experts)"));
  }
  // The load-balancing loss of the softmax routers is read (ReadRouterAuxLoss);
  // transformers computes none for the other families.
  const bool balances = model_type == "mixtral" || qwen_moe || model_type == "gpt_oss" || model_type == "dbrx";
  if (!balances && set("output_router_logits") && json["output_router_logits"].is_boolean() &&
      json["output_router_logits"].get<bool>()) {
    refused.push_back(absl::StrCat("output_router_logits = true (", model_type,
                                   " has no router load-balancing loss in transformers)"));
  }
  if (set("quantization_config")) {
    const nlohmann::json& q = json["quantization_config"];
    refused.push_back(absl::StrCat("quantization_config (", q.is_object() && q.contains("quant_method") ? q["quant_method"].dump() : q.dump(),
                                   ": quantized weights; dequantize the checkpoint to bf16 or fp32 first)"));
  }
  if (nonzero("router_jitter_noise")) {
    refused.push_back(absl::StrCat("router_jitter_noise = ", json["router_jitter_noise"].dump(), " (Mixtral's noise on the router input in training)"));
  }
  if (refused.empty()) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat("config.json: not supported (it changes the model's maths): ",
                                               absl::StrJoin(refused, "; ")));
}

// Sliding windows as transformers' configs define them. Mistral and Phi-3:
// sliding_window on every layer. Qwen2/Qwen3: only with use_sliding_window (else sliding_window is
// None), on the layers layer_types marks "sliding_attention", by default those
// with index >= max_window_layers (28). SmolLM3: likewise with use_sliding_window,
// by default on its NoPE layers. Gemma 2: on the layers layer_types marks, by
// default the even ones (0, 2, ...), window 4096 unless set. Gemma 3: likewise,
// by default all but every sliding_window_pattern-th (6) layer. Cohere 2: likewise
// with sliding_window_pattern 4, window 4096 unless set; and only those layers rotate
// q and k (Cohere2Attention applies RoPE only with a window: its full-attention
// layers, and every layer when sliding_window is null, attend without positions).
// Other model types: full attention only.
absl::Status ReadSlidingWindow(const nlohmann::json& json, ModelConfig* c) {
  const bool smollm3 = c->model_type == "smollm3", gemma3 = c->model_type == "gemma3_text";
  const bool gemma2 = c->model_type == "gemma2" || gemma3;  // windows as Gemma 2 has them
  const bool cohere2 = c->model_type == "cohere2";
  const bool gpt_oss = c->model_type == "gpt_oss";  // GptOssConfig: window 128 on even layers (0, 2, ...)
  // Qwen3-MoE: with use_sliding_window, the window on every layer (Qwen3MoeAttention).
  const bool qwen3_moe = c->model_type == "qwen3_moe";
  const bool gpt_neo = c->model_type == "gpt_neo";  // its attention_types, as layer_types (GptNeoFieldsUnderCommonNames)
  const bool per_layer =
      c->model_type == "qwen2" || c->model_type == "qwen3" || c->model_type == "qwen2_moe" || smollm3 || gemma2 || cohere2 ||
      gpt_oss || gpt_neo;
  if ((gemma2 || cohere2) && !json.contains("sliding_window")) c->sliding_window = 4096;  // Gemma2Config's, Gemma3TextConfig's, Cohere2Config's
  if (gpt_oss && !json.contains("sliding_window")) c->sliding_window = 128;
  if (gemma3 && json.contains("sliding_window") && json["sliding_window"].is_null()) {
    return absl::UnimplementedError("config.json: sliding_window = null is not supported for gemma3_text (its windowed layers "
                                    "would keep their own RoPE base without a window)");
  }
  bool used = c->model_type == "mistral" || c->model_type == "phi3" || c->model_type == "mixtral" ||
              c->model_type == "starcoder2" || gemma2 || cohere2 || gpt_oss || gpt_neo;
  if (per_layer || qwen3_moe) POSTTRAIN_RETURN_IF_ERROR(Read(json, "use_sliding_window", &used));
  if (used && json.contains("sliding_window") && !json["sliding_window"].is_null()) {
    std::int64_t w = 0;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "sliding_window", &w));
    if (w <= 0) return absl::InvalidArgumentError(absl::StrCat("config.json: sliding_window must be positive or null, got ", w));
    c->sliding_window = w;
  }
  std::vector<bool> sliding;
  if (json.contains("layer_types") && !json["layer_types"].is_null()) {
    const nlohmann::json& types = json["layer_types"];
    if (!types.is_array() || static_cast<std::int64_t>(types.size()) != c->num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: layer_types must list one type per layer (",
                                                     c->num_hidden_layers, "), got ", types.dump()));
    }
    for (const nlohmann::json& t : types) {
      if (t != "full_attention" && t != "sliding_attention") {
        return absl::UnimplementedError(absl::StrCat("config.json: not supported (it changes the model's maths): layer_types containing ", t.dump()));
      }
      sliding.push_back(t == "sliding_attention");
    }
  } else if ((gemma3 && c->sliding_window) || cohere2) {
    std::int64_t pattern = cohere2 ? 4 : 6;  // Cohere2Config's, Gemma3TextConfig's sliding_window_pattern
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "sliding_window_pattern", &pattern));
    if (pattern <= 0) return absl::InvalidArgumentError(absl::StrCat("config.json: sliding_window_pattern must be positive, got ", pattern));
    for (std::int64_t i = 0; i < c->num_hidden_layers; ++i) sliding.push_back((i + 1) % pattern != 0);
  } else if ((gemma2 || gpt_oss) && c->sliding_window) {
    for (std::int64_t i = 0; i < c->num_hidden_layers; ++i) sliding.push_back(i % 2 == 0);
  } else if (smollm3 && c->sliding_window) {
    for (std::int64_t i = 0; i < c->num_hidden_layers; ++i) sliding.push_back(!c->uses_rope(i));
  } else if (per_layer && c->sliding_window) {
    std::int64_t max_window_layers = 28;  // Qwen2Config / Qwen3Config default
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "max_window_layers", &max_window_layers));
    for (std::int64_t i = 0; i < c->num_hidden_layers; ++i) sliding.push_back(i >= max_window_layers);
  }
  bool any = std::find(sliding.begin(), sliding.end(), true) != sliding.end();
  if (cohere2) {
    std::vector<bool> rope(sliding.size(), false);
    if (c->sliding_window) rope = sliding;
    if (std::find(rope.begin(), rope.end(), false) != rope.end()) c->rope_layers = std::move(rope);
    if (!c->sliding_window) any = false;  // sliding_attention without a window: only without RoPE
  }
  if (any && !per_layer) {
    return absl::UnimplementedError(absl::StrCat("config.json: not supported (it changes the model's maths): layer_types "
                                                 "containing \"sliding_attention\" in a ", c->model_type, " model"));
  }
  if (any && !c->sliding_window) {
    return absl::InvalidArgumentError("config.json: layer_types marks sliding_attention layers, but no sliding window is "
                                      "in use (use_sliding_window is false or sliding_window is null)");
  }
  if (per_layer) {
    if (!any) c->sliding_window.reset();  // windowed nowhere: plain causal
    if (any) c->sliding_layers = std::move(sliding);
  }
  return absl::OkStatus();
}

// SmolLM3's NoPE layers: no_rope_layers (1 = RoPE, 0 = none; at least one entry
// per layer), else every no_rope_layer_interval-th layer (4) goes without RoPE.
absl::Status ReadRopeLayers(const nlohmann::json& json, ModelConfig* c) {
  if (c->model_type != "smollm3") return absl::OkStatus();
  std::vector<bool> rope;
  if (json.contains("no_rope_layers") && !json["no_rope_layers"].is_null()) {
    const nlohmann::json& flags = json["no_rope_layers"];
    if (!flags.is_array() || static_cast<std::int64_t>(flags.size()) < c->num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: no_rope_layers must hold a 0 or 1 for each of the ",
                                                     c->num_hidden_layers, " layers, got ", flags.dump()));
    }
    for (std::int64_t i = 0; i < c->num_hidden_layers; ++i) {
      const nlohmann::json& f = flags[static_cast<size_t>(i)];
      if (!f.is_number_integer() || (f.get<std::int64_t>() != 0 && f.get<std::int64_t>() != 1)) {
        return absl::InvalidArgumentError(absl::StrCat("config.json: no_rope_layers[", i, "] must be 0 or 1, got ", f.dump()));
      }
      rope.push_back(f.get<std::int64_t>() == 1);
    }
  } else {
    std::int64_t interval = 4;  // SmolLM3Config default
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "no_rope_layer_interval", &interval));
    if (interval <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: no_rope_layer_interval must be positive, got ", interval));
    }
    for (std::int64_t i = 0; i < c->num_hidden_layers; ++i) rope.push_back((i + 1) % interval != 0);
  }
  if (std::find(rope.begin(), rope.end(), false) != rope.end()) c->rope_layers = std::move(rope);
  return absl::OkStatus();
}

// Gemma 2's attention scale and soft caps: null switches a cap off, absence keeps
// Gemma2Config's default.
absl::Status ReadGemma2Attention(const nlohmann::json& json, ModelConfig* c) {
  if (json.contains("query_pre_attn_scalar")) {
    if (json["query_pre_attn_scalar"].is_null()) {
      c->query_pre_attn_scalar.reset();
    } else {
      double scalar = 0;
      POSTTRAIN_RETURN_IF_ERROR(Read(json, "query_pre_attn_scalar", &scalar));
      if (!(scalar > 0) || !std::isfinite(scalar)) {
        return absl::InvalidArgumentError(absl::StrCat("config.json: query_pre_attn_scalar must be positive, got ", scalar));
      }
      c->query_pre_attn_scalar = scalar;
    }
  }
  for (auto [key, cap] : {std::pair{"attn_logit_softcapping", &c->attn_logit_softcapping},
                          std::pair{"final_logit_softcapping", &c->final_logit_softcapping}}) {
    if (!json.contains(key)) continue;
    if (json[key].is_null()) {
      *cap = 0.0;
      continue;
    }
    POSTTRAIN_RETURN_IF_ERROR(Read(json, key, cap));
    if (!(*cap > 0) || !std::isfinite(*cap)) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " must be positive or null, got ", json[key].dump()));
    }
  }
  return absl::OkStatus();
}

// Granite's four multipliers (GraniteConfig: 1.0 each where config.json is silent).
// GPT-J's rotary_dim (GPTJAttention): RoPE on the first rotary_dim dimensions of each
// head, null for all of them; kept as the partial_rotary_factor whose
// rope_freq_dim() it is (the smallest double f with int(head_dim · f) = rotary_dim).
absl::Status ReadGptjRotaryDim(const nlohmann::json& json, ModelConfig* c) {
  if (!json.contains("rotary_dim") || json["rotary_dim"].is_null() || c->head_dim <= 0) return absl::OkStatus();
  std::int64_t rotary = 0;
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "rotary_dim", &rotary));
  if (rotary <= 0 || rotary > c->head_dim || rotary % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: rotary_dim must be even and in [2, head_dim = ", c->head_dim,
                                                   "] (RoPE turns pairs of each head's dimensions), got ", rotary));
  }
  double factor = static_cast<double>(rotary) / static_cast<double>(c->head_dim);
  while (static_cast<std::int64_t>(static_cast<double>(c->head_dim) * factor) < rotary) factor = std::nextafter(factor, 2.0);
  c->partial_rotary_factor = factor;
  return absl::OkStatus();
}

absl::Status ReadGraniteMultipliers(const nlohmann::json& json, ModelConfig* c) {
  double attention = 1.0;
  for (auto [key, value] : {std::pair{"embedding_multiplier", &c->embedding_multiplier},
                            std::pair{"attention_multiplier", &attention},
                            std::pair{"residual_multiplier", &c->residual_multiplier},
                            std::pair{"logits_scaling", &c->logits_scaling}}) {
    POSTTRAIN_RETURN_IF_ERROR(Read(json, key, value));
    if (!std::isfinite(*value) || *value == 0.0) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " must be a finite, nonzero number, got ", *value));
    }
  }
  c->attention_multiplier = attention;
  return absl::OkStatus();
}

// The experts of Mixtral (num_local_experts, every layer, top-k always renormalised,
// width intermediate_size) and Qwen2-MoE / Qwen3-MoE (num_experts, width
// moe_intermediate_size, norm_topk_prob; layers in mlp_only_layers or off the
// decoder_sparse_step keep the dense MLP; Qwen2-MoE's shared expert), with their
// configs' defaults where config.json is silent.
// GLM-4.5's experts (Glm4MoeConfig): n_routed_experts (128), num_experts_per_tok (8),
// moe_intermediate_size (1408), n_shared_experts (1), the router's groups (n_group,
// topk_group: 1, 1), routed_scaling_factor (1), norm_topk_prob (true); the first
// first_k_dense_replace (1) layers dense. DeepSeek-V3's (DeepseekV3Config): the same
// fields, defaults 256, 8, 2048, 1, (8, 4), 2.5, true and 3.
absl::Status ReadSigmoidRoutedExperts(const nlohmann::json& json, ModelConfig* c) {
  const bool deepseek = c->model_type == "deepseek_v3";
  const char* family = deepseek ? "DeepSeek-V3" : "GLM-4.5";
  c->router_sigmoid = true;
  c->num_experts = deepseek ? 256 : 128;
  c->num_experts_per_tok = 8;
  c->moe_intermediate_size = deepseek ? 2048 : 1408;
  c->norm_topk_prob = true;
  if (deepseek) {
    c->n_group = 8;
    c->topk_group = 4;
    c->routed_scaling_factor = 2.5;
  }
  std::int64_t shared = 1, dense = deepseek ? 3 : 1;
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "n_routed_experts", &c->num_experts));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "num_experts_per_tok", &c->num_experts_per_tok));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "moe_intermediate_size", &c->moe_intermediate_size));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "n_shared_experts", &shared));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "n_group", &c->n_group));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "topk_group", &c->topk_group));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "routed_scaling_factor", &c->routed_scaling_factor));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "norm_topk_prob", &c->norm_topk_prob));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "first_k_dense_replace", &dense));
  if (c->num_experts < 2 || c->moe_intermediate_size <= 0 || shared < 0 || dense < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: ", family, "'s experts need n_routed_experts >= 2, moe_intermediate_size > 0, n_shared_experts and "
        "first_k_dense_replace >= 0 (got ", c->num_experts, ", ", c->moe_intermediate_size, ", ", shared, ", ", dense, ")"));
  }
  if (c->n_group < 1 || c->num_experts % c->n_group != 0 || c->num_experts / c->n_group < 2 || c->topk_group < 1 ||
      c->topk_group > c->n_group) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: n_group must divide the ", c->num_experts,
                                                   " routed experts into groups of 2 or more and topk_group be between 1 "
                                                   "and n_group (got n_group ", c->n_group, ", topk_group ", c->topk_group, ")"));
  }
  const std::int64_t reachable = c->topk_group * (c->num_experts / c->n_group);
  if (c->num_experts_per_tok < 1 || c->num_experts_per_tok > reachable) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: num_experts_per_tok must be between 1 and the ", reachable,
                                                   " experts of the topk_group groups, got ", c->num_experts_per_tok));
  }
  if (!std::isfinite(c->routed_scaling_factor)) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: routed_scaling_factor must be finite, got ", c->routed_scaling_factor));
  }
  c->shared_expert_intermediate_size = shared * c->moe_intermediate_size;
  if (dense > 0) {
    c->dense_mlp_layers.assign(static_cast<size_t>(c->num_hidden_layers), false);
    for (std::int64_t i = 0; i < std::min(dense, c->num_hidden_layers); ++i) c->dense_mlp_layers[static_cast<size_t>(i)] = true;
  }
  return absl::OkStatus();
}

// output_router_logits and router_aux_loss_coef of the softmax routers' configs
// (MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig: 0.001; GptOssConfig: 0.9; DBRX: 0.01).
absl::Status ReadRouterAuxLoss(const nlohmann::json& json, ModelConfig* c) {
  const std::string& t = c->model_type;
  if (t != "mixtral" && t != "qwen2_moe" && t != "qwen3_moe" && t != "gpt_oss" && t != "dbrx") return absl::OkStatus();
  c->router_aux_loss_coef = t == "gpt_oss" ? 0.9 : t == "dbrx" ? 0.01 : 0.001;  // DBRX's: ffn_config.moe_loss_weight
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "output_router_logits", &c->output_router_logits));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "router_aux_loss_coef", &c->router_aux_loss_coef));
  if (!std::isfinite(c->router_aux_loss_coef) || c->router_aux_loss_coef < 0) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: router_aux_loss_coef must be a finite number >= 0, got ",
                                                   json["router_aux_loss_coef"].dump()));
  }
  return absl::OkStatus();
}

absl::Status ReadMixtureOfExperts(const nlohmann::json& json, ModelConfig* c) {
  const bool mixtral = c->model_type == "mixtral", qwen2 = c->model_type == "qwen2_moe";
  if (c->model_type == "glm4_moe" || c->model_type == "deepseek_v3") return ReadSigmoidRoutedExperts(json, c);
  if (c->gpt_oss || c->dbrx) {  // GptOssConfig: num_local_experts (128) of width intermediate_size, the top 4, every layer
    c->num_experts = c->dbrx ? 4 : 128;  // DBRX: ffn_config's moe_num_experts (4), moe_top_k (1), ffn_hidden_size
    c->num_experts_per_tok = c->dbrx ? 1 : 4;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "num_local_experts", &c->num_experts));
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "num_experts_per_tok", &c->num_experts_per_tok));
    c->moe_intermediate_size = c->intermediate_size;
    if (c->num_experts < 1 || c->num_experts_per_tok < 1 || c->num_experts_per_tok > c->num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", c->dbrx ? "ffn_config.moe_top_k" : "num_experts_per_tok",
                                                     " must be between 1 and the ", c->num_experts, " experts (",
                                                     c->dbrx ? "ffn_config.moe_num_experts" : "num_local_experts", "), got ",
                                                     c->num_experts_per_tok));
    }
    return absl::OkStatus();
  }
  if (!mixtral && !qwen2 && c->model_type != "qwen3_moe") return absl::OkStatus();
  if (mixtral) {  // MixtralConfig
    c->num_experts = 8;
    c->num_experts_per_tok = 2;
    c->norm_topk_prob = true;
    c->moe_intermediate_size = c->intermediate_size;
  } else {  // Qwen2MoeConfig, Qwen3MoeConfig
    c->num_experts = qwen2 ? 60 : 128;
    c->num_experts_per_tok = qwen2 ? 4 : 8;
    c->moe_intermediate_size = qwen2 ? 1408 : 768;
    if (qwen2) c->shared_expert_intermediate_size = 5632;
    c->shared_expert_gate = qwen2;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "moe_intermediate_size", &c->moe_intermediate_size));
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "norm_topk_prob", &c->norm_topk_prob));
    if (qwen2) POSTTRAIN_RETURN_IF_ERROR(Read(json, "shared_expert_intermediate_size", &c->shared_expert_intermediate_size));
  }
  POSTTRAIN_RETURN_IF_ERROR(Read(json, mixtral ? "num_local_experts" : "num_experts", &c->num_experts));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "num_experts_per_tok", &c->num_experts_per_tok));
  if (c->num_experts < 0 || (mixtral && c->num_experts == 0)) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", mixtral ? "num_local_experts" : "num_experts",
                                                   " must be ", mixtral ? "positive" : "0 or more", ", got ", c->num_experts));
  }
  if (c->num_experts == 0) return absl::OkStatus();  // Qwen-MoE with no experts: dense everywhere
  if (c->num_experts_per_tok < 1 || c->num_experts_per_tok > c->num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: num_experts_per_tok must be between 1 and the ", c->num_experts,
                                                   " experts, got ", c->num_experts_per_tok));
  }
  if (c->moe_intermediate_size <= 0 || c->shared_expert_intermediate_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: the experts' width must be positive (",
                                                   mixtral ? "intermediate_size" : "moe_intermediate_size", " ",
                                                   c->moe_intermediate_size, ", shared_expert_intermediate_size ",
                                                   c->shared_expert_intermediate_size, ")"));
  }
  if (mixtral) return absl::OkStatus();
  std::int64_t step = 1;
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "decoder_sparse_step", &step));
  if (step < 1) return absl::InvalidArgumentError(absl::StrCat("config.json: decoder_sparse_step must be positive, got ", step));
  std::vector<bool> dense(static_cast<size_t>(c->num_hidden_layers), false);
  for (std::int64_t i = 0; i < c->num_hidden_layers; ++i) dense[static_cast<size_t>(i)] = (i + 1) % step != 0;
  if (json.contains("mlp_only_layers") && !json["mlp_only_layers"].is_null()) {
    const nlohmann::json& only = json["mlp_only_layers"];
    if (!only.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: mlp_only_layers must be a list of layer indices, got ", only.dump()));
    }
    for (const nlohmann::json& i : only) {
      if (!i.is_number_integer() || i.get<std::int64_t>() < 0 || i.get<std::int64_t>() >= c->num_hidden_layers) {
        return absl::InvalidArgumentError(absl::StrCat("config.json: mlp_only_layers must hold layer indices in [0, ",
                                                       c->num_hidden_layers, "), got ", i.dump()));
      }
      dense[static_cast<size_t>(i.get<std::int64_t>())] = true;
    }
  }
  if (std::find(dense.begin(), dense.end(), true) != dense.end()) c->dense_mlp_layers = std::move(dense);
  return absl::OkStatus();
}

// MambaConfig's and FalconMambaConfig's fields, their defaults where config.json is
// silent: vocab_size (50280), hidden_size (768), state_size (16), num_hidden_layers
// (32), layer_norm_epsilon (1e-5), expand (2; intermediate_size expand · hidden_size
// unless given), conv_kernel (4), use_bias (false), use_conv_bias (true), hidden_act
// (silu), initializer_range (0.1), residual_in_fp32 (true), time_step_rank ("auto":
// ceil(hidden_size / 16)), mixer_rms_eps (1e-6, FalconMamba's), tie_word_embeddings
// (true), token ids 0.
absl::StatusOr<ModelConfig> ReadMamba(const nlohmann::json& json, ModelConfig c) {
  const bool falcon = c.model_type == "falcon_mamba";
  c.architecture = falcon ? "FalconMambaForCausalLM" : "MambaForCausalLM";
  if (json.contains("architectures") && json["architectures"].is_array() && !json["architectures"].empty() &&
      json["architectures"][0].is_string()) {
    c.architecture = json["architectures"][0].get<std::string>();
  }
  c.mamba = true;
  c.mamba_bc_norm = falcon;
  c.vocab_size = 50280;
  c.hidden_size = 768;
  c.num_hidden_layers = 32;
  c.rms_norm_eps = 1e-5;
  c.initializer_range = 0.1;
  c.tie_word_embeddings = true;
  c.bos_token_id = 0;
  c.pad_token_id = 0;
  c.eos_token_ids = {0};
  c.rope_scaling.reset();
  POSTTRAIN_RETURN_IF_ERROR(RefuseMathChangingFields(json, c.model_type));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "vocab_size", &c.vocab_size));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "hidden_size", &c.hidden_size));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "num_hidden_layers", &c.num_hidden_layers));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "state_size", &c.state_size));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "layer_norm_epsilon", &c.rms_norm_eps));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "expand", &c.expand));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "conv_kernel", &c.conv_kernel));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "use_bias", &c.mamba_use_bias));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "use_conv_bias", &c.use_conv_bias));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "hidden_act", &c.hidden_act));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "initializer_range", &c.initializer_range));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "residual_in_fp32", &c.residual_in_fp32));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "mixer_rms_eps", &c.mixer_rms_eps));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "tie_word_embeddings", &c.tie_word_embeddings));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "dtype", &c.torch_dtype));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "torch_dtype", &c.torch_dtype));
  for (auto [key, id] : {std::pair{"bos_token_id", &c.bos_token_id}, std::pair{"pad_token_id", &c.pad_token_id}}) {
    if (json.contains(key) && json[key].is_null()) id->reset();
    if (json.contains(key) && json[key].is_number_integer()) *id = json[key].get<std::int64_t>();
  }
  if (json.contains("eos_token_id") && (json["eos_token_id"].is_null() || json["eos_token_id"].is_number_integer() ||
                                        json["eos_token_id"].is_array())) {
    c.eos_token_ids.clear();
    const nlohmann::json& eos = json["eos_token_id"];
    if (eos.is_number_integer()) c.eos_token_ids.push_back(eos.get<std::int64_t>());
    for (const auto& e : eos.is_array() ? eos : nlohmann::json::array()) {
      if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<std::int64_t>());
    }
  }
  if (!(c.expand > 0) || !std::isfinite(c.expand)) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: expand must be a positive number, got ", c.expand));
  }
  c.intermediate_size = static_cast<std::int64_t>(c.expand * static_cast<double>(c.hidden_size));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "intermediate_size", &c.intermediate_size));
  c.time_step_rank = (c.hidden_size + 15) / 16;
  if (json.contains("time_step_rank") && !(json["time_step_rank"].is_string() && json["time_step_rank"] == "auto")) {
    if (!json["time_step_rank"].is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: \"time_step_rank\" must be \"auto\" or an integer, got ",
                                                     json["time_step_rank"].dump()));
    }
    c.time_step_rank = json["time_step_rank"].get<std::int64_t>();
  }
  if (!ActivationOf(c.hidden_act).has_value()) {
    return absl::UnimplementedError(absl::StrCat("config.json: hidden_act \"", c.hidden_act,
                                                 "\" is not supported (silu, swish, gelu, gelu_pytorch_tanh, gelu_new, relu)"));
  }
  for (auto [key, value] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                            {"num_hidden_layers", c.num_hidden_layers}, {"state_size", c.state_size},
                            {"intermediate_size", c.intermediate_size}, {"conv_kernel", c.conv_kernel},
                            {"time_step_rank", c.time_step_rank}}) {
    if (value <= 0) return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " must be positive, got ", value));
  }
  for (auto [key, value] : {std::pair{"layer_norm_epsilon", c.rms_norm_eps}, {"mixer_rms_eps", c.mixer_rms_eps}}) {
    if (!std::isfinite(value) || value <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " must be a positive number, got ", value));
    }
  }
  c.num_attention_heads = c.num_key_value_heads = 1;  // unused: no attention
  c.head_dim = c.hidden_size;
  c.max_position_embeddings = std::int64_t{1} << 20;  // no positions: no bound of its own
  return c;
}

// DeepSeek-V3's multi-head latent attention (DeepseekV3Config): q_lora_rank (1536;
// null: q_proj), kv_lora_rank (512), qk_nope_head_dim (128), qk_rope_head_dim (64),
// v_head_dim (128).
absl::Status ReadLatentAttention(const nlohmann::json& json, ModelConfig* c) {
  c->q_lora_rank = 1536;
  c->kv_lora_rank = 512;
  c->qk_nope_head_dim = 128;
  c->qk_rope_head_dim = 64;
  c->v_head_dim = 128;
  if (json.contains("q_lora_rank") && json["q_lora_rank"].is_null()) c->q_lora_rank = 0;
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "q_lora_rank", &c->q_lora_rank));
  if (json.contains("q_lora_rank") && !json["q_lora_rank"].is_null() && c->q_lora_rank <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: q_lora_rank must be positive, or null for a plain q_proj, got ",
                                                   c->q_lora_rank));
  }
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "kv_lora_rank", &c->kv_lora_rank));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "qk_nope_head_dim", &c->qk_nope_head_dim));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "qk_rope_head_dim", &c->qk_rope_head_dim));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "v_head_dim", &c->v_head_dim));
  if (c->kv_lora_rank <= 0 || c->qk_nope_head_dim < 0 || c->qk_rope_head_dim <= 0 || c->qk_rope_head_dim % 2 != 0 ||
      c->v_head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: DeepSeek-V3's latent attention needs kv_lora_rank > 0, qk_nope_head_dim >= 0, an even "
        "qk_rope_head_dim > 0 and v_head_dim > 0 (got ", c->kv_lora_rank, ", ", c->qk_nope_head_dim, ", ",
        c->qk_rope_head_dim, ", ", c->v_head_dim, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

double ModelConfig::attention_scale() const {
  if (attention_multiplier) return *attention_multiplier;
  if (mla()) {  // DeepseekV3Attention: qk_head_dim ** -0.5, times mscale twice under YaRN's mscale_all_dim
    double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
    if (rope_scaling && rope_scaling->mscale_all_dim != 0 && rope_scaling->factor > 1.0) {
      const double mscale = 0.1 * rope_scaling->mscale_all_dim * std::log(rope_scaling->factor) + 1.0;
      scale *= mscale * mscale;
    }
    return scale;
  }
  return 1.0 / std::sqrt(query_pre_attn_scalar ? *query_pre_attn_scalar : static_cast<double>(head_dim));
}

bool ModelConfig::uses_rope(std::int64_t layer) const {
  if (!has_rope() || rope_freq_dim() == 0) return false;  // no dimension to rotate: q and k as they are
  return rope_layers.empty() || layer < 0 || layer >= static_cast<std::int64_t>(rope_layers.size()) || rope_layers[layer];
}

std::optional<Activation> ActivationOf(const std::string& hidden_act) {
  if (hidden_act == "silu" || hidden_act == "swish") return Activation::kSilu;
  if (hidden_act == "gelu") return Activation::kGelu;
  if (hidden_act == "gelu_pytorch_tanh" || hidden_act == "gelu_new") return Activation::kGeluTanh;
  if (hidden_act == "relu") return Activation::kRelu;
  return std::nullopt;
}

Activation ModelConfig::activation() const { return ActivationOf(hidden_act).value_or(Activation::kSilu); }

std::int64_t ModelConfig::window_of(std::int64_t layer) const {
  if (!sliding_window) return 0;
  if (sliding_layers.empty()) return *sliding_window;
  return layer >= 0 && layer < static_cast<std::int64_t>(sliding_layers.size()) && sliding_layers[layer] ? *sliding_window : 0;
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const nlohmann::json& file) {
  if (!file.is_object()) return absl::InvalidArgumentError("config.json is not a JSON object");
  ModelConfig c;
  POSTTRAIN_RETURN_IF_ERROR(Read(file, "model_type", &c.model_type));
  const bool gpt2 = c.model_type == "gpt2", opt = c.model_type == "opt", bloom = c.model_type == "bloom";
  const bool gptj = c.model_type == "gptj";
  // GPT-2's, GPT-J's, OPT's and BLOOM's configs name common fields their own way: read under the common names.
  nlohmann::json translated;
  const bool bigcode = c.model_type == "gpt_bigcode";
  if (gpt2 || gptj || bigcode) {
    POSTTRAIN_ASSIGN_OR_RETURN(translated, Gpt2FieldsUnderCommonNames(file, gptj ? "GPT-J" : bigcode ? "GPTBigCode" : "GPT-2"));
  }
  if (bigcode) {  // GPTBigCodeConfig's multi_query (true by default): one key/value head
    bool multi_query = true;
    POSTTRAIN_RETURN_IF_ERROR(Read(file, "multi_query", &multi_query));
    if (multi_query) translated["num_key_value_heads"] = 1;
    translated.erase("resid_pdrop");  // read from the file itself below
    translated.erase("embd_pdrop");
  }
  if (opt) translated = OptFieldsUnderCommonNames(file);
  const bool neox_type = c.model_type == "gpt_neox";
  if (neox_type) translated = NeoxFields(file);
  if (bloom) {
    POSTTRAIN_ASSIGN_OR_RETURN(translated, BloomFieldsUnderCommonNames(file));
  }
  const bool dbrx = c.model_type == "dbrx";
  if (dbrx) {
    POSTTRAIN_ASSIGN_OR_RETURN(translated, DbrxFieldsUnderCommonNames(file));
  }
  const bool gpt_neo = c.model_type == "gpt_neo";
  if (gpt_neo) {
    POSTTRAIN_ASSIGN_OR_RETURN(translated, GptNeoFieldsUnderCommonNames(file));
  }
  const bool falcon = c.model_type == "falcon";
  if (falcon) {
    POSTTRAIN_ASSIGN_OR_RETURN(translated, FalconFieldsUnderCommonNames(file));
  }
  const nlohmann::json& json = gpt2 || gptj || opt || bloom || neox_type || dbrx || gpt_neo || bigcode || falcon ? translated : file;
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2" && c.model_type != "qwen3" &&
      c.model_type != "gemma" && c.model_type != "smollm3" && c.model_type != "phi3" &&
      c.model_type != "gemma2" && c.model_type != "gemma3_text" && c.model_type != "olmo2" && c.model_type != "granite" &&
      c.model_type != "mixtral" && c.model_type != "qwen2_moe" && c.model_type != "qwen3_moe" && c.model_type != "gpt_neox" && !gpt2 && !gptj && !opt &&
      c.model_type != "cohere" && c.model_type != "cohere2" && !bloom &&
      c.model_type != "phi" && c.model_type != "stablelm" && c.model_type != "starcoder2" && c.model_type != "glm4_moe" &&
      c.model_type != "gpt_oss" && c.model_type != "deepseek_v3" && c.model_type != "mamba" &&
      c.model_type != "falcon_mamba" && !dbrx && c.model_type != "olmo" && !gpt_neo && !bigcode && !falcon) {
    return absl::UnimplementedError(absl::StrCat(
        "config.json: model_type \"", c.model_type,
        "\" is not supported (supported: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, smollm3, phi3, olmo2, "
        "olmo, granite, mixtral, qwen2_moe, qwen3_moe, glm4_moe, gpt_oss, deepseek_v3, dbrx, mamba, falcon_mamba, falcon, gpt_neox, gpt2, gpt_bigcode, gpt_neo, gptj, opt, cohere, cohere2, bloom, phi, stablelm, "
        "starcoder2)"));
  }
  if (c.model_type == "mamba" || c.model_type == "falcon_mamba") return ReadMamba(json, c);
  const bool phi3 = c.model_type == "phi3";
  const bool neox = c.model_type == "gpt_neox";
  const bool cohere2 = c.model_type == "cohere2";
  const bool cohere = c.model_type == "cohere" || cohere2;  // what Cohere 2 keeps of Cohere
  const bool phi = c.model_type == "phi";
  const bool stablelm = c.model_type == "stablelm";
  const bool starcoder2 = c.model_type == "starcoder2";
  const bool glm4_moe = c.model_type == "glm4_moe";
  const bool deepseek = c.model_type == "deepseek_v3";
  const bool partial_rotary = phi3 || neox || phi || stablelm || glm4_moe;  // the families whose configs may set partial_rotary_factor
  const bool gemma3 = c.model_type == "gemma3_text";
  const bool gemma2 = c.model_type == "gemma2" || gemma3;  // what Gemma 3 keeps of Gemma 2
  const bool gemma = c.model_type == "gemma" || gemma2;    // what both keep of Gemma
  if (json.contains("architectures") && json["architectures"].is_array() &&
      !json["architectures"].empty() && json["architectures"][0].is_string()) {
    c.architecture = json["architectures"][0].get<std::string>();
  } else {
    c.architecture = c.model_type == "qwen2"     ? "Qwen2ForCausalLM"
                     : c.model_type == "qwen3"   ? "Qwen3ForCausalLM"
                     : c.model_type == "mistral" ? "MistralForCausalLM"
                     : gemma3                    ? "Gemma3ForCausalLM"
                     : gemma2                    ? "Gemma2ForCausalLM"
                     : gemma                     ? "GemmaForCausalLM"
                     : c.model_type == "smollm3" ? "SmolLM3ForCausalLM"
                     : phi3                      ? "Phi3ForCausalLM"
                     : c.model_type == "olmo2"   ? "Olmo2ForCausalLM"
                     : c.model_type == "olmo"    ? "OlmoForCausalLM"
                     : c.model_type == "granite" ? "GraniteForCausalLM"
                     : c.model_type == "mixtral" ? "MixtralForCausalLM"
                     : c.model_type == "qwen2_moe" ? "Qwen2MoeForCausalLM"
                     : c.model_type == "qwen3_moe" ? "Qwen3MoeForCausalLM"
                     : glm4_moe                    ? "Glm4MoeForCausalLM"
                     : c.model_type == "gpt_oss"   ? "GptOssForCausalLM"
                     : deepseek                    ? "DeepseekV3ForCausalLM"
                     : neox                        ? "GPTNeoXForCausalLM"
                     : gpt2                        ? "GPT2LMHeadModel"
                     : opt                         ? "OPTForCausalLM"
                     : cohere2                     ? "Cohere2ForCausalLM"
                     : cohere                      ? "CohereForCausalLM"
                     : bloom                       ? "BloomForCausalLM"
                     : phi                         ? "PhiForCausalLM"
                     : gptj                        ? "GPTJForCausalLM"
                     : stablelm                    ? "StableLmForCausalLM"
                     : starcoder2                  ? "Starcoder2ForCausalLM"
                     : dbrx                        ? "DbrxForCausalLM"
                     : gpt_neo                     ? "GPTNeoForCausalLM"
                     : bigcode                     ? "GPTBigCodeForCausalLM"
                     : falcon                      ? "FalconForCausalLM"
                                                 : "LlamaForCausalLM";
  }
  if (c.model_type == "qwen2" || c.model_type == "qwen2_moe" || neox) c.attention_bias = true;
  // Qwen2MoeConfig names its q/k/v biases qkv_bias.
  if (c.model_type == "qwen2_moe") POSTTRAIN_RETURN_IF_ERROR(Read(json, "qkv_bias", &c.attention_bias));
  c.qk_norm = c.model_type == "qwen3" || c.model_type == "qwen3_moe";
  if (c.model_type == "mixtral") {  // MixtralConfig's defaults
    c.rope_theta = 1000000.0;
    c.rms_norm_eps = 1e-5;
  }
  if (gemma) {  // GemmaConfig's own defaults where config.json is silent
    c.norm_weight_offset = true;
    c.scale_embeddings = true;
    c.tie_word_embeddings = true;
    c.hidden_act = "gelu_pytorch_tanh";
  }
  if (gemma2) {  // Gemma2Config's defaults
    c.sandwich_norms = true;
    c.query_pre_attn_scalar = 256.0;
    c.attn_logit_softcapping = gemma3 ? 0.0 : 50.0;
    c.final_logit_softcapping = gemma3 ? 0.0 : 30.0;
  }
  if (gemma3) {  // Gemma3TextConfig's: q/k norms, RoPE bases 1e6 (global) and 10,000 (windowed layers)
    c.qk_norm = true;
    c.rope_theta = 1000000.0;
    c.local_rope_theta = 10000.0;
  }
  if (c.model_type == "smollm3") {  // SmolLM3Config's defaults
    c.tie_word_embeddings = true;
    c.rope_theta = 2000000.0;
  }
  if (c.model_type == "olmo2") {  // Olmo2Config: post-sublayer norms, q/k norms over the projections, its eps
    c.sandwich_norms = true;
    c.pre_norms = false;
    c.qk_norm = true;
    c.qk_norm_over_heads = true;
    c.norm_weight_in_fp32 = true;
    c.rms_norm_eps = 1e-5;
  }
  if (c.model_type == "olmo") {  // OlmoConfig: OlmoLayerNorm (no parameters, fp32, eps 1e-5), clip_qkv
    c.layer_norm = true;
    c.layer_norm_bias = false;
    c.norm_without_parameters = true;
    c.rms_norm_eps = 1e-5;
    if (json.contains("clip_qkv") && !json["clip_qkv"].is_null()) {
      POSTTRAIN_RETURN_IF_ERROR(Read(json, "clip_qkv", &c.clip_qkv));
      if (!(c.clip_qkv > 0) || !std::isfinite(c.clip_qkv)) {
        return absl::InvalidArgumentError(absl::StrCat("config.json: clip_qkv must be a positive number or null, got ", json["clip_qkv"].dump()));
      }
    }
  }
  if (phi3) {  // Phi3Config: fused projections, Mistral's window on every layer (if set), its eps
    c.fused_projections = true;
    c.rms_norm_eps = 1e-5;
    if (json.contains("attention_bias") && json["attention_bias"] == true) {
      return absl::UnimplementedError("config.json: attention_bias = true is not supported for phi3 (Phi-3's qkv_proj has no bias)");
    }
  }
  if (neox) {  // GPTNeoXConfig's defaults (Pythia's maths)
    c.layer_norm = true;
    c.parallel_residual = true;
    c.gated_mlp = false;
    c.mlp_bias = true;
    c.rms_norm_eps = 1e-5;
    c.hidden_act = "gelu";
    c.partial_rotary_factor = 0.25;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "use_parallel_residual", &c.parallel_residual));
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "layer_norm_eps", &c.rms_norm_eps));
    // transformers 4 before 4.48 wrote rotary_pct / rotary_emb_base; later versions
    // also (or only) partial_rotary_factor / rope_theta, read below.
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "rotary_pct", &c.partial_rotary_factor));
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "rotary_emb_base", &c.rope_theta));
  }
  if (gpt2) {  // GPT2Config's defaults (transformers' GPT2Attention, GPT2MLP, GPT2Block)
    c.layer_norm = true;
    c.gated_mlp = false;
    c.mlp_bias = true;
    c.attention_bias = true;
    c.output_bias = true;
    c.learned_positions = true;
    c.rms_norm_eps = 1e-5;
    c.hidden_act = "gelu_new";
    c.tie_word_embeddings = true;
    c.max_position_embeddings = 1024;
    c.attention_dropout = c.residual_dropout = c.embedding_dropout = 0.1;
    bool scale = true;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "scale_attn_weights", &scale));
    if (!scale) c.attention_multiplier = 1.0;  // scores q·k, not divided by sqrt(head_dim)
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "scale_attn_by_inverse_layer_idx", &c.scale_attn_by_inverse_layer_idx));
    // reorder_and_upcast_attn only computes the scores in fp32 (as posttrain does): read as is.
    if (json.contains("add_cross_attention") && json["add_cross_attention"] == true) {
      return absl::UnimplementedError(
          "config.json: not supported (it changes the model's maths): add_cross_attention = true (an encoder-decoder's cross-attention)");
    }
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "attn_pdrop", &c.attention_dropout));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "resid_pdrop", &c.residual_dropout));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "embd_pdrop", &c.embedding_dropout));
  } else {
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "attention_dropout", &c.attention_dropout));
  }
  if (opt) {  // OPTConfig's defaults (transformers' OPTDecoderLayer, OPTLearnedPositionalEmbedding)
    c.layer_norm = true;
    c.gated_mlp = false;
    c.mlp_bias = true;
    c.attention_bias = true;
    c.output_bias = true;
    c.learned_positions = true;
    c.position_offset = 2;
    c.rms_norm_eps = 1e-5;  // nn.LayerNorm's
    c.hidden_act = "relu";
    c.tie_word_embeddings = true;
    c.residual_dropout = 0.1;
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "dropout", &c.residual_dropout));
    std::vector<std::string> refused;
    auto flag = [&](const char* key, bool neutral) {
      if (json.contains(key) && json[key].is_boolean() && json[key].get<bool>() != neutral) {
        refused.push_back(absl::StrCat(key, " = ", json[key].dump()));
      }
    };
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "do_layer_norm_before", &c.post_layer_norm));
    c.post_layer_norm = !c.post_layer_norm;  // OPT-350m's norms after the residual adds
    flag("enable_bias", true);
    flag("layer_norm_elementwise_affine", true);
    flag("_remove_final_layer_norm", false);
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "word_embed_proj_dim", &c.word_embed_proj_dim));
    if (c.word_embed_proj_dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: word_embed_proj_dim must be positive, got ", c.word_embed_proj_dim));
    }
    if (json.contains("layerdrop") && json["layerdrop"].is_number() && json["layerdrop"].get<double>() != 0) {
      refused.push_back(absl::StrCat("layerdrop = ", json["layerdrop"].dump()));
    }
    if (!refused.empty()) {
      return absl::UnimplementedError(absl::StrCat("config.json: not supported (it changes the model's maths): ",
                                                   absl::StrJoin(refused, "; ")));
    }
  }
  if (neox) POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "hidden_dropout", &c.residual_dropout));
  if (bloom) {  // BloomConfig's defaults (transformers' BloomBlock, BloomAttention, BloomMLP, BloomGelu)
    c.layer_norm = true;
    c.gated_mlp = false;
    c.mlp_bias = true;
    c.attention_bias = true;
    c.output_bias = true;
    c.alibi = true;
    c.embedding_layer_norm = true;
    c.rms_norm_eps = 1e-5;
    c.hidden_act = "gelu_new";  // BloomGelu: the tanh approximation
    c.tie_word_embeddings = true;
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "hidden_dropout", &c.residual_dropout));
    std::vector<std::string> refused;
    if (json.contains("apply_residual_connection_post_layernorm") && json["apply_residual_connection_post_layernorm"] == true) {
      refused.push_back("apply_residual_connection_post_layernorm = true (the residual taken after the norms)");
    }
    if (json.contains("hidden_act") && json["hidden_act"] != "gelu_new") refused.push_back(absl::StrCat("hidden_act = ", json["hidden_act"].dump()));
    if (!refused.empty()) {
      return absl::UnimplementedError(absl::StrCat("config.json: not supported (it changes the model's maths): ",
                                                   absl::StrJoin(refused, "; ")));
    }
  }
  if (phi) {  // PhiConfig's defaults (transformers' PhiDecoderLayer, PhiAttention, PhiMLP, PhiForCausalLM)
    c.layer_norm = true;
    c.parallel_residual = true;
    c.one_norm_per_layer = true;
    c.gated_mlp = false;
    c.mlp_bias = true;
    c.attention_bias = true;  // q/k/v_proj and dense: bias=True, whatever the config says
    c.output_bias = true;
    c.lm_head_bias = true;
    c.rms_norm_eps = 1e-5;
    c.hidden_act = "gelu_new";
    c.partial_rotary_factor = 0.5;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "layer_norm_eps", &c.rms_norm_eps));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "resid_pdrop", &c.residual_dropout));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "embd_pdrop", &c.embedding_dropout));
    // qk_layernorm: PhiAttention's q_layernorm / k_layernorm, one nn.LayerNorm(head_dim)
    // each, shared by the heads, on q and k before RoPE.
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "qk_layernorm", &c.qk_layer_norm));
    c.qk_layer_norm_shared = c.qk_layer_norm;
    c.qk_norm = c.qk_layer_norm;
  }
  if (gptj) {  // GPTJConfig's defaults (transformers' GPTJBlock, GPTJAttention, GPTJMLP, GPTJForCausalLM)
    c.layer_norm = true;  // ln_1, read by both parallel branches: h + attn(ln_1(h)) + mlp(ln_1(h))
    c.parallel_residual = true;
    c.one_norm_per_layer = true;
    c.gated_mlp = false;  // fc_out(gelu_new(fc_in(x))), both with biases
    c.mlp_bias = true;
    c.attention_bias = false;  // q/k/v_proj and out_proj: bias=False
    c.output_bias = false;
    c.lm_head_bias = true;
    c.rope_interleaved = true;  // rotate_every_two: dimensions (2i, 2i + 1) turn together
    c.rms_norm_eps = 1e-5;
    c.hidden_act = "gelu_new";
    c.tie_word_embeddings = false;
    c.max_position_embeddings = 2048;
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "attn_pdrop", &c.attention_dropout));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "resid_pdrop", &c.residual_dropout));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "embd_pdrop", &c.embedding_dropout));
  }
  if (starcoder2) {  // Starcoder2Config's defaults (transformers' Starcoder2DecoderLayer, Starcoder2MLP)
    c.layer_norm = true;
    c.gated_mlp = false;
    c.rms_norm_eps = 1e-5;
    c.hidden_act = "gelu_pytorch_tanh";
    c.tie_word_embeddings = true;
    c.initializer_range = 0.018042;
    bool use_bias = true;  // on every projection, the MLP's included
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "use_bias", &use_bias));
    c.attention_bias = c.output_bias = c.mlp_bias = use_bias;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "norm_epsilon", &c.rms_norm_eps));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "residual_dropout", &c.residual_dropout));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "embedding_dropout", &c.embedding_dropout));
  }
  if (stablelm) {  // StableLmConfig's defaults (transformers' StableLmDecoderLayer, StableLmAttention)
    c.layer_norm = true;
    c.rms_norm_eps = 1e-5;
    c.partial_rotary_factor = 0.25;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "layer_norm_eps", &c.rms_norm_eps));
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "use_qkv_bias", &c.attention_bias));
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "use_parallel_residual", &c.parallel_residual));
    c.one_norm_per_layer = c.parallel_residual;  // no post_attention_layernorm then
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "qk_layernorm", &c.qk_layer_norm));
    c.qk_norm = c.qk_layer_norm;
  }
  if (cohere) {  // CohereConfig's, Cohere2Config's defaults (transformers' CohereLayerNorm, CohereDecoderLayer, CohereRotaryEmbedding)
    c.layer_norm = true;
    c.layer_norm_bias = false;
    c.parallel_residual = true;
    c.one_norm_per_layer = true;
    c.rope_interleaved = true;
    c.rms_norm_eps = 1e-5;
    c.tie_word_embeddings = true;
    c.logit_scale = 0.0625;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "layer_norm_eps", &c.rms_norm_eps));
    if (!cohere2) POSTTRAIN_RETURN_IF_ERROR(Read(json, "use_qk_norm", &c.qk_layer_norm));  // Cohere 2: refused above
    c.qk_norm = c.qk_layer_norm;
    if (json.contains("logit_scale") && json["logit_scale"].is_null()) {
      return absl::InvalidArgumentError("config.json: \"logit_scale\" must be a number (CohereForCausalLM multiplies the logits by it), got null");
    }
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "logit_scale", &c.logit_scale));
    if (!std::isfinite(c.logit_scale) || c.logit_scale == 0.0) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: logit_scale must be a finite, nonzero number, got ", c.logit_scale));
    }
  }
  if (c.model_type == "gpt_oss") {  // GptOssConfig's defaults (GptOssAttention: biases on q/k/v/o; norms in fp32)
    c.gpt_oss = true;
    c.attention_bias = true;
    c.rope_theta = 150000.0;
    c.rms_norm_eps = 1e-5;
    c.norm_weight_in_fp32 = true;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "swiglu_limit", &c.swiglu_limit));
    if (!(c.swiglu_limit > 0) || !std::isfinite(c.swiglu_limit)) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: swiglu_limit must be a positive number, got ", c.swiglu_limit));
    }
  }
  if (dbrx) POSTTRAIN_RETURN_IF_ERROR(ReadDbrx(file, &c));  // DbrxConfig's defaults and nested fields
  if (bigcode) {  // GPTBigCodeConfig's defaults (transformers' GPTBigCodeBlock, GPTBigCodeAttention, GPTBigCodeMLP)
    c.layer_norm = true;
    c.gated_mlp = false;
    c.mlp_bias = true;
    c.attention_bias = true;  // c_attn, c_proj: nn.Linear with biases
    c.output_bias = true;
    c.learned_positions = true;
    c.rms_norm_eps = 1e-5;
    c.hidden_act = "gelu_pytorch_tanh";
    c.tie_word_embeddings = true;
    c.max_position_embeddings = 1024;
    c.attention_dropout = c.residual_dropout = c.embedding_dropout = 0.1;
    bool scale = true;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "scale_attn_weights", &scale));
    if (!scale) c.attention_multiplier = 1.0;  // scores q·k, not divided by sqrt(head_dim)
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(json, "attn_pdrop", &c.attention_dropout));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(file, "resid_pdrop", &c.residual_dropout));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(file, "embd_pdrop", &c.embedding_dropout));
  }
  if (falcon) {  // FalconConfig's defaults (transformers' FalconDecoderLayer, FalconAttention, FalconMLP)
    bool new_architecture = false, parallel = true, bias = false, alibi = false;
    POSTTRAIN_RETURN_IF_ERROR(Read(file, "new_decoder_architecture", &new_architecture));
    POSTTRAIN_RETURN_IF_ERROR(Read(file, "parallel_attn", &parallel));
    POSTTRAIN_RETURN_IF_ERROR(Read(file, "bias", &bias));
    POSTTRAIN_RETURN_IF_ERROR(Read(file, "alibi", &alibi));
    if (alibi) {
      return absl::UnimplementedError("config.json: not supported (it changes the model's maths): alibi = true (Falcon's ALiBi, "
                                      "added before the scores' scaling, unlike BLOOM's)");
    }
    if (new_architecture && !parallel) {
      return absl::InvalidArgumentError("config.json: new_decoder_architecture needs parallel_attn = true (FalconDecoderLayer "
                                        "has no post-attention norm there)");
    }
    // num_ln_in_parallel_attn: 2 (ln_attn, ln_mlp both reading h) by default with the
    // new architecture, else one norm both branches read.
    std::int64_t norms = new_architecture ? 2 : 1;
    if (file.contains("num_ln_in_parallel_attn") && !file["num_ln_in_parallel_attn"].is_null()) {
      POSTTRAIN_RETURN_IF_ERROR(Read(file, "num_ln_in_parallel_attn", &norms));
      if (norms != 1 && norms != 2) {
        return absl::InvalidArgumentError(absl::StrCat("config.json: num_ln_in_parallel_attn must be 1, 2 or null, got ", norms));
      }
    }
    c.layer_norm = true;
    c.gated_mlp = false;
    c.mlp_bias = c.attention_bias = c.output_bias = bias;
    c.parallel_residual = parallel;
    c.one_norm_per_layer = parallel && !(new_architecture && norms == 2);
    c.rms_norm_eps = 1e-5;
    c.hidden_act = "gelu";
    c.tie_word_embeddings = true;
    c.max_position_embeddings = 2048;
    // FalconDecoderLayer drops the sum of both branches with one mask (and a sequential
    // layer's attention output at attention_dropout): not the per-branch dropout of
    // residual_dropout.
    double hidden_dropout = 0.0;
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(file, "hidden_dropout", &hidden_dropout));
    if (hidden_dropout != 0.0 || (!parallel && c.attention_dropout != 0.0)) {
      return absl::UnimplementedError(absl::StrCat("config.json: not supported (it changes the model's maths): ",
                                                   hidden_dropout != 0.0 ? absl::StrCat("hidden_dropout = ", hidden_dropout)
                                                                         : absl::StrCat("attention_dropout = ", c.attention_dropout,
                                                                                        " with parallel_attn = false"),
                                                   " (Falcon's dropout of the layer's summed output)"));
    }
  }
  if (gpt_neo) {  // GPTNeoConfig's defaults (transformers' GPTNeoBlock, GPTNeoSelfAttention, GPTNeoMLP)
    c.layer_norm = true;
    c.gated_mlp = false;
    c.mlp_bias = true;  // c_fc, c_proj: biased
    c.attention_bias = false;  // q/k/v_proj: bias=False; out_proj: bias=True
    c.output_bias = true;
    c.learned_positions = true;
    c.attention_multiplier = 1.0;  // GPTNeoSelfAttention's scores q·k, not divided by sqrt(head_dim)
    c.rms_norm_eps = 1e-5;
    c.hidden_act = "gelu_new";
    c.tie_word_embeddings = true;
    c.max_position_embeddings = 2048;
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(file, "resid_dropout", &c.residual_dropout));
    POSTTRAIN_RETURN_IF_ERROR(ReadProbability(file, "embed_dropout", &c.embedding_dropout));
  }
  if (glm4_moe) {  // Glm4MoeConfig's defaults (Glm4MoeAttention: q/k/v biases with attention_bias, none on o_proj)
    c.partial_rotary_factor = 0.5;
    c.rms_norm_eps = 1e-5;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "use_qk_norm", &c.qk_norm));  // Qwen3's per-head RMSNorms
  }
  if (deepseek) {  // DeepseekV3Config's defaults (DeepseekV3Attention: RoPE on adjacent pairs)
    c.rope_interleaved = true;
    c.max_position_embeddings = 4096;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "rope_interleave", &c.rope_interleaved));
  }
  if (json.contains("use_bidirectional_attention") && json["use_bidirectional_attention"].is_boolean() &&
      json["use_bidirectional_attention"].get<bool>()) {
    return absl::UnimplementedError("config.json: use_bidirectional_attention = true is not supported (a causal LM attends causally)");
  }
  POSTTRAIN_RETURN_IF_ERROR(RefuseMathChangingFields(json, c.model_type));
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads"}) {
    if (!json.contains(key)) return absl::InvalidArgumentError(absl::StrCat("config.json lacks \"", key, "\""));
  }
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "vocab_size", &c.vocab_size));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "hidden_size", &c.hidden_size));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "intermediate_size", &c.intermediate_size));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "num_hidden_layers", &c.num_hidden_layers));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "num_attention_heads", &c.num_attention_heads));
  if (c.word_embed_proj_dim == c.hidden_size) c.word_embed_proj_dim = 0;  // OPT: no projection
  c.num_key_value_heads = c.num_attention_heads;
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "num_key_value_heads", &c.num_key_value_heads));
  // Where config.json is silent: GemmaConfig says 256, Qwen3Config 128, the others
  // hidden_size / num_attention_heads.
  if (deepseek) POSTTRAIN_RETURN_IF_ERROR(ReadLatentAttention(json, &c));
  c.head_dim = gemma                       ? 256
               : c.model_type == "qwen3"   ? 128
               : c.gpt_oss                 ? 64
               : deepseek                  ? c.qk_rope_head_dim
               : c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads
                                           : 0;
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "head_dim", &c.head_dim));
  if (deepseek && c.head_dim != c.qk_rope_head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: head_dim (", c.head_dim, ") must equal qk_rope_head_dim (",
                                                   c.qk_rope_head_dim, "): DeepSeek-V3's RoPE turns that many dimensions"));
  }
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "max_position_embeddings", &c.max_position_embeddings));
  if (!neox && !cohere && !phi && !stablelm && !starcoder2 && c.model_type != "olmo") {  // OLMo's eps is 1e-5, always
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "rms_norm_eps", &c.rms_norm_eps));
  }  // GPT-2's, GPT-J's, BLOOM's: translated
  if (gptj) POSTTRAIN_RETURN_IF_ERROR(ReadGptjRotaryDim(json, &c));
  if (!gptj) POSTTRAIN_RETURN_IF_ERROR(Read(json, "rope_theta", &c.rope_theta));  // GPT-J's base is 10,000, always
  if (partial_rotary) POSTTRAIN_RETURN_IF_ERROR(Read(json, "partial_rotary_factor", &c.partial_rotary_factor));
  if (gemma2) POSTTRAIN_RETURN_IF_ERROR(ReadGemma2Attention(json, &c));
  if (c.model_type == "granite") POSTTRAIN_RETURN_IF_ERROR(ReadGraniteMultipliers(json, &c));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "tie_word_embeddings", &c.tie_word_embeddings));
  if (!gpt2 && !gptj && !opt && !bloom && !phi && !stablelm && !starcoder2 && !gpt_neo && !bigcode && !falcon) {
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "attention_bias", &c.attention_bias));
  }  // OPT's: enable_bias
  // attention_bias puts a bias on o_proj too where the family's attention is
  // LlamaAttention's (Llama, Gemma 1-3, Qwen3 and its MoE, Granite, OLMo 2, SmolLM3:
  // o_proj = nn.Linear(..., bias=config.attention_bias)), GPT-NeoX's, Cohere's,
  // GPT-OSS's and DeepSeek-V3's; Qwen2's, Qwen2-MoE's and GLM-4.5's o_proj has none.
  // MistralConfig and MixtralConfig have no attention_bias: their attention has no
  // biases, whatever an extra field says.
  const bool llama_attention = c.model_type == "llama" || gemma || c.model_type == "qwen3" ||
                               c.model_type == "qwen3_moe" || c.model_type == "granite" || c.model_type == "olmo2" || c.model_type == "olmo" ||
                               c.model_type == "smollm3";
  if (c.model_type == "mistral" || c.model_type == "mixtral") c.attention_bias = false;
  if (llama_attention || neox || cohere || c.gpt_oss || deepseek) c.output_bias = c.attention_bias;
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "initializer_range", &c.initializer_range));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "hidden_act", &c.hidden_act));
  // Gemma configs written by transformers 4.38-4.4x carry hidden_activation, which
  // their GemmaMLP used instead of hidden_act (null meant gelu_pytorch_tanh).
  if (gemma) POSTTRAIN_RETURN_IF_ERROR(Read(json, "hidden_activation", &c.hidden_act));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "dtype", &c.torch_dtype));  // transformers 5's name
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "torch_dtype", &c.torch_dtype));
  POSTTRAIN_RETURN_IF_ERROR(Read(json, "num_labels", &c.num_labels));
  if (json.contains("bos_token_id") && json["bos_token_id"].is_number_integer()) {
    c.bos_token_id = json["bos_token_id"].get<std::int64_t>();
  }
  if (json.contains("pad_token_id") && json["pad_token_id"].is_number_integer()) {
    c.pad_token_id = json["pad_token_id"].get<std::int64_t>();
  }
  if (json.contains("eos_token_id")) {
    const nlohmann::json& eos = json["eos_token_id"];
    if (eos.is_number_integer()) c.eos_token_ids = {eos.get<std::int64_t>()};
    if (eos.is_array()) {
      for (const auto& e : eos) {
        if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<std::int64_t>());
      }
    }
  }
  // RoPE: transformers 4 writes rope_theta and rope_scaling at the top level;
  // transformers 5 writes one rope_parameters object holding rope_theta, rope_type
  // and the scaling fields. Either is read.
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (json.contains(key) && !json[key].is_null() && !json[key].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: \"", key, "\" must be an object or null, got ", json[key].dump()));
    }
  }
  if (gemma3) {  // transformers 4: the windowed layers' base beside rope_theta
    double local = *c.local_rope_theta;
    POSTTRAIN_RETURN_IF_ERROR(Read(json, "rope_local_base_freq", &local));
    c.local_rope_theta = local;
  }
  if (json.contains("rope_parameters") && json["rope_parameters"].is_object()) {
    const nlohmann::json* global = &json["rope_parameters"];
    // Gemma 3 under transformers 5: one RoPE object per layer type.
    if (gemma3 && global->contains("full_attention")) {
      const nlohmann::json& by_type = *global;
      for (const char* type : {"full_attention", "sliding_attention"}) {
        if (by_type.contains(type) && !by_type[type].is_object()) {
          return absl::InvalidArgumentError(absl::StrCat("config.json: rope_parameters.", type, " must be an object, got ", by_type[type].dump()));
        }
      }
      global = &by_type["full_attention"];
      if (by_type.contains("sliding_attention")) {
        const nlohmann::json& local = by_type["sliding_attention"];
        double theta = *c.local_rope_theta;
        POSTTRAIN_RETURN_IF_ERROR(Read(local, "rope_theta", &theta));
        c.local_rope_theta = theta;
        std::optional<RopeScaling> scaled;
        POSTTRAIN_RETURN_IF_ERROR(ReadRopeScaling(local, "rope_parameters.sliding_attention", &scaled));
        if (scaled) {
          return absl::UnimplementedError("config.json: not supported (it changes the model's maths): a scaled RoPE on the "
                                          "sliding_attention layers (rope_parameters.sliding_attention)");
        }
      }
    }
    const nlohmann::json& rp = *global;
    POSTTRAIN_RETURN_IF_ERROR(Read(rp, "rope_theta", &c.rope_theta));
    if (partial_rotary) POSTTRAIN_RETURN_IF_ERROR(Read(rp, "partial_rotary_factor", &c.partial_rotary_factor));
    if (!partial_rotary && rp.contains("partial_rotary_factor") && rp["partial_rotary_factor"].is_number() &&
        rp["partial_rotary_factor"].get<double>() != 1.0) {
      return absl::UnimplementedError(absl::StrCat("config.json: not supported (it changes the model's maths): rope_parameters.partial_rotary_factor = ",
                                                   rp["partial_rotary_factor"].dump(), " (RoPE on part of each head)"));
    }
    POSTTRAIN_RETURN_IF_ERROR(ReadRopeScaling(rp, "rope_parameters", &c.rope_scaling));
  } else if (json.contains("rope_scaling") && json["rope_scaling"].is_object()) {
    POSTTRAIN_RETURN_IF_ERROR(ReadRopeScaling(json["rope_scaling"], "rope_scaling", &c.rope_scaling));
  }
  if (!ActivationOf(c.hidden_act).has_value()) {
    return absl::UnimplementedError(absl::StrCat("config.json: hidden_act \"", c.hidden_act,
                                                 "\" is not supported (silu, swish, gelu, gelu_pytorch_tanh, gelu_new, relu)"));
  }
  if (c.num_attention_heads <= 0 || c.num_key_value_heads <= 0 ||
      c.num_attention_heads % c.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: num_attention_heads (", c.num_attention_heads,
        ") must be a positive multiple of num_key_value_heads (", c.num_key_value_heads, ")"));
  }
  if (c.head_dim <= 0 || (c.head_dim % 2 != 0 && c.has_rope())) {  // RoPE rotates pairs
    return absl::InvalidArgumentError(absl::StrCat("config.json: head_dim ", c.head_dim, " must be even and positive"));
  }
  if ((c.learned_positions || c.alibi || gptj || dbrx) && c.num_attention_heads * c.head_dim != c.hidden_size) {  // GPT-Neo: learned
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", gpt2 || gptj || bloom || bigcode ? "n_head" : "num_attention_heads", " (",
                                                   c.num_attention_heads, ") must divide ", gpt2 || gptj || bigcode ? "n_embd" : "hidden_size",
                                                   " (", c.hidden_size, ")"));
  }
  // Learned positions and ALiBi have no RoPE to scale: their config classes have no
  // rope_scaling, so one there is an extra that their models never read.
  if (!c.has_rope()) c.rope_scaling.reset();
  if (c.rope_scaling && c.rope_scaling->rope_type == "yarn" && c.rope_freq_dim() % 2 != 0) {
    // transformers' yarn ramp has d / 2 entries against ceil(d / 2) frequencies: it fails too.
    return absl::InvalidArgumentError(absl::StrCat("config.json: yarn RoPE needs an even number of rotated dimensions per head, got ",
                                                   c.rope_freq_dim()));
  }
  if (c.rope_scaling && phi3 && c.rope_scaling->rope_type != "longrope") {
    // Phi3Config accepts longrope only (early Phi-3 code had a "yarn" of its own, other maths).
    return absl::UnimplementedError(absl::StrCat("config.json: rope_scaling type \"", c.rope_scaling->rope_type,
                                                 "\" is not supported for phi3 (Phi-3 scales RoPE with longrope)"));
  }
  if (c.rope_scaling && c.rope_scaling->rope_type == "dynamic" && c.rotary_dim() <= 2) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: dynamic RoPE needs more than 2 rotated dimensions per head (its base "
                                                   "is raised to d / (d - 2)), got ", c.rotary_dim()));
  }
  if (c.rope_scaling && c.rope_scaling->rope_type == "yarn" && c.rope_theta == 1.0) {
    return absl::InvalidArgumentError("config.json: yarn RoPE needs rope_theta != 1 (its ramp divides by ln rope_theta)");
  }
  for (auto [key, value] : {std::pair{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                            {"intermediate_size", c.intermediate_size}, {"num_hidden_layers", c.num_hidden_layers},
                            {"max_position_embeddings", c.max_position_embeddings}}) {
    if (value <= 0) return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " must be positive, got ", value));
  }
  for (auto [key, value] : {std::pair{"rope_theta", c.rope_theta}, {"rms_norm_eps", c.rms_norm_eps},
                            {"rope_local_base_freq", c.local_rope_theta.value_or(1.0)}}) {
    if (!std::isfinite(value) || value <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " must be a positive number, got ", value));
    }
  }
  // No rotated dimension at all (GPT-NeoX's rotary_pct 0.25 of TRL's tiny head_dim 2)
  // is what transformers runs too: an empty rotary embedding, q and k unrotated.
  if (c.has_rope() && c.rope_freq_dim() != 0 &&
      (!(c.partial_rotary_factor > 0 && c.partial_rotary_factor <= 1) || c.rotary_dim() < 0 || c.rotary_dim() % 2 != 0 ||
       c.rotary_dim() > c.head_dim)) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: partial_rotary_factor ", c.partial_rotary_factor,
                                                   " must be in [0, 1] and leave an even number of rotated ",
                                                   "dimensions (head_dim ", c.head_dim, " gives ", c.rotary_dim(), ")"));
  }
  POSTTRAIN_RETURN_IF_ERROR(FinishLongRope(json, &c));
  POSTTRAIN_RETURN_IF_ERROR(ReadRopeLayers(json, &c));
  POSTTRAIN_RETURN_IF_ERROR(ReadSlidingWindow(json, &c));
  POSTTRAIN_RETURN_IF_ERROR(ReadMixtureOfExperts(json, &c));
  POSTTRAIN_RETURN_IF_ERROR(ReadRouterAuxLoss(json, &c));
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromJsonFile(const std::string& path) {
  POSTTRAIN_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not valid JSON"));
  absl::StatusOr<ModelConfig> config = FromJson(json);
  if (!config.ok()) return Annotate(config.status(), path);
  return config;
}

namespace {

// What every family's config.json ends with: dtype, cache, token ids, labels, version.
void AddCommonFields(const ModelConfig& c, nlohmann::ordered_json* out) {
  nlohmann::ordered_json& j = *out;
  j["torch_dtype"] = c.torch_dtype;
  j["use_cache"] = true;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  if (c.num_labels > 0) j["num_labels"] = c.num_labels;
  j["transformers_version"] = "4.46.0";
}

// The fields GPT2Config and GPTJConfig share, under their names.
nlohmann::ordered_json Gpt2StyleJson(const ModelConfig& c, const char* model_type) {
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = model_type;
  j["vocab_size"] = c.vocab_size;
  j["n_embd"] = c.hidden_size;
  j["n_layer"] = c.num_hidden_layers;
  j["n_head"] = c.num_attention_heads;
  j["n_inner"] = c.intermediate_size;
  j["n_positions"] = c.max_position_embeddings;
  j["layer_norm_epsilon"] = c.rms_norm_eps;
  j["activation_function"] = c.hidden_act;
  j["attn_pdrop"] = c.attention_dropout;
  j["resid_pdrop"] = c.residual_dropout;
  j["embd_pdrop"] = c.embedding_dropout;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["initializer_range"] = c.initializer_range;
  return j;
}

// GPT-2's config.json, under GPT2Config's own names.
nlohmann::ordered_json Gpt2Json(const ModelConfig& c) {
  nlohmann::ordered_json j = Gpt2StyleJson(c, "gpt2");
  j["n_ctx"] = c.max_position_embeddings;  // read by transformers before 4.x's n_positions
  j["scale_attn_weights"] = !c.attention_multiplier.has_value();
  j["scale_attn_by_inverse_layer_idx"] = c.scale_attn_by_inverse_layer_idx;
  j["reorder_and_upcast_attn"] = false;
  AddCommonFields(c, &j);
  return j;
}

// GPTBigCode's config.json, under GPTBigCodeConfig's own names.
nlohmann::ordered_json GptBigCodeJson(const ModelConfig& c) {
  nlohmann::ordered_json j = Gpt2StyleJson(c, "gpt_bigcode");
  j["multi_query"] = c.num_key_value_heads == 1 && c.num_attention_heads > 1;
  j["scale_attn_weights"] = !c.attention_multiplier.has_value();
  j["attention_softmax_in_fp32"] = true;
  j["scale_attention_softmax_in_fp32"] = true;
  AddCommonFields(c, &j);
  return j;
}

// GPT-J's config.json, under GPTJConfig's own names.
nlohmann::ordered_json GptjJson(const ModelConfig& c) {
  nlohmann::ordered_json j = Gpt2StyleJson(c, "gptj");
  j["rotary_dim"] = c.rope_freq_dim();
  AddCommonFields(c, &j);
  return j;
}

// OPT's config.json, under OPTConfig's own names.
nlohmann::ordered_json OptJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = "opt";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["word_embed_proj_dim"] = c.output_size();
  j["ffn_dim"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["do_layer_norm_before"] = !c.post_layer_norm;
  j["activation_function"] = c.hidden_act;
  j["dropout"] = c.residual_dropout;
  j["attention_dropout"] = c.attention_dropout;
  j["layerdrop"] = 0.0;
  j["enable_bias"] = true;
  j["layer_norm_elementwise_affine"] = true;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["init_std"] = c.initializer_range;
  AddCommonFields(c, &j);
  return j;
}

// BLOOM's config.json, under BloomConfig's own names.
nlohmann::ordered_json BloomJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = "bloom";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["n_layer"] = c.num_hidden_layers;
  j["n_head"] = c.num_attention_heads;
  j["layer_norm_epsilon"] = c.rms_norm_eps;
  j["hidden_dropout"] = c.residual_dropout;
  j["attention_dropout"] = c.attention_dropout;
  j["apply_residual_connection_post_layernorm"] = false;
  j["pretraining_tp"] = 1;
  j["slow_but_exact"] = false;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["initializer_range"] = c.initializer_range;
  AddCommonFields(c, &j);
  return j;
}

// GPT-Neo's config.json, under GPTNeoConfig's names (attention_types one entry per layer).
nlohmann::ordered_json GptNeoJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = "gpt_neo";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_layers"] = c.num_hidden_layers;
  j["num_heads"] = c.num_attention_heads;
  j["intermediate_size"] = c.intermediate_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["window_size"] = c.sliding_window.value_or(256);
  nlohmann::ordered_json types = nlohmann::ordered_json::array(), layers = nlohmann::ordered_json::array();
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const char* type = c.window_of(i) > 0 ? "local" : "global";
    types.push_back({{type}, 1});
    layers.push_back(type);
  }
  j["attention_types"] = types;
  j["attention_layers"] = layers;
  j["activation_function"] = c.hidden_act;
  j["layer_norm_epsilon"] = c.rms_norm_eps;
  j["attention_dropout"] = c.attention_dropout;
  j["resid_dropout"] = c.residual_dropout;
  j["embed_dropout"] = c.embedding_dropout;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["initializer_range"] = c.initializer_range;
  AddCommonFields(c, &j);
  return j;
}

// DBRX's config.json, under DbrxConfig's names (attn_config and ffn_config nested).
nlohmann::ordered_json DbrxJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = "dbrx";
  j["vocab_size"] = c.vocab_size;
  j["d_model"] = c.hidden_size;
  j["n_heads"] = c.num_attention_heads;
  j["n_layers"] = c.num_hidden_layers;
  j["max_seq_len"] = c.max_position_embeddings;
  j["resid_pdrop"] = c.residual_dropout;
  j["emb_pdrop"] = c.embedding_dropout;
  nlohmann::ordered_json attn;
  attn["attn_pdrop"] = c.attention_dropout;
  attn["clip_qkv"] = c.clip_qkv > 0 ? nlohmann::ordered_json(c.clip_qkv) : nlohmann::ordered_json(nullptr);
  attn["kv_n_heads"] = c.num_key_value_heads;
  attn["rope_theta"] = c.rope_theta;
  j["attn_config"] = attn;
  nlohmann::ordered_json ffn;
  ffn["ffn_act_fn"] = {{"name", c.hidden_act}};
  ffn["ffn_hidden_size"] = c.moe_intermediate_size;
  ffn["moe_num_experts"] = c.num_experts;
  ffn["moe_top_k"] = c.num_experts_per_tok;
  ffn["moe_jitter_eps"] = c.router_jitter_eps > 0 ? nlohmann::ordered_json(c.router_jitter_eps) : nlohmann::ordered_json(nullptr);
  ffn["moe_loss_weight"] = c.router_aux_loss_coef;
  ffn["moe_normalize_expert_weights"] = c.norm_topk_prob ? nlohmann::ordered_json(c.topk_norm_p) : nlohmann::ordered_json(nullptr);
  j["ffn_config"] = ffn;
  j["output_router_logits"] = c.output_router_logits;
  j["initializer_range"] = c.initializer_range;
  j["tie_word_embeddings"] = false;
  AddCommonFields(c, &j);
  return j;
}

// Mamba's and FalconMamba's config.json, under MambaConfig's names.
nlohmann::ordered_json MambaJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["state_size"] = c.state_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["layer_norm_epsilon"] = c.rms_norm_eps;
  j["expand"] = c.expand;
  j["intermediate_size"] = c.intermediate_size;
  j["conv_kernel"] = c.conv_kernel;
  j["use_bias"] = c.mamba_use_bias;
  j["use_conv_bias"] = c.use_conv_bias;
  j["hidden_act"] = c.hidden_act;
  j["initializer_range"] = c.initializer_range;
  j["residual_in_fp32"] = c.residual_in_fp32;
  j["time_step_rank"] = c.time_step_rank;
  if (c.model_type == "falcon_mamba") j["mixer_rms_eps"] = c.mixer_rms_eps;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  AddCommonFields(c, &j);
  return j;
}

}  // namespace

nlohmann::ordered_json ModelConfig::ToJson() const {
  if (mamba) return MambaJson(*this);
  if (model_type == "gpt2") return Gpt2Json(*this);
  if (model_type == "gptj") return GptjJson(*this);
  if (model_type == "gpt_bigcode") return GptBigCodeJson(*this);
  if (model_type == "opt") return OptJson(*this);
  if (model_type == "bloom") return BloomJson(*this);
  if (dbrx) return DbrxJson(*this);
  if (model_type == "gpt_neo") return GptNeoJson(*this);
  nlohmann::ordered_json j;
  j["architectures"] = {architecture};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  if (model_type == "gpt_neox") {  // GPTNeoXConfig's names, old and new
    j.erase("num_key_value_heads");
    j.erase("head_dim");
    j["layer_norm_eps"] = rms_norm_eps;
    j["use_parallel_residual"] = parallel_residual;
    j["rotary_pct"] = partial_rotary_factor;
    j["partial_rotary_factor"] = partial_rotary_factor;
    j["rotary_emb_base"] = rope_theta;
    j["hidden_dropout"] = residual_dropout;
  } else if (model_type == "cohere" || model_type == "cohere2") {  // CohereConfig's, Cohere2Config's names
    j["layer_norm_eps"] = rms_norm_eps;
    j["logit_scale"] = logit_scale;
    if (model_type == "cohere") j["use_qk_norm"] = qk_layer_norm;
  } else if (model_type == "starcoder2") {  // Starcoder2Config's names
    j.erase("head_dim");
    j["norm_epsilon"] = rms_norm_eps;
    j["use_bias"] = attention_bias;
    j["residual_dropout"] = residual_dropout;
    j["embedding_dropout"] = embedding_dropout;
  } else if (model_type == "stablelm") {  // StableLmConfig's names
    j.erase("head_dim");
    j["layer_norm_eps"] = rms_norm_eps;
    j["partial_rotary_factor"] = partial_rotary_factor;
    j["use_qkv_bias"] = attention_bias;
    j["use_parallel_residual"] = parallel_residual;
    j["qk_layernorm"] = qk_layer_norm;
    j["hidden_dropout"] = 0.0;
  } else if (model_type == "falcon") {
    // FalconConfig's names: the new decoder architecture where the layer has two
    // parallel norms or grouped key/value heads, else the old one with multi_query
    // for one key/value head.
    const bool two_norms = parallel_residual && !one_norm_per_layer;
    const bool grouped = num_key_value_heads != 1 && num_key_value_heads != num_attention_heads;
    const bool new_architecture = two_norms || grouped;
    for (const char* key : {"intermediate_size", "num_key_value_heads", "head_dim"}) j.erase(key);
    j["new_decoder_architecture"] = new_architecture;
    j["multi_query"] = num_key_value_heads == 1;
    j["num_kv_heads"] = num_key_value_heads;
    if (new_architecture) j["num_ln_in_parallel_attn"] = two_norms ? 2 : 1;
    j["parallel_attn"] = parallel_residual;
    j["bias"] = attention_bias;
    j["alibi"] = false;
    j["ffn_hidden_size"] = intermediate_size;
    j["activation"] = hidden_act;
    j["layer_norm_epsilon"] = rms_norm_eps;
    j["hidden_dropout"] = residual_dropout;
  } else if (model_type == "olmo") {  // OlmoConfig's: no eps (its LayerNorms' is 1e-5), clip_qkv
    j["clip_qkv"] = clip_qkv > 0 ? nlohmann::ordered_json(clip_qkv) : nlohmann::ordered_json(nullptr);
  } else if (model_type == "phi") {  // PhiConfig's names
    j.erase("head_dim");
    j["layer_norm_eps"] = rms_norm_eps;
    j["partial_rotary_factor"] = partial_rotary_factor;
    j["resid_pdrop"] = residual_dropout;
    j["embd_pdrop"] = embedding_dropout;
    j["qk_layernorm"] = qk_layer_norm;
  } else {
    j["rms_norm_eps"] = rms_norm_eps;
  }
  j["rope_theta"] = rope_theta;
  if (rope_scaling && rope_scaling->rope_type == "linear") {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rope_scaling->factor}};
  } else if (rope_scaling && rope_scaling->rope_type == "longrope") {
    // "type" as Phi-3's configs write it (transformers 4.4x read only that key here).
    j["rope_scaling"] = {{"type", "longrope"},
                         {"short_factor", rope_scaling->short_factor},
                         {"long_factor", rope_scaling->long_factor},
                         {"factor", rope_scaling->factor},
                         {"attention_factor", rope_scaling->attention_factor},
                         {"original_max_position_embeddings", rope_scaling->original_max_position_embeddings}};
    j["original_max_position_embeddings"] = rope_scaling->original_max_position_embeddings;
  } else if (rope_scaling && rope_scaling->rope_type == "yarn") {
    // The resolved attention factor (mscale folded in); original_max_position_embeddings
    // only if it was given (some transformers versions take its presence as a cue).
    j["rope_scaling"] = {{"rope_type", "yarn"},
                         {"factor", rope_scaling->factor},
                         {"attention_factor", rope_scaling->attention_factor},
                         {"beta_fast", rope_scaling->beta_fast},
                         {"beta_slow", rope_scaling->beta_slow},
                         {"truncate", rope_scaling->truncate}};
    if (rope_scaling->original_max_position_embeddings > 0) {
      j["rope_scaling"]["original_max_position_embeddings"] = rope_scaling->original_max_position_embeddings;
    }
    // DeepSeek-V3's attention scale reads mscale_all_dim (the factor above already holds both).
    if (rope_scaling->mscale != 0) j["rope_scaling"]["mscale"] = rope_scaling->mscale;
    if (rope_scaling->mscale_all_dim != 0) j["rope_scaling"]["mscale_all_dim"] = rope_scaling->mscale_all_dim;
  } else if (rope_scaling && rope_scaling->rope_type == "dynamic") {
    j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", rope_scaling->factor}};
  } else if (rope_scaling) {
    j["rope_scaling"] = {{"rope_type", rope_scaling->rope_type},
                         {"factor", rope_scaling->factor},
                         {"low_freq_factor", rope_scaling->low_freq_factor},
                         {"high_freq_factor", rope_scaling->high_freq_factor},
                         {"original_max_position_embeddings", rope_scaling->original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (model_type == "phi3") j["partial_rotary_factor"] = partial_rotary_factor;
  if (model_type == "mistral" || model_type == "phi3" || model_type == "mixtral" || model_type == "starcoder2") j["sliding_window"] = sliding_window ? nlohmann::ordered_json(*sliding_window) : nullptr;
  if (model_type == "smollm3") {
    nlohmann::ordered_json flags = nlohmann::ordered_json::array();
    for (std::int64_t i = 0; i < num_hidden_layers; ++i) flags.push_back(uses_rope(i) ? 1 : 0);
    j["no_rope_layers"] = flags;
  }
  const bool gemma2 = model_type == "gemma2" || model_type == "gemma3_text";
  if (model_type == "granite") {
    j["embedding_multiplier"] = embedding_multiplier;
    j["attention_multiplier"] = attention_scale();
    j["residual_multiplier"] = residual_multiplier;
    j["logits_scaling"] = logits_scaling;
  }
  if (model_type == "gemma3_text" && local_rope_theta) j["rope_local_base_freq"] = *local_rope_theta;
  if (gemma2) {
    j["query_pre_attn_scalar"] = query_pre_attn_scalar ? nlohmann::ordered_json(*query_pre_attn_scalar) : nullptr;
    j["attn_logit_softcapping"] = attn_logit_softcapping > 0 ? nlohmann::ordered_json(attn_logit_softcapping) : nullptr;
    j["final_logit_softcapping"] = final_logit_softcapping > 0 ? nlohmann::ordered_json(final_logit_softcapping) : nullptr;
  }
  if (model_type == "qwen3_moe") {
    j["use_sliding_window"] = sliding_window.has_value();
    j["sliding_window"] = sliding_window ? nlohmann::ordered_json(*sliding_window) : nullptr;
  }
  if (model_type == "gpt_oss") {  // GptOssConfig's names
    j["num_local_experts"] = num_experts;
    j["num_experts_per_tok"] = num_experts_per_tok;
    j["swiglu_limit"] = swiglu_limit;
    j["output_router_logits"] = output_router_logits;
    j["router_aux_loss_coef"] = router_aux_loss_coef;
  }
  if (model_type == "mixtral") {
    j["num_local_experts"] = num_experts;
    j["num_experts_per_tok"] = num_experts_per_tok;
    j["router_jitter_noise"] = 0.0;
    j["output_router_logits"] = output_router_logits;
    j["router_aux_loss_coef"] = router_aux_loss_coef;
  } else if (model_type == "glm4_moe" || model_type == "deepseek_v3") {  // Glm4MoeConfig's, DeepseekV3Config's names
    std::int64_t dense = 0;
    while (dense < num_hidden_layers && !is_moe_layer(dense)) ++dense;
    if (model_type == "glm4_moe") {
      j["partial_rotary_factor"] = partial_rotary_factor;
      j["use_qk_norm"] = qk_norm;
    } else {
      j["q_lora_rank"] = q_lora_rank > 0 ? nlohmann::ordered_json(q_lora_rank) : nullptr;
      j["kv_lora_rank"] = kv_lora_rank;
      j["qk_nope_head_dim"] = qk_nope_head_dim;
      j["qk_rope_head_dim"] = qk_rope_head_dim;
      j["v_head_dim"] = v_head_dim;
      j["rope_interleave"] = rope_interleaved;
    }
    j["n_routed_experts"] = num_experts;
    j["num_experts_per_tok"] = num_experts_per_tok;
    j["moe_intermediate_size"] = moe_intermediate_size;
    j["n_shared_experts"] = moe_intermediate_size > 0 ? shared_expert_intermediate_size / moe_intermediate_size : 0;
    j["n_group"] = n_group;
    j["topk_group"] = topk_group;
    j["routed_scaling_factor"] = routed_scaling_factor;
    j["norm_topk_prob"] = norm_topk_prob;
    j["first_k_dense_replace"] = dense;
  } else if (model_type == "qwen2_moe" || model_type == "qwen3_moe") {
    j["num_experts"] = num_experts;
    j["num_experts_per_tok"] = num_experts_per_tok;
    j["moe_intermediate_size"] = moe_intermediate_size;
    j["norm_topk_prob"] = norm_topk_prob;
    if (model_type == "qwen2_moe") {
      j["shared_expert_intermediate_size"] = shared_expert_intermediate_size;
      j["qkv_bias"] = attention_bias;
    }
    j["decoder_sparse_step"] = 1;  // the dense layers, whatever made them so, listed:
    nlohmann::ordered_json dense = nlohmann::ordered_json::array();
    for (std::int64_t i = 0; i < num_hidden_layers; ++i) {
      if (!is_moe_layer(i)) dense.push_back(i);
    }
    j["mlp_only_layers"] = num_experts > 0 ? dense : nlohmann::ordered_json::array();
    j["output_router_logits"] = output_router_logits;
    j["router_aux_loss_coef"] = router_aux_loss_coef;
  }
  if (model_type == "qwen2" || model_type == "qwen3" || model_type == "qwen2_moe" || model_type == "smollm3" || gemma2 ||
      model_type == "cohere2" || model_type == "gpt_oss") {
    if (!gemma2 && model_type != "cohere2" && model_type != "gpt_oss") j["use_sliding_window"] = sliding_window.has_value();
    j["sliding_window"] = sliding_window ? nlohmann::ordered_json(*sliding_window) : nullptr;
    nlohmann::ordered_json types = nlohmann::ordered_json::array();
    std::int64_t first_sliding = num_hidden_layers;
    for (std::int64_t i = 0; i < num_hidden_layers; ++i) {
      const bool sliding = window_of(i) > 0;
      if (sliding) first_sliding = std::min(first_sliding, i);
      types.push_back(sliding ? "sliding_attention" : "full_attention");
    }
    if (model_type == "qwen2" || model_type == "qwen3" || model_type == "qwen2_moe") j["max_window_layers"] = first_sliding;
    if (model_type == "gemma3_text" || model_type == "cohere2") {
      // transformers before layer_types (4.50-4.52) read the period instead: written
      // where the layers follow one (all windowed but every p-th).
      for (std::int64_t p = 1; p <= num_hidden_layers + 1; ++p) {
        bool periodic = true;
        for (std::int64_t i = 0; i < num_hidden_layers; ++i) periodic = periodic && (window_of(i) > 0) == ((i + 1) % p != 0);
        if (periodic) {
          j["sliding_window_pattern"] = p;
          break;
        }
      }
    }  // read by versions without layer_types
    j["layer_types"] = types;
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["attention_bias"] = attention_bias;
  j["attention_dropout"] = attention_dropout;
  if (model_type != "gpt_neox" && model_type != "phi" && model_type != "starcoder2") j["mlp_bias"] = false;
  j["hidden_act"] = hidden_act;
  if (model_type == "gemma" || gemma2) j["hidden_activation"] = hidden_act;
  j["initializer_range"] = initializer_range;
  AddCommonFields(*this, &j);
  return j;
}

}  // namespace posttrain
