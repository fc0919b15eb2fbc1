// User-level threads (fibers) for the emulated device: one per CUDA thread of
// the block being run, all on one host thread, switched only at barriers and
// warp rendezvous. A switch saves the callee-saved registers and the stack
// pointer and loads another's: a few nanoseconds, where swapcontext() also makes
// a system call for the signal mask.
//
// Under AddressSanitizer each switch is announced (__sanitizer_start/finish_
// switch_fiber), so that ASan knows which stack is live.
#pragma once

#include <cstddef>
#include <cstdint>

#include <emu_core.h>  // ECHO_EMU_ASAN

namespace echo::emu {

// A stack and its saved stack pointer. entry(arg) runs on it when it is first
// switched to; it must never return (it switches away for the last time).
struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // lowest usable address
  size_t stack_size = 0;
  void* asan_fake_stack = nullptr;
};

// Prepares f to start entry(arg) on its stack at the next switch to it.
void fiber_prepare(Fiber& f, void (*entry)(void*), void* arg);
// Saves the running context into *from and resumes to.
void fiber_switch(Fiber& from, Fiber& to);
// Called first thing on a fiber after every switch to it (ASan bookkeeping;
// nothing otherwise). `from` is the fiber that switched here.
void fiber_arrived(Fiber& self, Fiber& from);
// The last switch away from a fiber that will not be resumed.
void fiber_exit_to(Fiber& self, Fiber& to);
// Clears ASan's poisoning of a stack left behind by an abandoned fiber.
void fiber_forget(Fiber& f);

}  // namespace echo::emu
