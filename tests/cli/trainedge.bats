#!/usr/bin/env bats
# mp-train at the edges of its options and data: a run that diverges with
# finite losses, checkpoints that cannot be resumed, a dataset of one
# class; on the same small data and network as train.bats.

load helpers

train() { "$MP_BIN/mp-train" "$@"; }

setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	class_data
	# labels all 0 and no categories file: the DB records one class
	head -n 8 train.txt | awk '{ print $1, 0 }' >one.txt
	"$MP_BIN/mp-batchwriter" -q --size 16 -o one.db one.txt
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work"
	D=$BATS_FILE_TMPDIR/data
	NET=(--depth 1 --widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16)
	OPTS=(-d "$D/train.db" -v "$D/val.db" "${NET[@]}" --batch 16 --lr 0.1 --schedule none)
}

# nonfinite FILE...: the names of the tensors holding NaN or infinity.
nonfinite() {
	"$PY" - "$MP_ROOT/scripts" "$@" <<-'EOF'
		import sys
		import numpy as np
		sys.path.insert(0, sys.argv[1])
		import mp_resnet
		for f in sys.argv[2:]:
		    t, _ = mp_resnet.read_safetensors(f)
		    print(" ".join(k for k, v in sorted(t.items()) if not np.all(np.isfinite(v))))
	EOF
}

@test "a run that diverges with finite losses stops before it writes an infinite running variance" {
	# at rate 10 with weight decay 1 the activations grow until a running
	# variance overflows while the loss, from batch statistics, stays
	# finite; validation with an infinite variance is finite too
	run --separate-stderr train "${OPTS[@]}" --epochs 3 --lr 10 --wd 1 -q -o out
	assert_status 1
	assert_equal "$stderr" "mp-train: after step 16 (lr 10): stages.0.blocks.0.bn1.running_var holds NaN or infinity, though the loss was finite (the run diverged); stopping, and the weights are not written. The last good checkpoint is out/checkpoint-0001.safetensors"
	[[ ! -e out/checkpoint-0002.safetensors && ! -e out/weights.safetensors ]]
	assert_equal "$(readlink out/last.safetensors)" checkpoint-0001.safetensors
	assert_equal "$(nonfinite out/checkpoint-0001.safetensors)" ""
	# with no checkpoint before it, none is named
	run --separate-stderr train "${OPTS[@]}" --epochs 3 --lr 30 --wd 1 -q -o out2
	assert_status 1
	assert_contains "$stderr" "mp-train: after step 8 (lr 30): "
	assert_contains "$stderr" "No checkpoint was written"
	assert_files out2 train.log
}

@test "--resume of a checkpoint that holds NaN exits 1 naming the tensor, and makes nothing" {
	train "${OPTS[@]}" --epochs 1 -q -o out
	"$PY" - "$MP_ROOT/scripts" out/checkpoint-0001.safetensors nan.safetensors <<-'EOF'
		import sys
		import numpy as np
		sys.path.insert(0, sys.argv[1])
		import mp_resnet
		t, meta = mp_resnet.read_safetensors(sys.argv[2])
		t["momentum.fc.weight"][0, 0] = np.inf
		meta["crc32"] = mp_resnet.data_crc32(t)
		mp_resnet.write_safetensors(sys.argv[3], t, meta)
	EOF
	run train "${OPTS[@]}" --epochs 2 -q -o new --resume nan.safetensors
	assert_status 1
	assert_equal "$output" "mp-train: nan.safetensors: momentum.fc.weight holds NaN or infinity: a run cannot go on from it (resume from an earlier checkpoint)"
	[[ ! -e new ]]
}

@test "a refused --resume creates no output directory" {
	train "${OPTS[@]}" --epochs 1 -q -o out
	run train "${OPTS[@]}" --epochs 2 -q -o new --resume out/weights.safetensors
	assert_status 2
	assert_equal "$output" "mp-train: out/weights.safetensors: a weights file without momentum; --resume needs a checkpoint"
	[[ ! -e new ]]
	# a checkpoint of 4 classes on data of 2
	awk '$2 < 2' "$D/train.txt" >two.txt
	printf 'red 0\ngreen 1\n' >cats2.txt
	"$MP_BIN/mp-batchwriter" -q -r "$D" -c cats2.txt --size 16 -o two.db two.txt
	run train "${OPTS[@]}" -d two.db -v two.db --epochs 2 -q -o new --resume out/checkpoint-0001.safetensors
	assert_status 2
	assert_equal "$output" "mp-train: out/checkpoint-0001.safetensors: the checkpoint's network has 4 classes, the training set has 2"
	[[ ! -e new ]]
}

@test "a training set of one class is refused with its name; so is a validation set of one" {
	run train "${OPTS[@]}" -d "$D/one.db" -v "$D/one.db" --batch 4 --epochs 1 -o out
	assert_status 2
	assert_equal "$output" "mp-train: $D/one.db: the dataset has 1 class, and a network needs 2 or more to tell apart (pack it with a categories file, or mp-batchwriter --classes N, that counts them all)"
	run train "${OPTS[@]}" -d "$D/one.db" --classes 2 --batch 4 --epochs 1 -o out
	assert_status 2
	assert_equal "$output" "mp-train: $D/one.db: the dataset has 1 class, --classes says 2"
	run train "${OPTS[@]}" -v "$D/one.db" --epochs 1 -o out
	assert_status 2
	assert_equal "$output" "mp-train: $D/one.db: the validation set has 1 class, the training set 4"
	[[ ! -e out ]]
}

@test "-d or -v naming standard input or a FIFO is refused as a stream before anything is read" {
	echo "not read" >in.txt
	run bash -c '{ "$@"; cat; } <in.txt' _ "$MP_BIN/mp-train" "${OPTS[@]}" -d - --epochs 1 -o out
	assert_equal "$output" $'mp-train: <stdin>: the loader needs a dataset DB, not a stream\nnot read'
	run bash -c '{ "$@"; cat; } <in.txt' _ "$MP_BIN/mp-train" "${OPTS[@]}" -v - --epochs 1 -o out
	assert_equal "$output" $'mp-train: <stdin>: the loader needs a dataset DB, not a stream\nnot read'
	# a FIFO that no one writes: no wait for a writer
	mkfifo f
	run timeout 20 "$MP_BIN/mp-train" "${OPTS[@]}" -v f --epochs 1 -o out
	assert_status 2
	assert_equal "$output" "mp-train: f: the loader needs a dataset DB, not a stream"
	[[ ! -e out ]]
}

@test "a log path that names a file other than a training log is never written, even with --force or --resume" {
	msg="is not a training log (its first line is not the log's header): mp-train does not write into it, even with --force or --resume"
	echo "my notes" >notes.txt
	for force in "" --force; do
		run train "${OPTS[@]}" --epochs 1 -q -o out --log notes.txt $force
		assert_status 2
		assert_equal "$output" "mp-train: notes.txt $msg"
	done
	[[ ! -e out ]]
	train "${OPTS[@]}" --epochs 1 -q -o out
	run train "${OPTS[@]}" --epochs 2 -q -o out --log notes.txt --resume out/last.safetensors
	assert_status 2
	assert_equal "$(cat notes.txt)" "my notes"
	# another program's train.log in the output directory
	mkdir other && printf 'epoch,loss\n1,0.5\n' >other/train.log
	run train "${OPTS[@]}" --epochs 1 -q -o other --force
	assert_status 2
	assert_equal "$output" "mp-train: other/train.log $msg"
	assert_equal "$(cat other/train.log)" $'epoch,loss\n1,0.5'
	assert_files other train.log
}

@test "a log path that names one of the run's own files in its directory is refused; a start leaves nothing made" {
	msg="a name of the run's own files in out (its checkpoints, weights and last.safetensors), which would overwrite or remove the log: give the log another name"
	for log in out/checkpoint-0001.safetensors out//weights.safetensors ./out/last.safetensors; do
		run train "${OPTS[@]}" --epochs 1 -q -o out --log "$log"
		assert_status 2
		assert_equal "$output" "mp-train: --log $log: $msg"
		[[ ! -e out ]]
	done
	mkdir out
	run train "${OPTS[@]}" --epochs 1 -q -o out --keep 1 --log out/checkpoint-0002.safetensors
	assert_status 2
	assert_files out
	# the same name in another directory is only a name
	mkdir logs
	train "${OPTS[@]}" --epochs 2 -q -o out --keep 1 --log logs/checkpoint-0001.safetensors
	assert_equal "$(wc -l <logs/checkpoint-0001.safetensors)" 3
}

@test "--log - writes the log on standard output, with its header, and makes no file named -" {
	run --separate-stderr train "${OPTS[@]}" --epochs 2 -q -o out --log -
	assert_status 0
	assert_equal "$(printf '%s\n' "$output" | cut -f 1-3 | tr '\t\n' ' /')" "kind epoch step/epoch 1 8/epoch 2 16/"
	[[ ! -e - ]]
	assert_files out checkpoint-0001.safetensors checkpoint-0002.safetensors last.safetensors weights.safetensors
	# a file it is redirected to is only appended to: never read back, cut or emptied
	echo "before" >log.txt
	train "${OPTS[@]}" --epochs 3 -q -o out --log - --resume out/checkpoint-0001.safetensors >>log.txt 2>/dev/null
	assert_equal "$(cut -f 1-3 log.txt | tr '\t\n' ' /')" "before/kind epoch step/epoch 2 16/epoch 3 24/"
}

@test "validation images stored exactly as training images are named in a warning; the training set as -v is not" {
	cd "$D"
	# two training images among the validation ones, one of them under another name
	{ sed -n '5p;9p' train.txt; head -n 10 val.txt; } >"$OLDPWD/mixed.txt"
	cp "$(sed -n '9p' train.txt | cut -d' ' -f1)" "$OLDPWD/copy.png"
	sed -i "2s|^[^ ]*|$OLDPWD/copy.png|" "$OLDPWD/mixed.txt"
	"$MP_BIN/mp-batchwriter" -q -c cats.txt --size 16 -o "$OLDPWD/mixed.db" "$OLDPWD/mixed.txt"
	cd "$OLDPWD"
	local t5 t9
	t5=$(sed -n '5p' "$D/train.txt" | cut -d' ' -f1)
	t9=$(sed -n '9p' "$D/train.txt" | cut -d' ' -f1)
	run --separate-stderr "$MP_BIN/mp-train" -q -d "$D/train.db" -v mixed.db -o out --depth 1 \
		--widths 4,8 --crop 12 --scale-min 12 --scale-max 16 --batch 16 --epochs 1
	assert_status 0
	assert_equal "$stderr" "mp-train: warning: 2 of the 12 validation records in mixed.db are stored exactly as training records in $D/train.db (record 0 ($t5) is record 4 ($t5); record 1 ($PWD/copy.png) is record 8 ($t9)): the validation error will read lower than on images not trained on"
	# the training set given as the validation set, to watch the fit: no warning
	run --separate-stderr "$MP_BIN/mp-train" -q -d "$D/train.db" -v "$D/train.db" -o out2 \
		--depth 1 --widths 4,8 --crop 12 --scale-min 12 --scale-max 16 --batch 16 --epochs 1
	assert_status 0
	assert_equal "$stderr" ""
}

@test "a validation set whose classes have other names is refused, naming the first that differs" {
	printf 'green 0\nred 1\nblue 2\nyellow 3\n' >swapped.txt
	"$MP_BIN/mp-batchwriter" -q -r "$D" -c swapped.txt --size 16 -o val.db "$D/val.txt"
	run train "${OPTS[@]}" -v val.db --epochs 1 -o out
	assert_status 2
	assert_equal "$output" "mp-train: val.db: the validation set's class 0 is \"green\", the training set's \"red\" (pack both with the same categories file)"
	[[ ! -e out ]]
}

@test "-o DIR/, as a shell completes it, names the files DIR/NAME, not DIR//NAME" {
	run --separate-stderr train "${OPTS[@]}" --epochs 1 -o out/
	assert_status 0
	assert_equal "$(tail -n 1 <<<"$output" | sed 's/ (.*//')" "weights: out/weights.safetensors"
	run train "${OPTS[@]}" --epochs 1 -o out/
	assert_status 2
	assert_equal "$output" "mp-train: out/ already holds a run (train.log): continue it with --resume out/last.safetensors, or start over with --force"
}

@test "--augment backend trains the weights of the loader's batches, bit for bit, and a resume may switch between the two" {
	train "${OPTS[@]}" --epochs 2 -q -o loader
	run train "${OPTS[@]}" --epochs 2 --augment backend -o backend
	assert_status 0
	assert_contains "$output" "mp-train: the training set decoded into the cpu backend's memory: 0.1 MB, augmented there from plans of up to 7 taps ("
	run inspect --diff loader/weights.safetensors backend/weights.safetensors
	assert_status 0
	# the log's rows but for speed and time
	assert_equal "$(cut -f1-10 backend/train.log)" "$(cut -f1-10 loader/train.log)"
	# stopped in the middle of an epoch with one, resumed with the other
	train "${OPTS[@]}" --epochs 2 --augment backend --max-steps 5 -q -o mixed
	train -d "$D/train.db" -v "$D/val.db" -o mixed --resume mixed/last.safetensors -q
	run inspect --diff loader/weights.safetensors mixed/weights.safetensors
	assert_status 0
	train "${OPTS[@]}" --epochs 2 --max-steps 11 -q -o mixed2
	train -d "$D/train.db" -v "$D/val.db" -o mixed2 --resume mixed2/last.safetensors --augment backend -q
	run inspect --diff loader/weights.safetensors mixed2/weights.safetensors
	assert_status 0
	# the reference backend makes the same batches
	train "${OPTS[@]}" --epochs 1 --backend cpu-ref -q -o ref-loader
	train "${OPTS[@]}" --epochs 1 --backend cpu-ref --augment backend -q -o ref-backend
	run inspect --diff ref-loader/weights.safetensors ref-backend/weights.safetensors
	assert_status 0
}

@test "--augment takes loader or backend, and refuses images that a plan cannot scale, naming one" {
	run --separate-stderr train "${OPTS[@]}" --augment gpu -o out
	assert_status 2
	assert_contains "$stderr" "--augment"
	assert_contains "$stderr" "gpu"
	[[ ! -e out ]]
	# 800 px images at a scale of 12 shrink more than 60 times
	head -n 4 "$D/train.txt" >big.txt
	"$MP_BIN/mp-batchwriter" -q -r "$D" -c "$D/cats.txt" --size 800 -o big.db big.txt
	run --separate-stderr train -d big.db "${NET[@]}" --batch 2 --epochs 1 --augment backend -q -o big
	assert_status 2
	assert_contains "$stderr" "big.db: record 0 ("
	assert_contains "$stderr" "is 800x800, which a scale of 12 shrinks more than 60 times: the loader's threads can augment it, the backend cannot"
	# the loader can
	run train -d big.db "${NET[@]}" --batch 2 --epochs 1 -q -o big2
	assert_status 0
}
