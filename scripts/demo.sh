#!/bin/bash
# demo.sh: the toolkit end to end on a real image set that Debian ships.
# Fashion-MNIST (dataset-fashion-mnist) becomes a Mini-Places-style tree of
# PNG files and list files; mp-batchwriter packs train and val (val through
# a stream pipe), mp-inspect summarises, verifies and exports a record.
#
# usage: demo.sh [WORKDIR]   (default build/demo)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$here/build/demo}
bin=$here/build/bin
scripts=$here/build/scripts
for p in "$bin/mp-batchwriter" "$bin/mp-inspect" "$scripts/fmnist-convert"; do
	[ -x "$p" ] || { echo "demo.sh: $p is not built; run make first" >&2; exit 1; }
done
[ -d /usr/share/datasets/fashion-mnist ] ||
	{ echo "demo.sh: Fashion-MNIST is missing; run make deps (as root)" >&2; exit 1; }

mkdir -p "$work"
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

end=$(date +%s.%N)
awk -v a="$start" -v b="$end" -v w="$work" 'BEGIN { printf "\ndemo finished in %.1f s; datasets in %s\n", b - a, w }'
