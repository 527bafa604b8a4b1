#!/usr/bin/env bats
# Every CUDA runtime, cuDNN and cuBLAS call, and every kernel launch, that
# mp-train and mp-eval make on the emulated device, made to fail in turn
# (MP_EMU_FAIL=NAME:K, tests/emu/emu_device.cpp): at its first call and at
# its last. Each failure must end the program with status 1 and a message
# that names the call (or the kernel), or, where the program can go on
# without it (a step not recorded as a graph), say so with the name and go
# on; never a crash, a hang, or a silent success, but for the calls that
# only release what is no longer needed (named below).

# the emulated kernels run thread after thread
BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-300}
load helpers

MODULE=$MP_BIN/../tests/emu/libmp-cuda-emu.so

setup_file() { emu_setup_file; }

setup() {
	emu_setup "$MODULE"
	TRAIN=("$MP_BIN/mp-train" -d "$D/train.db" -v "$D/val.db" "${NET[@]}" --batch 16 --lr 0.1
		--epochs 1 --backend cuda -q)
}

# Calls whose failure may go unreported: they release what the program no
# longer needs (there is nothing left to do about it), or describe the
# device for a listing (mp_cuda_probe: the backend asks again, checked,
# when it is made).
RELEASES='^(cuda(Free|FreeHost|StreamDestroy|EventDestroy|GraphDestroy|GraphExecDestroy)|cudnn(Destroy|Destroy[A-Za-z]*Descriptor|BackendDestroyDescriptor)|cublasDestroy)$'
PROBE='^cudaGetDeviceProperties$'

# sweep CALLS OUT CMD...: CMD once for each name of CALLS (NAME<tab>COUNT,
# from MP_EMU_CALLS) failed at its first call, and at its last, two at a
# time, each in a directory of its own (CMD's relative paths go there);
# OUT gets NAME, K, status, whether stderr names it, and stderr's first
# line, one run a line. With STICKY set, every call after the failure
# fails too.
sweep() {
	local calls=$1 out=$2
	shift 2
	one() { # NAME<tab>K CMD...
		local name k dir rc named=no
		IFS=$'\t' read -r name k <<<"$1"
		shift
		dir=$(mktemp -d "$PWD/run.XXXXXX")
		# a release that fails keeps what it would have released, and after
		# a sticky fault every release fails: leaks that a SAN=address
		# build's LeakSanitizer would report at the exit, by design here
		local asan=${ASAN_OPTIONS:-}
		[[ $name =~ $RELEASES || -n ${STICKY:-} ]] && asan=${asan:+$asan:}detect_leaks=0
		(cd "$dir" && ASAN_OPTIONS=$asan MP_EMU_FAIL="$name:$k${STICKY:+:sticky}" timeout 120 "$@" \
			>stdout 2>stderr)
		rc=$?
		# a kernel's name as the backend gives it: without its template
		grep -qF -- "${name%%<*}" "$dir/stderr" && named=yes
		printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$k" "$rc" "$named" "$(head -1 "$dir/stderr")"
		rm -rf "$dir"
	}
	export -f one
	awk -F'\t' '{ print $1 "\t1"; if ($2 > 1) print $1 "\t" $2 }' "$calls" |
		RELEASES=$RELEASES xargs -d '\n' -P 2 -I{} bash -c 'one "$@"' one {} "$@" >"$out"
}

# judge OUT: every run of the sweep ended as the header says; prints the
# ones that did not
judge() {
	awk -F'\t' -v releases="$RELEASES" -v probe="$PROBE" '
		$3 == 1 && $4 == "yes" { next }            # stopped, naming it
		$3 == 0 && $4 == "yes" { next }            # went on, saying so
		$3 == 0 && ($1 ~ releases || $1 ~ probe) { next }
		{ bad = bad "\n" $0 }
		END { if (bad != "") { print "runs that did not fail well:" bad; exit 1 } }' "$1"
}

@test "MP_EMU_FAIL: each call and launch of mp-train failed at its first and last call stops it naming the call, or is said and gone round" {
	# three steps: op by op, recorded, launched as a graph; then the
	# validation. The sweep covers what a run does: the device's setup,
	# cuDNN's descriptors and choices, copies, graphs, every layer's kernels
	MP_EMU_CALLS=$PWD/calls.tsv "${TRAIN[@]}" --max-steps 3 -o counted
	local n
	n=$(wc -l <calls.tsv)
	((n >= 60)) || fail "only $n names counted: $(cut -f1 calls.tsv | tr '\n' ' ')"
	for name in cudaMalloc cudaMallocHost cudaMemcpyAsync cudaStreamBeginCapture cudaGraphLaunch \
		cudnnConvolutionForward cudnnConvolutionBackwardFilter cublasSgemm sgd_kernel bn_sums_kernel; do
		grep -q "^$name	" calls.tsv || fail "$name not called: $(cut -f1 calls.tsv | tr '\n' ' ')"
	done
	sweep calls.tsv sweep.tsv "${TRAIN[@]}" --max-steps 3 -o out
	assert_equal "$(wc -l <sweep.tsv)" "$(awk -F'\t' '{ n += $2 > 1 ? 2 : 1 } END { print n }' calls.tsv)"
	run judge sweep.tsv
	assert_status 0
	# what some of them say, in full
	grep -q $'^cudnnConvolutionForward\t1\t1\tyes\tmp-train: conv2d_forward: cudnnConvolutionForward: CUDNN_STATUS_EXECUTION_FAILED$' sweep.tsv ||
		fail "$(grep '^cudnnConvolutionForward' sweep.tsv)"
	grep -q $'^cudaMallocHost\t1\t1\tyes\tmp-train: out of memory for a batch\'s images .*: host_alloc: cudaMallocHost: cudaErrorMemoryAllocation (out of memory)$' sweep.tsv ||
		fail "$(grep '^cudaMallocHost' sweep.tsv)"
	grep -q $'^cudnnGetConvolutionForwardAlgorithm_v7\t1\t1\tyes\tmp-train: conv2d_forward: cudnnGetConvolutionForwardAlgorithm_v7: ' sweep.tsv ||
		fail "$(grep '^cudnnGetConvolutionForwardAlgorithm' sweep.tsv)"
	grep -q $'^cudaStreamBeginCapture\t1\t0\tyes\tmp-train: the training step is not recorded as a graph (graph_begin: cudaStreamBeginCapture: ' sweep.tsv ||
		fail "$(grep '^cudaStreamBeginCapture' sweep.tsv)"
}

@test "MP_EMU_FAIL: mp-eval's calls and launches likewise, and those that only the backend's settings and --augment backend make" {
	"${TRAIN[@]}" --max-steps 2 -o net
	MP_EMU_CALLS=$PWD/eval-calls.tsv "$MP_BIN/mp-eval" -q -m net/weights.safetensors --backend cuda \
		"$D/val.db" >/dev/null
	grep -q $'^conv_bn_fold_kernel\t' eval-calls.tsv || fail "$(cut -f1 eval-calls.tsv | tr '\n' ' ')"
	sweep eval-calls.tsv eval-sweep.tsv "$MP_BIN/mp-eval" -q -m "$PWD/net/weights.safetensors" \
		--backend cuda --probs probs.tsv "$D/val.db"
	run judge eval-sweep.tsv
	assert_status 0
	# each setting's own calls: those a short run makes with it and not
	# without (the graph API's, the kernels of bf16 activations, cuDNN's
	# timed search, the profile's events), failed with the setting
	MP_EMU_CALLS=$PWD/base-calls.tsv "${TRAIN[@]}" --max-steps 3 -o base
	local setting at_least f
	for setting in MP_CUDNN_API=graph:cudnnBackendExecute MP_CUDA_ACTIVATIONS=bf16:bn_sums_bf16_kernel \
		MP_CUDNN_SEARCH=timed:cudnnFindConvolutionForwardAlgorithm MP_CUDA_PROFILE=1:cudaEventElapsedTime; do
		at_least=${setting#*:}
		setting=${setting%:*}
		f=${setting%%=*} # (awk takes an operand with "=" for an assignment)
		env "$setting" MP_EMU_CALLS="$PWD/$f.tsv" "${TRAIN[@]}" --max-steps 3 -o "counted-$f"
		awk -F'\t' 'NR == FNR { base[$1]; next } !($1 in base)' base-calls.tsv "$f.tsv" >"$f.own"
		grep -q "^$at_least	" "$f.own" || fail "$setting: $(cut -f1 "$f.own" | tr '\n' ' ')"
		(
			export "${setting?}"
			sweep "$f.own" "$f.sweep" "${TRAIN[@]}" --max-steps 3 -o out
		)
		run judge "$f.sweep"
		assert_status 0
	done
	# and the option's: the batches made on the device (--augment backend)
	MP_EMU_CALLS=$PWD/augment.tsv "${TRAIN[@]}" --max-steps 3 --augment backend -o counted-augment
	awk -F'\t' 'NR == FNR { base[$1]; next } !($1 in base)' base-calls.tsv augment.tsv >augment.own
	grep -q $'^augment_kernel\t' augment.own || fail "--augment backend: $(cut -f1 augment.own | tr '\n' ' ')"
	sweep augment.own augment.sweep "${TRAIN[@]}" --max-steps 3 --augment backend -o out
	run judge augment.sweep
	assert_status 0
}

@test "MP_EMU_FAIL=NAME:1:sticky: after a fault every call fails, as on a device whose context it broke: status 1 naming the fault, never a crash or a hang" {
	MP_EMU_CALLS=$PWD/calls.tsv "${TRAIN[@]}" --max-steps 3 -o counted
	awk -F'\t' '{ print $1 "\t1" }' calls.tsv >first.tsv
	STICKY=1 sweep first.tsv sticky.tsv "${TRAIN[@]}" --max-steps 3 -o out
	assert_equal "$(wc -l <sticky.tsv)" "$(wc -l <calls.tsv)"
	# a release's failure, or the probe's, may go unreported; what fails
	# after it is then what the message names
	run awk -F'\t' -v releases="$RELEASES" -v probe="$PROBE" '
		$3 == 1 && $4 == "yes" { next }
		($1 ~ releases || $1 ~ probe) && ($3 == 0 || $3 == 1) { next }
		{ bad = bad "\n" $0 }
		END { if (bad != "") { print "runs that did not fail well:" bad; exit 1 } }' sticky.tsv
	assert_status 0
}

@test "MP_EMU_FAIL: a capture that fails to end leaves the run op by op, with the same bits" {
	"${TRAIN[@]}" -o plain
	run --separate-stderr env MP_EMU_FAIL=cudaStreamEndCapture "${TRAIN[@]}" -o ended
	assert_status 0
	assert_contains "$stderr" "mp-train: the training step is not recorded as a graph (graph_end: cudaStreamEndCapture: "
	run "$MP_BIN/mp-inspect" --diff plain/weights.safetensors ended/weights.safetensors
	assert_status 0
	assert_contains "$output" "SAME: every tensor within the tolerance"
}

@test "a device failure late in a run: status 1, the command that goes on from the last checkpoint, and that run's bits those of a run that did not fail" {
	"${TRAIN[@]}" --epochs 3 -o whole
	# 8 steps an epoch, each after the second a graph's launch: the 15th
	# launch is in the third epoch, after two checkpoints
	run --separate-stderr env MP_EMU_FAIL=cudaGraphLaunch:15 "${TRAIN[@]}" --epochs 3 -o failed
	assert_status 1
	assert_equal "$stderr" "mp-train: graph_launch: cudaGraphLaunch: cudaErrorLaunchFailure (unspecified launch failure)
mp-train: the run can go on from its last checkpoint, failed/checkpoint-0002.safetensors, with:
  ${TRAIN[*]} --epochs 3 -o failed --resume failed/checkpoint-0002.safetensors"
	"${TRAIN[@]}" --epochs 3 -o failed --resume failed/checkpoint-0002.safetensors
	run "$MP_BIN/mp-inspect" --diff whole/weights.safetensors failed/weights.safetensors
	assert_status 0
	assert_contains "$output" "SAME: every tensor within the tolerance"
}

@test "--backend auto with a device whose backend fails: a warning naming the call, even with -q, and the CPU" {
	local AUTO=("${TRAIN[@]/#cuda/auto}")
	run --separate-stderr env MP_EMU_FAIL=cudnnCreate "${AUTO[@]}" --max-steps 2 -o cpu
	assert_status 0
	assert_equal "$stderr" "mp-train: --backend auto: a CUDA device is there, but the CUDA backend failed (cudnnCreate: CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED): on the CPU"
	assert_equal "$(json_get <("$MP_BIN/mp-inspect" --json cpu/weights.safetensors) 'json.loads(d["metadata"]["train.options"])["compute"]')" "cpu, fp32"
	run --separate-stderr env MP_EMU_FAIL=cudaMalloc "$MP_BIN/mp-eval" -q -m cpu/weights.safetensors \
		--backend auto "$D/val.db"
	assert_status 0
	assert_equal "$stderr" "mp-eval: --backend auto: a CUDA device is there, but the CUDA backend failed (cudaMalloc: cudaErrorMemoryAllocation (out of memory)): on the CPU"
}

@test "MP_EMU_FAIL: a value that is not NAME or NAME:K stops the program, naming it" {
	local v
	for v in cudaMalloc: cudaMalloc:0 cudaMalloc:x :3 :sticky cudaMalloc:0:sticky; do
		run --separate-stderr env MP_EMU_FAIL="$v" "${TRAIN[@]}" -o bad
		assert_status 2
		assert_equal "$stderr" "emu_device: MP_EMU_FAIL=$v: not NAME, NAME:K (K from 1), or either with :sticky"
	done
}
