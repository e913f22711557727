#include "posttrain/core/crash_report.h"

#include <csignal>

#include "gtest/gtest.h"

namespace {

volatile int after_crash = 0;

// A frame the report must name: not inlined, not a tail call.
extern "C" __attribute__((noinline)) void PosttrainCrashReportTestCrashHere() {
  std::raise(SIGSEGV);
  after_crash = 1;
}

TEST(CrashReportTest, ACrashPrintsTheSignalAndASymbolizedStack) {
#ifdef POSTTRAIN_SANITIZED
  GTEST_SKIP() << "sanitized builds leave crash reports to the sanitizers";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        posttrain::InstallCrashReport("/proc/self/exe");
        PosttrainCrashReportTestCrashHere();
      },
      "SIGSEGV received(.|\n)*PosttrainCrashReportTestCrashHere");
#endif
}

}  // namespace
