#!/usr/bin/env bats
# The Makefile as users of a C project expect it: the user's CFLAGS, rebuilds
# that follow headers and flags, a make with nothing to do that says so, a
# clear stop where CUDA=1 cannot be honoured, install, DESTDIR staging and
# uninstall, sanitizers. Each test builds in its own copy of the sources.

# each test builds the whole tree, one job at a time: 20 s on an idle
# 2-core machine, over 60 s beside other tests on a loaded one
BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-300}
load helpers

# tree: a copy of the sources in src/, without the build.
tree() {
	mkdir src
	(cd "$MP_ROOT" && tar cf - Makefile common kernels tools scripts tests man) |
		(cd src && tar xf -)
}

# mk ARGS...: make in src/, not as a part of the make that runs the tests
# (whose command-line variables would otherwise come along in MAKEFLAGS).
mk() {
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C src --no-print-directory "$@"
}

# newer FILE: touches FILE after a pause, so that its time is later than
# that of objects just built even on a clock that counts in coarse ticks.
newer() {
	sleep 0.05
	touch "$1"
}

# built: the files the last `run mk -n` would make (its -o arguments).
built() {
	grep -o -- '-o [^ ]*' <<<"$output" | cut -d' ' -f2 | LC_ALL=C sort | tr '\n' ' '
}

@test "make CFLAGS= keeps the flags the build needs; a change of flags rebuilds, no change is up to date" {
	tree
	o=build/obj/common/mp_backends.o # includes kernels/backend.h
	run mk CUDA=0 CFLAGS="-O0 -g" "$o"
	assert_status 0
	assert_contains "$output" " -O0 -g "
	run mk CUDA=0 CFLAGS="-O0 -g" "$o"
	assert_status 0
	assert_contains "$output" "'$o' is up to date."
	# make -n tells the truth and writes nothing
	run mk -n CUDA=0 CFLAGS="-O1" "$o"
	assert_equal "$(built)" "$o "
	run mk CUDA=0 CFLAGS="-O0 -g" "$o"
	assert_contains "$output" "'$o' is up to date."
	# CFLAGS from the environment, as packagers pass it
	export CFLAGS="-O1 -fstack-protector-strong"
	run mk CUDA=0 "$o"
	unset CFLAGS
	assert_status 0
	assert_contains "$output" " -O1 -fstack-protector-strong "
	assert_contains "$output" "-o $o"
	run mk CUDA=0 CPPFLAGS=-DMP_SOMETHING "$o"
	assert_contains "$output" "-DMP_SOMETHING"
}

@test "touching a header rebuilds exactly the objects that include it" {
	tree
	objs=(build/obj/common/mp_list.o build/obj/common/mp_util.o build/obj/kernels/cpu/bn.o
		build/obj/common/mp_backends.o)
	mk CUDA=0 "${objs[@]}" >/dev/null
	run mk -n CUDA=0 "${objs[@]}"
	assert_equal "$(built)" ""
	newer src/common/mp_list.h
	run mk -n CUDA=0 "${objs[@]}"
	assert_equal "$(built)" "build/obj/common/mp_list.o "
	mk CUDA=0 "${objs[@]}" >/dev/null
	newer src/kernels/cpu/cpu.h
	run mk -n CUDA=0 "${objs[@]}"
	assert_equal "$(built)" "build/obj/kernels/cpu/bn.o "
	newer src/kernels/backend.h
	run mk -n CUDA=0 "${objs[@]}"
	assert_equal "$(built)" "build/obj/common/mp_backends.o build/obj/kernels/cpu/bn.o "
	mk CUDA=0 "${objs[@]}" >/dev/null
	newer src/common/mp_util.h
	run mk -n CUDA=0 "${objs[@]}"
	assert_equal "$(built)" \
		"build/obj/common/mp_backends.o build/obj/common/mp_list.o build/obj/common/mp_util.o "
}

@test "CUDA objects follow their headers" {
	nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
	[[ -x "$nvcc" && -e /usr/local/cuda/include/cudnn.h ]] ||
		skip "no nvcc or no cuDNN under /usr/local/cuda"
	tree
	objs=(build/obj/kernels/cuda/convert.o build/obj/kernels/cuda/device.o)
	mk CUDA=1 NVCC="$nvcc" "${objs[@]}" >/dev/null
	# both include cuda.h; only device.cu includes module.h
	newer src/kernels/cuda/cuda.h
	run mk -n CUDA=1 NVCC="$nvcc" "${objs[@]}"
	assert_equal "$(built)" "build/obj/kernels/cuda/convert.o build/obj/kernels/cuda/device.o "
	mk CUDA=1 NVCC="$nvcc" "${objs[@]}" >/dev/null
	newer src/kernels/cuda/module.h
	run mk -n CUDA=1 NVCC="$nvcc" "${objs[@]}"
	assert_equal "$(built)" "build/obj/kernels/cuda/device.o "
}

@test "CUDA=1 without nvcc or cuDNN stops with one message, after saying what was found" {
	tree
	run mk CUDA=1 NVCC= CUDA_HOME=/nonexistent
	assert_status 2
	assert_contains "$output" "found: TurboJPEG "
	assert_contains "$output" "found: nvcc no, cuDNN no; CUDA=1 -> CUDA backend cannot be built"
	assert_contains "$output" "CUDA=1 but nvcc was not found"
	assert_less "$(wc -l <<<"$output")" 4
	[[ ! -e src/build ]] || fail "src/build was made"
	run mk CUDA=1 NVCC=/bin/true CUDNN_INC=/nonexistent
	assert_status 2
	assert_contains "$output" "CUDA=1 but cudnn.h was not found under /nonexistent"
	assert_less "$(wc -l <<<"$output")" 4
	run mk -n CUDA=auto NVCC= CUDA_HOME=/nonexistent
	assert_status 0
	assert_contains "$output" "found: nvcc no, cuDNN no; CUDA=auto -> CUDA backend not built"
	run mk CUDA=yes
	assert_status 2
	assert_contains "$output" 'CUDA must be auto, 0 or 1, not "yes"'
}

@test "a full build: nothing to do says so; install, DESTDIR, uninstall and clean do exactly their part" {
	tree
	(cd src && find . | LC_ALL=C sort) >before
	mk CUDA=0 >/dev/null
	run mk CUDA=0
	assert_status 0
	assert_contains "$output" "Nothing to be done for 'all'."

	want=$(printf '%s\n' bin/mp-batchwriter bin/mp-eval bin/mp-inspect bin/mp-train \
		share/man/man1/mp-batchwriter.1 share/man/man1/mp-eval.1 share/man/man1/mp-inspect.1 \
		share/man/man1/mp-train.1 share/man/man5/mp-dataset.5 share/man/man5/mp-weights.5)
	run mk CUDA=0 install PREFIX="$PWD/p"
	assert_status 0
	assert_equal "$(cd p && find . -type f | sed 's,^\./,,' | LC_ALL=C sort)" "$want"
	run p/bin/mp-train -V
	assert_status 0
	assert_contains "$output" "backends: cpu"

	# staged for a package: the files under DESTDIR/PREFIX, none naming DESTDIR
	run mk CUDA=0 install PREFIX=/usr DESTDIR="$PWD/stage"
	assert_status 0
	assert_equal "$(cd stage/usr && find . -type f | sed 's,^\./,,' | LC_ALL=C sort)" "$want"
	run grep -rl "$PWD/stage" stage
	assert_status 1

	run mk CUDA=0 uninstall PREFIX="$PWD/p"
	assert_status 0
	assert_not_contains "$output" "ignored"
	assert_equal "$(find p -type f)" ""
	# a PREFIX with a space in it: there and only there
	run mk CUDA=0 install PREFIX="$PWD/p q"
	assert_status 0
	assert_equal "$(cd "p q" && find . -type f | sed 's,^\./,,' | LC_ALL=C sort)" "$want"
	run mk CUDA=0 uninstall PREFIX="$PWD/p q"
	assert_status 0
	assert_equal "$(find "p q" -type f)" ""
	[[ ! -e "$PWD/p/q" && ! -e q && ! -e src/q ]]
	run mk CUDA=0 uninstall PREFIX=/usr DESTDIR="$PWD/stage"
	assert_status 0
	assert_equal "$(find stage -type f)" ""

	run mk clean
	assert_status 0
	(cd src && find . | LC_ALL=C sort) >after
	assert_equal "$(diff before after)" ""

	# a reproduction's data and run are not build products: kept
	mkdir -p src/build/obj src/build/reproduce/run
	echo weights >src/build/reproduce/run/weights.safetensors
	run mk clean
	assert_status 0
	assert_equal "$output" "clean: kept build/reproduce (the reproduction's data and run)"
	assert_files src/build reproduce
	assert_equal "$(cat src/build/reproduce/run/weights.safetensors)" weights
}

@test "SAN=address,undefined builds with the sanitizers, and the loader's tests pass under them" {
	echo 'int main(void) { return 0; }' >t.c
	gcc -fsanitize=address,undefined t.c -o t 2>/dev/null || skip "gcc cannot link the sanitizers"
	tree
	run mk CUDA=0 SAN=address,undefined CFLAGS="-O0 -g" build/tests/test_loader
	assert_status 0
	nm src/build/tests/test_loader | grep -q __asan_init || fail "test_loader has no ASan"
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		run src/build/tests/test_loader
	assert_status 0
}

@test "SAN=thread builds programs that start, and the loader's tests pass under it" {
	echo 'int main(void) { return 0; }' >t.c
	{ gcc -fsanitize=thread t.c -o t && ./t; } 2>/dev/null || skip "gcc cannot link or run ThreadSanitizer"
	tree
	run mk CUDA=0 SAN=thread CFLAGS="-O0 -g" build/bin/mp-eval build/tests/test_loader
	assert_status 0
	nm src/build/bin/mp-eval | grep -q __tsan_init || fail "mp-eval has no TSan"
	# the vector kernels' target_clones resolvers run before TSan is set up
	run src/build/bin/mp-eval --version
	assert_status 0
	# one OpenMP thread: libgomp's own synchronisation is invisible to TSan
	TSAN_OPTIONS=halt_on_error=1 OMP_NUM_THREADS=1 run src/build/tests/test_loader
	assert_status 0
}
