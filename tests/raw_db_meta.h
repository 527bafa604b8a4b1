/* The meta document of a DB that a unit test wrote itself, record by
 * record (raw square images of side pixels, padded with zeros), written by
 * mp_db_writer_finish. Header-only, for cmocka tests: each includes it
 * once, after cmocka.h. */
#ifndef MP_RAW_DB_META_H
#define MP_RAW_DB_META_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mp_db.h"
#include "mp_meta.h"

/* records in macrobatches of up to per_mb; classes 0: unlabelled. */
static void finish_raw_db(mp_db_writer *w, uint64_t records, uint64_t macrobatches,
			  uint32_t per_mb, int side, int classes)
{
	mp_error e;
	mp_meta m;
	mp_meta_init(&m);
	m.complete = 1;
	m.records = records;
	m.macrobatches = macrobatches;
	m.macrobatch_size = per_mb;
	m.height = m.width = m.size = side;
	strcpy(m.fit, "pad");
	strcpy(m.pad_fill, "zero");
	strcpy(m.encoding, "raw");
	m.labelled = classes > 0;
	m.classes = classes;
	m.source_list = strdup("unit");
	char *json = mp_meta_to_json(&m, &e);
	assert_non_null(json);
	assert_int_equal(mp_db_writer_finish(w, json, &e), 0);
	free(json);
	mp_meta_free(&m);
}

#endif
