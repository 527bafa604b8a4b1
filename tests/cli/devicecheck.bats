#!/usr/bin/env bats
# scripts/device-check.sh as far as a machine without a GPU takes it: its
# arguments; the minimal build of the GPU stages' part (the one a GPU
# machine without the full build's libraries gets); the GPU stages
# reported skipped with the reason, never passed; both benchmarks' code
# paths on the CPU (--cpu-smoke); the summary and the packed stage logs.
# And scripts/device-deps.sh, whose folder makes the full build work.

# the minimal build compiles the CUDA backend with nvcc
BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-240}
load helpers

DC=$MP_ROOT/scripts/device-check.sh

have_nvcc() {
	command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]
}

@test "device-check: a bad option or a second folder exits 2 with the usage" {
	run bash "$DC" --bogus
	assert_status 2
	assert_contains "$output" "device-check.sh: unknown option --bogus"
	assert_contains "$output" "usage: device-check.sh [--cpu-smoke] [--quick] [--keep-logs] [RESULTS_DIR]"
	run bash "$DC" one two
	assert_status 2
	assert_contains "$output" "usage: device-check.sh"
	[[ ! -e one && ! -e two ]]
	# the help goes to standard output, exit 0, as the other scripts' does
	run --separate-stderr bash "$DC" -h
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: device-check.sh [--cpu-smoke] [--quick] [--keep-logs] [RESULTS_DIR]"
	assert_equal "$stderr" ""
	[[ ! -e device-check-results ]]
	# a logs/ of the user's in RESULTS_DIR is not the check's to remove
	mkdir -p mine/logs
	echo precious >mine/logs/notes.txt
	run --separate-stderr bash "$DC" mine
	assert_status 2
	assert_equal "$stderr" "device-check: $PWD/mine/logs: exists and holds no device check's logs; give another RESULTS_DIR"
	assert_equal "$(cat mine/logs/notes.txt)" precious
}

@test "device-check: -- ends the options, so that RESULTS_DIR may start with a dash" {
	# two folders after --: the usage, before anything runs (a whole run
	# is the test below)
	run bash "$DC" -- -r -h
	assert_status 2
	assert_equal "$output" "usage: device-check.sh [--cpu-smoke] [--quick] [--keep-logs] [RESULTS_DIR]"
	run bash "$DC" --quick -- -r --bogus
	assert_status 2
	assert_not_contains "$output" "unknown option"
	assert_files .
}

@test "device-deps: a library without its pkg-config file names the Debian package, makes nothing" {
	mkdir pc
	run env PKG_CONFIG_LIBDIR="$PWD/pc" PKG_CONFIG_PATH= bash "$MP_ROOT/scripts/device-deps.sh" deps
	assert_status 1
	assert_equal "$output" "device-deps.sh: no libturbojpeg.pc (Debian: libturbojpeg0-dev)"
	assert_files . pc
	# a DIR that starts with a dash is a folder, not an option
	pkg-config --exists libturbojpeg lmdb libcjson || skip "the -dev packages are not installed"
	run bash "$MP_ROOT/scripts/device-deps.sh" -- -deps
	assert_status 0
	[[ -f ./-deps/lib/pkgconfig/lmdb.pc && -f ./-deps/include/turbojpeg.h ]]
}

@test "device-deps: -h prints the help, a bad option exits 2, a folder it cannot make is one message" {
	run --separate-stderr bash "$MP_ROOT/scripts/device-deps.sh" --help
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: device-deps.sh [DIR]"
	run bash "$MP_ROOT/scripts/device-deps.sh" -h
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: device-deps.sh [DIR]"
	[[ ! -e -h ]]
	run bash "$MP_ROOT/scripts/device-deps.sh" --bogus
	assert_status 2
	assert_equal "$output" "$(printf 'device-deps.sh: unknown option --bogus\nusage: device-deps.sh [DIR]')"
	run bash "$MP_ROOT/scripts/device-deps.sh" a b
	assert_status 2
	[[ ! -e a && ! -e b ]]
	touch file
	run bash "$MP_ROOT/scripts/device-deps.sh" file/deps
	assert_status 1
	assert_equal "$output" "device-deps.sh: file/deps: cannot create the directory (Not a directory)"
}

@test "device-check without a GPU: the minimal build, GPU stages skipped, the CPU smoke run, packed logs" {
	have_nvcc || skip "no nvcc on this machine"
	if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
		skip "a GPU is present: run the check itself"
	fi
	run env DEVICE_CHECK_FORCE_MIN=1 PYTHON="$PY" bash "$DC" --cpu-smoke --quick res
	assert_status 0
	summary=$(cat res/summary.txt)
	assert_contains "$summary" "overall: no stage failed"
	grep -Eq '^build +SKIP .*the minimal build worked' res/summary.txt
	grep -Eq '^gpu-test_cuda_ops +SKIP +[0-9]+ +no CUDA device' res/summary.txt
	grep -Eq '^bench-ours-fp32 +ok .*CPU SMOKE \(code path only\): [0-9.]+ images/s' res/summary.txt
	grep -Eq '^bench-torch-eager +ok .*images/s' res/summary.txt
	# evaluation, ours and PyTorch's, with its own table and ratio
	grep -Eq '^bench-ours-eval-fp32 +ok .*CPU SMOKE \(code path only\): [0-9.]+ images/s' res/summary.txt
	grep -Eq '^bench-ours-fp32-augment +ok .*CPU SMOKE \(code path only\): [0-9.]+ images/s' res/summary.txt
	grep -Eq '^bench-torch-eval-eager +ok .*images/s' res/summary.txt
	grep -Eq '^PyTorch eager \(bf16, NHWC\) +[0-9.]+ +[0-9.]+ +[0-9.]+% +- +[0-9.]+$' \
		<(sed -n '/^evaluation (inference/,$p' res/summary.txt)
	grep -Eq '^train-gpu +SKIP' res/summary.txt
	grep -Eq '^gpu-programs +SKIP +0 +needs the full build' res/summary.txt
	assert_contains "$summary" "CPU SMOKE: these numbers check the code path only"
	# a few files; the stage logs packed
	[[ -f res/logs.tar.gz && ! -e res/logs ]]
	(($(ls res | wc -l) <= 5))
	tar tzf res/logs.tar.gz >list
	grep -qx 'logs/build-min.log' list
	grep -qx 'logs/bench-ours-fp32-ops.log' list
	# the per-operation times were printed
	tar xzf res/logs.tar.gz logs/bench-ours-fp32-ops.log
	grep -q 'time per step by operation' logs/bench-ours-fp32-ops.log
	grep -Eq '^ +conv2d_backward +[0-9.]+ ms' logs/bench-ours-fp32-ops.log
}

@test "device-check: with our benchmarks failed, PyTorch's figures are still in the summary, without a FLOP count" {
	have_nvcc || skip "no nvcc on this machine"
	if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
		skip "a GPU is present: run the check itself"
	fi
	# a value bench_step's CPU backend refuses: each of our benchmarks fails
	run env MP_CPU_WINOGRAD=sideways DEVICE_CHECK_FORCE_MIN=1 PYTHON="$PY" bash "$DC" --cpu-smoke --quick res
	assert_status 1
	grep -Eq '^bench-ours-fp32 +FAIL' res/summary.txt
	grep -Eq '^bench-ours-eval-fp32 +FAIL' res/summary.txt
	assert_contains "$(cat res/summary.txt)" "network: reference (depth 9, shortcut A); none of our benchmarks ran, so no FLOP count: TFLOP/s and MFU not given"
	# both tables, PyTorch's rows with images/s and no ratio
	grep -Eq '^PyTorch eager \(bf16, NHWC\) +[0-9.]+ +- +- +- +-$' \
		<(sed -n '/^network:/,/^evaluation (inference/p' res/summary.txt)
	grep -Eq '^PyTorch eager \(bf16, NHWC\) +[0-9.]+ +- +- +- +-$' \
		<(sed -n '/^evaluation (inference/,$p' res/summary.txt)
	assert_contains "$(cat res/summary.txt)" "overall: FAILED (see the stage logs)"
}

@test "device-check: a spent time budget skips the stages, never fails them, and ends at once" {
	local t0=$SECONDS
	run env DEVICE_CHECK_BUDGET=0 DEVICE_CHECK_FORCE_MIN=1 PYTHON="$PY" bash "$DC" --cpu-smoke res
	assert_status 0
	((SECONDS - t0 < 30)) || fail "took $((SECONDS - t0)) s with no budget"
	assert_contains "$(cat res/summary.txt)" "overall: no stage failed"
	grep -Eq '^build +SKIP +0 +the time budget \(0s\) is spent' res/summary.txt
	grep -Eq '^env +SKIP .*torch not tried \(no time left in the budget\)' res/summary.txt
	! grep -q $'\tFAIL\t' res/stages.tsv
}

@test "device-check: stopped midway, it stops the stage at once and keeps its logs, packed, in a few files" {
	mkdir tmp
	TMPDIR=$PWD/tmp DEVICE_CHECK_FORCE_MIN=1 PYTHON="$PY" bash "$DC" --cpu-smoke res >out.txt 2>&1 &
	local pid=$! i
	for ((i = 0; i < 600; i++)); do
		grep -q 'building the GPU stages' res/device-check.log 2>/dev/null && break
		sleep 0.1
	done
	sleep 1
	# as a caller's timeout or kill does: the script only, not its stage
	local t0=$SECONDS rc=0
	kill -TERM "$pid"
	wait "$pid" || rc=$?
	((SECONDS - t0 < 15)) || fail "it took $((SECONDS - t0)) s to stop"
	assert_equal "$rc" 143
	assert_contains "$(cat out.txt)" "device-check: stopped by SIGTERM"
	tar tzf res/logs.tar.gz >list
	grep -qx 'logs/env.log' list
	grep -qx 'logs/discover.log' list
	tar xzf res/logs.tar.gz logs/build-min.log
	grep -Eq '^# STOPPED by SIGTERM after [0-9]+s$' logs/build-min.log
	[[ ! -e res/logs ]]
	(($(ls res | wc -l) <= 5))
	# its working folder went with it (nvcc's leftovers are nvcc's), and
	# so did the stage's commands
	[[ -z $(find tmp -maxdepth 1 -name 'device-check.*') ]] || fail "left: $(ls tmp)"
	! pgrep -f "$MP_ROOT/build/min" >/dev/null || fail "the build still runs: $(pgrep -af "$MP_ROOT/build/min")"
}

@test "device-deps: the three libraries with relocatable pkg-config files, and bats" {
	run bash "$MP_ROOT/scripts/device-deps.sh" deps
	assert_status 0
	for lib in libturbojpeg lmdb libcjson; do
		[[ -f deps/lib/pkgconfig/$lib.pc ]]
	done
	[[ -f deps/include/turbojpeg.h && -f deps/include/lmdb.h && -f deps/include/cjson/cJSON.h ]]
	mv deps moved
	run env PKG_CONFIG_LIBDIR="$PWD/moved/lib/pkgconfig" pkg-config --cflags --libs lmdb libcjson libturbojpeg
	assert_status 0
	assert_contains "$output" "-I$PWD/moved/lib/pkgconfig/../../include"
	assert_contains "$output" "-llmdb"
	[[ -e moved/lib/liblmdb.so && -e moved/lib/libturbojpeg.so.0 && -e moved/lib/libcjson.so.1 ]]
	# bats, moved too, runs a test file from its copy
	printf '@test "t" { true; }\n' >t.bats
	run moved/bats/bin/bats t.bats
	assert_status 0
	assert_contains "$output" "ok 1 t"
}

@test "test_cuda_ops --harness-check: its own logic on the CPU stand-in, the bf16-storage pass too" {
	bin=$MP_BIN/../tests/gpu/test_cuda_ops
	[[ -x $bin ]] || skip "this build has no CUDA backend"
	run "$bin" --harness-check
	assert_status 0
	assert_contains "$output" "this checks the test program, not the CUDA backend"
	grep -Eq '^ok [0-9]+ - bf16 storage \(stand-in\): small resnet, shortcut A' <<<"$output"
	grep -Eq '^ok [0-9]+ - bf16 storage \(stand-in\): batch norm 4x8x5x5' <<<"$output"
	grep -Eq '^# 0 of [0-9]+ failed' <<<"$output"
	! grep -q '^not ok' <<<"$output"
}

@test "test_cuda_ops --harness-check --fault residual: every whole step fails on a missing gradient path, bf16 too" {
	bin=$MP_BIN/../tests/gpu/test_cuda_ops
	[[ -x $bin ]] || skip "this build has no CUDA backend"
	run "$bin" --harness-check --fault residual
	assert_status 1
	assert_contains "$output" "--fault residual: the stand-in drops the residual's gradient"
	# the retry on other images (a ReLU decision close to its boundary) does not hide it
	assert_contains "$output" "again on other images"
	for pass in "" "bf16 (stand-in): " "bf16 storage (stand-in): "; do
		grep -Fq "not ok" <<<"$(grep -F -- "- ${pass}small resnet, shortcut A:" <<<"$output")" ||
			{ echo "passed: ${pass}small resnet A"; return 1; }
	done
	grep -Fq -- "- small resnet, shortcut B:" <<<"$(grep '^not ok' <<<"$output")"
	grep -Fq -- "- bf16 storage (stand-in): small resnet, shortcut B:" <<<"$(grep '^not ok' <<<"$output")"
	# the operations that do not take the residual pass as before
	grep -Eq '^ok [0-9]+ - bf16 storage \(stand-in\): relu and add' <<<"$output"
}

@test "test_cuda_ops: a wrong argument is a usage error" {
	bin=$MP_BIN/../tests/gpu/test_cuda_ops
	[[ -x $bin ]] || skip "this build has no CUDA backend"
	for args in "--fault residual" "--harness-check --fault" "--harness-check --fault other" "--bogus"; do
		# shellcheck disable=SC2086
		run "$bin" $args
		assert_status 2
		assert_contains "$output" "usage: test_cuda_ops [--harness-check [--fault residual]]"
	done
}
