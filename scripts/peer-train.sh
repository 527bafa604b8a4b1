#!/bin/bash
# peer-train.sh TRAIN_DB VAL_DB WORKDIR [mp-train options...]
#
# Trains the same network on the same data with the same options twice,
# with build/bin/mp-train (WORKDIR/mp-train) and with scripts/torch-train.py
# (WORKDIR/torch), one after the other and each with --threads equal to the
# cores, then prints a table from the two logs' last epoch rows: the final
# validation top-1/top-5 error of each and their difference in points, and
# the training images/s of each (the mean over the epochs) with the ratio
# ours / PyTorch.
#
# The options are passed to both programs as they are; use those the two
# share (see torch-train.py --help): torch-train.py checks them first
# (--check-options), so that one it refuses stops the script before
# mp-train's run, not after it. The data, the output and --threads are
# set here; those options, --resume and --log are refused in every
# spelling (abbreviated, -oX). WORKDIR/mp-train and WORKDIR/torch are
# started over (--force).
#
# Environment: MP_BIN (default: build/bin of this checkout), PYTHON
# (default /usr/bin/python3; checked first for torch, numpy, PIL and lmdb).
# Exit status: 0 done (or -h, --help), 1 a run failed, left no epoch rows
# or a Python module is missing, 2 bad usage (here, or a run that exited 2:
# options or data that program refuses).
set -u
prog=peer-train.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
MP_BIN=${MP_BIN:-$root/build/bin}
if [[ -z ${PYTHON:-} ]]; then
	if [[ -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"
python=$PYTHON
die() {
	printf '%s: %s\n' "$prog" "$1" >&2
	exit "${2:-1}"
}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
	cat <<EOF
usage: $prog TRAIN_DB VAL_DB WORKDIR [mp-train options...]

Train the same network with the same options with mp-train
(WORKDIR/mp-train) and with torch-train.py (WORKDIR/torch), each on all
the cores, then print both final validation errors, their difference and
the training speed ratio. Use options the two share (torch-train.py
--help); the data, the output and --threads are set here, and --resume
and --log are refused.
EOF
	exit 0
fi
if [[ $# -lt 3 ]]; then
	echo "usage: $prog TRAIN_DB VAL_DB WORKDIR [mp-train options...]" >&2
	exit 2
fi
# a path that starts with "-" is given as ./-X, never taken for an option
train_db=$(safe_path "$1") val_db=$(safe_path "$2") work=$(safe_path "$3")
shift 3
# every spelling of what is set here, or would make the two runs share a
# file
refuse_options "$prog sets the data, the output, the log and --threads itself, and starts both runs over" \
	"train val output threads resume log" "$@"
[[ -x $MP_BIN/mp-train ]] || die "$MP_BIN/mp-train: not built (run make)"
# torch-train.py's modules, before mp-train's run rather than after it
need_python numpy PIL lmdb torch
cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)
mkdir -p -- "$work" || die "$work: cannot create the directory"

# run NAME COMMAND...: the output goes to WORKDIR/NAME.out as well.
run() {
	local name=$1
	shift
	echo "== $name: $*"
	"$@" 2>&1 | tee "$work/$name.out"
	local rc=${PIPESTATUS[0]} trc=${PIPESTATUS[1]}
	((trc == 0)) || die "$work/$name.out: cannot write the output of $name"
	# its usage error (exit 2: options it refuses) is this script's too
	((rc == 0)) || die "$name failed (exit $rc); its output is in $work/$name.out" $((rc == 2 ? 2 : 1))
}

# libgomp's spinning workers stall PyTorch's small operations badly when
# anything else runs on the machine; both runs wait passively instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# an option torch-train.py refuses (one of mp-train's only), before
# mp-train's run rather than after it
if ! err=$("$PYTHON" "$here/torch-train.py" -d "$train_db" -v "$val_db" -o "$work/torch" \
	--force --threads "$cores" --check-options "$@" 2>&1); then
	printf '%s\n' "$err" >&2
	die "torch-train.py refuses these options (use those the two share: torch-train.py --help)" 2
fi
run mp-train "$MP_BIN/mp-train" -d "$train_db" -v "$val_db" -o "$work/mp-train" --force \
	--threads "$cores" "$@"
run torch-train "$PYTHON" "$here/torch-train.py" -d "$train_db" -v "$val_db" -o "$work/torch" \
	--force --threads "$cores" "$@"

# summary LOG: "top1 top5 images_per_s epochs" from the epoch (and end) rows:
# the last validation and the images/s over all epochs (images / seconds).
summary() {
	awk -F'\t' '
		NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
		$1 == "epoch" || $1 == "end" {
			n++
			if ($c["val_top1_err"] != "-") { t1 = $c["val_top1_err"]; t5 = $c["val_top5_err"] }
			# images / seconds over the run: the rate of each row weighted
			# by its steps (a last part epoch counts for its part)
			steps = $c["step"] - last; last = $c["step"]
			r = $c["images_per_s"]
			if (r > 0 && steps > 0) { done += steps; took += steps / r }
			epochs = $c["epoch"]
		}
		END {
			if (!n) exit 1
			# the rate in full: rounded here and again by the table, a
			# last digit could differ from that of the rate rounded once
			printf "%s %s %.6f %s\n", (t1 == "" ? "-" : t1), (t5 == "" ? "-" : t5),
				(took ? done / took : 0), epochs
		}' "$1"
}
ours=$(summary "$work/mp-train/train.log") || die "$work/mp-train/train.log: no epoch rows"
theirs=$(summary "$work/torch/train.log") || die "$work/torch/train.log: no epoch rows"

echo
awk -v a="$ours" -v b="$theirs" -v cores="$cores" 'BEGIN {
	split(a, x, " "); split(b, y, " ")
	printf "%-28s %12s %12s %12s\n", "", "mp-train", "PyTorch", "difference"
	if (x[1] != "-" && y[1] != "-") {
		printf "%-28s %11.2f%% %11.2f%% %+9.2f pts\n", "final val top-1 error", 100 * x[1], 100 * y[1], 100 * (x[1] - y[1])
		printf "%-28s %11.2f%% %11.2f%% %+9.2f pts\n", "final val top-5 error", 100 * x[2], 100 * y[2], 100 * (x[2] - y[2])
	} else {
		printf "%-28s %12s %12s\n", "final val error", (x[1] == "-" ? "none" : x[1]), (y[1] == "-" ? "none" : y[1])
	}
	printf "%-28s %12.1f %12.1f %11.2fx\n", "train images/s (" cores " threads)", x[3], y[3], (y[3] > 0 ? x[3] / y[3] : 0)
	printf "%-28s %12g %12g\n", "epochs", x[4], y[4]
}'
