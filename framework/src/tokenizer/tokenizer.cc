#include "posttrain/tokenizer/tokenizer.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"
#include "posttrain/tokenizer/hf_tokenizer.h"
#include "spm_processor.h"

namespace posttrain {
namespace fs = std::filesystem;

namespace {

// Opens libposttrain_spm.so (beside libposttrain.so, in posttrain/) once.
absl::StatusOr<internal::SpmCreateFn*> SpmFactory() {
  static absl::StatusOr<internal::SpmCreateFn*>* factory = [] {
    Dl_info info{};
    dladdr(reinterpret_cast<void*>(&LoadSentencePieceTokenizer), &info);
    const std::string module =
        (fs::path(info.dli_fname != nullptr ? info.dli_fname : "").parent_path() / "posttrain" / "libposttrain_spm.so")
            .string();
#ifdef POSTTRAIN_SANITIZED
    // The sanitizers' dlopen interceptor refuses RTLD_DEEPBIND (the library's own
    // malloc references could bypass them), and without it sentencepiece meets
    // libtorch's protobuf and aborts. Sanitized builds call libc's dlopen past the
    // interceptor: the module's allocations still go through the sanitizer's malloc,
    // which libstdc++ was bound to when it loaded.
    using DlopenFn = void*(const char*, int);
    auto* open_library = reinterpret_cast<DlopenFn*>(dlsym(RTLD_NEXT, "dlopen"));
    if (open_library == nullptr) open_library = &dlopen;
#else
    auto* open_library = &dlopen;
#endif
    void* handle = open_library(module.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      return new absl::StatusOr<internal::SpmCreateFn*>(absl::FailedPreconditionError(
          absl::StrCat("cannot load the SentencePiece module '", module, "': ", dlerror())));
    }
    auto* create = reinterpret_cast<internal::SpmCreateFn*>(dlsym(handle, internal::kSpmCreateSymbol));
    if (create == nullptr) {
      return new absl::StatusOr<internal::SpmCreateFn*>(
          absl::FailedPreconditionError(absl::StrCat("'", module, "' lacks ", internal::kSpmCreateSymbol)));
    }
    return new absl::StatusOr<internal::SpmCreateFn*>(create);  // kept loaded until exit
  }();
  return *factory;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  absl::Status Init(const std::string& path) {
    POSTTRAIN_ASSIGN_OR_RETURN(internal::SpmCreateFn* create, SpmFactory());
    processor_.reset(create());
    if (std::string error = processor_->Load(path); !error.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot load SentencePiece model '", path, "': ", error));
    }
    if (processor_->bos_id() >= 0) bos_token_id_ = processor_->bos_id();
    if (processor_->eos_id() >= 0) eos_token_id_ = processor_->eos_id();
    if (processor_->pad_id() >= 0) pad_token_id_ = processor_->pad_id();
    return absl::OkStatus();
  }

  std::vector<std::int64_t> Encode(absl::string_view text, bool add_special_tokens) const override {
    std::vector<int> ids = processor_->Encode(std::string(text));
    std::vector<std::int64_t> out;
    if (add_special_tokens && bos_token_id_) out.push_back(*bos_token_id_);
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  std::string Decode(absl::Span<const std::int64_t> ids, bool skip_special_tokens) const override {
    std::vector<int> kept;
    for (std::int64_t id : ids) {
      if (id < 0 || id >= processor_->size()) continue;
      if (skip_special_tokens && processor_->IsControl(static_cast<int>(id))) continue;
      kept.push_back(static_cast<int>(id));
    }
    return processor_->Decode(kept);
  }

  std::int64_t vocab_size() const override { return processor_->size(); }
  std::optional<std::int64_t> TokenToId(absl::string_view token) const override {
    const int id = processor_->PieceToId(std::string(token));
    if (processor_->IdToPiece(id) != token) return std::nullopt;
    return id;
  }
  std::string IdToToken(std::int64_t id) const override {
    if (id < 0 || id >= processor_->size()) return "";
    return processor_->IdToPiece(static_cast<int>(id));
  }

 private:
  std::unique_ptr<internal::SpmProcessor> processor_;
};

// ---- A minimal reader of SentencePiece's ModelProto (protobuf wire format) ------
//   ModelProto      { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
//                     NormalizerSpec normalizer_spec = 3; }
//   SentencePiece   { string piece = 1; float score = 2; Type type = 3; }
//                   Type: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
//   TrainerSpec     { ModelType model_type = 3 (UNIGRAM 1, BPE 2); bool byte_fallback = 35; }
//   NormalizerSpec  { string name = 1; bool add_dummy_prefix = 3 [default true];
//                     bool remove_extra_whitespaces = 4 [default true];
//                     bool escape_whitespaces = 5 [default true]; }

struct WireReader {
  absl::string_view data;
  size_t pos = 0;
  bool ok = true;
  bool done() const { return pos >= data.size() || !ok; }
  std::uint64_t Varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= data.size()) { ok = false; return 0; }
      const auto b = static_cast<unsigned char>(data[pos++]);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    ok = false;
    return 0;
  }
  // Reads one field: number, wire type, and its payload (varint value, or bytes).
  bool Next(std::uint32_t* field, std::uint64_t* value, absl::string_view* bytes) {
    const std::uint64_t key = Varint();
    if (!ok) return false;
    *field = static_cast<std::uint32_t>(key >> 3);
    switch (key & 7) {
      case 0: *value = Varint(); break;
      case 1: if (pos + 8 > data.size()) { ok = false; return false; } *bytes = data.substr(pos, 8); pos += 8; break;
      case 5: if (pos + 4 > data.size()) { ok = false; return false; } *bytes = data.substr(pos, 4); pos += 4; break;
      case 2: {
        const std::uint64_t n = Varint();
        if (!ok || pos + n > data.size()) { ok = false; return false; }
        *bytes = data.substr(pos, n);
        pos += n;
        break;
      }
      default: ok = false; return false;
    }
    return ok;
  }
};

struct SpmPiece {
  std::string piece;
  float score = 0;
  int type = 1;
};

struct SpmModel {
  std::vector<SpmPiece> pieces;
  int model_type = 1;
  bool byte_fallback = false;
  std::string normalizer_name = "nmt_nfkc";
  bool add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

absl::StatusOr<SpmModel> ReadSpmModel(const std::string& path) {
  POSTTRAIN_ASSIGN_OR_RETURN(std::string content, ReadTextFile(path));
  SpmModel model;
  WireReader top{content};
  std::uint32_t field;
  std::uint64_t value = 0;
  absl::string_view bytes;
  while (!top.done() && top.Next(&field, &value, &bytes)) {
    if (field == 1) {
      SpmPiece piece;
      WireReader r{bytes};
      while (!r.done() && r.Next(&field, &value, &bytes)) {
        if (field == 1) piece.piece = std::string(bytes);
        if (field == 2 && bytes.size() == 4) std::memcpy(&piece.score, bytes.data(), 4);
        if (field == 3) piece.type = static_cast<int>(value);
      }
      if (!r.ok) break;
      model.pieces.push_back(std::move(piece));
    } else if (field == 2) {
      WireReader r{bytes};
      while (!r.done() && r.Next(&field, &value, &bytes)) {
        if (field == 3) model.model_type = static_cast<int>(value);
        if (field == 35) model.byte_fallback = value != 0;
      }
    } else if (field == 3) {
      WireReader r{bytes};
      while (!r.done() && r.Next(&field, &value, &bytes)) {
        if (field == 1) model.normalizer_name = std::string(bytes);
        if (field == 3) model.add_dummy_prefix = value != 0;
        if (field == 4) model.remove_extra_whitespaces = value != 0;
        if (field == 5) model.escape_whitespaces = value != 0;
      }
    }
  }
  if (!top.ok || model.pieces.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a SentencePiece model (protobuf)"));
  }
  return model;
}

size_t CountCodepoints(absl::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return absl::NotFoundError(absl::StrCat("tokenizer file '", path, "' does not exist"));
  auto tokenizer = std::make_unique<SentencePieceTokenizer>();
  POSTTRAIN_RETURN_IF_ERROR(tokenizer->Init(path));
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path) {
  std::error_code ec;
  fs::path json_path;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(fs::path(path) / "tokenizer.json", ec)) {
      json_path = fs::path(path) / "tokenizer.json";
    } else if (fs::exists(fs::path(path) / "tokenizer.model", ec)) {
      return LoadSentencePieceTokenizer((fs::path(path) / "tokenizer.model").string());
    } else {
      return absl::NotFoundError(absl::StrCat("'", path, "' has neither tokenizer.json nor tokenizer.model"));
    }
  } else if (absl::EndsWith(path, ".model")) {
    return LoadSentencePieceTokenizer(path);
  } else {
    json_path = path;
  }
  if (!fs::is_regular_file(json_path, ec)) return absl::NotFoundError(absl::StrCat("tokenizer file '", json_path.string(), "' does not exist"));
  POSTTRAIN_ASSIGN_OR_RETURN(std::string text, ReadTextFile(json_path.string()));
  std::string config;
  const fs::path config_path = json_path.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path, ec)) {
    POSTTRAIN_ASSIGN_OR_RETURN(config, ReadTextFile(config_path.string()));
  }
  return ParseHfTokenizer(text, config, json_path.string());
}

absl::StatusOr<ConvertedTokenizer> ConvertSentencePieceToHf(const std::string& model_path) {
  POSTTRAIN_ASSIGN_OR_RETURN(SpmModel spm, ReadSpmModel(model_path));
  if (spm.model_type != 2) {
    return absl::UnimplementedError(absl::StrCat("'", model_path, "': only SentencePiece BPE models convert (model_type ", spm.model_type, ")"));
  }
  if (spm.normalizer_name != "identity") {
    return absl::UnimplementedError(absl::StrCat("'", model_path, "': normalizer '", spm.normalizer_name,
                                                 "' has no exact tokenizer.json equivalent here (identity only)"));
  }
  using json = nlohmann::ordered_json;
  const std::string kSpace = "\xE2\x96\x81";  // ▁
  json vocab = json::object();
  json added = json::array();
  std::map<std::string, std::int64_t> ids;
  std::string unk, bos, eos;
  for (size_t i = 0; i < spm.pieces.size(); ++i) {
    const SpmPiece& p = spm.pieces[i];
    vocab[p.piece] = i;
    ids[p.piece] = static_cast<std::int64_t>(i);
    if (p.type == 2 || p.type == 3) {
      added.push_back({{"id", i}, {"content", p.piece}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", true}});
      if (p.type == 2) unk = p.piece;
      if (p.type == 3 && p.piece == "<s>") bos = p.piece;
      if (p.type == 3 && p.piece == "</s>") eos = p.piece;
    }
  }
  // BPE merges: every split of a normal piece into two vocabulary pieces, ranked by
  // the merged piece's score (SentencePiece merges the highest-scoring pair first).
  std::vector<std::tuple<float, std::int64_t, size_t, std::string, std::string>> merges;
  for (size_t i = 0; i < spm.pieces.size(); ++i) {
    const SpmPiece& p = spm.pieces[i];
    if (p.type != 1 && p.type != 4) continue;
    if (CountCodepoints(p.piece) < 2) continue;
    for (size_t k = 1; k < p.piece.size(); ++k) {
      if ((static_cast<unsigned char>(p.piece[k]) & 0xc0) == 0x80) continue;  // not a char boundary
      const std::string left = p.piece.substr(0, k), right = p.piece.substr(k);
      auto l = ids.find(left), r = ids.find(right);
      if (l == ids.end() || r == ids.end()) continue;
      if (spm.pieces[static_cast<size_t>(l->second)].type != 1 && spm.pieces[static_cast<size_t>(l->second)].type != 4) continue;
      if (spm.pieces[static_cast<size_t>(r->second)].type != 1 && spm.pieces[static_cast<size_t>(r->second)].type != 4) continue;
      merges.emplace_back(-p.score, static_cast<std::int64_t>(i), k, left, right);
    }
  }
  std::sort(merges.begin(), merges.end());
  json merge_list = json::array();
  for (const auto& m : merges) merge_list.push_back({std::get<3>(m), std::get<4>(m)});

  json normalizers = json::array();
  if (spm.remove_extra_whitespaces) {
    normalizers.push_back({{"type", "Replace"}, {"pattern", {{"Regex", "^ +"}}}, {"content", ""}});
    normalizers.push_back({{"type", "Replace"}, {"pattern", {{"Regex", " +$"}}}, {"content", ""}});
    normalizers.push_back({{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}});
  }
  json decoders = json::array({{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                               {{"type", "ByteFallback"}},
                               {{"type", "Fuse"}}});
  if (spm.add_dummy_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", normalizers.empty() ? json(nullptr) : json{{"type", "Sequence"}, {"normalizers", normalizers}}},
      {"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", kSpace},
                         {"prepend_scheme", spm.add_dummy_prefix ? "always" : "never"}, {"split", true}}},
      {"post_processor", bos.empty() ? json(nullptr)
                                     : json{{"type", "TemplateProcessing"},
                                            {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                                            {"pair", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                                                      {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                                      {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                                                      {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
                                            {"special_tokens", {{bos, {{"id", bos}, {"ids", {ids[bos]}}, {"tokens", {bos}}}}}}}},
      {"decoder", {{"type", "Sequence"}, {"decoders", decoders}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", unk.empty() ? json(nullptr) : json(unk)},
                 {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", true},
                 {"byte_fallback", spm.byte_fallback}, {"ignore_merges", false}, {"vocab", vocab},
                 {"merges", merge_list}}},
  };
  json config = {{"tokenizer_class", "LlamaTokenizerFast"},
                 {"add_bos_token", !bos.empty()},
                 {"add_eos_token", false},
                 {"clean_up_tokenization_spaces", false},
                 {"legacy", true},
                 {"model_max_length", 1000000000000000019884624838656.0}};
  if (!bos.empty()) config["bos_token"] = bos;
  if (!eos.empty()) config["eos_token"] = eos;
  if (!unk.empty()) config["unk_token"] = unk;
  return ConvertedTokenizer{tokenizer.dump(2) + "\n", config.dump(2) + "\n"};
}

}  // namespace posttrain
