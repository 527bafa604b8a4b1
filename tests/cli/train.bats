#!/usr/bin/env bats
# mp-train: learning, outputs, the log, exact resumption, signals, NaN,
# write failures and bad options, on a small generated dataset of 4 classes
# and a tiny network.

load helpers

train() { "$MP_BIN/mp-train" "$@"; }

# 128 training and 48 validation images of 4 learnable classes, 20x20
# brought to 16x16; the same data for every test of this file.
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	class_data
	printf 'a 0\nb 1\nc 2\n' >cats3.txt
	head -n 30 val.txt | awk '$2 < 3' >val3.txt
	"$MP_BIN/mp-batchwriter" -q -c cats3.txt --size 16 -o val3.db val3.txt
	"$MP_BIN/mp-batchwriter" -q -c cats.txt --size 16 val.txt >val.stream
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work"
	D=$BATS_FILE_TMPDIR/data
	# a tiny network, 8 steps per epoch; a rate drop at epoch 3
	NET=(--depth 1 --widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16)
	OPTS=(-d "$D/train.db" -v "$D/val.db" "${NET[@]}" --batch 16 --lr 0.1 --schedule 3)
}

# log_col LOG KIND COLUMN: the column's values in rows of one kind.
log_col() {
	awk -F'\t' -v kind="$2" -v col="$3" '
		NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		$1 == kind { print $c }' "$1"
}

same_weights() {
	run inspect --diff "$1" "$2"
	assert_status 0
	assert_contains "$output" "SAME: every tensor within the tolerance"
}

@test "training lowers the loss and learns the classes" {
	run train "${OPTS[@]}" --epochs 5 -o out
	assert_status 0
	assert_contains "$output" "epoch 5/5"
	assert_contains "$output" "final validation error:"
	# the network's size as mp-inspect gives it, a small one's in M
	local flops
	flops=$(inspect out/weights.safetensors | sed -n 's/^FLOPs: *\([0-9.]*\) M per image at 12 px.*/\1/p')
	[[ -n $flops ]] || fail "mp-inspect gives no FLOPs in M at 12 px"
	assert_contains "$output" "$(awk -v f="$flops" 'BEGIN { printf "%.3g MFLOP per image at 12 px", f }')"
	losses=($(log_col out/train.log epoch loss))
	assert_equal "${#losses[@]}" 5
	assert_less "${losses[4]}" "$(awk -v a="${losses[0]}" 'BEGIN { print a / 2 }')"
	# chance is 0.75 top-1 error; the classes are easy
	assert_less "$(log_col out/train.log epoch val_top1_err | tail -1)" 0.2
}

@test "the outputs: checkpoints kept, last, weights, a TSV log with a header" {
	run train "${OPTS[@]}" --epochs 5 --keep 2 --log-every 4 -q -o out
	assert_status 0
	assert_equal "$output" ""
	assert_files out checkpoint-0004.safetensors checkpoint-0005.safetensors \
		last.safetensors train.log weights.safetensors
	assert_equal "$(readlink out/last.safetensors)" checkpoint-0005.safetensors
	assert_equal "$(head -1 out/train.log)" "$(printf 'kind\tepoch\tstep\tlr\tloss\ttrain_top1_err\ttrain_top5_err\tval_loss\tval_top1_err\tval_top5_err\timages_per_s\telapsed_s')"
	# 40 steps: 10 step rows and 5 epoch rows, 12 fields each
	assert_equal "$(log_col out/train.log step step | tr '\n' ' ')" "4 8 12 16 20 24 28 32 36 40 "
	assert_equal "$(log_col out/train.log epoch epoch | tr '\n' ' ')" "1 2 3 4 5 "
	assert_equal "$(awk -F'\t' '{ print NF }' out/train.log | sort -u)" 12
	# the schedule: 0.1 for epochs 1-3, then 0.01
	assert_equal "$(log_col out/train.log epoch lr | tr '\n' ' ')" "0.1 0.1 0.1 0.01 0.01 "
	# the weights load as a network without momentum; checkpoints have it
	run inspect --verify out/weights.safetensors
	assert_status 0
	run inspect --json out/weights.safetensors
	assert_equal "$(json_get - 'd["kind"]' <<<"$output")" weights
	assert_equal "$(json_get <(inspect --json out/last.safetensors) 'd["kind"]')" checkpoint
	meta=$(json_get <(inspect --json out/weights.safetensors) 'd["metadata"]["class_names"]')
	assert_equal "$meta" '["red","green","blue","yellow"]'
	run inspect --json out/checkpoint-0004.safetensors
	assert_equal "$(json_get - 'd["metadata"]["train.epoch"], d["metadata"]["train.batch"], d["metadata"]["train.step"]' <<<"$output")" "('4', '0', '32')"
	# a checkpoint names the classes too: mp-eval's per-class file on it
	assert_equal "$(json_get - 'd["metadata"]["class_names"]' <<<"$output")" "$meta"
	"$MP_BIN/mp-eval" -q -m out/last.safetensors --per-class classes.tsv "$D/val.db"
	assert_equal "$(cut -f 2 classes.tsv | tr '\n' ' ')" "name red green blue yellow "
}

@test "the weights load in PyTorch and give mp-train's validation error" {
	train "${OPTS[@]}" --epochs 3 -q -o out
	want=$(log_col out/train.log epoch val_top1_err | tail -1)
	# the records as stored, then PIL's bicubic resize to the crop size
	mkdir rec
	for i in $(seq 0 47); do inspect --extract "$i" -o "rec/$i.png" "$D/val.db"; done
	inspect --list "$D/val.db" | awk -F'\t' 'NR > 1 { print $1, $3 }' >labels.txt
	run "$PY" - "$MP_ROOT/scripts" out/weights.safetensors <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from PIL import Image
import mp_resnet
net, meta = mp_resnet.load(sys.argv[2])
mean = np.array([float(v) for v in meta["mean"].split(",")])
size = int(meta["input_size"])
wrong = total = 0
for line in open("labels.txt"):
    index, label = line.split()
    img = Image.open("rec/%s.png" % index).convert("RGB").resize((size, size), Image.BICUBIC)
    x = (np.asarray(img, np.float64) - mean).transpose(2, 0, 1)[None]
    with torch.no_grad():
        wrong += int(net(torch.tensor(x, dtype=torch.float32)).argmax(1).item() != int(label))
    total += 1
print("%.5f" % (wrong / total))
EOF
	assert_status 0
	# PIL resamples a little differently: allow two images in 48
	assert_less "$(awk -v a="$output" -v b="$want" 'BEGIN { d = a - b; print (d < 0 ? -d : d) }')" 0.042
}

@test "resuming at an epoch boundary ends with the same weights, bit for bit" {
	train "${OPTS[@]}" --epochs 4 -q -o whole
	train "${OPTS[@]}" --epochs 4 -q -o parts --max-steps 16
	assert_files parts checkpoint-0001.safetensors checkpoint-0002.safetensors \
		last.safetensors train.log weights.safetensors
	run train "${OPTS[@]}" --epochs 4 -o parts --resume parts/checkpoint-0002.safetensors
	assert_status 0
	assert_contains "$output" "resuming parts/checkpoint-0002.safetensors at epoch 3, batch 0 (step 16)"
	same_weights whole/weights.safetensors parts/weights.safetensors
	same_weights whole/checkpoint-0004.safetensors parts/checkpoint-0004.safetensors
	# the log goes on where it stopped, with the same numbers
	assert_equal "$(log_col parts/train.log epoch loss)" "$(log_col whole/train.log epoch loss)"
	# a finished run has nothing left to train, and says so
	run train "${OPTS[@]}" --epochs 4 -o parts --resume parts/checkpoint-0004.safetensors
	assert_status 0
	assert_contains "$output" "has done 4 of 4 epochs: nothing to train"
	same_weights whole/weights.safetensors parts/weights.safetensors
}

@test "a resume given only the data and the directory goes on with the run's options, and says which" {
	# the backend too: the reference loops' run goes on with them, not
	# with the default backend's other arithmetic
	local run=(-d "$D/train.db" -v "$D/val.db" "${NET[@]}" --batch 16 --lr 0.05 --schedule 2
		--gamma 0.5 --epochs 3 --seed 7 --wd 0.001 --label-smoothing 0.1 --warmup 0.5
		--backend cpu-ref --precision fp32 --mean 100,110.5,120.25)
	train "${run[@]}" -q -o whole
	train "${run[@]}" -q -o parts --max-steps 11
	run --separate-stderr train -d "$D/train.db" -v "$D/val.db" -o parts --resume parts/last.safetensors
	assert_status 0
	assert_equal "$stderr" ""
	assert_equal "$(grep -e '^mp-train: options from' <<<"$output")" "mp-train: options from parts/last.safetensors: --batch 16 --epochs 3 --lr 0.05 --momentum 0.9 --wd 0.001 --label-smoothing 0.1 --gamma 0.5 --warmup 0.5 --scale-min 12 --scale-max 16 --eval-every 1 --checkpoint-every 1 --keep 3 --log-every 50 --lr-policy step --schedule 2 --backend cpu-ref --precision fp32 --seed 7 --mean 100,110.5,120.25"
	assert_contains "$output" "mp-train: cpu-ref, "
	assert_contains "$output" "--mean 100,110.5,120.25
mp-train: resuming parts/last.safetensors at epoch 2, batch 3 (step 11)"
	same_weights whole/weights.safetensors parts/weights.safetensors
	# an option given is used, and compared as before
	train "${run[@]}" -q -o more --max-steps 11
	run --separate-stderr train -d "$D/train.db" -o more --resume more/last.safetensors --lr 0.02 -q
	assert_status 0
	assert_equal "$stderr" "mp-train: warning: lr was 0.05 in more/last.safetensors, now 0.02: the run will differ from an uninterrupted one"
	assert_equal "$(json_get <(inspect --json more/weights.safetensors) 'json.loads(d["metadata"]["train.options"])["seed"]')" "7"
	# a --crop that the run's scales do not fit: the message says whose they are
	run --separate-stderr train -d "$D/train.db" -o more --resume more/last.safetensors --crop 14 -q
	assert_status 2
	assert_equal "$stderr" "mp-train: --scale-min 12 and --scale-max 16: need crop 14 <= min <= max (from more/last.safetensors)"
}

@test "a resume whose log is gone says so, and the log starts again; a branch's new log is no gap" {
	train "${OPTS[@]}" --epochs 2 -q -o out --max-steps 5
	rm out/train.log
	run --separate-stderr train -d "$D/train.db" -o out --resume out/last.safetensors -q
	assert_status 0
	assert_equal "$stderr" "mp-train: warning: out/train.log was missing or empty: it starts again here, without the rows of the run's first 5 steps"
	assert_equal "$(log_col out/train.log epoch epoch | tr '\n' ' ')" "1 2 "
	# resumed into another directory, a branch writes its own log
	run --separate-stderr train -d "$D/train.db" -o branch --resume out/checkpoint-0001.safetensors -q
	assert_status 0
	assert_equal "$stderr" ""
}

@test "a resumed run writes what the run did: its --eval-every, --checkpoint-every, --keep, --log-every and --log" {
	local writes=(--epochs 4 --eval-every 2 --checkpoint-every 2 --keep 1 --log-every 3)
	train "${OPTS[@]}" "${writes[@]}" -q -o whole
	train "${OPTS[@]}" "${writes[@]}" -q -o parts --max-steps 11 --log parts.tsv
	# resumed from another directory: the log given as a relative path goes on
	mkdir elsewhere
	run --separate-stderr bash -c 'cd elsewhere && "$0" -d "$1/train.db" -v "$1/val.db" -o ../parts \
		--resume ../parts/last.safetensors' "$MP_BIN/mp-train" "$D"
	assert_status 0
	assert_equal "$stderr" ""
	assert_contains "$output" "--eval-every 2 --checkpoint-every 2 --keep 1 --log-every 3"
	assert_contains "$output" "--log $PWD/parts.tsv"
	same_weights whole/weights.safetensors parts/weights.safetensors
	# the same rows (validation every second epoch, a row every 3 steps)
	assert_equal "$(grep -v '^end' parts.tsv | cut -f1-10)" "$(cut -f1-10 whole/train.log)"
	[[ ! -e parts/train.log && ! -e elsewhere/parts.tsv ]]
	# and the same checkpoints kept
	assert_equal "$(cd parts && ls checkpoint-*)" "$(cd whole && ls checkpoint-*)"
	# given, they are the option's, without a warning: the weights do not change
	train "${OPTS[@]}" "${writes[@]}" -q -o more --max-steps 11
	run --separate-stderr train -d "$D/train.db" -v "$D/val.db" -o more \
		--resume more/last.safetensors --eval-every 1 --keep 0 -q
	assert_status 0
	assert_equal "$stderr" ""
	same_weights whole/weights.safetensors more/weights.safetensors
	assert_equal "$(log_col more/train.log epoch val_loss | grep -c -v -e -)" 3
}

@test "a resume into another directory writes its own log: the run's --log stays the run's" {
	train "${OPTS[@]}" --epochs 2 -q -o a --log a.tsv
	train "${OPTS[@]}" --epochs 3 -q -o b
	local before
	before=$(cksum a.tsv)
	run --separate-stderr train -d "$D/train.db" -v "$D/val.db" --epochs 3 -o c \
		--resume a/checkpoint-0001.safetensors
	assert_status 0
	assert_not_contains "$output" " --log "
	assert_equal "$(log_col c/train.log epoch epoch | tr '\n' ' ')" "2 3 "
	# --force replaces b's run, not a's log
	run --separate-stderr train -d "$D/train.db" -v "$D/val.db" --epochs 3 -q -o b --force \
		--resume a/last.safetensors
	assert_status 0
	assert_equal "$stderr" ""
	assert_equal "$(log_col b/train.log epoch epoch)" 3
	assert_equal "$(cksum a.tsv)" "$before"
	[[ ! -e a.tsv.superseded ]]
}

@test "a --log inside OUT_DIR moves with the directory" {
	train "${OPTS[@]}" --epochs 2 -q -o whole
	train "${OPTS[@]}" --epochs 2 -q -o parts --max-steps 11 --log parts/train.log
	mv parts moved
	run --separate-stderr train -d "$D/train.db" -v "$D/val.db" -q -o moved \
		--resume moved/last.safetensors
	assert_status 0
	assert_equal "$stderr" ""
	same_weights whole/weights.safetensors moved/weights.safetensors
	assert_equal "$(grep -v '^end' moved/train.log | cut -f1-10)" "$(cut -f1-10 whole/train.log)"
}

@test "a resume whose run's --log cannot be opened says the path came from the checkpoint" {
	mkdir logs
	train "${OPTS[@]}" --epochs 2 -q -o out --max-steps 3 --log logs/out.tsv
	mv logs logs-old
	run --separate-stderr train -d "$D/train.db" -q -o out --resume out/last.safetensors
	assert_status 1
	assert_equal "$stderr" "mp-train: $PWD/logs/out.tsv: No such file or directory (the --log of out/last.safetensors's run; --log chooses another)"
	[[ ! -e logs ]]
	run --separate-stderr train -d "$D/train.db" -q -o out --resume out/last.safetensors \
		--log logs-old/out.tsv
	assert_status 0
	assert_equal "$(log_col logs-old/out.tsv epoch epoch | tr '\n' ' ')" "1 2 "
}

@test "a resume checks the schedule with the run's options, not the defaults of those not given" {
	# a warmup longer than the default 80 epochs, in a run of 100
	train -d "$D/train.db" "${NET[@]}" --batch 16 --lr-policy cosine --warmup 90 --epochs 100 \
		-q -o long --max-steps 2
	run --separate-stderr train -d "$D/train.db" -o long --resume long/last.safetensors \
		--lr-policy cosine --warmup 90 --max-steps 3 -q
	assert_status 0
	assert_equal "$stderr" ""
	# an --epochs given that the checkpoint's warmup does not fit is refused
	run --separate-stderr train -d "$D/train.db" -o long --resume long/last.safetensors \
		--epochs 50 --max-steps 4 -q
	assert_status 2
	assert_equal "$stderr" "mp-train: long/last.safetensors: the run's schedule with the options given: --warmup 90: the cosine decay needs a warmup shorter than --epochs 50"
	# a checkpoint that stores no training options: the options given and
	# the defaults are checked all the same
	"$PY" - "$MP_ROOT/scripts" long/last.safetensors old.safetensors <<'END'
import sys
sys.path.insert(0, sys.argv[1])
import mp_resnet
t, meta = mp_resnet.read_safetensors(sys.argv[2])
del meta["train.options"]
mp_resnet.write_safetensors(sys.argv[3], t, meta)
END
	run --separate-stderr train -d "$D/train.db" "${NET[@]}" --batch 16 -o long \
		--resume old.safetensors --lr-policy cosine --warmup 90 --max-steps 4 -q --force
	assert_status 2
	assert_equal "$stderr" "mp-train: old.safetensors: the run's schedule with the options given: --warmup 90: the cosine decay needs a warmup shorter than --epochs 80"
}

# edit_options IN [OUT KEY TEXT]...: writes each OUT, IN with its
# train.options TEXT (KEY empty) or with their KEY set to the JSON value
# TEXT; all in one Python, whose start (torch's import) is most of the time
edit_options() {
	"$PY" - "$MP_ROOT/scripts" "$@" <<'END'
import json, sys
sys.path.insert(0, sys.argv[1])
import mp_resnet
t, meta = mp_resnet.read_safetensors(sys.argv[2])
edits = sys.argv[3:]
for out, key, text in zip(edits[0::3], edits[1::3], edits[2::3]):
    if key:
        options = json.loads(meta["train.options"])
        options[key] = json.loads(text)
        text = json.dumps(options)
    mp_resnet.write_safetensors(out, t, dict(meta, **{"train.options": text}))
END
}

@test "a resume from a checkpoint whose training options cannot be read is refused, not run with the defaults" {
	train "${OPTS[@]}" --epochs 3 -q -o out --max-steps 3
	local texts=('{"batch": 16, "warmup": Infinity}' '[16, 3]' '')
	# a value the command line would refuse, named
	local keyed=('batch 1' 'lr_policy "linear"' 'backend "gpu"' 'precision 16' 'seed "-1"'
		'checkpoint_every 0' 'keep -1' 'log_every 0.5' 'log ""' 'log 7')
	local edits=() nth key value # not i: bats' run sets a global i
	for nth in "${!texts[@]}"; do
		edits+=("text-$nth.safetensors" "" "${texts[nth]}")
	done
	for nth in "${!keyed[@]}"; do
		read -r key value <<<"${keyed[nth]}"
		edits+=("key-$nth.safetensors" "$key" "$value")
	done
	edit_options out/last.safetensors "${edits[@]}"
	for nth in "${!texts[@]}"; do
		run --separate-stderr train -d "$D/train.db" -o out --resume text-$nth.safetensors -q --force
		assert_status 2
		assert_equal "$stderr" "mp-train: text-$nth.safetensors: metadata train.options is not a JSON object: not a checkpoint of mp-train"
	done
	for nth in "${!keyed[@]}"; do
		read -r key value <<<"${keyed[nth]}"
		run --separate-stderr train -d "$D/train.db" -o out --resume key-$nth.safetensors -q --force
		assert_status 2
		assert_equal "$stderr" "mp-train: key-$nth.safetensors: metadata train.options has no valid $key: not a checkpoint of mp-train"
	done
}

# refused_values KEY... -- VALUE...: out/last.safetensors with each KEY
# set to each VALUE is refused as a resume, with exit 2 and a message
# naming the file, the key and the value.
refused_values() {
	local keys=() k v
	while [[ $1 != -- ]]; do
		keys+=("$1")
		shift
	done
	shift
	local values=("$@")
	# every variant written by one Python (its start, torch's import, is most of the time)
	"$PY" - "$MP_ROOT/scripts" out/last.safetensors "${#values[@]}" "${keys[@]}" "${values[@]}" <<'END'
import sys
sys.path.insert(0, sys.argv[1])
import mp_resnet
t, meta = mp_resnet.read_safetensors(sys.argv[2])
n = int(sys.argv[3])
keys, values = sys.argv[4:-n], sys.argv[-n:]
for k, key in enumerate(keys):
    for v, value in enumerate(values):
        mp_resnet.write_safetensors("bad-%d-%d.safetensors" % (k, v), t, dict(meta, **{key: value}))
END
	for k in "${!keys[@]}"; do
		for v in "${!values[@]}"; do
			run --separate-stderr train -d "$D/train.db" -o out --resume bad-$k-$v.safetensors -q --force
			assert_status 2
			assert_equal "$stderr" "mp-train: bad-$k-$v.safetensors: metadata ${keys[k]} is \"${values[v]}\""
		done
	done
}

@test "a resume from a checkpoint whose position is not a plain decimal number is refused, named" {
	train "${OPTS[@]}" --epochs 3 -q -o out --max-steps 3
	refused_values train.epoch train.batch train.step -- '+0' ' 0' '00' '0 ' '-0' '0x0' ''
}

@test "a resume from a checkpoint whose rate, time or sums are not numbers is refused, named" {
	train "${OPTS[@]}" --epochs 3 -q -o out --max-steps 3
	refused_values train.lr train.elapsed train.epoch_sums train.interval_sums -- \
		'x' '' 'nan' '-1' '1e999' ' 1' '0x1' '1,2,3,4' '1,2,3,4,5,6' '1,2,,4,5' '1,2,3,4,5,'
}

@test "resuming in the middle of an epoch is exact too, and so is any thread count" {
	train "${OPTS[@]}" --epochs 3 -q -o whole
	run train "${OPTS[@]}" --epochs 3 -o parts --max-steps 11
	assert_status 0
	assert_contains "$output" $'\nend at epoch 1.375/3: lr '
	assert_equal "$(readlink parts/last.safetensors)" checkpoint-0001-000003.safetensors
	train "${OPTS[@]}" --epochs 3 -q -o parts --resume parts/last.safetensors
	same_weights whole/weights.safetensors parts/weights.safetensors
	assert_equal "$(log_col parts/train.log epoch train_top1_err)" "$(log_col whole/train.log epoch train_top1_err)"
	train "${OPTS[@]}" --epochs 3 -q -o one --threads 1 --loader-threads 1
	train "${OPTS[@]}" --epochs 3 -q -o three --threads 3 --loader-threads 3
	same_weights whole/weights.safetensors one/weights.safetensors
	same_weights whole/weights.safetensors three/weights.safetensors
}

@test "after a resume between two step rows, the log's rows are those of a run that never stopped" {
	# step rows every 3 steps; stopped at step 10, in the middle of a row's steps
	train "${OPTS[@]}" --epochs 3 --log-every 3 -q -o whole
	train "${OPTS[@]}" --epochs 3 --log-every 3 -q -o parts --max-steps 10
	train "${OPTS[@]}" --epochs 3 --log-every 3 -q -o parts --resume parts/last.safetensors
	same_weights whole/weights.safetensors parts/weights.safetensors
	# every row but the end row of the stop, timings left out
	assert_equal "$(grep -v '^end' parts/train.log | cut -f1-10)" "$(cut -f1-10 whole/train.log)"
}

@test "a run resumed where its --max-steps ended has nothing left to train" {
	train "${OPTS[@]}" --epochs 3 -q -o out --max-steps 11
	cp out/weights.safetensors before.safetensors
	run train "${OPTS[@]}" --epochs 3 -o out --max-steps 11 --resume out/last.safetensors
	assert_status 0
	assert_contains "$output" "out/last.safetensors has done 11 steps, --max-steps 11: nothing to train"
	assert_equal "$(readlink out/last.safetensors)" checkpoint-0001-000003.safetensors
	assert_equal "$(log_col out/train.log end step)" 11
	same_weights before.safetensors out/weights.safetensors
	# a larger one goes on
	run train "${OPTS[@]}" --epochs 3 -q -o out --max-steps 13 --resume out/last.safetensors
	assert_status 0
	assert_equal "$(log_col out/train.log end step | tr '\n' ' ')" "11 13 "
}

@test "--resume of another run's checkpoint into a directory that holds a run is refused without --force" {
	train "${OPTS[@]}" --epochs 2 -q -o a
	train "${OPTS[@]}" --epochs 4 --seed 7 -q -o b
	before=$(cd b && cksum * | sort)
	run train "${OPTS[@]}" --epochs 3 -o b --resume a/last.safetensors
	assert_status 2
	assert_equal "$output" "mp-train: b already holds a run (train.log), and a/last.safetensors is not one of its checkpoints: resume in the checkpoint's directory, or replace this run with --force"
	assert_equal "$(cd b && cksum * | sort)" "$before"
	# an empty directory continues from it; --force replaces the run there
	run train "${OPTS[@]}" --epochs 3 -q -o c --resume a/last.safetensors
	assert_status 0
	run train "${OPTS[@]}" --epochs 3 -q -o b --force --resume a/last.safetensors
	assert_status 0
	assert_files b checkpoint-0003.safetensors last.safetensors train.log weights.safetensors
	assert_equal "$(log_col b/train.log epoch epoch)" 3
	same_weights c/weights.safetensors b/weights.safetensors
	# the checkpoint's own directory, named another way, is the same run
	(cd a && train -d "$D/train.db" -v "$D/val.db" "${NET[@]}" --batch 16 --lr 0.1 --schedule 3 \
		--epochs 3 -q -o . --resume last.safetensors)
	same_weights c/weights.safetensors a/weights.safetensors
}

@test "a resumed run takes the architecture from the checkpoint, or refuses a different one" {
	train "${OPTS[@]}" --epochs 1 -q -o out
	run train -d "$D/train.db" --batch 16 --lr 0.1 --epochs 2 -q -o out --resume out/last.safetensors \
		--scale-min 12 --scale-max 16
	assert_status 0
	assert_equal "$(json_get <(inspect --json out/weights.safetensors) 'd["metadata"]["depth"], d["metadata"]["widths"]')" "('1', '4,8')"
	run train "${OPTS[@]}" --depth 2 --epochs 3 -o out --resume out/last.safetensors
	assert_status 2
	assert_equal "$output" "mp-train: out/last.safetensors: the checkpoint's network has depth 1, the options say 2"
	run train "${OPTS[@]}" --epochs 3 -o out --resume out/weights.safetensors
	assert_status 2
	assert_contains "$output" "a weights file without momentum; --resume needs a checkpoint"
	# a different rate is allowed, with a warning
	run train "${OPTS[@]}" --epochs 3 --lr 0.05 -q -o out --resume out/last.safetensors
	assert_status 0
	assert_contains "$output" "warning: lr was 0.1 in out/last.safetensors, now 0.05"
}

@test "--resume compares only the network options given; --crop is the training size, not the network" {
	train "${OPTS[@]}" --epochs 1 -q -o out
	RES=(-d "$D/train.db" --batch 16 --lr 0.1 --schedule 3 --scale-min 12 --scale-max 16 --epochs 2 -q
		-o out --resume out/checkpoint-0001.safetensors)
	input_size() { json_get <(inspect --json out/weights.safetensors) 'd["metadata"]["input_size"]'; }
	# --crop alone, the checkpoint's: the rest of the network is the checkpoint's
	run train "${RES[@]}" --crop 12
	assert_status 0
	assert_equal "$output" ""
	assert_equal "$(input_size)" 12
	# --depth alone, the same: --widths and the stem are not compared with their defaults
	run train "${RES[@]}" --depth 1
	assert_status 0
	# (the first resume's rows after the checkpoint moved aside, as the second one redoes them)
	assert_contains "$output" "1 row after step 8, the checkpoint's, moved to out/train.log.superseded"
	# no --crop: the checkpoint's input size
	run train "${RES[@]}"
	assert_status 0
	assert_equal "$(input_size)" 12
	# one that differs is refused, naming both values
	run train "${RES[@]}" --depth 2
	assert_status 2
	assert_equal "$output" "mp-train: out/checkpoint-0001.safetensors: the checkpoint's network has depth 1, the options say 2"
	run train "${RES[@]}" --widths 4,16
	assert_status 2
	assert_equal "$output" "mp-train: out/checkpoint-0001.safetensors: the checkpoint's network has widths 4,8, the options say 4,16"
	run train "${RES[@]}" --stem-stride 2
	assert_status 2
	assert_equal "$output" "mp-train: out/checkpoint-0001.safetensors: the checkpoint's network has stem stride 1, the options say 2"
	# another crop trains the same network at another size, with a warning
	run train "${RES[@]}" --crop 10
	assert_status 0
	assert_contains "$output" "warning: crop was 12 in out/checkpoint-0001.safetensors, now 10"
	assert_equal "$(input_size)" 10
}

@test "a resume on other training data, or another backend's arithmetic, is named in a warning" {
	train "${OPTS[@]}" --epochs 2 -q -o out --max-steps 5
	RES=("${NET[@]}" --batch 16 --lr 0.1 --schedule 3 --epochs 2 -q -o out --resume out/last.safetensors)
	# the same records moved and packed in other macrobatches: the same run
	bw -q -r "$D" -c "$D/cats.txt" --size 16 --macrobatch 10 -o moved.db "$D/train.txt"
	run --separate-stderr train -d moved.db "${RES[@]}"
	assert_status 0
	assert_equal "$stderr" ""
	train "${OPTS[@]}" --epochs 2 -q -o whole
	run inspect --diff whole/weights.safetensors out/weights.safetensors
	assert_status 0
	# other records (and the mean given, so that it says nothing)
	head -n 96 "$D/train.txt" >other.txt
	bw -q -r "$D" -c "$D/cats.txt" --size 16 -o other.db other.txt
	mean=$(json_get <(inspect --json out/last.safetensors) 'd["metadata"]["mean"]')
	train "${OPTS[@]}" --mean "$mean" --epochs 2 -q -o o2 --max-steps 5
	run --separate-stderr train -d other.db --mean "$mean" "${RES[@]/out/o2}"
	assert_status 0
	assert_contains "$stderr" "mp-train: warning: train_data was \"128 records, crc32 "
	assert_contains "$stderr" "in o2/last.safetensors, now \"96 records, crc32 "
	assert_contains "$stderr" "the run will differ from an uninterrupted one"
	# the same records under other class names: the weights take the new
	# names, and a warning names the first that differs
	awk '$2 == 2 { $1 = "renamed" } 1' "$D/cats.txt" >renamed.txt
	bw -q -r "$D" -c renamed.txt --size 16 -o renamed.db "$D/train.txt"
	run --separate-stderr train -d renamed.db "${RES[@]}"
	assert_status 0
	assert_contains "$stderr" "mp-train: warning: out/last.safetensors names class 2 \"$(awk '$2 == 2 { print $1 }' "$D/cats.txt")\", renamed.db \"renamed\": the weights will hold the training set's names"
	# the reference loops, or the fast backend without Winograd, round otherwise
	run --separate-stderr train -d "$D/train.db" "${RES[@]}" --backend cpu-ref
	assert_status 0
	assert_equal "$stderr" "mp-train: warning: compute was \"cpu, fp32\" in out/last.safetensors, now \"cpu-ref, fp32\": the run will differ from an uninterrupted one"
	run --separate-stderr env MP_CPU_WINOGRAD=0 "$MP_BIN/mp-train" -d "$D/train.db" "${RES[@]}"
	assert_status 0
	assert_equal "$stderr" "mp-train: warning: compute was \"cpu, fp32\" in out/last.safetensors, now \"cpu, no Winograd, fp32\": the run will differ from an uninterrupted one"
}

@test "a longer --epochs is a note under the step policy, a warning under cosine, whose rates it changes" {
	train "${OPTS[@]}" --epochs 1 -q -o out
	run --separate-stderr train "${OPTS[@]}" --epochs 2 -o out --resume out/checkpoint-0001.safetensors
	assert_status 0
	assert_equal "$stderr" "mp-train: note: epochs was 1, now 2"
	# nothing is wrong: -q leaves the note out, as it does the summaries
	run train "${OPTS[@]}" --epochs 3 -q -o out --resume out/checkpoint-0002.safetensors
	assert_status 0
	assert_equal "$output" ""
	train "${OPTS[@]}" --lr-policy cosine --epochs 1 -q -o cos
	run train "${OPTS[@]}" --lr-policy cosine --epochs 2 -q -o cos --resume cos/checkpoint-0001.safetensors
	assert_status 0
	assert_equal "$output" "mp-train: warning: epochs was 1 in cos/checkpoint-0001.safetensors, now 2: the run will differ from an uninterrupted one"
}

# A slower run for the signals to land in the middle of: 48 steps of the
# reference backend, about 2 s.
SLOW=(--backend cpu-ref --depth 2 --widths 8,16 --stem-stride 1 --crop 16 --scale-min 16 --scale-max 20
	--batch 8 --lr 0.05 --epochs 3 --log-every 1)

# wait_rows LOG N: until the log has N lines (at most 20 s).
wait_rows() {
	for _ in $(seq 400); do
		[[ -f $1 && $(wc -l <"$1") -ge $2 ]] && return 0
		sleep 0.05
	done
	fail "$1 never reached $2 lines"
}

@test "SIGTERM mid-epoch: a checkpoint, the resume command, exit 143; resuming ends where an uninterrupted run does" {
	train -d "$D/train.db" "${SLOW[@]}" -q -o whole
	"$MP_BIN/mp-train" -d "$D/train.db" "${SLOW[@]}" -o parts >out.txt 2>err.txt &
	pid=$!
	wait_rows parts/train.log 6
	kill -TERM $pid
	status=0
	wait $pid || status=$?
	assert_equal "$status" 143
	err=$(cat err.txt)
	assert_contains "$err" "mp-train: interrupted by SIGTERM after step"
	assert_contains "$err" "resume with:"
	cmd=$(tail -1 err.txt)
	assert_contains "$cmd" "--resume parts/checkpoint-0000-0000"
	run inspect --verify parts/last.safetensors
	assert_status 0
	eval "$cmd" -q
	same_weights whole/weights.safetensors parts/weights.safetensors
}

@test "the resume command drops --resume and --force in any spelling getopt takes, and keeps every value" {
	train -d "$D/train.db" "${SLOW[@]}" -q -o parts --max-steps 2
	# abbreviated, with =, a short cluster whose value follows, a value that looks like an option
	"$MP_BIN/mp-train" -d "$D/train.db" "${SLOW[@]}" -qo parts --res=parts/none --forc \
		--res parts/last.safetensors --log --force.log >out.txt 2>err.txt &
	pid=$!
	wait_rows ./--force.log 6
	kill -TERM $pid
	status=0
	wait $pid || status=$?
	assert_equal "$status" 143
	cmd=$(tail -1 err.txt)
	assert_equal "${cmd%% --resume *}" "  $MP_BIN/mp-train -d $D/train.db ${SLOW[*]} -qo parts --log --force.log"
	assert_contains "$cmd" " --resume parts/checkpoint-0000-0000"
	eval "$cmd"
	assert_equal "$(tail -n 1 ./--force.log | cut -f 1-3)" $'epoch\t3\t48'
}

@test "a resumed run removes the temporary files a killed run left, and only those" {
	train "${OPTS[@]}" --epochs 1 -q -o out
	sh -c 'exit 0' &
	dead=$!
	wait $dead
	touch "out/checkpoint-0001.safetensors.tmp-$dead" "out/weights.safetensors.tmp-$dead" \
		"out/weights.safetensors.tmp-$$" "out/mine.safetensors.tmp-$dead" \
		"out/.mp-train-probe-$dead"
	run --separate-stderr train "${OPTS[@]}" --epochs 2 -q -o out --resume out/last.safetensors
	assert_status 0
	assert_contains "$stderr" "mp-train: removed out/checkpoint-0001.safetensors.tmp-$dead, left by an interrupted run"
	assert_contains "$stderr" "mp-train: removed out/weights.safetensors.tmp-$dead, left by an interrupted run"
	# the probe of the directory, made and removed at the start
	assert_contains "$stderr" "mp-train: removed out/.mp-train-probe-$dead, left by an interrupted run"
	# a live process's file and a name that is not ours stay
	[[ -e "out/weights.safetensors.tmp-$$" && -e "out/mine.safetensors.tmp-$dead" ]]
	[[ ! -e "out/checkpoint-0001.safetensors.tmp-$dead" ]]
}

# killed SYSCALL N COMMAND...: COMMAND killed outright (SIGKILL) as it
# enters its Nth SYSCALL on a path that the array P names (strace -P
# options; empty: any path), an exact instant; its exit status must be 137
killed() {
	local inject=$1 n=$2
	shift 2
	local status=0
	no_leak_check strace -f -qq -o /dev/null "${P[@]}" -e trace="$inject" \
		-e inject="$inject":signal=KILL:when="$n" "$@" || status=$?
	assert_equal "$status" 137
}

@test "SIGKILL between a checkpoint and its link, or its removals: the resume is named, and --keep holds" {
	command -v strace >/dev/null || skip "strace is not installed"
	train "${OPTS[@]}" --epochs 2 --keep 1 -q -o whole
	# the first checkpoint is in place; last.safetensors does not name it yet
	P=()
	killed symlink 1 "$MP_BIN/mp-train" "${OPTS[@]}" --epochs 2 --keep 1 -q -o out
	assert_files out checkpoint-0001.safetensors train.log
	run --separate-stderr train "${OPTS[@]}" --epochs 2 --keep 1 -q -o out
	assert_status 2
	assert_equal "$stderr" "mp-train: out already holds a run (train.log): continue it with --resume out/checkpoint-0001.safetensors, or start over with --force"
	run --separate-stderr train "${OPTS[@]}" --epochs 2 --keep 1 -q -o out --resume out/last.safetensors
	assert_status 2
	assert_equal "$stderr" "mp-train: out/last.safetensors: No such file or directory; the newest checkpoint there is out/checkpoint-0001.safetensors: resume from it"
	# the last checkpoint is in place and linked; the one before is not removed yet
	P=(-P out/checkpoint-0001.safetensors)
	killed unlink 1 "$MP_BIN/mp-train" "${OPTS[@]}" -q -o out --resume out/checkpoint-0001.safetensors
	assert_files out checkpoint-0001.safetensors checkpoint-0002.safetensors last.safetensors train.log
	run --separate-stderr train "${OPTS[@]}" -q -o out --resume out/last.safetensors
	assert_status 0
	assert_equal "$stderr" ""
	assert_files out checkpoint-0002.safetensors last.safetensors train.log weights.safetensors
	cmp whole/weights.safetensors out/weights.safetensors
	assert_equal "$(cut -f1-10 out/train.log)" "$(cut -f1-10 whole/train.log)"
	# killed in its first epoch: a log, nothing to resume from
	mkdir first && head -n 1 whole/train.log >first/train.log
	run --separate-stderr train "${OPTS[@]}" -q -o first
	assert_status 2
	assert_equal "$stderr" "mp-train: first already holds a run (train.log) that has no checkpoint to resume from: start over with --force"
}

@test "a log whose last row a stopped machine cut short: a resume moves the half row aside, never appends to it" {
	train "${OPTS[@]}" --epochs 2 --log-every 3 -q -o whole
	train "${OPTS[@]}" --epochs 2 --log-every 3 -q -o out --max-steps 10
	# what stays of a row written as the power went: its first 20 bytes
	local rows half
	rows=$(head -n -1 out/train.log)
	half=$(tail -n 1 out/train.log | head -c 20)
	printf '%s\n%s' "$rows" "$half" >out/train.log
	run --separate-stderr train "${OPTS[@]}" -q -o out --resume out/last.safetensors
	assert_status 0
	assert_equal "$stderr" "mp-train: out/train.log: its last row is cut short (the machine stopped as it was written): moved to out/train.log.superseded"
	assert_equal "$(awk -F'\t' '{ print NF }' out/train.log | sort -u)" 12
	assert_equal "$(tail -n 1 out/train.log.superseded)" "$half"
	assert_equal "$(cut -f1-10 out/train.log)" "$(cut -f1-10 whole/train.log)"
}

@test "the log's rows reach the disk before the checkpoint that follows them" {
	command -v strace >/dev/null || skip "strace is not installed"
	no_leak_check strace -f -y -e trace=fsync,rename -o trace "$MP_BIN/mp-train" "${OPTS[@]}" \
		--epochs 1 -q -o out
	local log ckpt
	log=$(grep -n "^[0-9]* *fsync([0-9]*<$(realpath out/train.log)>)" trace | head -n 1 | cut -d: -f1)
	ckpt=$(grep -n 'rename(.*"out/checkpoint-0001.safetensors")' trace | head -n 1 | cut -d: -f1)
	[[ -n $log && -n $ckpt ]] || fail "no fsync of the log or no rename of the checkpoint in: $(cat trace)"
	assert_less "$log" "$ckpt"
}

@test "SIGINT exits 130 after writing a checkpoint; ignored on entry, it stays ignored" {
	# a background job of a script starts with SIGINT ignored: restore it
	"$PY" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
		"$MP_BIN/mp-train" -d "$D/train.db" "${SLOW[@]}" -q -o out 2>err.txt &
	pid=$!
	wait_rows out/train.log 3
	kill -INT $pid
	status=0
	wait $pid || status=$?
	assert_equal "$status" 130
	assert_contains "$(cat err.txt)" "interrupted by SIGINT"
	[[ -L out/last.safetensors ]]
	# as a plain background job it ignores SIGINT and finishes
	"$MP_BIN/mp-train" -d "$D/train.db" "${SLOW[@]}" --epochs 1 -q -o out2 &
	pid=$!
	wait_rows out2/train.log 3
	kill -INT $pid
	wait $pid
	[[ -f out2/weights.safetensors ]]
}

@test "a signal as the run starts, before its log, ends it with nothing written; a resume's checkpoint stays" {
	command -v strace >/dev/null || skip "strace is not installed"
	train "${OPTS[@]}" --epochs 1 -q -o whole
	# held for 2 s once it has made (or found) out_dir, before it reads
	# the data: the signal comes during the start
	started() {
		# env execs strace: $! is its pid, and mp-train its child
		env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq \
			-o /dev/null -e trace=mkdir,mkdirat -e inject=mkdir,mkdirat:delay_exit=2000000 \
			"$MP_BIN/mp-train" "$@" 2>err.txt &
		pid=$!
		while [[ ! -d out ]]; do sleep 0.02; done
		kill -TERM "$(pgrep -P $pid)"
		status=0
		wait $pid || status=$?
	}
	started "${OPTS[@]}" --epochs 1 -q -o out
	assert_status 143
	assert_equal "$(tail -n 1 err.txt)" "mp-train: interrupted by SIGTERM as the run started, before its log: nothing was written"
	[[ ! -e out ]] || fail "left: $(ls -A out)"
	# so the same command starts it again, without --force
	train "${OPTS[@]}" --epochs 1 -q -o part --max-steps 3
	started "${OPTS[@]}" --epochs 1 -q -o out --resume part/last.safetensors
	assert_status 143
	assert_equal "$(tail -n 1 err.txt)" "mp-train: interrupted by SIGTERM as the run started, before its log: nothing was written; the run is still at part/last.safetensors"
	[[ ! -e out ]] || fail "left: $(ls -A out)"
	run train "${OPTS[@]}" --epochs 1 -q -o out --resume part/last.safetensors
	assert_status 0
	same_weights whole/weights.safetensors out/weights.safetensors
}

@test "a signal while a FIFO log waits for its reader: the open goes on, and the run stops after its step" {
	train "${OPTS[@]}" --epochs 1 -q -o whole
	mkfifo log.fifo
	"$MP_BIN/mp-train" "${OPTS[@]}" --epochs 1 -q -o out --log log.fifo 2>err.txt &
	pid=$!
	while [[ ! -d out ]]; do sleep 0.05; done
	kill -TERM $pid
	cat log.fifo >log.txt
	status=0
	wait $pid || status=$?
	assert_status 143
	assert_contains "$(cat err.txt)" "interrupted by SIGTERM after step 1; checkpoint out/checkpoint-0000-000001.safetensors"
	assert_not_contains "$(cat err.txt)" "Interrupted system call"
	assert_equal "$(head -n 1 log.txt | cut -f 1-3)" "$(printf 'kind\tepoch\tstep')"
	run train "${OPTS[@]}" --epochs 1 -q -o out --log out.tsv --resume out/last.safetensors
	assert_status 0
	same_weights whole/weights.safetensors out/weights.safetensors
}

@test "a signal during validation stops at the epoch's end: no step of the next epoch; the resumed run validates it" {
	# a validation set large enough for the pass to take a second or so
	"$PY" "$MKIMAGES" classes vb 1600 20 20 4 seed=5 >vb.txt
	bw -q -c "$D/cats.txt" --size 16 -o vb.db vb.txt
	train -d "$D/train.db" "${SLOW[@]}" -q -o whole
	"$MP_BIN/mp-train" -d "$D/train.db" -v vb.db "${SLOW[@]}" -q -o parts 2>err.txt &
	pid=$!
	# header and 16 step rows: the first epoch's steps are done, its validation runs
	wait_rows parts/train.log 17
	kill -TERM $pid
	status=0
	wait $pid || status=$?
	assert_equal "$status" 143
	assert_contains "$(cat err.txt)" "interrupted by SIGTERM after step 16; checkpoint parts/checkpoint-0001.safetensors"
	assert_files parts checkpoint-0001.safetensors last.safetensors train.log
	assert_equal "$(log_col parts/train.log epoch val_top1_err)" "-"
	eval "$(tail -1 err.txt)" -q
	same_weights whole/weights.safetensors parts/weights.safetensors
	# the resumed run made the pass up: one row per epoch, each validated
	assert_equal "$(log_col parts/train.log epoch epoch | tr '\n' ' ')" "1 2 3 "
	assert_not_contains "$(log_col parts/train.log epoch val_top1_err)" "-"
}

# result_lines OUTPUT: the lines of an epoch's result and the final
# validation error, without the rate and the time.
result_lines() {
	grep -E '^(epoch |end at |final validation)' <<<"$1" | sed 's/; [0-9]* images\/s, [0-9]* s$//'
}

# same_as_whole OUTPUT WANT_OUTPUT_FILE DIR WHOLE_DIR: a resumed run's
# output and files as those of the run that never stopped, the final
# validation included.
same_as_whole() {
	assert_equal "$(result_lines "$1")" "$(result_lines "$(cat "$2")")"
	assert_contains "$1" "final validation error: "
	assert_equal "$(cut -f1-10 "$3/train.log")" "$(cut -f1-10 "$4/train.log")"
	same_weights "$4/weights.safetensors" "$3/weights.safetensors"
}

@test "--log - into a pipe whose reader went away stops with a checkpoint, as SIGPIPE does" {
	train "${OPTS[@]}" --epochs 1 -o whole -q
	# the header is the first write: no row reaches the pipe, and none is
	# attempted after it
	run --separate-stderr closed_pipe "$MP_BIN/mp-train" "${OPTS[@]}" --epochs 1 -o parts -q \
		--log - --log-every 1
	assert_status 141
	assert_contains "$stderr" "interrupted by SIGPIPE (the reader of its output went away) after step 1; checkpoint parts/checkpoint-0000-000001.safetensors"
	# the same where SIGPIPE is ignored and the write fails with EPIPE
	run --separate-stderr closed_pipe bash -c 'trap "" PIPE; exec "$@"' _ "$MP_BIN/mp-train" \
		"${OPTS[@]}" --epochs 1 -o ignored -q --log - --log-every 1
	assert_status 141
	assert_contains "$stderr" "after step 1; checkpoint ignored/checkpoint-0000-000001.safetensors"
	run train "${OPTS[@]}" --epochs 1 -o parts -q --resume parts/last.safetensors
	assert_status 0
	same_weights whole/weights.safetensors parts/weights.safetensors
}

# With the whole training set in one batch, the first step ends an epoch;
# a signal before it (SIGPIPE, raised by the first line of output into a
# closed pipe) stops the run after that step, before its validation.
@test "a validation a signal left undone is made up by the resumed run, even with no epoch left" {
	ONE=("${OPTS[@]}" --batch 128)
	run train "${ONE[@]}" --epochs 2 -o whole
	assert_status 0
	want=$(result_lines "$output")
	run --separate-stderr closed_pipe "$MP_BIN/mp-train" "${ONE[@]}" --epochs 2 -o parts
	assert_status 141
	assert_contains "$stderr" "after step 1; checkpoint parts/checkpoint-0001.safetensors"
	assert_contains "$(inspect parts/checkpoint-0001.safetensors)" "train.validated: 0"
	assert_equal "$(log_col parts/train.log epoch val_top1_err)" "-"
	# a signal during the made-up validation: the checkpoint stays, and so does the log
	run --separate-stderr closed_pipe "$MP_BIN/mp-train" "${ONE[@]}" --epochs 2 -o parts \
		--resume parts/checkpoint-0001.safetensors
	assert_status 141
	assert_contains "$stderr" "after step 1; checkpoint parts/checkpoint-0001.safetensors"
	assert_contains "$(inspect parts/checkpoint-0001.safetensors)" "train.validated: 0"
	assert_equal "$(log_col parts/train.log epoch val_top1_err)" "-"
	# made up first, printed and logged as in the run that never stopped,
	# the epoch's row taking the place of the one without it
	run train "${ONE[@]}" --epochs 2 -o parts --resume parts/last.safetensors
	assert_status 0
	assert_contains "$output" "mp-train: parts/last.safetensors: a signal stopped its run before the validation of epoch 1: validating first"
	assert_equal "$(result_lines "$output")" "$want"
	assert_equal "$(cut -f1-10 parts/train.log)" "$(cut -f1-10 whole/train.log)"
	same_weights whole/weights.safetensors parts/weights.safetensors
	# the last epoch's: the run has nothing left to train, yet validates
	train "${ONE[@]}" --epochs 1 -o one >want.txt
	run closed_pipe "$MP_BIN/mp-train" "${ONE[@]}" --epochs 1 -o last
	assert_status 141
	run train "${ONE[@]}" --epochs 1 -o last --resume last/checkpoint-0001.safetensors
	assert_status 0
	assert_contains "$output" "has done 1 of 1 epochs: nothing to train"
	same_as_whole "$output" want.txt last one
	# and its checkpoint says so: a resume from it does not validate again
	assert_contains "$(inspect last/checkpoint-0001.safetensors)" "train.validated: 1"
	run train "${ONE[@]}" --epochs 1 -o last --resume last/last.safetensors
	assert_status 0
	assert_not_contains "$output" "validating first"
	# a checkpoint without the key, from an earlier version, counts as
	# validated (and one of format_version 1, without a header CRC, resumes)
	"$PY" - "$MP_ROOT/scripts" last/checkpoint-0001.safetensors old.safetensors <<-'EOF'
		import sys
		sys.path.insert(0, sys.argv[1])
		import mp_resnet
		t, meta = mp_resnet.read_safetensors(sys.argv[2])
		del meta["train.validated"], meta["header_crc32"]
		meta["format_version"] = "1"
		mp_resnet.write_safetensors(sys.argv[3], t, meta, checksums=False)
	EOF
	run train "${ONE[@]}" --epochs 1 -o old --resume old.safetensors
	assert_status 0
	assert_not_contains "$output" "val loss"
	assert_not_contains "$output" "final validation error"
	assert_equal "$(wc -l <old/train.log)" 1
}

@test "a signal in a --max-steps run's last step ends it as that run: its end row, then the validation made up" {
	train "${OPTS[@]}" --max-steps 1 -o whole >want.txt
	run --separate-stderr closed_pipe "$MP_BIN/mp-train" "${OPTS[@]}" --max-steps 1 -o parts
	assert_status 141
	assert_contains "$stderr" "after step 1; checkpoint parts/checkpoint-0000-000001.safetensors"
	assert_equal "$(log_col parts/train.log end step)" 1
	assert_equal "$(log_col parts/train.log end val_top1_err)" "-"
	run train "${OPTS[@]}" --max-steps 1 -o parts --resume parts/last.safetensors
	assert_status 0
	assert_contains "$output" "validating first"
	same_as_whole "$output" want.txt parts whole
}

@test "a directory another mp-train is running in is refused, even with --force or --resume" {
	"$MP_BIN/mp-train" -d "$D/train.db" "${SLOW[@]}" -q -o out 2>err.txt &
	pid=$!
	for _ in $(seq 200); do
		[[ -e out/checkpoint-0001.safetensors ]] && break
		sleep 0.1
	done
	busy="mp-train: out: another mp-train is running in it; wait for it to end (or stop it) before resuming or replacing its run"
	run train -d "$D/train.db" "${SLOW[@]}" -q -o out --force
	assert_status 1
	assert_equal "$output" "$busy"
	run train -d "$D/train.db" "${SLOW[@]}" -q -o out --resume out/checkpoint-0001.safetensors
	assert_status 1
	assert_equal "$output" "$busy"
	kill -TERM $pid
	wait $pid || true
	# the stopped run's files are whole: it resumes to the end
	run train -d "$D/train.db" "${SLOW[@]}" -q -o out --resume out/last.safetensors
	assert_status 0
	[[ -f out/weights.safetensors ]] || fail "no weights: $(ls out)"
	assert_equal "$(log_col out/train.log epoch epoch | tr '\n' ' ')" "1 2 3 "
}

@test "SIGHUP stops like SIGTERM, with a checkpoint and exit 129" {
	"$MP_BIN/mp-train" -d "$D/train.db" "${SLOW[@]}" -q -o out 2>err.txt &
	pid=$!
	wait_rows out/train.log 6
	kill -HUP $pid
	status=0
	wait $pid || status=$?
	assert_equal "$status" 129
	assert_contains "$(cat err.txt)" "mp-train: interrupted by SIGHUP after step"
	run inspect --verify out/last.safetensors
	assert_status 0
}

@test "a NaN loss stops with the step named, keeping the last good checkpoint" {
	run train "${OPTS[@]}" --epochs 3 --lr 1e9 --schedule none -o out
	assert_status 1
	assert_contains "$output" "mp-train: step "
	assert_contains "$output" "the loss is"
	assert_contains "$output" "stopping"
	[[ ! -e out/weights.safetensors ]]
	# with a good first epoch, the checkpoint survives a later blow-up
	train "${OPTS[@]}" --epochs 1 -q -o out2
	run train "${OPTS[@]}" --epochs 3 --lr 1e9 -o out2 --resume out2/checkpoint-0001.safetensors
	assert_status 1
	assert_contains "$output" "The last good checkpoint is out2/checkpoint-0001.safetensors"
	run inspect --verify out2/checkpoint-0001.safetensors
	assert_status 0
}

@test "resuming from an earlier checkpoint moves the log's later rows aside: the log reads as one run" {
	train "${OPTS[@]}" --epochs 3 --log-every 4 -q -o out
	cp out/train.log whole.log
	run --separate-stderr train "${OPTS[@]}" --epochs 3 --log-every 4 -q -o out \
		--resume out/checkpoint-0001.safetensors
	assert_status 0
	assert_equal "$stderr" "mp-train: out/train.log: 6 rows after step 8, the checkpoint's, moved to out/train.log.superseded
mp-train: out: 2 checkpoints after this one's step, up to checkpoint-0003.safetensors, from a run that went past it: each stays until this run writes its own in its place; last.safetensors names the resumed one"
	# the same rows as the uninterrupted run, timings aside
	assert_equal "$(cut -f1-10 out/train.log)" "$(cut -f1-10 whole.log)"
	assert_equal "$(cut -f1-10 out/train.log.superseded)" "$(
		head -1 whole.log | cut -f1-10; awk -F'\t' 'NR > 1 && $3 > 8' whole.log | cut -f1-10)"
	# a resume at the log's end moves nothing
	run --separate-stderr train "${OPTS[@]}" --epochs 4 --log-every 4 -q -o out \
		--resume out/last.safetensors
	assert_status 0
	[[ $stderr != *moved* ]]
	assert_equal "$(wc -l <out/train.log.superseded)" 7
	# --force starts over without them
	train "${OPTS[@]}" --epochs 1 -q -o out --force
	[[ ! -e out/train.log.superseded ]]
}

@test "a resume from an earlier checkpoint: last.safetensors names it, later ones are named, an --epochs it is past refused" {
	train "${OPTS[@]}" --epochs 3 -q -o out
	# nothing to train: the weights, and last.safetensors, are epoch 1's
	run --separate-stderr train "${OPTS[@]}" --epochs 1 -q -o out \
		--resume out/checkpoint-0001.safetensors
	assert_status 0
	assert_contains "$stderr" "mp-train: out: 2 checkpoints after this one's step, up to checkpoint-0003.safetensors, from a run that went past it"
	assert_equal "$(readlink out/last.safetensors)" checkpoint-0001.safetensors
	assert_contains "$(inspect out/weights.safetensors)" "train.epoch: 1"
	# a run cannot end before its checkpoint: its weights would say both
	run --separate-stderr train "${OPTS[@]}" --epochs 2 -q -o out \
		--resume out/checkpoint-0003.safetensors
	assert_status 2
	assert_equal "$stderr" "mp-train: --epochs 2: out/checkpoint-0003.safetensors has done 3 epochs already (step 24)"
	run --separate-stderr train "${OPTS[@]}" --epochs 3 -q -o out --max-steps 12 \
		--resume out/checkpoint-0001.safetensors
	assert_status 0
	run --separate-stderr train "${OPTS[@]}" --epochs 1 -q -o out \
		--resume out/checkpoint-0001-000004.safetensors
	assert_status 2
	assert_equal "$stderr" "mp-train: --epochs 1: out/checkpoint-0001-000004.safetensors is in epoch 2 already (batch 4, step 12)"
	# one of the later ones resumed: the log lacks the rows between
	run --separate-stderr train "${OPTS[@]}" --epochs 3 -q -o out \
		--resume out/checkpoint-0003.safetensors
	assert_status 0
	assert_contains "$stderr" "mp-train: out/train.log: its last epoch row is epoch 1, and the checkpoint has done 3: the rows between are not in it (see out/train.log.superseded)"
	assert_equal "$(readlink out/last.safetensors)" checkpoint-0003.safetensors
}

@test "a validation pass whose output is NaN stops the run, never scored as no error" {
	train "${OPTS[@]}" --epochs 1 -q -o out
	# one step at a huge rate: the weights stay finite and the training
	# loss too (batch statistics), but evaluation overflows
	run --separate-stderr train "${OPTS[@]}" --epochs 2 -o out --lr 1e6 --max-steps 9 \
		--resume out/checkpoint-0001.safetensors
	assert_status 1
	assert_contains "$stderr" "mp-train: validation after step 9: the loss is NaN on $D/val.db"
	assert_contains "$stderr" "The last good checkpoint is out/checkpoint-0001.safetensors"
	[[ ! -e out/checkpoint-0001-000001.safetensors ]]
	[[ $(log_col out/train.log epoch epoch | tail -1) == 1 ]]
}

@test "a full disk: a clear error, and earlier checkpoints stay intact" {
	train "${OPTS[@]}" --epochs 1 -q -o out
	cp out/checkpoint-0001.safetensors before.safetensors
	# files may not grow past 8 KiB (a checkpoint has 16); the signal that would kill us is ignored
	run bash -c 'trap "" XFSZ; ulimit -f 8; exec "$@"' _ "$MP_BIN/mp-train" "${OPTS[@]}" \
		--epochs 2 -q -o out --resume out/checkpoint-0001.safetensors
	assert_status 1
	assert_contains "$output" "out/checkpoint-0002.safetensors"
	assert_contains "$output" "File too large"
	cmp before.safetensors out/checkpoint-0001.safetensors
	assert_equal "$(ls out | grep -c tmp)" 0
	run train "${OPTS[@]}" --epochs 1 -q -o out3 --log /dev/full
	assert_status 1
	assert_equal "$output" "mp-train: /dev/full: No space left on device"
}

@test "a read-only output directory is refused before training" {
	mkdir ro
	if unshare -m true 2>/dev/null; then
		run unshare -m bash -c 'mount --bind -o ro ro ro && exec "$@"' _ "$MP_BIN/mp-train" \
			"${OPTS[@]}" --epochs 1 -o ro
		assert_status 1
		assert_equal "$output" "mp-train: ro: cannot write in the output directory: Read-only file system"
	else
		skip "no mount namespace here to make a read-only directory"
	fi
}

@test "an output directory holding a run is refused without --resume or --force" {
	train "${OPTS[@]}" --epochs 1 -q -o out
	run train "${OPTS[@]}" --epochs 1 -o out
	assert_status 2
	assert_equal "$output" "mp-train: out already holds a run (train.log): continue it with --resume out/last.safetensors, or start over with --force"
	run train "${OPTS[@]}" --epochs 2 -q --force -o out
	assert_status 0
	assert_equal "$(log_col out/train.log epoch epoch | tr '\n' ' ')" "1 2 "
	# a log of its own place is not overwritten either
	train "${OPTS[@]}" --epochs 1 -q -o out2 --log my.log
	run train "${OPTS[@]}" --epochs 1 -q -o out3 --log my.log
	assert_status 2
	assert_equal "$output" "mp-train: my.log holds a log already: continue its run with --resume, or start over with --force"
}

# snapshot DIR: each name with its checksum, or its target for a link.
snapshot() {
	local f
	(cd "$1" && for f in $(LC_ALL=C ls -A); do
		if [[ -L $f ]]; then
			echo "$f -> $(readlink "$f")"
		else
			echo "$f $(cksum <"$f")"
		fi
	done)
}

@test "a --force start that fails leaves the previous run as it was" {
	train "${OPTS[@]}" --epochs 2 -q -o out --log-every 4
	before=$(snapshot out)
	[[ -n $before ]]
	mkdir logdir
	cases=(
		"--log /nonexistent/x.log|mp-train: /nonexistent/x.log: No such file or directory"
		"--log logdir|mp-train: logdir: Is a directory"
		"--log /dev/full|mp-train: /dev/full: No space left on device"
		"-v $D/val3.db|mp-train: $D/val3.db: the validation set has 3 classes, the training set 4"
		"--precision bf16|mp-train: --precision bf16: the cpu backend computes in fp32 only (bf16 needs --backend cuda)"
	)
	for c in "${cases[@]}"; do
		IFS='|' read -r opts want <<<"$c"
		run train "${OPTS[@]}" --epochs 1 -q --force -o out $opts
		[[ $status -ne 0 ]] || fail "$opts: exit status 0"
		assert_equal "$output" "$want"
		assert_equal "$(snapshot out)" "$before"
	done
	# a --log that held rows is kept until the new run can start too
	printf 'old rows\n' >my.log
	run train "${OPTS[@]}" --epochs 1 -q --force -o out --log my.log --precision bf16
	assert_status 1
	assert_equal "$(cat my.log)" "old rows"
	assert_equal "$(snapshot out)" "$before"
	# and a start that works replaces them
	run train "${OPTS[@]}" --epochs 1 -q --force -o out
	assert_status 0
	assert_files out checkpoint-0001.safetensors last.safetensors train.log weights.safetensors
	assert_equal "$(log_col out/train.log epoch epoch)" "1"
	assert_equal "$(head -1 out/train.log | cut -f1)" "kind"
}

@test "bad options and unfit data exit 2 with one line" {
	cases=(
		"--batch x|mp-train: --batch: \"x\" is not a number from 2 to 65536"
		"--widths 4,,8|mp-train: --widths: \"4,,8\": entry 2 is not a whole number from 1 to 65536"
		"--widths 4,0x10|mp-train: --widths: \"4,0x10\": entry 2 is not a whole number from 1 to 65536"
		"--widths 4,8.5|mp-train: --widths: \"4,8.5\": entry 2 is not a whole number from 1 to 65536"
		"--shortcut C|mp-train: --shortcut: \"C\" is not one of A|B"
		"--lr-policy linear|mp-train: --lr-policy: \"linear\" is not one of step|cosine"
		"--schedule 70,40|mp-train: --schedule: schedule \"70,40\": epochs must increase"
		"--backend tpu|mp-train: --backend: \"tpu\" is not one of cpu|cpu-ref|cuda|auto"
		"--precision fp16|mp-train: --precision: \"fp16\" is not one of auto|fp32|bf16"
		"--mean 1,2|mp-train: --mean: \"1,2\" has 2 entries, expected 3"
		"--lr-policy cosine --warmup 1.5|mp-train: --warmup 1.5: the cosine decay needs a warmup shorter than --epochs 1"
		"--scale-min 8|mp-train: --scale-min 8 and --scale-max 16: need crop 12 <= min <= max"
		"-v $D/val3.db|mp-train: $D/val3.db: the validation set has 3 classes, the training set 4"
		"-d $D/val.stream|mp-train: $D/val.stream: the loader needs a dataset DB, not a stream"
		"--batch 4096|mp-train: $D/train.db: 128 records make no batch of 4096"
	)
	for c in "${cases[@]}"; do
		IFS='|' read -r opts want <<<"$c"
		run train "${OPTS[@]}" --epochs 1 -o out $opts
		assert_status 2
		assert_equal "$output" "$want"
	done
	# numbers only as they are written in decimal: strtod and strtol alone
	# would skip leading blanks and read "0x10" as 16
	for c in "--lr| 0.1|1e-12 to 1e+12" "--lr|0x10|1e-12 to 1e+12" "--epochs| 1|1 to 1000000"; do
		IFS='|' read -r opt v range <<<"$c"
		run train "${OPTS[@]}" -o out "$opt" "$v"
		assert_status 2
		assert_equal "$output" "mp-train: $opt: \"$v\" is not a number from $range"
	done
	run train "${OPTS[@]}" -o out --widths "4, 8"
	assert_status 2
	assert_equal "$output" 'mp-train: --widths: "4, 8": entry 2 is not a whole number from 1 to 65536'
	run train "${OPTS[@]}" -o out --schedule "1, 2"
	assert_status 2
	assert_contains "$output" 'entry 2 is not an epoch'
	# getopt's own messages name the program as ours do, whatever path ran it
	run train "${OPTS[@]}" -o out --bogus
	assert_status 2
	assert_equal "$(first_line "$output")" "mp-train: unrecognized option '--bogus'"
	run train -o out
	assert_status 2
	assert_contains "$(first_line "$output")" "mp-train: -d TRAIN_DB is required"
	mkdir w && "$MP_BIN/../tests/oracle/resnet_init" 1 4,8 A 4 1 w/x.safetensors
	run train -d w/x.safetensors -o out
	assert_status 2
	assert_contains "$output" "w/x.safetensors"
	[[ ! -e out/train.log ]]
}

@test "--classes takes the class counts a network can have, 2 to 65536" {
	for n in 1 65537; do
		run train "${OPTS[@]}" --epochs 1 -o out --classes $n
		assert_status 2
		assert_equal "$output" "mp-train: --classes: \"$n\" is not a number from 2 to 65536"
	done
	# in range, it is checked against the data
	run train "${OPTS[@]}" --epochs 1 -o out --classes 65536
	assert_status 2
	assert_equal "$output" "mp-train: $D/train.db: the dataset has 4 classes, --classes says 65536"
	run train "${OPTS[@]}" --epochs 1 --max-steps 1 -q -o out --classes 4
	assert_status 0
}

# lmdb_edit DB PYTHON: runs PYTHON with txn, a write transaction on DB, json
# and mp_dataset (whose meta_bytes gives a meta document its CRC).
lmdb_edit() {
	"$PY" -c '
import json, lmdb, sys
sys.path.insert(0, sys.argv[3])
import mp_dataset
env = lmdb.open(sys.argv[1], subdir=True, lock=False)
with env.begin(write=True) as txn:
    exec(sys.argv[2])
env.close()' "$1" "$2" "$MP_ROOT/scripts"
}

@test "bad data exits 1: a label out of range, a corrupt macrobatch, a damaged checkpoint" {
	# a meta that says 3 classes over labels 0..3
	cp -r "$D/train.db" lab.db
	lmdb_edit lab.db '
m = json.loads(txn.get(b"meta"))
m["classes"] = 3
m["class_names"] = m["class_names"][:3]
txn.put(b"meta", mp_dataset.meta_bytes(m))'
	run train "${OPTS[@]}" --epochs 1 -o out -d lab.db
	assert_status 1
	assert_equal "$output" "mp-train: lab.db: record 3 has label 3, outside 0..2"
	run train "${OPTS[@]}" --epochs 1 -o out -v lab.db
	assert_status 1
	assert_equal "$output" "mp-train: lab.db: record 3 has label 3, outside 0..2"
	cp -r "$D/train.db" crc.db
	lmdb_edit crc.db '
v = bytearray(txn.get(b"mb/00000000"))
v[len(v) // 2] ^= 0x01
txn.put(b"mb/00000000", bytes(v))'
	run train "${OPTS[@]}" --epochs 1 -o out -d crc.db
	assert_status 1
	assert_equal "$output" "mp-train: crc.db: macrobatch 0: macrobatch CRC mismatch (corrupt data)"
	[[ ! -e out/train.log ]]
	# a record whose CRC holds but which does not decode fails in the first
	# step: the log's header alone goes too, and the same command runs again
	"$MP_BIN/mp-batchwriter" -q -r "$D" -c "$D/cats.txt" --size 16 --encoding png \
		"$D/train.txt" >png.stream
	edit_frames png.stream idat.stream 'mb = f[1][1]; i = bytes(mb).index(b"IDAT"); mb[i + 8] ^= 0xff; fix(mb)'
	"$MP_BIN/mp-batchwriter" -q --input-stream -o idat.db <idat.stream
	run train "${OPTS[@]}" --epochs 1 -o new -d idat.db
	assert_status 1
	assert_contains "$output" "mp-train: idat.db: record 0 ("
	[[ ! -e new ]] || fail "left: $(ls -A new)"
	# a checkpoint cut short is bad data too; a missing one is a usage error
	train "${OPTS[@]}" --epochs 1 -q -o run1
	head -c 10000 run1/checkpoint-0001.safetensors >cut.safetensors
	run train "${OPTS[@]}" --epochs 2 -q -o run1 --resume cut.safetensors
	assert_status 1
	assert_contains "$output" "mp-train: cut.safetensors: "
	run train "${OPTS[@]}" --epochs 2 -q -o run1 --resume nothing.safetensors
	assert_status 2
	assert_equal "$output" "mp-train: nothing.safetensors: No such file or directory"
	# a damaged CRC key is damage, not a file without a CRC; so is a digit
	# of a meta document's mean
	"$PY" -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read())
i = b.index(b"\"header_crc32\"") + 12; b[i] ^= 1; open(sys.argv[2], "wb").write(b)' \
		run1/checkpoint-0001.safetensors key.safetensors
	run train "${OPTS[@]}" --epochs 2 -q -o run1 --resume key.safetensors
	assert_status 1
	assert_equal "$output" 'mp-train: key.safetensors: metadata "header_crc32" is missing or damaged: format_version 2 has it as the first key of __metadata__ (a file rewritten by other software: set format_version to 1 there, and leave out "crc32" if the tensors changed)'
	cp -r "$D/train.db" mean.db
	lmdb_edit mean.db '
v = bytearray(txn.get(b"meta"))
v[v.index(b"[", v.index(b"\"mean\"")) + 1] ^= 1
txn.put(b"meta", bytes(v))'
	run train "${OPTS[@]}" --epochs 1 -o out -d mean.db
	assert_status 1
	assert_contains "$output" "mp-train: mean.db: meta: CRC mismatch: the document is damaged"
}

@test "--precision: bf16 on a CPU backend exits 1 with the reason; fp32 and auto name the precision" {
	run train "${OPTS[@]}" --epochs 1 -o out --precision bf16
	assert_status 1
	assert_contains "$output" "mp-train: --precision bf16: the cpu backend computes in fp32 only (bf16 needs --backend cuda)"
	[[ ! -e out/weights.safetensors ]]
	run train "${OPTS[@]}" --epochs 1 -o out2 --backend cpu-ref --precision bf16
	assert_status 1
	assert_contains "$output" "the cpu-ref backend computes in fp32 only"
	for p in fp32 auto; do
		run train "${OPTS[@]}" --epochs 1 -o "out-$p" --precision "$p" --max-steps 1
		assert_status 0
		assert_contains "$(first_line "$output")" "mp-train: cpu, "
		assert_contains "$(first_line "$output")" ", fp32"
	done
}

@test "MP_CPU_WINOGRAD: 0 turns Winograd off and says so, anything but 0 or 1 exits 1 before training" {
	MP_CPU_WINOGRAD=0 run train "${OPTS[@]}" --epochs 1 -o off --max-steps 1
	assert_status 0
	assert_contains "$(first_line "$output")" "mp-train: cpu, "
	assert_contains "$(first_line "$output")" ", no Winograd, fp32"
	MP_CPU_WINOGRAD=1 run train "${OPTS[@]}" --epochs 1 -o on --max-steps 1
	assert_status 0
	assert_not_contains "$(first_line "$output")" "Winograd"
	MP_CPU_WINOGRAD=yes run train "${OPTS[@]}" --epochs 1 -o bad
	assert_status 1
	assert_contains "$output" "mp-train: MP_CPU_WINOGRAD=yes: expected 0 or 1"
	[[ ! -e bad/weights.safetensors ]]
	# empty is the default, as for every variable of the tools
	MP_CPU_WINOGRAD= run train "${OPTS[@]}" --epochs 1 -o empty --max-steps 1
	assert_status 0
	assert_not_contains "$(first_line "$output")" "Winograd"
}

@test "--backend cuda without a GPU exits 1 with a clear message; auto says it chose the CPU" {
	# a build without the CUDA backend refuses it the same way
	local version
	version=$("$MP_BIN/mp-train" --version)
	if [[ $version != *"cuda: no CUDA device"* && $version != *"CUDA backend not built"* ]]; then
		skip "a CUDA device is present (tests/gpu covers it)"
	fi
	run train "${OPTS[@]}" --epochs 1 -o out --backend cuda
	assert_status 1
	assert_contains "$output" "mp-train: --backend cuda: "
	run train "${OPTS[@]}" --epochs 1 -o out2 --backend auto --max-steps 1
	assert_status 0
	assert_contains "$(first_line "$output")" "mp-train: cpu, "
	# but not when a device was asked for by number
	run --separate-stderr train "${OPTS[@]}" --epochs 1 -o out3 --backend auto --device 0
	assert_status 1
	assert_contains "$stderr" "mp-train: --backend auto: --device 0: "
	[[ ! -e out3 ]]
	run --separate-stderr "$MP_BIN/mp-eval" -m out2/weights.safetensors --backend auto --device 1 "$D/val.db"
	assert_status 1
	assert_contains "$stderr" "mp-eval: --backend auto: --device 1: "
}

@test "--backend cuda where no NVIDIA driver is installed says so, not that the driver is too old" {
	local version
	version=$("$MP_BIN/mp-train" --version)
	if [[ $version != *"cuda: no CUDA device"* ]]; then
		skip "no CUDA backend in this build, or a CUDA device is present"
	fi
	if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
		skip "an NVIDIA driver library is installed"
	fi
	assert_contains "$version" "cuda: no CUDA device (no NVIDIA driver found)"
	run train "${OPTS[@]}" --epochs 1 -o out --backend cuda
	assert_status 1
	assert_contains "$output" "mp-train: --backend cuda: no CUDA device (no NVIDIA driver found)"
	assert_not_contains "$output" "insufficient"
}
