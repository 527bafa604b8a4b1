#!/usr/bin/env bats
# The output name holds a complete DB or nothing: kills, signals, errors
# and --force never leave a half-written DB under it.

load helpers

# slow_list: list.txt naming one 384x384 image 600 times, which takes
# mp-batchwriter -j 1 a few seconds to pack (the tests stop it long before),
# and short.txt, its first 40 lines.
slow_list() {
	mkimg make noise big.png 384 384 seed=3
	for _ in $(seq 600); do echo big.png; done >list.txt
	head -n 40 list.txt >short.txt
}

# without_repeats FILE: FILE less the warnings about the lists' repeated path.
without_repeats() {
	grep -v 'packed again$\|as often as it appears$' "$1"
}

# start_slow_writer DB ERRFILE [COMMAND...]: starts mp-batchwriter -j 1 in
# the background (its pid in $pid) and returns once its partial DB holds a
# committed macrobatch (asked of LMDB, not waited for: a busy machine takes
# longer than any fixed pause). A background job of a script starts with SIGINT ignored, and
# the writer leaves an ignored signal ignored: by default SIGINT is first
# restored, as a job in the foreground has it; COMMAND (such as nohup)
# replaces that.
start_slow_writer() {
	local db=$1 err=$2
	shift 2
	(($#)) || set -- "$PY" -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])'
	# Not through bw(): $! must be the writer's own pid (exec keeps it),
	# which names the partial directory.
	"$@" "$MP_BIN/mp-batchwriter" -j 1 --size 16 --encoding png --macrobatch 8 -o "$db" \
		list.txt 2>"$err" &
	pid=$!
	local i
	for ((i = 0; i < 400; i++)); do
		[[ -s "$db.partial-$pid/data.mdb" ]] &&
			(($(mdb_stat "$db.partial-$pid" 2>/dev/null | awk '/Entries:/ { print $2 }') > 0)) &&
			return 0
		sleep 0.05
	done
	fail "no macrobatch in $db.partial-$pid after 20 s"
}

# A writer left running by a failed test is stopped here, by its pid.
teardown() {
	if [[ -n "${pid-}" ]] && kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid"
		wait "$pid" || true
	fi
	return 0
}

# stop_writer SIGNAL: sends SIGNAL to $pid and sets status to its exit status.
stop_writer() {
	kill "-$1" "$pid" || fail "the writer had already finished"
	status=0
	wait "$pid" || status=$?
}

@test "kill -9 mid-write leaves only the partial directory; a rerun removes it and succeeds" {
	slow_list
	start_slow_writer db "$BATS_TEST_TMPDIR/err"
	stop_writer KILL
	assert_status 137
	assert_files . big.png list.txt short.txt "db.partial-$pid"
	# It had written macrobatches: the partial DB holds keys.
	assert_less 0 "$(mdb_stat "db.partial-$pid" | awk '/Entries:/ { print $2 }')"
	run --separate-stderr inspect db
	assert_status 1
	assert_equal "$stderr" "mp-inspect: db: No such file or directory"

	run --separate-stderr bw -j 2 --size 16 --encoding png --macrobatch 8 -o db short.txt
	assert_status 0
	assert_equal "$(without_repeats <(echo "$stderr") | head -n 1)" \
		"mp-batchwriter: removed db.partial-$pid, left by an interrupted run"
	assert_files . big.png list.txt short.txt db
	run inspect --verify db
	assert_status 0
	assert_equal "$output" "db: OK: 40 records verified (CRCs, layout, every image decoded)"
}

@test "SIGTERM stops the writer with status 143 and removes the partial directory" {
	slow_list
	start_slow_writer db "$BATS_TEST_TMPDIR/err"
	stop_writer TERM
	assert_status 143
	assert_equal "$(without_repeats "$BATS_TEST_TMPDIR/err")" \
		"mp-batchwriter: interrupted by signal 15; nothing was written under the output name"
	assert_files . big.png list.txt short.txt
}

@test "SIGINT stops the writer with status 130 and removes the partial directory" {
	slow_list
	start_slow_writer db "$BATS_TEST_TMPDIR/err"
	stop_writer INT
	assert_status 130
	assert_equal "$(without_repeats "$BATS_TEST_TMPDIR/err")" \
		"mp-batchwriter: interrupted by signal 2; nothing was written under the output name"
	assert_files . big.png list.txt short.txt
}

@test "a signal ignored on entry stays ignored: a background job and nohup go on" {
	slow_list
	# as a plain background job of a script: SIGINT ignored
	start_slow_writer db "$BATS_TEST_TMPDIR/err" env
	kill -INT "$pid"
	sleep 0.5
	kill -0 "$pid" || fail "SIGINT stopped a writer that started with it ignored"
	stop_writer TERM
	assert_status 143
	assert_no_db db
	# under nohup: SIGHUP ignored
	start_slow_writer db "$BATS_TEST_TMPDIR/err" nohup
	kill -HUP "$pid"
	sleep 0.5
	kill -0 "$pid" || fail "SIGHUP stopped a writer run under nohup"
	stop_writer TERM
	assert_status 143
	assert_no_db db
	assert_files . big.png list.txt short.txt
}

# wait_blocked PID: until PID waits on a FIFO (its open or a read), as its
# wchan says; a kernel that hides it gets a pause instead.
wait_blocked() {
	local i
	for ((i = 0; i < 100; i++)); do
		[[ $(cat "/proc/$1/wchan" 2>/dev/null) =~ partner|pipe ]] && return 0
		sleep 0.05
	done
}

@test "a signal while the list or categories file, a FIFO, waits for its writer: status 143, no DB" {
	mkfifo list.fifo cats.fifo
	# in the open, which waits for a writer
	for args in "list.fifo" "-c cats.fifo list.fifo"; do
		# shellcheck disable=SC2086 # two words, on purpose
		"$MP_BIN/mp-batchwriter" -q -o db $args 2>"$BATS_TEST_TMPDIR/err" &
		pid=$!
		wait_blocked $pid
		stop_writer TERM
		assert_status 143
		assert_equal "$(cat "$BATS_TEST_TMPDIR/err")" \
			"mp-batchwriter: interrupted by signal 15; nothing was written under the output name"
		assert_no_db db
	done
	# in a read, the writer there but slow
	exec {fd}<>cats.fifo
	"$MP_BIN/mp-batchwriter" -q -o db -c cats.fifo list.fifo {fd}>&- 2>"$BATS_TEST_TMPDIR/err" &
	pid=$!
	wait_blocked $pid
	stop_writer HUP
	exec {fd}>&-
	assert_status 129
	assert_equal "$(cat "$BATS_TEST_TMPDIR/err")" \
		"mp-batchwriter: interrupted by signal 1; nothing was written under the output name"
	assert_no_db db
	assert_files . list.fifo cats.fifo
}

@test "SIGTERM while --input-stream waits for more input: status 143, no DB" {
	mkimg many img 20 8 8 >list.txt
	bw -q --size 8 --macrobatch 4 list.txt >out.stream
	mkfifo pipe
	# A writer held open (not on fd 3, which is bats' own): the reader
	# blocks for more instead of seeing the end of the input.
	exec {fd}<>pipe
	head -c $(($(stat -c %s out.stream) / 2)) out.stream >&"$fd"
	"$MP_BIN/mp-batchwriter" --input-stream -o db <pipe {fd}>&- 2>"$BATS_TEST_TMPDIR/err" &
	pid=$!
	for ((i = 0; i < 100; i++)); do
		[[ -d "db.partial-$pid" ]] && break
		sleep 0.05
	done
	[[ -d "db.partial-$pid" ]] || fail "the copy did not start"
	sleep 0.2
	stop_writer TERM
	exec {fd}>&-
	assert_status 143
	assert_equal "$(tail -n 1 "$BATS_TEST_TMPDIR/err")" \
		"mp-batchwriter: interrupted by signal 15; nothing was written under the output name"
	assert_no_db db

	# Before any byte arrived.
	exec {fd}<>pipe
	"$MP_BIN/mp-batchwriter" --input-stream -o db <pipe {fd}>&- 2>"$BATS_TEST_TMPDIR/err" &
	pid=$!
	sleep 0.3
	stop_writer TERM
	exec {fd}>&-
	assert_status 143
	assert_no_db db
	assert_files . img list.txt out.stream pipe
}

@test "an error after several macrobatches leaves nothing under the name" {
	mkimg many img 30 8 8 >list.txt
	echo missing.png >>list.txt
	run --separate-stderr bw -j 2 --size 8 --macrobatch 4 -o db list.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: missing.png (list.txt line 31): No such file or directory$NO_ROOT"
	assert_files . img list.txt
}

# ---- --force ----------------------------------------------------------------

two_lists() {
	mkimg batch <<-'EOF'
		make solid a.png 8 8 color=1,2,3
		make solid b.png 8 8 color=4,5,6
	EOF
	printf 'a.png 0\n' >one.txt
	printf 'a.png 0\nb.png 1\n' >two.txt
}

@test "an existing DB is refused without --force and left intact" {
	two_lists
	bw -q --size 8 -o db one.txt
	before=$(inspect --list db)
	run --separate-stderr bw -q --size 8 -o db two.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: db: already exists (use --force to replace it)"
	assert_equal "$(inspect --list db)" "$before"
	run inspect --verify db
	assert_status 0
	assert_files . a.png b.png one.txt two.txt db
}

@test "--force replaces an existing DB and leaves nothing else behind" {
	two_lists
	bw -q --size 8 -o db one.txt
	run --separate-stderr bw -q --force --size 8 -o db two.txt
	assert_status 0
	assert_equal "$stderr" ""
	assert_equal "$(json_get <(inspect --json db) 'd["records"], d["meta"]["source_list"]')" "(2, 'two.txt')"
	bw -q --size 8 one.txt >one.stream
	bw -q -f --input-stream -o db <one.stream
	assert_equal "$(json_get <(inspect --json db) 'd["records"], d["meta"]["source_list"]')" "(1, 'one.txt')"
	assert_files . a.png b.png one.txt two.txt one.stream db
}

@test "--force never replaces what is not a dataset DB" {
	two_lists
	mkdir notdb
	echo precious >notdb/file
	echo precious >afile
	bw -q --size 8 -o realdb one.txt
	ln -s realdb link
	ln -s nowhere dangling
	for name in notdb afile link dangling; do
		run --separate-stderr bw -q --force --size 8 -o "$name" two.txt
		assert_status 1
		if [[ -L "$name" ]]; then
			# not "is not a dataset DB": link names one
			assert_equal "$stderr" "mp-batchwriter: $name: is a symbolic link; not replacing it"
		else
			assert_equal "$stderr" "mp-batchwriter: $name: exists and is not a dataset DB; not replacing it"
		fi
		assert_equal "$(compgen -G "$name.partial-*")" ""
	done
	run --separate-stderr bw -q --size 8 -o dangling two.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: dangling: already exists (use --force to replace it)"
	assert_equal "$(cat notdb/file) $(cat afile) $(readlink link) $(readlink dangling)" "precious precious realdb nowhere"
	assert_equal "$(json_get <(inspect --json realdb) 'd["records"]')" "1"
	assert_files . a.png b.png one.txt two.txt notdb afile realdb link dangling
}

# ---- a name taken while a run works -----------------------------------------

# held_copy DB [OPTION...]: starts mp-batchwriter --input-stream -o DB in the
# background (its pid in $pid), fed two.txt's stream through a FIFO (fd $feed; bats keeps fd 3)
# short of its last byte, and returns once its partial DB is there; the run
# is then waiting to finish. finish_copy sends that byte and sets status.
held_copy() {
	local db=$1
	shift
	bw -q --size 8 two.txt >two.stream
	mkfifo fifo
	"$MP_BIN/mp-batchwriter" -q --input-stream "$@" -o "$db" <fifo 2>"$BATS_TEST_TMPDIR/err" &
	pid=$!
	exec {feed}>fifo
	head -c "$(($(stat -c %s two.stream) - 1))" two.stream >&"$feed"
	local i
	for ((i = 0; i < 200; i++)); do
		[[ -s "$db.partial-$pid/data.mdb" ]] && return 0
		sleep 0.05
	done
	fail "no $db.partial-$pid/data.mdb after 10 s"
}

finish_copy() {
	tail -c 1 two.stream >&"$feed"
	exec {feed}>&-
	status=0
	wait "$pid" || status=$?
}

@test "two runs writing one name: the one that ends second fails and leaves the first one's DB" {
	two_lists
	held_copy db
	bw -q --size 8 -o db one.txt
	finish_copy
	assert_status 1
	assert_equal "$(cat "$BATS_TEST_TMPDIR/err")" \
		"mp-batchwriter: db: appeared while this run worked (another run writing the same name?); not replacing it without --force"
	assert_equal "$(json_get <(inspect --json db) 'd["records"], d["meta"]["source_list"]')" "(1, 'one.txt')"
	rm fifo
	assert_files . a.png b.png one.txt two.txt two.stream db
}

@test "--force: what appears under the name while the run works is replaced only if it is a DB" {
	two_lists
	held_copy db --force
	mkdir db
	echo precious >db/file
	finish_copy
	assert_status 1
	assert_equal "$(cat "$BATS_TEST_TMPDIR/err")" "mp-batchwriter: db: exists and is not a dataset DB; not replacing it"
	assert_equal "$(cat db/file)" precious
	rm -r fifo db
	held_copy db --force
	bw -q --size 8 -o db one.txt
	finish_copy
	assert_status 0
	assert_equal "$(json_get <(inspect --json db) 'd["records"], d["meta"]["source_list"]')" "(2, 'two.txt')"
	rm fifo
	assert_files . a.png b.png one.txt two.txt two.stream db
}

# ---- leftovers of other runs ---------------------------------------------------

@test "partial directories of dead writers are removed, those of live ones kept" {
	two_lists
	sh -c 'exit 0' &
	dead=$!
	wait "$dead"
	mkdir "db.partial-$dead" "db.partial-$$" "other.partial-$dead"
	: >"db.partial-$dead/data.mdb"
	: >"db.partial-$$/data.mdb"
	run --separate-stderr bw --size 8 -o db one.txt
	assert_status 0
	assert_equal "$(first_line "$stderr")" "mp-batchwriter: removed db.partial-$dead, left by an interrupted run"
	# $$ is this test's shell: alive, so its directory may still be in use.
	assert_files . a.png b.png one.txt two.txt db "db.partial-$$" "other.partial-$dead"
}

@test "a dead writer's partial name that is a link, or holds more than a DB, is left whole" {
	two_lists
	# two processes that have ended: their PIDs name no live writer (not
	# $dead + 1, which a process of another test may have)
	sh -c 'exit 0' &
	dead=$!
	wait "$dead"
	sh -c 'exit 0' &
	dead2=$!
	wait "$dead2"
	mkdir precious precious/sub "db.partial-$dead2" "db.partial-$dead2/sub"
	echo thesis >precious/file
	ln -s precious "db.partial-$dead"
	echo mine >"db.partial-$dead2/notes"
	run --separate-stderr bw -q --size 8 -o db one.txt
	assert_status 0
	assert_contains "$stderr" "mp-batchwriter: db.partial-$dead: left by an interrupted run, but not removed: it is a symbolic link"
	assert_contains "$stderr" "mp-batchwriter: db.partial-$dead2: left by an interrupted run, but not removed: it holds more than plain files"
	assert_equal "$(cat precious/file) $(cat "db.partial-$dead2/notes")" "thesis mine"
	assert_files precious file sub
	assert_files "db.partial-$dead2" notes sub
}

@test "--force refuses a DB directory that holds more than the DB, and names what" {
	two_lists
	bw -q --size 8 -o db one.txt
	mkdir db/sub
	run --separate-stderr bw -q -f --size 8 -o db two.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: db: holds sub besides the DB's data.mdb and lock.mdb; not replacing it"
	rmdir db/sub
	echo mine >db/notes
	run --separate-stderr bw -q -f --size 8 -o db two.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: db: holds notes besides the DB's data.mdb and lock.mdb; not replacing it"
	assert_equal "$(cat db/notes) $(json_get <(inspect --json db) 'd["records"]')" "mine 1"
	assert_files . a.png b.png one.txt two.txt db
}

@test "-o DB/ or DB/. writes and replaces DB itself" {
	two_lists
	run --separate-stderr bw -q --size 8 -o db/ one.txt
	assert_status 0
	assert_equal "$stderr" ""
	run --separate-stderr bw -q --size 8 -o db/ two.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: db: already exists (use --force to replace it)"
	run --separate-stderr bw -q -f --size 8 -o db// two.txt
	assert_status 0
	assert_equal "$(json_get <(inspect --json db) 'd["records"], d["meta"]["source_list"]')" "(2, 'two.txt')"
	run --separate-stderr bw -q -f --size 8 -o ./db/. one.txt
	assert_status 0
	assert_equal "$stderr" ""
	assert_equal "$(json_get <(inspect --json db) 'd["records"]')" "1"
	assert_files db data.mdb lock.mdb
	assert_files . a.png b.png one.txt two.txt db
}

# traced TRACE COMMAND...: COMMAND under strace, its fsyncs written to TRACE.
traced() {
	local trace=$1
	shift
	no_leak_check strace -f -y -e trace=fsync -o "$trace" "$@"
}

# two_colours: list.txt of 16 entries, 8 each of two 20x20 images of one
# colour, a.png (class 0) and b.png (class 1).
two_colours() {
	mkimg batch <<-'EOF'
		make solid a.png 20 20 color=200,10,10
		make solid b.png 20 20 color=10,200,10
	EOF
	for _ in $(seq 8); do printf 'a.png 0\nb.png 1\n'; done >list.txt
}

# fsyncs_dir TRACE DIR: whether strace's TRACE shows an fsync of DIR itself.
fsyncs_dir() {
	grep -q "fsync([0-9]*<$(realpath "$2")>)" "$1"
}

@test "a finished DB, weights file and evaluation output are renamed in and their directory synced" {
	command -v strace >/dev/null || skip "strace is not installed"
	two_colours
	mkdir out
	traced db.trace "$MP_BIN/mp-batchwriter" -q --size 16 -o out/db list.txt
	fsyncs_dir db.trace out
	traced train.trace "$MP_BIN/mp-train" -q -d out/db --depth 1 \
		--widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16 --batch 8 \
		--epochs 1 -o out/run
	fsyncs_dir train.trace out/run
	traced eval.trace "$MP_BIN/mp-eval" -q \
		-m out/run/weights.safetensors --probs out/probs.tsv out/db
	fsyncs_dir eval.trace out
	# and the file itself, before it is renamed in
	grep -q "fsync([0-9]*<$(realpath out)/probs.tsv.partial-[0-9]*>)" eval.trace
	# without the directory's fsync the test sees none
	! fsyncs_dir db.trace "$BATS_TEST_TMPDIR"
}

@test "mp-eval killed outright as it renames its outputs: the next run removes the files it left" {
	command -v strace >/dev/null || skip "strace is not installed"
	two_colours
	bw -q --size 16 -o db list.txt
	"$MP_BIN/mp-train" -q -d db --depth 1 --widths 4,8 --stem-stride 1 --crop 12 \
		--scale-min 12 --scale-max 16 --batch 8 --epochs 1 -o run
	local status=0
	no_leak_check strace -f -qq -o /dev/null -e trace=rename -e inject=rename:signal=KILL:when=1 \
		"$MP_BIN/mp-eval" -q -m run/weights.safetensors --probs probs.tsv --submission sub.txt db ||
		status=$?
	assert_equal "$status" 137
	local left
	left=$(compgen -G '*.partial-*' | sort | tr '\n' ' ')
	[[ $left == "probs.tsv.partial-"*" sub.txt.partial-"*" " ]] || fail "left: $left"
	# a live process's file stays
	touch "sub.txt.partial-$$"
	run --separate-stderr "$MP_BIN/mp-eval" -q -m run/weights.safetensors --probs probs.tsv \
		--submission sub.txt db
	assert_status 0
	for f in $left; do
		assert_contains "$stderr" "mp-eval: removed $f, left by an interrupted run"
	done
	assert_files . a.png b.png db list.txt probs.tsv run sub.txt "sub.txt.partial-$$"
}

@test "the partial DB of a writer killed but not yet reaped (a zombie, as where no init reaps orphans) is removed" {
	mkimg make solid a.png 20 20 color=200,10,10
	echo a.png >list.txt
	# a child that has ended, left unreaped by its parent, which then
	# becomes mp-batchwriter; the partial DB bears the child's pid
	run --separate-stderr "$PY" -c '
import os, sys
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
part = "db.partial-%d" % pid
os.mkdir(part)
open(part + "/data.mdb", "w").close()
print(part, flush=True)
os.execv(sys.argv[1], sys.argv[1:])
' "$MP_BIN/mp-batchwriter" -q --size 16 -o db list.txt
	assert_status 0
	assert_equal "$stderr" "mp-batchwriter: removed $output, left by an interrupted run"
	assert_files . a.png db list.txt
}
