# kv_cnode - a C program that is an Erlang node.  See README.md.
#   make          build build/kv_cnode
#   make run      install what is missing, build, start the node (defaults)
#   make test     install what is missing, build, run every unit and CT suite
#   make unit     cmocka suites only;  make ct  Common Test suites only
#   make bench    benchmark against the BEAM baseline (QUICK=1 for a short run)
#   SANITIZE=1    build with ASan+UBSan

CC      ?= cc
BUILD   ?= build
PKGS    := erlang-base erlang-dev erlang-ssl erlang-common-test erlang-eunit \
           elixir rebar3 libssl-dev libcmocka-dev
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

SRCS    := $(wildcard c_src/*.c)
OBJS    := $(patsubst c_src/%.c,$(BUILD)/obj/%.o,$(SRCS))
LIBOBJS := $(filter-out $(BUILD)/obj/main.o,$(OBJS))
TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))

.PHONY: all deps run test unit ct bench clean
all: $(BUILD)/kv_cnode

deps:
	@sh tools/deps.sh $(PKGS)

$(BUILD)/obj/%.o: c_src/%.c $(wildcard c_src/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@

$(BUILD)/kv_cnode: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(LIBOBJS) | $(BUILD)/tests
	$(CC) $(CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(LIBOBJS) $(LDLIBS) -lcmocka

run: deps
	@$(MAKE) --no-print-directory all
	@epmd -names >/dev/null 2>&1 || epmd -daemon
	./$(BUILD)/kv_cnode $(ARGS)

unit: $(TESTS)
	@sh tools/run_unit.sh $(TESTS)

ct: all
	@sh tools/run_ct.sh

test: deps
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory ct

clean:
	rm -rf build _build
