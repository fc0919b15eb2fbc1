#include "cuda/emu/fiber.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>

#if ECHO_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace echo::emu {

#if defined(__x86_64__)
// echo_emu_switch_stack(void** save_sp, void* load_sp): pushes the System V
// callee-saved registers and the x87/SSE control words, stores rsp, loads the
// other stack and pops the same frame from it. echo_emu_fiber_start is where a
// fresh stack's frame "returns" to: it calls entry(arg) from r12/r13.
extern "C" void echo_emu_switch_stack(void** save_sp, void* load_sp);
extern "C" void echo_emu_fiber_start();
asm(R"(
  .text
  .globl echo_emu_switch_stack
  .type echo_emu_switch_stack,@function
echo_emu_switch_stack:
  .cfi_startproc
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr 8(%rsp)
  fnstcw (%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  fldcw (%rsp)
  ldmxcsr 8(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size echo_emu_switch_stack, .-echo_emu_switch_stack

  .globl echo_emu_fiber_start
  .type echo_emu_fiber_start,@function
echo_emu_fiber_start:
  .cfi_startproc
  .cfi_undefined rip
  movq %r13, %rdi
  callq *%r12
  ud2
  .cfi_endproc
  .size echo_emu_fiber_start, .-echo_emu_fiber_start
)");

void fiber_prepare(Fiber& f, void (*entry)(void*), void* arg) {
  // The frame echo_emu_switch_stack pops, lowest address first: x87 control
  // word, MXCSR, r15, r14, r13 = arg, r12 = entry, rbx, rbp, return address.
  // After its `ret` the stack pointer is 16-byte aligned, as a call needs.
  uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + f.stack_size) & ~uintptr_t(15);
  uint64_t* frame = reinterpret_cast<uint64_t*>(top - 88);
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  std::memset(frame, 0, 88);
  std::memcpy(&frame[0], &fpcw, sizeof fpcw);
  std::memcpy(&frame[1], &mxcsr, sizeof mxcsr);
  frame[4] = reinterpret_cast<uint64_t>(arg);    // r13
  frame[5] = reinterpret_cast<uint64_t>(entry);  // r12
  frame[8] = reinterpret_cast<uint64_t>(&echo_emu_fiber_start);
  f.sp = frame;
  f.asan_fake_stack = nullptr;
}

static void raw_switch(Fiber& from, Fiber& to) { echo_emu_switch_stack(&from.sp, to.sp); }

#else
// Other architectures: ucontext (slower: it saves the signal mask too).
struct UcontextFiber {
  ucontext_t ctx;
};
void fiber_prepare(Fiber& f, void (*entry)(void*), void* arg) {
  auto* u = static_cast<UcontextFiber*>(f.sp);
  if (!u) f.sp = u = new UcontextFiber();
  getcontext(&u->ctx);
  u->ctx.uc_stack.ss_sp = f.stack;
  u->ctx.uc_stack.ss_size = f.stack_size;
  u->ctx.uc_link = nullptr;
  makecontext(&u->ctx, reinterpret_cast<void (*)()>(entry), 1, arg);  // one pointer argument (LP64)
}
static void raw_switch(Fiber& from, Fiber& to) {
  if (!from.sp) from.sp = new UcontextFiber();
  swapcontext(&static_cast<UcontextFiber*>(from.sp)->ctx, &static_cast<UcontextFiber*>(to.sp)->ctx);
}
#endif

void fiber_switch(Fiber& from, Fiber& to) {
#if ECHO_EMU_ASAN
  __sanitizer_start_switch_fiber(&from.asan_fake_stack, to.stack, to.stack_size);
#endif
  raw_switch(from, to);
#if ECHO_EMU_ASAN
  __sanitizer_finish_switch_fiber(from.asan_fake_stack, nullptr, nullptr);
#endif
}

void fiber_arrived(Fiber& self, Fiber& from) {
#if ECHO_EMU_ASAN
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(self.asan_fake_stack, &bottom, &size);
  if (!from.stack) {  // the host thread's own stack: learn its bounds
    from.stack = static_cast<char*>(const_cast<void*>(bottom));
    from.stack_size = size;
  }
#else
  (void)self;
  (void)from;
#endif
}

void fiber_exit_to(Fiber& self, Fiber& to) {
#if ECHO_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, to.stack, to.stack_size);
#endif
  raw_switch(self, to);
  std::abort();  // never resumed
}

void fiber_forget(Fiber& f) {
#if ECHO_EMU_ASAN
  if (f.stack) __asan_unpoison_memory_region(f.stack, f.stack_size);
#else
  (void)f;
#endif
}

}  // namespace echo::emu
