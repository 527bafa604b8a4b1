#!/usr/bin/env bats
# mp-train and mp-eval with --backend cuda, by default on a device emulated
# on the host: MP_CUDA_MODULE names the CUDA module as built, on the
# runtime, cuDNN and cuBLAS that tests/emu/emu_device.cpp stands in for
# (streams that run their work when waited for, stream capture and
# graphs, page-locked memory). What only a GPU run of the programs
# reaches runs here: the device's description and precision, the
# training step captured and launched as a CUDA graph with two input
# slots and the next batch copied ahead on the second stream, a cuda
# run's checkpoints and resume, and mp-eval on the device. cuDNN's own
# algorithms and speed are not this. On a GPU, MP_TEST_CUDA_MODULE=build/lib/miniplaces/libmp-cuda.so
# runs the same tests on the device (scripts/device-check.sh does).

# the emulated kernels run thread after thread
BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-180}
load helpers

MODULE=${MP_TEST_CUDA_MODULE:-$MP_BIN/../tests/emu/libmp-cuda-emu.so}

setup_file() { emu_setup_file; }

setup() {
	emu_setup "$MODULE"
	# the device as the backend names it: "NAME, sm_XY, N GiB"
	DEVICE=$("$MP_BIN/mp-train" -V | sed -n 's/^cuda: [0-9]* CUDA device(s); device 0: //p')
	[[ -n $DEVICE ]] || fail "no CUDA device through $MODULE: $("$MP_BIN/mp-train" -V | tail -1)"
	OPTS=(-d "$D/train.db" -v "$D/val.db" "${NET[@]}" --batch 16 --lr 0.1 --epochs 2 --log-every 2)
}

train() { "$MP_BIN/mp-train" "$@"; }
evaluate() { "$MP_BIN/mp-eval" "$@"; }

same_weights() {
	run inspect --diff "$@"
	assert_status 0
	assert_contains "$output" "SAME: every tensor within the tolerance"
}

# same_probs A B: two --probs files agree within 1e-5
same_probs() {
	[[ $(wc -l <"$1") -gt 1 && $(wc -l <"$1") == $(wc -l <"$2") ]] || fail "$1, $2: lines differ"
	paste "$1" "$2" | awk -F'\t' '
		NR > 1 { n = NF / 2; for (i = 3; i <= n; i++) { d = $i - $(i + n); if (d < 0) d = -d
			if (d > 1e-5) { print "line " NR ": " $i " vs " $(i + n); exit 1 } } }'
}

# the first and the last epoch row's training loss
first_last_loss() {
	awk -F'\t' '$1 == "epoch" { l[++n] = $5 } END { print l[1], l[n] }' "$1"
}

@test "mp-train --backend cuda: names the device, bf16 by default, the steps as graphs; the loss falls" {
	run --separate-stderr train "${OPTS[@]}" --backend cuda -o run
	assert_status 0
	assert_equal "$stderr" ""
	assert_contains "$output" "mp-train: cuda, $DEVICE, bf16; network depth 1"
	# 8 steps an epoch; one recording per input slot, made again after the
	# validation pass (which reallocates the buffers)
	assert_contains "$output" "mp-train: 13 of this run's 16 steps ran as one graph each (4 recordings)"
	read -r first last < <(first_last_loss run/train.log)
	awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "loss $first -> $last"
	assert_equal "$(json_get <(inspect --json run/weights.safetensors) 'json.loads(d["metadata"]["train.options"])["compute"]')" "cuda, bf16"
	# --backend auto takes the device and says so
	run train "${OPTS[@]}" --backend auto --max-steps 1 -o auto
	assert_status 0
	assert_contains "$output" "mp-train: cuda, $DEVICE, bf16;"
}

@test "in fp32 the device's run follows the CPU's; graphs and copies ahead change no bit" {
	train "${OPTS[@]}" -q -o cpu
	train "${OPTS[@]}" -q -o fp32 --backend cuda --precision fp32
	same_weights --tol 1e-3 cpu/weights.safetensors fp32/weights.safetensors
	# op by op: the same bits as the graphs, in both precisions
	MP_CUDA_GRAPH=0 train "${OPTS[@]}" -q -o fp32-ops --backend cuda --precision fp32
	same_weights fp32/weights.safetensors fp32-ops/weights.safetensors
	# the emulated device running the next batch's copy before the step
	# queued ahead of it (a device may), every call's work at once (a
	# page-locked buffer written while still read), or at drawn times: the
	# same bits (ignored on a GPU)
	local streams
	for streams in others-first eager random:1 random:2; do
		MP_EMU_STREAMS=$streams train "${OPTS[@]}" -q -o "fp32-$streams" --backend cuda \
			--precision fp32
		same_weights fp32/weights.safetensors "fp32-$streams/weights.safetensors"
	done
	train "${OPTS[@]}" -q -o bf16 --backend cuda
	run env MP_CUDA_GRAPH=0 "$MP_BIN/mp-train" "${OPTS[@]}" -o bf16-ops --backend cuda
	assert_status 0
	assert_not_contains "$output" "graph"
	same_weights bf16/weights.safetensors bf16-ops/weights.safetensors
}

@test "--augment backend on the device: the loader's bits in fp32 and bf16, graphs or not, the batch made inside the step's graph" {
	local p
	for p in fp32 bf16; do
		train "${OPTS[@]}" -q -o $p --backend cuda --precision $p
		run --separate-stderr train "${OPTS[@]}" -o $p-aug --backend cuda --precision $p --augment backend
		assert_status 0
		assert_contains "$output" "mp-train: the training set decoded into the cuda backend's memory: 0.1 MB, augmented there from plans of up to 7 taps ("
		# one step more than from the loader's batches, whose first one,
		# not copied ahead, is a shape of its own
		assert_contains "$output" "mp-train: 14 of this run's 16 steps ran as one graph each (4 recordings)"
		same_weights $p/weights.safetensors $p-aug/weights.safetensors
		assert_equal "$(cut -f1-10 $p-aug/train.log)" "$(cut -f1-10 $p/train.log)"
	done
	MP_CUDA_GRAPH=0 train "${OPTS[@]}" -q -o ops-aug --backend cuda --augment backend
	same_weights bf16/weights.safetensors ops-aug/weights.safetensors
	MP_CUDA_ACTIVATIONS=bf16 train "${OPTS[@]}" -q -o act --backend cuda
	MP_CUDA_ACTIVATIONS=bf16 train "${OPTS[@]}" -q -o act-aug --backend cuda --augment backend
	same_weights act/weights.safetensors act-aug/weights.safetensors
	[[ $DEVICE == emulated* ]] || return 0
	# the recorded step copies its plan in and makes the batch: a copy
	# and a kernel more than a step whose batch the loader made (and the
	# second stream copied in, outside the graph)
	MP_EMU_GRAPHS=kernels train "${OPTS[@]}" --backend cuda --max-steps 3 -q -o nodes --augment backend 2>aug.err
	MP_EMU_GRAPHS=kernels train "${OPTS[@]}" --backend cuda --max-steps 3 -q -o nodes2 2>plain.err
	# copies and kernels of every graph: "COPIES KERNELS" lines
	local counts='/graph of/ { print $6, $12 }'
	assert_equal "$(awk "$counts" aug.err | sort -u)" "6 59"
	assert_equal "$(awk "$counts" plain.err | sort -u)" "5 58"
	assert_equal "$(awk '$3 == "augment_kernel" { print $2 }' aug.err | sort -u)" 1
	assert_equal "$(grep -c augment_kernel plain.err)" 0
}

@test "activations stored in bf16 (MP_CUDA_ACTIVATIONS=bf16): said, trained, and resumed exactly" {
	export MP_CUDA_ACTIVATIONS=bf16
	run train "${OPTS[@]}" --backend cuda -o whole
	assert_status 0
	assert_contains "$output" "mp-train: cuda, $DEVICE, bf16, activations in bf16; network"
	read -r first last < <(first_last_loss whole/train.log)
	awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "loss $first -> $last"
	train "${OPTS[@]}" --backend cuda -q -o parts --max-steps 11
	train -d "$D/train.db" -v "$D/val.db" -q -o parts --resume parts/last.safetensors
	same_weights whole/weights.safetensors parts/weights.safetensors
}

# conversions NODES: the conversion kernels among a graph's nodes, as the
# emulated device lists them (MP_EMU_GRAPHS=kernels)
conversions() {
	awk '/^emu_device: +[0-9]+ (nchw_to_nhwc|nhwc_bf16_to_nchw)/ { n += $2 } END { print n + 0 }' "$1"
}

@test "MP_EMU_GRAPHS: a recorded step's nodes by kind; no filter converted, and with bf16 activations no activation" {
	[[ $DEVICE == emulated* ]] || skip "the emulated device's count (a GPU has none)"
	local steps=(--backend cuda --max-steps 3 -q)
	MP_EMU_GRAPHS=kernels train "${OPTS[@]}" "${steps[@]}" -o plain 2>plain.err
	MP_EMU_GRAPHS=kernels MP_CUDA_ACTIVATIONS=bf16 train "${OPTS[@]}" "${steps[@]}" -o act 2>act.err
	local f
	for f in plain.err act.err; do
		grep -Eq '^emu_device: graph of [0-9]+ nodes: [0-9]+ copy [0-9]+ cuBLAS [0-9]+ cuDNN [0-9]+ kernel$' "$f" ||
			fail "$f: no node count: $(head -3 "$f")"
	done
	# five convolutions: 14 cuDNN calls a step (the stem has no input
	# gradient), in either form
	assert_contains "$(cat plain.err)" " 14 cuDNN "
	assert_contains "$(cat act.err)" " 14 cuDNN "
	# the filters come from the SGD step's bf16 copies, not converted:
	# with float activations, around each of the four inner convolutions
	# x, dy and x again go in, y, dx and dw come out; the stem takes in
	# the image and gives y (its filter gradient runs in fp32)
	assert_equal "$(conversions plain.err)" 26
	# bf16 activations: only the filters' gradients, the image, and dy for
	# the stem's fp32 filter gradient
	assert_equal "$(conversions act.err)" 6
	# the switches that turn both savings off: each filter converted again,
	# forward and backward (the stem's forward only), and the residual's
	# input gradient summed by an add at each of the blocks
	MP_EMU_GRAPHS=kernels MP_CUDA_KEEP_FILTERS=0 MP_CUDA_BACKWARD_ADD=0 \
		train "${OPTS[@]}" "${steps[@]}" -o off 2>off.err
	assert_equal "$(conversions off.err)" $((26 + 4 * 2 + 1))
	assert_equal "$(awk '$3 == "add_kernel" { print $2 }' off.err)" 2
	assert_equal "$(grep -c add_kernel plain.err)" 0
}

@test "a cuda run resumed with only -d, -v, -o and --resume goes on on the device, bit for bit" {
	train "${OPTS[@]}" --backend cuda -q -o whole
	train "${OPTS[@]}" --backend cuda -q -o parts --max-steps 11
	run --separate-stderr train -d "$D/train.db" -v "$D/val.db" -o parts --resume parts/last.safetensors
	assert_status 0
	assert_equal "$stderr" ""
	assert_contains "$output" "--backend cuda --precision auto"
	assert_contains "$output" "mp-train: cuda, $DEVICE, bf16;"
	same_weights whole/weights.safetensors parts/weights.safetensors
	assert_equal "$(cut -f1-10 parts/train.log | grep -v '^end')" "$(cut -f1-10 whole/train.log)"
	# where there is no device, the resume says where cuda came from
	train "${OPTS[@]}" --backend cuda -q -o gone --max-steps 3
	run --separate-stderr env MP_CUDA_MODULE=/nonexistent "$MP_BIN/mp-train" -d "$D/train.db" \
		-o gone --resume gone/last.safetensors -q
	assert_status 1
	assert_equal "$stderr" "mp-train: --backend cuda: no CUDA device (MP_CUDA_MODULE=/nonexistent: no such file) (--backend cuda --precision auto: gone/last.safetensors's run's; --backend and --precision choose others, with other arithmetic)"
	# given, the CPU goes on, with the warning of another arithmetic
	run --separate-stderr train -d "$D/train.db" -o gone --resume gone/last.safetensors -q --backend cpu
	assert_status 0
	assert_equal "$stderr" "mp-train: warning: compute was \"cuda, bf16\" in gone/last.safetensors, now \"cpu, fp32\": the run will differ from an uninterrupted one"
}

@test "SIGTERM during a cuda run's graphs: a checkpoint after the step in flight; resumed, the same bits" {
	# long enough on a GPU for the signal to come before the end
	local epochs=4
	[[ $DEVICE == emulated* ]] || epochs=400
	# a checkpoint at the end only (and at the signal): 400 would be slow to write
	local slow=("${OPTS[@]}" --epochs $epochs --log-every 1 --eval-every 0 --backend cuda
		--checkpoint-every $epochs)
	train "${slow[@]}" -q -o whole
	"$MP_BIN/mp-train" "${slow[@]}" -o parts >out.txt 2>err.txt &
	local pid=$! status=0 _
	for _ in $(seq 600); do
		[[ -f parts/train.log && $(wc -l <parts/train.log) -ge 6 ]] && break
		sleep 0.05
	done
	kill -TERM $pid
	wait $pid || status=$?
	assert_equal "$status" 143
	assert_contains "$(cat err.txt)" "resume with:"
	run inspect --verify parts/last.safetensors
	assert_status 0
	train -d "$D/train.db" -v "$D/val.db" -o parts --resume parts/last.safetensors -q
	same_weights whole/weights.safetensors parts/weights.safetensors
	assert_equal "$(grep -v '^end' parts/train.log | cut -f1-10)" "$(cut -f1-10 whole/train.log)"
}

@test "mp-eval --backend cuda: the device named, in fp32 the CPU's errors and probabilities" {
	train "${OPTS[@]}" -q -o run
	local w=run/weights.safetensors
	evaluate -q -m $w --multiscale --scales 12,16 --probs cpu.tsv --json "$D/val.db" >cpu.json
	run --separate-stderr evaluate -m $w --scales 12,16 --probs fp32.tsv --json \
		--backend cuda --precision fp32 "$D/val.db"
	assert_status 0
	assert_equal "$(json_get <(echo "$output") 'd["backend"]')" "cuda, $DEVICE, fp32"
	assert_equal "$(json_get <(echo "$output") 'd["combined"]')" "$(json_get cpu.json 'd["combined"]')"
	same_probs fp32.tsv cpu.tsv
	# views of several sizes in one pass: corners, center and mirrors
	evaluate -q -m $w --scales 14 --crops 5 --flip --probs cpu5.tsv "$D/val.db"
	evaluate -q -m $w --scales 14 --crops 5 --flip --probs fp32-5.tsv --backend cuda \
		--precision fp32 "$D/val.db"
	same_probs fp32-5.tsv cpu5.tsv
	# bf16 by default; the list path reads ahead on its own thread
	run evaluate -m $w --backend cuda --list "$D/val.txt" -r "$D"
	assert_status 0
	assert_contains "$output" "cuda, $DEVICE, bf16;"
	assert_contains "$output" "48 images"
}

@test "MP_CUDA_MODULE naming a file in the current directory without a slash loads that file" {
	cp "$MODULE" mod.so
	run env MP_CUDA_MODULE=mod.so "$MP_BIN/mp-train" -V
	assert_status 0
	assert_contains "$output" "device 0: $DEVICE"
}

@test "--device N: -V lists the devices, mp-train and mp-eval name the one chosen and compute the same there; one that is not there, or a CPU backend's, is refused" {
	[[ $DEVICE == emulated* ]] || skip "two devices of the emulated device's (MP_EMU_DEVICES)"
	export MP_EMU_DEVICES=2
	run "$MP_BIN/mp-eval" -V
	assert_status 0
	assert_contains "$output" "cuda: 2 CUDA device(s); device 0: $DEVICE
cuda: device 1: $DEVICE"
	train "${OPTS[@]}" --backend cuda --max-steps 3 -q -o first
	run --separate-stderr train "${OPTS[@]}" --backend cuda --device 1 --max-steps 3 -o second
	assert_status 0
	assert_contains "$output" "mp-train: cuda, device 1: $DEVICE, bf16; network"
	same_weights first/weights.safetensors second/weights.safetensors
	# the device does not change the results: not a setting a resume takes
	assert_equal "$(json_get <(inspect --json second/weights.safetensors) 'json.loads(d["metadata"]["train.options"])["compute"]')" "cuda, bf16"
	run --separate-stderr evaluate -m second/weights.safetensors --backend auto --device 1 --json "$D/val.db"
	assert_status 0
	assert_equal "$(json_get <(echo "$output") 'd["backend"]')" "cuda, device 1: $DEVICE, bf16"
	# a device that is not there: refused, with auto as with cuda
	local b
	for b in cuda auto; do
		run --separate-stderr train "${OPTS[@]}" --backend $b --device 2 -o none
		assert_status 1
		assert_equal "$stderr" "mp-train: --backend $b: no CUDA device 2 (2 found)"
	done
	[[ ! -e none ]]
	run --separate-stderr evaluate -m second/weights.safetensors --device 1 "$D/val.db"
	assert_status 2
	assert_equal "$stderr" "mp-eval: --device 1: the cpu backend has no devices (--device is for --backend cuda or auto)"
	run --separate-stderr train "${OPTS[@]}" --backend cpu-ref --device 0 -o none
	assert_status 2
	assert_equal "$stderr" "mp-train: --device 0: the cpu-ref backend has no devices (--device is for --backend cuda or auto)"
	run --separate-stderr train "${OPTS[@]}" --backend cuda --device -1 -o none
	assert_status 2
	assert_contains "$stderr" "--device"
}

@test "--backend auto with a device: a CUDA variable set to a value the backend does not take exits 1, it does not go on on the CPU" {
	run --separate-stderr env MP_CUDA_GRAPH=yes "$MP_BIN/mp-eval" -m /nonexistent --backend auto "$D/val.db"
	assert_status 1
	assert_equal "$stderr" "mp-eval: --backend auto: MP_CUDA_GRAPH=yes: expected 0 or 1"
	run --separate-stderr env MP_CUDA_ACTIVATIONS=bf61 "$MP_BIN/mp-train" "${OPTS[@]}" --backend auto -o run
	assert_status 1
	assert_equal "$stderr" "mp-train: --backend auto: MP_CUDA_ACTIVATIONS=bf61: expected float or bf16"
	[[ ! -e run ]]
	# a value too long for the reason to hold whole
	local long
	long=$(printf '%0300d' 1)
	run --separate-stderr env MP_CUDA_GRAPH="$long" "$MP_BIN/mp-train" "${OPTS[@]}" --backend auto -o run
	assert_status 1
	assert_contains "$stderr" "mp-train: --backend auto: MP_CUDA_GRAPH=000"
	[[ ! -e run ]]
	# empty is the default
	run env MP_CUDA_GRAPH= "$MP_BIN/mp-train" "${OPTS[@]}" --backend auto --max-steps 1 -o ok
	assert_status 0
	assert_contains "$output" "mp-train: cuda, $DEVICE, bf16;"
}

@test "batches that do not divide the images: mp-eval's recorded passes and mp-train's validation, the same bits as op by op" {
	# 48 images in 10s: the last pass of each view size is a new shape
	# (8 images), after graphs of 10 at three sizes; the outputs as the CPU's
	train "${OPTS[@]}" -q -o run --max-steps 2
	local w=run/weights.safetensors v=(--scales 12,16,20 --flip --batch 10)
	evaluate -q -m $w "${v[@]}" --probs cpu.tsv --submission cpu.sub --per-class cpu.cls \
		--confusion cpu.conf "$D/val.db"
	evaluate -q -m $w "${v[@]}" --backend cuda --precision fp32 --probs cuda.tsv \
		--submission cuda.sub --per-class cuda.cls --confusion cuda.conf "$D/val.db"
	MP_CUDA_GRAPH=0 evaluate -q -m $w "${v[@]}" --backend cuda --precision fp32 \
		--probs ops.tsv "$D/val.db"
	cmp cuda.tsv ops.tsv
	same_probs cuda.tsv cpu.tsv
	for f in sub cls conf; do cmp cpu.$f cuda.$f; done
	# validation in batches of 20, 20 and 8 between epochs of 20s
	local b20=("${OPTS[@]}" --batch 20 --backend cuda --precision fp32 -q)
	train "${b20[@]}" -o graphs
	MP_CUDA_GRAPH=0 train "${b20[@]}" -o ops
	same_weights graphs/weights.safetensors ops/weights.safetensors
	assert_equal "$(cut -f1-10 graphs/train.log)" "$(cut -f1-10 ops/train.log)"
}

@test "the backend's settings (MP_CUDNN_*, MP_CUDA_STREAM, MP_CUDA_PROFILE, MP_CUDA_KEEP_FILTERS, MP_CUDA_BACKWARD_ADD): each trains, says what it shows, and changes no result it need not" {
	local steps=(--backend cuda --max-steps 3 -q)
	train "${OPTS[@]}" "${steps[@]}" -o plain
	# what changes only how the work is issued or shown: the same bits
	local setting
	# (the filters' bf16 copies, kept or not, have a conversion's bits; the
	# residual's input gradient, summed by the conversion back from bf16
	# or by an add, the same float sum)
	for setting in MP_CUDA_STREAM=legacy MP_CUDA_PROFILE=1 MP_CUDNN_LOG=1 MP_CUDA_KEEP_FILTERS=0 \
		MP_CUDA_BACKWARD_ADD=0; do
		run --separate-stderr env "$setting" "$MP_BIN/mp-train" "${OPTS[@]}" "${steps[@]}" -o "${setting%%=*}"
		assert_status 0
		same_weights plain/weights.safetensors "${setting%%=*}"/weights.safetensors
		case $setting in
		MP_CUDA_PROFILE=1)
			assert_contains "$stderr" "total: cuDNN"
			assert_not_contains "$output" "graph" ;;
		MP_CUDNN_LOG=1)
			assert_contains "$stderr" "mp-cuda: conv x 16x3x12x12 w 4x3x3x3 stride 1 pad 1 bf16 y: algorithm" ;;
		*)
			assert_equal "$stderr" "" ;;
		esac
	done
	# what may choose other algorithms or engines: within bf16's rounding
	# on a GPU; on the emulated device, which computes every algorithm
	# alike, the same bits, but for the nondeterministic ones, whose bits
	# vary there as on a device
	for setting in MP_CUDNN_SEARCH=timed MP_CUDNN_API=graph MP_CUDNN_DETERMINISTIC=0; do
		local tol=(--tol 0)
		[[ $DEVICE == emulated* && $setting != MP_CUDNN_DETERMINISTIC=0 ]] || tol=(--tol 5e-2)
		run --separate-stderr env "$setting" MP_CUDNN_LOG=1 "$MP_BIN/mp-train" "${OPTS[@]}" "${steps[@]}" -o "${setting%%=*}"
		assert_status 0
		same_weights "${tol[@]}" plain/weights.safetensors "${setting%%=*}"/weights.safetensors
		case $setting in
		MP_CUDNN_API=graph)
			assert_contains "$stderr" "mp-cuda: conv x 16x3x12x12 w 4x3x3x3 stride 1 pad 1 bf16 y: graph API plan"
			assert_not_contains "$stderr" ": algorithm" ;;
		*)
			assert_contains "$stderr" "bf16 y: algorithm" ;;
		esac
	done
	# no graph API engine that adds to dx (the emulated device's
	# MP_EMU_CUDNN_ADD=0): conv2d_backward_add makes the input gradient
	# apart and adds it; fp32, where dx is in the algorithm's form
	[[ $DEVICE == emulated* ]] || return 0
	train "${OPTS[@]}" "${steps[@]}" --precision fp32 -o fp32-legacy
	run --separate-stderr env MP_CUDNN_API=graph MP_EMU_CUDNN_ADD=0 MP_CUDNN_LOG=1 \
		"$MP_BIN/mp-train" "${OPTS[@]}" "${steps[@]}" --precision fp32 -o fp32-apart
	assert_status 0
	assert_contains "$stderr" "fp32 dx added: no graph API engine adds, made apart"
	same_weights --tol 1e-3 fp32-legacy/weights.safetensors fp32-apart/weights.safetensors
}
