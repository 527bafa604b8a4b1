/* Writes a freshly initialised network with the library calls the trainer
 * uses (mp_resnet_init, mp_weights_save), for the weights tests.
 *
 * usage: resnet_init DEPTH WIDTHS SHORTCUT CLASSES SEED OUT [momentum] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "mp_resnet.h"
#include "mp_weights.h"

int main(int argc, char **argv)
{
	if (argc != 7 && argc != 8) {
		fprintf(stderr, "usage: resnet_init DEPTH WIDTHS A|B CLASSES SEED OUT [momentum]\n");
		return 2;
	}
	mp_error e;
	mp_resnet_config c;
	mp_resnet_config_default(&c);
	c.depth = atoi(argv[1]);
	c.stages = 0;
	for (char *p = argv[2]; *p && c.stages < MP_MAX_STAGES;) {
		c.widths[c.stages++] = (int)strtol(p, &p, 10);
		if (*p == ',')
			p++;
	}
	c.shortcut = argv[3][0];
	c.classes = atoi(argv[4]);
	c.mean[0] = 117.5;
	c.mean[1] = 113.25;
	c.mean[2] = 104.0;
	mp_backend *be = mp_backend_cpu_new(0);
	mp_resnet *net = be ? mp_resnet_new(&c, be, &e) : NULL;
	if (!net || mp_resnet_init(net, strtoull(argv[5], NULL, 10), &e) < 0) {
		fprintf(stderr, "resnet_init: %s\n", be ? e.msg : "no CPU backend");
		return 1;
	}
	mp_kv extra[] = {{"created_by", "resnet_init"}};
	if (mp_weights_save(net, argv[6], extra, 1, argc == 8 && !strcmp(argv[7], "momentum"),
			    &e) < 0) {
		fprintf(stderr, "resnet_init: %s\n", e.msg);
		return 1;
	}
	mp_resnet_free(net);
	mp_backend_free(be);
	return 0;
}
