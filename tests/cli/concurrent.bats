#!/usr/bin/env bats
# The programs at the same time on the same files, as they are used: a
# checkpoint read while training goes on, a log plotted while it grows, two
# runs given one log.

load helpers

export OMP_WAIT_POLICY=PASSIVE

train() { "$MP_BIN/mp-train" "$@"; }

setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	class_data
	"$MP_BIN/mp-train" -d train.db --depth 1 --widths 4,8 --stem-stride 1 --crop 12 \
		--scale-min 12 --scale-max 16 --batch 16 --epochs 2 --log-every 2 -q -o run
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work"
	D=$BATS_FILE_TMPDIR/data
	# a run that goes on until it is stopped: a tiny network on the
	# reference backend, a log row per step
	LONG=(-d "$D/train.db" --backend cpu-ref --threads 1 --depth 1 --widths 4,8 --stem-stride 1
		--crop 16 --scale-min 16 --scale-max 16 --batch 8 --epochs 100000 --log-every 1 -q)
}

# wait_for COMMAND...: until COMMAND succeeds (at most 30 s).
wait_for() {
	for _ in $(seq 600); do
		"$@" 2>/dev/null && return 0
		sleep 0.05
	done
	fail "never: $*"
}

# past_first_checkpoint DIR: DIR/last.safetensors names a checkpoint
# later than the first, so --keep has begun to remove them.
past_first_checkpoint() {
	local to
	to=$(readlink "$1/last.safetensors") && [[ $to != checkpoint-0001.safetensors ]]
}

# lines_at_least FILE N: FILE has N lines or more.
lines_at_least() { [[ -f $1 && $(wc -l <"$1") -ge $2 ]]; }

# bg_train ARGS...: mp-train in the background; its pid in $pid (and in
# pids, for teardown).
bg_train() {
	"$MP_BIN/mp-train" "$@" &
	pid=$!
	echo $pid >>"$BATS_TEST_TMPDIR/pids"
}

# stop PID: ends a background run (SIGTERM, a checkpoint) and waits for it.
stop() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" || true
}

# a test that failed midway leaves no run going
teardown() {
	local p
	[[ -f $BATS_TEST_TMPDIR/pids ]] || return 0
	while read -r p; do
		kill -TERM "$p" 2>/dev/null || true
	done <"$BATS_TEST_TMPDIR/pids"
}

# steps LOG: whether the step column of LOG's rows only grows.
steps_grow() {
	awk -F'\t' 'NR > 1 && $3 < last { print "line " NR ": step " $3 " after " last; bad = 1 }
		NR > 1 { last = $3 } END { exit bad }' "$1"
}

@test "a link moved on to a new file, the one it named removed, is read as the new file" {
	# as mp-train moves last.safetensors on and prunes (--keep 1): here
	# thousands of times a second, along a link long to follow, so that
	# the file is often gone while a reader is still on its way
	cp "$D/run/weights.safetensors" w.safetensors
	mkdir s
	"$PY" - <<-'EOF' &
		import os, time
		data = open("w.safetensors", "rb").read()
		way = "s/../" * 780
		old = None
		end = time.time() + 50
		i = 0
		while not os.path.exists("stop") and time.time() < end:
		    i += 1
		    name = "checkpoint-%d.safetensors" % i
		    with open(name, "wb") as f:
		        f.write(data)
		    os.symlink(way + name, "last.tmp")
		    os.replace("last.tmp", "last.safetensors")
		    if old:
		        os.unlink(old)
		    old = name
	EOF
	mover=$!
	wait_for test -L last.safetensors
	failed=0
	for _ in $(seq 60); do
		inspect --verify last.safetensors >/dev/null 2>>err.txt || failed=$((failed + 1))
	done
	for _ in $(seq 10); do
		"$MP_BIN/mp-eval" -q --threads 1 -m last.safetensors "$D/val.db" >/dev/null 2>>err.txt ||
			failed=$((failed + 1))
	done
	touch stop
	wait $mover
	[[ $failed -eq 0 ]] || fail "$failed of 70 reads failed: $(sort err.txt | uniq -c)"
}

@test "mp-eval and mp-inspect read last.safetensors and checkpoints whole while mp-train writes and prunes them" {
	bg_train "${LONG[@]}" -v "$D/val.db" --keep 1 -o out
	# an epoch takes a few tens of milliseconds, and --keep 1 removes
	# checkpoint-0002 at the next: the link, which stays, is waited for
	wait_for past_first_checkpoint out
	failed=0
	for _ in $(seq 20); do
		inspect --verify out/last.safetensors >/dev/null 2>>err.txt || failed=$((failed + 1))
		"$MP_BIN/mp-eval" -q --threads 1 -m out/last.safetensors "$D/val.db" >/dev/null 2>>err.txt ||
			failed=$((failed + 1))
	done
	stop $pid
	[[ $failed -eq 0 ]] || fail "$failed of 40 reads failed: $(sort err.txt | uniq -c)"
	# a checkpoint removed by --keep reads as a missing file, by its name
	run inspect out/checkpoint-0001.safetensors
	assert_status 1
	assert_equal "$output" "mp-inspect: out/checkpoint-0001.safetensors: No such file or directory"
}

@test "a log another mp-train is writing is refused, with --force and --resume too; a device is shared" {
	# --keep 0: checkpoint-0001 is still there for the resume below, however far a has gone
	bg_train "${LONG[@]}" -o a --log shared.log --keep 0
	first=$pid
	wait_for test -e a/checkpoint-0001.safetensors
	busy="mp-train: shared.log: another mp-train is writing this log; wait for it to end (or stop it), or give this run a log of its own (--log)"
	run train "${LONG[@]}" --epochs 1 -o b --log shared.log
	assert_status 1
	assert_equal "$output" "$busy"
	run train "${LONG[@]}" --epochs 1 -o b --log shared.log --force
	assert_status 1
	assert_equal "$output" "$busy"
	run train "${LONG[@]}" --epochs 1 -o b --log shared.log --resume a/checkpoint-0001.safetensors
	assert_status 1
	assert_equal "$output" "$busy"
	[[ ! -e b ]] || fail "b made: $(ls -A b)"
	# the log of a run's own directory, named from another
	run train "${LONG[@]}" --epochs 1 -o c
	assert_status 0
	bg_train "${LONG[@]}" -o d
	wait_for test -e d/checkpoint-0001.safetensors
	run train "${LONG[@]}" --epochs 1 -o e --log d/train.log --force
	assert_status 1
	assert_equal "$output" "${busy//shared.log/d/train.log}"
	# /dev/null is no file a run owns
	run train "${LONG[@]}" --epochs 1 -o f --log /dev/null
	assert_status 0
	stop $pid
	stop $first
	steps_grow shared.log
	steps_grow d/train.log
	# once the run has ended, its log is free
	run train "${LONG[@]}" --epochs 1 -o b --log shared.log --force
	assert_status 0
	assert_equal "$(awk -F'\t' '$1 == "epoch"' shared.log | wc -l)" 1
}

@test "plot-log leaves out a last row being written" {
	command -v gnuplot >/dev/null || skip "gnuplot is not installed"
	# the log with the first half of one more row
	cp "$D/run/train.log" live.log
	row=$(tail -n 1 live.log)
	printf '%s' "${row:0:20}" >>live.log
	whole=$(wc -l <live.log)
	run --separate-stderr "$MP_ROOT/scripts/plot-log" live.log
	assert_status 0
	assert_equal "$output" live.png
	assert_equal "$stderr" "plot-log: live.log: line $((whole + 1)) is not whole (a row being written?): left out"
	assert_equal "$(head -c 8 live.png | od -An -tx1 | tr -d ' \n')" 89504e470d0a1a0a
	# a whole log: no note
	run --separate-stderr "$MP_ROOT/scripts/plot-log" "$D/run/train.log" whole.png
	assert_status 0
	assert_equal "$stderr" ""
}

@test "plot-log replaces OUT whole: a reader of the old image keeps it; a link's file is replaced" {
	command -v gnuplot >/dev/null || skip "gnuplot is not installed"
	"$MP_ROOT/scripts/plot-log" "$D/run/train.log" a.png
	head -n 4 "$D/run/train.log" >short.log
	ln a.png held.png # as a viewer holding the old file open
	before=$(cksum <a.png)
	run "$MP_ROOT/scripts/plot-log" short.log a.png
	assert_status 0
	assert_equal "$(cksum <held.png)" "$before"
	[[ $(cksum <a.png) != "$before" ]] || fail "a.png not replaced"
	ln -s real.png link.png
	run "$MP_ROOT/scripts/plot-log" short.log link.png
	assert_status 0
	[[ -L link.png && -f real.png ]] || fail "$(ls -l)"
	assert_equal "$(cksum <real.png)" "$(cksum <a.png)"
	assert_files . a.png held.png link.png real.png short.log
}

@test "plot-log draws the log of a running mp-train, again and again" {
	command -v gnuplot >/dev/null || skip "gnuplot is not installed"
	bg_train "${LONG[@]}" -v "$D/val.db" -o out
	wait_for lines_at_least out/train.log 3
	failed=0
	for _ in $(seq 10); do
		"$MP_ROOT/scripts/plot-log" out/train.log >/dev/null 2>>err.txt || failed=$((failed + 1))
	done
	stop $pid
	[[ $failed -eq 0 ]] || fail "$failed of 10 plots failed: $(cat err.txt)"
}
