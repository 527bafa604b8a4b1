# miniplaces toolkit.  make [CUDA=auto|0|1] [OPT=-O2] ; make test ; make demo
# make fuzz [FUZZ_SECONDS=60] [FUZZ_ONLY="stream meta"] fuzzes the file parsers.
# make deps (as root) installs the Debian packages the build and tests need.
# The usual variables are the user's: CFLAGS (default "$(OPT) -g"), CPPFLAGS,
# LDFLAGS, CXXFLAGS, CC, CXX, PREFIX, DESTDIR; the flags the build needs are
# added to them. SAN=address,undefined builds everything with those sanitizers,
# the first report ending the program (ASAN_OPTIONS, UBSAN_OPTIONS as usual).

PREFIX    ?= /usr/local
DESTDIR   ?=
CUDA      ?= auto
CUDA_HOME ?= /usr/local/cuda
CUDA_ARCH ?= sm_90
# cuDNN and cuBLAS headers and libraries, when not under CUDA_HOME (the pip
# packages nvidia-cudnn-*, nvidia-cublas: see scripts/device-check.sh)
CUDNN_INC ?= $(CUDA_HOME)/include
CUDNN_LIB ?= $(CUDA_HOME)/lib64
CUBLAS_INC ?= $(CUDA_HOME)/include
CUBLAS_LIB ?= $(CUDA_HOME)/lib64
# cudart's static library (a pip nvcc's CUDA_HOME has lib/, not lib64/)
CUDART_LIB ?= $(CUDA_HOME)/lib64
OPT       ?= -O2
CFLAGS    ?= $(OPT) -g
CXXFLAGS  ?= $(OPT) -g
CPPFLAGS  ?=
LDFLAGS   ?=
SAN       ?=
CC        := $(if $(filter default,$(origin CC)),gcc,$(CC))
NVCC      ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard $(CUDA_HOME)/bin/nvcc))

B := build
# the build as the scripts and tests are given it (B may be relative)
BUILD_DIR = $(abspath $(B))

# what the programs need to build; reproduce wants only these
BUILD_DEB_PACKAGES := gcc g++ make pkg-config perl libturbojpeg0-dev libpng-dev \
	liblmdb-dev zlib1g-dev libcjson-dev libopenblas-dev
DEB_PACKAGES := $(BUILD_DEB_PACKAGES) lmdb-utils libcmocka-dev bats mandoc \
	python3 python3-numpy python3-pil python3-lmdb dataset-fashion-mnist \
	libjpeg-turbo-progs python3-torch gnuplot-nox strace shellcheck locales

# ---- what the machine has -------------------------------------------------
# test and demo install what is missing first, then build in a sub-make.
NO_BUILD_GOALS := deps clean distclean test demo reproduce lint-man uninstall fuzz fuzz-check
BUILD_GOALS := $(filter-out $(NO_BUILD_GOALS),$(or $(MAKECMDGOALS),all))
ifneq ($(BUILD_GOALS),)
pkgver = $(shell pkg-config --modversion $(1) 2>/dev/null)
V_TURBOJPEG := $(call pkgver,libturbojpeg)
V_PNG       := $(call pkgver,libpng)
V_LMDB      := $(call pkgver,lmdb)
V_CJSON     := $(call pkgver,libcjson)
V_ZLIB      := $(call pkgver,zlib)
V_CMOCKA    := $(call pkgver,cmocka)
V_OPENBLAS  := $(call pkgver,openblas)
HAVE_CUDNN  := $(wildcard $(CUDNN_INC)/cudnn.h)
# A CUDA=1 that cannot be honoured stops the build, after the "found:" lines
# have said what is there.
ifeq ($(CUDA),0)
USE_CUDA :=
else ifeq ($(CUDA),1)
USE_CUDA := yes
CUDA_ERROR := $(if $(NVCC),$(if $(HAVE_CUDNN),,CUDA=1 but cudnn.h was not found under $(CUDNN_INC) (set CUDNN_INC=)),CUDA=1 but nvcc was not found on PATH nor in $(CUDA_HOME)/bin (set NVCC= or CUDA_HOME=))
else ifeq ($(CUDA),auto)
USE_CUDA := $(if $(and $(NVCC),$(HAVE_CUDNN)),yes)
else
$(error CUDA must be auto, 0 or 1, not "$(CUDA)")
endif
ifeq ($(filter-out 0 1,$(MAKELEVEL)),)
$(info found: TurboJPEG $(or $(V_TURBOJPEG),MISSING), libpng $(or $(V_PNG),MISSING), LMDB $(or $(V_LMDB),MISSING), cJSON $(or $(V_CJSON),MISSING), zlib $(or $(V_ZLIB),MISSING), cmocka $(or $(V_CMOCKA),MISSING), OpenBLAS $(or $(V_OPENBLAS),MISSING))
$(info found: nvcc $(or $(NVCC),no), cuDNN $(if $(HAVE_CUDNN),yes,no); CUDA=$(CUDA) -> CUDA backend $(if $(CUDA_ERROR),cannot be built,$(if $(USE_CUDA),built for $(CUDA_ARCH),not built)))
endif
ifneq ($(CUDA_ERROR),)
$(error $(CUDA_ERROR))
endif
MISSING := $(strip $(if $(V_TURBOJPEG),,libturbojpeg0-dev) $(if $(V_PNG),,libpng-dev) \
	$(if $(V_LMDB),,liblmdb-dev) $(if $(V_CJSON),,libcjson-dev) $(if $(V_ZLIB),,zlib1g-dev) \
	$(if $(V_OPENBLAS),,libopenblas-dev))
ifneq ($(MISSING),)
$(error missing libraries: $(MISSING); run "make deps" as root)
endif
endif

PKG_CFLAGS := $(shell pkg-config --cflags libturbojpeg libpng lmdb libcjson zlib openblas 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs libturbojpeg libpng lmdb libcjson zlib openblas 2>/dev/null)

# What the build needs comes first, the user's CPPFLAGS and CFLAGS after it
# (so that CFLAGS=-O0 wins); the rules use MP_CFLAGS.
# -fno-sanitize-recover: the first report ends the program with a failure,
# so that a test cannot pass over one (and gcc's UBSan checks leave no
# path on which it warns of a NULL the check has just ruled out).
SANFLAGS := $(if $(SAN),-fsanitize=$(SAN) -fno-sanitize-recover=all -fno-omit-frame-pointer)
# clang reports each "omp simd" loop it leaves scalar (at -O1, or with the
# sanitizers): a note about speed, not about the code
CLANG_WARN := $(if $(BUILD_GOALS),$(if $(findstring clang,$(shell $(CC) --version 2>/dev/null | head -1)),-Wno-pass-failed))
MP_CFLAGS := $(strip -std=c11 -Wall -Wextra $(CLANG_WARN) -D_GNU_SOURCE -pthread -fopenmp -Icommon -Ikernels $(PKG_CFLAGS) \
	$(CPPFLAGS) $(CFLAGS) $(SANFLAGS))
# --as-needed: a program records only the libraries it uses (the CUDA ones
# only where it can open the CUDA backend)
LDLIBS  := -Wl,--as-needed $(PKG_LIBS) -lm -pthread -fopenmp
NVFLAGS := -O2 -arch=$(CUDA_ARCH) -DMP_CUDA_ARCH=\"$(CUDA_ARCH)\" -Ikernels -I$(CUDNN_INC) -I$(CUBLAS_INC) -Xcompiler -Wall,-Wextra

# The CUDA backend is a module (kernels/cuda/module.h) that the programs open
# on first use: they link only its loader, and export their symbols for it.
CUDA_MODULE := $(B)/lib/miniplaces/libmp-cuda.so
CUDA_MODULE_INSTALLED := $(PREFIX)/lib/miniplaces/libmp-cuda.so
ifneq ($(USE_CUDA),)
MP_CFLAGS += -DMP_HAVE_CUDA
LDLIBS  += -ldl -rdynamic
NVFLAGS += -Xcompiler -fPIC -DMP_CUDA_MODULE_BUILD
# cudart static; cuDNN and cuBLAS shared, found at run time through the
# rpath (or LD_LIBRARY_PATH)
CUDA_LIBS := -L$(CUDNN_LIB) -L$(CUBLAS_LIB) -L$(CUDART_LIB) -lcudnn -lcublas -lcudart_static \
	-ldl -lrt -lstdc++ -lm -Wl,-rpath,$(CUDNN_LIB) -Wl,-rpath,$(CUBLAS_LIB)
endif

# ---- sources --------------------------------------------------------------
COMMON_SRC  := $(wildcard common/*.c)
KERNEL_SRC  := $(wildcard kernels/cpu/*.c)
CUDA_SRC    := $(if $(USE_CUDA),$(wildcard kernels/cuda/*.cu))
CUDA_OBJ    := $(CUDA_SRC:%.cu=$(B)/obj/%.o)
ifneq ($(USE_CUDA),)
KERNEL_SRC  := $(filter-out kernels/cpu/device_none.c,$(KERNEL_SRC)) kernels/cuda/loader.c
endif
LIB_OBJ     := $(COMMON_SRC:%.c=$(B)/obj/%.o) $(KERNEL_SRC:%.c=$(B)/obj/%.o)
TOOLS       := $(patsubst tools/%.c,$(B)/bin/%,$(wildcard tools/mp-*.c))
SCRIPT_BINS := $(patsubst scripts/%.c,$(B)/scripts/%,$(wildcard scripts/*.c))
UNIT_TESTS  := $(patsubst tests/unit/%.c,$(B)/tests/%,$(wildcard tests/unit/test_*.c))
ORACLE_BINS := $(patsubst tests/oracle/%.c,$(B)/tests/oracle/%,$(wildcard tests/oracle/*.c))
ORACLE_TESTS := $(sort $(wildcard tests/oracle/test_*.py))
# CUDA against CPU (tests/gpu/): built only with the CUDA backend; the
# test_* programs skip (TAP "1..0 # SKIP") where no device is present, and
# make test runs them when the last build had CUDA (its flags.stamp)
GPU_BINS    := $(if $(USE_CUDA),$(patsubst tests/gpu/%.c,$(B)/tests/gpu/%,$(wildcard tests/gpu/*.c)))
# The CUDA kernels run on the host (tests/emu/): built with the CUDA
# headers, wherever the CUDA backend is, and run by make test (as the
# tests/gpu programs, when the last build had CUDA) with or without a device (-fno-strict-aliasing: the kernels read 16 bytes as
# bf16 pairs, which a host compiler must be told to allow)
EMU_OBJ     := $(B)/obj/tests/emu/emu_device.o
EMU_TESTS   := $(if $(USE_CUDA),$(B)/tests/emu/test_nhwc_emu $(B)/tests/emu/test_cuda_ops_device \
	$(B)/tests/emu/test_emu_device $(B)/tests/emu/test_conv_emu $(B)/tests/emu/test_emu)
EMU_FLAGS   := -std=c++17 $(CPPFLAGS) $(CXXFLAGS) $(SANFLAGS) -Wall -Wextra -Wno-unknown-pragmas -fno-strict-aliasing \
	-D_GNU_SOURCE -pthread \
	-fopenmp -DMP_CUDA_EMULATE -DMP_HAVE_CUDA -Icommon -Ikernels -I$(CUDA_HOME)/include -I$(CUDNN_INC) \
	-I$(CUBLAS_INC)
CLI_TESTS   := $(sort $(wildcard tests/cli/*.bats))
MAN_PAGES   := $(wildcard man/*.1 man/*.5)

.PHONY: all lib tools scripts unit-tests test check-tests demo reproduce deps install uninstall clean \
	distclean lint-man fuzz fuzz-check fuzzers

all: tools scripts

lib: $(B)/libmp.a
tools: $(TOOLS) $(if $(USE_CUDA),$(CUDA_MODULE))
scripts: $(SCRIPT_BINS)

# A change of flags rebuilds everything that depends on them. The stamps
# are rewritten, when what they hold differs, as the Makefile is read rather
# than by a rule that always runs: so a make with nothing to do says so, and
# make -n and make -q tell what would be rebuilt (they write nothing: a
# stamp that would change is then taken as changed). The rules below only
# make a stamp that is missing (make clean all).
FLAGS_LINE := $(CC) $(MP_CFLAGS) $(LDFLAGS) | $(LDLIBS) | $(CXX) $(EMU_FLAGS) | \
	$(NVCC) $(NVFLAGS) | cuda=$(USE_CUDA)
# Where the programs look for the CUDA module: only the module's loader
# knows, so that installing elsewhere (PREFIX) rebuilds that one object.
MODULE_PATHS := $(abspath $(CUDA_MODULE)) $(CUDA_MODULE_INSTALLED)
DRY_RUN := $(findstring n,$(firstword -$(MAKEFLAGS)))$(findstring q,$(firstword -$(MAKEFLAGS)))
define update_stamp
ifneq ($$(file <$(1)),$$($(2)))
ifeq ($$(DRY_RUN),)
$$(shell mkdir -p $$(B))$$(file >$(1),$$($(2)))
else
$(1): .FORCE
endif
endif
endef
ifneq ($(BUILD_GOALS),)
$(eval $(call update_stamp,$(B)/flags.stamp,FLAGS_LINE))
$(eval $(call update_stamp,$(B)/module-paths.stamp,MODULE_PATHS))
endif
shquote = '$(subst ','\'',$(1))'
$(B)/flags.stamp:
	@mkdir -p $(@D) && printf '%s\n' $(call shquote,$(FLAGS_LINE)) > $@
$(B)/module-paths.stamp:
	@mkdir -p $(@D) && printf '%s\n' $(call shquote,$(MODULE_PATHS)) > $@
.FORCE:

$(B)/obj/%.o: %.c $(B)/flags.stamp
	@mkdir -p $(dir $@)
	$(CC) $(MP_CFLAGS) -MMD -MP -c $< -o $@

$(B)/obj/kernels/cuda/loader.o: MP_CFLAGS += -DMP_CUDA_MODULE='"$(abspath $(CUDA_MODULE))"' \
	-DMP_CUDA_MODULE_INSTALLED='"$(CUDA_MODULE_INSTALLED)"'
$(B)/obj/kernels/cuda/loader.o: $(B)/module-paths.stamp

$(B)/obj/%.o: %.cu $(B)/flags.stamp
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -MF $(@:.o=.d) -c $< -o $@

$(B)/libmp.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(CUDA_MODULE): $(CUDA_OBJ) $(B)/flags.stamp
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(CUDA_OBJ) $(CUDA_LIBS)

$(B)/bin/%: tools/%.c $(B)/libmp.a $(B)/flags.stamp
	@mkdir -p $(dir $@) $(B)/obj/tools
	$(CC) $(MP_CFLAGS) $(LDFLAGS) -MMD -MP -MF $(B)/obj/tools/$*.d -o $@ $< $(B)/libmp.a $(LDLIBS)

$(B)/scripts/%: scripts/%.c $(B)/libmp.a $(B)/flags.stamp
	@mkdir -p $(dir $@) $(B)/obj/scripts
	$(CC) $(MP_CFLAGS) $(LDFLAGS) -MMD -MP -MF $(B)/obj/scripts/$*.d -o $@ $< $(B)/libmp.a $(LDLIBS)

# the CUDA module's code on an emulated device (tests/emu/emu_device.cpp),
# linked into the tests with the backend's public names
$(EMU_OBJ): tests/emu/emu_device.cpp tests/emu/cuda_emu.h tests/emu/emu_device.h \
		$(wildcard kernels/cuda/*.cu kernels/cuda/*.h) $(B)/flags.stamp
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_FLAGS) -MMD -MP -c -o $@ $<

# the tests on the emulated device: its kernels against the CPU reference,
# and its own rules
$(B)/tests/emu/test_nhwc_emu $(B)/tests/emu/test_emu_device: $(B)/tests/emu/%: tests/emu/%.cpp \
		$(EMU_OBJ) $(B)/libmp.a
	@mkdir -p $(dir $@) $(B)/obj/tests/emu
	$(CXX) $(EMU_FLAGS) $(LDFLAGS) -Itests/emu \
		-MMD -MP -MF $(@:$(B)/tests/%=$(B)/obj/tests/%.d) -o $@ $< $(EMU_OBJ) $(B)/libmp.a $(LDLIBS)

# conv.cu's algorithm choice against a stand-in for cuDNN (not emu_device.o:
# it has conv.cu's own entry points)
$(B)/tests/emu/test_conv_emu: tests/emu/test_conv_emu.cpp tests/emu/cuda_emu.h \
		$(wildcard kernels/cuda/*.cu kernels/cuda/*.h) $(B)/libmp.a $(B)/flags.stamp
	@mkdir -p $(dir $@) $(B)/obj/tests/emu
	$(CXX) $(EMU_FLAGS) $(LDFLAGS) -Itests/emu \
		-MMD -MP -MF $(@:$(B)/tests/%=$(B)/obj/tests/%.d) -o $@ $< $(B)/libmp.a $(LDLIBS)

# the CUDA module as built, on a device emulated on the host (the CUDA
# runtime, cuDNN and cuBLAS stood in for; MP_CUDA_MODULE=, for
# tests/cli/emucuda.bats): the programs' own GPU paths without a GPU
EMU_MODULE := $(B)/tests/emu/libmp-cuda-emu.so
$(EMU_MODULE): tests/emu/emu_device.cpp tests/emu/cuda_emu.h tests/emu/emu_device.h \
		$(wildcard kernels/cuda/*.cu kernels/cuda/*.h) $(B)/flags.stamp
	@mkdir -p $(dir $@) $(B)/obj/tests/emu
	$(CXX) $(EMU_FLAGS) -DMP_CUDA_MODULE_BUILD -fPIC -shared $(LDFLAGS) \
		-MMD -MP -MF $(B)/obj/tests/emu/emu_device_module.d -o $@ $<

# the emulator itself: orders of blocks and threads (MP_EMU_ORDER), digest, device memory
$(B)/tests/emu/test_emu: tests/emu/test_emu.cpp tests/emu/cuda_emu.h $(B)/flags.stamp
	@mkdir -p $(dir $@) $(B)/obj/tests/emu
	$(CXX) $(EMU_FLAGS) $(LDFLAGS) -Itests/emu \
		-MMD -MP -MF $(@:$(B)/tests/%=$(B)/obj/tests/%.d) -o $@ $<

# test_cuda_ops itself, on the emulated device
$(B)/tests/emu/test_cuda_ops_device: tests/gpu/test_cuda_ops.c $(EMU_OBJ) $(B)/libmp.a \
		$(B)/flags.stamp
	@mkdir -p $(dir $@) $(B)/obj/tests/emu
	$(CC) $(MP_CFLAGS) $(LDFLAGS) -DMP_TEST_EMULATED_DEVICE \
		-MMD -MP -MF $(@:$(B)/tests/%=$(B)/obj/tests/%.d) -o $@ $< \
		$(EMU_OBJ) $(B)/libmp.a $(LDLIBS) -lstdc++

$(B)/tests/%: tests/unit/%.c $(B)/libmp.a $(B)/flags.stamp
	@mkdir -p $(dir $@) $(B)/obj/tests
	$(CC) $(MP_CFLAGS) $(LDFLAGS) $(shell pkg-config --cflags cmocka) -MMD -MP -MF $(B)/obj/tests/$*.d \
		-o $@ $< $(B)/libmp.a $(LDLIBS) $(shell pkg-config --libs cmocka)

$(B)/tests/gpu/%: tests/gpu/%.c $(B)/libmp.a $(B)/flags.stamp
	@mkdir -p $(dir $@) $(B)/obj/tests/gpu
	$(CC) $(MP_CFLAGS) $(LDFLAGS) -MMD -MP -MF $(B)/obj/tests/gpu/$*.d -o $@ $< $(B)/libmp.a $(LDLIBS)

# libFuzzer harnesses: built only by the sub-make of fuzz and fuzz-check
# below, where CC is clang and libmp.a has the fuzzer's instrumentation.
$(B)/fuzzers/fuzz_%: tests/fuzz/fuzz_%.c $(B)/libmp.a $(B)/flags.stamp
	@mkdir -p $(dir $@) $(B)/obj/fuzzers
	$(CC) $(MP_CFLAGS) -fsanitize=fuzzer $(LDFLAGS) -MMD -MP -MF $(B)/obj/fuzzers/fuzz_$*.d \
		-o $@ $< $(B)/libmp.a $(LDLIBS)

fuzzers: $(patsubst tests/fuzz/%.c,$(B)/fuzzers/%,$(wildcard tests/fuzz/fuzz_*.c))
	@:

$(B)/tests/oracle/%: tests/oracle/%.c $(B)/libmp.a $(B)/flags.stamp
	@mkdir -p $(dir $@) $(B)/obj/tests/oracle
	$(CC) $(MP_CFLAGS) $(LDFLAGS) -MMD -MP -MF $(B)/obj/tests/oracle/$*.d -o $@ $< $(B)/libmp.a $(LDLIBS)

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)

# ---- tests, demo, man -----------------------------------------------------
unit-tests: $(UNIT_TESTS) $(ORACLE_BINS) $(GPU_BINS) $(EMU_TESTS) $(if $(USE_CUDA),$(CUDA_MODULE) $(EMU_MODULE))
	@:

# Every test speaks TAP; prove runs them all, TEST_JOBS files at a time
# (default: one per core, at most 4: many programs of the tests take every
# core for OpenMP, and the longest file bounds the run anyway), and prints
# the closing summary. The longest files start first, so that the run
# does not end on one of them alone.
TEST_JOBS  ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$((n < 4 ? n : 4)))
# A sanitized build's report must not pass for the status 1 a test
# expects: it exits 99 (ASan, LeakSanitizer) or 98 (UBSan); what the
# caller's ASAN_OPTIONS and UBSAN_OPTIONS say comes after, and wins.
SAN_TEST_ENV := $(if $(SAN),ASAN_OPTIONS="exitcode=99:$$ASAN_OPTIONS" \
	UBSAN_OPTIONS="exitcode=98:print_stacktrace=1:$$UBSAN_OPTIONS")
SLOW_TESTS := $(filter $(addprefix tests/cli/,train.bats reproduce.bats build.bats emufail.bats),$(CLI_TESTS))
test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all unit-tests
	@$(MAKE) --no-print-directory fuzz-check
	@gpu=$$(grep -q 'cuda=yes$$' $(B)/flags.stamp && ls $(B)/tests/gpu/test_* $(B)/tests/emu/test_* 2>/dev/null); \
		CMOCKA_MESSAGE_OUTPUT=TAP MP_BIN=$(BUILD_DIR)/bin MP_SCRIPTS=$(BUILD_DIR)/scripts \
		MP_ROOT=$(CURDIR) $(SAN_TEST_ENV) prove -j $(TEST_JOBS) $(SLOW_TESTS) $(filter-out $(SLOW_TESTS),$(CLI_TESTS)) \
		$(UNIT_TESTS) $$gpu $(ORACLE_TESTS)

# ---- fuzzing --------------------------------------------------------------
# One libFuzzer harness per parser of untrusted bytes (tests/fuzz/fuzz_*.c),
# linked with a libmp.a of its own (build/fuzz) built by clang with ASan and
# UBSan. tests/fuzz/corpus/NAME holds the seeds and every input that once
# failed: make test replays them (fuzz-check); make fuzz runs each harness
# FUZZ_SECONDS, keeping what it finds in build/fuzz/corpus/NAME and a failing
# input in build/fuzz/crash-NAME-*.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_ONLY    ?= $(FUZZ_NAMES)
FUZZ_B       := $(B)/fuzz
FUZZ_MAKE     = $(MAKE) --no-print-directory B=$(FUZZ_B) CC=$(FUZZ_CC) CUDA=0 SAN=address,undefined \
	CFLAGS='-O1 -g -fsanitize=fuzzer-no-link -fno-sanitize-recover=all'
# the largest input tried, in bytes: a few times the seeds
FUZZ_MAX_LEN_image := 16384
FUZZ_MAX_LEN_list := 4096
FUZZ_MAX_LEN_macrobatch := 8192
FUZZ_MAX_LEN_meta := 4096
FUZZ_MAX_LEN_safetensors := 16384
FUZZ_MAX_LEN_stream := 16384
FUZZ_MAX_LEN_weights := 16384
FUZZ_OPTS := -rss_limit_mb=2048 -timeout=10
fuzz_cc_ok = printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' | \
	$(FUZZ_CC) -x c -fsanitize=fuzzer,address,undefined -fopenmp -o /dev/null - 2>/dev/null

fuzz:
	@$(if $(filter-out $(FUZZ_NAMES),$(FUZZ_ONLY)),{ echo "fuzz: FUZZ_ONLY: no harness $(filter-out $(FUZZ_NAMES),$(FUZZ_ONLY)) (there are: $(FUZZ_NAMES))" >&2; exit 2; })
	@$(fuzz_cc_ok) || { echo "fuzz: $(FUZZ_CC) cannot build libFuzzer programs (apt-get install clang)" >&2; exit 1; }
	@$(FUZZ_MAKE) fuzzers
	@$(foreach t,$(FUZZ_ONLY),mkdir -p $(FUZZ_B)/corpus/$(t) && \
		echo "fuzz: $(t) for $(FUZZ_SECONDS)s" && \
		$(FUZZ_B)/fuzzers/fuzz_$(t) $(FUZZ_OPTS) -max_len=$(FUZZ_MAX_LEN_$(t)) \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_B)/crash-$(t)- $(FUZZ_B)/corpus/$(t) tests/fuzz/corpus/$(t) &&) :

# Each harness over its committed corpus once: every input must pass.
fuzz-check:
	@if ! $(fuzz_cc_ok); then \
		echo "fuzz-check: SKIP: $(FUZZ_CC) cannot build libFuzzer programs (apt-get install clang)"; \
	else $(FUZZ_MAKE) fuzzers >/dev/null && \
		$(foreach t,$(FUZZ_NAMES),$(FUZZ_B)/fuzzers/fuzz_$(t) $(FUZZ_OPTS) tests/fuzz/corpus/$(t)/* \
			>$(FUZZ_B)/check-$(t).log 2>&1 && \
		echo "fuzz-check: $(t): $$(ls tests/fuzz/corpus/$(t) | wc -l) inputs pass" || \
		{ echo "fuzz-check: $(t) FAILED (see $(FUZZ_B)/check-$(t).log)"; exit 1; } &&) :; fi

demo:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	MP_BIN=$(BUILD_DIR)/bin MP_SCRIPTS=$(BUILD_DIR)/scripts bash scripts/demo.sh $(B)/demo

# The whole recipe on the real dataset (see scripts/reproduce.sh):
#   make reproduce MINIPLACES=DIR [REPRO_DIR=build/reproduce] [REPRO_OPTS="--epochs 1"]
REPRO_DIR ?= $(B)/reproduce
reproduce:
	@test -n "$(MINIPLACES)" || { echo "usage: make reproduce MINIPLACES=DIR [REPRO_DIR=DIR] [REPRO_OPTS=\"mp-train options\"]" >&2; exit 2; }
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BUILD_DEB_PACKAGES)"
	@$(MAKE) --no-print-directory all
	MP_BIN=$(BUILD_DIR)/bin bash scripts/reproduce.sh "$(MINIPLACES)" "$(REPRO_DIR)" $(REPRO_OPTS)

lint-man:
	mandoc -Tlint -Wwarning $(MAN_PAGES)

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "deps: missing Debian packages:" $$missing; \
		echo "deps: run 'make deps' as root to install them"; exit 1; \
	else echo "deps: installing" $$missing; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends $$missing; fi

# The destination quoted throughout: a PREFIX may hold spaces.
DEST = $(DESTDIR)$(PREFIX)
install: tools
	install -d "$(DEST)/bin" "$(DEST)/share/man/man1" "$(DEST)/share/man/man5"
	install -m 755 $(TOOLS) "$(DEST)/bin/"
	$(if $(USE_CUDA),d="$(DESTDIR)$(CUDA_MODULE_INSTALLED)" && install -d "$${d%/*}" && \
		install -m 755 $(CUDA_MODULE) "$$d")
	for m in $(wildcard man/*.1); do install -m 644 $$m "$(DEST)/share/man/man1/"; done
	for m in $(wildcard man/*.5); do install -m 644 $$m "$(DEST)/share/man/man5/"; done

uninstall:
	for t in $(notdir $(TOOLS)); do rm -f "$(DEST)/bin/$$t"; done
	d="$(DESTDIR)$(CUDA_MODULE_INSTALLED)" && rm -f "$$d" && { rmdir "$${d%/*}" 2>/dev/null || :; }
	for m in $(notdir $(wildcard man/*.1)); do rm -f "$(DEST)/share/man/man1/$$m"; done
	for m in $(notdir $(wildcard man/*.5)); do rm -f "$(DEST)/share/man/man5/$$m"; done

# build/reproduce holds the reproduction's DBs and run, hours of work that
# no rebuild makes again: clean keeps it (remove it by hand)
clean:
	@if [ -d $(B)/reproduce ]; then \
		find $(B) -mindepth 1 -maxdepth 1 ! -name reproduce -exec rm -rf {} +; \
		echo "clean: kept $(B)/reproduce (the reproduction's data and run)"; \
	else rm -rf $(B); fi

distclean: clean

