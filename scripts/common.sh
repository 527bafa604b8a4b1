# shellcheck shell=bash
# common.sh: what the scripts share, sourced after they set prog (their
# name) and usage_args (their usage line's arguments).

# [MESSAGE]: the message, the usage line, exit 2
# shellcheck disable=SC2154 # prog, usage_args: set by the script that sources this
usage() {
	[ $# -eq 0 ] || echo "$prog: $*" >&2
	echo "usage: $prog $usage_args" >&2
	exit 2
}

die() {
	echo "$prog: $*" >&2
	exit 1
}

# number NAME VALUE LO HI: exit 2 unless VALUE is a decimal number from LO
# to HI (10#: "010" is ten, not octal eight)
number() {
	[[ $2 =~ ^[0-9]{1,9}$ ]] && ((10#$2 >= $3 && 10#$2 <= $4)) && return
	echo "$prog: $1: \"$2\" is not a number from $3 to $4" >&2
	exit 2
}

# no_long_options "$@": getopts knows no long options; --help prints the
# script's help(), any other one is a usage error
no_long_options() {
	local a
	for a in "$@"; do
		case $a in
		--) break ;;
		--help) help; exit 0 ;;
		--?*) usage "unknown option $a" ;;
		esac
	done
}

# workdir [DIR]: sets work to DIR, made if missing, or to a new temporary
# directory named after the script, removed at exit unless keep=1
workdir() {
	if [ $# -eq 1 ]; then
		work=$1
		mkdir -p -- "$work" 2>/dev/null || die "$work: cannot create directory"
	else
		work=$(mktemp -d "${TMPDIR:-/tmp}/${prog%.sh}.XXXXXX")
		if [ "${keep:-0}" -eq 1 ]; then
			echo "$prog: keeping $work" >&2
		else
			trap 'rm -rf "$work"' EXIT
		fi
	fi
}

# bench_images DIR COUNT [gen-bench-images.py options]: COUNT generated
# images and their list DIR/train.txt, or those already there
bench_images() {
	local dir=$1 count=$2
	shift 2
	if [ -f "$dir/train.txt" ] && [ "$(wc -l <"$dir/train.txt")" -eq "$count" ]; then
		echo "$prog: reusing the $count images in $dir" >&2
	else
		echo "$prog: generating $count images in $dir" >&2
		rm -rf -- "$dir"
		# shellcheck disable=SC2154 # python: set by the scripts that call this
		"$python" "$(dirname "${BASH_SOURCE[0]}")/gen-bench-images.py" "$dir" "$count" "$@" >&2 ||
			die "gen-bench-images.py failed"
	fi
}
