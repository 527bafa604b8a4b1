#!/usr/bin/env bats
# What the man pages and --help say against what the programs read.

load helpers

# env_read FILE...: the variables the sources read (getenv, mp_getenv and
# the CUDA backend's env_choice), one a line.
env_read() {
	grep -ohE '(getenv|env_choice)\("[A-Z0-9_]+"' "$@" | sed -E 's/.*\("//; s/"$//' | sort -u
}

# env_documented PAGE: the variables of PAGE's ENVIRONMENT section.
env_documented() {
	sed -n '/^\.Sh ENVIRONMENT/,/^\.Sh /p' "$MP_ROOT/man/$1" |
		sed -n 's/^\.It Ev \([A-Z0-9_]*\).*/\1/p' | sort -u
}

@test "every environment variable the programs read is in their man pages' ENVIRONMENT" {
	cd "$MP_ROOT"
	# the backends serve mp-train and mp-eval alike; mp_eval.c only mp-eval
	local backend page
	backend=$(env_read kernels/cpu/*.c kernels/cuda/*.c kernels/cuda/*.cu common/mp_backends.c)
	[ -n "$backend" ] || fail "no variables found: the pattern is stale"
	for page in mp-train.1 mp-eval.1; do
		assert_equal "$page lacks: $(comm -23 <(echo "$backend") <(env_documented "$page"))" \
			"$page lacks: "
	done
	assert_equal "mp-eval.1 lacks: $(comm -23 <(env_read common/mp_eval.c) <(env_documented mp-eval.1))" \
		"mp-eval.1 lacks: "
}

@test "every variable of an ENVIRONMENT section is read, by the programs or by OpenMP" {
	cd "$MP_ROOT"
	local page read
	read=$(env_read kernels/cpu/*.c kernels/cuda/*.c kernels/cuda/*.cu common/*.c tools/*.c)
	for page in mp-train.1 mp-eval.1; do
		assert_equal "$(comm -13 <(echo "$read") <(env_documented "$page") | grep -v '^OMP_')" ""
	done
}

@test "--help, the man page's OPTIONS and the option table name the same long options" {
	local p src help man
	for p in mp-batchwriter mp-train mp-eval mp-inspect; do
		src=$(grep -oE '^	\{"[a-z-]+", (no|required)_argument' "$MP_ROOT/tools/$p.c" |
			sed -E 's/^	\{"([a-z-]+)".*/\1/' | sort -u)
		help=$("$MP_BIN/$p" --help | grep -oE -- '--[a-z][a-z-]*' | sed 's/^--//' | sort -u)
		man=$(sed -n '/^\.Sh OPTIONS/,/^\.Sh /p' "$MP_ROOT/man/$p.1" |
			grep -oE '^\.It Fl .*' | grep -oE 'Fl \\-[a-z][a-z-]*' | sed 's/^Fl \\-//' | sort -u)
		[ -n "$src" ] || fail "$p: no options found in tools/$p.c: the pattern is stale"
		assert_equal "$p --help: $help" "$p --help: $src"
		assert_equal "$p.1: $man" "$p.1: $src"
	done
}

@test "mp-train(1)'s example that follows a growing log prints each epoch row as it comes" {
	local filter
	filter=$(sed -n 's/^\$ tail -f run2\/train\.log | //p' "$MP_ROOT/man/mp-train.1" | sed 's/\\e/\\/g')
	[ -n "$filter" ] || fail "the example is gone from mp-train(1)"
	# a log that grows: an epoch row, a pause, another
	cat >grow.sh <<'END'
printf 'kind\tepoch\tstep\tlr\tloss\tt1\tt5\tvl\tv1\tv5\tips\ts\n'
printf 'epoch\t1\t5\t0.1\t2.3\t0.9\t0.5\t2.2\t0.81\t0.41\t900\t1\n'
sleep 3
printf 'epoch\t2\t10\t0.1\t2.1\t0.8\t0.4\t2.0\t0.72\t0.32\t900\t2\n'
END
	# typed at a terminal, as in the example: the first row must not wait
	# for the second (an awk that reads its input in blocks holds it back)
	on_tty bash -c "bash grow.sh | $filter" | while IFS= read -r l; do
		printf '%s %s\n' "$(date +%s.%N)" "$l"
	done >got
	assert_equal "$(awk '{ $1 = ""; print }' got | tr -d '\r' | tr -s ' \t' ' ')" " 1 0.81 0.41
 2 0.72 0.32"
	assert_less 2 "$(awk 'NR == 1 { a = $1 } NR == 2 { print $1 - a }' got)"
}
