#!/usr/bin/env bats
# Races in the CUDA backend's kernels, without a GPU: the emulated tests
# (tests/emu/) run again with the blocks of every launch, and the threads of
# every block, in other orders (MP_EMU_ORDER, tests/emu/cuda_emu.h). The
# kernels use no atomics, so a kernel free of races gives the same bits in
# every order; one whose threads read what others write without a barrier
# between gives what its order gives. Each order must pass the tests, and
# the digests of the results read back must be the same. One order also
# runs the two streams' work that no event orders the other way round
# (MP_EMU_STREAMS=others-first, tests/emu/emu_device.cpp): a copy ahead
# into memory a queued step still reads then shows. Another runs the
# convolutions through cuDNN's graph API, which must change no bit on the
# emulated device (it computes each direction alike either way).

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
# fraction of each), then their digests; the reverse one also runs the
# convolutions through cuDNN's graph API (MP_CUDNN_API=graph: plans, not
# the legacy calls, the same sums), the shuffled one the streams'
# unordered work the other way round (MP_EMU_STREAMS)
same_in_every_order() {
	local prog=$1 o pids=()
	for o in forward reverse 7; do
		case $o in
		reverse) MP_CUDNN_API=graph in_order "$prog" "$o" >"digest-$o" & ;;
		7) MP_EMU_STREAMS=others-first in_order "$prog" "$o" >"digest-$o" & ;;
		*) in_order "$prog" "$o" >"digest-$o" & ;;
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
		fail "reverse order with MP_CUDNN_API=graph: $(cat digest-reverse), forward: $(cat digest-forward)"
	[[ $(cat digest-7) == "$(cat digest-forward)" ]] ||
		fail "order 7 with MP_EMU_STREAMS=others-first: $(cat digest-7), forward: $(cat digest-forward)"
}

@test "the bf16 NHWC kernels give the same bits whatever the order of blocks and threads" {
	same_in_every_order test_nhwc_emu
}

@test "every operation and whole training steps on the emulated device: the same bits in every order" {
	same_in_every_order test_cuda_ops_device
}

@test "the emulated device's rules hold with the streams' unordered work either way round" {
	"$EMU/test_emu_device" >own.out || fail "$(grep -E '^(not ok|# FAIL)' own.out)"
	MP_EMU_STREAMS=others-first "$EMU/test_emu_device" >others.out ||
		fail "$(grep -E '^(not ok|# FAIL)' others.out)"
	assert_contains "$(cat others.out)" "# 0 of 8 failed"
	run env MP_EMU_STREAMS=sideways "$EMU/test_emu_device"
	assert_status 2
	assert_contains "$output" "MP_EMU_STREAMS=sideways: not own or others-first"
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
