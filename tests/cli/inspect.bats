#!/usr/bin/env bats
# mp-inspect: summaries, records, listings, extraction and verification.

load helpers

# small_db: db, 4 raw 8x8 solid images in 3 classes with names, and the
# same records as out.stream.
small_db() {
	mkimg batch <<-'EOF'
		make solid a.png 8 8 color=10,20,30
		make solid b.png 8 8 color=20,40,60
		make solid c.png 8 8 color=30,60,90
		make solid d.png 8 8 color=40,80,120
	EOF
	printf '/a/abbey 0\n/b/beach 1\n/c/canyon 2\n' >categories.txt
	printf 'a.png 0\nb.png 2\nc.png 2\nd.png 0\n' >train.txt
	bw -q -c categories.txt --size 8 --encoding raw --macrobatch 3 -o db train.txt
	bw -q -c categories.txt --size 8 --encoding raw --macrobatch 3 train.txt >out.stream
}

@test "the summary shows the counts, geometry, mean and per-class counts" {
	small_db
	run --separate-stderr inspect db
	assert_status 0
	assert_equal "$stderr" ""
	assert_equal "$output" "$(
		cat <<-'EOF'
			dataset:      db (LMDB)
			format:       mp-dataset 2, created by mp-batchwriter 0.1.0
			source list:  train.txt
			records:      4 in 2 macrobatches of up to 3
			images:       8x8x3 (size 8, fit pad, padding 0, pad fill mean)
			encoding:     raw (quality 95); stored: jpeg 0, png 0, raw 4
			sizes:        8x8: 4
			bytes:        0.00 MiB stored; per record mean 192, min 192, max 192
			mean (RGB):   25.0000 50.0000 75.0000
			skipped:      0 bad inputs when packed
			classes:      3
			per class:
			      0        2  /a/abbey
			      1        0  /b/beach
			      2        2  /c/canyon
		EOF
	)"
	# A stream says the same about itself.
	run inspect out.stream
	assert_equal "$(first_line "$output")" "dataset:      out.stream (stream)"
	assert_equal "$(tail -n +2 <<<"$output")" "$(inspect db | tail -n +2)"
	run inspect - <out.stream
	assert_equal "$(first_line "$output")" "dataset:      <stdin> (stream)"
}

# edit_meta DB PYTHON: runs PYTHON on the meta document m of DB and stores
# it, with its CRC made anew.
edit_meta() {
	"$PY" -c '
import json, lmdb, sys
sys.path.insert(0, sys.argv[3])
import mp_dataset
env = lmdb.open(sys.argv[1], subdir=True, lock=False)
with env.begin(write=True) as txn:
    m = json.loads(txn.get(b"meta"))
    exec(sys.argv[2])
    txn.put(b"meta", mp_dataset.meta_bytes(m))
env.close()' "$@" "$MP_ROOT/scripts"
}

@test "a meta document of format_version 1 is read and said to be uncovered; a damaged CRC or its key is an error" {
	small_db
	# the form format_version 1 had: the same document, no CRC
	"$PY" - "$MP_ROOT/scripts" <<-'EOF'
		import json, lmdb, struct, sys, zlib
		sys.path.insert(0, sys.argv[1])
		import mp_dataset
		def old(raw):
		    m = json.loads(raw)
		    assert list(m)[0] == "crc32" and m["format_version"] == 2
		    del m["crc32"]
		    m["format_version"] = 1
		    return json.dumps(m, indent="\t").encode()
		def edit(db, f):
		    env = lmdb.open(db, subdir=True, lock=False)
		    with env.begin(write=True) as txn:
		        txn.put(b"meta", f(bytes(txn.get(b"meta"))))
		    env.close()
		for db in ("v1.db", "key.db", "mean.db", "ws.db"):
		    env = lmdb.open("db", readonly=True, lock=False)
		    with env.begin() as txn, lmdb.open(db, subdir=True, map_size=1 << 20) as out:
		        with out.begin(write=True) as w:
		            for k, v in txn.cursor():
		                w.put(k, v)
		    env.close()
		edit("v1.db", old)
		edit("key.db", lambda raw: raw.replace(b'"crc32"', b'"crc33"', 1))
		# a digit of the mean, and (valid JSON, the same values) white space
		edit("mean.db", lambda raw: raw.replace(b"[25,", b"[24,", 1) if b"[25," in raw
		     else raw.replace(b"[\n\t\t25,", b"[\n\t\t24,", 1))
		edit("ws.db", lambda raw: raw.replace(b'"records":\t', b'"records": ', 1))
		# a stream with the old meta frame (its frame CRC made anew)
		s = bytearray(open("out.stream", "rb").read())
		kind, n = struct.unpack_from("<II", s, 16)
		body = old(bytes(s[24:24 + n]))
		frame = struct.pack("<II", kind, len(body)) + body
		s[16:28 + n] = frame + struct.pack("<I", zlib.crc32(frame))
		open("v1.stream", "wb").write(s)
		assert mp_dataset.Dataset("v1.db").meta["format_version"] == 1
		for db, msg in (("key.db", "missing or damaged"), ("mean.db", "CRC mismatch"),
		                ("ws.db", "CRC mismatch")):
		    try:
		        mp_dataset.Dataset(db)
		        raise SystemExit(db + " was read")
		    except mp_dataset.DatasetError as e:
		        assert msg in str(e), e
	EOF
	note="; format_version 1: the meta document is not covered by a CRC"
	run inspect --verify v1.db
	assert_status 0
	assert_equal "$output" "v1.db: OK: 4 records verified (CRCs, layout, every image decoded)$note"
	run inspect --verify v1.stream
	assert_equal "$output" "v1.stream: OK: 4 records verified (CRCs, layout, every image decoded)$note"
	assert_equal "$(json_get <(inspect --json v1.db) 'd["meta"]["format_version"], "crc32" in d["meta"]')" "(1, False)"
	# copied, it is written in the current version, with its CRC
	bw -q --input-stream -o copy.db <v1.stream
	run inspect --verify copy.db
	assert_equal "$output" "copy.db: OK: 4 records verified (CRCs, layout, every image decoded)"
	assert_equal "$(inspect --json --verify copy.db | json_get - 'd["meta_crc32"]')" "True"
	run --separate-stderr inspect --verify key.db
	assert_status 1
	assert_equal "$stderr" 'mp-inspect: key.db: meta: "crc32" is missing or damaged: format_version 2 has it as the first member of the document'
	for db in mean.db ws.db; do
		run --separate-stderr inspect $db
		assert_status 1
		assert_contains "$stderr" "mp-inspect: $db: meta: CRC mismatch: the document is damaged (crc32 "
	done
}

@test "the summary reports records whose label the meta does not allow" {
	small_db
	cp -r db two.db
	edit_meta two.db 'm["classes"] = 2; m["class_names"] = m["class_names"][:2]'
	run --separate-stderr inspect two.db
	assert_status 1
	assert_equal "$(tail -n 3 <<<"$output")" "$(printf '%s\n' 'per class:' \
		'      0        2  /a/abbey' '      1        0  /b/beach')"
	assert_equal "$stderr" \
		"mp-inspect: two.db: 2 records have a label outside 0..1, counted in no class; the first is record 1 (b.png) with label 2"
	run --separate-stderr inspect --json two.db
	assert_status 1
	assert_equal "$(json_get - 'd["records"], d["per_class"], d["bad_labels"]' <<<"$output")" "(4, [2, 0], 2)"
	assert_equal "$stderr" \
		"mp-inspect: two.db: 2 records have a label outside 0..1, counted in no class; the first is record 1 (b.png) with label 2"
	run --separate-stderr inspect --verify two.db
	assert_status 1
	assert_equal "$stderr" "$(printf '%s\n' \
		'mp-inspect: two.db: record 1 (b.png): label 2 is outside 0..1' \
		'mp-inspect: two.db: record 2 (c.png): label 2 is outside 0..1')"
	# An unlabelled set whose records carry labels.
	cp -r db none.db
	edit_meta none.db 'm["labelled"] = False; m["classes"] = 0; m["class_names"] = None'
	run --separate-stderr inspect none.db
	assert_status 1
	assert_contains "$output" "labels:       none (0 unlabelled records)"
	assert_equal "$stderr" \
		"mp-inspect: none.db: 4 records have a label in an unlabelled set, counted in no class; the first is record 0 (a.png) with label 0"
	# A labelled set of 0 classes has as many as its largest label + 1.
	cp -r db zero.db
	edit_meta zero.db 'm["classes"] = 0; m["class_names"] = None'
	run --separate-stderr inspect --json zero.db
	assert_status 0
	assert_equal "$(json_get - 'd["per_class"], d["bad_labels"]' <<<"$output")" "([2, 0, 2], 0)"
	run inspect --verify zero.db
	assert_status 0
}

@test "--json has the same counts and parses" {
	small_db
	run --separate-stderr inspect --json db
	assert_status 0
	assert_equal "$(json_get - 'd["dataset"], d["container"], d["records"], d["macrobatches"], d["unlabelled"], d["per_class"]' <<<"$output")" \
		"('db', 'LMDB', 4, 2, 0, [2, 0, 2])"
	assert_equal "$(json_get - 'd["encodings"], d["sizes"], d["payload_bytes"]' <<<"$output")" \
		"({'raw': 4, 'jpeg': 0, 'png': 0}, [{'width': 8, 'height': 8, 'count': 4}], {'total': 768, 'min': 192, 'max': 192, 'mean': 192})"
	assert_equal "$(json_get - 'd["meta"]["format"], d["meta"]["complete"], d["meta"]["records"], d["meta"]["macrobatch_size"], d["meta"]["encoding"], d["meta"]["class_names"]' <<<"$output")" \
		"('mp-dataset', True, 4, 3, 'raw', ['/a/abbey', '/b/beach', '/c/canyon'])"
	run inspect --json out.stream
	assert_equal "$(json_get - 'd["container"], d["records"], d["meta"]["complete"]' <<<"$output")" "('stream', 4, True)"
}

@test "--list and --list --json give one entry per record" {
	small_db
	run --separate-stderr inspect --list db
	assert_status 0
	assert_equal "$(cut -f1-7 <<<"$output")" "$(printf '%s\n' \
		"$(printf 'index\tname\tlabel\twidth\theight\tencoding\tbytes')" \
		"$(printf '0\ta.png\t0\t8\t8\traw\t192')" \
		"$(printf '1\tb.png\t2\t8\t8\traw\t192')" \
		"$(printf '2\tc.png\t2\t8\t8\traw\t192')" \
		"$(printf '3\td.png\t0\t8\t8\traw\t192')")"
	# The CRC of a raw payload is the CRC of its pixels.
	want=$("$PY" -c 'import zlib; print("%08x" % zlib.crc32(bytes([30, 60, 90]) * 64))')
	assert_equal "$(sed -n 4p <<<"$output" | cut -f8)" "$want"
	run inspect --list --json db
	assert_equal "$(json_get - '[(r["index"], r["name"], r["label"]) for r in d]' <<<"$output")" \
		"[(0, 'a.png', 0), (1, 'b.png', 2), (2, 'c.png', 2), (3, 'd.png', 0)]"
	assert_equal "$(json_get - "d[2]['crc32'] == 0x$want" <<<"$output")" "True"
}

@test "--record N prints the name, label and class of record N" {
	small_db
	run --separate-stderr inspect --record 3 db
	assert_status 0
	assert_equal "$(grep -v '^crc32' <<<"$output")" "$(printf '%s\n' 'record:      3' 'name:        d.png' \
		'label:       0 /a/abbey' 'size:        8x8x3' 'encoding:    raw' 'bytes:       192' 'macrobatch:  1')"
	assert_equal "$(grep '^crc32' <<<"$output")" "crc32:       $(inspect --list db | awk -F'\t' '$1 == 3 { print $8 }')"
	run inspect --record 1 out.stream
	assert_status 0
	assert_equal "$(sed -n '2,3p' <<<"$output")" "$(printf 'name:        b.png\nlabel:       2 /c/canyon')"
	run inspect --record 2 --json db
	assert_equal "$(json_get - 'd["index"], d["name"], d["label"], d["class"], d["macrobatch"], d["width"]' <<<"$output")" \
		"(2, 'c.png', 2, '/c/canyon', 0, 8)"
}

@test "--record of an unlabelled record says so; past the end fails" {
	mkimg make solid a.png 8 8
	echo a.png >test.txt
	bw -q --size 8 -o db test.txt
	run inspect --record 0 db
	assert_status 0
	assert_equal "$(sed -n 3p <<<"$output")" "label:       none"
	run --separate-stderr inspect --record 1 db
	assert_status 1
	assert_equal "$stderr" "mp-inspect: db: no record 1 (the dataset holds 1)"
	run --separate-stderr inspect --extract 5 -o out.png db
	assert_status 1
	assert_equal "$stderr" "mp-inspect: db: no record 5 (the dataset holds 1)"
	assert_files . a.png test.txt db
}

@test "--extract --max-pixels refuses to decode a larger image, and says only that" {
	small_db
	run --separate-stderr inspect --extract 1 --max-pixels 63 -o x.png db
	assert_status 1
	assert_equal "$stderr" "mp-inspect: db: record 1 (b.png): 8x8 pixels is more than --max-pixels 63"
	[[ ! -e x.png ]] || fail "x.png was written"
}

@test "--extract writes PNG, JPEG, PPM or PNG on stdout" {
	small_db
	inspect --extract 1 -o one.png db
	inspect --extract 1 -o one.jpg db
	inspect --extract 1 -o one.ppm out.stream
	inspect --extract 1 -o - db >stdout.png
	run mkimg batch <<-'EOF'
		info one.png
		colors one.png 0 0 8 8
		info one.jpg
		info one.ppm
		colors one.ppm 0 0 8 8
		compare one.png stdout.png
		compare one.png one.jpg
	EOF
	assert_equal "$(head -n 6 <<<"$output")" "$(printf '8 8 RGB\n20,40,60\n8 8 RGB\n8 8 RGB\n20,40,60\n0 0.000')"
	read -r max mean <<<"$(tail -n 1 <<<"$output")"
	assert_less "$max" 4
	assert_equal "$(head -c 2 one.jpg | od -An -tx1 | tr -d ' ')" "ffd8"
	assert_equal "$(head -c 2 one.ppm)" "P6"
}

@test "--verify accepts a good DB, stream file and stream on stdin" {
	small_db
	run --separate-stderr inspect --verify db
	assert_status 0
	assert_equal "$output" "db: OK: 4 records verified (CRCs, layout, every image decoded)"
	assert_equal "$stderr" ""
	run inspect --verify out.stream
	assert_status 0
	assert_equal "$output" "out.stream: OK: 4 records verified (CRCs, layout, every image decoded)"
	run inspect --verify - <out.stream
	assert_status 0
	assert_equal "$output" "<stdin>: OK: 4 records verified (CRCs, layout, every image decoded)"
	run inspect --verify --json db
	assert_status 0
	assert_equal "$(json_get - 'd["ok"], d["records_checked"], d["records_expected"], d["failures"]' <<<"$output")" "(True, 4, 4, [])"
	run inspect --verify --json - <out.stream
	assert_status 0
	assert_equal "$(json_get - 'd["ok"], d["records_checked"], d["records_expected"], d["failures"]' <<<"$output")" "(True, 4, 4, [])"
}

@test "--verify --json of a stream that fails before its end frame does not know the count" {
	small_db
	# a byte of the second macrobatch (frame 2), every CRC left as it was
	"$PY" -c '
import struct
d = bytearray(open("out.stream", "rb").read())
pos = 16
for _ in range(2):
    pos += 12 + struct.unpack_from("<I", d, pos + 4)[0]
d[pos + 8 + 40] ^= 0x01
open("flip.stream", "wb").write(d)'
	run --separate-stderr inspect --verify --json flip.stream
	assert_status 1
	assert_equal "$stderr" "mp-inspect: flip.stream: corrupt stream: CRC mismatch in frame 2"
	assert_equal "$(json_get - 'd["ok"], d["records_checked"], d["records_expected"], d["meta_crc32"]' <<<"$output")" \
		"(False, 3, None, True)"
	# an end frame whose counts disagree is no count either
	edit_frames out.stream end.stream '
import json
e = json.loads(f[-1][1]); e["macrobatches"] = 3; f[-1][1] = bytearray(json.dumps(e).encode())'
	run --separate-stderr inspect --verify --json end.stream
	assert_status 1
	assert_equal "$(json_get - 'd["ok"], d["records_checked"], d["records_expected"]' <<<"$output")" \
		"(False, 4, None)"
}

@test "counts that disagree with the macrobatch size are said as the rule they break" {
	small_db
	# 4 records of 3 per macrobatch: 2 macrobatches, the end frame says 3
	edit_frames out.stream end.stream '
import json
e = json.loads(f[-1][1]); e["macrobatches"] = 3; f[-1][1] = bytearray(json.dumps(e).encode())'
	msg="end frame: 4 records of 3 per macrobatch make 2 macrobatches, not 3"
	run --separate-stderr inspect --verify end.stream
	assert_status 1
	assert_equal "$stderr" "mp-inspect: end.stream: $msg"
	assert_equal "$output" "end.stream: FAILED: 1 problem; 4 records checked"
	run --separate-stderr bw --input-stream -o copy.db <end.stream
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: <stdin>: $msg"
	assert_no_db copy.db
	# the same in a DB's meta document, and as the Python reader says it
	cp -r db meta.db
	edit_meta meta.db 'm["macrobatches"] = 3'
	run --separate-stderr inspect --verify meta.db
	assert_status 1
	assert_equal "$stderr" "mp-inspect: meta.db: meta: 4 records of 3 per macrobatch make 2 macrobatches, not 3"
	run "$PY" -c '
import sys
sys.path.insert(0, sys.argv[1])
import mp_dataset
try:
    mp_dataset.Dataset("meta.db")
except mp_dataset.DatasetError as e:
    print(e)' "$MP_ROOT/scripts"
	assert_contains "$output" "4 records of 3 per macrobatch make 2 macrobatches, not 3"
}

@test "a meta document that claims a huge count costs what the DB holds: one problem per run of missing macrobatches" {
	small_db
	# 3 x 10^12 records of 3 per macrobatch, and no records in 10^12
	# macrobatches: the DB holds 2
	cp -r db huge.db
	edit_meta huge.db 'm["records"] = 3 * 10**12; m["macrobatches"] = 10**12'
	cp -r db zero.db
	edit_meta zero.db 'm["records"] = 0; m["macrobatches"] = 10**12'
	# (the missing ones explain fewer records than the meta says, not more)
	for c in "huge.db:3:" "zero.db:4:4 records found, meta says 0"; do
		d=${c%%:*}
		n=${c#*:}
		said=${n#*:}
		n=${n%%:*}
		run --separate-stderr timeout 20 "$MP_BIN/mp-inspect" --verify $d
		assert_status 1
		assert_equal "$output" "$d: FAILED: $n problems; 4 records checked"
		assert_equal "$stderr" "$(
			sed '/^$/d' <<-EOF
				mp-inspect: $d: macrobatches 2 to 999999999999 are missing
				mp-inspect: $d: 2 macrobatches read, meta says 1000000000000
				${said:+mp-inspect: $d: $said}
				mp-inspect: $d: 2 macrobatch keys, meta says 1000000000000
			EOF
		)"
		run --separate-stderr timeout 20 "$MP_BIN/mp-inspect" $d
		assert_status 1
		assert_equal "$stderr" "mp-inspect: $d: macrobatches 2 to 999999999999 are missing"
		# mp-train's loader counts the keys before it sizes its tables
		run --separate-stderr timeout 20 "$MP_SCRIPTS/loader-rate" -n 1 $d
		assert_status 1
		assert_equal "$stderr" "loader-rate: $d: the meta says 1000000000000 macrobatches, the DB holds 2"
	done
	run timeout 20 "$PY" -c '
import sys
sys.path.insert(0, sys.argv[1])
import mp_dataset
for d in "huge.db", "zero.db":
    try:
        mp_dataset.Dataset(d)
    except mp_dataset.DatasetError as e:
        print(e)' "$MP_ROOT/scripts"
	assert_equal "$output" "$(printf '%s\n' \
		'huge.db: the meta says 1000000000000 macrobatches, the DB holds 3 keys' \
		'zero.db: the meta says 1000000000000 macrobatches, the DB holds 3 keys')"
}

@test "--verify --max-pixels refuses to decode larger images" {
	small_db
	run --separate-stderr inspect --verify --max-pixels 63 db
	assert_status 1
	assert_equal "$(first_line "$stderr")" "mp-inspect: db: record 0 (a.png): 8x8 pixels is more than --max-pixels 63"
	assert_equal "$output" "db: FAILED: 4 problems; 4 records checked"
	run inspect --verify --max-pixels 64 db
	assert_status 0
}

@test "--verify on a terminal: a bar of the records checked, cleared for each failure and at the end" {
	command -v script >/dev/null || skip "script(1) is not installed"
	small_db
	# script(1) gives the program a terminal: stdout and stderr on it
	run script -qec "'$MP_BIN/mp-inspect' --verify db" /dev/null
	assert_status 0
	assert_contains "$output" $'\rverifying [##############################] 4/4 '
	assert_contains "$output" $'\033[K\r\033[Kdb: OK: 4 records verified'
	# a stream's count has no total: no bar, no time left
	run script -qec "'$MP_BIN/mp-inspect' --verify out.stream" /dev/null
	assert_status 0
	assert_contains "$output" $'\rverifying 3 '
	assert_not_contains "$output" "ETA"
	# every failure starts a line of its own
	run script -qec "'$MP_BIN/mp-inspect' --verify --max-pixels 63 db" /dev/null
	assert_status 1
	assert_equal "$(grep -o 'mp-inspect: db: record' <<<"$output" | wc -l)" 4
	assert_equal "$(grep -o $'\r\033\[Kmp-inspect: db: record [0-3] ' <<<"$output" | wc -l)" 4
}

@test "--verify of a dataset whose meta document is bad reports it as one problem, 0 records checked" {
	small_db
	# the source list's name changed: the document's own CRC finds it, in
	# a DB and in a stream's meta frame (whose frame CRC is made anew)
	cp -r db meta.db
	"$PY" -c '
import lmdb
env = lmdb.open("meta.db", subdir=True, lock=False)
with env.begin(write=True) as txn:
    txn.put(b"meta", txn.get(b"meta").replace(b"train.txt", b"train.tzt", 1))
env.close()'
	edit_frames out.stream meta.stream 'f[0][1] = f[0][1].replace(b"train.txt", b"train.tzt", 1)'
	# the meta frame damaged, its frame CRC left as it was
	"$PY" -c '
import struct, sys
d = bytearray(open("out.stream", "rb").read())
d[24 + struct.unpack_from("<I", d, 20)[0] // 2] ^= 0x01
open("frame.stream", "wb").write(d)'
	declare -A why=(
		[meta.db]="meta: CRC mismatch: the document is damaged"
		[meta.stream]="meta: CRC mismatch: the document is damaged"
		[frame.stream]="corrupt stream: CRC mismatch in frame 0"
	)
	for d in meta.db meta.stream frame.stream; do
		run --separate-stderr inspect --verify "$d"
		assert_status 1
		assert_contains "$stderr" "mp-inspect: $d: ${why[$d]}"
		assert_equal "$(wc -l <<<"$stderr")" 1
		assert_equal "$output" "$d: FAILED: 1 problem; 0 records checked"
		msg=${stderr#mp-inspect: }
		run --separate-stderr inspect --verify --json "$d"
		assert_status 1
		assert_equal "$stderr" "mp-inspect: $msg"
		assert_equal "$(json_get - 'sorted(d.items())' <<<"$output")" \
			"[('dataset', '$d'), ('failures', ['$msg']), ('meta_crc32', None), ('ok', False), ('records_checked', 0), ('records_expected', None)]"
	done
	run --separate-stderr inspect --verify --json - <meta.stream
	assert_status 1
	assert_equal "$(json_get - 'd["dataset"], d["ok"]' <<<"$output")" "('<stdin>', False)"
	# what does not open is not verified: an error, no report
	run --separate-stderr inspect --verify --json missing
	assert_status 1
	assert_equal "$stderr" "mp-inspect: missing: No such file or directory"
	assert_equal "$output" ""
}

@test "what is not a dataset is refused with a reason" {
	mkdir empty-dir
	printf 'epoch\tstep\tlr\n1\t50\t0.1\n' >text.txt
	# image lists, the long first name as the kit's train.txt has them
	printf 'train/s/subway_station/platform/00000001.jpg 90\n' >train.txt
	printf 'test/00000001.JPEG\n' >test.txt
	mkimg make solid a.png 8 8
	mkimg make solid a.jpg 8 8
	"$PY" -c '
import lmdb
env = lmdb.open("unfinished", subdir=True)
with env.begin(write=True) as txn:
    txn.put(b"mb/00000000", b"x")
env.close()'
	while IFS='|' read -r arg want; do
		run --separate-stderr inspect "$arg"
		assert_status 1
		assert_equal "$stderr" "$want"
		assert_equal "$output" ""
	done <<-'EOF'
		missing|mp-inspect: missing: No such file or directory
		empty-dir|mp-inspect: empty-dir: not a dataset DB (no data.mdb)
		text.txt|mp-inspect: text.txt: not a dataset stream (bad magic): text
		train.txt|mp-inspect: train.txt: not a dataset stream (bad magic): an image list, which mp-batchwriter packs into a dataset (mp-eval reads one with --list)
		test.txt|mp-inspect: test.txt: not a dataset stream (bad magic): an image list, which mp-batchwriter packs into a dataset (mp-eval reads one with --list)
		unfinished/data.mdb|mp-inspect: unfinished/data.mdb: not a dataset stream (bad magic): an LMDB data file; give the dataset's directory
		a.png|mp-inspect: a.png: not a dataset stream (bad magic): a PNG image, which mp-batchwriter packs into a dataset
		a.jpg|mp-inspect: a.jpg: not a dataset stream (bad magic): a JPEG image, which mp-batchwriter packs into a dataset
		unfinished|mp-inspect: unfinished: no meta record (not a finished dataset DB)
	EOF
	run --separate-stderr inspect --verify - </dev/null
	assert_status 1
	assert_equal "$stderr" "mp-inspect: <stdin>: empty input: no dataset stream"
}

@test "a damaged weights file is named as weights, with its fault: by its name .safetensors, or by a length that fits and JSON" {
	small_db
	printf 'abcdefg' >short.safetensors
	head -c 8 /dev/zero >empty.safetensors
	printf '\x08\0\0\0\0\0\0\0 {}     ' >space.safetensors
	printf '\x08\0\0\0\0\0\0\0[]      ' >array.safetensors
	printf '\x08\0\0\0\0\0\0\0\n\t{}    ' >space.bin
	cp array.safetensors array.bin
	local f why mode
	while IFS='|' read -r f why; do
		for mode in "" --verify --tensors "--diff $f"; do
			# shellcheck disable=SC2086
			run --separate-stderr inspect $mode $f
			assert_status 1
			assert_equal "$(first_line "$stderr")" "mp-inspect: $f: $why"
		done
	done <<-'EOF'
		short.safetensors|7 bytes is too short for a safetensors file (at least 8)
		empty.safetensors|the header is empty
		space.safetensors|the header does not start with '{'
		array.safetensors|the header does not start with '{'
		space.bin|the header does not start with '{'
		array.bin|the header does not start with '{'
	EOF
	# a dataset stream is one whatever its name; a short file of another
	# name is no weights file
	cp out.stream stream.safetensors
	run inspect stream.safetensors
	assert_status 0
	assert_equal "$(first_line "$output")" "dataset:      stream.safetensors (stream)"
	cp short.safetensors short.bin
	run --separate-stderr inspect short.bin
	assert_status 1
	assert_contains "$stderr" "mp-inspect: short.bin: not a dataset stream (bad magic)"
}

@test "usage errors exit 2 with a reason" {
	while IFS='|' read -r args want; do
		# shellcheck disable=SC2086
		run --separate-stderr inspect $args
		assert_status 2
		assert_equal "$output" ""
		assert_equal "$(first_line "$stderr")" "$want"
		# --extract on a line of its own: --json does not go with it
		assert_equal "$(sed -n 2,3p <<<"$stderr")" \
			"usage: mp-inspect [--json] [--verify | --list | --record N] DATASET
       mp-inspect --extract N -o FILE DATASET"
	done <<-'EOF'
		|mp-inspect: missing DATASET or WEIGHTS
		a b|mp-inspect: expected one DATASET or WEIGHTS
		--list|mp-inspect: missing DATASET
		--record 0 a b|mp-inspect: expected one DATASET
		--extract 1 db|mp-inspect: --extract needs -o FILE
		--json --extract 1 -o x.png db|mp-inspect: --json does not apply to --extract, which writes an image
		-o x.png db|mp-inspect: -o is for --extract
		--list --verify db|mp-inspect: --verify, --list, --record, --extract, --tensors and --dump exclude each other
		--record x db|mp-inspect: --record: "x" is not a number from 0 to 9223372036854775807
		--record -1 db|mp-inspect: --record: "-1" is not a number from 0 to 9223372036854775807
		--max-pixels 0 db|mp-inspect: --max-pixels: "0" is not a number from 1 to 1099511627776
		--frobnicate db|mp-inspect: unrecognized option '--frobnicate'
	EOF
	assert_files .
}

@test "--version and --help exit 0 on stdout" {
	run --separate-stderr inspect --version
	assert_status 0
	assert_equal "$(first_line "$output")" "mp-inspect 0.1.0"
	assert_contains "$output" $'\nbackends: cpu'
	assert_equal "$stderr" ""
	run --separate-stderr inspect -h
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: mp-inspect [options] DATASET | WEIGHTS"
	for opt in --verify --list --record --extract --output --json --max-pixels --help --version; do
		assert_contains "$output" "$opt"
	done
	assert_equal "$stderr" ""
}

# help_entry OPTION: the text of OPTION's entry in --help, on one line.
help_entry() {
	inspect --help | awk -v opt="$1" '
		$1 ~ /^-/ { on = ($1 == opt || $2 == opt) }
		on { sub(/^ +/, ""); printf "%s ", $0 }' | sed 's/ $//'
}

@test "--help names every column --list prints and every file name --extract writes" {
	small_db
	local cols names ext
	cols=$(help_entry --list | sed -n 's/.*one line per record: //p')
	assert_equal "--list: $cols" "--list: $(inspect --list db | head -n 1 | sed 's/\t/, /g')"
	names=$(help_entry --extract | grep -oE '\.[a-z]+' | tr '\n' ' ')
	run --separate-stderr inspect --extract 0 -o x.bmp db
	assert_status 2
	assert_equal "--extract: $names" \
		"--extract: $(first_line "$stderr" | sed 's/.*name it //' | grep -oE '\.[a-z]+' | tr '\n' ' ')"
	for ext in $names; do
		inspect --extract 0 -o "x$ext" db
		[[ -s x$ext ]] || fail "--extract -o x$ext wrote nothing"
	done
}

@test "--extract -o - refuses to write PNG to a terminal" {
	small_db
	run on_tty "$MP_BIN/mp-inspect" --extract 1 -o - db
	assert_status 2
	assert_equal "$(first_line "$output" | tr -d '\r')" \
		"mp-inspect: refusing to write a binary PNG to a terminal: give -o FILE or redirect stdout"
	# Redirected, the same command writes the image.
	run on_tty sh -c '"$1" --extract 1 -o - db >stdout.png' sh "$MP_BIN/mp-inspect"
	assert_status 0
	assert_equal "$(head -c 4 stdout.png | od -An -tx1 | tr -d ' ')" "89504e47"
}

@test "--extract refuses an output name whose format it does not write" {
	mkimg make solid a.png 8 8
	echo "a.png 0" >list.txt
	bw -q --size 8 -o db list.txt
	run --separate-stderr inspect --extract 0 -o out.bmp db
	assert_status 2
	assert_contains "$(first_line "$stderr")" "-o out.bmp: name it .png, .jpg, .jpeg or .ppm"
	[[ ! -e out.bmp ]]
}

@test "--extract follows a link to the file it names, writes a device in place and refuses the dataset itself" {
	small_db
	echo old >target.png
	ln -s target.png link.png
	inspect --extract 1 -o link.png db
	[[ -L link.png ]]
	assert_equal "$(head -c 4 target.png | od -An -tx1 | tr -d ' ')" "89504e47"
	ln -s /dev/null null.png
	inspect --extract 1 -o null.png db
	[[ -L null.png && -c /dev/null ]]
	mkdir dir.png
	run --separate-stderr inspect --extract 1 -o dir.png db
	assert_status 1
	assert_equal "$stderr" "mp-inspect: dir.png: Is a directory"
	cp out.stream s.png
	ln -s s.png s-link.png
	for o in s.png s-link.png; do
		run --separate-stderr inspect --extract 0 -o "$o" s.png
		assert_status 2
		assert_equal "$(first_line "$stderr")" "mp-inspect: -o $o: that is the dataset, which it would replace"
	done
	cmp s.png out.stream
	assert_files . categories.txt d.png db dir.png link.png null.png out.stream s-link.png s.png \
		target.png train.txt a.png b.png c.png
}

@test "--extract through a link to standard error redirected to a file writes there, after what the file held" {
	small_db
	ln -s /dev/fd/2 err.png
	echo before >err.txt
	inspect --extract 1 -o err.png db 2>>err.txt
	inspect --extract 1 -o want.png db
	assert_equal "$(head -1 err.txt)" "before"
	tail -c +8 err.txt >got.png
	cmp want.png got.png
}

@test "--list escapes tabs and newlines in names" {
	mkimg make solid "a	b.png" 8 8
	printf 'a\tb.png 0\n' >list.txt
	bw -q --size 8 -o db list.txt
	assert_equal "$(inspect --list db | tail -n +2 | cut -f2)" 'a\tb.png'
}

@test "--json is valid UTF-8 JSON whatever bytes names and paths hold" {
	names=('q"uote.png' 'back\slash.png' $'ctl\x01\x1f.png' $'bad\xff\xfe.png' $'tab\there.png' $'uni\xc3\xa9.png')
	mkimg make solid a.png 8 8
	for n in "${names[@]}"; do
		cp a.png "$n"
		printf '%s 0\n' "$n"
	done >list.txt
	bw -q --size 8 -o $'db\xff' list.txt
	random_weights 4 $'w\xfe.safetensors'
	# strict: every byte UTF-8; names and paths give back their bytes
	check='
import json, os, sys
d = json.loads(sys.stdin.buffer.read().decode("utf-8"))
print(eval(sys.argv[1]))'
	for mode in "" --list --verify "--record 3"; do
		# shellcheck disable=SC2086
		inspect --json $mode $'db\xff' >out.json
		"$PY" -c "$check" 1 <out.json
	done
	assert_equal "$(inspect --json --list $'db\xff' | "$PY" -c "$check" '[os.fsencode(r["name"]) for r in d]')" \
		"[b'q\"uote.png', b'back\\\\slash.png', b'ctl\\x01\\x1f.png', b'bad\\xff\\xfe.png', b'tab\\there.png', b'uni\\xc3\\xa9.png']"
	assert_equal "$(inspect --json $'db\xff' | "$PY" -c "$check" 'os.fsencode(d["dataset"])')" "b'db\\xff'"
	for mode in "" --verify --tensors; do
		# shellcheck disable=SC2086
		inspect --json $mode $'w\xfe.safetensors' >out.json
		"$PY" -c "$check" 1 <out.json
	done
	assert_equal "$(inspect --json --verify $'w\xfe.safetensors' | "$PY" -c "$check" 'os.fsencode(d["file"])')" \
		"b'w\\xfe.safetensors'"
}

@test "--verify reports every damaged byte and every cut of a stream, DB, weights file and checkpoint" {
	small_db
	random_weights 4 w.safetensors
	# a checkpoint: the same network with momentum for each learned tensor
	"$PY" - "$MP_ROOT/scripts" <<-'END'
		import sys
		sys.path.insert(0, sys.argv[1])
		import numpy as np, mp_resnet
		t, meta = mp_resnet.read_safetensors("w.safetensors")
		for k in list(t):
		    if not k.endswith(("running_mean", "running_var")):
		        t["momentum." + k] = (np.asarray(t[k]) * 0.01).astype(np.float32)
		meta["crc32"] = mp_resnet.data_crc32(t)
		mp_resnet.write_safetensors("c.safetensors", t, meta)
	END
	inspect --verify c.safetensors
	for f in "stream out.stream" "db db" "weights w.safetensors" "weights c.safetensors"; do
		# shellcheck disable=SC2086
		"$PY" "$BATS_TEST_DIRNAME/damage.py" "$MP_BIN/mp-inspect" $f
	done
}

@test "a data.mdb whose pages lead outside the file is reported, not a crash" {
	small_db
	# every node pointer of the leaf page (the page holding the keys) far
	# past the end of the file: LMDB follows them blindly
	"$PY" - <<-'END'
		import struct
		d = bytearray(open("db/data.mdb", "rb").read())
		for p in range(2, len(d) // 4096):
		    page = 4096 * p
		    flags, lower = struct.unpack_from("<HH", d, page + 10)
		    if flags == 2:  # P_LEAF
		        for i in range(16, lower, 2):
		            struct.pack_into("<H", d, page + i, 0xfff0)
		open("db/data.mdb", "wb").write(d)
	END
	for mode in "" --verify --list "--record 0"; do
		# shellcheck disable=SC2086
		run --separate-stderr inspect $mode db
		assert_status 1
		assert_equal "$stderr" "mp-inspect: db/data.mdb: reading meta: damaged: a page leads outside the file (Bus error)"
	done
}

@test "a data.mdb whose meta page gives a bad page size, root or last page is reported, not a crash" {
	small_db
	# LMDB divides by the page size of a meta page, asserts that the root
	# page number is past the meta pages and maps as many pages as the
	# last page number says; each copy damages one of those fields (meta
	# page layout: a 16-byte page header, the page size at 40, the main
	# database's root at 128, the last page number at 136, the
	# transaction number at 144)
	"$PY" - <<-'END'
		import os, struct
		d = open("db/data.mdb", "rb").read()
		live = max((0, 4096), key=lambda p: struct.unpack_from("<Q", d, p + 144)[0])
		for name, off, value in [("psize0", 40, 0), ("psize1", 4096 + 40, 0),
		                         ("psize3", 40, 4095), ("root", live + 128, 1),
		                         ("far", live + 128, 1000), ("last", live + 136, 1 << 40)]:
		    b = bytearray(d)
		    struct.pack_into("<Q" if value >> 32 else "<I", b, off, value)
		    os.mkdir(name)
		    open(name + "/data.mdb", "wb").write(b)
	END
	local want=(
		"psize0/data.mdb: damaged: the first meta page gives a page size of 0"
		"psize1/data.mdb: damaged: the meta pages give page sizes 4096 and 0"
		"psize3/data.mdb: damaged: the first meta page gives a page size of 4095"
		"root/data.mdb: reading meta: damaged: LMDB: mdb.c:*: Assertion 'root > 1' failed in mdb_page_search()"
		"far/data.mdb: reading meta: damaged: MDB_PAGE_NOTFOUND: Requested page not found"
		"last/data.mdb: truncated or damaged (*; the meta page says the database needs 4503599627374592)"
	)
	for w in "${want[@]}"; do
		for mode in --verify --list; do
			run --separate-stderr inspect $mode "${w%%/*}"
			assert_status 1
			# shellcheck disable=SC2053 # the root's message has a pattern
			[[ $stderr == "mp-inspect: "$w ]] || fail "$mode ${w%%/*}: $stderr"
		done
	done
}
