#!/bin/bash
# demo.sh: the toolkit end to end on a real image set that Debian ships.
# Fashion-MNIST (dataset-fashion-mnist) becomes a Mini-Places-style tree of
# PNG files and list files; mp-batchwriter packs train and val (val through
# a stream pipe), mp-inspect summarises, verifies and exports a record;
# mp-train trains a small ResNet on the CPU and reports the validation
# error; the log becomes a plot; mp-eval evaluates at one and at three
# scales and writes a submission file for the unlabelled test set.
#
# usage: demo.sh [WORKDIR]   (default build/demo; DEMO_EPOCHS, default 2)
# MP_BIN and MP_SCRIPTS name the programs' and the helper programs'
# directories (default: build/bin and build/scripts of this checkout; make
# demo gives those of its build, B=).
set -euo pipefail

prog=demo.sh
usage_args="[WORKDIR]"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

case ${1:-} in
-h | --help)
	cat <<EOF
usage: $prog [WORKDIR]

The toolkit end to end on Fashion-MNIST (Debian's dataset-fashion-mnist):
convert it to PNG files and lists, pack, inspect, train a small ResNet on
the CPU for DEMO_EPOCHS epochs (default 2), plot the log, evaluate, write
a submission file. WORKDIR defaults to build/demo. The programs are those
of MP_BIN and MP_SCRIPTS (default: build/bin and build/scripts of this
checkout).
EOF
	exit 0
	;;
--) shift ;;
-?*) usage "unknown option $1" ;;
esac
[ $# -le 1 ] || usage "one WORKDIR only, not \"$1\" and \"$2\""
# checked here, not by mp-train after minutes of converting and packing
EPOCHS=${DEMO_EPOCHS:-2}
number DEMO_EPOCHS "$EPOCHS" 1 1000000
EPOCHS=$((10#$EPOCHS))

here=$(cd "$(dirname "$0")/.." && pwd)
work=$(safe_path "${1:-$here/build/demo}")
bin=${MP_BIN:-$here/build/bin}
scripts=${MP_SCRIPTS:-$here/build/scripts}
for p in "$bin/mp-batchwriter" "$bin/mp-inspect" "$bin/mp-train" "$bin/mp-eval" \
	"$scripts/fmnist-convert"; do
	[ -x "$p" ] || die "$p is not built; run make first"
done
[ -d /usr/share/datasets/fashion-mnist ] ||
	die "Fashion-MNIST is missing; run make deps (as root)"
err=$(mkdir -p -- "$work" 2>&1) || die "$work: cannot create the directory (${err##*: })"

data=$work/fashion-mnist
start=$(date +%s.%N)
step() { printf '\n== %s\n' "$*"; }

step "convert Fashion-MNIST into PNG files and Mini-Places lists"
"$scripts/fmnist-convert" "$data"
head -3 "$data/train.txt"
head -3 "$data/categories.txt"

step "pack train: 60000 images brought to 32x32, stored as PNG"
"$bin/mp-batchwriter" -f -r "$data" -c "$data/categories.txt" --size 32 \
	--encoding png -o "$work/train.db" "$data/train.txt"

step "pack val through a pipe: stream on stdout, DB from the stream"
"$bin/mp-batchwriter" -q -r "$data" -c "$data/categories.txt" --size 32 \
	--encoding png "$data/val.txt" |
	"$bin/mp-batchwriter" -f --input-stream -o "$work/val.db"

step "pack the unlabelled test list, with a 2-pixel edge border"
"$bin/mp-batchwriter" -f -r "$data" --size 32 --pad 2 --pad-fill edge \
	--encoding raw -o "$work/test.db" "$data/test.txt"

step "inspect train"
"$bin/mp-inspect" "$work/train.db"

step "verify val (every CRC, every image decoded)"
"$bin/mp-inspect" --verify "$work/val.db"

step "one record of test, exported as PNG"
"$bin/mp-inspect" --record 0 "$work/test.db"
"$bin/mp-inspect" --extract 0 -o "$work/test-0.png" "$work/test.db"
echo "wrote $work/test-0.png"

# A small ResNet for 28x28 garments: one block per stage, widths 16-32-64,
# a stride-1 stem, random 28-px crops of images scaled to 28..32 px, and a
# cosine schedule over 2 epochs, so that the whole demo takes a few minutes
# on 2 cores. DEMO_EPOCHS changes the number of epochs.
step "train a small ResNet on the CPU: $EPOCHS epochs of 60000 images, validation on 5000"
train_start=$(date +%s.%N)
"$bin/mp-train" -d "$work/train.db" -v "$work/val.db" -o "$work/run" --force \
	--depth 1 --widths 16,32,64 --stem-stride 1 --crop 28 --scale-min 28 --scale-max 32 \
	--batch 64 --lr 0.1 --lr-policy cosine --warmup 0.1 --epochs "$EPOCHS" --log-every 100
train_end=$(date +%s.%N)

step "the trained weights"
"$bin/mp-inspect" "$work/run/weights.safetensors"
if command -v gnuplot >/dev/null; then
	printf 'plot of the log: '
	"$here/scripts/plot-log" "$work/run/train.log" "$work/run/train.png"
else
	echo "plot of the log: none, gnuplot is not installed (Debian: apt-get install gnuplot-nox)"
fi
step "evaluate on val: the training scale, then 3 scales with mirror images"
"$bin/mp-eval" -m "$work/run/weights.safetensors" "$work/val.db"
"$bin/mp-eval" -m "$work/run/weights.safetensors" --scales 28,32,36 --flip \
	--per-class "$work/run/val-per-class.tsv" "$work/val.db"
cat "$work/run/val-per-class.tsv"

step "a submission file for the unlabelled test set (5 labels per image)"
"$bin/mp-eval" -q -m "$work/run/weights.safetensors" --submission "$work/run/submission.txt" \
	"$work/test.db"
head -3 "$work/run/submission.txt"

awk -F'\t' '$1 == "epoch" { e = $9; e5 = $10 } END {
	printf "\nvalidation error of the demo network: %.2f%% top-1, %.2f%% top-5\n", 100 * e, 100 * e5 }' \
	"$work/run/train.log"
awk -v a="$train_start" -v b="$train_end" 'BEGIN { printf "training took %.0f s\n", b - a }'

end=$(date +%s.%N)
awk -v a="$start" -v b="$end" -v w="$work" 'BEGIN { printf "\ndemo finished in %.1f s; datasets in %s\n", b - a, w }'
