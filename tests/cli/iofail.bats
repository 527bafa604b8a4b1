#!/usr/bin/env bats
# When the file system fails the tools: a full disk, a read-only or
# vanished directory, standard output closed, full or a pipe whose reader
# went away, inputs that are FIFOs. Every failure is a message that names
# the file and a non-zero exit; nothing the user had is cut short or
# replaced by a partial file, and no temporary file is left.
#
# A full disk is a small tmpfs: the tests that need one skip (and say so)
# where they are not run as root or the mount fails; each mount is undone
# in teardown.

load helpers

train() { "$MP_BIN/mp-train" "$@"; }
ev() { "$MP_BIN/mp-eval" "$@"; }

# 64 labelled 16x16 images of 4 classes (val.txt, val.db, its stream
# val.stream), 256 records of them (rep.db) for outputs larger than a
# stdio buffer, and the weights of one epoch of a tiny network (w.safetensors).
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	"$PY" "$MKIMAGES" classes im 64 16 16 4 >val.txt
	"$MP_BIN/mp-batchwriter" -q --size 16 --macrobatch 8 -o val.db val.txt
	"$MP_BIN/mp-batchwriter" -q --size 16 --macrobatch 8 val.txt >val.stream
	for _ in 1 2 3 4; do cat val.txt; done >rep.txt
	"$MP_BIN/mp-batchwriter" -q --size 16 --macrobatch 64 -o rep.db rep.txt
	"$MP_BIN/mp-train" -q -d val.db --depth 1 --widths 4,8 --stem-stride 1 --crop 12 \
		--scale-min 12 --scale-max 16 --batch 16 --epochs 1 -o run
	cp run/weights.safetensors w.safetensors
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work" || return
	D=$BATS_FILE_TMPDIR/data
	W=$D/w.safetensors
	NET=(--depth 1 --widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16 --batch 16)
	MOUNTS=()
}

teardown() {
	cd "$BATS_TEST_TMPDIR" || true
	local m
	for m in "${MOUNTS[@]}"; do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
	if [[ -n "${pid-}" ]] && kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid"
		wait "$pid" || true
	fi
	return 0
}

# small_fs DIR SIZE: DIR becomes a tmpfs of SIZE (such as 8k), undone in
# teardown; the test is skipped where that cannot be done.
small_fs() {
	((EUID == 0)) || skip "not root: no tmpfs to fill"
	mkdir -p "$1"
	mount -t tmpfs -o "size=$2" tmpfs "$1" 2>/dev/null || skip "mount failed: no tmpfs here"
	MOUNTS+=("$(cd "$1" && pwd)")
}

# fill DIR: a file that takes every block left on DIR's file system.
fill() {
	dd if=/dev/zero of="$1/fill" bs=4k 2>/dev/null || true
	[[ $(df --output=avail "$1" | tail -1) -eq 0 ]] || fail "$1 is not full"
}

# ---- standard output -------------------------------------------------------

@test "mp-train: stdout full or closed is an error once the run's files are written; -q does not write it" {
	run --separate-stderr bash -c '"$@" >/dev/full' _ "$MP_BIN/mp-train" -d "$D/val.db" "${NET[@]}" --epochs 2 -o full
	assert_status 1
	assert_equal "$stderr" "mp-train: <stdout>: write error: No space left on device"
	[[ -f full/weights.safetensors && -f full/checkpoint-0002.safetensors ]]
	run --separate-stderr bash -c '"$@" >&-' _ "$MP_BIN/mp-train" -d "$D/val.db" "${NET[@]}" --epochs 1 -o closed
	assert_status 1
	assert_equal "$stderr" "mp-train: <stdout>: write error: Bad file descriptor"
	run --separate-stderr bash -c '"$@" >&-' _ "$MP_BIN/mp-train" -q -d "$D/val.db" "${NET[@]}" --epochs 1 -o quiet
	assert_status 0
	assert_equal "$stderr" ""
}

@test "mp-train | head -1: SIGPIPE stops the run with a checkpoint and the resume command, exit 141" {
	run --separate-stderr closed_pipe "$MP_BIN/mp-train" -d "$D/val.db" "${NET[@]}" --epochs 3 -o piped
	assert_status 141
	assert_contains "$stderr" "mp-train: interrupted by SIGPIPE (the reader of its output went away) after step 1; checkpoint piped/checkpoint-0000-000001.safetensors"
	assert_contains "$stderr" "--resume piped/checkpoint-0000-000001.safetensors"
	assert_files piped checkpoint-0000-000001.safetensors last.safetensors train.log
	run train -q -d "$D/val.db" "${NET[@]}" --epochs 3 -o piped --resume piped/last.safetensors
	assert_status 0
	[[ -f piped/weights.safetensors ]]
}

@test "mp-eval -q and mp-inspect with stdout closed: no error when nothing is written to it" {
	run --separate-stderr bash -c '"$@" >&-' _ "$MP_BIN/mp-eval" -q -m "$W" --probs p.tsv "$D/val.db"
	assert_status 0
	assert_equal "$(wc -l <p.tsv)" 65
	run --separate-stderr bash -c '"$@" >&-' _ "$MP_BIN/mp-eval" -m "$W" "$D/val.db"
	assert_status 1
	assert_equal "$stderr" "mp-eval: <stdout>: write error: Bad file descriptor"
	run --separate-stderr bash -c '"$@" >&-' _ "$MP_BIN/mp-inspect" --extract 0 -o x.png "$D/val.db"
	assert_status 0
	[[ -s x.png ]]
}

@test "mp-inspect: an output larger than a buffer that fails on the way is an error, in every mode" {
	local mode
	for mode in "--list" "--list --json" "--verify --json" "--json" ""; do
		# shellcheck disable=SC2086 # the mode's words
		run --separate-stderr bash -c '"$@" >/dev/full' _ "$MP_BIN/mp-inspect" $mode "$D/rep.db"
		assert_status 1
		assert_contains "$stderr" "mp-inspect: <stdout>: write error"
	done
	run --separate-stderr bash -c '"$@" >/dev/full' _ "$MP_BIN/mp-inspect" --tensors --json "$W"
	assert_status 1
	assert_contains "$stderr" "mp-inspect: <stdout>: write error"
}

# ---- inputs ----------------------------------------------------------------

@test "mp-inspect reads a stream from a FIFO or /dev/stdin: nothing is read before the stream reader" {
	mkfifo fifo
	cat "$D/val.stream" >fifo &
	pid=$!
	run timeout 20 "$MP_BIN/mp-inspect" --verify fifo
	assert_status 0
	assert_equal "$output" "fifo: OK: 64 records verified (CRCs, layout, every image decoded)"
	cat "$D/val.stream" >fifo &
	pid=$!
	run timeout 20 "$MP_BIN/mp-inspect" --json fifo
	assert_status 0
	assert_equal "$(json_get - 'd["records"]' <<<"$output")" 64
	run bash -c 'cat "$1" | timeout 20 "$2" --list /dev/stdin | wc -l' _ "$D/val.stream" "$MP_BIN/mp-inspect"
	assert_status 0
	assert_equal "$output" 65
}

# ---- a full disk -----------------------------------------------------------

@test "mp-train: a log on a full disk ends in a whole row; the resumed run's log reads as one run" {
	small_fs fs 8k
	head -c 4096 /dev/zero >fs/fill # the log gets the one block left
	run --separate-stderr train -q -d "$D/val.db" "${NET[@]}" --epochs 40 --log-every 1 -o out --log fs/train.log
	assert_status 1
	assert_equal "$(sed -n 1p <<<"$stderr")" "mp-train: fs/train.log: No space left on device"
	# the command that goes on from the last checkpoint, as it says
	local ckpt
	ckpt=$(sed -n 's/^mp-train: the run can go on from its last checkpoint, \(.*\), with:$/\1/p' <<<"$stderr")
	[[ $ckpt == out/checkpoint-00[0-9][0-9].safetensors ]] || fail "$stderr"
	assert_equal "$(sed -n 3p <<<"$stderr")" "  $MP_BIN/mp-train -q -d $D/val.db ${NET[*]} --epochs 40 --log-every 1 -o out --log fs/train.log --resume $ckpt"
	assert_equal "$(tail -c 1 fs/train.log | od -An -c | tr -d ' ')" '\n'
	assert_equal "$(awk -F'\t' 'NF != 12' fs/train.log)" ""
	mount -o remount,size=1m fs
	run eval "$(sed -n 3p <<<"$stderr")"
	assert_status 0
	assert_equal "$(awk -F'\t' 'NF != 12' fs/train.log fs/train.log.superseded)" ""
	assert_equal "$(awk -F'\t' '$1 == "epoch"' fs/train.log | wc -l)" 40
}

@test "mp-eval: an output that fails on a full disk replaces none of an earlier run's files" {
	small_fs fs 64k
	small_fs full 8k
	fill full
	echo "earlier submission" >fs/sub.txt
	echo "earlier probs" >fs/p.tsv
	run --separate-stderr ev -m "$W" --submission fs/sub.txt --probs fs/p.tsv \
		--per-class full/pc.tsv "$D/val.db"
	assert_status 1
	assert_equal "$stderr" "mp-eval: full/pc.tsv: No space left on device"
	assert_equal "$(cat fs/sub.txt)" "earlier submission"
	assert_equal "$(cat fs/p.tsv)" "earlier probs"
	assert_files fs p.tsv sub.txt
	assert_files full fill
	run --separate-stderr ev -m "$W" --confusion fs/c.tsv --submission full/sub.txt "$D/val.db"
	assert_status 1
	assert_equal "$stderr" "mp-eval: full/sub.txt: No space left on device"
	assert_files fs p.tsv sub.txt
	assert_files full fill
}

@test "mp-eval: the first write that fails stops the run at once, naming its file" {
	small_fs fs 64k
	echo "earlier probs" >fs/p.tsv
	echo "earlier submission" >fs/sub.txt
	fill fs
	# --probs fails at its first full buffer, a few batches in; the
	# submission, written at the end, is never begun
	run --separate-stderr ev -q -m "$W" --probs fs/p.tsv --submission fs/sub.txt \
		--dump-views views --dump-count 256 "$D/rep.db"
	assert_status 1
	assert_equal "$stderr" "mp-eval: fs/p.tsv: No space left on device"
	# no image after the failing row is evaluated: the views of 256 are not all written
	local n
	n=$(find views -name '*.png' | wc -l)
	((n > 0 && n < 256)) || fail "$n views: the run went on after the write failed"
	assert_equal "$(cat fs/p.tsv)" "earlier probs"
	assert_equal "$(cat fs/sub.txt)" "earlier submission"
	assert_files fs fill p.tsv sub.txt
}

@test "mp-eval: after a write fails, nothing more is written to any output (strace)" {
	command -v strace >/dev/null || skip "no strace: the writes cannot be counted"
	small_fs fs 64k
	fill fs
	# each output in turn fails, at the first full buffer (--probs, the
	# submission of 256 rows) or at its close
	for out in "--probs fs/p.tsv" "--submission fs/s.txt" "--per-class fs/pc.tsv" \
		"--confusion fs/c.tsv"; do
		run --separate-stderr no_leak_check strace -f -qq -e trace=write -o trace \
			"$MP_BIN/mp-eval" -q -m "$W" --probs p.tsv $out "$D/rep.db"
		assert_status 1
		assert_equal "$stderr" "mp-eval: ${out#* }: No space left on device"
		assert_equal "$(grep -c ENOSPC trace)" 1
		assert_files fs fill
		assert_files . fs trace
	done
	# and a --probs that fails stops the tables on another disk from being written
	run --separate-stderr no_leak_check strace -f -qq -e trace=write -o trace \
		"$MP_BIN/mp-eval" -q -m "$W" --probs fs/p.tsv --submission s.txt --confusion c.tsv "$D/rep.db"
	assert_status 1
	assert_equal "$stderr" "mp-eval: fs/p.tsv: No space left on device"
	assert_equal "$(grep -c ENOSPC trace)" 1
	assert_files . fs trace
}

@test "mp-batchwriter: a full disk is named as such; an earlier DB stays whole and nothing is left" {
	small_fs fs 300k
	"$PY" "$MKIMAGES" many nz 100 32 32 labels=4 >nz.txt
	bw -q --size 16 -r "$D" -o fs/old.db "$D/val.txt"
	run --separate-stderr bw -q --size 32 --encoding raw --macrobatch 8 -o fs/new.db nz.txt
	assert_status 1
	assert_contains "$stderr" "mp-batchwriter: fs/new.db: writing mb/"
	assert_contains "$stderr" ": No space left on device"
	run --separate-stderr bw -q -f --size 32 --encoding raw --macrobatch 8 -o fs/old.db nz.txt
	assert_status 1
	assert_contains "$stderr" ": No space left on device"
	bw -q --size 32 --encoding raw --macrobatch 8 nz.txt >nz.stream
	run --separate-stderr bw -q -f --input-stream -o fs/old.db <nz.stream
	assert_status 1
	assert_contains "$stderr" ": No space left on device"
	assert_files fs old.db
	run inspect --verify fs/old.db
	assert_status 0
	assert_contains "$output" "OK: 64 records verified"
	run --separate-stderr bash -c '"$@" >fs/s.stream' _ "$MP_BIN/mp-batchwriter" -q --size 32 --encoding raw nz.txt
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: <stdout>: write error: No space left on device"
}

@test "mp-batchwriter -f: an earlier DB moved aside by a failed or killed replacement is named, and the next run puts it back" {
	command -v strace >/dev/null || skip "no strace: no rename can be made to fail"
	[[ $(uname -m) == x86_64 ]] || skip "the rename system calls counted are x86-64's"
	bw -q --size 16 -r "$D" -o old.db "$D/val.txt"
	# as on a file system without RENAME_EXCHANGE: rename 1 (the new DB
	# onto the old) is refused, the old one not being empty; 2 puts the old
	# one aside; 3 (the new one into place) and 4 (the old one back) fail
	run --separate-stderr no_leak_check strace -f -qq -o /dev/null \
		-e inject=renameat2:error=EINVAL -e inject=rename:error=EIO:when=3+ \
		"$MP_BIN/mp-batchwriter" -q -f --size 16 --macrobatch 8 -r "$D" -o old.db "$D/val.txt"
	assert_status 1
	local kept=(old.db.old-*)
	assert_equal "$stderr" "mp-batchwriter: old.db: rename: Input/output error; the DB it held is now ${kept[0]} (the next run that writes old.db puts it back)"
	run inspect --verify "${kept[0]}"
	assert_status 0
	# the next run puts it back, before it looks at the name
	put_back() {
		run --separate-stderr bw -q --size 16 -r "$D" -o old.db "$D/val.txt"
		assert_status 1
		assert_equal "$stderr" "mp-batchwriter: put $1 back as old.db: an interrupted run replacing it had moved it aside
mp-batchwriter: old.db: already exists (use --force to replace it)"
		run inspect --verify old.db
		assert_status 0
	}
	put_back "${kept[0]}"
	# so does it after a replacement killed between its two renames
	local status=0
	no_leak_check strace -f -qq -o /dev/null -e inject=renameat2:error=EINVAL \
		-e inject=rename:signal=KILL:when=3 \
		"$MP_BIN/mp-batchwriter" -q -f --size 16 --macrobatch 8 -r "$D" -o old.db "$D/val.txt" ||
		status=$?
	assert_equal "$status" 137
	[[ ! -e old.db ]]
	kept=(old.db.old-*)
	put_back "${kept[0]}"
}

# ---- read-only and missing directories -------------------------------------

@test "a read-only file system: each tool names the file it could not write; mp-train leaves no directory of its own" {
	small_fs fs 1m
	train -q -d "$D/val.db" "${NET[@]}" --epochs 1 -o fs/run
	echo "earlier submission" >fs/sub.txt
	mount -o remount,ro fs
	run --separate-stderr train -q -d "$D/val.db" "${NET[@]}" --epochs 1 -o out --log fs/new.log
	assert_status 1
	assert_equal "$stderr" "mp-train: fs/new.log: Read-only file system"
	assert_files . fs
	run --separate-stderr train -q -d "$D/val.db" "${NET[@]}" --epochs 2 -o fs/run --resume fs/run/last.safetensors
	assert_status 1
	assert_equal "$stderr" "mp-train: fs/run: cannot write in the output directory: Read-only file system"
	run --separate-stderr ev -q -m "$W" --submission fs/sub.txt "$D/val.db"
	assert_status 1
	assert_equal "$stderr" "mp-eval: fs/sub.txt: Read-only file system"
	run --separate-stderr bw -q --size 16 -r "$D" -o fs/new.db "$D/val.txt"
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: fs/new.db: cannot create: Read-only file system"
	mount -o remount,rw fs
	assert_files fs run sub.txt
	assert_equal "$(cat fs/sub.txt)" "earlier submission"
	assert_files fs/run checkpoint-0001.safetensors last.safetensors train.log weights.safetensors
}

@test "mp-batchwriter in a deleted working directory names the DB asked for, not its partial name" {
	mkdir gone
	cd gone
	rmdir ../gone
	run --separate-stderr bw -q --size 16 -r "$D" -o new.db "$D/val.txt"
	assert_status 1
	assert_equal "$stderr" "mp-batchwriter: new.db: cannot create: No such file or directory"
}

@test "mp-batchwriter: a DB past the file size limit (ulimit -f) is named as such, SIGXFSZ ignored or not; nothing is left" {
	local ignore
	for ignore in "" "trap '' XFSZ;"; do
		run --separate-stderr bash -c "$ignore"' ulimit -f 16 && exec "$@"' _ \
			"$MP_BIN/mp-batchwriter" -q --size 16 --macrobatch 64 -r "$D" -o new.db "$D/val.txt"
		assert_status 1
		# LMDB reports the write cut short as EIO, "Input/output error"
		assert_equal "$stderr" "mp-batchwriter: new.db: writing mb/00000000: File too large"
		assert_no_db new.db
	done
}

@test "past the file size limit (ulimit -f), SIGXFSZ not ignored: mp-train, mp-eval and mp-inspect name the file, exit 1 and leave no temporary" {
	# limited() CMD...: CMD with files limited to 4 KiB, the signal at its default
	limited() { bash -c 'trap - XFSZ; ulimit -f 4 && exec "$@"' _ "$@"; }
	run --separate-stderr limited "$MP_BIN/mp-train" -q -d "$D/val.db" "${NET[@]}" --epochs 1 -o out
	assert_status 1
	assert_equal "$stderr" "mp-train: out/checkpoint-0001.safetensors: write error: File too large"
	assert_files out train.log
	mkdir ev && cd ev
	for out in --probs --submission; do
		run --separate-stderr limited "$MP_BIN/mp-eval" -q -m "$W" "$D/rep.db" "$out" out.tsv
		assert_status 1
		assert_equal "$stderr" "mp-eval: out.tsv: File too large"
		assert_files .
	done
	run --separate-stderr bash -c 'trap - XFSZ; ulimit -f 4 && exec "$@" >tensors.json' _ \
		"$MP_BIN/mp-inspect" --list "$D/rep.db"
	assert_status 1
	assert_equal "$stderr" "mp-inspect: <stdout>: write error: File too large"
}

@test "mp-train: a log in a directory that does not exist leaves no empty output directory behind" {
	run --separate-stderr train -q -d "$D/val.db" "${NET[@]}" --epochs 1 -o out --log nodir/x.log
	assert_status 1
	assert_equal "$stderr" "mp-train: nodir/x.log: No such file or directory"
	assert_files .
	mkdir mine
	run --separate-stderr train -q -d "$D/val.db" "${NET[@]}" --epochs 1 -o mine --log nodir/x.log
	assert_status 1
	assert_files . mine
	# every level of the path that the start made, and only those
	run --separate-stderr train -q -d "$D/val.db" "${NET[@]}" --epochs 1 -o mine/a//b/c/ --log nodir/x.log
	assert_status 1
	assert_files . mine
	assert_files mine
	# a level that cannot be made takes back those made above it
	local long
	long=$(printf 'L%.0s' {1..300})
	run --separate-stderr train -q -d "$D/val.db" "${NET[@]}" --epochs 1 -o "mine/a/$long/c"
	assert_status 1
	assert_equal "$stderr" "mp-train: mine/a/$long: cannot create the directory: File name too long"
	assert_files mine
}

@test "an output directory that is a file: the message names the output asked for, not a temporary name" {
	touch afile
	run --separate-stderr ev -q -m "$W" --dump-views afile "$D/val.db"
	assert_status 1
	assert_equal "$stderr" "mp-eval: afile: not a directory"
	run --separate-stderr inspect --extract 0 -o afile/x.png "$D/val.db"
	assert_status 1
	assert_equal "$stderr" "mp-inspect: afile/x.png: Not a directory"
	run --separate-stderr ev -q -m "$W" --probs afile/p.tsv "$D/val.db"
	assert_status 1
	assert_equal "$stderr" "mp-eval: afile/p.tsv: Not a directory"
	run --separate-stderr train -q -d "$D/val.db" "${NET[@]}" --epochs 1 -o afile
	assert_status 1
	assert_equal "$stderr" "mp-train: afile: not a directory"
	assert_files . afile
}

@test "mp-train: checkpoints on a full disk name the checkpoint; the earlier one stays whole, no temporary is left" {
	small_fs fs 20k
	run --separate-stderr train -q -d "$D/val.db" "${NET[@]}" --epochs 2 -o fs/run
	assert_status 1
	assert_equal "$stderr" "mp-train: fs/run/checkpoint-0002.safetensors: write error: No space left on device
mp-train: the run can go on from its last checkpoint, fs/run/checkpoint-0001.safetensors, with:
  $MP_BIN/mp-train -q -d $D/val.db ${NET[*]} --epochs 2 -o fs/run --resume fs/run/checkpoint-0001.safetensors"
	assert_files fs/run checkpoint-0001.safetensors last.safetensors train.log
	run inspect --verify fs/run/checkpoint-0001.safetensors
	assert_status 0
	mount -o remount,size=1m fs
	run eval "$(sed -n 3p <<<"$stderr")"
	assert_status 0
	assert_equal "$(awk -F'\t' '$1 == "epoch" { print $2 }' fs/run/train.log | tr '\n' ' ')" "1 2 "
}
