#!/usr/bin/env bats
# mp-batchwriter: list files, determinism, LMDB and stream outputs, options.

load helpers

# forty_images: 40 noise images 12x10 in img/, list.txt labels 0..3.
forty_images() {
	mkimg many img 40 12 10 labels=4 >list.txt
}

# names DATASET: the --list lines without the index column, sorted.
names() {
	inspect --list "$1" | tail -n +2 | cut -f2- | LC_ALL=C sort
}

# ---- determinism ----------------------------------------------------------

@test "-j 1 and -j 2 write byte-identical streams and DBs" {
	forty_images
	bw -q -j 1 --size 16 --macrobatch 8 list.txt >one.stream
	bw -q -j 2 --size 16 --macrobatch 8 list.txt >two.stream
	cmp one.stream two.stream
	bw -q -j 1 --size 16 --macrobatch 8 --encoding raw -o one list.txt
	bw -q -j 2 --size 16 --macrobatch 8 --encoding raw -o two list.txt
	assert_equal "$(mdb_dump -p two)" "$(mdb_dump -p one)"
	assert_equal "$(json_get <(inspect --json one) 'd["records"], d["macrobatches"], d["per_class"]')" "(40, 5, [10, 10, 10, 10])"
}

@test "-j 2: the writer sleeps until a run of images is ready, not once per image" {
	# It used to be woken for the next image it had to write, which came
	# one at a time as it kept up: about one sleep per 10 images here.
	! asan_build || skip "AddressSanitizer's allocator blocks on locks of its own (about 280 switches)"
	mkimg many img 2000 32 32 labels=4 >list.txt
	switches=$("$PY" -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_nvcsw)' \
		"$MP_BIN/mp-batchwriter" -q -j 2 --size 32 list.txt)
	[[ $switches -lt 40 ]] || fail "$switches voluntary context switches for 2000 images"
}

@test "--shuffle --seed gives the same order twice, another seed another order, the same records" {
	forty_images
	bw -q --shuffle --seed 7 --size 16 list.txt >a.stream
	bw -q -j 1 --shuffle --seed 7 --size 16 list.txt >b.stream
	bw -q --shuffle --seed 8 --size 16 list.txt >c.stream
	bw -q --size 16 list.txt >plain.stream
	cmp a.stream b.stream
	run cmp -s a.stream c.stream
	assert_status 1
	order_a=$(inspect --list a.stream | cut -f2)
	order_c=$(inspect --list c.stream | cut -f2)
	order_plain=$(inspect --list plain.stream | cut -f2)
	[[ "$order_a" != "$order_c" ]] || fail "seeds 7 and 8 gave the same order"
	[[ "$order_a" != "$order_plain" ]] || fail "--shuffle kept the list order"
	assert_equal "$(names a.stream)" "$(names plain.stream)"
	assert_equal "$(names c.stream)" "$(names plain.stream)"
	# Records keep their labels when they move.
	assert_equal "$(inspect --list a.stream | awk -F'\t' '$2 == "img/img0013.png" { print $3 }')" "1"
	# The mean does not depend on the order.
	assert_equal "$(json_get <(inspect --json a.stream) 'd["meta"]["mean"]')" \
		"$(json_get <(inspect --json plain.stream) 'd["meta"]["mean"]')"
}

# ---- list files -----------------------------------------------------------

@test "lists accept a UTF-8 BOM, comments, blank lines, CRLF, leading blanks and paths with spaces" {
	mkdir "my dir"
	mkimg batch <<-'EOF'
		make solid "my dir/first image.png" 8 8 color=1,2,3
		make solid b.png 8 8 color=4,5,6
		make solid c.png 8 8 color=7,8,9
	EOF
	printf '\xef\xbb\xbf# a comment\r\n\r\n   \r\nmy dir/first image.png 2\r\n  # indented comment\r\n\tb.png\t0\r\nc.png   1  \r\n' >list.txt
	bw -q --size 8 -o db list.txt
	run inspect --list db
	assert_equal "$(cut -f1-3 <<<"$output")" "$(printf 'index\tname\tlabel\n0\tmy dir/first image.png\t2\n1\tb.png\t0\n2\tc.png\t1')"
	# and a category file saved the same way
	printf '\xef\xbb\xbf/a/abbey 0\r\n/b/beach 1\r\n/c/canyon 2\r\n' >categories.txt
	bw -q -c categories.txt --size 8 -o db2 list.txt
	assert_equal "$(json_get <(inspect --json db2) 'd["meta"]["class_names"]')" "['/a/abbey', '/b/beach', '/c/canyon']"
}

@test "a label outside -c categories fails naming the list file and line" {
	mkimg make solid a.png 8 8
	printf '/a/abbey 0\n/b/beach 1\n/c/canyon 2\n' >categories.txt
	printf 'a.png 0\n# comment\na.png 3\na.png 1\n' >train.txt
	run --separate-stderr bw -c categories.txt --size 8 -o db train.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: train.txt line 3: label 3 is outside 0..2 (the class count)"
	assert_no_db db
}

@test "a label outside --classes fails naming the list file and line" {
	mkimg make solid a.png 8 8
	printf 'a.png 0\na.png 1\n\na.png 5\n' >train.txt
	run --separate-stderr bw --classes 5 --size 8 -o db train.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: train.txt line 4: label 5 is outside 0..4 (the class count)"
	assert_no_db db
	run --separate-stderr bw --classes 6 -q --size 8 -o db train.txt
	assert_status 0
	assert_equal "$(json_get <(inspect --json db) 'd["meta"]["classes"], d["per_class"]')" "(6, [1, 1, 0, 0, 0, 1])"
}

@test "a negative label fails naming the line" {
	mkimg make solid a.png 8 8
	printf 'a.png 0\na.png -1\n' >train.txt
	run --separate-stderr bw --size 8 -o db train.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: train.txt line 2: label -1 is outside 0..65535"
}

@test "mixed labelled and unlabelled lines fail naming the line" {
	mkimg make solid a.png 8 8
	printf 'a.png 0\n\na.png\n' >one.txt
	printf 'a.png\na.png 4\n' >two.txt
	run --separate-stderr bw --size 8 -o db one.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: one.txt line 3: has no label but line 1 has one"
	run --separate-stderr bw --size 8 -o db two.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: two.txt line 2: has a label but line 1 has none"
	assert_no_db db
}

@test "a label written as a decimal (7.0) is read as part of the path, and the messages say so" {
	mkimg make solid a.png 8 8
	hint=" (its last word is a number, but a label must be a whole number: the line is read as a path without one)"
	printf 'a.png 1.0\n' >all.txt
	printf 'a.png 0\na.png 1e0\n' >mixed.txt
	run --separate-stderr bw --size 8 -o db all.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: a.png 1.0 (all.txt line 1): No such file or directory$hint"
	run --separate-stderr bw --size 8 -o db mixed.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: mixed.txt line 2: has no label but line 1 has one$hint"
	# the decimal on the first line, which then has none
	printf 'a.png 1.0\na.png 1\n' >first.txt
	run --separate-stderr bw --size 8 -o db first.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: first.txt line 2: has a label but line 1 has none$hint"
	# a name whose last word is no number gets no hint
	printf 'a.png x\n' >word.txt
	run --separate-stderr bw --size 8 -o db word.txt
	assert_equal "$stderr" "mp-batchwriter: a.png x (word.txt line 1): No such file or directory$NO_ROOT"
	assert_no_db db
}

@test "a test list without labels packs with label -1 and no classes" {
	mkimg batch <<-'EOF'
		make solid a.png 8 8
		make solid b.png 8 8
		make solid c.png 8 8
	EOF
	printf 'a.png\nb.png\nc.png\n' >test.txt
	bw -q --size 8 -o db test.txt
	assert_equal "$(inspect --list db | tail -n +2 | cut -f3 | sort -u)" "-1"
	run inspect db
	assert_status 0
	assert_equal "$(tail -n 1 <<<"$output")" "labels:       none (3 unlabelled records)"
	assert_not_contains "$output" "per class"
	assert_equal "$(json_get <(inspect --json db) 'd["meta"]["labelled"], d["meta"]["classes"], d["unlabelled"], d["per_class"]')" \
		"(False, 0, 3, [])"
}

@test "a path on two lines is packed twice with a warning naming both lines, and both labels when they differ" {
	mkimg batch <<-'EOF'
		make solid a.png 8 8
		make solid b.png 8 8
	EOF
	printf 'a.png 0\nb.png 1\na.png 0\n# note\nb.png 0\n' >list.txt
	run --separate-stderr bw -q --size 8 -o db list.txt
	assert_status 0
	assert_equal "$stderr" "mp-batchwriter: list.txt line 3: a.png is also on line 1; it is packed again
mp-batchwriter: list.txt line 5: b.png is also on line 2 (label 1 there, 0 here); it is packed again"
	assert_equal "$(json_get <(inspect --json db) 'd["records"]')" "4"
	# past five, a count
	for i in $(seq 8); do echo "a.png 0"; done >many.txt
	run --separate-stderr bw -q --size 8 many.txt
	assert_status 0
	assert_equal "$(grep -c 'is packed again$' <<<"$stderr")" "5"
	assert_equal "$(tail -n 1 <<<"$stderr")" \
		"mp-batchwriter: many.txt: 7 lines repeat a path of an earlier line (5 shown); each is packed as often as it appears"
	# other spellings of one file are other paths; a shuffled list names the lines as written
	printf 'a.png 0\n./a.png 0\n' >two.txt
	run --separate-stderr bw -q --size 8 -o db2 --shuffle two.txt
	assert_status 0
	assert_equal "$stderr" ""
	printf 'b.png 0\na.png 0\nb.png 0\na.png 0\n' >four.txt
	run --separate-stderr bw -q --size 8 -o db3 --shuffle --seed 3 four.txt
	assert_equal "$stderr" "mp-batchwriter: four.txt line 3: b.png is also on line 1; it is packed again
mp-batchwriter: four.txt line 4: a.png is also on line 2; it is packed again"
}

@test "the list is read from stdin when no LIST is given" {
	mkimg make solid a.png 8 8
	printf 'a.png 0\nmissing.png 1\n' >list.txt
	run --separate-stderr bw --size 8 -o db <list.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: missing.png (<stdin> line 2): No such file or directory$NO_ROOT"
	head -n 1 list.txt | bw -q --size 8 -o db
	assert_equal "$(json_get <(inspect --json db) 'd["records"], d["meta"]["source_list"]')" "(1, '<stdin>')"
}

@test "a stream given as the list (--input-stream forgotten) is named as a stream" {
	mkimg make solid a.png 8 8
	echo "a.png 0" >list.txt
	bw -q --size 8 list.txt >s.stream
	run --separate-stderr bw -q -o db <s.stream
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: <stdin>: a dataset stream, not an image list (mp-batchwriter --input-stream stores one in a DB)"
	run --separate-stderr bw -q -o db s.stream
	assert_status 1
	assert_contains "$stderr" "mp-batchwriter: s.stream: a dataset stream, not an image list"
	assert_files . a.png list.txt s.stream
}

@test "-r ROOT prefixes relative paths and leaves absolute ones" {
	mkdir -p data/train other
	mkimg batch <<-EOF
		make solid data/train/a.png 8 8 color=1,1,1
		make solid $PWD/other/b.png 8 8 color=2,2,2
	EOF
	printf 'train/a.png 0\n%s/other/b.png 1\n' "$PWD" >list.txt
	bw -q -r data --size 8 -o db list.txt
	assert_equal "$(inspect --list db | tail -n +2 | cut -f2)" "$(printf 'train/a.png\n%s/other/b.png' "$PWD")"
	run --separate-stderr bw -q --size 8 -o db2 list.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: train/a.png (list.txt line 1): No such file or directory$NO_ROOT"
}

@test "a list with only comments fails" {
	printf '# nothing\n\n' >list.txt
	run --separate-stderr bw --size 8 -o db list.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: list.txt: the list holds no images"
	assert_no_db db
}

@test "a missing list or categories file fails naming it" {
	run --separate-stderr bw --size 8 -o db nolist.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: nolist.txt: No such file or directory"
	echo x >list.txt
	run --separate-stderr bw -c nocats.txt --size 8 -o db list.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: nocats.txt: No such file or directory"
	assert_no_db db
}

@test "categories give class names and the class count" {
	mkimg make solid a.png 8 8
	printf '/a/abbey 0\n/b/beach 1\n/c/canyon 2\n' >categories.txt
	printf 'a.png 2\na.png 0\na.png 2\n' >train.txt
	bw -q -c categories.txt --size 8 -o db train.txt
	run inspect db
	assert_equal "$(tail -n 5 <<<"$output")" "$(printf 'classes:      3\nper class:\n      0        1  /a/abbey\n      1        0  /b/beach\n      2        2  /c/canyon')"
	assert_equal "$(json_get <(inspect --json db) 'd["meta"]["class_names"]')" "['/a/abbey', '/b/beach', '/c/canyon']"
}

@test "the meta stays UTF-8 JSON: a category file in another encoding is refused, a list name is mended" {
	mkimg make solid a.png 8 8
	printf '/c/caf\xe9 0\n/b/bar 1\n' >latin1.txt
	printf '/c/caf\xc3\xa9 0\n/b/bar 1\n' >utf8.txt
	printf 'a.png 0\na.png 1\n' >$'l\xe9.txt'
	run --separate-stderr bw -q -c latin1.txt --size 8 -o db $'l\xe9.txt'
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: latin1.txt line 1: byte 7 (0xe9) is not UTF-8: save the file as UTF-8"
	assert_no_db db
	bw -q -c utf8.txt --size 8 -o db $'l\xe9.txt'
	# the meta as stored, read as strict UTF-8 JSON
	run "$PY" -c 'import json, lmdb, sys
m = json.loads(lmdb.open(sys.argv[1], readonly=True, lock=False).begin().get(b"meta"))
print(ascii(m["class_names"]), ascii(m["source_list"]))' db
	assert_status 0
	assert_equal "$output" "['/c/caf\\xe9', '/b/bar'] 'l\\ufffd.txt'"
}

# ---- outputs --------------------------------------------------------------

@test "without -o the stream goes to stdout redirected to a file" {
	forty_images
	bw --size 16 list.txt >out.stream 2>err.txt
	assert_equal "$(head -c 8 out.stream)" "MPSTREAM"
	assert_equal "$(sed 's/ in [0-9.]* s, [0-9]* images\/s//' err.txt)" \
		"mp-batchwriter: packed 40 records in 1 macrobatches (0.0 MiB; jpeg 0, png 40, raw 0) -> <stdout>"
	run inspect --verify out.stream
	assert_status 0
	assert_equal "$output" "out.stream: OK: 40 records verified (CRCs, layout, every image decoded)"
}

@test "the DB and the stream hold the same records and statistics" {
	forty_images
	bw -q --size 16 --macrobatch 7 -o db list.txt
	bw -q --size 16 --macrobatch 7 list.txt >out.stream
	assert_equal "$(inspect --list out.stream)" "$(inspect --list db)"
	assert_equal "$(inspect --list - <out.stream)" "$(inspect --list db)"
	assert_equal "$(stats_json out.stream)" "$(stats_json db)"
	assert_equal "$(json_get <(inspect --json db) 'd["records"], d["macrobatches"], d["meta"]["records"]')" "(40, 6, 40)"
}

@test "--input-stream makes the same DB as -o" {
	forty_images
	bw -q --size 16 --macrobatch 7 -o direct list.txt
	bw -q --size 16 --macrobatch 7 list.txt >out.stream
	run --separate-stderr bw --input-stream -o copied <out.stream
	assert_status 0
	assert_equal "$(sed 's/ in [0-9.]* s, [0-9]* images\/s//' <<<"$stderr")" \
		"mp-batchwriter: copied 40 records in 6 macrobatches (0.0 MiB; jpeg 0, png 40, raw 0) -> copied"
	assert_equal "$(inspect --list copied)" "$(inspect --list direct)"
	assert_equal "$(json_get <(inspect --json copied) 'd["meta"]')" "$(json_get <(inspect --json direct) 'd["meta"]')"
	# Every key and value, the meta document included, is the same.
	assert_equal "$(mdb_dump -p copied)" "$(mdb_dump -p direct)"
	run inspect --verify copied
	assert_status 0
}

@test "--map-size 65536 grows the map and the DB verifies" {
	# 60 raw 40x40 images: 288000 bytes of pixels.
	mkimg many img 60 40 40 labels=3 >list.txt
	bw -q --size 40 --encoding raw --macrobatch 4 --map-size 65536 -o small list.txt
	# One macrobatch bigger than the whole initial map.
	bw -q --size 40 --encoding raw --map-size 65536 -o big list.txt
	for db in small big; do
		run inspect --verify "$db"
		assert_status 0
		assert_equal "$output" "$db: OK: 60 records verified (CRCs, layout, every image decoded)"
		map=$(mdb_stat -e "$db" | awk '/Map size:/ { print $3 }')
		assert_less 288000 "$map"
	done
	assert_equal "$(json_get <(inspect --json small) 'd["macrobatches"], d["payload_bytes"]["total"]')" "(15, 288000)"
	assert_equal "$(inspect --list small)" "$(inspect --list big)"
}

# ---- options ----------------------------------------------------------------

@test "usage errors exit 2 with a reason naming the option" {
	while IFS='|' read -r args want; do
		# shellcheck disable=SC2086
		run --separate-stderr bw $args list.txt
		assert_status 2
		assert_equal "$output" ""
		assert_equal "$(first_line "$stderr")" "$want"
		assert_equal "$(sed -n 2p <<<"$stderr")" "usage: mp-batchwriter [-r ROOT] [-o DB] [-c CATEGORIES] [options] [LIST]"
	done <<-'EOF'
		--size 0|mp-batchwriter: --size: "0" is not a number from 1 to 16384
		--fit foo|mp-batchwriter: --fit: "foo" is not one of pad|crop|stretch
		--jobs 8o|mp-batchwriter: --jobs: "8o" is not a number from 1 to 256
		-j 0|mp-batchwriter: --jobs: "0" is not a number from 1 to 256
		--pad-fill blue|mp-batchwriter: --pad-fill: "blue" is not one of mean|zero|edge
		--encoding gif|mp-batchwriter: --encoding: "gif" is not one of keep|jpeg|png|raw
		--quality 101|mp-batchwriter: --quality: "101" is not a number from 1 to 100
		--macrobatch 0|mp-batchwriter: --macrobatch: "0" is not a number from 1 to 1048576
		--map-size 4096|mp-batchwriter: --map-size: "4096" is not a number from 65536 to 70368744177664
		--max-pixels -1|mp-batchwriter: --max-pixels: "-1" is not a number from 1 to 1099511627776
		--seed x|mp-batchwriter: --seed: "x" is not a number from 0 to 999999999999999
		--classes 3 -c cats.txt|mp-batchwriter: give either -c or --classes, not both
		--bogus|mp-batchwriter: unrecognized option '--bogus'
		extra.txt|mp-batchwriter: expected at most one LIST, got 2 arguments
		--input-stream -o db|mp-batchwriter: --input-stream reads a stream from stdin and needs -o DB and no LIST
	EOF
	assert_files . # nothing was created
}

@test "--encoding raw: a macrobatch too large to write is refused before any image is read" {
	# the images need not exist: nothing is decoded
	for ((k = 0; k < 300; k++)); do echo "im$k.png 0"; done >list.txt
	while IFS='|' read -r args want; do
		# shellcheck disable=SC2086
		run --separate-stderr bw --encoding raw $args list.txt
		assert_status 2
		assert_equal "$stderr" "$want"
	done <<-'EOF'
		--size 16384 --pad 4096 --macrobatch 1|mp-batchwriter: --encoding raw: a record of 24576x24576 pixels takes 1811939328 bytes, more than a stream frame holds (1073741824); use a smaller --size or --pad, or write a DB with -o
		--size 16384 --macrobatch 2|mp-batchwriter: --macrobatch 2: 2 raw records of 16384x16384 pixels take more than the 1073741824 bytes a stream frame holds; use --macrobatch 1 or less
		--size 4096 -o db|mp-batchwriter: --macrobatch 1024 (the default): 300 raw records of 4096x4096 pixels take more than the 4294967295 bytes a macrobatch holds; use --macrobatch 85 or less
	EOF
	# what fits goes on to the images
	run --separate-stderr bw --encoding raw --size 4096 --macrobatch 85 -o db list.txt
	assert_status 1
	assert_contains "$stderr" "im0.png"
	assert_files . list.txt
}

@test "an option given more than once takes its last value, as the man page says" {
	mkimg make solid a.png 8 8
	echo "a.png 0" >list.txt
	bw -q --size 16 --size 8 --fit crop --fit stretch --classes 9 --classes 2 -o db -o - list.txt >s.stream
	assert_equal "$(json_get <(inspect --json s.stream) 'd["meta"]["size"], d["meta"]["fit"], d["meta"]["classes"]')" "(8, 'stretch', 2)"
	grep -q "An option given more than once takes its last value" "$MP_ROOT/man/mp-batchwriter.1"
	assert_files . a.png list.txt s.stream
}

@test "an empty path is a usage error in every tool, before any work" {
	mkimg batch <<-'EOF'
		make solid a.png 8 8
	EOF
	echo "a.png 0" >list.txt
	# TOOL OPTION LONG-OPTION [arguments that would otherwise do some work]
	while read -r tool opt long rest; do
		# -o "" and --output=
		# shellcheck disable=SC2086
		run --separate-stderr "$MP_BIN/$tool" "$opt" "" $rest
		assert_status 2
		assert_equal "$output" ""
		assert_equal "$(first_line "$stderr")" "$tool: $long: the path is empty"
		# shellcheck disable=SC2086
		run --separate-stderr "$MP_BIN/$tool" "$long=" $rest
		assert_status 2
		assert_equal "$(first_line "$stderr")" "$tool: $long: the path is empty"
	done <<-'EOF'
		mp-batchwriter -o --output --size 8 list.txt
		mp-batchwriter -r --root --size 8 -o db list.txt
		mp-batchwriter -c --categories --size 8 -o db list.txt
		mp-train -o --output -d db
		mp-train -d --train -o run
		mp-train -v --val -d db -o run
		mp-train --resume --resume -d db -o run
		mp-train --log --log -d db -o run
		mp-eval -m --weights db
		mp-eval -d --data -m w
		mp-eval -r --root -m w --list list.txt
		mp-eval --list --list -m w
		mp-eval --probs --probs -m w db
		mp-eval --submission --submission -m w db
		mp-eval --per-class --per-class -m w db
		mp-eval --confusion --confusion -m w db
		mp-eval --dump-views --dump-views -m w db
		mp-inspect -o --output --extract 0 db
	EOF
	# and an empty path as an argument
	while IFS='|' read -r tool name rest; do
		# shellcheck disable=SC2086
		run --separate-stderr "$MP_BIN/$tool" $rest ""
		assert_status 2
		assert_equal "$(first_line "$stderr")" "$tool: $name: the path is empty"
	done <<-'EOF'
		mp-batchwriter|LIST|--size 8 -o db
		mp-eval|DATASET|-m w
		mp-inspect|DATASET or WEIGHTS|--verify
	EOF
	assert_files . a.png list.txt
}

@test "a directory option given - (standard output elsewhere) is a usage error, not a directory named -" {
	echo "a.png 0" >list.txt
	while read -r tool opt long rest; do
		# shellcheck disable=SC2086
		run --separate-stderr "$MP_BIN/$tool" "$opt" - $rest
		assert_status 2
		assert_equal "$(first_line "$stderr")" \
			"$tool: $long -: a directory is expected, not standard output (./- names a directory called -)"
	done <<-'EOF'
		mp-train -o --output -d db
		mp-train --output --output -d db
		mp-eval --dump-views --dump-views -m w db
	EOF
	assert_files . list.txt
}

@test "--version and --help exit 0 on stdout" {
	run --separate-stderr bw --version
	assert_status 0
	assert_equal "$(first_line "$output")" "mp-batchwriter 0.1.0"
	assert_contains "$output" $'\nbackends: cpu'
	assert_equal "$stderr" ""
	# every tool says the same of the device, those without a network too
	for tool in mp-inspect mp-train mp-eval; do
		assert_equal "$(tail -n 1 <<<"$output")" "$("$MP_BIN/$tool" --version | tail -n 1)"
	done
	run --separate-stderr bw --help
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: mp-batchwriter [-r ROOT] [-o DB] [-c CATEGORIES] [options] [LIST]"
	for opt in --root --output --categories --classes --size --fit --pad --pad-fill \
		--encoding --quality --macrobatch --shuffle --seed --jobs --skip-bad \
		--max-pixels --input-stream --force --map-size --quiet --help --version; do
		assert_contains "$output" "$opt"
	done
	# every line fits a terminal of 80 columns
	assert_equal "$(awk 'length > 79' <<<"$output")" ""
	assert_equal "$stderr" ""
}

@test "--help and --version exit 1 when stdout cannot be written, in every tool" {
	[[ -w /dev/full ]] || skip "no /dev/full"
	for tool in mp-batchwriter mp-train mp-eval mp-inspect; do
		for opt in --help -h --version -V; do
			run --separate-stderr "$MP_BIN/$tool" "$opt"
			assert_status 0
			run --separate-stderr bash -c '"$1" "$2" >/dev/full' _ "$MP_BIN/$tool" "$opt"
			assert_status 1
			assert_equal "$stderr" "$tool: <stdout>: write error: No space left on device"
		done
	done
}

@test "-q prints nothing on success; the summary counts what was stored" {
	mkimg batch <<-'EOF'
		make solid a.png 8 8
		make solid b.jpg 8 8
		make solid c.png 10 10
	EOF
	printf 'a.png\nb.jpg\nc.png\n' >list.txt
	run --separate-stderr bw -q --size 8 -o q list.txt
	assert_status 0
	assert_equal "$output$stderr" ""
	run --separate-stderr bw --size 8 -o s list.txt
	assert_status 0
	assert_equal "$output" ""
	assert_equal "$(sed 's/ in [0-9.]* s, [0-9]* images\/s//' <<<"$stderr")" \
		"mp-batchwriter: packed 3 records in 1 macrobatches (0.0 MiB; jpeg 1, png 2, raw 0) -> s"
}

@test "--input-stream refuses options that only packing uses" {
	for opt in "--size 16" "-j 2" "--shuffle" "-r ." "--encoding raw"; do
		# shellcheck disable=SC2086
		run --separate-stderr bw --input-stream $opt -o db </dev/null
		assert_status 2
		assert_contains "$(first_line "$stderr")" "does not apply to --input-stream"
		assert_no_db db
	done
}

@test "--force and --map-size go with -o: a stream has no DB to replace or map" {
	mkimg make solid a.png 8 8
	echo "a.png 0" >list.txt
	for opt in "-f|--force goes with -o DB; the stream on stdout has no DB to replace" \
		"--map-size 65536|--map-size goes with -o DB; the stream on stdout has no DB to map"; do
		# shellcheck disable=SC2086
		run --separate-stderr bw --size 8 ${opt%%|*} list.txt
		assert_status 2
		assert_equal "$(first_line "$stderr")" "mp-batchwriter: ${opt#*|}"
		assert_equal "$output" ""
	done
}

@test "the shuffle seed is recorded in the meta, exactly" {
	mkimg many img 6 8 8 labels=2 >list.txt
	bw -q --size 8 --shuffle --seed 42 -o shuffled list.txt
	bw -q --size 8 -o plain list.txt
	assert_equal "$(json_get <(inspect --json shuffled) 'd["meta"]["shuffle_seed"]')" "42"
	assert_equal "$(json_get <(inspect --json plain) 'd["meta"]["shuffle_seed"]')" "None"
	# The largest seed is recorded exactly and read back; a larger one was
	# rounded (9007199254740991), or made a meta no reader accepted.
	bw -q --size 8 --shuffle --seed 999999999999999 -o big list.txt
	assert_equal "$(json_get <(inspect --json big) 'd["meta"]["shuffle_seed"]')" "999999999999999"
	for seed in 1000000000000000 9007199254740991 9223372036854775807; do
		run --separate-stderr bw -q --size 8 --shuffle --seed "$seed" -o bigger list.txt
		assert_status 2
		assert_equal "$(first_line "$stderr")" \
			"mp-batchwriter: --seed: \"$seed\" is not a number from 0 to 999999999999999"
	done
	assert_files . img list.txt shuffled plain big
}

@test "a stream is not written to a terminal" {
	mkimg make solid a.png 8 8
	echo "a.png 0" >list.txt
	run on_tty "$MP_BIN/mp-batchwriter" --size 8 list.txt
	assert_status 2
	assert_equal "$(first_line "$output" | tr -d '\r')" \
		"mp-batchwriter: refusing to write a binary stream to a terminal: give -o DB or redirect stdout"
	# redirected, the same command writes the stream
	run on_tty sh -c '"$1" -q --size 8 list.txt >s.stream' sh "$MP_BIN/mp-batchwriter"
	assert_status 0
	run "$MP_BIN/mp-inspect" s.stream
	assert_status 0
	assert_files . a.png list.txt s.stream
}
