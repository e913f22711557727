#include "posttrain/core/crash_report.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
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

void WriteDecimal(long value) {
  char digits[24];
  int i = sizeof(digits) - 1;
  digits[i] = '\0';
  const bool negative = value < 0;
  unsigned long v = negative ? -static_cast<unsigned long>(value) : static_cast<unsigned long>(value);
  do {
    digits[--i] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && i > 1);
  if (negative) digits[--i] = '-';
  Write(digits + i);
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

// "    @ 0x...  name  (library+0xoffset)": the library and offset name a frame
// even where the library has no symbol table (stripped vendor libraries).
void WriteFrame(std::uintptr_t pc) {
  char name[512];
  Write("    @ ");
  WriteHex(pc);
  Write("  ");
  Write(absl::Symbolize(reinterpret_cast<void*>(pc), name, sizeof(name)) ? name : "(unknown)");
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(pc), &info) != 0 && info.dli_fname != nullptr) {
    const char* base = std::strrchr(info.dli_fname, '/');
    Write("  (");
    Write(base != nullptr ? base + 1 : info.dli_fname);
    Write("+");
    WriteHex(pc - reinterpret_cast<std::uintptr_t>(info.dli_fbase));
    Write(")");
  } else {
    Write("  (no library: generated code, or a bad jump)");
  }
  Write("\n");
}

void OnFatalSignal(int sig, siginfo_t* info, void* context) {
  if (!reporting.exchange(true)) {
    Write("*** posttrain: ");
    Write(SignalName(sig));
    Write(" received in thread ");
    WriteDecimal(static_cast<long>(::syscall(SYS_gettid)));
    Write(::syscall(SYS_gettid) == ::getpid() ? " (the main thread)" : " (not the main thread)");
    if (sig == SIGSEGV || sig == SIGBUS) {
      Write(", address ");
      WriteHex(reinterpret_cast<std::uintptr_t>(info->si_addr));
    }
    Write("\n");
#if defined(__x86_64__)
    // Where it stopped, from the interrupted context: unwinding cannot go on from a
    // pc without unwind tables (JIT code, a call through a bad pointer), so the word
    // at the stack pointer (the return address after such a call) is shown too.
    const auto* uc = static_cast<const ucontext_t*>(context);
    const auto pc = static_cast<std::uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
    const auto sp = static_cast<std::uintptr_t>(uc->uc_mcontext.gregs[REG_RSP]);
    Write("  faulting pc:\n");
    WriteFrame(pc);
    Write("  word at the stack pointer (a return address if the pc came from a call):\n");
    WriteFrame(*reinterpret_cast<const std::uintptr_t*>(sp));
#else
    (void)context;
#endif
    Write("  stack, innermost first:\n");
    // Unwinding by the compiler's unwind tables (libgcc), which optimized code
    // without frame pointers has; names from the ELF symbol tables.
    void* frames[64];
    const int n = ::backtrace(frames, 64);
    for (int i = 0; i < n; ++i) {
      // A return address points past its call: look up the call itself.
      WriteFrame(reinterpret_cast<std::uintptr_t>(frames[i]) - (i > 0 ? 1 : 0));
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
  action.sa_sigaction = OnFatalSignal;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  for (int sig : kSignals) ::sigaction(sig, &action, nullptr);
#endif
}

}  // namespace posttrain
