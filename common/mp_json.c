#include "mp_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_util.h"

/* Number node n as raw text, in place; -1 when out of memory. */
static int exact_number(cJSON *n)
{
	const double d = n->valuedouble;
	char text[40];
	if (!isfinite(d))
		snprintf(text, sizeof text, "null"); /* as cJSON writes them */
	else if (d == floor(d) && fabs(d) < 0x1p63)
		snprintf(text, sizeof text, "%.0f", d);
	else
		for (int digits = 15; digits <= 17; digits++) {
			snprintf(text, sizeof text, "%.*g", digits, d);
			if (strtod(text, NULL) == d)
				break;
		}
	char *copy = strdup(text);
	if (!copy)
		return -1;
	n->type = cJSON_Raw | (n->type & cJSON_StringIsConst);
	n->valuestring = copy;
	return 0;
}

static int exact_numbers(cJSON *o)
{
	for (cJSON *c = o->child; c; c = c->next) {
		if (cJSON_IsNumber(c) ? exact_number(c) < 0 : exact_numbers(c) < 0)
			return -1;
	}
	return 0;
}

char *mp_json_print(cJSON *o)
{
	if (cJSON_IsNumber(o) ? exact_number(o) < 0 : exact_numbers(o) < 0)
		return NULL;
	char *s = cJSON_Print(o), *u = s ? mp_json_utf8(s) : NULL;
	free(s);
	return u;
}
