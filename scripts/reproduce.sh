#!/bin/bash
# reproduce.sh: the whole Mini-Places2 recipe on the real dataset.
#
# usage: reproduce.sh MINIPLACES_DIR [WORKDIR] [mp-train options...]
#
# MINIPLACES_DIR is the development kit: images/ and the lists train.txt,
# val.txt, test.txt and categories.txt (beside images/ or in data/). The
# list paths are relative to images/. WORKDIR (default build/reproduce)
# receives train.db, val.db, test.db, the run (run/: checkpoints, weights,
# train.log, train.png) and, once mp-eval is built, the evaluation and the
# submission file.
#
# Run it again after a stop: packed DBs are kept (after a check) and
# training resumes from run/last.safetensors. Options after WORKDIR go to
# mp-train (for a trial: --epochs 1 --max-steps 20); when the second
# argument is an option, WORKDIR is the default.
#
# Exit status: 0 done (or -h, --help), 1 a kit that is not complete or a
# step that failed, 2 bad usage.
set -euo pipefail

prog=reproduce.sh
usage_args="MINIPLACES_DIR [WORKDIR] [mp-train options...]"
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/build/bin
step() { printf '\n== %s\n' "$*"; }

case ${1:-} in
-h | --help)
	cat <<EOF
usage: $prog MINIPLACES_DIR [WORKDIR] [mp-train options...]

The whole Mini-Places2 recipe on the development kit MINIPLACES_DIR
(images/ and train.txt, val.txt, test.txt, categories.txt beside it or in
data/): pack the three DBs, train (resuming a stopped run), plot the log,
evaluate at one scale and at four, and write a submission file, all into
WORKDIR (default build/reproduce). The options go to mp-train.
EOF
	exit 0
	;;
--) shift ;;
-?*) usage "unknown option $1 (mp-train's options come after MINIPLACES_DIR)" ;;
esac
[ $# -ge 1 ] || usage
kit=$1
shift
work=$here/build/reproduce
if [ $# -ge 1 ] && [[ $1 != -?* ]]; then
	work=${1:-$work}
	shift
fi
for p in mp-batchwriter mp-train mp-inspect; do
	[ -x "$bin/$p" ] || die "$bin/$p is not built; run make first"
done

[ -d "$kit/images" ] || die "$kit/images: no such directory (expected the development kit's layout)"
lists=$kit
[ -f "$kit/train.txt" ] || lists=$kit/data
for f in train.txt val.txt test.txt categories.txt; do
	[ -f "$lists/$f" ] || die "$kit: no $f (looked in $kit and $kit/data)"
done
mkdir -p "$work"
start=$(date +%s)

# pack NAME: the DB from the list, unless a complete one is there already
pack() {
	local name=$1 db=$work/$1.db
	if [ -f "$db/data.mdb" ] && "$bin/mp-inspect" --json "$db" >/dev/null 2>&1; then
		echo "$db exists; kept (remove it to pack again)"
		return
	fi
	"$bin/mp-batchwriter" -f -r "$kit/images" -c "$lists/categories.txt" -o "$db" \
		"$lists/$name.txt"
}

step "pack train, val and test (128x128, as stored)"
pack train
pack val
pack test

step "train (the reference recipe${*:+; options: $*})"
run=$work/run
resume=()
if [ -e "$run/last.safetensors" ]; then
	if [ -f "$run/weights.safetensors" ] && [ ! "$run/last.safetensors" -nt "$run/weights.safetensors" ]; then
		echo "$run/weights.safetensors exists: training is done (remove $run to train again)"
	else
		resume=(--resume "$run/last.safetensors")
	fi
fi
if [ ! -f "$run/weights.safetensors" ] || [ ${#resume[@]} -gt 0 ]; then
	# a log without any checkpoint: a start that stopped in its first epoch
	[ ${#resume[@]} -eq 0 ] && [ -e "$run/train.log" ] && resume=(--force)
	"$bin/mp-train" -d "$work/train.db" -v "$work/val.db" -o "$run" --backend auto \
		"${resume[@]}" "$@"
fi
if command -v gnuplot >/dev/null; then
	# plot-log prints the file's name too
	"$here/scripts/plot-log" "$run/train.log" "$run/train.png" >/dev/null &&
		echo "plot: $run/train.png" || echo "$prog: warning: no plot of the log" >&2
fi

step "evaluate"
if [ -x "$bin/mp-eval" ]; then
	"$bin/mp-eval" -m "$run/weights.safetensors" -d "$work/val.db" --json \
		>"$work/eval-single.json"
	"$bin/mp-eval" -m "$run/weights.safetensors" -d "$work/val.db" --multiscale --json \
		>"$work/eval-multiscale.json"
	"$bin/mp-eval" -m "$run/weights.safetensors" -d "$work/test.db" --multiscale \
		--submission "$work/submission.txt"
	echo "single scale: $work/eval-single.json; multiscale: $work/eval-multiscale.json"
	echo "submission: $work/submission.txt"
else
	echo "mp-eval is not part of this build yet: the validation error above is"
	echo "mp-train's single-scale figure; no multiscale figure or submission file"
fi

echo
echo "$prog finished in $(($(date +%s) - start)) s; results in $work"
