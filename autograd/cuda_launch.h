// The two CUDA constructs that plain C++ cannot spell, written once so that the
// same .cu file compiles with nvcc for a GPU and with the host compiler for the
// emulated device (ECHO_CUDA=EMU, cuda/emu/, docs/cuda.md):
//
//   ECHO_LAUNCH(kernel, grid, block[, shared_bytes[, stream]])(args...);
//       nvcc:     kernel<<<grid, block, shared_bytes, stream>>>(args...)
//       emulator: the arguments are evaluated once and every thread of every
//                 block runs kernel(args...) as a fiber.
//   ECHO_SHARED(type, name[, dims]);          e.g. ECHO_SHARED(float, red, [256]);
//       nvcc:     __shared__ type name dims
//       emulator: a per-block allocation, poisoned, its own heap block (so that
//                 AddressSanitizer sees out-of-bounds accesses), bound to `name`.
//   ECHO_DYNAMIC_SHARED(type, name);
//       nvcc:     extern __shared__ type name[]   (sized by the launch)
//       emulator: the block's dynamic shared memory, poisoned.
#pragma once

#if defined(ECHO_CUDA_EMULATED)

#define ECHO_LAUNCH(kernel, ...)                               \
  (::echo::emu::Launch(#kernel, __FILE__, __VA_ARGS__) %       \
   [](auto... echo_emu_args) { kernel(echo_emu_args...); })

#define ECHO_SHARED(type, name, ...)                                                              \
  static const char echo_emu_key_##name = 0;                                                      \
  type(&name) __VA_ARGS__ = *static_cast<type(*) __VA_ARGS__>(                                   \
      ::echo::emu::static_shared(&echo_emu_key_##name, sizeof(type __VA_ARGS__), alignof(type)))

#define ECHO_DYNAMIC_SHARED(type, name) type* const name = static_cast<type*>(::echo::emu::dynamic_shared())

#else

#define ECHO_LAUNCH(kernel, ...) kernel<<<__VA_ARGS__>>>
#define ECHO_SHARED(type, name, ...) __shared__ type name __VA_ARGS__
#define ECHO_DYNAMIC_SHARED(type, name) extern __shared__ type name[]

#endif
