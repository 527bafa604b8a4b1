/* What tests/emu/emu_device.cpp's emulated device offers the tests that
 * link it, besides the CUDA backend's own entry points (backend.h). */
#ifndef MP_EMU_DEVICE_H
#define MP_EMU_DEVICE_H

#include <cuda_runtime.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
/* kernels/cuda/cuda.h's MP_CUDA_GRID_MOST and MP_CUDA_GRID_YZ on the host
 * (tests/emu/cuda_emu.h): CUDA's values until a test lowers them */
extern unsigned mp_emu_grid_most, mp_emu_grid_yz_most;
/* adds results read back from the device to the digest printed under
 * MP_EMU_ORDER (tests/emu/cuda_emu.h); copies to the host add themselves */
void mp_emu_digest_add(const void *p, size_t n);
unsigned long long mp_emu_digest_bytes(void);
/* what the next cudaStreamSynchronize returns (then cudaSuccess again): a
 * test's stand-in for an earlier kernel's fault, reported at a wait */
extern cudaError_t mp_emu_sync_error;
/* cuDNN descriptors made and not yet destroyed, legacy and graph API */
unsigned long mp_emu_cudnn_descriptors(void);
#ifdef __cplusplus
}
#endif

#endif
