/* Choosing a compute backend by name, as the programs' --backend option
 * does: cpu (the fast CPU path), cpu-ref (the reference loops), cuda, or
 * auto (CUDA when this build has it and a device is present, else cpu). */
#ifndef MP_BACKENDS_H
#define MP_BACKENDS_H

#include <stddef.h>

#include "backend.h"
#include "mp_util.h"

extern const char *const mp_backend_names[]; /* NULL-terminated */

/* Opens the backend called name with threads CPU threads (0: all) and
 * describes what it chose in desc ("cpu, 2 threads"). */
mp_backend *mp_backend_open(const char *name, int threads, char *desc, size_t n,
			    mp_error *e);

#endif
