#!/usr/bin/env bats
# The scripts' arguments and failure paths, quickly: no benchmark is
# run to its end here (a failing stand-in for python3 or make stops them
# early), and no GPU is needed.

load helpers

S=$MP_ROOT/scripts

# fakepy: a python3 that fails on a program read from standard input (the
# PyTorch halves of the benchmarks) and runs the real one otherwise.
fakepy() {
	cat >fakepy <<EOF
#!/bin/bash
for a in "\$@"; do
	[ "\$a" = - ] && { echo "fakepy: no PyTorch here" >&2; exit 3; }
done
exec $PY "\$@"
EOF
	chmod +x fakepy
}

# nomods MODULE...: ./nomods, a python3 for which each MODULE cannot be
# imported (a stand-in module on its path raises ModuleNotFoundError).
nomods() {
	mkdir -p nomod
	local m
	for m in "$@"; do
		printf 'raise ModuleNotFoundError("No module named %s", name="%s")\n' "$m" "$m" >"nomod/$m.py"
	done
	printf '#!/bin/sh\nPYTHONPATH=%s exec %s "$@"\n' "$PWD/nomod" "$PY" >nomods
	chmod +x nomods
}

# failing_make: a make on PATH that fails at once.
failing_make() {
	mkdir -p bin
	printf '#!/bin/sh\necho "make: not today" >&2\nexit 2\n' >bin/make
	chmod +x bin/make
}

@test "bench-eval.sh stops with exit 1 when its PyTorch half fails, printing no table" {
	fakepy
	run --separate-stderr env PYTHON="$PWD/fakepy" bash "$S/bench-eval.sh" -n 1 -b 1 -t 1 w
	assert_status 1
	assert_equal "$output" ""
	assert_contains "$stderr" "fakepy: no PyTorch here"
	assert_contains "$stderr" "bench-eval.sh: PyTorch failed"
}

@test "bench scripts name a bad option, a missing value or an extra argument, exit 2" {
	for s in bench-eval.sh bench-conv.sh bench-batchwriter.sh; do
		run bash "$S/$s" --bogus
		assert_status 2
		assert_equal "$(first_line "$output")" "$s: unknown option --bogus"
		assert_contains "$output" "usage: $s "
		run bash "$S/$s" -x
		assert_status 2
		assert_equal "$(first_line "$output")" "$s: unknown option -x"
		run bash "$S/$s" -n
		assert_status 2
		assert_equal "$(first_line "$output")" "$s: -n needs a value"
		assert_contains "$output" "usage: $s "
		run bash "$S/$s" a b
		assert_status 2
		assert_contains "$(first_line "$output")" "$s: "
		assert_contains "$output" "usage: $s "
		run bash "$S/$s" --help
		assert_status 0
		assert_equal "$(first_line "$output")" "$(first_line "$(bash "$S/$s" -h)")"
	done
	[[ ! -e a && ! -e b ]]
}

@test "bench-conv.sh reads numbers as decimal: -n 08 and -b 010 are 8 and 10" {
	failing_make
	run --separate-stderr env PATH="$PWD/bin:$PATH" bash "$S/bench-conv.sh" -n 08 -b 010 -r 0
	assert_status 1
	assert_contains "$stderr" "CPUs, 2 threads, batch 10 (no cpu-ref), 3 steps"
	assert_contains "$stderr" "bench-conv.sh: make failed"
	assert_not_contains "$stderr" "value too great"
	run bash "$S/bench-conv.sh" -n 51
	assert_status 2
	assert_equal "$output" "bench-conv.sh: -n: \"51\" is not a number from 1 to 50"
}

@test "demo.sh: -h prints the help, a bad option exits 2, a folder it cannot make is one message" {
	run --separate-stderr bash "$S/demo.sh" --help
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: demo.sh [WORKDIR]"
	run bash "$S/demo.sh" -h
	assert_status 0
	run bash "$S/demo.sh" --bogus
	assert_status 2
	assert_equal "$output" "$(printf 'demo.sh: unknown option --bogus\nusage: demo.sh [WORKDIR]')"
	run bash "$S/demo.sh" a b
	assert_status 2
	assert_equal "$(first_line "$output")" 'demo.sh: one WORKDIR only, not "a" and "b"'
	touch file
	run bash "$S/demo.sh" file/demo
	assert_status 1
	assert_equal "$output" "demo.sh: file/demo: cannot create the directory (Not a directory)"
	assert_files . file
}

@test "demo.sh runs the programs that MP_BIN and MP_SCRIPTS name, and make demo those of its build" {
	mkdir bin
	run env MP_BIN="$PWD/bin" bash "$S/demo.sh" work
	assert_status 1
	assert_equal "$output" "demo.sh: $PWD/bin/mp-batchwriter is not built; run make first"
	for p in mp-batchwriter mp-inspect mp-train mp-eval; do ln -s "$MP_BIN/$p" bin/$p; done
	run env MP_BIN="$PWD/bin" MP_SCRIPTS="$PWD/bin" bash "$S/demo.sh" work
	assert_status 1
	assert_equal "$output" "demo.sh: $PWD/bin/fmnist-convert is not built; run make first"
	assert_files . bin
	run make -n -C "$MP_ROOT" demo B=other
	assert_contains "$output" "MP_BIN=$MP_ROOT/other/bin MP_SCRIPTS=$MP_ROOT/other/scripts bash scripts/demo.sh other/demo"
}

@test "py-batchwriter.py writes the DB whole or not at all, and refuses an existing one" {
	mkimg classes im 6 20 20 3 >list.txt
	run "$PY" "$S/py-batchwriter.py" -r . -o db list.txt
	assert_status 0
	assert_equal "$output" "py-batchwriter.py: wrote 6 images in 1 macrobatches to db"
	assert_files db data.mdb lock.mdb
	# a trailing slash names the same directory
	mkdir sub
	head -n 2 list.txt >two.txt
	run "$PY" "$S/py-batchwriter.py" -r . -o sub/slash.db/ two.txt
	assert_status 0
	assert_files sub slash.db
	# a second run into it: refused, the DB as it was
	sum=$(cksum <db/data.mdb)
	run "$PY" "$S/py-batchwriter.py" -r . -o db list.txt
	assert_status 1
	assert_equal "$output" "py-batchwriter.py: db: already exists (remove it first)"
	assert_equal "$(cksum <db/data.mdb)" "$sum"
	# an image that fails after the first ones: nothing under the name, no partial left
	echo "im/missing.png 0" >>list.txt
	run "$PY" "$S/py-batchwriter.py" -r . --macrobatch 2 -o db2 list.txt
	assert_status 1
	assert_equal "$output" "py-batchwriter.py: ./im/missing.png: No such file or directory"
	assert_no_db db2
	# a file in the way, a folder that is not there: named once
	touch file
	run "$PY" "$S/py-batchwriter.py" -r . -o file list.txt
	assert_status 1
	assert_equal "$output" "py-batchwriter.py: file: already exists (remove it first)"
	run "$PY" "$S/py-batchwriter.py" -r . -o nodir/db list.txt
	assert_status 1
	assert_equal "$output" "py-batchwriter.py: nodir/db: cannot write in nodir: No such file or directory"
	assert_files . db file im list.txt sub two.txt
}

@test "the shell scripts are clean under shellcheck, every severity" {
	command -v shellcheck >/dev/null || skip "shellcheck is not installed (Debian: shellcheck)"
	# -x follows . common.sh; --norc: no .shellcheckrc of the machine's
	# changes the verdict. The .bats files are left out: their @test
	# blocks and run's variables make noise of their own.
	run shellcheck --norc -x "$S"/*.sh "$S/plot-log" "$MP_ROOT"/tests/cli/*.bash
	assert_status 0
	assert_equal "$output" ""
}

@test "the benchmarks name the Python modules they lack, as Debian packages, before any work" {
	nomods torch lmdb
	failing_make
	for s in bench-eval.sh bench-conv.sh bench-loader.sh; do
		run --separate-stderr env PYTHON="$PWD/nomods" PATH="$PWD/bin:$PATH" bash "$S/$s" w
		[[ $s != bench-conv.sh ]] || run --separate-stderr env PYTHON="$PWD/nomods" PATH="$PWD/bin:$PATH" bash "$S/$s"
		assert_status 1
		assert_contains "$stderr" "$s: $PWD/nomods cannot import"
		assert_contains "$stderr" "torch (Debian:"
		assert_contains "$stderr" "python3-torch)"
		assert_not_contains "$stderr" "Traceback"
		assert_not_contains "$stderr" "make: not today"
	done
	run --separate-stderr env PYTHON="$PWD/nomods" PATH="$PWD/bin:$PATH" bash "$S/bench-batchwriter.sh" w
	assert_status 1
	assert_equal "$stderr" "bench-batchwriter.sh: $PWD/nomods cannot import lmdb (Debian: python3-lmdb)"
	run --separate-stderr env PYTHON=/no/python3 bash "$S/bench-eval.sh" w
	assert_status 1
	assert_equal "$stderr" "bench-eval.sh: /no/python3 is missing (set PYTHON)"
	assert_files . bin nomod nomods
}

@test "the Python scripts: -h and --help exit 0, a usage error exits 2, a missing module is one line" {
	for s in loader-rate-torch.py mp_dataset.py; do
		for h in -h --help; do
			run --separate-stderr "$PY" "$S/$s" $h
			assert_status 0
			assert_equal "$(first_line "$output")" "$(first_line "$("$PY" "$S/$s" 2>&1)")"
			assert_contains "$output" "usage: $s "
			assert_equal "$stderr" ""
		done
		run --separate-stderr "$PY" "$S/$s" --bogus
		assert_status 2
		assert_contains "$stderr" "--bogus"
	done
	run "$PY" "$S/loader-rate-torch.py"
	assert_status 2
	assert_equal "$output" "usage: loader-rate-torch.py [-t THREADS] [-b BATCH] [-n BATCHES] [-c CROP] DB"
	nomods numpy
	run ./nomods "$S/gen-bench-images.py" out 2
	assert_status 1
	assert_equal "$output" "gen-bench-images.py: cannot import numpy (Debian: python3-numpy python3-pil)"
	run ./nomods "$S/mp_dataset.py" list x.db
	assert_status 1
	assert_equal "$output" "mp_dataset.py: cannot import numpy (Debian: python3-numpy)"
	run ./nomods "$S/loader-rate-torch.py" x.db
	assert_status 1
	assert_contains "$output" "loader-rate-torch.py: cannot import numpy (Debian: python3-torch"
	nomods lmdb
	run ./nomods "$S/py-batchwriter.py" -r . -o db list.txt
	assert_status 1
	assert_equal "$output" "py-batchwriter.py: cannot import lmdb (Debian: python3-lmdb python3-numpy python3-pil)"
	assert_files . nomod nomods
}

@test "demo.sh: a bad DEMO_EPOCHS exits 2 before any work, not after the packing" {
	for e in x 0 1.5 -1; do
		run env DEMO_EPOCHS=$e bash "$S/demo.sh" w
		assert_status 2
		assert_equal "$output" "demo.sh: DEMO_EPOCHS: \"$e\" is not a number from 1 to 1000000"
	done
	assert_files .
}

@test "bench-batchwriter.sh: a WORKDIR that starts with a dash, after --, holds the run" {
	run --separate-stderr bash "$S/bench-batchwriter.sh" -n 1 -- -w
	assert_status 0
	assert_contains "$output" "mp-batchwriter -j 1"
	[[ -f ./-w/images/train.txt && -f ./-w/db/data.mdb ]]
	assert_files . -w
}

@test "a benchmark's WORKDIR: relative, it holds the run; a folder of the user's in it is never removed" {
	mkdir -p w/images
	echo precious >w/images/mine.txt
	printf 'a 0\n' >w/images/train.txt
	run --separate-stderr bash "$S/bench-batchwriter.sh" -n 1 w
	assert_status 1
	assert_equal "$stderr" "bench-batchwriter.sh: $(pwd -P)/w/images: exists and does not hold this script's images; remove it or give another WORKDIR"
	assert_equal "$(cat w/images/mine.txt)" precious
	rm -r w/images
	run --separate-stderr bash "$S/bench-batchwriter.sh" -n 1 w
	assert_status 0
	[[ -f w/images/.bench-images && -f w/db/data.mdb ]]
}

@test "the benchmarks build the tree as it was last built: with or without the CUDA backend" {
	mkdir -p bin tree/build
	printf '#!/bin/sh\necho "$*" >>"%s/make.args"\n' "$PWD" >bin/make
	chmod +x bin/make
	prog=t
	# shellcheck source=/dev/null
	. "$S/common.sh"
	printf 'gcc ... | cuda=\n' >tree/build/flags.stamp
	PATH=$PWD/bin:$PATH make_built tree build/bin/mp-eval
	printf 'gcc ... | nvcc ... | cuda=yes\n' >tree/build/flags.stamp
	PATH=$PWD/bin:$PATH make_built tree build/tests/oracle/bench_step
	rm tree/build/flags.stamp
	PATH=$PWD/bin:$PATH make_built tree
	assert_equal "$(cat make.args)" "-s -C tree CUDA=0 build/bin/mp-eval
-s -C tree CUDA=1 build/tests/oracle/bench_step
-s -C tree"
}

@test "the C helpers under build/scripts: -h and --help print their usage on stdout and exit 0" {
	local h
	for h in loader-rate jpeg-decode-rate fmnist-convert; do
		for o in -h --help; do
			run --separate-stderr "$MP_SCRIPTS/$h" "$o"
			assert_status 0
			assert_contains "$(first_line "$output")" "usage: $h"
			assert_equal "$stderr" ""
		done
	done
}

@test "the C helpers under build/scripts read their numbers in decimal, without blanks" {
	# HELPER|OPTION|VALUE|first line of stderr
	while IFS='|' read -r h opt v want; do
		run --separate-stderr "$MP_SCRIPTS/$h" "$opt" "$v" x y
		assert_status 2
		assert_equal "$(first_line "$stderr")" "$want"
	done <<-'EOF'
		jpeg-decode-rate|-n| 3|jpeg-decode-rate: --repeats: " 3" is not a number from 1 to 100000
		jpeg-decode-rate|-n|3x|jpeg-decode-rate: --repeats: "3x" is not a number from 1 to 100000
		fmnist-convert|--train| 5|fmnist-convert: --train: " 5" is not a number from 0 to 60000
		fmnist-convert|--val|+|fmnist-convert: --val: "+" is not a number from 0 to 10000
	EOF
}

@test "fmnist-convert past the file size limit (ulimit -f): the file asked for named, exit 1, no temporary left" {
	[[ -r /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]] ||
		skip "no Fashion-MNIST (the Debian package dataset-fashion-mnist)"
	run --separate-stderr bash -c 'ulimit -f 1 && exec "$@"' _ "$MP_SCRIPTS/fmnist-convert" \
		--train 100 --val 10 --test 10 fm
	assert_status 1
	[[ $stderr =~ ^fmnist-convert:\ fm/[a-z0-9_/.-]*[a-z]:\ write\ failed:\ File\ too\ large$ ]] ||
		fail "$stderr"
	assert_not_contains "$stderr" ".tmp"
	assert_equal "$(find fm -name '*.tmp')" ""
}

@test "the scripts read and write numbers with a decimal point under a decimal-comma locale" {
	comma_locale
	# common.sh, sourced by reproduce.sh, demo.sh, peer-train.sh and the
	# benchmarks, whose awk turns logs and JSON into figures
	run env LC_ALL=de_DE.UTF-8 bash -c '. "$1/common.sh"
		awk '\''BEGIN { x = "0.125"; printf "%.2f ", 100 * x }'\''
		printf "%.1f %s" 0.5 "$(locale | grep ^LC_CTYPE=)"' _ "$S"
	assert_status 0
	# the locale's other categories are kept
	assert_equal "$output" "12.50 0.5 LC_CTYPE=de_DE.UTF-8"
}
