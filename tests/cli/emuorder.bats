#!/usr/bin/env bats
# Races in the CUDA backend's kernels, without a GPU: the emulated tests
# (tests/emu/) run again with the blocks of every launch, and the threads of
# every block, in other orders (MP_EMU_ORDER, tests/emu/cuda_emu.h). The
# kernels use no atomics, so a kernel free of races gives the same bits in
# every order; one whose threads read what others write without a barrier
# between gives what its order gives. Each order must pass the tests, and
# the digests of the results read back must be the same. Each order also
# runs the streams' work on another schedule (MP_EMU_STREAMS,
# tests/emu/emu_device.cpp): every call's work at once (eager: a
# page-locked buffer filled after the copy that reads it was queued
# shows), the two streams' unordered work the other way round
# (others-first: a copy ahead into memory a queued step still reads
# shows), or at drawn times (random:SEED). One runs the convolutions
# through cuDNN's graph API, which must change no bit on the emulated
# device (it computes each direction alike either way). The default
# schedule is the unit tests' own run.

# test_cuda_ops_device takes about 40 s an order on one core
BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-240}
load helpers

EMU=$MP_BIN/../tests/emu

setup() {
	grep -q 'cuda=yes$' "$MP_BIN/../flags.stamp" ||
		skip "this build has no CUDA backend, so no emulated kernels"
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work" || return
}

# in_order PROGRAM ORDER: runs it under the order, which must pass, and
# prints its digest line without the order's name
in_order() {
	local prog=$1 order=$2
	MP_EMU_ORDER=$order "$EMU/$prog" >"$prog-$order.out" 2>&1 ||
		fail "$prog with MP_EMU_ORDER=$order failed: $(grep -m3 -E '^(not ok|# FAIL)' "$prog-$order.out")"
	grep -Eq '^# 0 of [0-9]+ failed' "$prog-$order.out" || fail "$prog: no summary with MP_EMU_ORDER=$order"
	grep '^# cuda_emu: order ' "$prog-$order.out" | sed 's/^# cuda_emu: order [^,]*, //'
}

# the three orders in parallel (a test program has the whole machine for a
# fraction of each), then their digests; the forward one with every call's
# work run at once (MP_EMU_STREAMS=eager), the reverse one with the
# streams' unordered work the other way round, and the convolutions
# through cuDNN's graph API (MP_CUDNN_API=graph: plans, not the legacy
# calls, the same sums), the shuffled one with the streams' work at times
# its seed draws
same_in_every_order() {
	local prog=$1 o pids=()
	for o in forward reverse 7; do
		case $o in
		forward) MP_EMU_STREAMS=eager in_order "$prog" "$o" >"digest-$o" & ;;
		reverse) MP_EMU_STREAMS=others-first MP_CUDNN_API=graph in_order "$prog" "$o" \
			>"digest-$o" & ;;
		7) MP_EMU_STREAMS=random:7 in_order "$prog" "$o" >"digest-$o" & ;;
		esac
		pids+=($!)
	done
	wait "${pids[@]}"
	for o in forward reverse 7; do
		[[ -s digest-$o ]] || fail "$prog: no digest with MP_EMU_ORDER=$o: $(tail -3 "$prog-$o.out")"
	done
	grep -Eq '^[0-9]+ bytes of results, digest [0-9a-f]{16}$' digest-forward || fail "$(cat digest-forward)"
	[[ $(cut -d' ' -f1 digest-forward) -gt 1000000 ]] || fail "too few results: $(cat digest-forward)"
	[[ $(cat digest-reverse) == "$(cat digest-forward)" ]] ||
		fail "reverse order, others-first, MP_CUDNN_API=graph: $(cat digest-reverse), forward (eager): $(cat digest-forward)"
	[[ $(cat digest-7) == "$(cat digest-forward)" ]] ||
		fail "order 7 with MP_EMU_STREAMS=random:7: $(cat digest-7), forward (eager): $(cat digest-forward)"
}

@test "the bf16 NHWC kernels give the same bits whatever the order of blocks and threads" {
	same_in_every_order test_nhwc_emu
}

@test "every operation and whole training steps on the emulated device: the same bits in every order" {
	same_in_every_order test_cuda_ops_device
}

@test "the emulated device's rules hold on every schedule of the streams' work; a seed draws the same one again" {
	local m
	for m in own others-first eager random:1 random:1 random:2; do
		MP_EMU_STREAMS=$m "$EMU/test_emu_device" >"$m.out" 2>"$m.err" ||
			fail "MP_EMU_STREAMS=$m: $(grep -E '^(not ok|# FAIL)' "$m.out")"
		assert_contains "$(cat "$m.out")" "# 0 of 9 failed"
		grep '^# schedule: ' "$m.out" >>"schedules-$m" || fail "MP_EMU_STREAMS=$m: no schedule line"
	done
	# none ran before its wait, or all at their calls, or some
	assert_equal "$(cat schedules-own)" "# schedule: $(printf '0%.0s' {1..64})"
	assert_equal "$(cat schedules-eager)" "# schedule: $(printf '1%.0s' {1..64})"
	assert_equal "$(sed -n 1p schedules-random:1)" "$(sed -n 2p schedules-random:1)"
	[[ $(sed -n 1p schedules-random:1) != "$(cat schedules-random:2)" ]] ||
		fail "seeds 1 and 2 drew one schedule: $(cat schedules-random:2)"
	# nothing on stderr: a program's messages stay as they are on any schedule
	assert_equal "$(cat random:1.err)" ""
	for m in sideways random random: random:x random:-1 random:1x; do
		run env MP_EMU_STREAMS=$m "$EMU/test_emu_device"
		assert_status 2
		assert_contains "$output" "MP_EMU_STREAMS=$m: not own, others-first, eager or random:SEED (SEED a number)"
	done
}

@test "MP_EMU_ORDER: a value that is not an order stops the program, naming it" {
	for v in sideways 7x -1x; do
		run env MP_EMU_ORDER=$v "$EMU/test_nhwc_emu"
		assert_status 2
		assert_contains "$output" "cuda_emu: MP_EMU_ORDER=$v: not forward, reverse or a number"
	done
	# empty is the default, and prints no digest
	run env MP_EMU_ORDER= "$EMU/test_nhwc_emu"
	assert_status 0
	assert_not_contains "$output" "cuda_emu: order"
}
