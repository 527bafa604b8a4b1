#!/usr/bin/env bats
# The tools in shell pipelines: streams through pipes and files, streams cut
# short or followed by more bytes, terminals, readers that exit early, and
# outputs to stdout beside the progress bar on stderr.

load helpers

ev() { "$MP_BIN/mp-eval" "$@"; }

# 40 labelled 16x16 images of 4 classes (val.txt, its stream s.stream),
# 5000 records of them (rep.txt, rep.db) for outputs larger than a pipe
# holds, and a tiny network of 4 classes trained at 16 px (w.safetensors).
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	"$PY" "$MKIMAGES" classes im 40 16 16 4 >val.txt
	"$MP_BIN/mp-batchwriter" -q --size 16 --macrobatch 8 val.txt >s.stream
	for _ in $(seq 125); do cat val.txt; done >rep.txt
	"$MP_BIN/mp-batchwriter" -q --size 16 --macrobatch 64 -o rep.db rep.txt
	random_weights 4 w.safetensors
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work"
	D=$BATS_FILE_TMPDIR/data
	W=$D/w.safetensors
	cp -r "$D/im" "$D/val.txt" .
}

# A program left running by a failed test is stopped here, by its pid.
teardown() {
	if [[ -n "${pid-}" ]] && kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid"
		wait "$pid" || true
	fi
	return 0
}

@test "-o - writes the stream on stdout, the same bytes as no -o, into mp-eval and mp-inspect" {
	bw -q --size 16 --macrobatch 8 -o - val.txt >dash.stream
	cmp dash.stream "$D/s.stream"
	assert_files . im val.txt dash.stream
	run --separate-stderr bash -c 'set -o pipefail
		"$1" -q --size 16 --macrobatch 8 -o - val.txt | "$2" -q --json -m "$3" -' \
		_ "$MP_BIN/mp-batchwriter" "$MP_BIN/mp-eval" "$W"
	assert_status 0
	assert_equal "$(json_get - 'd["images"], d["data"]' <<<"$output")" "(40, '<stdin>')"
	run --separate-stderr bash -c 'set -o pipefail
		"$1" -q --size 16 --macrobatch 8 -o - val.txt | "$2" --verify -' \
		_ "$MP_BIN/mp-batchwriter" "$MP_BIN/mp-inspect"
	assert_status 0
	assert_equal "$output" "<stdin>: OK: 40 records verified (CRCs, layout, every image decoded)"
	# a stream saved to a file reads back the same
	assert_equal "$(stats_json dash.stream)" "$(stats_json - <"$D/s.stream")"
	# --input-stream stores in a DB, which stdout is not
	run --separate-stderr bw --input-stream -o - <dash.stream
	assert_status 2
	assert_equal "$(first_line "$stderr")" \
		"mp-batchwriter: --input-stream stores the stream in a DB: -o - (stdout) is not one"
	assert_files . im val.txt dash.stream
}

@test "a stream cut anywhere: every reader says truncated, names stdin or the file, exits 1" {
	local size=$(stat -c %s "$D/s.stream")
	# frame starts: the meta frame at 16, then each frame after the last
	local frames
	frames=$("$PY" -c '
import struct, sys
b = open(sys.argv[1], "rb").read()
off, out = 16, []
while off < len(b):
    out.append(off)
    off += 12 + struct.unpack_from("<I", b, off + 4)[0]
print(" ".join(map(str, out)))' "$D/s.stream")
	local -a starts=($frames)
	local last=${starts[${#starts[@]} - 1]}
	# in the magic, after it, at the end of the header, in a frame header,
	# in the meta payload, at a frame boundary, in a macrobatch, before the
	# end frame, in its header, in its payload, one byte short
	local cut
	for cut in 1 7 8 12 16 19 100 "${starts[1]}" $((starts[1] + 5)) $((starts[1] + 500)) \
		"${starts[2]}" "$last" $((last + 4)) $((last + 20)) $((size - 1)); do
		head -c "$cut" "$D/s.stream" >cut.stream
		run --separate-stderr inspect - <cut.stream
		assert_status 1
		assert_contains "$stderr" "mp-inspect: <stdin>: truncated stream"
		run --separate-stderr inspect --verify cut.stream
		assert_status 1
		assert_contains "$stderr" "mp-inspect: cut.stream: truncated stream"
		assert_not_contains "$output" "OK"
		run --separate-stderr ev -m "$W" - <cut.stream
		assert_status 1
		assert_contains "$stderr" "mp-eval: <stdin>: truncated stream"
		assert_equal "$output" ""
		run --separate-stderr bw --input-stream -o db <cut.stream
		assert_status 1
		assert_contains "$stderr" "mp-batchwriter: <stdin>: truncated stream"
		assert_no_db db
	done
	# nothing at all, as when the writer upstream failed before its first byte
	run --separate-stderr ev -m "$W" - </dev/null
	assert_status 1
	assert_equal "$stderr" "mp-eval: <stdin>: empty input: no dataset stream"
	run --separate-stderr bash -c '"$1" -q missing.txt | "$2" -' _ \
		"$MP_BIN/mp-batchwriter" "$MP_BIN/mp-inspect"
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: missing.txt: No such file or directory
mp-inspect: <stdin>: empty input: no dataset stream"
}

@test "bytes after the end frame, or two streams concatenated, are refused by every reader" {
	cat "$D/s.stream" "$D/s.stream" >two.stream
	{ cat "$D/s.stream"; echo; } >newline.stream
	local f msg="corrupt stream: data after the end frame (two streams concatenated?)"
	for f in two.stream newline.stream; do
		run --separate-stderr inspect --verify "$f"
		assert_status 1
		assert_equal "$stderr" "mp-inspect: $f: $msg"
		assert_equal "$output" "$f: FAILED: 1 problem; 40 records checked"
		run --separate-stderr inspect - <"$f"
		assert_status 1
		assert_equal "$stderr" "mp-inspect: <stdin>: $msg"
		run --separate-stderr ev -q -m "$W" --probs p.tsv - <"$f"
		assert_status 1
		assert_equal "$stderr" "mp-eval: <stdin>: $msg"
		run --separate-stderr bw --input-stream -o db <"$f"
		assert_status 1
		assert_equal "$stderr" "mp-batchwriter: <stdin>: $msg"
	done
	assert_files . im val.txt two.stream newline.stream
}

@test "a stream is not read from a terminal: a usage error, before anything is read" {
	run on_tty "$MP_BIN/mp-inspect" -
	assert_status 2
	assert_contains "$output" "mp-inspect: refusing to read a binary stream from a terminal"
	run on_tty "$MP_BIN/mp-eval" -m "$W" -
	assert_status 2
	assert_contains "$output" "mp-eval: refusing to read a binary stream from a terminal"
	run on_tty "$MP_BIN/mp-batchwriter" --input-stream -o db
	assert_status 2
	assert_contains "$output" "mp-batchwriter: refusing to read a binary stream from a terminal"
	assert_no_db db
}

@test "a reader that exits early: the writers die of SIGPIPE quietly and leave no temporary file" {
	local rep=$D/rep.txt
	run bash -c '"$1" --size 16 --macrobatch 64 -r "$2" "$3" 2>err | head -c 1000 | wc -c
		echo "${PIPESTATUS[@]}"' _ "$MP_BIN/mp-batchwriter" "$D" "$rep"
	assert_equal "$output" "1000
141 0 0"
	# rep.txt names each image 125 times: only those warnings
	assert_equal "$(grep -v 'packed again$\|as often as it appears$' err)" ""
	run bash -c '"$1" --list "$2" 2>err | head -n 1; echo "${PIPESTATUS[@]}"' _ \
		"$MP_BIN/mp-inspect" "$D/rep.db"
	assert_equal "$output" "$(printf 'index\tname\tlabel\twidth\theight\tencoding\tbytes\tcrc32')
141 0"
	assert_equal "$(cat err)" ""
	rm err
	# the submission fills the pipe while the other outputs are still
	# under their temporary names
	run bash -c '"$1" -m "$2" --submission - --probs p.tsv --per-class pc.tsv "$3" 2>err |
		head -n 1; echo "${PIPESTATUS[@]}"' _ "$MP_BIN/mp-eval" "$W" "$D/rep.db"
	assert_equal "$(sed -n 2p <<<"$output")" "141 0"
	assert_equal "$(cat err)" ""
	assert_files . im val.txt err
}

@test "SIGTERM and SIGINT end mp-eval with no temporary output left; an ignored SIGINT stays ignored" {
	local sig
	for sig in TERM INT; do
		"$PY" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
			"$MP_BIN/mp-eval" -q -m "$W" --backend cpu-ref --scales 64,96,128 \
			--probs p.tsv --submission s.txt "$D/rep.db" &
		pid=$!
		for ((i = 0; i < 200; i++)); do
			[[ -e "p.tsv.partial-$pid" ]] && break
			sleep 0.05
		done
		[[ -e "p.tsv.partial-$pid" ]] || fail "no p.tsv.partial-$pid"
		kill "-$sig" "$pid"
		status=0
		wait "$pid" || status=$?
		assert_status $((128 + $(kill -l "$sig")))
		assert_files . im val.txt
	done
	# a plain background job of a script starts with SIGINT ignored
	"$MP_BIN/mp-eval" -q -m "$W" --backend cpu-ref --scales 64,96,128 --probs p.tsv "$D/rep.db" &
	pid=$!
	sleep 0.5
	kill -INT "$pid"
	sleep 0.5
	kill -0 "$pid" || fail "SIGINT stopped mp-eval that started with it ignored"
	kill -TERM "$pid"
	status=0
	wait "$pid" || status=$?
	assert_status 143
	assert_files . im val.txt
}

@test "mp-eval keeps its progress bar on stderr when an output goes to stdout" {
	run on_tty bash -c '"$1" -m "$2" --probs - "$3" >p.tsv' _ "$MP_BIN/mp-eval" "$W" "$D/rep.db"
	assert_status 0
	assert_contains "$output" "evaluate ["
	# the table is not printed, and stdout holds the probabilities alone
	assert_not_contains "$output" "combined"
	assert_equal "$(wc -l <p.tsv)" 5001
	assert_equal "$(grep -c -v "$(printf '\t')" p.tsv)" 0
	# with stderr not a terminal there is no bar
	run on_tty bash -c '"$1" -m "$2" --probs - "$3" >p.tsv 2>err' _ "$MP_BIN/mp-eval" "$W" "$D/rep.db"
	assert_status 0
	assert_equal "$(cat err)" ""
}

@test "an output that cannot be written is an error in every mode, --diff included" {
	run --separate-stderr "$MP_BIN/mp-inspect" --diff "$W" "$W"
	assert_status 0
	assert_equal "$(tail -n 1 <<<"$output")" "SAME: every tensor within the tolerance"
	run --separate-stderr bash -c '"$1" --diff "$2" "$2" >/dev/full' _ "$MP_BIN/mp-inspect" "$W"
	assert_status 1
	assert_equal "$stderr" "mp-inspect: <stdout>: write error: No space left on device"
}

@test "mp-eval names standard input and output as the other tools do: <stdin>, <stdout>" {
	run --separate-stderr bash -c '"$1" -m "$2" --probs - "$3" >/dev/full' _ "$MP_BIN/mp-eval" "$W" "$D/s.stream"
	assert_status 1
	assert_contains "$stderr" "mp-eval: <stdout>: No space left on device"
	printf 'nothere.png 1\n' >bad.txt
	run --separate-stderr ev -m "$W" --list - <bad.txt
	assert_status 1
	assert_contains "$stderr" "(<stdin> line 1)"
	run --separate-stderr ev -m "$W" - <"$D/s.stream"
	assert_status 0
	assert_contains "$(first_line "$output")" " on <stdin>: 40 images"
	assert_equal "$(ev -q -m "$W" --json - <"$D/s.stream" | json_get - 'd["data"]')" "<stdin>"
}
