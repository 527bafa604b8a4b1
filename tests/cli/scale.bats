#!/usr/bin/env bats
# Costs that must grow with what is asked for, not with the largest thing
# the data could need: many classes, many records.

load helpers

@test "mp-eval of a network of 20000 classes needs no classes x classes table without --confusion" {
	mkimg many im 4 16 16 labels=3 >list.txt
	random_weights 20000 w.st
	# the table would be 20000^2 counts of 8 bytes, 3 GiB; 1 GiB of
	# address space is plenty for the rest
	run --separate-stderr bash -c 'ulimit -v 1048576 && exec "$@"' _ \
		"$MP_BIN/mp-eval" -q --threads 1 -m w.st --per-class pc.tsv --list list.txt
	assert_status 0
	assert_equal "$(wc -l <pc.tsv)" 20001
	run --separate-stderr bash -c 'ulimit -v 1048576 && exec "$@"' _ \
		"$MP_BIN/mp-eval" -q --threads 1 -m w.st --confusion c.tsv --list list.txt
	assert_status 1
	assert_equal "$stderr" \
		"mp-eval: --confusion: out of memory for a table of 20000 x 20000 counts (3.0 GiB)"
	[[ ! -e c.tsv ]] || fail "c.tsv was written"
}
