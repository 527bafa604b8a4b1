#!/usr/bin/env bats
# mp-eval's numbers against a reference written from mp-eval(1) alone
# (evalref.py: PIL, numpy and PyTorch): the resized pixels, every crop mode
# with and without --flip, both combinations, scales below and above the
# images' sizes, --topk and its ties, batch sizes and the three inputs, and
# the reference recipe's multiscale evaluation.

load helpers

ev() { "$MP_BIN/mp-eval" "$@"; }
REF="$BATS_TEST_DIRNAME/evalref.py"

# A tiny network trained for two epochs on 16x16 images of 6 classes (not
# yet good: about 65% top-1 error, so the probabilities are spread and the
# errors are neither 0 nor 1), and images to evaluate: 36 of six shapes from
# 7x7 to 50x31 and 400x20 (shrunk in two steps at the small scales), as a
# list; 18 of 16x16 as a list, a DB and a stream; 16 of 128x128 and 160x120
# for the multiscale recipe. The reference's numbers are computed once.
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	"$PY" "$MKIMAGES" classes tr 120 16 16 6 >train.txt
	"$MP_BIN/mp-batchwriter" -q --classes 6 --size 16 -o train.db train.txt
	"$MP_BIN/mp-train" -q -d train.db -o run --depth 1 --widths 4,8 --stem-stride 1 \
		--crop 12 --scale-min 12 --scale-max 16 --batch 16 --epochs 2 --seed 3 >/dev/null
	local i=0
	for wh in "16 16" "20 14" "9 23" "50 31" "7 7" "400 20"; do
		echo classes "v${wh/ /x}" 6 $wh 6 seed=$((11 + i))
		i=$((i + 1))
	done | "$PY" "$MKIMAGES" batch >val.txt
	"$PY" "$MKIMAGES" classes sq 18 16 16 6 seed=21 >sq.txt
	"$MP_BIN/mp-batchwriter" -q --classes 6 --size 16 --macrobatch 7 -o sq.db sq.txt
	"$MP_BIN/mp-batchwriter" -q --classes 6 --size 16 --macrobatch 7 sq.txt >sq.stream
	printf 'classes big 12 128 128 6 seed=31\nclasses wide 4 160 120 6 seed=32\n' |
		"$PY" "$MKIMAGES" batch >big.txt
	"$MP_BIN/mp-batchwriter" -q --classes 6 --size 128 -o big.db big.txt
	"$PY" - "$MP_ROOT/scripts" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import mp_resnet
def save(path, t, meta):
    meta["crc32"] = mp_resnet.data_crc32(t)
    mp_resnet.write_safetensors(path, t, meta)
t, meta = mp_resnet.read_safetensors("run/weights.safetensors")
# the recipe's crops of 112
save("net112.safetensors", dict(t), dict(meta, input_size="112"))
# the same logits for every image, with ties: 0 = 1, 2 = 4, 3 = 5
tie = dict(t)
tie["fc_bn.weight"] = np.zeros(6, np.float32)
tie["fc_bn.bias"] = np.array([0.5, 0.5, 0.3, 0.9, 0.3, 0.9], np.float32)
save("tie.safetensors", tie, dict(meta))
# ties that differ from image to image: class 1 is a copy of class 0, 5 of 4
for k in ("fc.weight", "fc_bn.weight", "fc_bn.bias", "fc_bn.running_mean", "fc_bn.running_var"):
    t[k][1], t[k][5] = t[k][0], t[k][4]
save("tie2.safetensors", t, dict(meta))
EOF
	"$PY" "$REF" runs <<-EOF
	ref/full -m run/weights.safetensors --list val.txt --scales 6,12,16,25 --flip --topk 3 --dump 36
	ref/center -m run/weights.safetensors --list val.txt --scales 12,25 --crops center --combine logit --dump 6
	ref/five -m run/weights.safetensors --list val.txt --scales 12,16,33 --crops 5 --flip --topk 2 --dump 6
	ref/ten -m run/weights.safetensors --list val.txt --scales 12,25 --crops 10 --combine logit --topk 1
	ref/tie -m tie.safetensors --list val.txt --scales 6,16 --flip
	ref/tie2 -m tie2.safetensors --list val.txt --scales 12,16 --crops 5 --combine logit --topk 4
	ref/sq -m run/weights.safetensors --db sq.db --scales 12,16,24 --crops 5 --flip
	ref/multi -m net112.safetensors --db big.db --scales 112,128,160,240
	ref/multi10 -m net112.safetensors --list big.txt --scales 112,128,160,240 --crops 10
	EOF
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work"
	D=$BATS_FILE_TMPDIR/data
}

# outputs DIR OPTIONS...: runs mp-eval in the data directory with every
# output into DIR/.
outputs() {
	local dir=$1
	shift
	mkdir -p "$dir"
	(cd "$D" && ev "$@" --json --probs "$OLDPWD/$dir/probs.tsv" \
		--submission "$OLDPWD/$dir/submission.txt" --per-class "$OLDPWD/$dir/per-class.tsv" \
		--confusion "$OLDPWD/$dir/confusion.tsv" >"$OLDPWD/$dir/result.json")
}

# same NAME DIR...: the outputs in each DIR against the reference's
# ref/NAME: the errors, the submission, --per-class and --confusion
# exactly, the probabilities within 1e-5.
same() {
	run "$PY" "$REF" check "$D/ref/$1" "${@:2}"
	assert_status 0
	assert_less "$output" 1e-5
}

@test "the resized views are the reference's pixels, every crop mode, below and above the images' sizes" {
	# every image resized, the crops of the first 6
	for v in "full 36 --scales 6,12,16,25 --flip" "center 6 --scales 12,25 --crops center" \
		"five 6 --scales 12,16,33 --crops 5 --flip"; do
		set -- $v
		(cd "$D" && ev -q -m run/weights.safetensors --list val.txt "${@:3}" \
			--dump-views "$OLDPWD/$1" --dump-count $2)
		run "$PY" - "$1" "$D/ref/$1/views" <<-'EOF'
		import os, sys
		import numpy as np
		from PIL import Image
		ours, ref = sys.argv[1], sys.argv[2]
		assert sorted(os.listdir(ours)) == sorted(os.listdir(ref)), "different views"
		bad = [f for f in os.listdir(ours)
		       if not np.array_equal(np.asarray(Image.open(os.path.join(ours, f))),
		                             np.asarray(Image.open(os.path.join(ref, f))))]
		print(len(os.listdir(ours)), sorted(bad)[:5])
		EOF
		assert_status 0
		assert_equal "$output" "$(ls "$D/ref/$1/views" | wc -l) []"
	done
}

@test "every crop mode, with and without --flip, both combinations: the reference's probabilities, errors and tables" {
	outputs full -m run/weights.safetensors --list val.txt --scales 6,12,16,25 --flip --topk 3
	same full full
	outputs center -m run/weights.safetensors --list val.txt --scales 12,25 --crops center --combine logit
	same center center
	outputs five -m run/weights.safetensors --list val.txt --scales 12,16,33 --crops 5 --flip --topk 2
	same five five
	outputs ten -m run/weights.safetensors --list val.txt --scales 12,25 --crops 10 --combine logit --topk 1
	same ten ten
	# the network is neither perfect nor hopeless on these
	assert_equal "$(json_get full/result.json '0 < d["combined"]["top1_err"] < 1 and 0 < d["combined"]["topk_err"] < 1')" True
}

@test "ties rank by class index: the submission, --per-class and --confusion are the reference's" {
	outputs tie -m tie.safetensors --list val.txt --scales 6,16 --flip
	same tie tie
	# every image: 3 and 5 first, then 0 and 1, then 2 and 4
	assert_equal "$(cut -d' ' -f2- tie/submission.txt | sort -u)" "3 5 0 1 2"
	outputs tie2 -m tie2.safetensors --list val.txt --scales 12,16 --crops 5 --combine logit --topk 4
	same tie2 tie2
	# each image's ties: 0 before 1, 4 before 5
	run awk '{ for (i = 2; i <= NF; i++) r[$i] = i; if ((1 in r) && r[1] < r[0] || (5 in r) && r[5] < r[4]) print; delete r }' \
		tie2/submission.txt
	assert_equal "$output" ""
}

@test "batches of 1, 7 and 64, the DB, a stream file, a stream on stdin and the list: the reference's results" {
	local opts=(-m run/weights.safetensors --scales 12,16,24 --crops 5 --flip)
	for b in 1 7 64; do
		outputs db$b "${opts[@]}" --batch $b sq.db
	done
	outputs file "${opts[@]}" --batch 7 sq.stream
	outputs stdin "${opts[@]}" --batch 7 - <"$D/sq.stream"
	outputs list "${opts[@]}" --batch 7 --list sq.txt
	same sq db1 db7 db64 file stdin list
}

@test "the reference recipe's multiscale evaluation: 112, 128, 160 and 240, the softmax outputs averaged" {
	outputs multi -m net112.safetensors --multiscale big.db
	same multi multi
	assert_equal "$(json_get multi/result.json '[s["size"] for s in d["scales"]], d["combine"], d["views_per_scale"]')" \
		"([112, 128, 160, 240], 'prob', 1)"
	outputs multi10 -m net112.safetensors --multiscale --crops 10 --list big.txt
	same multi10 multi10
}

@test "an error is the misses over the images, rounded once: 1 of 5 is 0.2 in --json, not 1 - 4/5" {
	cd "$D"
	# labels from a first run's ranking: four images get their best class,
	# the fifth the class it ranks last of the six
	head -n 5 sq.txt | cut -d' ' -f1 >five.txt
	ev -q -m run/weights.safetensors --list five.txt --scales 16 --crops center \
		--submission "$OLDPWD/sub.txt"
	awk 'NR < 5 { print $1, $2; next } {
		for (c = 0; c < 6; c++) ranked[c] = 0
		for (i = 2; i <= 6; i++) ranked[$i] = 1
		for (c = 0; c < 6; c++) if (!ranked[c]) print $1, c }' "$OLDPWD/sub.txt" >"$OLDPWD/five-labelled.txt"
	ev -q -m run/weights.safetensors --list "$OLDPWD/five-labelled.txt" --scales 16 \
		--crops center --json >"$OLDPWD/five.json"
	assert_equal "$(json_get "$OLDPWD/five.json" 'd["combined"]["top1_err"], d["combined"]["topk_err"], d["scales"][0]["top1_err"]')" \
		"(0.2, 0.2, 0.2)"
	assert_not_contains "$(cat "$OLDPWD/five.json")" "0.19999"
}
