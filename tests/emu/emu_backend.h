/* The CUDA backend's code on the host (tests/emu/emu_backend.cpp), for
 * tests without a GPU: as mp_backend_cuda_new's backend, fp32 until
 * set_precision asks for bf16; act_bf16 as MP_CUDA_ACTIVATIONS=bf16. No
 * graphs. NULL when out of memory. */
#ifndef MP_EMU_BACKEND_H
#define MP_EMU_BACKEND_H

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif
mp_backend *mp_emu_cuda_new(int act_bf16);
/* kernels/cuda/cuda.h's MP_CUDA_GRID_MOST and MP_CUDA_GRID_YZ on the host
 * (tests/emu/cuda_emu.h): CUDA's values until a test lowers them */
extern unsigned mp_emu_grid_most, mp_emu_grid_yz_most;
/* adds results read back from the device to the digest printed under
 * MP_EMU_ORDER (tests/emu/cuda_emu.h); copies to the host add themselves */
void mp_emu_digest_add(const void *p, size_t n);
unsigned long long mp_emu_digest_bytes(void);
#ifdef __cplusplus
}
#endif

#endif
