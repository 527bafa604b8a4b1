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

# Numbers are read and written with a decimal point (awk, printf, sort -g,
# gnuplot, the logs and JSON of the programs) whatever the user's locale:
# under a decimal comma awk reads "0.25" as 0. LC_NUMERIC=C, the rest of
# the locale kept; an LC_ALL, which would override it, is spread over the
# other categories.
if [ -n "${LC_ALL:-}" ]; then
	for c in LC_CTYPE LC_COLLATE LC_MESSAGES LC_MONETARY LC_TIME LC_PAPER LC_NAME \
		LC_ADDRESS LC_TELEPHONE LC_MEASUREMENT LC_IDENTIFICATION; do
		export "$c=$LC_ALL"
	done
	unset LC_ALL c
fi
export LC_NUMERIC=C

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

# refuse_options REASON "NAME..." ARG...: exit 2 when an ARG sets one of
# mp-train's long options NAME (-d, -v and -o being --train, --val and
# --output), saying which and REASON, in every spelling getopt takes: a
# unique prefix (--out, --outp=X; a prefix of a NAME is refused even where
# it is ambiguous, --t), a short option's value attached or after a
# cluster of flags (-oX, -qo X). Stops at "--".
refuse_options() {
	local reason=$1 names=$2 a name o flags what
	shift 2
	for a in "$@"; do
		case $a in
		--) break ;;
		--?*)
			name=${a#--}
			name=${name%%=*}
			for o in $names; do
				[[ $o == "$name"* ]] || continue
				what=" (--$o)"
				[[ ${a%%=*} != "--$o" ]] || what=
				echo "$prog: $a$what: $reason" >&2
				exit 2
			done
			;;
		-*[dvo]*)
			flags=${a#-}
			flags=${flags%%[dvo]*}
			echo "$prog: $a (-${a:${#flags}+1:1}): $reason" >&2
			exit 2
			;;
		esac
	done
}

# safe_path PATH: PATH, or ./PATH where it starts with "-", so that the
# programs it is given to never take it for an option
safe_path() {
	case $1 in
	-*) printf './%s\n' "$1" ;;
	*) printf '%s\n' "$1" ;;
	esac
}

# make_built ROOT TARGET...: make the TARGETs in ROOT's build tree as that
# tree was last built with or without the CUDA backend (its flags.stamp):
# make's default CUDA=auto would otherwise rebuild a CUDA=0 tree with the
# backend on a machine with nvcc, and measure other programs than the
# user's; any other flag the user gave make is not known here
make_built() {
	local root=$1 cuda=
	shift
	if [ -f "$root/build/flags.stamp" ]; then
		if grep -q '| cuda=yes$' "$root/build/flags.stamp"; then cuda=CUDA=1; else cuda=CUDA=0; fi
	fi
	make -s -C "$root" ${cuda:+"$cuda"} "$@" >/dev/null || die "make failed in $root"
}

# need_python MODULE...: exit 1, naming the Debian packages to install,
# unless $python runs and imports every MODULE (checked before any work,
# not found as a traceback at the end of a long run)
need_python() {
	command -v "$python" >/dev/null 2>&1 || die "$python is missing (set PYTHON)"
	local missing
	# shellcheck disable=SC2016 # Python's code, not the shell's
	missing=$("$python" -c '
import importlib, sys
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
    except Exception:
        print(m)' "$@" 2>/dev/null) || die "$python does not run"
	[ -z "$missing" ] && return
	local m mods='' debs=''
	for m in $missing; do
		mods+="${mods:+, }$m"
		case $m in
		PIL) debs+=" python3-pil" ;;
		*) debs+=" python3-$m" ;;
		esac
	done
	die "$python cannot import $mods (Debian:$debs)"
}

# workdir [DIR]: sets work to DIR, made if missing, or to a new temporary
# directory named after the script, removed at exit unless keep=1
workdir() {
	if [ $# -eq 1 ]; then
		work=$(safe_path "$1")
		mkdir -p -- "$work" 2>/dev/null || die "$work: cannot create directory"
		# absolute: the Python parts run from the scripts' directory
		work=$(CDPATH='' cd -- "$work" && pwd -P) || die "$1: cannot enter the directory"
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
# images and their list DIR/train.txt, or those already there. DIR is
# replaced only when it is missing or holds images made here before (its
# .bench-images), never a folder of the user's that happens to be there.
bench_images() {
	local dir=$1 count=$2
	shift 2
	if [ -f "$dir/.bench-images" ] && [ -f "$dir/train.txt" ] &&
		[ "$(wc -l <"$dir/train.txt")" -eq "$count" ]; then
		echo "$prog: reusing the $count images in $dir" >&2
		return
	fi
	if [ -e "$dir" ] && [ ! -f "$dir/.bench-images" ]; then
		die "$dir: exists and does not hold this script's images; remove it or give another WORKDIR"
	fi
	echo "$prog: generating $count images in $dir" >&2
	rm -rf -- "$dir"
	# shellcheck disable=SC2154 # python: set by the scripts that call this
	"$python" "$(dirname "${BASH_SOURCE[0]}")/gen-bench-images.py" "$dir" "$count" "$@" >&2 ||
		die "gen-bench-images.py failed"
	: >"$dir/.bench-images"
}
