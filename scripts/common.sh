# common.sh: what the scripts share, sourced after they set prog (their
# name) and usage_args (their usage line's arguments).

# [MESSAGE]: the message, the usage line, exit 2
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
	[[ $2 =~ ^[0-9]{1,9}$ ]] && ((10#$2 >= $3 && 10#$2 <= $4)) ||
		{ echo "$prog: $1: \"$2\" is not a number from $3 to $4" >&2; exit 2; }
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
