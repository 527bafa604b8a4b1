#!/usr/bin/env bats
# mp-eval on the image files of a list, as a folder of downloaded images
# is evaluated: large photos, the limits on what is read, and agreement
# with the same images packed into a DB.

load helpers

ev() { "$MP_BIN/mp-eval" "$@"; }

# Random weights of 6 classes trained at 16 px, and a few images.
setup_file() {
	local d=$BATS_FILE_TMPDIR/data
	mkdir -p "$d" && cd "$d"
	"$MP_ROOT/build/tests/oracle/resnet_init" 1 4,8 A 6 7 init.safetensors >/dev/null
	"$PY" - "$MP_ROOT/scripts" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import mp_resnet
t, meta = mp_resnet.read_safetensors("init.safetensors")
meta["input_size"] = "16"
meta["crc32"] = mp_resnet.data_crc32(t)
mp_resnet.write_safetensors("w.safetensors", t, meta)
EOF
	"$PY" "$MKIMAGES" batch <<-EOF
	make gradient photo.jpg 2000 2000
	make noise small.png 16 16
	make huge-png huge.png 8 8
	EOF
}

setup() {
	mkdir -p "$BATS_TEST_TMPDIR/work" && cd "$BATS_TEST_TMPDIR/work"
	D=$BATS_FILE_TMPDIR/data
}

# peak_kb CMD...: the largest resident size of CMD, in KB.
peak_kb() {
	"$PY" -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"
}

@test "large photos: a batch holds one decoded image per thread, not one per image of the batch" {
	for i in $(seq 12); do echo "$D/photo.jpg"; done >photos.txt
	one=$(peak_kb "$MP_BIN/mp-eval" -q -m "$D/w.safetensors" --list photos.txt --threads 1 --batch 1 --probs p1.tsv)
	all=$(peak_kb "$MP_BIN/mp-eval" -q -m "$D/w.safetensors" --list photos.txt --threads 1 --batch 12 --probs p12.tsv)
	# each decoded photo is 12 MB: twelve held at once would add 130 MB
	assert_less "$all" $((one + 40000))
	cmp p1.tsv p12.tsv
}
