#!/usr/bin/env bats
# Bad images, bad streams and corrupt DBs: every one is reported with its
# name (and list line) and stops the run, unless --skip-bad says to count
# and go on. Nothing is ever left under the output name.

load helpers

# bad_inputs: good.png, good.jpg and one file of each bad kind.
bad_inputs() {
	mkimg batch <<-'EOF'
		make noise good.png 16 16 seed=1
		make noise good.jpg 16 16 seed=2
		make noise long.jpg 48 48 seed=3 quality=90
		make noise long.png 48 48 seed=4
		make huge-jpeg huge.jpg 16 16 dim=65535
		make huge-jpeg huge2.jpg 16 16 dim=65500
		make huge-png huge.png 16 16 dim=65535
		make scans-jpeg scans.jpg 32 32
	EOF
	mkdir adir
	ln -s nowhere.png dangling.png
	: >empty.png
	echo "not an image" >text.jpg
	# Cut inside the JPEG headers, inside the JPEG scan, inside the PNG data.
	head -c 160 long.jpg >header-cut.jpg
	head -c $(($(stat -c %s long.jpg) * 2 / 3)) long.jpg >cut.jpg
	head -c $(($(stat -c %s long.png) / 2)) long.png >cut.png
}

# The reason each bad kind is refused with (after "PATH (LIST line N): ").
declare -gA REASON=(
	[missing.png]="No such file or directory$NO_ROOT"
	[adir]="is a directory"
	[dangling.png]="a symbolic link to nowhere.png, which does not exist"
	[empty.png]="empty file"
	[text.jpg]="not a JPEG or PNG file"
	[header-cut.jpg]="bad JPEG header: Bogus marker length"
	[cut.jpg]="bad JPEG data: Premature end of JPEG file"
	[cut.png]="bad PNG: file is truncated"
	[huge.jpg]="bad JPEG header: Maximum supported image dimension is 65500 pixels"
	[huge2.jpg]="65500x65500 pixels is more than --max-pixels 67108864"
	[huge.png]="65535x65535 pixels is more than --max-pixels 67108864"
	[scans.jpg]="bad JPEG data: Progressive JPEG image has more than 500 scans"
)
declare -ga BAD_ORDER=(missing.png adir dangling.png empty.png text.jpg header-cut.jpg cut.jpg
	cut.png huge.jpg huge2.jpg huge.png scans.jpg)

@test "each kind of bad input stops the run naming path, list line and reason" {
	bad_inputs
	for bad in "${BAD_ORDER[@]}"; do
		printf 'good.png 0\n\n%s 1\ngood.jpg 0\n' "$bad" >list.txt
		run --separate-stderr bw --size 16 -o db list.txt
		assert_status 1
		assert_equal "$stderr" "mp-batchwriter: $bad (list.txt line 3): ${REASON[$bad]}"
		assert_equal "$output" ""
		assert_no_db db
		# The same to a stream: the error, and no end frame.
		status=0
		bw --size 16 list.txt >"$BATS_TEST_TMPDIR/out.stream" 2>"$BATS_TEST_TMPDIR/err" || status=$?
		assert_status 1
		assert_equal "$(cat "$BATS_TEST_TMPDIR/err")" "mp-batchwriter: $bad (list.txt line 3): ${REASON[$bad]}"
		run --separate-stderr inspect --verify "$BATS_TEST_TMPDIR/out.stream"
		assert_status 1
		assert_equal "$stderr" "mp-inspect: $BATS_TEST_TMPDIR/out.stream: truncated stream: no end frame after 1 frames"
	done
	assert_files . "${BAD_ORDER[@]:1}" good.png good.jpg long.jpg long.png list.txt
}

@test "a FIFO or a device in the list is refused at once, not waited on" {
	mkimg make noise good.png 16 16 seed=1
	mkfifo fifo.png
	declare -A why=([fifo.png]="a FIFO" [/dev/null]="a character device")
	for bad in fifo.png /dev/null; do
		printf 'good.png 0\n%s 1\n' "$bad" >list.txt
		# Opening a FIFO without a writer used to wait for ever, SIGTERM
		# or not: KILL after 10 s.
		run --separate-stderr timeout -s KILL 10 "$MP_BIN/mp-batchwriter" --size 16 -o db list.txt
		assert_status 1
		assert_equal "$stderr" "mp-batchwriter: $bad (list.txt line 2): not a regular file (${why[$bad]})"
		assert_no_db db
	done
	# not even opened: a writer waiting on the FIFO is not let through
	# (our close would then end it with SIGPIPE)
	printf 'good.png 0\nfifo.png 1\n' >list.txt
	(echo data >fifo.png; echo "writer $?" >writer.txt) &
	local writer=$!
	run --separate-stderr timeout -s KILL 10 "$MP_BIN/mp-batchwriter" --size 16 -o db list.txt
	assert_status 1
	timeout 10 cat fifo.png >/dev/null || fail "the writer got through: $(cat writer.txt)"
	wait $writer
	assert_equal "$(cat writer.txt)" "writer 0"
}

@test "a huge header is refused before any pixel memory is allocated" {
	bad_inputs
	printf 'huge2.jpg\n' >jpeg.txt
	printf 'huge.png\n' >png.txt
	# 65500x65500 RGB would be 12 GiB; a 512 MiB address space is plenty
	# for everything else (the LMDB map would not fit: write streams).
	for list in jpeg.txt png.txt; do
		run --separate-stderr limit_memory 524288 bash -c 'exec "$1" -j 1 --size 16 "$2" >/dev/null' \
			sh "$MP_BIN/mp-batchwriter" "$list"
		assert_status 1
		bad=$(cat "$list")
		assert_equal "$stderr" "mp-batchwriter: $bad ($list line 1): ${REASON[$bad]}"
	done
}

@test "a bad JPEG does not spoil the JPEGs decoded after it by the same thread" {
	bad_inputs
	cp good.jpg good2.jpg
	for bad in header-cut.jpg cut.jpg huge.jpg huge2.jpg text.jpg; do
		printf '%s 0\ngood.jpg 1\ngood2.jpg 2\n' "$bad" >list.txt
		run --separate-stderr bw -j 1 --skip-bad --size 16 -o "db-$bad" list.txt
		assert_status 0
		assert_equal "$(tail -n +2 <<<"$stderr")" "$(printf 'mp-batchwriter: skipped 1 bad inputs:\n  %s (list.txt line 1): %s' "$bad" "${REASON[$bad]}")"
		assert_equal "$(json_get <(inspect --json "db-$bad") 'd["records"], d["per_class"]')" "(2, [0, 1, 1])"
	done
}

@test "--max-pixels sets the limit" {
	mkimg make noise a.png 32 32
	echo a.png >list.txt
	run --separate-stderr bw --max-pixels 1023 --size 8 -o db list.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: a.png (list.txt line 1): 32x32 pixels is more than --max-pixels 1023"
	assert_no_db db
	run --separate-stderr bw -q --max-pixels 1024 --size 8 -o db list.txt
	assert_status 0
	assert_equal "$(json_get <(inspect --json db) 'd["records"]')" "1"
}

@test "the first bad input in list order is reported whatever the thread count" {
	mkimg many img 30 8 8 >list.txt
	sed -i -e '12s/.*/bad-a.png/' -e '20s/.*/bad-b.png/' list.txt
	for j in 1 2 4; do
		run --separate-stderr bw -j "$j" --size 8 -o db list.txt
		assert_status 1
		assert_equal "$stderr" "mp-batchwriter: bad-a.png (list.txt line 12): No such file or directory$NO_ROOT"
		assert_no_db db
	done
}

@test "--skip-bad packs the good images and lists each skipped one" {
	bad_inputs
	{
		echo "good.png 0"
		for bad in "${BAD_ORDER[@]}"; do echo "$bad 1"; done
		echo "good.jpg 2"
	} >list.txt
	run --separate-stderr bw --skip-bad --size 16 -o db list.txt
	assert_status 0
	want="mp-batchwriter: skipped ${#BAD_ORDER[@]} bad inputs:"
	line=2
	for bad in "${BAD_ORDER[@]}"; do
		want+=$'\n'"  $bad (list.txt line $line): ${REASON[$bad]}"
		line=$((line + 1))
	done
	assert_equal "$(tail -n +2 <<<"$stderr")" "$want"
	assert_equal "$(sed 's/ in [0-9.]* s, [0-9]* images\/s//' <<<"$(first_line "$stderr")")" \
		"mp-batchwriter: packed 2 records in 1 macrobatches (0.0 MiB; jpeg 1, png 1, raw 0) -> db"
	assert_equal "$(json_get <(inspect --json db) 'd["meta"]["skipped"], d["records"], d["per_class"]')" "(${#BAD_ORDER[@]}, 2, [1, 0, 1])"
	assert_equal "$(inspect db | grep '^skipped')" "skipped:      ${#BAD_ORDER[@]} bad inputs when packed"
	assert_equal "$(inspect --list db | tail -n +2 | cut -f2,3)" "$(printf 'good.png\t0\ngood.jpg\t2')"
	# A stream says the same in its end frame.
	bw -q --skip-bad --size 16 list.txt >out.stream
	assert_equal "$(json_get <(inspect --json out.stream) 'd["meta"]["skipped"], d["records"]')" "(${#BAD_ORDER[@]}, 2)"
}

@test "--skip-bad does not skip an image for the machine's state: descriptors or memory running out stop the run" {
	command -v strace >/dev/null || skip "no strace: no open or read can be made to fail"
	mkimg many img 6 8 8 >list.txt
	local third
	third=$(sed -n 3p list.txt)
	# -P: only the third image's open, or its read, fails (strace first
	# says the relative path it matches, as the program opens it)
	for fault in openat:error=EMFILE read:error=ENOMEM; do
		run --separate-stderr no_leak_check strace -f -qq -o /dev/null -P "$third" \
			-e inject="$fault" "$MP_BIN/mp-batchwriter" -q -j 2 --skip-bad --size 8 -o db list.txt
		assert_status 1
		stderr=$(grep -v '^strace: ' <<<"$stderr")
		case $fault in
		openat*) assert_equal "$stderr" "mp-batchwriter: $third (list.txt line 3): Too many open files" ;;
		*) assert_equal "$stderr" "mp-batchwriter: $third (list.txt line 3): read error: Cannot allocate memory" ;;
		esac
		assert_no_db db
	done
	# a fault that is the file's own is skipped as before
	run --separate-stderr no_leak_check strace -f -qq -o /dev/null -P "$third" \
		-e inject=read:error=EIO "$MP_BIN/mp-batchwriter" -q -j 2 --skip-bad --size 8 -o db list.txt
	assert_status 0
	assert_equal "$(grep -v '^strace: ' <<<"$stderr")" "mp-batchwriter: skipped 1 bad inputs:
  $third (list.txt line 3): read error: Input/output error"
}

@test "--skip-bad with nothing good fails, writes nothing and lists why" {
	: >empty.png
	printf 'empty.png\nmissing.png\n' >list.txt
	want="mp-batchwriter: skipped 2 bad inputs:
  empty.png (list.txt line 1): empty file
  missing.png (list.txt line 2): No such file or directory$NO_ROOT
mp-batchwriter: list.txt: no records to write"
	for q in "" -q; do
		run --separate-stderr bw $q --skip-bad --size 16 -o db list.txt
		assert_status 1
		assert_equal "$stderr" "$want"
		assert_equal "$output" ""
		assert_no_db db
		# The same to a stream.
		run --separate-stderr bw $q --skip-bad --size 16 list.txt
		assert_status 1
		assert_equal "$stderr" "$want"
	done
}

@test "a bad image is named by the path opened, below -r ROOT" {
	mkdir img
	mkimg batch <<-'EOF'
		make noise img/v1.png 16 16 seed=1
	EOF
	: >img/empty.png
	printf 'img/v1.png 0\n' >good.txt
	# img/v1.png exists here, but not below the root given
	run --separate-stderr bw -q --size 16 -r nonexist -o db good.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: nonexist/img/v1.png (good.txt line 1): No such file or directory"
	assert_no_db db
	# a root given with trailing slashes joins with one
	run --separate-stderr bw -q --size 16 -r nonexist// -o db good.txt
	assert_equal "$stderr" "mp-batchwriter: nonexist/img/v1.png (good.txt line 1): No such file or directory"
	# an absolute path is opened as it is
	printf '%s/img/missing.png 0\n' "$PWD" >abs.txt
	run --separate-stderr bw -q --size 16 -r nonexist -o db abs.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: $PWD/img/missing.png (abs.txt line 1): No such file or directory"
	# the list of skipped entries names the same path
	printf 'v1.png 0\nempty.png 1\nmissing.png 1\n' >mixed.txt
	run --separate-stderr bw -q --skip-bad --size 16 -r img -o db mixed.txt
	assert_status 0
	assert_equal "$stderr" "mp-batchwriter: skipped 2 bad inputs:
  img/empty.png (mixed.txt line 2): empty file
  img/missing.png (mixed.txt line 3): No such file or directory"
	# while the record keeps the name the list gave it
	assert_equal "$(inspect --list db | tail -n +2 | cut -f2)" "v1.png"
}

@test "a list or categories file that is a link to nothing says so, as an image does" {
	mkimg batch <<-'EOF'
		make noise v1.png 16 16 seed=1
	EOF
	printf 'v1.png 0\n' >good.txt
	printf 'a 0\n' >cats.txt
	ln -s moved/list.txt list.txt
	ln -s moved/cats.txt gone-cats.txt
	run --separate-stderr bw -q --size 16 -o db list.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: list.txt: a symbolic link to moved/list.txt, which does not exist"
	run --separate-stderr bw -q --size 16 -c gone-cats.txt -o db good.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: gone-cats.txt: a symbolic link to moved/cats.txt, which does not exist"
	assert_no_db db
	random_weights 2 w.safetensors
	run --separate-stderr "$MP_BIN/mp-eval" -q -m w.safetensors --list list.txt
	assert_status 1
	assert_equal "$stderr" "mp-eval: list.txt: a symbolic link to moved/list.txt, which does not exist"
}

@test "a very long path is shortened in the middle; list, line and reason stay" {
	# one name longer than PATH_MAX, and one under it with long components
	"$PY" -c "print('img/' + 'x' * 5000 + '.png 0')" >long.txt
	"$PY" -c "print('img/' + ('y' * 200 + '/') * 9 + 'a.png 0')" >deep.txt
	for list in long.txt deep.txt; do
		for root in "" "-r ."; do
			# shellcheck disable=SC2086
			run --separate-stderr bw -q --size 16 $root -o db "$list"
			assert_status 1
			assert_equal "$(wc -l <<<"$stderr")" 1
			assert_less "${#stderr}" 1100
			assert_contains "$stderr" "..."
		done
	done
	assert_contains "$stderr" "mp-batchwriter: ./img/yyyy"
	[[ "$stderr" == *"yyyy/a.png (deep.txt line 1): No such file or directory" ]] ||
		fail "unexpected end: $stderr"
	run --separate-stderr bw -q --size 16 -o db long.txt
	[[ "$stderr" == "mp-batchwriter: img/xxxx"*"xxxx.png (long.txt line 1): path too long" ]] ||
		fail "unexpected: $stderr"
	assert_no_db db
}

# ---- streams ----------------------------------------------------------------

# a_stream: out.stream with 40 records in 5 macrobatches (frames 0..6).
a_stream() {
	mkimg many img 40 12 10 labels=4 >list.txt
	bw -q --size 16 --macrobatch 8 list.txt >out.stream
}

@test "--input-stream refuses what a reader of the DB would: a label or size the dataset does not have, a macrobatch out of size" {
	a_stream
	edit_frames out.stream label.stream 'mb = f[2][1]; struct.pack_into("<i", mb, item(mb, 3), 7); fix(mb)'
	edit_frames out.stream width.stream 'mb = f[1][1]; struct.pack_into("<I", mb, item(mb, 0) + 8, 15); fix(mb)'
	edit_frames out.stream small.stream 'm = get_meta(); m["macrobatch_size"] = 7; set_meta(m)'
	edit_frames out.stream large.stream 'm = get_meta(); m["macrobatch_size"] = 9; set_meta(m)'
	name() { inspect --record "$1" out.stream | sed -n 's/^ *name: *//p'; }
	for c in "label|record 11 ($(name 11)): label 7 is outside 0..3" \
		"width|record 0 ($(name 0)): 15x16, the dataset says 16x16" \
		"small|macrobatch 0 holds 8 records, more than 7" \
		"large|macrobatch 0 holds 8 records, fewer than 9, but is not the last"; do
		IFS='|' read -r f want <<<"$c"
		run --separate-stderr bw --input-stream -o db <"$f.stream"
		assert_status 1
		assert_equal "$stderr" "mp-batchwriter: <stdin>: $want"
		assert_no_db db
		# --verify says the same
		run --separate-stderr inspect --verify "$f.stream"
		assert_status 1
	done
}

@test "mp-eval refuses a dataset that counts other records than it holds, or holds them out of order" {
	a_stream
	"$MP_BIN/../tests/oracle/resnet_init" 1 4,8 A 4 7 w.safetensors >/dev/null
	local end='import json; e = json.loads(bytes(f[-1][1])); e["records"] = N; f[-1][1] = bytearray(json.dumps(e).encode())'
	edit_frames out.stream fewer.stream "${end/N/39}"
	edit_frames out.stream less.stream "${end/N/33}"
	edit_frames out.stream swapped.stream 'f[1], f[2] = f[2], f[1]'
	bw -q --input-stream -o more.db <out.stream
	"$PY" -c '
import json, lmdb, sys
sys.path.insert(0, sys.argv[2])
import mp_dataset
env = lmdb.open(sys.argv[1], subdir=True, lock=False)
with env.begin(write=True) as txn:
    m = json.loads(txn.get(b"meta"))
    m["records"] = 39
    txn.put(b"meta", mp_dataset.meta_bytes(m))
env.close()' more.db "$MP_ROOT/scripts"
	for c in "fewer.stream|end frame counts 39 records, stream held 40" \
		"less.stream|end frame counts 33 records, stream held 40" \
		"swapped.stream|macrobatch 0 starts at record 8, and 0 records come before it" \
		"more.db|40 records read, the meta says 39"; do
		IFS='|' read -r f want <<<"$c"
		run --separate-stderr "$MP_BIN/mp-eval" -q -m w.safetensors --probs p.tsv "$f"
		assert_status 1
		assert_equal "$stderr" "mp-eval: $f: $want"
		[[ ! -e p.tsv ]] || fail "a partial --probs was left"
		# as mp-inspect --verify does
		run inspect --verify "$f"
		assert_status 1
	done
	run "$MP_BIN/mp-eval" -q -m w.safetensors out.stream
	assert_status 0
	# the summary and --list, whose record numbers then do not hold,
	# write what they read and say why it is doubtful, exit 1
	local order='macrobatch 0, which starts at record 8, and 0 records come before it'
	for c in "swapped.stream|2 macrobatches out of order; the first is $order" \
		"more.db|40 records read, the meta says 39"; do
		IFS='|' read -r f want <<<"$c"
		for opt in "" --list "--list --json" --json; do
			run --separate-stderr inspect $opt "$f"
			assert_status 1
			assert_equal "$stderr" "mp-inspect: $f: $want"
			[[ -n $output ]] || fail "mp-inspect $opt $f wrote nothing"
		done
	done
	run inspect --list out.stream
	assert_status 0
	assert_equal "${#lines[@]}" 41
}

@test "a stream whose meta frame gives what only the end frame may is refused, naming the field" {
	a_stream
	for c in 'complete|m["complete"] = True|"complete" is true; it is false in a stream'"'"'s meta frame' \
		'records|m["records"] = 3|"records" is 3, not 0 in a stream'"'"'s meta frame; the end frame gives it' \
		'macrobatches|m["macrobatches"] = 1|"macrobatches" is 1, not 0 in a stream'"'"'s meta frame; the end frame gives it' \
		'skipped|m["skipped"] = 2|"skipped" is 2, not 0 in a stream'"'"'s meta frame; the end frame gives it' \
		'mean|m["mean"] = [1, 2, 3]|"mean" is not null in a stream'"'"'s meta frame; the end frame gives it'; do
		IFS='|' read -r f edit want <<<"$c"
		edit_frames out.stream "$f.stream" "m = get_meta(); $edit; set_meta(m)"
		run --separate-stderr inspect --verify "$f.stream"
		assert_status 1
		assert_equal "$stderr" "mp-inspect: $f.stream: meta frame: $want"
		run --separate-stderr bw --input-stream -o db <"$f.stream"
		assert_status 1
		assert_equal "$stderr" "mp-batchwriter: <stdin>: meta frame: $want"
		assert_no_db db
	done
}

@test "a truncated stream fails --verify and --input-stream, which leaves no DB" {
	a_stream
	size=$(stat -c %s out.stream)
	head -c $((size / 2)) out.stream >cut.stream
	run --separate-stderr inspect --verify - <cut.stream
	assert_status 1
	assert_contains "$stderr" "mp-inspect: <stdin>: truncated stream: frame "
	assert_contains "$stderr" " is cut short"
	assert_contains "$output" "<stdin>: FAILED: 1 problem;"
	run --separate-stderr bw --input-stream -o db <cut.stream
	assert_status 1
	assert_contains "$stderr" "mp-batchwriter: <stdin>: truncated stream: frame "
	assert_no_db db
	# Cut right before the end frame: every frame is whole, the end is missing.
	end_at=$("$PY" -c '
import struct, sys
d = open(sys.argv[1], "rb").read()
pos = last = 16 # after the header; frames: kind, length, payload, CRC
while pos < len(d):
    last = pos
    pos += 12 + struct.unpack("<I", d[pos + 4:pos + 8])[0]
print(last)' out.stream)
	head -c "$end_at" out.stream >noend.stream
	run --separate-stderr inspect --verify noend.stream
	assert_status 1
	assert_equal "$stderr" "mp-inspect: noend.stream: truncated stream: no end frame after 6 frames"
	run --separate-stderr bw --input-stream -o db <noend.stream
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: <stdin>: truncated stream: no end frame after 6 frames"
	assert_no_db db
}

@test "a stream with one flipped byte fails with a CRC mismatch" {
	a_stream
	"$PY" -c '
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[len(d) // 2] ^= 0x10
open(sys.argv[2], "wb").write(d)' out.stream flipped.stream
	run --separate-stderr inspect --verify - <flipped.stream
	assert_status 1
	assert_equal "$stderr" "mp-inspect: <stdin>: corrupt stream: CRC mismatch in frame 3"
	run --separate-stderr bw --input-stream -o db <flipped.stream
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: <stdin>: corrupt stream: CRC mismatch in frame 3"
	assert_no_db db
	run --separate-stderr inspect --list flipped.stream
	assert_status 1
	assert_equal "$stderr" "mp-inspect: flipped.stream: corrupt stream: CRC mismatch in frame 3"
}

@test "empty input and a non-stream are refused by --input-stream" {
	run --separate-stderr bw --input-stream -o db </dev/null
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: <stdin>: empty input: no dataset stream"
	assert_no_db db
	printf 'MPSTREAM\002\000\000\000\000\000\000\000' >v2.stream
	run --separate-stderr bw --input-stream -o db <v2.stream
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: <stdin>: stream version 2 is not supported (expected 1)"
	assert_no_db db
}

# ---- DBs ------------------------------------------------------------------

@test "a corrupt macrobatch in a DB fails --verify naming macrobatch 0" {
	a_stream
	bw -q --input-stream -o db <out.stream
	run inspect --verify db
	assert_status 0
	"$PY" -c '
import lmdb, sys
env = lmdb.open(sys.argv[1], subdir=True, lock=False)
with env.begin(write=True) as txn:
    v = bytearray(txn.get(b"mb/00000000"))
    v[len(v) // 2] ^= 0x01
    txn.put(b"mb/00000000", bytes(v))
env.close()' db
	run --separate-stderr inspect --verify db
	assert_status 1
	assert_equal "$stderr" "mp-inspect: db: macrobatch 0: macrobatch CRC mismatch (corrupt data)"
	assert_equal "$output" "db: FAILED: 1 problem; 32 records checked"
	run --separate-stderr inspect --verify --json db
	assert_status 1
	assert_equal "$(json_get - 'd["ok"], d["records_checked"], d["records_expected"], d["failures"]' <<<"$output")" \
		"(False, 32, 40, ['db: macrobatch 0: macrobatch CRC mismatch (corrupt data)'])"
	run --separate-stderr inspect --record 3 db
	assert_status 1
	assert_equal "$stderr" "mp-inspect: db: macrobatch 0: macrobatch CRC mismatch (corrupt data)"
}

@test "a corrupt last macrobatch is one problem, not a record count mismatch too" {
	mkimg many img 10 8 8 >list.txt
	bw -q --size 8 --macrobatch 4 -o db list.txt
	"$PY" -c '
import lmdb, sys
env = lmdb.open(sys.argv[1], subdir=True, lock=False)
with env.begin(write=True) as txn:
    v = bytearray(txn.get(b"mb/00000002"))
    v[40] ^= 0x01
    txn.put(b"mb/00000002", bytes(v))
env.close()' db
	run --separate-stderr inspect --verify db
	assert_status 1
	assert_equal "$stderr" "mp-inspect: db: macrobatch 2: macrobatch CRC mismatch (corrupt data)"
	assert_equal "$output" "db: FAILED: 1 problem; 8 records checked"
}

@test "a DB missing a macrobatch key fails --verify" {
	mkimg many img 10 8 8 >list.txt
	bw -q --size 8 --macrobatch 4 -o db list.txt
	"$PY" -c '
import lmdb, sys
env = lmdb.open(sys.argv[1], subdir=True, lock=False)
with env.begin(write=True) as txn:
    txn.delete(b"mb/00000001")
env.close()' db
	# Under timeout: a reader that does not move past the missing key
	# would report it forever.
	run --separate-stderr timeout 20 "$MP_BIN/mp-inspect" --verify db
	assert_status 1
	assert_equal "$stderr" "$(printf '%s\n' "mp-inspect: db: macrobatch 1 is missing" \
		"mp-inspect: db: 2 macrobatches read, meta says 3" \
		"mp-inspect: db: 2 macrobatch keys, meta says 3")"
	assert_equal "$output" "db: FAILED: 3 problems; 6 records checked"
}

# cut_db SRC DST BYTES: DST is the DB directory SRC with data.mdb cut to BYTES.
cut_db() {
	mkdir "$2" && head -c "$3" "$1/data.mdb" >"$2/data.mdb"
}

@test "a truncated or empty data.mdb is refused naming the file, not a crash" {
	a_stream
	bw -q --input-stream -o db <out.stream
	"$MP_BIN/../tests/oracle/resnet_init" 1 4,8 A 4 7 w.safetensors >/dev/null
	size=$(stat -c %s db/data.mdb)
	cut_db db half.db $((size / 2))
	cut_db db part.db $((size - 100))
	cut_db db tiny.db 100
	cut_db db empty.db 0
	declare -A want=(
		[half.db]="half.db/data.mdb: truncated ($((size / 2)) bytes; the database needs $size)"
		[part.db]="part.db/data.mdb: truncated ($((size - 100)) bytes; the database needs $size)"
		[tiny.db]="tiny.db/data.mdb: not an LMDB file, or truncated (100 bytes)"
		[empty.db]="empty.db/data.mdb: empty file (not an LMDB database)"
	)
	for d in half.db part.db tiny.db empty.db; do
		for args in --verify "" "--record 0"; do
			# shellcheck disable=SC2086
			run --separate-stderr inspect $args "$d"
			assert_status 1
			assert_equal "$stderr" "mp-inspect: ${want[$d]}"
		done
		run --separate-stderr "$MP_BIN/mp-eval" -m w.safetensors "$d"
		assert_status 1
		assert_equal "$stderr" "mp-eval: ${want[$d]}"
		# damaged data, as for the other tools
		run --separate-stderr "$MP_BIN/mp-train" -d "$d" -o out
		assert_status 1
		assert_equal "$stderr" "mp-train: ${want[$d]}"
	done
}

@test "a data.mdb that ends before its free pages is read like the whole file" {
	command -v mdb_stat >/dev/null || skip "mdb_stat (lmdb-utils) is not installed"
	mkimg many img 40 16 16 >list.txt
	bw -q --size 16 --macrobatch 4 -o db list.txt
	# LMDB does not write a page allocated and freed within one
	# transaction, so a good file may end before the last page number;
	# cutting the free pages off the end makes such a file.
	keep=$(mdb_stat -efff db | "$PY" -c '
import re, sys
t = sys.stdin.read()
last = int(re.search(r"Number of pages used: (\d+)", t).group(1)) - 1
psize = int(re.search(r"Page size: (\d+)", t).group(1))
free = set()
for m in re.finditer(r"^ +(\d+)(?:\[(\d+)\])?$", t, re.M):
    free.update(range(int(m.group(1)), int(m.group(1)) + int(m.group(2) or 1)))
n = last
while n in free:
    n -= 1
assert n < last, "no free page at the end of the file"
print((n + 1) * psize)')
	cut_db db short.db "$keep"
	run --separate-stderr inspect --verify short.db
	assert_status 0
	assert_equal "$output" "short.db: OK: 40 records verified (CRCs, layout, every image decoded)"
	assert_equal "$(inspect short.db | tail -n +2)" "$(inspect db | tail -n +2)"
}

@test "-q still lists the skipped inputs" {
	mkimg make solid good.png 8 8
	printf 'good.png 0\nmissing.png 1\n' >list.txt
	run --separate-stderr bw -q --skip-bad --size 8 -o db list.txt
	assert_status 0
	assert_equal "$(grep -v '^strace: ' <<<"$stderr")" "mp-batchwriter: skipped 1 bad inputs:
  missing.png (list.txt line 2): No such file or directory$NO_ROOT"
}
