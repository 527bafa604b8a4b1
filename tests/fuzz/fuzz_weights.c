/* libFuzzer harness: the weights loader on top of the safetensors reader,
 * as mp_weights_load does it (the architecture from the metadata, the
 * network built on the CPU backend, every tensor checked and loaded). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "mp_backends.h"
#include "mp_resnet.h"
#include "mp_safetensors.h"
#include "mp_weights.h"

static mp_backend *be;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mp_error e;
	if (!be) {
		char desc[256];
		if (!(be = mp_backend_open("cpu", 1, -1, "fp32", desc, sizeof desc, &e))) {
			fprintf(stderr, "%s\n", e.msg);
			abort();
		}
	}
	mp_st_file f;
	if (mp_st_parse(data, size, "fuzz", &f, &e) < 0)
		return 0;
	mp_resnet_config c;
	mp_resnet *net = NULL;
	if (mp_weights_config(&f, &c, &e) == 0 && (net = mp_resnet_new(&c, be, &e)))
		mp_weights_load_into(net, &f, 1, &e);
	mp_resnet_free(net);
	mp_st_free(&f);
	return 0;
}
