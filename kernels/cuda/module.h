/* The CUDA backend's entry points as a loadable module.
 *
 * The programs' build (the Makefile) makes the CUDA backend a shared
 * module, libmp-cuda.so, which loader.c opens on first use: a program run
 * on the CPU then never loads cuDNN and cuBLAS (a tenth of a second and
 * some hundred megabytes at every start), and a CUDA build still runs
 * where they are missing. That build compiles the backend with
 * MP_CUDA_MODULE_BUILD, which gives its entry points the module's names;
 * loader.c defines the public ones (backend.h, device.h) and forwards to
 * them. A build that links the backend in directly (scripts/device-check.sh's
 * minimal one) keeps the public names. */
#ifndef MP_CUDA_MODULE_H
#define MP_CUDA_MODULE_H

#ifdef MP_CUDA_MODULE_BUILD
#define mp_backend_cuda_new mp_cuda_module_backend_new
#define mp_cuda_built mp_cuda_module_built
#define mp_cuda_probe mp_cuda_module_probe
#endif

#endif
