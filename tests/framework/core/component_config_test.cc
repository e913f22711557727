#include "posttrain/core/component_config.h"

#include <stdexcept>

#include "gtest/gtest.h"

namespace posttrain {
namespace {

ComponentSchema Schema() {
  return ComponentSchema("doc")
      .Float("beta", 0.1, "KL coefficient")
      .Int("steps", 3, "steps")
      .String("loss_type", "sigmoid", "loss", {"sigmoid", "ipo"})
      .StringList("words", {"a"}, "words")
      .Required("path", OptionType::kString, "path");
}

TEST(ComponentConfigTest, GettersReturnRecipeValueOrSchemaDefault) {
  ComponentSchema schema = Schema();
  ComponentConfig config("x", &schema, {{"beta", OptionValue(0.5)}, {"path", OptionValue(std::string("p"))}},
                         "r.toml [trainer]");
  EXPECT_DOUBLE_EQ(config.GetFloat("beta"), 0.5);
  EXPECT_EQ(config.GetInt("steps"), 3);
  EXPECT_EQ(config.GetString("loss_type"), "sigmoid");
  EXPECT_EQ(config.GetStringList("words"), std::vector<std::string>{"a"});
  EXPECT_EQ(config.GetString("path"), "p");
  EXPECT_TRUE(config.Has("beta"));
  EXPECT_FALSE(config.Has("steps"));
}

TEST(ComponentConfigTest, RecordsReadKeysAndReportsUnread) {
  ComponentSchema schema = Schema();
  ComponentConfig config("x", &schema,
                         {{"beta", OptionValue(0.5)}, {"steps", OptionValue(std::int64_t{7})},
                          {"path", OptionValue(std::string("p"))}},
                         "w");
  config.GetFloat("beta");
  config.GetInt("steps");
  EXPECT_EQ(config.read_keys().count("beta"), 1u);
  EXPECT_EQ(config.UnreadKeys(), std::vector<std::string>{"path"});
}

TEST(ComponentConfigTest, IntOptionsReadAsFloat) {
  ComponentSchema schema = Schema();
  ComponentConfig config("x", &schema, {{"steps", OptionValue(std::int64_t{7})}}, "w");
  EXPECT_DOUBLE_EQ(config.GetFloat("steps"), 7.0);
}

TEST(ComponentConfigTest, UndeclaredOrMistypedReadIsAProgrammingError) {
  ComponentSchema schema = Schema();
  ComponentConfig config("x", &schema, {}, "w");
  EXPECT_THROW(config.GetFloat("gamma"), std::logic_error);
  EXPECT_THROW(config.GetInt("loss_type"), std::logic_error);
  EXPECT_THROW(config.GetString("path"), std::logic_error);  // required, missing
}

TEST(ComponentConfigTest, ErrorNamesWhereAndKey) {
  ComponentSchema schema = Schema();
  ComponentConfig config("x", &schema, {}, "r.toml [trainer]");
  absl::Status s = config.Error("beta", "must be > 0");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "r.toml [trainer]: beta: must be > 0");
}

TEST(ComponentSchemaTest, DuplicateOptionIsRefusedAndMergeSkipsKnown) {
  EXPECT_THROW(ComponentSchema().Float("a", 1, "").Float("a", 2, ""), std::logic_error);
  ComponentSchema a = ComponentSchema().Float("beta", 0.2, "");
  a.Merge(ComponentSchema().Float("beta", 9, "").Int("max_steps", -1, ""));
  ASSERT_EQ(a.options().size(), 2u);
  EXPECT_EQ(std::get<double>(*a.Find("beta")->default_value), 0.2);
}

TEST(FormatOptionValueTest, WritesTomlLiterals) {
  EXPECT_EQ(FormatOptionValue(OptionValue(true)), "true");
  EXPECT_EQ(FormatOptionValue(OptionValue(std::int64_t{3})), "3");
  EXPECT_EQ(FormatOptionValue(OptionValue(2.0)), "2.0");
  EXPECT_EQ(FormatOptionValue(OptionValue(std::string("a\"b\n"))), "\"a\\\"b\\n\"");
  EXPECT_EQ(FormatOptionValue(OptionValue(std::vector<std::string>{"x", "y"})), "[\"x\", \"y\"]");
  EXPECT_EQ(FormatOptionValue(OptionValue(std::vector<double>{1.0, 0.5})), "[1.0, 0.5]");
}

}  // namespace
}  // namespace posttrain
