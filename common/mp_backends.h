/* Choosing a compute backend by name, as the programs' --backend option
 * does: cpu (the fast CPU path), cpu-ref (the reference loops), cuda, or
 * auto (CUDA when this build has it and a device is present, else cpu). */
#ifndef MP_BACKENDS_H
#define MP_BACKENDS_H

#include <stddef.h>

#include "backend.h"
#include "mp_util.h"

extern const char *const mp_backend_names[];	/* NULL-terminated */
extern const char *const mp_precision_names[]; /* auto, fp32, bf16; NULL-terminated */

/* Opens the backend called name with threads CPU threads (0: all), on
 * CUDA device device (-1: not chosen, device 0; auto then takes the CPU
 * where that device fails, and an error where a chosen one does), in the
 * precision called precision, as the --precision option means it: fp32;
 * bf16 (tensor-core convolutions, a backend that has them: CUDA on
 * compute capability 8.0 or later, else an error); auto or NULL (bf16
 * where the backend has it, else fp32). Describes what it chose in desc
 * ("cpu, 2 threads, fp32", "cuda, NVIDIA H200, sm_90, 139 GiB, bf16";
 * "cuda, device 1: NVIDIA H200, ..." for another device than the first).
 * A device chosen for a CPU backend is an error. */
mp_backend *mp_backend_open(const char *name, int threads, int device, const char *precision,
			    char *desc, size_t n, mp_error *e);

/* 0, or -1 with the reason when a device is chosen (device >= 0) for a
 * backend that has none: an error of the options. */
int mp_backend_device_fits(const char *name, int device, mp_error *e);

/* What in mp_backend_open's description desc decides the results' bits,
 * into buf: the backend and its arithmetic ("cpu, fp32", "cpu, no
 * Winograd, fp32", "cpu-ref, fp32", "cuda, bf16"), without the thread
 * count, the device or auto's note. */
void mp_backend_arithmetic(const char *desc, char *buf, size_t n);

#endif
