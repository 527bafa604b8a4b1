#!/usr/bin/env bats
# mp-inspect on weights and checkpoint files.

load helpers

init() { "$MP_BIN/../tests/oracle/resnet_init" "$@"; }

@test "a fresh reference network: summary, parameter count as PyTorch counts it, FLOPs" {
	init 9 32,64,128,256 A 100 1 ref.safetensors
	run inspect ref.safetensors
	assert_status 0
	torch_count=$(PYTHONPATH="$MP_ROOT/scripts" "$PY" -c \
		'import mp_resnet; print(sum(p.numel() for p in mp_resnet.ResNet().parameters()))')
	assert_contains "$output" "parameters:   $torch_count learned"
	assert_contains "$output" "network:      ResNet, 4 stages of 9 blocks, widths 32,64,128,256, shortcut A"
	assert_contains "$output" "FLOPs:        4.081 G per image at 112 px"
	assert_contains "$output" "header CRC:   present, verified"
	assert_contains "$output" "data CRC:     present, verified"
	assert_equal "$(json_get <(inspect --json ref.safetensors) 'd["kind"], d["tensors"], d["header_crc32"], d["crc32"]')" "('weights', 370, True, True)"
	# a small network's in M, not as 0.000 G
	init 1 4,8 A 10 1 small.safetensors
	run inspect small.safetensors
	assert_status 0
	assert_contains "$output" " M per image at 112 px"

}

@test "--tensors lists every tensor with Kaiming statistics for the convs" {
	init 9 32,64,128,256 A 100 1 ref.safetensors
	run inspect --tensors ref.safetensors
	assert_status 0
	assert_equal "$(wc -l <<<"$output")" "371"
	assert_equal "$(head -1 <<<"$output")" "$(printf 'name\tshape\tdtype\tmean\tstd\tmin\tmax\tl2')"
	# conv std is sqrt(2 / fan_in): 3x3x128 inputs -> 0.0417
	std=$(awk -F'\t' '$1 == "stages.3.blocks.0.conv1.weight" { print $5 }' <<<"$output")
	assert_less "$(awk -v s="$std" 'BEGIN { d = s - sqrt(2 / 1152); print (d < 0 ? -d : d) }')" 0.001
	assert_equal "$(awk -F'\t' '$1 == "stem.bn.running_var" { print $2, $4, $5 }' <<<"$output")" "[32] 1 0"
}

@test "--tensors: a tensor with no finite element has no statistics, not zeros" {
	"$PY" - "$MP_ROOT/scripts" <<'END'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, mp_resnet
mp_resnet.write_safetensors("odd.safetensors", {
    "empty": np.zeros((0, 3), np.float32),
    "nan": np.array([np.nan, np.inf], np.float32),
    "some": np.array([1, np.nan, 3], np.float32)}, checksums=False)
END
	run inspect --tensors odd.safetensors
	assert_status 0
	assert_equal "$(sed -n 2,4p <<<"$output")" "$(printf '%s\n' \
		'empty	[0,3]	F32	-	-	-	-	0' \
		'nan	[2]	F32	-	-	-	-	0	NON-FINITE' \
		'some	[3]	F32	2	1	1	3	3.16228	NON-FINITE')"
	run inspect --json --tensors odd.safetensors
	assert_status 0
	assert_equal "$("$PY" -c 'import json, sys
for t in json.load(sys.stdin): print(t["name"], t["mean"], t["std"], t["min"], t["max"], t["l2"], t["nonfinite"])' <<<"$output")" \
		"$(printf '%s\n' 'empty None None None None 0 0' 'nan None None None None 0 2' 'some 2 1 1 3 3.1622776601683795 1')"
}

@test "--dump prints one tensor; an unknown name is an error" {
	init 1 4,8 A 10 5 w.safetensors
	run inspect --dump fc.weight w.safetensors
	assert_status 0
	assert_equal "$(wc -l <<<"$output")" "80"
	want=$(PYTHONPATH="$MP_ROOT/scripts" "$PY" -c \
		'import mp_resnet; t, m = mp_resnet.read_safetensors("w.safetensors"); print("%.9g" % t["fc.weight"].flat[7])')
	assert_equal "$(sed -n 8p <<<"$output")" "$want"
	run --separate-stderr inspect --dump nope w.safetensors
	assert_status 1
	assert_equal "$stderr" "mp-inspect: w.safetensors: no tensor named nope"
	run --separate-stderr inspect --dump "" w.safetensors
	assert_status 2
	assert_equal "$(head -1 <<<"$stderr")" "mp-inspect: --dump: the tensor name is empty"
}

@test "--diff: identical files pass, different seeds fail, --tol decides" {
	init 1 4,8 A 10 1 a.safetensors
	init 1 4,8 A 10 1 b.safetensors
	init 1 4,8 A 10 2 c.safetensors
	cmp a.safetensors b.safetensors
	run inspect --diff a.safetensors b.safetensors
	assert_status 0
	assert_equal "$(tail -1 <<<"$output")" "SAME: every tensor within the tolerance"
	run inspect --diff a.safetensors c.safetensors
	assert_status 1
	assert_contains "$output" "$(printf 'stem.bn.weight\t0\t0\tsame')"
	assert_contains "$(grep '^stem.conv.weight' <<<"$output")" "DIFFERENT"
	run inspect --tol 10 --diff a.safetensors c.safetensors
	assert_status 0
	init 1 4,8 B 10 1 d.safetensors
	run inspect --diff a.safetensors d.safetensors
	assert_status 1
	assert_contains "$output" "only in B"
}

@test "--diff: a tensor not compared (shapes differ, only in A or B) shows - and no numbers in --json" {
	init 1 4,8 A 10 1 a.safetensors
	init 1 4,16 B 10 1 b.safetensors
	run inspect --diff a.safetensors b.safetensors
	assert_status 1
	assert_contains "$output" "$(printf 'stages.1.blocks.0.conv1.weight\t-\t-\tshapes differ')"
	assert_contains "$output" "$(printf 'stages.1.blocks.0.shortcut.conv.weight\t-\t-\tonly in B')"
	run inspect --diff b.safetensors a.safetensors
	assert_contains "$output" "$(printf 'stages.1.blocks.0.shortcut.conv.weight\t-\t-\tonly in A')"
	# the keys of each verdict, as mp-inspect(1) lists them
	run json_get <(inspect --json --diff a.safetensors b.safetensors) \
		'sorted(set((o["verdict"], ",".join(sorted(o))) for o in d))'
	assert_equal "$output" "[('only in B', 'name,verdict'), ('same', 'max_abs,max_rel,name,verdict'), ('shapes differ', 'name,verdict')]"
}

@test "--tol without --diff is a usage error, its default value included" {
	init 1 4,8 A 10 1 w.safetensors
	for tol in 0 1e-3; do
		run --separate-stderr inspect --tol "$tol" w.safetensors
		assert_status 2
		assert_equal "$(first_line "$stderr")" "mp-inspect: --tol is for --diff"
	done
	run inspect --tol 0 --diff w.safetensors w.safetensors
	assert_status 0
}

@test "checkpoints carry momentum and are recognised" {
	init 1 4,8 B 10 1 ck.safetensors momentum
	run inspect ck.safetensors
	assert_status 0
	assert_contains "$output" "(mp-resnet checkpoint)"
	assert_contains "$output" "with momentum"
	assert_contains "$(inspect --tensors ck.safetensors)" "momentum.fc.weight"
}

@test "--verify: a good file passes; truncated and corrupt files fail naming the file" {
	init 1 4,8 A 10 1 w.safetensors
	run inspect --verify w.safetensors
	assert_status 0
	assert_equal "$output" "w.safetensors: OK: header CRC, data CRC, names and shapes"
	size=$(stat -c %s w.safetensors)
	head -c $((size - 5)) w.safetensors >cut.safetensors
	run --separate-stderr inspect --verify cut.safetensors
	assert_status 1
	assert_contains "$stderr" "cut.safetensors"
	cp w.safetensors flip.safetensors
	printf '\x55' | dd of=flip.safetensors bs=1 seek=$((size - 40)) conv=notrunc status=none
	run --separate-stderr inspect --verify flip.safetensors
	assert_status 1
	assert_contains "$stderr" "data CRC mismatch"
	# the header CRC was present and verified; the data's failed
	run --separate-stderr inspect --verify --json flip.safetensors
	assert_status 1
	assert_equal "$(json_get - 'd["ok"], d["header_crc32"], d["crc32"]' <<<"$output")" "(False, True, False)"
	# a damaged length field: still weights, reported as such in every mode
	cp w.safetensors len.safetensors
	printf '\xff\xff\xff\x7f' | dd of=len.safetensors bs=1 seek=0 conv=notrunc status=none
	for mode in --verify --tensors "--dump fc.weight" ""; do
		run --separate-stderr inspect $mode len.safetensors
		assert_status 1
		assert_equal "$stderr" "mp-inspect: len.safetensors: header length 2147483647 exceeds the limit of 100000000 bytes"
	done
}

@test "a file written from PyTorch loads, and a wrong shape is named" {
	PYTHONPATH="$MP_ROOT/scripts" "$PY" - <<-'EOF'
		import numpy as np, torch, mp_resnet
		torch.manual_seed(3)
		net = mp_resnet.ResNet(depth=1, widths=(4, 8), classes=10)
		meta = {"format": "mp-resnet", "format_version": "1", "depth": "1",
		        "widths": "4,8", "stem_kernel": "3", "stem_stride": "2",
		        "shortcut": "A", "classes": "10", "fc_bn": "1", "bn_eps": "0.001",
		        "bn_momentum": "0.9", "input_size": "112", "mean": "120,115,100"}
		state = {k: v.numpy().astype(np.float32) for k, v in net.state_dict().items()
		         if not k.endswith("num_batches_tracked")}
		# as safetensors.torch.save_file writes it: no CRC
		mp_resnet.write_safetensors("torch.safetensors", state, meta, checksums=False)
		# as the toolkit writes it: version 2 with both CRCs
		mp_resnet.write_safetensors("torch2.safetensors", state, dict(meta, format_version="2"))
		state["fc.weight"] = np.zeros((10, 9), np.float32)
		mp_resnet.write_safetensors("bad.safetensors", state, meta)
	EOF
	run inspect --verify torch.safetensors
	assert_status 0
	assert_equal "$output" "torch.safetensors: OK: header, names and shapes (the file has no CRC: neither the header and metadata nor the data are covered)"
	assert_contains "$(inspect torch.safetensors)" "data CRC:     none"
	run inspect --verify torch2.safetensors
	assert_equal "$output" "torch2.safetensors: OK: header CRC, data CRC, names and shapes"
	run inspect --diff torch.safetensors torch2.safetensors
	assert_status 0
	run --separate-stderr inspect --verify bad.safetensors
	assert_status 1
	assert_contains "$stderr" "bad.safetensors: tensor fc.weight has shape [10,9], expected [10,8]"
}

@test "format_version 1 files load and --verify says their header is not covered; a damaged CRC key is an error" {
	init 1 4,8 A 10 1 w.safetensors
	# the form format_version 1 had: no header CRC, the data CRC last
	PYTHONPATH="$MP_ROOT/scripts" "$PY" - <<-'EOF'
		import mp_resnet
		t, meta = mp_resnet.read_safetensors("w.safetensors")
		assert list(meta)[0] == "header_crc32" and list(meta)[-1] == "crc32"
		del meta["header_crc32"]
		mp_resnet.write_safetensors("v2-without.safetensors", t, meta, checksums=False)
		meta["format_version"] = "1"
		mp_resnet.write_safetensors("v1.safetensors", t, meta, checksums=False)
		# what no CRC covers in version 1: a damaged mean passes
		meta["mean"] = "0" + meta["mean"][1:]
		mp_resnet.write_safetensors("v1-mean.safetensors", t, meta, checksums=False)
		blob = bytearray(open("w.safetensors", "rb").read())
		for key, name in ((b'"header_crc32"', "hkey"), (b'"crc32"', "dkey"), (b'"mean":"', "mean")):
		    b = bytearray(blob)
		    b[b.index(key) + len(key) - (0 if name == "mean" else 2)] ^= 1
		    open(name + ".safetensors", "wb").write(b)
	EOF
	run inspect --verify v1.safetensors
	assert_status 0
	assert_equal "$output" "v1.safetensors: OK: header, data CRC, names and shapes (format_version 1: the header and metadata are not covered by a CRC)"
	assert_contains "$(inspect v1.safetensors)" "header CRC:   none (the header and metadata are not covered)"
	run inspect --diff v1.safetensors w.safetensors
	assert_status 0
	assert_equal "$(inspect --tensors v1.safetensors)" "$(inspect --tensors w.safetensors)"
	run inspect --verify v1-mean.safetensors
	assert_status 0
	# version 2 without its header CRC, or with a damaged key, is refused
	run --separate-stderr inspect --verify v2-without.safetensors
	assert_status 1
	assert_equal "$stderr" 'mp-inspect: v2-without.safetensors: metadata "header_crc32" is missing or damaged: format_version 2 has it as the first key of __metadata__ (a file rewritten by other software: set format_version to 1 there, and leave out "crc32" if the tensors changed)'
	for f in hkey dkey mean; do
		for mode in --verify --tensors ""; do
			# shellcheck disable=SC2086
			run --separate-stderr inspect $mode $f.safetensors
			assert_status 1
			assert_contains "$stderr" "mp-inspect: $f.safetensors: "
		done
	done
	assert_contains "$stderr" "header CRC mismatch: the file is corrupt (header_crc32 "
	run --separate-stderr inspect --verify hkey.safetensors
	assert_contains "$stderr" 'metadata "header_crc32" is missing or damaged'
}

@test "weights and dataset options do not mix" {
	init 1 4,8 A 10 1 w.safetensors
	run --separate-stderr inspect --list w.safetensors
	assert_status 2
	assert_contains "$(first_line "$stderr")" "is a weights file"
	mkimg make solid a.png 8 8
	echo "a.png 0" >list.txt
	bw -q --size 8 -o db list.txt
	run --separate-stderr inspect --tensors db
	assert_status 2
	run --separate-stderr inspect --diff w.safetensors
	assert_status 2
	# a dataset given to --diff is the wrong request, as for --tensors
	run --separate-stderr inspect --diff w.safetensors db
	assert_status 2
	assert_equal "$(first_line "$stderr")" "mp-inspect: --diff takes two weights files: db is not one"
}

@test "the modes that read one weights file say so when given two or none; - is no weights file for --diff" {
	init 1 4,8 A 10 1 w.safetensors
	cp w.safetensors v.safetensors
	while IFS='|' read -r args want; do
		# shellcheck disable=SC2086
		run --separate-stderr inspect $args
		assert_status 2
		assert_equal "$output" ""
		assert_equal "$(first_line "$stderr")" "$want"
		assert_contains "$stderr" "usage: mp-inspect"
	done <<-'EOF'
		--tensors w.safetensors v.safetensors|mp-inspect: expected one WEIGHTS
		--dump fc.weight w.safetensors v.safetensors|mp-inspect: expected one WEIGHTS
		--tensors|mp-inspect: missing WEIGHTS
		--verify w.safetensors v.safetensors|mp-inspect: expected one DATASET or WEIGHTS
		w.safetensors v.safetensors|mp-inspect: expected one DATASET or WEIGHTS
		-o x.png w.safetensors|mp-inspect: -o is for --extract
		--diff - w.safetensors|mp-inspect: --diff takes two weights files: weights cannot be read from standard input
		--diff w.safetensors -|mp-inspect: --diff takes two weights files: weights cannot be read from standard input
	EOF
}

@test "an option given more than once takes its last value, as the man page says" {
	init 1 4,8 A 10 1 a.safetensors
	init 1 4,8 A 10 2 b.safetensors
	assert_equal "$(inspect --dump nope --dump fc.bias a.safetensors)" "$(inspect --dump fc.bias a.safetensors)"
	run inspect --tol 1e9 --tol 0 --diff a.safetensors b.safetensors
	assert_status 1
	mkimg make solid a.png 8 8
	mkimg make solid b.png 8 8 color=1,2,3
	printf 'a.png 0\nb.png 1\n' >list.txt
	bw -q --size 8 -o db list.txt
	assert_equal "$(inspect --record 0 --record 1 db | sed -n 2p)" "name:        b.png"
	inspect --extract 0 --extract 1 -o x.png -o y.png db
	[[ ! -e x.png ]]
	assert_equal "$(mkimg colors y.png 0 0 8 8)" "1,2,3"
	grep -q "An option given more than once takes its last value" "$MP_ROOT/man/mp-inspect.1"
}

@test "--diff treats equal infinities as equal and a NaN difference as different" {
	PYTHONPATH="$MP_ROOT/scripts" "$PY" - <<-'EOF'
		import numpy as np, mp_resnet
		a = np.array([1.0, np.inf, -np.inf, 3.0], np.float32)
		b = a.copy(); b[3] = np.nan
		mp_resnet.write_safetensors("a.safetensors", {"t": a})
		mp_resnet.write_safetensors("b.safetensors", {"t": b})
	EOF
	run inspect --diff a.safetensors a.safetensors
	assert_status 0
	assert_equal "$(sed -n 2p <<<"$output")" "$(printf 't\t0\t0\tsame')"
	run inspect --tol 1e9 --diff a.safetensors b.safetensors
	assert_status 1
	assert_contains "$output" "DIFFERENT"
}

@test "--diff: an infinity in B does not hide a difference beside it" {
	PYTHONPATH="$MP_ROOT/scripts" "$PY" - <<-'EOF'
		import numpy as np, mp_resnet
		mp_resnet.write_safetensors("a.safetensors", {"t": np.array([np.inf, 1, 4], np.float32)})
		mp_resnet.write_safetensors("b.safetensors", {"t": np.array([np.inf, 2, 4], np.float32)})
	EOF
	run inspect --diff a.safetensors b.safetensors
	assert_status 1
	assert_equal "$(sed -n 2p <<<"$output")" "$(printf 't\t1\t0.25\tDIFFERENT')"
	run inspect --tol 0.25 --diff a.safetensors b.safetensors
	assert_status 0
	assert_equal "$(sed -n 2p <<<"$output")" "$(printf 't\t1\t0.25\twithin tol')"
}

@test "F64 at the ends of its range: --diff sees a difference that underflows, --tensors sums without overflow" {
	PYTHONPATH="$MP_ROOT/scripts" "$PY" - <<-'EOF'
		import numpy as np, mp_resnet
		mp_resnet.write_safetensors("a.safetensors", {"c": np.array([1e-300, 1e300])})
		mp_resnet.write_safetensors("b.safetensors", {"c": np.array([2e-300, 1e300])})
		mp_resnet.write_safetensors("s.safetensors", {"a": np.array([3e-310]),
			"b": np.array([1e200, -1e200]), "c": np.array([1e308, 1e308])})
	EOF
	# 1e-300 beside 1e300 is 1e-600 relative, below any double: not the 0 of "same"
	run inspect --diff a.safetensors b.safetensors
	assert_status 1
	assert_equal "$(sed -n 2p <<<"$output" | cut -f 1,2,4)" "$(printf 'c\t1e-300\tDIFFERENT')"
	run inspect --tensors s.safetensors
	assert_status 0
	assert_equal "$(sed -n '2,4p' <<<"$output" | cut -f 1,4,5,8)" "$(printf 'a\t3e-310\t0\t3e-310\nb\t0\t1e+200\t1.41421e+200\nc\t1e+308\t0\t1.41421e+308')"
}

@test "mp_resnet.write_safetensors keeps a scalar's shape [] and writes row-major bytes" {
	PYTHONPATH="$MP_ROOT/scripts" "$PY" - <<-'EOF'
		import numpy as np, mp_resnet
		f = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
		mp_resnet.write_safetensors("s.safetensors", {"s": np.array(2.5, np.float32), "f": f})
		t, _ = mp_resnet.read_safetensors("s.safetensors")
		assert t["s"].shape == () and t["s"] == 2.5, t["s"]
		assert (t["f"] == f).all()
	EOF
	run inspect --tensors s.safetensors
	assert_status 0
	assert_equal "$(awk -F'\t' '$1 == "s" { print $2, $4 }' <<<"$output")" "[] 2.5"
	assert_equal "$(inspect --dump f s.safetensors | tr '\n' ' ')" "0 1 2 3 4 5 "
}

@test "--dump and --json give back every value exactly: -0, F64, I64" {
	PYTHONPATH="$MP_ROOT/scripts" "$PY" - <<-'EOF'
		import numpy as np, mp_resnet
		mp_resnet.write_safetensors("v.safetensors", {
		    "f": np.array([-0.0, 0.1, 1e-45, np.nan, 3.4028235e38], np.float32),
		    "d": np.array([0.1 + 0.2, -0.0, 1 / 3], np.float64),
		    "i": np.array([2**53 + 1, -2**63, 1234567890123], np.int64)})
	EOF
	inspect --json --dump f v.safetensors >f.json
	inspect --json --dump d v.safetensors >d.json
	inspect --json --dump i v.safetensors >i.json
	inspect --dump d v.safetensors >d.txt
	inspect --dump i v.safetensors >i.txt
	inspect --json --tensors v.safetensors >t.json
	PYTHONPATH="$MP_ROOT/scripts" "$PY" - <<-'EOF'
		import json, numpy as np, mp_resnet
		t, _ = mp_resnet.read_safetensors("v.safetensors")
		def same(a, b):
		    assert a.tobytes() == b.tobytes(), (a, b)
		f = json.load(open("f.json"))
		same(t["f"][[0, 1, 2, 4]], np.array([f[0], f[1], f[2], f[4]], np.float32))
		assert f[3] is None
		same(t["d"], np.array(json.load(open("d.json")), np.float64))
		same(t["d"], np.array([float(l) for l in open("d.txt")], np.float64))
		same(t["i"], np.array(json.load(open("i.json")), np.int64))
		same(t["i"], np.array([int(l) for l in open("i.txt")], np.int64))
		st = {o["name"]: o for o in json.load(open("t.json"))}
		assert str(st["f"]["min"]) == "-0.0" or st["f"]["min"] < 0, st["f"]
		assert np.float32(st["f"]["max"]) == np.float32(3.4028235e38)
	EOF
}

@test "a checkpoint missing part of its momentum is refused; a missing file is a runtime error" {
	init 1 4,8 A 10 1 ck.safetensors momentum
	PYTHONPATH="$MP_ROOT/scripts" "$PY" - <<-'EOF'
		import mp_resnet
		t, meta = mp_resnet.read_safetensors("ck.safetensors")
		del t["momentum.fc.weight"]
		del meta["crc32"]
		mp_resnet.write_safetensors("part.safetensors", t, meta)
	EOF
	run --separate-stderr inspect --verify part.safetensors
	assert_status 1
	assert_contains "$stderr" "no tensor named momentum.fc.weight (a checkpoint with part of its momentum)"
	run --separate-stderr inspect --tensors nothing.safetensors
	assert_status 1
	assert_equal "$stderr" "mp-inspect: nothing.safetensors: No such file or directory"
}

@test "a file that cannot be opened exits 1 in every mode; a readable non-weights file is a usage error for --tensors" {
	init 1 4,8 A 10 1 w.safetensors
	ln -s nowhere dangling.safetensors
	for f in nothing.safetensors dangling.safetensors; do
		# F stands for the file.
		for args in F "--verify F" "--list F" "--record 0 F" "--extract 0 -o x.png F" \
			"--json F" "--tensors F" "--dump fc.weight F" "--diff w.safetensors F" \
			"--diff F w.safetensors"; do
			# shellcheck disable=SC2086
			run --separate-stderr inspect ${args//F/$f}
			assert_status 1
			if [[ $f == dangling.safetensors ]]; then
				assert_equal "$stderr" "mp-inspect: $f: a symbolic link to nowhere, which does not exist"
			else
				assert_equal "$stderr" "mp-inspect: $f: No such file or directory"
			fi
		done
	done
	if [[ $EUID -ne 0 ]]; then
		cp w.safetensors locked.safetensors
		chmod 000 locked.safetensors
		run --separate-stderr inspect --tensors locked.safetensors
		assert_status 1
		assert_equal "$stderr" "mp-inspect: locked.safetensors: Permission denied"
	fi
	mkdir adir
	echo hello >text.txt
	for f in adir text.txt -; do
		run --separate-stderr inspect --tensors "$f" </dev/null
		assert_status 2
		name=$f
		[[ $f == - ]] && name="<stdin>"
		assert_equal "$(first_line "$stderr")" "mp-inspect: $name is not a weights file: --tensors and --dump are for weights files"
	done
}

@test "a metadata integer with a sign or a leading zero, a number with a blank or in hexadecimal, is refused by mp-inspect and by mp_resnet.load" {
	init 1 4,8 A 10 1 w.safetensors
	# each case: the key, its value, and mp_resnet.load's reason (- where
	# it does not read the key)
	PYTHONPATH="$MP_ROOT/scripts" "$PY" - <<-'EOF'
		import mp_resnet
		t, meta = mp_resnet.read_safetensors("w.safetensors")
		for i, (key, value, why) in enumerate((
		        ("depth", "+1", "a whole number"), ("depth", " 1", "a whole number"),
		        ("depth", "01", "a whole number"), ("widths", "4,08", "a list of whole numbers"),
		        ("classes", "10 ", "a whole number"), ("format_version", "02", None),
		        ("bn_eps", " 0.001", "a number"), ("bn_eps", "0x1p-10", "a number"),
		        ("bn_momentum", "nan", "a number"), ("mean", "1,2, 3", None))):
		    mp_resnet.write_safetensors("bad%d.safetensors" % i, t, dict(meta, **{key: value}))
		    if why:
		        try:
		            mp_resnet.load("bad%d.safetensors" % i)
		        except ValueError as e:
		            assert str(e) == 'metadata "%s" = "%s" is not %s' % (key, value, why), e
		        else:
		            raise AssertionError("mp_resnet.load took %s %r" % (key, value))
	EOF
	local k want=(
		'metadata "depth" = "+1" is not a number from 1 to 1000'
		'metadata "depth" = " 1" is not a number from 1 to 1000'
		'metadata "depth" = "01" is not a number from 1 to 1000'
		'metadata "widths" = "4,08" is not a list of up to 8 widths'
		'metadata "classes" = "10 " is not a number from 2 to 65536'
		'metadata "format_version" = "02" is not a version (expected 1 to 2)'
		'metadata "bn_eps" = " 0.001" is not a number'
		'metadata "bn_eps" = "0x1p-10" is not a number'
		'metadata "bn_momentum" = "nan" is not a number'
		'metadata "mean" is not r,g,b')
	for k in "${!want[@]}"; do
		run --separate-stderr inspect --verify "bad$k.safetensors"
		assert_status 1
		assert_equal "$stderr" "mp-inspect: bad$k.safetensors: ${want[$k]}"
	done
	run inspect --verify w.safetensors
	assert_status 0
}
