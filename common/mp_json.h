/* JSON text for the programs' reports (--json): cJSON's printer, with
 * every number written so that it reads back as the same double, and
 * names and paths made UTF-8 (mp_json_utf8). */
#ifndef MP_JSON_H
#define MP_JSON_H

#include <cjson/cJSON.h>

/* The text of o (formatted), or NULL when out of memory. Numbers become
 * raw text in o itself: a whole number below 2^63 in digits, any other
 * finite one in the fewest significant digits (15 to 17) that give back
 * its bits. cJSON alone stops at 15 digits whenever they come within a
 * relative 1e-15 or so: 9/53 printed as 0.169811320754717, which reads
 * back as another double than 9.0 / 53. */
char *mp_json_print(cJSON *o);

#endif
