#!/usr/bin/env bats
# Resource limits (ulimit): a process limit, an address-space limit. A
# program that cannot have what it needs says so and exits non-zero; one
# that needs little works; none hangs or dies of a signal.

load helpers

ev() { "$MP_BIN/mp-eval" "$@"; }

# 24 labelled 16x16 images of 4 classes as a DB and a stream, and the
# weights of one epoch of a tiny network.
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	"$PY" "$MKIMAGES" classes im 24 16 16 4 >val.txt
	"$MP_BIN/mp-batchwriter" -q --size 16 --macrobatch 8 -o val.db val.txt
	"$MP_BIN/mp-batchwriter" -q --size 16 --macrobatch 8 val.txt >val.stream
	"$MP_BIN/mp-train" -q -d val.db --depth 1 --widths 4,8 --stem-stride 1 --crop 12 \
		--scale-min 12 --scale-max 16 --batch 8 --epochs 1 -o run
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work" || return
	D=$BATS_FILE_TMPDIR/data
	SHARED=
	# an address-space limit (KiB) that fits the work, well under the
	# writer's 1 GiB map: OpenBLAS's buffer alone is 128 MiB and its
	# library 31 MiB; mp-train needed 300-400 MiB on an AMD EPYC, less on
	# an Intel Xeon
	export AS_LIMIT=450000
}

teardown() {
	[[ -z $SHARED ]] || rm -rf -- "$SHARED"
}

# as_nobody COMMAND...: COMMAND as user nobody (65534), whose process
# limit applies where root's does not; skips where that cannot be done.
as_nobody() {
	setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
}

need_nobody() {
	[[ $EUID == 0 ]] || skip "needs root, to run as nobody"
	command -v setpriv >/dev/null || skip "setpriv(1) is not installed"
	as_nobody "$MP_BIN/mp-inspect" --version >/dev/null 2>&1 ||
		skip "nobody cannot run $MP_BIN/mp-inspect"
}

@test "a process limit of one (ulimit -u 1): OpenBLAS starts no thread of its own as it loads" {
	need_nobody
	# OpenBLAS's pthreads build started a thread per core before main and,
	# when that failed, ended the program with SIGINT (status 130)
	local p
	for p in mp-inspect mp-eval mp-train; do
		# (no_leak_check: LeakSanitizer's check at the exit needs a thread)
		run --separate-stderr no_leak_check as_nobody bash -c 'ulimit -u 1 && exec "$@"' _ \
			"$MP_BIN/$p" --version
		assert_status 0
		assert_equal "$stderr" ""
	done
}

@test "mp-train: a loader thread that cannot start is named, with the reason; no output is left" {
	need_nobody
	# bats' own directories are root's alone: the DB goes where nobody
	# can read it and write beside it
	SHARED=$(mktemp -d "${TMPDIR:-/tmp}/mp-limits.XXXXXX")
	chmod 777 "$SHARED"
	cp -r "$D/val.db" "$SHARED/"
	chmod -R a+rX "$SHARED/val.db"
	# one thread for the network: the process and one loader thread fit
	# under 2, the second loader thread does not
	run --separate-stderr as_nobody bash -c 'ulimit -u 2 && exec "$@"' _ "$MP_BIN/mp-train" -q \
		--threads 1 --loader-threads 2 -d "$SHARED/val.db" -o "$SHARED/run" --depth 1 \
		--widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16 --batch 8 --epochs 1
	assert_status 1
	assert_equal "$stderr" "mp-train: cannot start loader thread 2 of 2: Resource temporarily unavailable"
	[[ ! -e $SHARED/run ]] || fail "left behind: $(ls -A "$SHARED/run")"
}

@test "an address-space limit (ulimit -v) that fits the work: no hang in OpenBLAS" {
	asan_build && skip "AddressSanitizer's shadow memory does not fit under ulimit -v"
	# OpenBLAS's thread asked again and again for a buffer the limit did
	# not allow, and the program waited for it forever; a program now
	# starts itself again with one OpenBLAS thread asked for
	if command -v strace >/dev/null; then
		strace -f -qq -v -s 256 -e trace=execve -o trace "$MP_BIN/mp-eval" -q \
			-m "$D/run/weights.safetensors" "$D/val.stream"
		grep -q 'execve("/proc/self/exe", .*"OPENBLAS_NUM_THREADS=1"' trace ||
			fail "no start again with OPENBLAS_NUM_THREADS=1: $(cat trace)"
	fi
	run --separate-stderr bash -c 'ulimit -v $AS_LIMIT && exec timeout -s KILL 30 "$1" -q -m "$2" - <"$3"' \
		_ "$MP_BIN/mp-eval" "$D/run/weights.safetensors" "$D/val.stream"
	assert_status 0
	run --separate-stderr bash -c 'ulimit -v $AS_LIMIT && exec timeout -s KILL 30 "$1" --verify "$2"' \
		_ "$MP_BIN/mp-inspect" "$D/val.stream"
	assert_status 0
}

@test "a DB is read under an address-space limit smaller than the map it was written with" {
	asan_build && skip "AddressSanitizer's shadow memory does not fit under ulimit -v"
	# the writer's map is a GiB or more; readers mapped all of it, and
	# under ulimit -v said "mdb_env_open: Cannot allocate memory" (they now
	# map the file alone where the larger map does not fit)
	local p
	for p in "mp-inspect --verify" "mp-inspect --json" "mp-eval -q -m $D/run/weights.safetensors"; do
		# shellcheck disable=SC2086
		run --separate-stderr bash -c 'ulimit -v $AS_LIMIT && exec timeout -s KILL 30 "$@"' \
			_ $MP_BIN/$p "$D/val.db"
		assert_status 0
		assert_equal "$stderr" ""
	done
	run --separate-stderr bash -c 'ulimit -v $AS_LIMIT && exec timeout -s KILL 30 "$@"' \
		_ "$MP_BIN/mp-train" -q -d "$D/val.db" -v "$D/val.db" -o run --depth 1 --widths 4,8 \
		--stem-stride 1 --crop 12 --scale-min 12 --scale-max 16 --batch 8 --epochs 1 --threads 1 \
		--loader-threads 1
	assert_status 0
}

@test "a DB is written under an address-space limit smaller than the default map" {
	asan_build && skip "AddressSanitizer's shadow memory does not fit under ulimit -v"
	# the default map is 1 GiB; where it cannot be mapped, mdb_env_open
	# said "Cannot allocate memory" for two images (a smaller one is
	# taken now, which grows as the DB does)
	run --separate-stderr bash -c 'ulimit -v $AS_LIMIT && exec timeout -s KILL 30 "$@"' \
		_ "$MP_BIN/mp-batchwriter" -q -j 1 -r "$D" --size 16 --macrobatch 8 -o small.db "$D/val.txt"
	assert_status 0
	assert_equal "$stderr" ""
	run inspect --verify small.db
	assert_status 0
	assert_equal "$output" "small.db: OK: 24 records verified (CRCs, layout, every image decoded)"
}
