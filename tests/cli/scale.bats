#!/usr/bin/env bats
# Costs that must grow with what is asked for, not with the largest thing
# the data could need: many classes, many records.

load helpers

@test "mp-eval of a network of 20000 classes needs no classes x classes table without --confusion" {
	mkimg many im 4 16 16 labels=3 >list.txt
	random_weights 20000 w.st
	# the table would be 20000^2 counts of 8 bytes, 3 GiB; 1 GiB of
	# address space is plenty for the rest
	run --separate-stderr limit_memory 1048576 \
		"$MP_BIN/mp-eval" -q --threads 1 -m w.st --per-class pc.tsv --list list.txt
	assert_status 0
	assert_equal "$(wc -l <pc.tsv)" 20001
	run --separate-stderr limit_memory 1048576 \
		"$MP_BIN/mp-eval" -q --threads 1 -m w.st --confusion c.tsv --list list.txt
	assert_status 1
	# less AddressSanitizer's own warning of the allocation it refused
	assert_equal "$(grep -v '^==[0-9]*==WARNING: AddressSanitizer failed to allocate' <<<"$stderr")" \
		"mp-eval: --confusion: out of memory for a table of 20000 x 20000 counts (3.0 GiB)"
	[[ ! -e c.tsv ]] || fail "c.tsv was written"
}

@test "mp-train opens and reads its training DB once, not once for the mean and again" {
	command -v strace >/dev/null || skip "strace is not installed"
	class_data
	# opening the loader reads every record of the DB: with 1.3 million
	# images, twice was many seconds (minutes from disk) before the first step
	no_leak_check strace -f -e trace=open,openat -o train.trace "$MP_BIN/mp-train" -q -d train.db \
		--depth 1 --widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16 \
		--batch 8 --max-steps 1 -o run
	# LMDB opens it once (O_RDONLY); before that the reader opens it to
	# check the two meta pages (O_CLOEXEC, 304 bytes read)
	assert_equal "$(grep -c 'train\.db/data\.mdb", O_RDONLY)' train.trace)" 1
	assert_equal "$(grep -c 'train\.db/data\.mdb", O_RDONLY|O_CLOEXEC)' train.trace)" 1
	# with --mean the same
	no_leak_check strace -f -e trace=open,openat -o mean.trace "$MP_BIN/mp-train" -q -d train.db \
		--depth 1 --widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16 \
		--batch 8 --max-steps 1 --mean 1,2,3 -o run2
	assert_equal "$(grep -c 'train\.db/data\.mdb", O_RDONLY)' mean.trace)" 1
	assert_equal "$(grep -c 'train\.db/data\.mdb", O_RDONLY|O_CLOEXEC)' mean.trace)" 1
}

@test "mp-train refuses a validation set it cannot use before it reads the training DB" {
	command -v strace >/dev/null || skip "strace is not installed"
	class_data
	bw -q --size 16 val.txt >val.stream
	"$PY" "$MKIMAGES" classes te 8 20 20 4 seed=3 | cut -d' ' -f1 >test.txt
	bw -q -c cats.txt --size 16 -o test.db test.txt
	# reading the 100,000 training images first took seconds before a
	# mistyped -v was named (minutes from a cold disk)
	for v in missing.db val.stream test.db; do
		run --separate-stderr no_leak_check strace -f -e trace=open,openat -o v.trace \
			"$MP_BIN/mp-train" -q -d train.db -v "$v" --depth 1 --widths 4,8 --stem-stride 1 \
			--crop 12 --scale-min 12 --scale-max 16 --batch 8 --max-steps 1 -o "run-$v"
		assert_status 2
		assert_contains "$stderr" "$v"
		assert_equal "$(grep -c 'train\.db/data\.mdb"' v.trace)" 0
	done
	assert_contains "$stderr" "test.db: the validation set has no labels"
}

@test "mp-train names a run already in -o, or a --log not its own, before it reads the training DB" {
	command -v strace >/dev/null || skip "strace is not installed"
	class_data
	local net=(--depth 1 --widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16
		--batch 8 --max-steps 1)
	"$MP_BIN/mp-train" -q -d train.db "${net[@]}" -o run
	echo notes >notes.txt
	# the same command again, --resume forgotten: it read the 100,000
	# training images first (seconds), then said the run was there
	run --separate-stderr no_leak_check strace -f -e trace=open,openat -o run.trace \
		"$MP_BIN/mp-train" -q -d train.db -v val.db "${net[@]}" -o run
	assert_status 2
	assert_contains "$stderr" "run already holds a run"
	assert_equal "$(grep -c '\.db/data\.mdb"' run.trace)" 0
	run --separate-stderr no_leak_check strace -f -e trace=open,openat -o log.trace \
		"$MP_BIN/mp-train" -q -d train.db "${net[@]}" -o run2 --log notes.txt
	assert_status 2
	assert_contains "$stderr" "notes.txt is not a training log"
	assert_equal "$(grep -c '\.db/data\.mdb"' log.trace)" 0
	[[ ! -e run2 ]] || fail "run2 was left behind"
}

# peak_kb CMD...: the largest resident size of CMD, in KB, its output dropped.
# (AddressSanitizer holds freed memory in a quarantine of up to 256 MB, where
# it would grow with the records freed: none, to see what the program holds.)
peak_kb() {
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0" "$PY" -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"
}

@test "mp-inspect --list --json writes a record at a time: memory does not grow with the records" {
	mkimg make solid a.png 8 8 color=10,20,30
	yes 'a.png 1' | head -n 1000 >small.txt
	yes 'a.png 1' | head -n 50000 >large.txt
	bw -q --classes 2 --size 8 small.txt >small.stream
	bw -q --classes 2 --size 8 large.txt >large.stream
	small=$(peak_kb "$MP_BIN/mp-inspect" --list --json small.stream)
	large=$(peak_kb "$MP_BIN/mp-inspect" --list --json large.stream)
	# a tree of every record took about 1.4 KB each: 70 MB more here
	assert_less "$large" $((small + 20000))
	# still one document: an array of every record
	inspect --list --json small.stream >small.json
	"$PY" -c 'import json, sys
a = json.load(open(sys.argv[1]))
assert len(a) == 1000 and a[999]["index"] == 999 and a[0]["name"] == "a.png", a[:2]' small.json
}
