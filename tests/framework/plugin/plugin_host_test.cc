#include "posttrain/plugin/plugin_host.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;
using testing::BuiltinPluginDir;
using testing::FixturePluginDir;

TEST(PluginHostTest, BuiltinPluginsProvideAllFourKinds) {
  PluginHost host;
  ASSERT_TRUE(host.LoadDirectory(BuiltinPluginDir()).ok());
  for (ComponentKind kind : {ComponentKind::kTrainer, ComponentKind::kRewardFunction,
                             ComponentKind::kSampler, ComponentKind::kDataAdapter}) {
    EXPECT_FALSE(host.registry().Names(kind).empty()) << ComponentKindName(kind);
  }
  const RegisteredComponent* jsonl = host.registry().Find(ComponentKind::kDataAdapter, "jsonl");
  ASSERT_NE(jsonl, nullptr);
  EXPECT_THAT(jsonl->library_path, HasSubstr("libposttrain_data_jsonl.so"));
  EXPECT_EQ(jsonl->plugin_name, "posttrain_data_jsonl");
}

TEST(PluginHostTest, LoadingTheSameLibraryTwiceIsANoOp) {
  PluginHost host;
  ASSERT_TRUE(host.LoadDirectory(BuiltinPluginDir()).ok());
  const size_t n = host.LibraryPaths().size();
  EXPECT_TRUE(host.LoadDirectory(BuiltinPluginDir()).ok());
  EXPECT_EQ(host.LibraryPaths().size(), n);
}

TEST(PluginHostTest, RefusesAPluginBuiltForAnotherApiVersion) {
  PluginHost host;
  absl::Status s = host.LoadDirectory(FixturePluginDir("wrong_api"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("libfixture_wrong_api.so"));
  EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("api_version ", kApiVersion + 1000)));
  EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("this host has api_version ", kApiVersion)));
}

TEST(PluginHostTest, RefusesALibraryThatIsNotAPlugin) {
  PluginHost host;
  absl::Status s = host.LoadDirectory(FixturePluginDir("not_a_plugin"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("libfixture_not_a_plugin.so' is not a posttrain plugin"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("posttrain_plugin_entry"));
}

TEST(PluginHostTest, RefusesTwoPluginsRegisteringTheSameName) {
  PluginHost host;
  ASSERT_TRUE(host.LoadDirectory(BuiltinPluginDir()).ok());
  absl::Status s = host.LoadDirectory(FixturePluginDir("duplicate"));
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(s.message()), HasSubstr("reward_function 'keyword' is registered twice"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("libposttrain_reward_keyword.so"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("libfixture_duplicate.so"));
}

TEST(PluginHostTest, MissingDirectoryAndNonLibraryFile) {
  PluginHost host;
  EXPECT_EQ(host.LoadDirectory("/nonexistent/plugins").code(), absl::StatusCode::kNotFound);
  const std::string dir = testing::TempDir("junk");
  testing::WriteFile(dir + "/libjunk.so", "this is not an ELF file");
  absl::Status s = host.LoadDirectory(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("cannot load plugin library"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("libjunk.so"));
}

TEST(PluginHostTest, PluginPathEnvironmentVariable) {
  ::setenv("POSTTRAIN_PLUGIN_PATH", FixturePluginDir("preference").c_str(), 1);
  PluginHost host;
  absl::Status s = host.LoadDefaultDirectories();
  ::unsetenv("POSTTRAIN_PLUGIN_PATH");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_NE(host.registry().Find(ComponentKind::kTrainer, "fixture_preference"), nullptr);
}

TEST(RegistryTest, UnknownNameListsKnownNamesOfThatKind) {
  const Registry& registry = testing::BuiltinHost().registry();
  absl::Status s = registry.UnknownName(ComponentKind::kRewardFunction, "keywrd", "r.toml");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(),
            "r.toml: unknown reward_function 'keywrd' (did you mean 'keyword'?); known "
            "reward_functions: accuracy, command, format, keyword, length, prm, repetition, reward_model");
}

TEST(RegistryTest, TrainersGetTheEngineOptions) {
  const RegisteredComponent* c =
      testing::BuiltinHost().registry().Find(ComponentKind::kTrainer, "reward_eval");
  ASSERT_NE(c, nullptr);
  EXPECT_NE(c->registration.schema.Find("per_device_train_batch_size"), nullptr);
  EXPECT_NE(c->registration.schema.Find("max_steps"), nullptr);
}

}  // namespace
}  // namespace posttrain
