#include "posttrain/core/crash_report.h"

#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "absl/debugging/symbolize.h"

namespace posttrain {
namespace {

// Only async-signal-safe work from here on: write(2), no allocation, no stdio.
void Write(const char* text) {
  for (size_t left = std::strlen(text); left > 0;) {
    const ssize_t n = ::write(STDERR_FILENO, text, left);
    if (n <= 0) return;
    text += n;
    left -= static_cast<size_t>(n);
  }
}

void WriteHex(std::uintptr_t value) {
  char digits[2 + 2 * sizeof(value) + 1] = "0x";
  for (size_t i = 0; i < 2 * sizeof(value); ++i) {
    digits[2 + i] = "0123456789abcdef"[(value >> (4 * (2 * sizeof(value) - 1 - i))) & 0xf];
  }
  digits[sizeof(digits) - 1] = '\0';
  Write(digits);
}

const char* SignalName(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGABRT: return "SIGABRT";
    default: return "a fatal signal";
  }
}

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
std::atomic<bool> reporting{false};

void OnFatalSignal(int sig) {
  if (!reporting.exchange(true)) {
    Write("*** posttrain: ");
    Write(SignalName(sig));
    Write(" received; stack, innermost first:\n");
    // Unwinding by the compiler's unwind tables (libgcc), which optimized code
    // without frame pointers has; names from the ELF symbol tables.
    void* frames[64];
    const int n = ::backtrace(frames, 64);
    for (int i = 0; i < n; ++i) {
      // A return address points past its call: look up the call itself.
      const auto pc = reinterpret_cast<std::uintptr_t>(frames[i]) - (i > 0 ? 1 : 0);
      char name[512];
      Write("    @ ");
      WriteHex(pc);
      Write("  ");
      Write(absl::Symbolize(reinterpret_cast<void*>(pc), name, sizeof(name)) ? name : "(unknown)");
      Write("\n");
    }
  }
  // Die of the signal itself (the handler was reset by SA_RESETHAND).
  ::raise(sig);
}

}  // namespace

void InstallCrashReport(const char* argv0) {
#ifdef POSTTRAIN_SANITIZED
  (void)argv0;  // the sanitizers report crashes with their own handlers
#else
  absl::InitializeSymbolizer(argv0);
  void* warm[1];
  ::backtrace(warm, 1);  // loads the unwinder now, not inside a signal handler
  // A stack of its own, so that a stack overflow is reported too.
  static char alternate_stack[1 << 16];
  stack_t stack{};
  stack.ss_sp = alternate_stack;
  stack.ss_size = sizeof(alternate_stack);
  ::sigaltstack(&stack, nullptr);
  struct sigaction action {};
  action.sa_handler = OnFatalSignal;
  action.sa_flags = SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  for (int sig : kSignals) ::sigaction(sig, &action, nullptr);
#endif
}

}  // namespace posttrain
