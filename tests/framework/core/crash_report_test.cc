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

// A call through a null function pointer: the pc is 0, which has no unwind tables.
extern "C" __attribute__((noinline)) void PosttrainCrashReportTestCallNull() {
  void (*volatile target)() = nullptr;
  target();
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

// Where unwinding cannot start (pc 0), the report still names the caller: the
// return address the bad call left at the stack pointer.
TEST(CrashReportTest, ACallThroughANullPointerNamesTheCaller) {
#ifdef POSTTRAIN_SANITIZED
  GTEST_SKIP() << "sanitized builds leave crash reports to the sanitizers";
#elif !defined(__x86_64__)
  GTEST_SKIP() << "the interrupted context is read on x86-64 only";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        posttrain::InstallCrashReport("/proc/self/exe");
        PosttrainCrashReportTestCallNull();
      },
      "SIGSEGV received in thread [0-9]+ \\(the main thread\\), address 0x0+\n"
      "  faulting pc:\n    @ 0x0+  \\(unknown\\)  \\(no library[^\n]*\n"
      "  word at the stack pointer[^\n]*\n    @ 0x[0-9a-f]+  PosttrainCrashReportTestCallNull");
#endif
}

}  // namespace

