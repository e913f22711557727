// tokenizer.json components beyond byte-level BPE, each against a hand derivation
// from the tokenizers crate's documented behaviour (or, for Unigram, against an
// exhaustive search over every segmentation): WordPiece with BERT's normaliser,
// pre-tokenizer and post-processor; WordLevel; Unigram with byte fallback; BPE
// with an end-of-word suffix or a continuing-subword prefix; the character-class
// pre-tokenizers; added tokens' lstrip / rstrip / single_word / normalized; the
// WordPiece, BPEDecoder and CTC decoders.
#include <cmath>
#include <functional>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "posttrain/tokenizer/hf_tokenizer.h"

namespace posttrain {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Ids = std::vector<std::int64_t>;

std::unique_ptr<Tokenizer> Parse(const nlohmann::json& j) {
  auto tokenizer = ParseHfTokenizer(j.dump(), "", "t.json");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

// [[a, b], ...] (a braced list of pairs alone would read as an object).
nlohmann::json Pairs(const std::vector<std::pair<std::string, std::string>>& pairs) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [a, b] : pairs) out.push_back(nlohmann::json::array({a, b}));
  return out;
}

nlohmann::json Special(const std::string& content, std::int64_t id) {
  return {{"id", id}, {"content", content}, {"special", true}, {"normalized", false},
          {"lstrip", false}, {"rstrip", false}, {"single_word", false}};
}

TEST(TokenizerComponentsTest, BertWordPiecePipelineByHand) {
  nlohmann::json j = {
      {"normalizer", {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true},
                      {"strip_accents", nullptr}, {"lowercase", true}}},
      {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
      {"model", {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
                 {"max_input_chars_per_word", 10},
                 {"vocab", {{"[PAD]", 0}, {"[UNK]", 1}, {"[CLS]", 2}, {"[SEP]", 3}, {"the", 4}, {"cat", 5}, {"##s", 6},
                            {"play", 7}, {"##ing", 8}, {"un", 9}, {"##aff", 10}, {"##able", 11}, {".", 12}, {"!", 13},
                            {"中", 14}, {"文", 15}, {"cafe", 16}, {"cats", 17}}}}},
      {"post_processor", {{"type", "BertProcessing"}, {"sep", {"[SEP]", 3}}, {"cls", {"[CLS]", 2}}}},
      {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
      {"added_tokens", {Special("[PAD]", 0), Special("[UNK]", 1), Special("[CLS]", 2), Special("[SEP]", 3)}}};
  auto tokenizer = Parse(j);
  ASSERT_NE(tokenizer, nullptr);
  // BertNormalizer: \x01 and U+200B (C*) dropped, \t a space, CJK padded with spaces,
  // accents stripped (lowercase implies it), lowercased:
  //   "the cats playing! unaffable cafe. 中  文  dog"
  // BertPreTokenizer: whitespace removed, punctuation isolated:
  //   the | cats | playing | ! | unaffable | cafe | . | 中 | 文 | dog | catscatscat
  // WordPiece, longest match first: cats is in the vocabulary whole; play ##ing;
  // un ##aff ##able; dog has no cover: [UNK]; catscatscat has 11 characters, over
  // max_input_chars_per_word (10): [UNK]. BertProcessing: [CLS] ... [SEP].
  const Ids ids = tokenizer->Encode("The\x01 CATs\tplay\xE2\x80\x8Bing! Unaffable caf\xC3\xA9.\xE4\xB8\xAD\xE6\x96\x87 dog catscatscat", true);
  EXPECT_EQ(ids, (Ids{2, 4, 17, 7, 8, 13, 9, 10, 11, 16, 12, 14, 15, 1, 1, 3}));
  // Without the whole word "cats", the greedy match takes cat ##s.
  EXPECT_EQ(tokenizer->Encode("cats", false), (Ids{17}));
  // WordPiece decoder: "##" pieces join the word before, others get a space; the
  // cleanup closes " !" and " .".
  EXPECT_EQ(tokenizer->Decode({2, 4, 5, 6, 7, 8, 13, 9, 10, 11, 16, 12, 14, 15, 1, 3}, false),
            "[CLS] the cats playing! unaffable cafe. \xE4\xB8\xAD \xE6\x96\x87 [UNK] [SEP]");
  EXPECT_EQ(tokenizer->Decode({2, 4, 5, 6, 12, 3}, true), "the cats.");
}

TEST(TokenizerComponentsTest, WordLevelWithWhitespaceAndUnicodeLowercase) {
  nlohmann::json j = {
      {"normalizer", {{"type", "Lowercase"}}},
      {"pre_tokenizer", {{"type", "Whitespace"}}},
      {"model", {{"type", "WordLevel"}, {"unk_token", "<unk>"},
                 {"vocab", {{"<unk>", 0}, {"hello", 1}, {"world", 2}, {",", 3}, {"!?", 4}, {"\xC3\x9F", 5},
                            {"i\xCC\x87stanbul", 6}, {"x_y", 7}, {"\xCF\x83\xCF\x83", 8}}}}}};
  auto tokenizer = Parse(j);
  ASSERT_NE(tokenizer, nullptr);
  // Lowercase is char::to_lowercase: 'ẞ' → 'ß' (not case folding's "ss"), 'İ' →
  // "i̇" (i + U+0307, a mark: part of the word), 'Σ' → 'σ' wherever it stands.
  // Whitespace keeps \w+ and [^\w\s]+ runs: "x_y" is one word ('_' is \w).
  EXPECT_EQ(tokenizer->Encode("Hello, WORLD!? \xE1\xBA\x9E \xC4\xB0stanbul x_y \xCE\xA3\xCE\xA3 mars", false),
            (Ids{1, 3, 2, 4, 5, 6, 7, 8, 0}));
}

// Unigram: the best of every segmentation, found by exhaustive search (not
// Viterbi): pieces from the vocabulary; a character that no one-character piece
// covers is unk, scored min(score) - 10; adjacent unks fuse.
struct UnigramCase {
  std::vector<std::pair<std::string, double>> vocab;
  std::int64_t unk_id = 0;
};

Ids ExhaustiveUnigram(const UnigramCase& c, const std::string& word) {
  std::map<std::string, std::int64_t> ids;
  double min_score = 0;
  for (size_t i = 0; i < c.vocab.size(); ++i) {
    ids.emplace(c.vocab[i].first, static_cast<std::int64_t>(i));
    min_score = i == 0 ? c.vocab[i].second : std::min(min_score, c.vocab[i].second);
  }
  auto char_len = [&](size_t i) {
    const auto b = static_cast<unsigned char>(word[i]);
    return b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
  };
  double best = -INFINITY;
  Ids best_ids;
  std::function<void(size_t, double, Ids&)> search = [&](size_t pos, double score, Ids& path) {
    if (pos == word.size()) {
      if (score > best) {
        best = score;
        best_ids = path;
      }
      return;
    }
    bool single = false;
    for (size_t end = pos + 1; end <= word.size(); ++end) {
      auto it = ids.find(word.substr(pos, end - pos));
      if (it == ids.end()) continue;
      if (static_cast<int>(end - pos) == char_len(pos)) single = true;
      path.push_back(it->second);
      search(end, score + c.vocab[static_cast<size_t>(it->second)].second, path);
      path.pop_back();
    }
    if (!single) {
      path.push_back(c.unk_id);
      search(pos + static_cast<size_t>(char_len(pos)), score + min_score - 10, path);
      path.pop_back();
    }
  };
  Ids path;
  search(0, 0, path);
  Ids fused;
  for (std::int64_t id : best_ids) {
    if (!(id == c.unk_id && !fused.empty() && fused.back() == c.unk_id)) fused.push_back(id);
  }
  return fused;
}

TEST(TokenizerComponentsTest, UnigramIsTheBestSegmentationOfAnExhaustiveSearch) {
  const std::string sp = "\xE2\x96\x81";  // ▁
  UnigramCase c;
  c.vocab = {{"<unk>", 0.0}, {sp, -2.0},     {"a", -3.0},        {"b", -3.5},   {"ab", -4.0},       {sp + "ab", -5.5},
             {"abc", -6.0},  {"c", -4.2},    {"bc", -5.0},       {sp + "a", -4.4}, {"ca", -3.9},     {"cab", -7.57},
             {"d", -6.1},    {sp + "c", -5.2}, {"\xC3\xA9", -5.0}, {"bcab", -8.93}, {sp + "abca", -9.31}};
  nlohmann::json vocab = nlohmann::json::array();
  for (const auto& [piece, score] : c.vocab) vocab.push_back({piece, score});
  nlohmann::json j = {{"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "always"}, {"split", true}}},
                      {"model", {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", vocab}, {"byte_fallback", false}}},
                      {"decoder", {{"type", "Metaspace"}, {"replacement", sp}, {"prepend_scheme", "always"}, {"split", true}}}};
  auto tokenizer = Parse(j);
  ASSERT_NE(tokenizer, nullptr);
  // Every word over {a, b, c, d, é, x} up to 5 characters (x, like d·x, is outside
  // the vocabulary: unk).
  const std::vector<std::string> letters = {"a", "b", "c", "d", "\xC3\xA9", "x"};
  int checked = 0;
  std::function<void(std::string, int)> all = [&](std::string word, int left) {
    if (!word.empty()) {
      EXPECT_EQ(tokenizer->Encode(word, false), ExhaustiveUnigram(c, sp + word)) << word;
      ++checked;
    }
    if (left == 0) return;
    for (const std::string& l : letters) all(word + l, left - 1);
  };
  all("", 5);
  EXPECT_EQ(checked, 6 + 36 + 216 + 1296 + 7776);
  // By hand: "abca" → ▁ab·ca (-5.5 - 3.9 = -9.4) loses to ▁abca (-9.31).
  EXPECT_EQ(tokenizer->Encode("abca", false), (Ids{16}));
  // "xx" is one fused unk after ▁; the decoder turns ▁ back into a space (dropped first).
  EXPECT_EQ(tokenizer->Encode("xx", false), (Ids{1, 0}));
  EXPECT_EQ(tokenizer->Decode({5, 10, 1, 6}, false), "abca abc");

  // With byte_fallback, the fused unk becomes its bytes' <0xAB> tokens when all exist.
  j["model"]["byte_fallback"] = true;
  j["model"]["vocab"].push_back({"<0x78>", -20.0});  // 'x'
  auto bytes = Parse(j);
  ASSERT_NE(bytes, nullptr);
  EXPECT_EQ(bytes->Encode("xx", false), (Ids{1, 17, 17}));
  // 'ñ' (C3 B1) has no <0xC3>: unk.
  EXPECT_EQ(bytes->Encode("\xC3\xB1", false), (Ids{1, 0}));
}

TEST(TokenizerComponentsTest, BpeWithEndOfWordSuffixAndBpeDecoder) {
  nlohmann::json j = {
      {"pre_tokenizer", {{"type", "WhitespaceSplit"}}},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"end_of_word_suffix", "</w>"},
                 {"vocab", {{"<unk>", 0}, {"l", 1}, {"o", 2}, {"w", 3}, {"e", 4}, {"r", 5}, {"w</w>", 6}, {"r</w>", 7},
                            {"lo", 8}, {"low</w>", 9}, {"er</w>", 10}, {"low", 11}}},
                 {"merges", Pairs({{"l", "o"}, {"lo", "w</w>"}, {"e", "r</w>"}, {"lo", "w"}})}}},
      {"decoder", {{"type", "BPEDecoder"}, {"suffix", "</w>"}}}};
  auto tokenizer = Parse(j);
  ASSERT_NE(tokenizer, nullptr);
  // "low": l o w</w> → (rank 0) lo w</w> → (rank 1) low</w>.
  // "lower": l o w e r</w> → lo w e r</w> → (rank 2 before 3) lo w er</w> → low er</w>.
  // "rw": r w</w>, no merge.
  EXPECT_EQ(tokenizer->Encode("low  lower rw", false), (Ids{9, 11, 10, 5, 6}));
  EXPECT_EQ(tokenizer->Decode({9, 11, 10, 5, 6}, false), "low lower rw");
}

TEST(TokenizerComponentsTest, BpeWithContinuingSubwordPrefix) {
  nlohmann::json j = {
      {"pre_tokenizer", {{"type", "WhitespaceSplit"}}},
      {"model", {{"type", "BPE"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
                 {"vocab", {{"[UNK]", 0}, {"u", 1}, {"##n", 2}, {"##i", 3}, {"un", 4}, {"uni", 5}, {"##t", 6}, {"n", 7}}},
                 {"merges", Pairs({{"u", "##n"}, {"un", "##i"}})}}},
      {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", false}}}};
  auto tokenizer = Parse(j);
  ASSERT_NE(tokenizer, nullptr);
  // "unit": u ##n ##i ##t → un ##i ##t → uni ##t. "nut": n, then ##u is not in the
  // vocabulary ([UNK]), ##t.
  EXPECT_EQ(tokenizer->Encode("unit nut", false), (Ids{5, 6, 7, 0, 6}));
  EXPECT_EQ(tokenizer->Decode({5, 6, 7, 6}, false), "unit nt");
}

// Pre-tokenizers by the pieces they make: a WordLevel vocabulary of exactly the
// expected pieces (anything else would be <unk>, id 0).
Ids PiecesThrough(const nlohmann::json& pre_tokenizer, const std::vector<std::string>& pieces, const std::string& text) {
  nlohmann::json vocab = {{"<unk>", 0}};
  Ids expected;
  for (const std::string& p : pieces) {
    if (!vocab.contains(p)) vocab[p] = static_cast<std::int64_t>(vocab.size());
    expected.push_back(vocab[p].get<std::int64_t>());
  }
  auto tokenizer = Parse({{"pre_tokenizer", pre_tokenizer}, {"model", {{"type", "WordLevel"}, {"unk_token", "<unk>"}, {"vocab", vocab}}}});
  if (tokenizer == nullptr) return {};
  const Ids ids = tokenizer->Encode(text, false);
  EXPECT_EQ(ids, expected) << pre_tokenizer.dump() << " on '" << text << "'";
  return ids;
}

TEST(TokenizerComponentsTest, CharacterClassPreTokenizersByHand) {
  // Punctuation: ASCII punctuation ('$', '+', '^' are Unicode symbols but ASCII
  // punctuation) and Unicode P* ('¿', '—'); each character its own match.
  PiecesThrough({{"type", "Punctuation"}}, {"a", ".", ".", "b", "$", "c", "\xC2\xBF", "d", "\xE2\x80\x94", "+", "^"},
                "a..b$c\xC2\xBF" "d\xE2\x80\x94+^");
  PiecesThrough({{"type", "Punctuation"}, {"behavior", "Contiguous"}}, {"a", "..", "b", "!?", "c"}, "a..b!?c");
  PiecesThrough({{"type", "Punctuation"}, {"behavior", "MergedWithPrevious"}}, {"a.", ".", "b!"}, "a..b!");
  PiecesThrough({{"type", "Punctuation"}, {"behavior", "Removed"}}, {"a", "b"}, "a..b!");
  // WhitespaceSplit: every White_Space character (NBSP U+00A0, ideographic U+3000) removed.
  PiecesThrough({{"type", "WhitespaceSplit"}}, {"a", "b!", "c", "d"}, " a\tb!\xC2\xA0" "c\xE3\x80\x80\n d ");
  // Whitespace: \w+ and [^\w\s]+ runs; digits and letters of any script are \w.
  PiecesThrough({{"type", "Whitespace"}}, {"it", "'", "s", "\xCE\xB1\xCE\xB2" "12", "--!", "x"}, "it's \xCE\xB1\xCE\xB2" "12--! x");
  PiecesThrough({{"type", "BertPreTokenizer"}}, {"don", "'", "t", "stop", "!", "!"}, "don't  stop!!");
  PiecesThrough({{"type", "CharDelimiterSplit"}, {"delimiter", "|"}}, {"a b", "c"}, "a b||c|");
  PiecesThrough({{"type", "FixedLength"}, {"length", 3}}, {"abc", "d\xC3\xA9" "f", "g"}, "abcd\xC3\xA9" "fg");
  PiecesThrough({{"type", "Sequence"},
                 {"pretokenizers", {{{"type", "WhitespaceSplit"}}, {{"type", "Digits"}, {"individual_digits", true}}}}},
                {"ab", "1", "2", "c"}, "ab12c");
}

TEST(TokenizerComponentsTest, AddedTokenStripSingleWordAndNormalizedMatching) {
  nlohmann::json mask = Special("<mask>", 10), sep = Special("<sep>", 11);
  mask["lstrip"] = true;
  sep["rstrip"] = true;
  nlohmann::json yes = {{"id", 12}, {"content", "yes"}, {"special", false}, {"normalized", false}, {"single_word", true},
                        {"lstrip", false}, {"rstrip", false}};
  nlohmann::json hi = {{"id", 13}, {"content", "HI"}, {"special", false}, {"normalized", true}, {"single_word", false},
                       {"lstrip", false}, {"rstrip", false}};
  // No pre-tokenizer: each text section between added tokens is one word.
  nlohmann::json j = {{"normalizer", {{"type", "Lowercase"}}},
                      {"model", {{"type", "WordLevel"}, {"unk_token", "<unk>"},
                                 {"vocab", {{"<unk>", 0}, {"a", 1}, {" b", 2}, {"b", 3}, {"a ", 4}, {"yesno", 5}, {" there", 6},
                                            {" ", 7}}}}},
                      {"added_tokens", {mask, sep, yes, hi}}};
  auto tokenizer = Parse(j);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Encode("a <mask> b", false), (Ids{1, 10, 2}));  // lstrip: "a" <mask> " b"
  EXPECT_EQ(tokenizer->Encode("a <sep> b", false), (Ids{4, 11, 3}));   // rstrip: "a " <sep> "b"
  EXPECT_EQ(tokenizer->Encode("yes", false), (Ids{12}));
  EXPECT_EQ(tokenizer->Encode("yesno", false), (Ids{5}));             // single_word: not inside a word
  // A normalized token is matched in the normalised text by its normalised content:
  // "HI" and "hi" both lowercase to it.
  EXPECT_EQ(tokenizer->Encode("HI there", false), (Ids{13, 6}));
  EXPECT_EQ(tokenizer->Encode("hi there", false), (Ids{13, 6}));
  // A special token is matched in the raw text only ("<MASK>" is text, lowercased).
  EXPECT_EQ(tokenizer->Encode("<MASK>", false), (Ids{0}));
  EXPECT_EQ(tokenizer->Decode({4, 11, 3}, true), "a b");
}

// transformers' LlamaTokenizerFast (and Gemma's, CodeLlama's) rebuild the
// post-processor from tokenizer_config.json: bos if add_bos_token (default true),
// eos if add_eos_token; other classes keep tokenizer.json's.
TEST(TokenizerComponentsTest, LlamaTokenizerClassesTakeAddBosAndEosFromTheConfig) {
  const nlohmann::json j = {
      {"model", {{"type", "WordLevel"}, {"unk_token", "<unk>"}, {"vocab", {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"hi", 3}}}}},
      {"added_tokens", {Special("<s>", 1), Special("</s>", 2)}}};
  auto ids = [&](const nlohmann::json& config) {
    auto t = ParseHfTokenizer(j.dump(), config.dump(), "t.json");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? (*t)->Encode("hi", true) : Ids{};
  };
  const nlohmann::json llama = {{"tokenizer_class", "LlamaTokenizerFast"}, {"bos_token", "<s>"}, {"eos_token", "</s>"}};
  EXPECT_EQ(ids(llama), (Ids{1, 3}));
  nlohmann::json both = llama;
  both["add_eos_token"] = true;
  EXPECT_EQ(ids(both), (Ids{1, 3, 2}));
  nlohmann::json none = both;
  none["add_bos_token"] = false;
  none["add_eos_token"] = false;
  EXPECT_EQ(ids(none), (Ids{3}));
  EXPECT_EQ(ids({{"tokenizer_class", "PreTrainedTokenizerFast"}, {"bos_token", "<s>"}, {"add_eos_token", true}}), (Ids{3}));
  auto missing = ParseHfTokenizer(j.dump(), nlohmann::json{{"tokenizer_class", "GemmaTokenizer"}}.dump(), "t.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("sets add_bos_token but its token is missing"));
}

TEST(TokenizerComponentsTest, CtcDecoderByHand) {
  nlohmann::json j = {{"model", {{"type", "WordLevel"}, {"unk_token", "<unk>"},
                                 {"vocab", {{"<unk>", 0}, {"<pad>", 1}, {"h", 2}, {"e", 3}, {"|", 4}, {"l", 5}, {"o", 6}}}}},
                      {"decoder", {{"type", "CTC"}, {"pad_token", "<pad>"}, {"word_delimiter_token", "|"}, {"cleanup", true}}}};
  auto tokenizer = Parse(j);
  ASSERT_NE(tokenizer, nullptr);
  // Repeats collapse (h h → h), then padding goes (so l <pad> l stays l l), | is a space.
  EXPECT_EQ(tokenizer->Decode({1, 2, 2, 1, 3, 4, 5, 1, 5, 6}, false), "he llo");
}

TEST(TokenizerComponentsTest, MisconfiguredModelsAreRefusedByName) {
  auto message = [](const nlohmann::json& j) {
    auto t = ParseHfTokenizer(j.dump(), "", "t.json");
    return t.ok() ? std::string("ok") : std::string(t.status().message());
  };
  EXPECT_THAT(message({{"model", {{"type", "WordPiece"}, {"vocab", {{"a", 0}}}}}}),
              HasSubstr("t.json: model.unk_token '[UNK]' is not in model.vocab"));
  EXPECT_THAT(message({{"model", {{"type", "WordLevel"}, {"vocab", {{"a", 0}}}, {"unk_token", "<unk>"}}}}),
              HasSubstr("model.unk_token '<unk>' is not in model.vocab"));
  EXPECT_THAT(message({{"model", {{"type", "Unigram"}, {"vocab", nlohmann::json::array({nlohmann::json::array({"a", -1.0})})}}}}), HasSubstr("the Unigram model has no unk_id"));
  EXPECT_THAT(message({{"model", {{"type", "Unigram"}, {"unk_id", 3}, {"vocab", nlohmann::json::array({nlohmann::json::array({"a", -1.0})})}}}}),
              HasSubstr("unk_id 3 is outside model.vocab (1 pieces)"));
  EXPECT_THAT(message({{"model", {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", nlohmann::json::array({nlohmann::json::array({"a", "x"})})}}}}),
              HasSubstr("model.vocab[0] is not [piece, score]"));
  EXPECT_THAT(message({{"model", {{"type", "BPE"}, {"unk_token", "a"}, {"dropout", 0.1}, {"vocab", {{"a", 0}}}, {"merges", nlohmann::json::array()}}}}),
              HasSubstr("BPE dropout (0.1) makes encoding random"));
  EXPECT_THAT(message({{"model", {{"type", "BPE"}, {"unk_token", "a"}, {"continuing_subword_prefix", "##"},
                                  {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", Pairs({{"a", "b"}})}}}}),
              HasSubstr("merge 'a b': the second token lacks the continuing_subword_prefix '##'"));
  EXPECT_THAT(message({{"model", {{"type", "Transducer"}, {"vocab", {{"a", 0}}}}}}),
              HasSubstr("model type 'Transducer' is not supported (BPE, WordPiece, WordLevel, Unigram)"));
  EXPECT_THAT(message({{"pre_tokenizer", {{"type", "UnicodeScripts"}}},
                       {"model", {{"type", "WordLevel"}, {"vocab", {{"<unk>", 0}}}, {"unk_token", "<unk>"}}}}),
              HasSubstr("pre_tokenizer type 'UnicodeScripts' is not supported"));
}

}  // namespace
}  // namespace posttrain
