#!/usr/bin/env bats
# The PyTorch peer of mp-train (scripts/torch-train.py and its DB reader
# scripts/mp_dataset.py), scripts/plot-log and scripts/peer-train.sh, on the
# small generated dataset of train.bats and its tiny network.

load helpers

TORCH=$MP_ROOT/scripts/torch-train.py
PLOT=$MP_ROOT/scripts/plot-log
PEER=$MP_ROOT/scripts/peer-train.sh

# Tiny networks run thousands of short parallel regions a second; on a busy
# machine spinning OpenMP threads wait a time slice for each. Both trainers
# use libgomp.
export OMP_WAIT_POLICY=PASSIVE

train() { "$MP_BIN/mp-train" "$@"; }
# One compute thread and no worker processes: the tiny network gains nothing
# from more, and the tests stay quick on a loaded machine.
torch_train() { "$PY" "$TORCH" --threads 1 --loader-threads 0 "$@"; }

# 128 training and 48 validation images of 4 learnable classes, 20x20
# brought to 16x16, as in train.bats; a raw and a JPEG copy of the
# validation set; one mp-train run the tests compare with.
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	class_data
	"$MP_BIN/mp-batchwriter" -q -c cats.txt --size 16 --encoding raw -o val-raw.db val.txt
	"$MP_BIN/mp-batchwriter" -q -c cats.txt --size 16 --encoding jpeg --quality 90 \
		--macrobatch 20 -o val-jpeg.db val.txt
	"$MP_BIN/mp-train" -d train.db -v val.db --depth 1 --widths 4,8 --stem-stride 1 \
		--crop 12 --scale-min 12 --scale-max 16 --batch 16 --lr 0.1 --schedule 3 \
		--epochs 2 --log-every 4 -q -o mp-run
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work"
	D=$BATS_FILE_TMPDIR/data
	NET=(--depth 1 --widths 4,8 --stem-stride 1 --crop 12 --scale-min 12 --scale-max 16)
	OPTS=(-d "$D/train.db" -v "$D/val.db" "${NET[@]}" --batch 16 --lr 0.1 --schedule 3)
}

# log_col LOG KIND COLUMN: the column's values in rows of one kind.
log_col() {
	awk -F'\t' -v kind="$2" -v col="$3" '
		NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
		$1 == kind { print $c }' "$1"
}

@test "torch-train.py learns the classes and writes mp-train's log format" {
	run torch_train "${OPTS[@]}" --epochs 2 --log-every 4 -o out
	assert_status 0
	assert_contains "$output" "epoch 1/2: lr 0.1, loss "
	assert_contains "$output" "epoch 2/2: "
	assert_contains "$output" "% top-5; val loss "
	assert_contains "$output" "final validation error: "
	assert_equal "$(head -1 out/train.log)" "$(head -1 "$D/mp-run/train.log")"
	# 16 steps: 4 step rows and 2 epoch rows, 12 fields each, as mp-train's
	assert_equal "$(log_col out/train.log step epoch | tr '\n' ' ')" "0.500 1.000 1.500 2.000 "
	assert_equal "$(cut -f1-3 out/train.log)" "$(cut -f1-3 "$D/mp-run/train.log")"
	assert_equal "$(awk -F'\t' '{ print NF }' out/train.log | sort -u)" 12
	assert_equal "$(log_col out/train.log step val_loss | sort -u)" "-"
	# the number formats of log_row: %.5f for losses and errors, %.1f for rates and times
	awk -F'\t' 'NR > 1 && !($5 ~ /^[0-9]+\.[0-9][0-9][0-9][0-9][0-9]$/ && $6 ~ /^[01]\.[0-9][0-9][0-9][0-9][0-9]$/ &&
		$11 ~ /^[0-9]+\.[0-9]$/ && $12 ~ /^[0-9]+\.[0-9]$/) { print "bad row " NR ": " $0; bad = 1 }
		END { exit bad }' out/train.log
	# chance is 0.75 top-1 error
	assert_less "$(log_col out/train.log epoch val_top1_err | tail -1)" 0.4
	assert_less "$(log_col out/train.log epoch loss | tail -1)" "$(log_col out/train.log epoch loss | head -1)"
}

@test "its weights pass mp-inspect --verify, load with mp_resnet.load and give the logged error" {
	torch_train "${OPTS[@]}" --epochs 2 -q -o out
	run inspect --verify out/weights.safetensors
	assert_status 0
	assert_contains "$output" "OK"
	run inspect --json out/weights.safetensors
	assert_equal "$(json_get - 'd["kind"], d["metadata"]["depth"], d["metadata"]["widths"], d["metadata"]["input_size"], d["metadata"]["train.step"]' <<<"$output")" \
		"('weights', '1', '4,8', '12', '16')"
	assert_equal "$(json_get <(inspect --json out/weights.safetensors) 'd["metadata"]["class_names"]')" \
		'["red","green","blue","yellow"]'
	want=$(log_col out/train.log epoch val_top1_err | tail -1)
	run "$PY" - "$MP_ROOT/scripts" out/weights.safetensors "$D/val.db" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from PIL import Image
import mp_dataset, mp_resnet
net, meta = mp_resnet.load(sys.argv[2])
mean = np.array([float(v) for v in meta["mean"].split(",")], np.float32)
size = int(meta["input_size"])
ds = mp_dataset.Dataset(sys.argv[3])
x = np.stack([(np.asarray(Image.fromarray(ds.image(i)).resize((size, size), Image.BICUBIC),
                          np.float32) - mean).transpose(2, 0, 1) for i in range(len(ds))])
with torch.no_grad():
    pred = net(torch.from_numpy(x)).argmax(1).numpy()
print("%.5f" % np.mean(pred != ds.labels))
EOF
	assert_status 0
	assert_equal "$output" "$want"
}

@test "mp_dataset.py reads the records mp-inspect --list and --extract show" {
	for db in val.db val-raw.db val-jpeg.db; do
		run "$PY" "$MP_ROOT/scripts/mp_dataset.py" list "$D/$db"
		assert_status 0
		assert_equal "$output" "$(inspect --list "$D/$db")"
		for i in 0 21 47; do
			"$PY" "$MP_ROOT/scripts/mp_dataset.py" extract "$D/$db" $i py.png
			inspect --extract $i -o c.png "$D/$db"
			assert_equal "$(mkimg compare py.png c.png)" "0 0.000"
		done
	done
	# the labels and names, through the module
	run "$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import mp_dataset
ds = mp_dataset.Dataset(sys.argv[2]); r = ds.record(5)
print(len(ds), ds.meta["classes"], r.name, r.label, r.width, r.height, ds.labels[:6].tolist())' \
		"$MP_ROOT/scripts" "$D/val-jpeg.db"
	assert_equal "$output" "48 4 va/cls0005.png 1 16 16 [0, 1, 2, 3, 0, 1]"
}

@test "mp_dataset.py and torch-train.py refuse a corrupt DB with one line naming it" {
	cp -r "$D/val.db" crc.db
	cp -r "$D/val.db" png.db
	# one flipped payload bit (the CRC catches it); a broken PNG under a right CRC
	run "$PY" - <<'EOF'
import lmdb, struct, zlib
for path, fix in (("crc.db", False), ("png.db", True)):
    env = lmdb.open(path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        mb = bytearray(txn.get(b"mb/00000000"))
        poff, plen = struct.unpack_from("<II", mb, 32 + 32 * 3 + 24)
        if fix:
            mb[poff + plen // 2:poff + plen // 2 + 40] = bytes(40)
            struct.pack_into("<I", mb, len(mb) - 4, zlib.crc32(bytes(mb[:-4])))
        else:
            mb[poff + 100] ^= 1
        txn.put(b"mb/00000000", bytes(mb))
    env.close()
EOF
	assert_status 0
	run "$PY" "$MP_ROOT/scripts/mp_dataset.py" list crc.db
	assert_status 1
	assert_contains "$output" "mp_dataset.py: crc.db: macrobatch 0: CRC mismatch (stored "
	run torch_train -d crc.db "${NET[@]}" --batch 16 --epochs 1 -o out
	assert_status 1
	assert_contains "$output" "torch-train.py: crc.db: macrobatch 0: CRC mismatch"
	run torch_train -d png.db "${NET[@]}" --batch 16 --epochs 1 -q -o out2
	assert_status 1
	assert_equal "$(wc -l <<<"$output")" 1
	assert_contains "$output" "torch-train.py: png.db: record 3 (va/cls0003.png): cannot decode the png payload"
	# a path that names no DB at all is the caller's mistake: exit 2, as
	# mp-train's; a damaged DB above is the data's: exit 1, as mp-train's
	run torch_train -d "$D/train.txt" -o out3
	assert_status 2
	assert_equal "$output" "torch-train.py: $D/train.txt: not a dataset DB (not a directory)"
	run train -d "$D/train.txt" -o out3
	assert_status 2
	mkdir nodb
	run torch_train -d nodb -o out3
	assert_status 2
	run train -d nodb -o out3
	assert_status 2
	run train -d crc.db "${NET[@]}" --batch 16 --epochs 1 -q -o out4
	assert_status 1
}

@test "bad options exit 2 with mp-train's one-line messages" {
	cases=(
		"--batch x|--batch: \"x\" is not a number from 2 to 65536"
		"--widths 4,,8|--widths: \"4,,8\": entry 2 is not a whole number from 1 to 65536"
		"--widths 4,0x10|--widths: \"4,0x10\": entry 2 is not a whole number from 1 to 65536"
		"--shortcut C|--shortcut: \"C\" is not one of A|B"
		"--lr-policy linear|--lr-policy: \"linear\" is not one of step|cosine"
		"--schedule 70,40|--schedule: schedule \"70,40\": epochs must increase"
		"--mean 1,2|--mean: \"1,2\" has 2 entries, expected 3"
		"--lr-policy cosine --warmup 1.5|--warmup 1.5: the cosine decay needs a warmup shorter than --epochs 1"
		"--scale-min 8|--scale-min 8 and --scale-max 16: need crop 12 <= min <= max"
		# only ASCII digits, no underscores, no empty value taken for the default
		"--schedule ²|--schedule: schedule \"²\": entry 1 is not an epoch from 1 to 1000000"
		"--schedule 5,|--schedule: schedule \"5,\": entry 2 is not an epoch from 1 to 1000000"
		"--batch ١٦|--batch: \"١٦\" is not a number from 2 to 65536"
		"--batch 1_6|--batch: \"1_6\" is not a number from 2 to 65536"
		"--lr 0_1|--lr: \"0_1\" is not a number from 1e-12 to 1e+12"
		"--lr inf|--lr: \"inf\" is not a number from 1e-12 to 1e+12"
		"--mean 1_0,2,3|--mean: \"1_0,2,3\": entry 1 is not a number from 0 to 255"
		"--threads=|--threads: \"\" is not a number from 1 to 1024"
		"--max-steps=|--max-steps: \"\" is not a number from 1 to 9223372036854775807"
		"--classes=|--classes: \"\" is not a number from 2 to 65536"
		"--seed -1|--seed: \"-1\" is not a number from 0 to 9223372036854775807"
	)
	for c in "${cases[@]}"; do
		IFS='|' read -r opts want <<<"$c"
		run train "${OPTS[@]}" --epochs 1 -o out $opts
		assert_status 2
		assert_equal "$output" "mp-train: $want"
		run torch_train "${OPTS[@]}" --epochs 1 -o out $opts
		assert_status 2
		assert_equal "$output" "torch-train.py: $want"
	done
	run torch_train -o out
	assert_status 2
	assert_equal "$(first_line "$output")" "torch-train.py: -d TRAIN_DB is required"
	[[ ! -e out ]]
	# both take a sign and an empty schedule (the options pass; the DB is
	# missing)
	for opt in --batch=+16 --lr=+.5e+1 --schedule=+5,7 --schedule=; do
		run train -d missing.db -o out --epochs 1 "$opt"
		assert_status 2
		assert_contains "$output" "mp-train: missing.db: "
		run torch_train -d missing.db -o out --epochs 1 "$opt"
		assert_status 2
		assert_equal "$output" "torch-train.py: missing.db: no such file or directory"
	done
	# and neither a hexadecimal float nor a leading blank, which strtod
	# and strtol alone would take
	for c in "--lr|0x1p-3|--lr: \"0x1p-3\" is not a number from 1e-12 to 1e+12" \
		"--batch| 16|--batch: \" 16\" is not a number from 2 to 65536" \
		"--schedule|5, 7|--schedule: schedule \"5, 7\": entry 2 is not an epoch from 1 to 1000000"; do
		IFS='|' read -r opt v want <<<"$c"
		run train -d missing.db -o out --epochs 1 "$opt" "$v"
		assert_status 2
		assert_equal "$output" "mp-train: $want"
		run torch_train -d missing.db -o out --epochs 1 "$opt" "$v"
		assert_status 2
		assert_equal "$output" "torch-train.py: $want"
	done
}

@test "the learning rate of every step is mp-train's: step drops, warmup, cosine" {
	for sched in "--schedule 1,2 --gamma 0.5" "--warmup 0.5 --schedule 2" \
		"--lr-policy cosine --warmup 0.5" "--lr-policy cosine"; do
		train -d "$D/train.db" "${NET[@]}" --batch 16 --epochs 3 --log-every 1 -q $sched -o "mp $sched"
		torch_train -d "$D/train.db" "${NET[@]}" --batch 16 --epochs 3 --log-every 1 -q $sched -o "pt $sched"
		assert_equal "$(cut -f1-4 "pt $sched/train.log")" "$(cut -f1-4 "mp $sched/train.log")"
	done
	# the milestones apply from the first step of their epoch, the warmup per step
	assert_equal "$(log_col "mp --warmup 0.5 --schedule 2/train.log" step lr | tr '\n' ' ')" \
		"0.025 0.05 0.075 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.01 0.01 0.01 0.01 0.01 0.01 0.01 0.01 "
}

@test "from the same initial weights, without resampling, it follows mp-train step for step" {
	# no resize (16x16 images, scale 16, crop 16): the same pixels, the same
	# batches, crops and flips; only the order of float sums differs. The
	# cosine rate changes every step, which tells neon's momentum form from
	# torch.optim.SGD's.
	"$MP_BIN/../tests/oracle/resnet_init" 1 4,8 A 4 1 init.safetensors
	same=(-d "$D/train.db" -v "$D/val.db" --depth 1 --widths 4,8 --stem-stride 1 --crop 16
		--scale-min 16 --scale-max 16 --batch 16 --epochs 2 --log-every 1 --lr-policy cosine -q)
	train "${same[@]}" -o mp
	torch_train "${same[@]}" --init init.safetensors -o pt
	paste <(cut -f1,5,8 mp/train.log) <(cut -f1,5,8 pt/train.log) | awk -F'\t' '
		NR > 1 { d = $2 - $5; if (d < 0) d = -d
			if (d > 2e-4) { print "row " NR ": loss " $2 " vs " $5; bad = 1 }
			if ($3 != "-" && ($3 - $6 > 2e-4 || $6 - $3 > 2e-4)) { print "row " NR ": val loss " $3 " vs " $6; bad = 1 } }
		END { exit bad }'
	run inspect --tol 1e-3 --diff mp/weights.safetensors pt/weights.safetensors
	assert_status 0
	assert_contains "$output" "SAME: every tensor within the tolerance"
}

@test "plot-log draws a PNG of an mp-train log, and of a log of step rows only" {
	run "$PLOT" "$D/mp-run/train.log" a.png
	assert_status 0
	assert_equal "$output" a.png
	[[ -s a.png ]]
	assert_equal "$(head -c 8 a.png | od -An -tx1 | tr -d ' \n')" 89504e470d0a1a0a
	assert_equal "$(mkimg info a.png | cut -d' ' -f1-2)" "1200 480"
	# the default name; "-" fields; no epoch rows
	awk -F'\t' '$1 != "epoch"' "$D/mp-run/train.log" >steps.log
	run "$PLOT" steps.log
	assert_status 0
	assert_equal "$output" steps.png
	assert_equal "$(head -c 4 steps.png | od -An -tx1 | tr -d ' \n')" 89504e47
	# standard output, into a pipe or a file: the image alone, no name after it
	"$PLOT" "$D/mp-run/train.log" /dev/stdout | cat >piped.png
	"$PLOT" "$D/mp-run/train.log" /dev/stdout >redirected.png
	cmp a.png piped.png
	cmp a.png redirected.png
}

@test "plot-log reads the log's numbers with a decimal point under a decimal-comma locale" {
	comma_locale
	LC_ALL=C "$PLOT" "$D/mp-run/train.log" c.png
	# under a comma, awk read "0.25" as 0: every error was drawn as 0
	run env LC_ALL=de_DE.UTF-8 "$PLOT" "$D/mp-run/train.log" de.png
	assert_status 0
	cmp c.png de.png
	run env -u LC_ALL LC_NUMERIC=de_DE.UTF-8 "$PLOT" "$D/mp-run/train.log" num.png
	assert_status 0
	cmp c.png num.png
}

@test "mp_dataset.py and torch-train.py write a name that is not UTF-8 back as it was under a UTF-8 locale" {
	comma_locale
	cp "$D/tr/cls0000.png" $'lat\xe9.png'
	printf 'lat\xe9.png 0\n' >lat.txt
	"$MP_BIN/mp-batchwriter" -q -c "$D/cats.txt" --size 16 -o lat.db lat.txt
	run env LC_ALL=de_DE.UTF-8 "$PY" "$MP_ROOT/scripts/mp_dataset.py" list lat.db
	assert_status 0
	assert_equal "${lines[1]}" "$("$MP_BIN/mp-inspect" --list lat.db | sed -n 2p)"
	# the last line it prints names the weights: a UnicodeEncodeError there
	# failed the run after the training
	mkdir $'o\xe9'
	run env LC_ALL=de_DE.UTF-8 "$PY" "$TORCH" --threads 1 --loader-threads 0 -d "$D/train.db" \
		"${NET[@]}" --batch 16 --max-steps 1 -o $'o\xe9/run'
	assert_status 0
	assert_contains "$output" $'weights: o\xe9/run/weights.safetensors'
}

@test "plot-log fails cleanly on a file that is not a training log" {
	run "$PLOT" "$D/train.txt" x.png
	assert_status 1
	assert_contains "$output" "plot-log: $D/train.txt: not a training log"
	[[ ! -e x.png ]]
	: >empty.log
	run "$PLOT" empty.log
	assert_status 1
	assert_equal "$output" "plot-log: empty.log: empty, not a training log"
	head -1 "$D/mp-run/train.log" >header.log
	printf 'epoch\t1\n' >>header.log
	run "$PLOT" header.log
	assert_status 1
	assert_contains "$output" "plot-log: header.log: line 2: not a row of a training log"
	run "$PLOT" missing.log
	assert_status 1
	assert_equal "$output" "plot-log: missing.log: no such file"
	# no gnuplot on PATH
	mkdir bin
	for t in bash head tr awk mktemp rm cp dirname; do ln -s "$(command -v $t)" bin/$t; done
	run env PATH="$PWD/bin" "$PLOT" "$D/mp-run/train.log" y.png
	assert_status 1
	assert_contains "$output" "plot-log: gnuplot is not installed"
}

@test "plot-log: -h prints the help, a bad option or a directory OUT exits 2" {
	run "$PLOT" -h
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: plot-log LOG [OUT.png]"
	run "$PLOT" --help
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: plot-log LOG [OUT.png]"
	run "$PLOT" -x "$D/mp-run/train.log"
	assert_status 2
	assert_equal "$output" "$(printf 'plot-log: unknown option -x\nusage: plot-log LOG [OUT.png]')"
	mkdir dir
	run "$PLOT" "$D/mp-run/train.log" dir
	assert_status 2
	assert_equal "$(first_line "$output")" "plot-log: dir: is a directory (OUT is the PNG file to write)"
	assert_files dir
	# a log named like an option, after --
	cp "$D/mp-run/train.log" ./-a.log
	run "$PLOT" -- -a.log
	assert_status 0
	assert_equal "$output" -a.png
	[[ -s ./-a.png ]]
	# OUT the log itself, or a link to it: refused, the log intact
	cp "$D/mp-run/train.log" log.tsv
	ln -s log.tsv link.png
	for out in log.tsv ./log.tsv link.png; do
		run "$PLOT" log.tsv "$out"
		assert_status 2
		assert_equal "$(first_line "$output")" "plot-log: $out: is the log itself (OUT is the PNG to write)"
	done
	cmp log.tsv "$D/mp-run/train.log"
	# a name is text in the title, never a command gnuplot runs
	name="a\`touch ran\`'q_\$(touch ran2)\"b.tsv"
	cp "$D/mp-run/train.log" "$name"
	run "$PLOT" "$name" t.png
	assert_status 0
	[[ -s t.png && ! -e ran && ! -e ran2 ]]
}

@test "peer-train.sh trains both and prints both errors, the difference and the speed ratio" {
	run "$PEER" "$D/train.db" "$D/val.db" peer "${NET[@]}" --batch 16 --epochs 2 \
		--loader-threads 1 -q
	assert_status 0
	assert_contains "$output" "mp-train      PyTorch"
	assert_contains "$output" "final val top-1 error"
	assert_contains "$output" "final val top-5 error"
	assert_contains "$output" "train images/s ($(nproc) threads)"
	row=$(grep "final val top-1 error" <<<"$output")
	assert_equal "$(awk '{ print NF }' <<<"$row")" 8
	[[ -f peer/mp-train/weights.safetensors && -f peer/torch/weights.safetensors ]]
	assert_equal "$(grep '^epochs' <<<"$output" | tr -s ' ')" "epochs 2 2"
	# images/s over the run: the epochs' rates weighted by their steps
	rate() {
		awk -F'\t' 'NR > 1 && $1 == "epoch" { s = $3 - last; last = $3; n += s; t += s / $11 }
			END { printf "%.1f", n / t }' "$1"
	}
	assert_equal "$(grep '^train images/s' <<<"$output" | awk '{ print $5, $6 }')" \
		"$(rate peer/mp-train/train.log) $(rate peer/torch/train.log)"
	# a run that fails makes it fail; mp-train's usage error is its own
	run "$PEER" "$D/train.db" "$D/val.db" peer2 "${NET[@]}" --batch 4096
	assert_status 2
	assert_contains "$output" "peer-train.sh: mp-train failed (exit 2)"
}

@test "peer-train.sh refuses the options it sets in every spelling, before running anything" {
	run --separate-stderr "$PEER" -h
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: peer-train.sh TRAIN_DB VAL_DB WORKDIR [mp-train options...]"
	run "$PEER" a b
	assert_status 2
	assert_equal "$output" "usage: peer-train.sh TRAIN_DB VAL_DB WORKDIR [mp-train options...]"
	for a in -d -v -o --train --val --output --out --outp=x --o -ox -qo -qVd -vx \
		--threads=2 --th --resume --res=x --log --log=x --lo; do
		run env PYTHON=/bin/false "$PEER" "$D/train.db" "$D/val.db" peer --epochs 1 "$a" x
		assert_status 2
		assert_contains "$output" "peer-train.sh: $a"
		assert_contains "$output" "sets the data, the output, the log and --threads itself"
		[[ ! -e peer ]]
	done
	run env PYTHON=/bin/false "$PEER" "$D/train.db" "$D/val.db" peer --outp=x
	assert_equal "$output" "peer-train.sh: --outp=x (--output): peer-train.sh sets the data, the output, the log and --threads itself, and starts both runs over"
	run env PYTHON=/bin/false "$PEER" "$D/train.db" "$D/val.db" peer -qo x
	assert_contains "$output" "peer-train.sh: -qo (-o): "
	# mp-train's exit 2 (a DB that is not there) is the script's, and the
	# PyTorch run does not start
	run "$PEER" missing.db "$D/val.db" peer --log-every 5
	assert_status 2
	assert_contains "$output" "peer-train.sh: mp-train failed (exit 2)"
	[[ ! -e peer/torch-train.out ]]
	# an option of mp-train's only: refused before mp-train runs, with
	# torch-train.py's reason
	run --separate-stderr "$PEER" "$D/train.db" "$D/val.db" peer2 --epochs 1 --keep 0
	assert_status 2
	assert_equal "$(first_line "$stderr")" "torch-train.py: unrecognized option '--keep'"
	assert_equal "$(tail -n 1 <<<"$stderr")" "peer-train.sh: torch-train.py refuses these options (use those the two share: torch-train.py --help)"
	[[ ! -e peer2/mp-train ]]
}

@test "peer-train.sh: a missing Python module stops it before mp-train runs; a WORKDIR that starts with a dash" {
	mkdir nomod
	echo 'raise ModuleNotFoundError("No module named torch", name="torch")' >nomod/torch.py
	printf '#!/bin/sh\nPYTHONPATH=%s exec %s "$@"\n' "$PWD/nomod" "$PY" >nomods
	chmod +x nomods
	run env PYTHON="$PWD/nomods" "$PEER" "$D/train.db" "$D/val.db" peer "${NET[@]}" --batch 16
	assert_status 1
	assert_equal "$output" "peer-train.sh: $PWD/nomods cannot import torch (Debian: python3-torch)"
	[[ ! -e peer ]]
	# each run's output in WORKDIR/NAME.out, a WORKDIR named -p too
	run "$PEER" "$D/train.db" "$D/val.db" -p "${NET[@]}" --batch 16 --epochs 1 --max-steps 2 -q
	assert_status 0
	assert_contains "$output" "final val top-1 error"
	[[ -f ./-p/mp-train/weights.safetensors && -f ./-p/torch/weights.safetensors ]]
	[[ -f ./-p/mp-train.out && -f ./-p/torch-train.out ]]
}
