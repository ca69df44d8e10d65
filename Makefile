# sandvm — top-level build. `make` builds every binary into build/bin/ and the
# guest kernel and initramfs into build/guest/; `make test` runs all tests.

BUILD   ?= build
CC      ?= cc
CLANG   ?= clang
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

# vmm/ is -iquote: its headers are included with quotes, and <seccomp.h> stays libseccomp's.
CFLAGS_COMMON := -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
	-Wstrict-prototypes -Wmissing-prototypes -Wno-missing-field-initializers \
	-Ilib -iquote vmm -I$(BUILD)/gen -DSANDVM_VERSION='"$(VERSION)"' $(shell pkg-config --cflags libcjson 2>/dev/null)
CFLAGS  ?= -O2 -g
LDLIBS_VMM := -lpthread $(shell pkg-config --libs libcjson 2>/dev/null || echo -lcjson) \
	$(shell pkg-config --libs libcrypto libzstd 2>/dev/null || echo -lcrypto -lzstd) \
	$(shell pkg-config --libs libseccomp 2>/dev/null || echo -lseccomp)
# Unit tests and fuzzers also link the daemon's HTTP core.
LDLIBS_TEST := $(LDLIBS_VMM) $(shell pkg-config --libs libuv libssl libcurl 2>/dev/null || echo -luv -lssl -lcurl) \
	-lhttp_parser
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
# ThreadSanitizer: the unit tests that run device work beside vCPU-like threads.
# (-Wno-tsan: the ring fences order guest memory, which no test shares between threads.)
TSAN_FLAGS := -O1 -g -fsanitize=thread -fno-omit-frame-pointer -Wno-tsan

LIB_SRCS  := $(wildcard lib/*.c)
# Encrypted snapshot images (docs/image-format.md): OpenSSL and zstd, so kept
# out of the programs that need neither.
SIMAGE_SRCS := $(wildcard lib/simage/*.c)
# The API side's pure parsers (the daemon's requests and request heads, vmctl's
# exec output frames) and its HTTP core, which unit tests and fuzzers link too.
API_PURE_SRCS := api/sandboxd/spec.c api/sandboxd/query.c api/sandboxd/net_policy.c api/vmctl/exec_frames.c \
	api/sandboxd/http_head.c api/sandboxd/http_conn.c api/sandboxd/vmm_control.c \
	api/sandboxd/image_path.c api/sandboxd/tls.c api/sandboxd/agent_conn.c api/sandboxd/auth.c \
	api/sandboxd/api_error.c api/sandboxd/vmm_launcher.c api/sandboxd/vmm_spares.c api/sandboxd/ingress_head.c api/sandboxd/connect_token.c \
	api/sandboxd/json_text.c api/sandboxd/guest_relay.c api/sandboxd/ingress_proxy.c \
	api/sandboxd/tunnel_relay.c api/sandboxd/tunnel_serve.c api/sandboxd/jail_host.c \
	api/sandboxd/metrics.c api/sandboxd/metrics_text.c api/sandboxd/isolation_report.c \
	api/sandboxd/isolation_probes.c api/sandboxd/fleet/etcd_reply.c api/sandboxd/fleet/etcd.c \
	api/sandboxd/fleet/fleet_table.c api/sandboxd/fleet/placement.c
# The isolation probe's parts (guest side, static in the image), which unit tests and fuzzers link too.
PROBE_SRCS := $(filter-out guest-agent/probe/main.c,$(wildcard guest-agent/probe/*.c))
VMM_SRCS  := $(filter-out vmm/main.c,$(wildcard vmm/*.c vmm/arch/x86/*.c vmm/devices/*.c vmm/virtio/*.c vmm/backends/*.c vmm/net/*.c \
	vmm/snapshot/*.c))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))
ASAN_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests-asan/%,$(UNIT_SRCS))
TSAN_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests-tsan/%,$(UNIT_SRCS))

OBJS      := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRCS) $(SIMAGE_SRCS) $(VMM_SRCS))
SIMAGE_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(SIMAGE_SRCS))
API_PURE_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(API_PURE_SRCS))
PROBE_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(PROBE_SRCS))
ASAN_OBJS := $(patsubst %.c,$(BUILD)/obj-asan/%.o,$(LIB_SRCS) $(SIMAGE_SRCS) $(VMM_SRCS) $(API_PURE_SRCS) $(PROBE_SRCS))
TSAN_OBJS := $(patsubst %.c,$(BUILD)/obj-tsan/%.o,$(LIB_SRCS) $(SIMAGE_SRCS) $(VMM_SRCS) $(API_PURE_SRCS) $(PROBE_SRCS))
FUZZ_OBJS := $(patsubst %.c,$(BUILD)/obj-fuzz/%.o,$(LIB_SRCS) $(SIMAGE_SRCS) $(VMM_SRCS) $(API_PURE_SRCS) $(PROBE_SRCS))
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_FLAGS := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all

GUEST := $(BUILD)/guest
STAMP := $(BUILD)/.deps-installed

.PHONY: all deps vmm guest kernel initramfs unit-tests test test-unit test-integration \
	fuzz fuzz-run run bench bench-api bench-http bench-image bench-ingress bench-ingress-guest bench-net \
	bench-tunnels bench-jail bench-restore clean debian-image compat-drive
# Keep object files that only sanitizer and fuzz builds use.
.SECONDARY:
all: vmm guest $(BUILD)/bin/sandvm-agent $(BUILD)/bin/sandvm-isolation-probe

# Installs missing Debian packages once per build tree; every target needs it.
deps: $(STAMP)
$(STAMP): scripts/install-deps.sh
	@mkdir -p $(BUILD)
	./scripts/install-deps.sh
	@touch $@

vmm: $(BUILD)/bin/vmm $(BUILD)/bin/sandvm-run $(BUILD)/bin/vmctl $(BUILD)/bin/sandboxd \
	$(BUILD)/bin/sandvm-image

LIB_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRCS))
# Boots a sandbox and runs one command in it, straight through the VMM.
$(BUILD)/bin/sandvm-run: $(BUILD)/obj/api/sandvm-run.o $(LIB_OBJS) | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^

# The client of sandboxd (docs/api.md).
# The worker daemon (docs/api.md): libuv, the packaged http_parser, cJSON, OpenSSL, and
# libcurl for etcd (api/sandboxd/fleet/, docs/fleet.md).
SANDBOXD_SRCS := $(wildcard api/sandboxd/*.c api/sandboxd/fleet/*.c)
SANDBOXD_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(SANDBOXD_SRCS))
LDLIBS_SANDBOXD := $(shell pkg-config --libs libuv libcjson libssl libcrypto libzstd libcurl) -lhttp_parser -lpthread
# Messages to people are cut to their buffers on purpose; paths are checked for length where made.
$(SANDBOXD_OBJS): CFLAGS += -Wno-format-truncation
$(BUILD)/bin/sandboxd: $(SANDBOXD_OBJS) $(LIB_OBJS) $(SIMAGE_OBJS) | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_SANDBOXD)

VMCTL_SRCS := $(wildcard api/vmctl/*.c)
$(BUILD)/bin/vmctl: $(patsubst %.c,$(BUILD)/obj/%.o,$(VMCTL_SRCS)) $(BUILD)/obj/lib/log.o $(BUILD)/obj/lib/parse.o | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(shell pkg-config --libs libcurl libcjson) -lpthread

# Packs, inspects, verifies and unpacks snapshot images on the host (docs/image-format.md).
$(BUILD)/bin/sandvm-image: $(BUILD)/obj/image/sandvm-image.o $(SIMAGE_OBJS) $(BUILD)/obj/lib/log.o $(BUILD)/obj/lib/parse.o | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(shell pkg-config --libs libcrypto libzstd) -lpthread

$(BUILD)/bin/vmm: $(OBJS) $(BUILD)/obj/vmm/main.o | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_VMM)

# The SIGSYS handler's syscall names (vmm/seccomp.c): "[NR] = "name"," for every
# __NR_ of this architecture's <sys/syscall.h>, so the handler looks names up in const data.
SYSCALL_NAMES := $(BUILD)/gen/syscall_names.h
$(SYSCALL_NAMES): | $(STAMP)
	@mkdir -p $(dir $@)
	echo '#include <sys/syscall.h>' | $(CC) -E -dM -x c - | \
		sed -n 's/^#define __NR_\([a-z0-9_]*\) \([0-9][0-9]*\)$$/[\2] = "\1",/p' | sort -t'[' -k2 -n >$@.tmp
	test -s $@.tmp && mv $@.tmp $@
$(patsubst %,$(BUILD)/%/vmm/seccomp.o,obj obj-asan obj-tsan obj-fuzz obj-testops): $(SYSCALL_NAMES)

# The VMM with test-only control ops (-DSANDVM_TEST_OPS: "test-forbidden-syscall"),
# for the integration suite only; the real VMM has none of them.
TESTOPS_OBJS := $(filter-out $(BUILD)/obj/vmm/control.o,$(OBJS)) $(BUILD)/obj-testops/vmm/control.o
$(BUILD)/tests/vmm-testops: $(TESTOPS_OBJS) $(BUILD)/obj/vmm/main.o | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_VMM)
$(BUILD)/obj-testops/%.o: %.c | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -DSANDVM_TEST_OPS -MMD -MP -c -o $@ $<

$(BUILD)/obj/%.o: %.c | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/obj-asan/%.o: %.c | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(SAN_FLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/obj-tsan/%.o: %.c | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(TSAN_FLAGS) -MMD -MP -c -o $@ $<

# ---- guest side ----
guest: kernel initramfs
kernel: $(STAMP)
	./kernel-config/build.sh $(GUEST)

# The guest agent: static, PID 1 of every sandbox (initramfs and Debian image).
AGENT_SRCS := $(wildcard guest-agent/*.c)
AGENT_SRCS := $(filter-out guest-agent/test-init.c,$(AGENT_SRCS)) lib/agent_proto.c lib/log.c \
	lib/byte_queue.c lib/parse.c
$(BUILD)/bin/sandvm-agent: $(AGENT_SRCS) $(wildcard guest-agent/*.h) lib/agent_proto.h lib/log.h \
		lib/byte_queue.h lib/parse.h | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -static -O2 -Iguest-agent -o $@ $(AGENT_SRCS)

# The isolation monitor's probe program (docs/security.md, "Isolation monitor"): static, in the
# minimal image at /sbin, through an extra directory of build-initramfs.sh.
$(BUILD)/bin/sandvm-isolation-probe: guest-agent/probe/main.c $(PROBE_SRCS) $(wildcard guest-agent/probe/*.h) \
		lib/parse.c lib/parse.h | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -static -O2 -o $@ guest-agent/probe/main.c $(PROBE_SRCS) lib/parse.c
PROBE_ROOT := $(BUILD)/probe-root
$(PROBE_ROOT)/sbin/sandvm-isolation-probe: $(BUILD)/bin/sandvm-isolation-probe
	install -d -m 0755 $(PROBE_ROOT) $(PROBE_ROOT)/sbin
	install -m 0755 $< $@

# The test init: reports what the guest sees and runs one test action (docs/guest.md).
$(BUILD)/bin/sandvm-init: guest-agent/test-init.c | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -static -O2 -Wall -Wextra -Werror -o $@ $<

initramfs: $(GUEST)/initramfs.cpio.gz
$(GUEST)/initramfs.cpio.gz: $(BUILD)/bin/sandvm-agent $(PROBE_ROOT)/sbin/sandvm-isolation-probe \
		rootfs/build-initramfs.sh | $(STAMP)
	@mkdir -p $(dir $@)
	./rootfs/build-initramfs.sh $@ $(BUILD)/bin/sandvm-agent $(PROBE_ROOT)

# The initramfs plus the guest-side scripts of the integration tests (/tests/*.sh).
TEST_INITRAMFS := $(GUEST)/test-initramfs.cpio.gz
GUEST_TEST_BINS := $(patsubst tests/integration/guest-src/%.c,$(BUILD)/guest-tests/tests/bin/%,\
	$(wildcard tests/integration/guest-src/*.c))
$(BUILD)/guest-tests/tests/bin/%: tests/integration/guest-src/%.c | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -static -O2 -Wall -Wextra -Werror -o $@ $<
$(TEST_INITRAMFS): $(BUILD)/bin/sandvm-init rootfs/build-initramfs.sh $(GUEST_TEST_BINS) \
		$(wildcard tests/integration/guest/tests/*) $(PROBE_ROOT)/sbin/sandvm-isolation-probe | $(STAMP)
	@mkdir -p $(dir $@)
	./rootfs/build-initramfs.sh $@ $(BUILD)/bin/sandvm-init tests/integration/guest \
		$(BUILD)/guest-tests $(PROBE_ROOT)

# ---- tests ----
$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(OBJS) $(API_PURE_OBJS) $(PROBE_OBJS) | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -Itests/unit -Iapi/sandboxd -Iguest-agent/probe -o $@ $< $(OBJS) \
		$(API_PURE_OBJS) $(PROBE_OBJS) $(LDLIBS_TEST) -lcmocka

$(BUILD)/tests-asan/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(ASAN_OBJS) | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(SAN_FLAGS) -Itests/unit -Iapi/sandboxd -Iguest-agent/probe -o $@ $< $(ASAN_OBJS) \
		$(LDLIBS_TEST) -lcmocka

$(BUILD)/tests-tsan/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(TSAN_OBJS) | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(TSAN_FLAGS) -Itests/unit -Iapi/sandboxd -Iguest-agent/probe -o $@ $< $(TSAN_OBJS) \
		$(LDLIBS_TEST) -lcmocka

# The agent as an ordinary dynamic program (its --unix mode) for test_agent_host,
# plain and sanitized; the static one cannot carry ASan.
$(BUILD)/tests/sandvm-agent: $(AGENT_SRCS) $(wildcard guest-agent/*.h) | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -Iguest-agent -o $@ $(AGENT_SRCS)
$(BUILD)/tests-asan/sandvm-agent: $(AGENT_SRCS) $(wildcard guest-agent/*.h) | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(SAN_FLAGS) -Iguest-agent -o $@ $(AGENT_SRCS)
$(BUILD)/tests/test_agent_host $(BUILD)/tests/test_agent_conn: $(BUILD)/tests/sandvm-agent
$(BUILD)/tests-asan/test_agent_host $(BUILD)/tests-asan/test_agent_conn: $(BUILD)/tests-asan/sandvm-agent
$(BUILD)/tests-tsan/sandvm-agent: $(AGENT_SRCS) $(wildcard guest-agent/*.h) | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(TSAN_FLAGS) -Iguest-agent -o $@ $(AGENT_SRCS)
$(BUILD)/tests-tsan/test_agent_host $(BUILD)/tests-tsan/test_agent_conn: $(BUILD)/tests-tsan/sandvm-agent

# The lifecycle tests run the real sandboxd with a stand-in VMM that serves the real agent.
FAKE_VMM_FLAGS := -std=gnu11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror -Wno-format-truncation -lpthread
$(BUILD)/tests/fake-vmm $(BUILD)/tests-asan/fake-vmm $(BUILD)/tests-tsan/fake-vmm: tests/unit/fake-vmm.c \
		lib/spare_args.c lib/spare_args.h | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) -Ilib -o $@ $< lib/spare_args.c $(FAKE_VMM_FLAGS)
$(BUILD)/tests/test_lifecycle: $(BUILD)/tests/fake-vmm $(BUILD)/tests/sandvm-agent $(BUILD)/bin/sandboxd
$(BUILD)/tests-asan/test_lifecycle: $(BUILD)/tests-asan/fake-vmm $(BUILD)/tests-asan/sandvm-agent $(BUILD)/bin/sandboxd
$(BUILD)/tests-tsan/test_lifecycle: $(BUILD)/tests-tsan/fake-vmm $(BUILD)/tests-tsan/sandvm-agent $(BUILD)/bin/sandboxd
# And the fleet's test runs it with --etcd against a real etcd (docs/fleet.md).
$(BUILD)/tests/test_fleet_etcd: $(BUILD)/tests/fake-vmm $(BUILD)/tests/sandvm-agent $(BUILD)/bin/sandboxd
$(BUILD)/tests-asan/test_fleet_etcd: $(BUILD)/tests-asan/fake-vmm $(BUILD)/tests-asan/sandvm-agent $(BUILD)/bin/sandboxd
$(BUILD)/tests-tsan/test_fleet_etcd: $(BUILD)/tests-tsan/fake-vmm $(BUILD)/tests-tsan/sandvm-agent $(BUILD)/bin/sandboxd
# The fleet gateway end to end: real etcd, two workers and a gateway (all build/bin/sandboxd).
# (and vmctl pointed at the gateway).
$(BUILD)/tests/test_gateway: $(BUILD)/tests/fake-vmm $(BUILD)/tests/sandvm-agent $(BUILD)/bin/sandboxd \
	$(BUILD)/bin/vmctl
$(BUILD)/tests-asan/test_gateway: $(BUILD)/tests-asan/fake-vmm $(BUILD)/tests-asan/sandvm-agent $(BUILD)/bin/sandboxd \
	$(BUILD)/bin/vmctl
$(BUILD)/tests-tsan/test_gateway: $(BUILD)/tests-tsan/fake-vmm $(BUILD)/tests-tsan/sandvm-agent $(BUILD)/bin/sandboxd \
	$(BUILD)/bin/vmctl
$(BUILD)/tests/test_vmm_launcher $(BUILD)/tests-asan/test_vmm_launcher $(BUILD)/tests-tsan/test_vmm_launcher: \
	$(BUILD)/bin/vmm
$(BUILD)/tests/test_guest_relay: $(BUILD)/tests/fake-vmm $(BUILD)/tests/sandvm-agent
$(BUILD)/tests-asan/test_guest_relay: $(BUILD)/tests-asan/fake-vmm $(BUILD)/tests-asan/sandvm-agent
$(BUILD)/tests-tsan/test_guest_relay: $(BUILD)/tests-tsan/fake-vmm $(BUILD)/tests-tsan/sandvm-agent
$(BUILD)/tests/test_ingress_proxy: $(BUILD)/tests/fake-vmm $(BUILD)/tests/sandvm-agent
$(BUILD)/tests-asan/test_ingress_proxy: $(BUILD)/tests-asan/fake-vmm $(BUILD)/tests-asan/sandvm-agent
$(BUILD)/tests-tsan/test_ingress_proxy: $(BUILD)/tests-tsan/fake-vmm $(BUILD)/tests-tsan/sandvm-agent
$(BUILD)/tests/test_tunnel_relay: $(BUILD)/tests/fake-vmm $(BUILD)/tests/sandvm-agent
$(BUILD)/tests-asan/test_tunnel_relay: $(BUILD)/tests-asan/fake-vmm $(BUILD)/tests-asan/sandvm-agent
$(BUILD)/tests-tsan/test_tunnel_relay: $(BUILD)/tests-tsan/fake-vmm $(BUILD)/tests-tsan/sandvm-agent
# The probe program itself, run for its exit status and report.
$(BUILD)/tests/test_isolation_probe $(BUILD)/tests-asan/test_isolation_probe \
	$(BUILD)/tests-tsan/test_isolation_probe: $(BUILD)/bin/sandvm-isolation-probe

unit-tests: $(UNIT_BINS) $(ASAN_BINS) $(TSAN_BINS)

# libFuzzer targets (clang): every parser of untrusted bytes has one.
$(BUILD)/obj-fuzz/%.o: %.c | $(STAMP)
	@mkdir -p $(dir $@)
	$(CLANG) $(CFLAGS_COMMON) $(FUZZ_FLAGS) -c -o $@ $<

$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJS) | $(STAMP)
	@mkdir -p $(dir $@)
	$(CLANG) $(CFLAGS_COMMON) -Iapi/sandboxd -Iguest-agent/probe -O1 -g -fsanitize=fuzzer,address,undefined -o $@ $< \
		$(FUZZ_OBJS) $(LDLIBS_TEST)

fuzz: $(FUZZ_BINS)

# Longest-prefix-match lookups per second in lib/cidr.c sets (run by hand: M lookups/s).
$(BUILD)/bench/cidr_lookup: bench/cidr_lookup.c bench/bench_util.h $(BUILD)/obj/lib/cidr.o | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -O2 -o $@ $(filter-out %.h,$^)

# The whole per-frame egress check, open against a 10,000-CIDR allowlist (run by hand: ns per frame).
$(BUILD)/bench/egress_check: bench/egress_check.c bench/bench_util.h $(BUILD)/obj/vmm/net/egress.o $(BUILD)/obj/vmm/net/firewall.o \
		$(BUILD)/obj/vmm/net/frame.o $(BUILD)/obj/lib/cidr.o $(BUILD)/obj/lib/log.o $(BUILD)/obj/lib/parse.o \
		| $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -Ivmm -O2 -o $@ $(filter-out %.h,$^) $(LDLIBS_VMM)

# The ingress proxy alone on a loopback TLS listener with an owner of its own, forwarding through
# the fake VMM and the agent's relay to 127.0.0.1 (bench/ingress drives it; docs/benchmarks.md).
$(BUILD)/bench/ingress_loopback: bench/ingress_loopback.c $(OBJS) $(API_PURE_OBJS) | $(BUILD)/tests/fake-vmm \
		$(BUILD)/tests/sandvm-agent $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -Iapi/sandboxd -o $@ $< $(OBJS) $(API_PURE_OBJS) $(LDLIBS_TEST)

fuzz-run: fuzz
	./tests/fuzz/run $(BUILD)

# Every fuzz target for 600 CPU s or 10M runs, minimised into tests/fuzz/corpus/;
# figures in $(BUILD)/fuzz-campaign/summary.tsv (docs/testing.md, "Fuzz campaign").
.PHONY: fuzz-campaign
fuzz-campaign: fuzz
	./tests/fuzz/campaign $(BUILD)

test-unit: unit-tests
	./tests/run-unit $(BUILD)

test-integration: all $(TEST_INITRAMFS) debian-image compat-drive $(BUILD)/tests/vmm-testops
	./tests/nested/run ./tests/integration/run $(BUILD)

# The README's test command: unit tests (plain and sanitized), then the
# integration suite on real VMs, with one summary line at the end.
test: all unit-tests fuzz $(TEST_INITRAMFS) debian-image compat-drive $(BUILD)/tests/vmm-testops
	./tests/run-all $(BUILD)

# The README's main command: a fresh sandbox (Debian + python3) runs a Python
# snippet through the guest agent; its output is printed and its status returned.
DEMO_PY := import os, platform, hashlib; \
print(f"hello from a sandvm sandbox: Python {platform.python_version()}, {os.cpu_count()} CPUs, kernel {platform.release()}"); \
print("sum of squares below 10**6 =", sum(i * i for i in range(10**6))); \
print("sha256(b\"sandvm\") =", hashlib.sha256(b"sandvm").hexdigest())
run: all debian-image
	./tests/nested/run $(BUILD)/bin/sandvm-run --verbose --image debian --cpus 2 --memory 512 \
		--no-stdin -- python3 -c '$(DEMO_PY)'

# Boot, exec and API benchmarks in one L1 boot (docs/benchmarks.md); the API
# one holds 50 sandboxes at once, hence the larger L1.
bench: all $(TEST_INITRAMFS) debian-image
	SANDVM_L1_MEMORY=$${SANDVM_L1_MEMORY:-8192} ./tests/nested/run sh -c \
		'./bench/boot $(BUILD) && ./bench/exec $(BUILD) && ./bench/api $(BUILD) && ./bench/image $(BUILD)'

# Network throughput (iperf3 in the Debian guest): sandvm open and allowlist
# policies against QEMU's virtio-net on a tap.
bench-net: all debian-image
	./tests/nested/run ./bench/net $(BUILD)

# The API's request rate over TLS against nginx (bench/http, on this host), then create-to-ready and
# exec figures on VMs (bench/api, in the L1 where KVM is emulated).
bench-api: all
	./bench/http $(BUILD)
	SANDVM_L1_MEMORY=$${SANDVM_L1_MEMORY:-8192} ./tests/nested/run ./bench/api $(BUILD)

# sandboxd's HTTP core over TLS against nginx (wrk), and RSS with idle connections; no VM needed.
bench-http: $(BUILD)/bin/sandboxd $(BUILD)/bin/vmm
	./bench/http $(BUILD)

# The ingress proxy against nginx and haproxy as TLS-terminating reverse proxies to one nginx
# backend, loopback, wrk; no VM needed.
bench-ingress: $(BUILD)/bench/ingress_loopback
	./bench/ingress $(BUILD)

# The proxy into a Debian guest against nginx proxying to the sandbox's tap address, in the L1.
bench-ingress-guest: all debian-image
	./tests/nested/run ./bench/ingress-guest $(BUILD)

# Tunnels (raw TCP with iperf3, plain and TLS; h2 with h2load) against the sandbox's tap
# address and nginx's stream module in front of it, in the L1.
bench-tunnels: all debian-image
	./tests/nested/run ./bench/tunnels $(BUILD)

# A VMM's restore against QEMU's incoming migration, same guest, in the L1 (docs/benchmarks.md).
bench-restore: all $(TEST_INITRAMFS)
	./tests/nested/run ./bench/restore $(BUILD)

# What the jail costs: boot and create-to-ready with the jail on and off, interleaved, in the L1.
bench-jail: all
	./tests/nested/run ./bench/jail $(BUILD)

# Snapshot image write/read against openssl speed, and the guest's reads from a
# mounted image against a raw drive (docs/benchmarks.md).
bench-image: all debian-image
	./tests/nested/run ./bench/image $(BUILD)

# The prepared check for a host with real KVM (docs/testing.md, "Real KVM check"):
# everything tests/real-kvm/check boots, built here into one directory it can take.
REAL_KVM := $(BUILD)/real-kvm
$(BUILD)/bin/kvm-probe: tests/real-kvm/kvm-probe.c | $(STAMP)
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -static -O2 -Wall -Wextra -Werror -o $@ $<
.PHONY: real-kvm-check-bundle
real-kvm-check-bundle: all $(TEST_INITRAMFS) $(BUILD)/bin/kvm-probe
	./tests/real-kvm/make-bundle $(BUILD) $(REAL_KVM)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj $(BUILD)/obj-asan $(BUILD)/obj-tsan $(BUILD)/obj-testops -name '*.d' 2>/dev/null)

# The Debian root filesystem with python3 (cached; several minutes the first time).
debian-image: $(GUEST)/debian.ext4
$(GUEST)/debian.ext4: rootfs/build-debian.sh $(BUILD)/bin/sandvm-agent | $(STAMP)
	@mkdir -p $(dir $@)
	./rootfs/build-debian.sh $@ $(BUILD)/bin/sandvm-agent

# The compatibility suite's drive (tests/integration/compat.sh): CPython's regression tests in
# the Debian image's python version, runc and a busybox container (cached; about a minute the first time).
compat-drive: $(GUEST)/compat.ext4
$(GUEST)/compat.ext4: rootfs/build-compat.sh $(GUEST)/debian.ext4 | $(STAMP)
	./rootfs/build-compat.sh $@ $(GUEST)/debian.ext4
