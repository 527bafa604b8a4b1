#!/usr/bin/env bats
# The loader's benchmark programs: loader-rate (mp-train's training loader
# alone) and its PyTorch peer loader-rate-torch.py, on a small dataset;
# their arguments and errors; bench-loader.sh's arguments and reruns. mp-train says
# how many loader threads it uses.

load helpers

# 96 images of 20x20 in 4 classes, packed at 16x16
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	"$PY" "$BATS_TEST_DIRNAME/mkimages.py" classes tr 96 20 20 4 >train.txt
	printf 'red 0\ngreen 1\nblue 2\nyellow 3\n' >cats.txt
	"$MP_BIN/mp-batchwriter" -q -c cats.txt --size 16 -o train.db train.txt
}

@test "loader-rate: images/s of the training loader, any thread count, and of --augment backend (--kept)" {
	D=$BATS_FILE_TMPDIR/data
	for t in 1 3; do
		run "$MP_SCRIPTS/loader-rate" -t $t -b 16 -n 8 -c 12 --scale-min 12 --scale-max 16 "$D/train.db"
		assert_status 0
		grep -Eq '^images_per_second [0-9]+\.[0-9]$' <<<"$output"
		assert_contains "$output" "128 images in"
		assert_contains "$output" "with $t threads"
		# mp-train --augment backend's batches, on the CPU backend
		run "$MP_SCRIPTS/loader-rate" --kept -t $t -b 16 -n 8 -c 12 --scale-min 12 --scale-max 16 "$D/train.db"
		assert_status 0
		grep -Eq '^images_per_second [0-9]+\.[0-9]$' <<<"$output"
		assert_contains "$output" "128 images in"
		assert_contains "$output" "with $t threads, kept decoded, made by the CPU backend"
	done
}

@test "loader-rate: bad arguments exit 2, a bad DB exits 1 naming it" {
	D=$BATS_FILE_TMPDIR/data
	while IFS='|' read -r args want; do
		# shellcheck disable=SC2086
		run --separate-stderr "$MP_SCRIPTS/loader-rate" $args "$D/train.db"
		assert_status 2
		assert_equal "$stderr" "$want"
	done <<-'EOF'
		-t 0|loader-rate: -t 0: expected a number from 1 to 256
		-t 257|loader-rate: -t 257: expected a number from 1 to 256
		-t 1048576|loader-rate: -t 1048576: expected a number from 1 to 256
		-b 65537|loader-rate: -b 65537: expected a number from 1 to 65536
		-n 1000001|loader-rate: -n 1000001: expected a number from 1 to 1000000
		-c 4097|loader-rate: -c 4097: expected a number from 1 to 4096
		--scale-max 65536|loader-rate: --scale-max 65536: expected a number from 1 to 65535
		--scale-min 0x10|loader-rate: --scale-min 0x10: expected a number from 1 to 65535
	EOF
	# strtol would skip the blank
	run --separate-stderr "$MP_SCRIPTS/loader-rate" -t " 2" "$D/train.db"
	assert_status 2
	assert_equal "$stderr" 'loader-rate: -t  2: expected a number from 1 to 256'
	run "$MP_SCRIPTS/loader-rate" -c 200 "$D/train.db"
	assert_status 2
	assert_contains "$output" "expected crop <= scale-min <= scale-max"
	run "$MP_SCRIPTS/loader-rate"
	assert_status 2
	assert_contains "$output" "usage: loader-rate"
	run "$MP_SCRIPTS/loader-rate" -c 12 --scale-min 12 nosuch.db
	assert_status 1
	assert_contains "$output" "nosuch.db"
	run "$MP_SCRIPTS/loader-rate" -b 200 -c 12 --scale-min 12 "$D/train.db"
	assert_status 1
	assert_contains "$output" "96 records make no batch of 200"
}

@test "loader-rate-torch.py: the PyTorch peer's loader, same output" {
	"$PY" -c 'import torch' 2>/dev/null || skip "no PyTorch here"
	D=$BATS_FILE_TMPDIR/data
	run "$PY" "$MP_ROOT/scripts/loader-rate-torch.py" -t 1 -b 16 -n 3 -c 12 "$D/train.db"
	assert_status 0
	grep -Eq '^images_per_second [0-9]+\.[0-9]$' <<<"$output"
	assert_contains "$output" "48 images in"
	run "$PY" "$MP_ROOT/scripts/loader-rate-torch.py" -t x "$D/train.db"
	assert_status 2
	run "$PY" "$MP_ROOT/scripts/loader-rate-torch.py" -t ² "$D/train.db"
	assert_status 2
	assert_equal "$output" "loader-rate-torch.py: -t ²: expected a positive number"
}

@test "bench-loader.sh: bad arguments exit 2 with a message, -h prints the help" {
	run bash "$MP_ROOT/scripts/bench-loader.sh" -n 10
	assert_status 2
	assert_equal "$output" 'bench-loader.sh: -n: "10" is not a number from 256 to 1000000'
	run bash "$MP_ROOT/scripts/bench-loader.sh" -t 1,x
	assert_status 2
	assert_equal "$output" 'bench-loader.sh: -t: "1,x" is not a list of thread counts'
	# a thread count of 0 is refused before any work
	run bash "$MP_ROOT/scripts/bench-loader.sh" -t 1,0 w
	assert_status 2
	assert_equal "$output" 'bench-loader.sh: -t: "0" is not a number from 1 to 256'
	[[ ! -e w ]]
	run bash "$MP_ROOT/scripts/bench-loader.sh" -q
	assert_status 2
	assert_equal "$(first_line "$output")" "bench-loader.sh: unknown option -q"
	assert_contains "$output" "usage: bench-loader.sh"
	run bash "$MP_ROOT/scripts/bench-loader.sh" -t
	assert_status 2
	assert_equal "$(first_line "$output")" "bench-loader.sh: -t needs a value"
	run bash "$MP_ROOT/scripts/bench-loader.sh" -h
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: bench-loader.sh [-n COUNT] [-t THREADS,...] [-k] [WORKDIR]"
	assert_contains "$output" "-t THREADS,...  loader threads, each 1 to 256"
}

@test "bench-loader.sh: a second run in one WORKDIR reuses the images; a failing run shows its errors" {
	# a python3 that runs gen-bench-images.py and fails in the PyTorch loader
	cat >py <<EOF
#!/bin/bash
[[ \$1 == */loader-rate-torch.py ]] && { echo "py: no PyTorch loader here" >&2; exit 1; }
exec $PY "\$@"
EOF
	chmod +x py
	run --separate-stderr env PYTHON="$PWD/py" bash "$MP_ROOT/scripts/bench-loader.sh" -n 256 -t 1 w
	assert_status 1
	assert_contains "$stderr" "gen-bench-images.py: wrote 256 images"
	assert_contains "$stderr" "py: no PyTorch loader here"
	assert_contains "$stderr" "bench-loader.sh: failed: $PWD/py "
	run --separate-stderr env PYTHON="$PWD/py" bash "$MP_ROOT/scripts/bench-loader.sh" -n 256 -t 1 w
	assert_status 1
	assert_contains "$stderr" "bench-loader.sh: reusing the 256 images in $(pwd -P)/w/img"
	assert_not_contains "$stderr" "already exists"
	assert_contains "$stderr" "py: no PyTorch loader here"
	run inspect --json w/train.db
	assert_status 0
}

@test "mp-train says how many loader threads it uses: 2 on the CPU by default" {
	D=$BATS_FILE_TMPDIR/data
	net=(--depth 1 --widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16)
	run "$MP_BIN/mp-train" -d "$D/train.db" -o out "${net[@]}" --batch 32 --epochs 1
	assert_status 0
	assert_contains "$output" "3 batches of 32 per epoch, 2 loader threads; no validation"
	run "$MP_BIN/mp-train" -d "$D/train.db" -o out2 "${net[@]}" --batch 32 --epochs 1 \
		--loader-threads 1
	assert_status 0
	assert_contains "$output" "1 loader thread; no validation"
}
