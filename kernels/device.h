/* What compute devices this build can use. The CUDA part exists only when
 * the build found nvcc and cuDNN (make CUDA=auto|0|1). */
#ifndef MP_DEVICE_H
#define MP_DEVICE_H

#include <stddef.h>

/* 1 when the CUDA backend was compiled in. */
int mp_cuda_built(void);
/* Number of usable CUDA devices (0 when none, no driver, or not built);
 * describes them in buf ("2 CUDA device(s); device 0: ...", then a line
 * "cuda: device 1: ..." for each other), or the reason for none. */
int mp_cuda_probe(char *buf, size_t n);

#endif
