# kv_cnode - a C program that is an Erlang node.  See README.md.
#   make          build build/kv_cnode
#   make run      install what is missing, build, start the node (defaults)
#   make test     install what is missing, build, run every unit and CT suite
#   make otp-peers  Debian trees with OTP 27 and 29 for kv_cnode_otp_SUITE (cached)
#   make unit     cmocka suites only;  make ct  Common Test suites only
#   make bench    benchmark against the BEAM baseline (QUICK=1 for a short run)
#   make memcheck the CT suites with kv_cnode under valgrind (zero errors, zero leaks)
#   make check-layers  includes follow the layers (c_src/README.md), and its self-test
#   SANITIZE=1    build with ASan+UBSan

CC      ?= cc
BUILD   ?= build
PKGS    := erlang-base erlang-dev erlang-ssl erlang-common-test erlang-eunit \
           elixir rebar3 libssl-dev libcmocka-dev clang libclang-rt-14-dev valgrind \
           openssl mmdebstrap iproute2
EI_DIR  := $(shell erl -noshell -eval 'io:format("~s",[code:lib_dir(erl_interface)]),halt().' 2>/dev/null)

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter \
           -fno-strict-aliasing -Wno-format-truncation -I$(EI_DIR)/include -Ic_src
LDLIBS  := -L$(EI_DIR)/lib -lei -lssl -lcrypto -lpthread
ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
BUILD   := build/san
endif

SRCS    := $(wildcard c_src/*.c c_src/*/*.c)
HDRS    := $(wildcard c_src/*.h c_src/*/*.h)
OBJS    := $(patsubst c_src/%.c,$(BUILD)/obj/%.o,$(SRCS))
LIBOBJS := $(filter-out $(BUILD)/obj/main.o,$(OBJS))
TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))

.PHONY: all deps run test unit ct bench clean otp-peers
# Debian trees with OTP 27 (trixie) and OTP 29 (unstable) for
# erl_test/kv_cnode_otp_SUITE (tools/otp_peers.sh); not under $(BUILD), so
# SANITIZE=1 reuses them.  OTP_PEERS_DIR puts them elsewhere.
OTP_PEERS_DIR ?= $(CURDIR)/build/otp
export OTP_PEERS_DIR
all: $(BUILD)/kv_cnode

deps:
	@sh tools/deps.sh $(PKGS)

$(BUILD)/obj/%.o: c_src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@

$(BUILD)/kv_cnode: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/kvtest.h $(LIBOBJS) | $(BUILD)/tests
	$(CC) $(CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(LIBOBJS) $(LDLIBS) -lcmocka

# Test helper for erl_test/kv_cnode_peers_SUITE: a third-party C node on
# erl_interface's own client API (ei_connect, ei_reg_send, ei_xreceive_msg).
$(BUILD)/tests/ei_peer: tests/peers/ei_peer.c | $(BUILD)/tests
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -L$(EI_DIR)/lib -lei -lpthread

otp-peers:
	@sh tools/otp_peers.sh $(OTP_PEERS_DIR) 27 29

run: deps
	@$(MAKE) --no-print-directory all
	@epmd -names >/dev/null 2>&1 || epmd -daemon
	./$(BUILD)/kv_cnode $(ARGS)

unit: $(TESTS)
	@sh tools/run_unit.sh $(TESTS)

ct: all $(BUILD)/tests/ei_peer
	@KV_CNODE_BIN=$${KV_CNODE_BIN:-$(CURDIR)/$(BUILD)/kv_cnode} sh tools/run_ct.sh

test: deps
	@$(MAKE) --no-print-directory otp-peers || echo "otp-peers failed: kv_cnode_otp_SUITE will fail with the reason" >&2
	@$(MAKE) --no-print-directory check-layers all unit
ifneq ($(SANITIZE),1)
	@$(MAKE) --no-print-directory fuzz-smoke
endif
	@$(MAKE) --no-print-directory ct

# base < proto < wire < runtime < services < main.c/config.c/app.c; the
# self-test plants wrong-way includes in a copy and expects failures.
.PHONY: check-layers
check-layers:
	@sh tools/check_layers.sh c_src
	@sh tools/check_layers_test.sh

# valgrind memcheck of the CT suites: zero errors, zero definite/indirect leaks
.PHONY: memcheck
memcheck: deps
	@$(MAKE) --no-print-directory all
	@sh tools/memcheck.sh $(CURDIR)/$(BUILD)/kv_cnode

bench: all
	@QUICK=$(QUICK) KV_CNODE_BIN=$(CURDIR)/$(BUILD)/kv_cnode sh bench/run.sh

clean:
	rm -rf build _build

# rebar3 dependency: `rebar3 compile` runs `make priv` (rebar.config pre_hooks)
# in this directory, wherever it sits (_checkouts/, _build/*/lib/, deps/).
# The copy is replaced atomically, so a running node's binary is never written.
.PHONY: priv
priv: $(BUILD)/kv_cnode
	@mkdir -p priv
	@cmp -s $(BUILD)/kv_cnode priv/kv_cnode || \
	  { cp $(BUILD)/kv_cnode priv/kv_cnode.tmp && mv -f priv/kv_cnode.tmp priv/kv_cnode; }

# Fuzzing (libFuzzer, clang from Debian; ASan+UBSan): tests/fuzz/fuzz_*.c
# against every c_src object but main.o, built in build/fuzz.
#   make fuzz          each target FUZZ_SECONDS (default 300) with its seeds
#   make fuzz-smoke    each target 20 s (what `make test` runs)
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 300
FUZZ_BUILD   := build/fuzz
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -I$(EI_DIR)/include -Ic_src
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_OBJS    := $(patsubst c_src/%.c,$(FUZZ_BUILD)/obj/%.o,$(filter-out c_src/main.c,$(SRCS)))
.PHONY: fuzz fuzz-smoke fuzz-build
.SECONDARY: $(FUZZ_OBJS)
$(FUZZ_BUILD)/obj/%.o: c_src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
$(FUZZ_BUILD)/obj:
	mkdir -p $@
$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJS) $(LDLIBS)
fuzz-build: $(addprefix $(FUZZ_BUILD)/,$(FUZZ_TARGETS))
fuzz: fuzz-build
	@sh tools/run_fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)
fuzz-smoke: fuzz-build
	@sh tools/run_fuzz.sh 20 $(FUZZ_TARGETS)
