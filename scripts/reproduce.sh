#!/bin/bash
# reproduce.sh: the whole Mini-Places2 recipe on the real dataset.
#
# usage: reproduce.sh MINIPLACES_DIR [WORKDIR] [mp-train options...]
#
# MINIPLACES_DIR is the development kit: images/ (or data/images/, where
# the kit's data.tar.gz was unpacked into data/) and the lists train.txt,
# val.txt and categories.txt (beside images/, in data/ or in
# development_kit/data/). The list paths are relative to images/. The kit
# has no test.txt: without one, the test list is made from the JPEG and PNG
# files under images/test/, sorted (test/00000001.jpg ...). WORKDIR (default build/reproduce)
# receives train.db, val.db, test.db, the run (run/: checkpoints, weights,
# train.log, train.png) and, once mp-eval is built, the evaluation and the
# submission file.
#
# Run it again after a stop: packed DBs are kept (after a check),
# training resumes from run/last.safetensors (or, where a kill came before
# the first checkpoint was linked, the newest checkpoint), and evaluations newer than
# the weights and their DB are kept. Options after WORKDIR go to
# mp-train (for a trial: --epochs 1 --max-steps 20), but for those set
# here (-d, -v, -o, --log, --resume, --force: refused in any spelling);
# when the second argument is an option, WORKDIR is the default (a
# WORKDIR whose name starts with "-" is given as ./-NAME).
#
# Environment: MP_BIN, the programs' directory (default: build/bin of this
# checkout; make reproduce gives that of its build, B=).
#
# Exit status: 0 done (or -h, --help), 1 a kit that is not complete or a
# step that failed, 2 bad usage.
set -euo pipefail

prog=reproduce.sh
usage_args="MINIPLACES_DIR [WORKDIR] [mp-train options...]"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${MP_BIN:-$here/build/bin}
step() { printf '\n== %s\n' "$*"; }

case ${1:-} in
-h | --help)
	cat <<EOF
usage: $prog MINIPLACES_DIR [WORKDIR] [mp-train options...]

The whole Mini-Places2 recipe on the development kit MINIPLACES_DIR
(images/ or data/images/; train.txt, val.txt, categories.txt beside
images/, in data/ or in development_kit/data/; test.txt there too, or else
made from images/test/): pack the three DBs, train (resuming a stopped run), plot the log,
evaluate at one scale and at four, and write a submission file (keeping
what an earlier run finished: DBs, training, evaluations), all into
WORKDIR (default build/reproduce; one whose name starts with - is
given as ./-NAME, else it is taken for an option). The options go to
mp-train; the data, the output, the log, --resume and --force are set
here. The programs are those of MP_BIN (default: build/bin of this
checkout).
EOF
	exit 0
	;;
--) shift ;;
-?*) usage "unknown option $1 (mp-train's options come after MINIPLACES_DIR)" ;;
esac
[ $# -ge 1 ] || usage
# a path that starts with "-" is given as ./-X, never taken for an option
kit=$(safe_path "$1")
shift
work=$here/build/reproduce
if [ $# -ge 1 ] && [[ $1 != -?* ]]; then
	work=$(safe_path "${1:-$work}")
	shift
fi
# what the recipe sets itself: its data, its run (a --log elsewhere would
# leave the plot without rows), and how it resumes or starts over
refuse_options "$prog sets the data, the output and the log itself, and resumes or starts over the run in WORKDIR/run" \
	"train val output resume force log" "$@"
for p in mp-batchwriter mp-train mp-inspect; do
	[ -x "$bin/$p" ] || die "$bin/$p is not built; run make first"
done

# The kit's image archive unpacks to images/; the GitHub kit keeps it, and
# its lists, in data/, and the course's tarballs put the lists in
# development_kit/data/ beside it.
images=$kit/images
[ -d "$images" ] || images=$kit/data/images
[ -d "$images" ] || die "$kit/images: no such directory, nor $kit/data/images (expected the development kit's layout)"
lists=
for d in "$kit" "$kit/data" "$kit/development_kit/data"; do
	[ -f "$d/train.txt" ] && { lists=$d; break; }
done
[ -n "$lists" ] || lists=$kit/data
for f in train.txt val.txt categories.txt; do
	[ -f "$lists/$f" ] || die "$kit: no $f (looked in $kit, $kit/data and $kit/development_kit/data)"
done
mkdir -p -- "$work"
# The kit ships no test list: the test images, by name, as the submission
# wants them (test/00000001.jpg ... in sorted order).
test_list=$lists/test.txt
if [ ! -f "$test_list" ]; then
	[ -d "$images/test" ] || die "$kit: no test.txt, and no $images/test to make one from"
	test_list=$work/test.txt
	# whole or not at all: no test.txt.tmp left by a failure or Ctrl-C
	trap 'rm -f "$test_list.tmp"' EXIT
	# the images only: no .DS_Store or Thumbs.db that a copy brought
	(cd "$images" && find test -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) |
		LC_ALL=C sort) >"$test_list.tmp"
	[ -s "$test_list.tmp" ] || die "$images/test: no images to make the test list from"
	mv "$test_list.tmp" "$test_list"
	trap - EXIT
	echo "$kit has no test.txt: $test_list lists the $(wc -l <"$test_list") images of $images/test"
fi
start=$(date +%s)

# pack NAME LIST: the DB from the list, unless a complete one is there already
pack() {
	local list=$2 db=$work/$1.db
	if [ -f "$db/data.mdb" ] && "$bin/mp-inspect" --json "$db" >/dev/null 2>&1; then
		echo "$db exists; kept (remove it to pack again)"
		return
	fi
	"$bin/mp-batchwriter" -f -r "$images" -c "$lists/categories.txt" -o "$db" "$list"
}

step "pack train, val and test (128x128, as stored)"
pack train "$lists/train.txt"
pack val "$lists/val.txt"
pack test "$test_list"

step "train (the reference recipe${*:+; options: $*})"
run=$work/run
resume=()
# newest_checkpoint: the run's checkpoint at the latest position
# (checkpoint-EEEE[-BBBBBB].safetensors, BBBBBB steps into epoch EEEE+1)
newest_checkpoint() {
	local c k
	for c in "$run"/checkpoint-*.safetensors; do
		[ -f "$c" ] || continue
		k=${c##*/checkpoint-}
		k=${k%.safetensors}
		[[ $k == *-* ]] || k=$k-0
		printf '%s %s\n' "$k" "$c"
	done | LC_ALL=C sort -t- -k1,1n -k2,2n | tail -n 1 | cut -d' ' -f2-
}
from=
if [ -e "$run/last.safetensors" ]; then
	from=$run/last.safetensors
else
	# a run killed between its first checkpoint and the link to it: a
	# start over (--force) would throw the checkpoint away
	from=$(newest_checkpoint)
fi
if [ -n "$from" ]; then
	if [ -f "$run/weights.safetensors" ] && [ ! "$from" -nt "$run/weights.safetensors" ]; then
		echo "$run/weights.safetensors exists: training is done (remove $run to train again)"
	else
		[ "$from" = "$run/last.safetensors" ] ||
			echo "$run/last.safetensors is missing: resuming from the newest checkpoint, $from"
		resume=(--resume "$from")
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
else
	echo "plot: none, gnuplot is not installed (Debian: apt-get install gnuplot-nox)"
fi

# done_with OUT DB: whether OUT, written whole by an earlier run, is newer
# than the weights and the DB it came from (then it says it keeps OUT)
done_with() {
	[ -s "$1" ] && [ "$1" -nt "$run/weights.safetensors" ] && [ "$1" -nt "$2/data.mdb" ] || return 1
	echo "$1 is newer than the weights; kept (remove it to evaluate again)"
}

# eval_json OUT [mp-eval options...]: the JSON into OUT once it is whole;
# a failed evaluation (its message is mp-eval's) leaves an earlier OUT as
# it was and no OUT.tmp
eval_json() {
	local out=$1
	shift
	done_with "$out" "$work/val.db" && return
	if "$bin/mp-eval" -m "$run/weights.safetensors" -d "$work/val.db" --backend auto --json "$@" \
		>"$out.tmp"; then
		mv -f "$out.tmp" "$out"
	else
		rm -f "$out.tmp"
		exit 1
	fi
}

# errors FILE: the combined top-1 and top-k errors of mp-eval's JSON, in %
errors() {
	awk '/"combined":/ { on = 1 }
		on && /"top1_err":/ { gsub(/[^0-9.eE+-]/, "", $2); t1 = $2 }
		on && /"topk_err":/ { gsub(/[^0-9.eE+-]/, "", $2); tk = $2 }
		/"topk":/ { gsub(/[^0-9]/, "", $2); k = $2 }
		END { if (t1 != "" && tk != "") printf "top-1 %.2f%%, top-%d %.2f%%", 100 * t1, k, 100 * tk }' "$1"
}

step "evaluate"
if [ -x "$bin/mp-eval" ]; then
	eval_json "$work/eval-single.json"
	eval_json "$work/eval-multiscale.json" --multiscale
	# the figures the recipe is judged by (about 17.5% and 14.6% top-5)
	echo "validation error, single scale: $(errors "$work/eval-single.json")"
	echo "validation error, multiscale:   $(errors "$work/eval-multiscale.json")"
	done_with "$work/submission.txt" "$work/test.db" ||
		"$bin/mp-eval" -m "$run/weights.safetensors" -d "$work/test.db" --backend auto --multiscale \
			--submission "$work/submission.txt"
	echo "single scale: $work/eval-single.json; multiscale: $work/eval-multiscale.json"
	echo "submission: $work/submission.txt"
else
	echo "mp-eval is not part of this build yet: the validation error above is"
	echo "mp-train's single-scale figure; no multiscale figure or submission file"
fi

echo
echo "$prog finished in $(($(date +%s) - start)) s; results in $work"
