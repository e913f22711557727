#include "posttrain/core/device.h"

#include "posttrain/core/autocast.h"

#include <ATen/Context.h>
#include <stdlib.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace posttrain {
namespace {

TEST(RunDeviceTest, UseCpuOrNoGpuIsTheCpu) {
  absl::StatusOr<at::Device> device = RunDevice(0, 1, /*use_cpu=*/true);
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(*device, at::Device(at::kCPU));
  if (!at::hasCUDA() || at::getNumGPUs() == 0) {
    device = RunDevice(0, 4, /*use_cpu=*/false);
    ASSERT_TRUE(device.ok()) << device.status();
    EXPECT_EQ(*device, at::Device(at::kCPU));
  }
}

TEST(RunDeviceTest, MoreRanksThanGpusIsRefusedWithWhatToDo) {
  if (!at::hasCUDA() || at::getNumGPUs() == 0) GTEST_SKIP() << "no GPU";
  const int gpus = static_cast<int>(at::getNumGPUs());
  absl::StatusOr<at::Device> device = RunDevice(0, gpus + 1, /*use_cpu=*/false);
  ASSERT_FALSE(device.ok());
  EXPECT_THAT(std::string(device.status().message()), ::testing::HasSubstr("use_cpu = true"));
  device = RunDevice(gpus - 1, gpus, false);
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(*device, at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(gpus - 1)));
}

// HF's enable_full_determinism: the process-wide switches, and a cuBLAS workspace
// setting the user chose is kept.
TEST(FullDeterminismTest, SetsLibtorchsSwitchesAndKeepsAUsersCublasSetting) {
  ASSERT_FALSE(at::globalContext().deterministicAlgorithms());
  ::unsetenv("CUBLAS_WORKSPACE_CONFIG");
  EnableFullDeterminism();
  EXPECT_TRUE(at::globalContext().deterministicAlgorithms());
  EXPECT_FALSE(at::globalContext().deterministicAlgorithmsWarnOnly());
  EXPECT_TRUE(at::globalContext().deterministicCuDNN());
  EXPECT_FALSE(at::globalContext().benchmarkCuDNN());
  ASSERT_NE(::getenv("CUBLAS_WORKSPACE_CONFIG"), nullptr);
  EXPECT_STREQ(::getenv("CUBLAS_WORKSPACE_CONFIG"), ":4096:8");
  ::setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8", 1);
  EnableFullDeterminism();
  EXPECT_STREQ(::getenv("CUBLAS_WORKSPACE_CONFIG"), ":16:8");
  // Back as it was, for other tests run in this process.
  ::unsetenv("CUBLAS_WORKSPACE_CONFIG");
  at::globalContext().setDeterministicAlgorithms(false, false);
  at::globalContext().setDeterministicCuDNN(false);
}

// A scope without autocast (rewards see plain precision) leaves autocast as it found
// it: on, with the dtype it had (CUDA's here: fp16, not the bf16 posttrain uses;
// CPU autocast takes bf16 only). Only thread-local flags: no GPU needed.
TEST(NoAutocastScopeTest, RestoresTheStateAndTheDtype) {
  SetAutocast(at::kCPU, true, at::kBFloat16);
  SetAutocast(at::kCUDA, true, at::kHalf);
  {
    const NoAutocastScope scope;
    EXPECT_FALSE(AutocastEnabled(at::kCPU));
    EXPECT_FALSE(AutocastEnabled(at::kCUDA));
  }
  EXPECT_TRUE(AutocastEnabled(at::kCPU));
  EXPECT_TRUE(AutocastEnabled(at::kCUDA));
  EXPECT_EQ(AutocastDtype(at::kCUDA), at::kHalf);
  SetAutocast(at::kCPU, false);
  SetAutocast(at::kCUDA, false);
}

}  // namespace
}  // namespace posttrain
