#!/usr/bin/env bats
# The reproduction path (scripts/reproduce.sh, make reproduce) on a fake
# development kit: images/ and the four lists, tiny generated images.

load helpers

# kit DIR [VAL TEST]: images/{train,val,test}/ and train.txt, val.txt,
# test.txt (no labels), categories.txt, as the Mini-Places development kit
# lays them out; 72 training images, VAL (24) and TEST (10) others.
kit() {
	mkdir -p "$1/images"
	(
		cd "$1/images"
		mkimg classes train 72 24 24 6 >../train.txt
		mkimg classes val "${2:-24}" 24 24 6 seed=3 >../val.txt
		mkimg classes test "${3:-10}" 24 24 6 seed=5 | cut -d' ' -f1 >../test.txt
	)
	printf '/a/abbey 0\n/b/beach 1\n/c/canyon 2\n/d/desert 3\n/e/elevator 4\n/f/forest 5\n' \
		>"$1/categories.txt"
}

# path_without NAME: a PATH with every command of this one but NAME, as
# links in a folder of the test's
path_without() {
	local dir=$BATS_TEST_TMPDIR/path-without-$1 d f
	mkdir -p "$dir"
	IFS=: read -ra dirs <<<"$PATH"
	for d in "${dirs[@]}"; do
		for f in "$d"/*; do
			[[ -x $f && ${f##*/} != "$1" && ! -e $dir/${f##*/} ]] && ln -s "$f" "$dir/${f##*/}"
		done
	done
	echo "$dir"
}

TRIAL=(--depth 1 --widths 4,8 --stem-stride 1 --crop 20 --scale-min 20 --scale-max 24
	--batch 16 --epochs 2 --log-every 2)

@test "reproduce.sh packs, trains and plots on a kit, and resumes or keeps on a second run" {
	kit mp
	run bash "$MP_ROOT/scripts/reproduce.sh" mp work "${TRIAL[@]}"
	assert_status 0
	local said=$output
	assert_contains "$output" "== pack train, val and test"
	assert_contains "$output" "final validation error:"
	# the plot's name once, not also plot-log's own line
	if command -v gnuplot >/dev/null; then
		assert_equal "$(grep -c 'train\.png' <<<"$output")" 1
		assert_contains "$output" "plot: work/run/train.png"
	fi
	for db in train val test; do
		run inspect --verify "work/$db.db"
		assert_status 0
	done
	assert_equal "$(json_get <(inspect --json work/test.db) 'd["records"], d["meta"]["labelled"]')" "(10, False)"
	run inspect --verify work/run/weights.safetensors
	assert_status 0
	[[ -s work/run/train.png ]]
	# the evaluation: one scale, the reference's four, a sorted submission of 5 labels
	assert_equal "$(json_get work/eval-single.json 'len(d["scales"]), d["images"]')" "(1, 24)"
	assert_equal "$(json_get work/eval-multiscale.json '[s["size"] for s in d["scales"]]')" "[112, 128, 160, 240]"
	assert_equal "$(wc -l <work/submission.txt)" 10
	assert_equal "$(awk '{ print NF }' work/submission.txt | sort -u)" 6
	assert_equal "$(cut -d' ' -f1 work/submission.txt)" "$(cut -d' ' -f1 work/submission.txt | LC_ALL=C sort)"
	# the validation errors said, as the JSON files hold them
	local f='"top-1 %.2f%%, top-%d %.2f%%" % (100 * d["combined"]["top1_err"], d["topk"], 100 * d["combined"]["topk_err"])'
	assert_contains "$said" "validation error, single scale: $(json_get work/eval-single.json "$f")"
	assert_contains "$said" "validation error, multiscale:   $(json_get work/eval-multiscale.json "$f")"
	# a second run keeps the DBs, the finished training and the evaluations
	local results=(work/eval-single.json work/eval-multiscale.json work/submission.txt)
	local before
	before=$(ls -l --time-style=+%s.%N "${results[@]}")
	# (and says that it makes no plot where gnuplot is missing)
	PATH=$(path_without gnuplot) run bash "$MP_ROOT/scripts/reproduce.sh" mp work "${TRIAL[@]}"
	assert_status 0
	assert_contains "$output" "plot: none, gnuplot is not installed"
	assert_contains "$output" "work/train.db exists; kept"
	assert_contains "$output" "training is done"
	local r
	for r in "${results[@]}"; do
		assert_contains "$output" "$r is newer than the weights; kept (remove it to evaluate again)"
	done
	assert_contains "$output" "validation error, multiscale:   $(json_get work/eval-multiscale.json "$f")"
	assert_equal "$(ls -l --time-style=+%s.%N "${results[@]}")" "$before"
	# weights newer than the results (trained again) are evaluated again
	touch work/run/weights.safetensors
	run bash "$MP_ROOT/scripts/reproduce.sh" mp work "${TRIAL[@]}"
	assert_status 0
	assert_not_contains "$output" "newer than the weights"
	[[ work/submission.txt -nt work/run/weights.safetensors ]]
}

@test "reproduce.sh trains and evaluates on a GPU where there is one (an emulated device here)" {
	grep -q 'cuda=yes$' "$MP_BIN/../flags.stamp" || skip "this build has no CUDA backend"
	export MP_CUDA_MODULE=$MP_BIN/../tests/emu/libmp-cuda-emu.so
	# few images to evaluate: the emulated device is slow at 240 px
	kit mp 8 4
	run bash "$MP_ROOT/scripts/reproduce.sh" mp work "${TRIAL[@]}" --epochs 1
	assert_status 0
	assert_contains "$output" "mp-train: cuda, emulated on the host"
	for f in eval-single eval-multiscale; do
		assert_contains "$(json_get work/$f.json 'd["backend"]')" "cuda, emulated on the host"
		assert_equal "$(json_get work/$f.json 'd["images"]')" 8
	done
	assert_equal "$(wc -l <work/submission.txt)" 4
}

@test "reproduce.sh resumes a stopped run, and takes lists from data/ as the kit has them" {
	kit mp
	mkdir mp/data && mv mp/*.txt mp/data/
	run bash "$MP_ROOT/scripts/reproduce.sh" mp work "${TRIAL[@]}" --max-steps 5
	assert_status 0
	assert_equal "$(readlink work/run/last.safetensors)" checkpoint-0001-000001.safetensors
	rm work/run/weights.safetensors
	run bash "$MP_ROOT/scripts/reproduce.sh" mp work "${TRIAL[@]}"
	assert_status 0
	assert_contains "$output" "resuming work/run/last.safetensors at epoch 2, batch 1 (step 5)"
	assert_equal "$(readlink work/run/last.safetensors)" checkpoint-0002.safetensors
	# as a run killed between a checkpoint and the link to it leaves it:
	# the newest checkpoint, 0001-000001, which is not last by name
	rm work/run/weights.safetensors work/run/last.safetensors work/run/checkpoint-0002.safetensors
	[[ -f work/run/checkpoint-0001.safetensors && -f work/run/checkpoint-0001-000001.safetensors ]]
	run bash "$MP_ROOT/scripts/reproduce.sh" mp work "${TRIAL[@]}"
	assert_status 0
	assert_contains "$output" "work/run/last.safetensors is missing: resuming from the newest checkpoint, work/run/checkpoint-0001-000001.safetensors"
	assert_contains "$output" "resuming work/run/checkpoint-0001-000001.safetensors at epoch 2, batch 1 (step 5)"
	assert_equal "$(readlink work/run/last.safetensors)" checkpoint-0002.safetensors
}

@test "reproduce.sh finds the kit as published: data/images, the lists in data/, no test.txt" {
	kit mp
	# the GitHub kit: data/ holds the lists and the unpacked images/, and
	# there is no test list; the test images are named by their files
	mkdir mp/data && mv mp/images mp/train.txt mp/val.txt mp/categories.txt mp/data/
	rm mp/test.txt
	# what a copy of the images may bring besides them
	touch mp/data/images/test/Thumbs.db mp/data/images/test/.DS_Store
	run bash "$MP_ROOT/scripts/reproduce.sh" mp work "${TRIAL[@]}" --max-steps 2
	assert_status 0
	assert_contains "$output" "mp has no test.txt: work/test.txt lists the 10 images of mp/data/images/test"
	assert_equal "$(json_get <(inspect --json work/test.db) 'd["records"], d["meta"]["labelled"]')" "(10, False)"
	assert_equal "$(cut -d' ' -f1 work/submission.txt)" "$(cd mp/data/images && find test -name '*.png' | LC_ALL=C sort)"
	assert_equal "$(awk '{ print NF }' work/submission.txt | sort -u)" 6
	# the course's tarballs: images/ beside development_kit/data/
	rm -rf work
	mkdir -p kit2/development_kit
	mv mp/data kit2/development_kit/data
	mv kit2/development_kit/data/images kit2/images
	run bash "$MP_ROOT/scripts/reproduce.sh" kit2 work "${TRIAL[@]}" --max-steps 2
	assert_status 0
	assert_equal "$(wc -l <work/submission.txt)" 10
	# no test.txt and no images/test: named
	rm -rf work kit2/images/test
	run bash "$MP_ROOT/scripts/reproduce.sh" kit2 work "${TRIAL[@]}"
	assert_status 1
	assert_equal "$output" "reproduce.sh: kit2: no test.txt, and no kit2/images/test to make one from"
}

@test "reproduce.sh refuses a directory that is not a kit, and make reproduce wants MINIPLACES" {
	mkdir notakit
	run bash "$MP_ROOT/scripts/reproduce.sh" notakit work
	assert_status 1
	assert_equal "$output" "reproduce.sh: notakit/images: no such directory, nor notakit/data/images (expected the development kit's layout)"
	mkdir -p half/images && touch half/train.txt
	run bash "$MP_ROOT/scripts/reproduce.sh" half work
	assert_status 1
	assert_equal "$output" "reproduce.sh: half: no val.txt (looked in half, half/data and half/development_kit/data)"
	run make -s -C "$MP_ROOT" reproduce
	assert_status 2
	assert_contains "$output" "usage: make reproduce MINIPLACES=DIR"
	run make -n -C "$MP_ROOT" reproduce MINIPLACES=/k REPRO_DIR=/w REPRO_OPTS="--epochs 1"
	assert_contains "$output" 'bash scripts/reproduce.sh "/k" "/w" --epochs 1'
	# the programs of the build that B names; by hand, those of MP_BIN
	run make -n -C "$MP_ROOT" reproduce MINIPLACES=/k B=/b
	assert_contains "$output" 'MP_BIN=/b/bin bash scripts/reproduce.sh "/k" "/b/reproduce"'
	mkdir bin
	run env MP_BIN="$PWD/bin" bash "$MP_ROOT/scripts/reproduce.sh" half work
	assert_status 1
	assert_equal "$output" "reproduce.sh: $PWD/bin/mp-batchwriter is not built; run make first"
}

@test "reproduce.sh: -h prints the help, a usage error exits 2" {
	run --separate-stderr bash "$MP_ROOT/scripts/reproduce.sh" -h
	assert_status 0
	assert_equal "$(first_line "$output")" "usage: reproduce.sh MINIPLACES_DIR [WORKDIR] [mp-train options...]"
	run bash "$MP_ROOT/scripts/reproduce.sh" --help
	assert_status 0
	run bash "$MP_ROOT/scripts/reproduce.sh"
	assert_status 2
	assert_equal "$output" "usage: reproduce.sh MINIPLACES_DIR [WORKDIR] [mp-train options...]"
	run bash "$MP_ROOT/scripts/reproduce.sh" --epochs 1
	assert_status 2
	assert_equal "$(first_line "$output")" "reproduce.sh: unknown option --epochs (mp-train's options come after MINIPLACES_DIR)"
	assert_files .
	# what it sets itself, in any spelling: before any work
	for a in -o -qoX --outp=x --log --resume --force -d; do
		run --separate-stderr bash "$MP_ROOT/scripts/reproduce.sh" nokit work --epochs 1 "$a" x
		assert_status 2
		assert_contains "$stderr" "reproduce.sh: $a"
		assert_contains "$stderr" "sets the data, the output and the log itself"
	done
	assert_files .
}

@test "reproduce.sh: options right after the kit go to mp-train, WORKDIR the default" {
	kit mp
	# a checkout of its own, whose build/reproduce is the default WORKDIR
	mkdir -p tree/scripts tree/build
	cp "$MP_ROOT/scripts/reproduce.sh" "$MP_ROOT/scripts/common.sh" tree/scripts/
	ln -s "$MP_BIN" tree/build/bin
	run bash tree/scripts/reproduce.sh mp "${TRIAL[@]}" --max-steps 2
	assert_status 0
	assert_contains "$output" "options: ${TRIAL[*]} --max-steps 2"
	[[ -f tree/build/reproduce/run/weights.safetensors ]]
	[[ ! -e --depth && ! -e tree/build/--depth ]]
}

@test "reproduce.sh: an evaluation that fails leaves the earlier results as they were" {
	kit mp
	run bash "$MP_ROOT/scripts/reproduce.sh" mp work "${TRIAL[@]}"
	assert_status 0
	cp work/eval-single.json single.before
	# weights cut short: training is done, the evaluation fails
	head -c 100 work/run/weights.safetensors >w && cat w >work/run/weights.safetensors
	run bash "$MP_ROOT/scripts/reproduce.sh" mp work "${TRIAL[@]}"
	assert_status 1
	assert_contains "$output" "mp-eval: work/run/weights.safetensors"
	cmp single.before work/eval-single.json
	[[ ! -e work/eval-single.json.tmp ]]
}

@test "reproduce.sh: a kit named with a leading dash, after --; an empty images/test leaves no list behind" {
	kit ./-mp
	rm ./-mp/test.txt
	run bash "$MP_ROOT/scripts/reproduce.sh" -- -mp work "${TRIAL[@]}" --max-steps 2
	assert_status 0
	assert_equal "$(wc -l <work/submission.txt)" 10
	rm -rf work ./-mp/images/test/*
	run bash "$MP_ROOT/scripts/reproduce.sh" -- -mp work "${TRIAL[@]}"
	assert_status 1
	assert_equal "$output" "reproduce.sh: ./-mp/images/test: no images to make the test list from"
	assert_files work
}
