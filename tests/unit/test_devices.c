/* Serial UART, i8042 reset, boot timer and the control protocol, with fake hooks. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "arch/x86/cpu.h"
#include "bus.h"
#include "control.h"
#include "devices/boot_timer.h"
#include "devices/console.h"
#include "devices/i8042.h"
#include "devices/serial.h"

struct fake_machine {
	int irq_level;
	int irq_changes;
	int resets, panics, inits;
};

static int fake_set_irq(void *ctx, uint32_t gsi, int level)
{
	struct fake_machine *m = ctx;

	assert_int_equal(gsi, 4);
	m->irq_level = level;
	m->irq_changes++;
	return 0;
}

static void fake_event(void *ctx, enum machine_event ev)
{
	struct fake_machine *m = ctx;

	if (ev == MACHINE_EVENT_RESET)
		m->resets++;
	else if (ev == MACHINE_EVENT_PANIC)
		m->panics++;
	else
		m->inits++;
}

static struct machine_hooks hooks_for(struct fake_machine *m)
{
	return (struct machine_hooks){ .ctx = m, .set_irq = fake_set_irq, .event = fake_event };
}

static void write_str(struct serial *s, const char *str)
{
	while (*str)
		serial_write(s, 0, (uint8_t)*str++);
}

static void serial_transmits_to_fd(void **state)
{
	struct fake_machine m = { 0 };
	struct machine_hooks h = hooks_for(&m);
	struct console_out c;
	struct serial s;
	char buf[64] = { 0 };
	int p[2];

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_int_equal(console_out_init_fd(&c, p[1]), 0);
	assert_int_equal(serial_init(&s, 4, &c, &h), 0);
	write_str(&s, "hello\nworld");
	/* Lines are flushed at newline; the rest at flush time. */
	assert_int_equal(read(p[0], buf, sizeof(buf)), 6);
	assert_string_equal(buf, "hello\n");
	serial_flush(&s);
	memset(buf, 0, sizeof(buf));
	assert_int_equal(read(p[0], buf, sizeof(buf)), 5);
	assert_string_equal(buf, "world");
	/* Loopback mode sends nothing out. */
	serial_write(&s, 4, 0x10);
	write_str(&s, "hidden\n");
	serial_destroy(&s);
	console_out_destroy(&c);
	close(p[1]);
	assert_int_equal(read(p[0], buf, sizeof(buf)), 0);
	close(p[0]);
}

static void serial_registers_as_linux_probes_them(void **state)
{
	struct fake_machine m = { 0 };
	struct machine_hooks h = hooks_for(&m);
	struct serial s;

	(void)state;
	assert_int_equal(serial_init(&s, 4, NULL, &h), 0);
	/* IER keeps exactly its low four bits. */
	serial_write(&s, 1, 0xff);
	assert_int_equal(serial_read(&s, 1), 0x0f);
	serial_write(&s, 1, 0);
	assert_int_equal(serial_read(&s, 1), 0);
	/* FIFO identification: 16550A reports both FIFO bits. */
	serial_write(&s, 2, 0x01);
	assert_int_equal(serial_read(&s, 2) & 0xc0, 0xc0);
	/* Divisor latch. */
	serial_write(&s, 3, 0x80);
	serial_write(&s, 0, 0x01);
	serial_write(&s, 1, 0x00);
	assert_int_equal(serial_read(&s, 0), 1);
	serial_write(&s, 3, 0x03);
	/* Scratch register. */
	serial_write(&s, 7, 0xa5);
	assert_int_equal(serial_read(&s, 7), 0xa5);
	assert_int_equal(serial_read(&s, 5) & 0x60, 0x60);
	assert_int_equal(m.irq_level, 0); /* IER is 0 again: line low */
	serial_destroy(&s);
}

static void serial_thre_interrupt(void **state)
{
	struct fake_machine m = { 0 };
	struct machine_hooks h = hooks_for(&m);
	struct serial s;

	(void)state;
	assert_int_equal(serial_init(&s, 4, NULL, &h), 0);
	/* Enabling THRI with an empty transmitter raises the line at once. */
	serial_write(&s, 1, 0x02);
	assert_int_equal(m.irq_level, 1);
	assert_int_equal(serial_read(&s, 2) & 0x0f, 0x02);
	/* Reading IIR acknowledged it. */
	assert_int_equal(m.irq_level, 0);
	assert_int_equal(serial_read(&s, 2) & 0x01, 0x01);
	/* Each transmitted byte empties the THR again. */
	serial_write(&s, 0, 'x');
	assert_int_equal(m.irq_level, 1);
	serial_write(&s, 1, 0x00);
	assert_int_equal(m.irq_level, 0);
	serial_destroy(&s);
}

static void serial_detects_panic_banner(void **state)
{
	struct fake_machine m = { 0 };
	struct machine_hooks h = hooks_for(&m);
	struct serial s;

	(void)state;
	assert_int_equal(serial_init(&s, 4, NULL, &h), 0);
	write_str(&s, "Kernel panic - not syncin");
	assert_int_equal(m.panics, 0);
	write_str(&s, "KKernel panic - not syncing: Attempted to kill init!\n");
	assert_int_equal(m.panics, 1);
	write_str(&s, "Kernel panic - not  syncing");
	assert_int_equal(m.panics, 1);
	serial_destroy(&s);
}

static void i8042_reset_and_timer(void **state)
{
	struct fake_machine m = { 0 };
	struct machine_hooks h = hooks_for(&m);
	struct i8042 kbd;
	struct boot_timer bt;
	uint8_t v;

	(void)state;
	i8042_init(&kbd, &h);
	boot_timer_init(&bt, &h);
	i8042_cmd_ops.read(&kbd, 0, &v, 1);
	assert_int_equal(v & 0x03, 0); /* buffers empty: Linux's kb_wait() returns */
	v = 0xd1;
	i8042_cmd_ops.write(&kbd, 0, &v, 1);
	assert_int_equal(m.resets, 0);
	v = 0xfe;
	i8042_cmd_ops.write(&kbd, 0, &v, 1);
	assert_int_equal(m.resets, 1);

	v = 1;
	boot_timer_ops.write(&bt, 0, &v, 1);
	assert_int_equal(m.inits, 0);
	v = 123;
	boot_timer_ops.write(&bt, 0, &v, 1);
	assert_int_equal(m.inits, 1);
}

static int stops;

static void status_cb(void *ctx, cJSON *reply)
{
	(void)ctx;
	cJSON_AddStringToObject(reply, "state", "running");
}

static int stop_cb(void *ctx)
{
	(void)ctx;
	stops++;
	return 0;
}

static int vsock_cb(void *ctx, cJSON *reply, char *err, size_t errlen)
{
	(void)ctx;
	(void)err;
	(void)errlen;
	cJSON_AddObjectToObject(reply, "vsock");
	return 0;
}

static int no_device_cb(void *ctx, cJSON *reply, char *err, size_t errlen)
{
	(void)ctx;
	(void)reply;
	snprintf(err, errlen, "the VM has no network device");
	return -ENODEV;
}

static int net_status_cb(void *ctx, cJSON *reply, char *err, size_t errlen)
{
	(void)ctx;
	(void)err;
	(void)errlen;
	cJSON_AddStringToObject(cJSON_AddObjectToObject(reply, "net"), "mode", "block");
	return 0;
}

/* Accepts any path but "bad.json". */
static int net_policy_cb(void *ctx, const char *path, int fd, char *err, size_t errlen)
{
	(void)ctx;
	if (fd >= 0)
		close(fd);
	if (path && strcmp(path, "bad.json") == 0) {
		snprintf(err, errlen, "net policy: \"allow\" needs mode allowlist");
		return -EINVAL;
	}
	return 0;
}

static const struct control_ops ops = { .status = status_cb, .stop = stop_cb };
static const struct control_ops device_ops = { .status = status_cb, .stop = stop_cb,
					       .net_status = no_device_cb, .vsock_status = vsock_cb };

static void expect_reply_ops(const struct control_ops *o, const char *req, const char *needle)
{
	char *reply = control_handle_request(req, strlen(req), NULL, 0, o, NULL);

	assert_non_null(reply);
	if (!strstr(reply, needle))
		fail_msg("reply '%s' to '%s' lacks '%s'", reply, req, needle);
	assert_int_equal(reply[strlen(reply) - 1], '\n');
	free(reply);
}

static void expect_reply(const char *req, const char *needle)
{
	expect_reply_ops(&ops, req, needle);
}

static void control_requests(void **state)
{
	(void)state;
	expect_reply("{\"op\":\"status\"}", "\"state\":\"running\"");
	expect_reply("{\"op\":\"status\"}", "\"ok\":true");
	expect_reply("{\"op\":\"stop\"}", "\"ok\":true");
	assert_int_equal(stops, 1);
	expect_reply("{\"op\":\"reboot\"}", "unknown op");
	expect_reply("{\"op\":5}", "no \\\"op\\\"");
	expect_reply("not json", "\"ok\":false");
	expect_reply("", "\"ok\":false");
	expect_reply("[1,2]", "\"ok\":false");
	assert_int_equal(stops, 1);
	/* Device status ops: unknown without the device's callback, its reply or error with it. */
	expect_reply("{\"op\":\"vsock\"}", "unknown op");
	expect_reply("{\"op\":\"net\"}", "unknown op");
	expect_reply_ops(&device_ops, "{\"op\":\"vsock\"}", "\"vsock\":{}");
	expect_reply_ops(&device_ops, "{\"op\":\"vsock\"}", "\"ok\":true");
	expect_reply_ops(&device_ops, "{\"op\":\"net\"}", "\"ok\":false");
	expect_reply_ops(&device_ops, "{\"op\":\"net\"}", "the VM has no network device");
}

static int pause_cb(void *ctx, bool pause, cJSON *reply, char *err, size_t errlen)
{
	(void)ctx;
	if (!pause && errlen) {
		snprintf(err, errlen, "not paused in this test");
		return -EINVAL;
	}
	cJSON_AddStringToObject(reply, "state", "paused");
	return 0;
}

static int snapshot_calls;

static int snapshot_cb(void *ctx, const char *dir, int state_fd, int mem_fd, const uint8_t *memory_key, cJSON *reply,
		       char *err, size_t errlen)
{
	(void)ctx;
	if (memory_key)
		cJSON_AddNumberToObject(reply, "key0", memory_key[0]);
	(void)err;
	(void)errlen;
	snapshot_calls++;
	/* The op takes the descriptors whatever it returns. */
	if (state_fd >= 0)
		close(state_fd);
	if (mem_fd >= 0)
		close(mem_fd);
	cJSON_AddStringToObject(reply, "dir", dir ? dir : "(fds)");
	return 0;
}

/* pause, resume and snapshot: their forms and refusals. */
static void control_pause_snapshot(void **state)
{
	static const struct control_ops snap_ops = { .status = status_cb, .stop = stop_cb, .pause = pause_cb,
						     .snapshot = snapshot_cb };
	int fds[2];

	(void)state;
	expect_reply("{\"op\":\"pause\"}", "unknown op");
	expect_reply("{\"op\":\"snapshot\",\"dir\":\"/x\"}", "unknown op");
	expect_reply_ops(&snap_ops, "{\"op\":\"pause\"}", "\"state\":\"paused\"");
	expect_reply_ops(&snap_ops, "{\"op\":\"resume\"}", "not paused in this test");
	expect_reply_ops(&snap_ops, "{\"op\":\"snapshot\",\"dir\":\"/x\"}", "\"dir\":\"/x\"");
	assert_int_equal(snapshot_calls, 1);
	/* A memory key: 64 hex digits, given to the op as 32 bytes; anything else refused before it runs. */
	expect_reply_ops(&snap_ops,
			 "{\"op\":\"snapshot\",\"dir\":\"/x\",\"memory_key\":"
			 "\"2a00000000000000000000000000000000000000000000000000000000000000\"}",
			 "\"key0\":42");
	assert_int_equal(snapshot_calls, 2);
	expect_reply_ops(&snap_ops, "{\"op\":\"snapshot\",\"dir\":\"/x\",\"memory_key\":\"2a\"}",
			 "must be 64 hex digits");
	expect_reply_ops(&snap_ops, "{\"op\":\"snapshot\",\"dir\":\"/x\",\"memory_key\":5}", "must be 64 hex digits");
	assert_int_equal(snapshot_calls, 2);
	snapshot_calls = 1;
	/* Neither form, both forms, half a pair, an empty dir: refused before the op runs. */
	expect_reply_ops(&snap_ops, "{\"op\":\"snapshot\"}", "needs \\\"dir\\\"");
	expect_reply_ops(&snap_ops, "{\"op\":\"snapshot\",\"dir\":\"\"}", "needs \\\"dir\\\"");
	expect_reply_ops(&snap_ops, "{\"op\":\"snapshot\",\"state_fd\":0}", "out of range");
	assert_int_equal(snapshot_calls, 1);
	/* Descriptors: both taken by the op; one alone, or with dir too, is refused and closed. */
	for (unsigned round = 0; round < 3; round++) {
		const char *req = round == 0 ? "{\"op\":\"snapshot\",\"state_fd\":0,\"memory_fd\":1}"
			      : round == 1 ? "{\"op\":\"snapshot\",\"state_fd\":0}"
					   : "{\"op\":\"snapshot\",\"state_fd\":0,\"memory_fd\":1,\"dir\":\"/x\"}";
		char *reply;

		fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		fds[1] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		reply = control_handle_request(req, strlen(req), fds, 2, &snap_ops, NULL);
		assert_non_null(reply);
		assert_true(strstr(reply, round == 0 ? "(fds)" : "needs") != NULL);
		assert_int_equal(fds[0], -1);
		assert_int_equal(fds[1], -1);
		free(reply);
	}
	assert_int_equal(snapshot_calls, 2);
}

/* A policy change replies with the policy in force, as the net op reports it; a refusal says why. */
static void control_net_policy(void **state)
{
	static const struct control_ops net_ops = { .status = status_cb, .stop = stop_cb,
						    .net_status = net_status_cb, .net_policy = net_policy_cb };
	static const struct control_ops no_net_ops = { .status = status_cb, .stop = stop_cb,
						       .net_status = no_device_cb, .net_policy = net_policy_cb };
	const char *req = "{\"op\":\"net-policy\",\"path\":\"p.json\"}";
	char *reply;
	cJSON *o;

	(void)state;
	reply = control_handle_request(req, strlen(req), NULL, 0, &net_ops, NULL);
	assert_non_null(reply);
	o = cJSON_Parse(reply);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "ok")));
	assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "net"), "mode")->valuestring, "block");
	cJSON_Delete(o);
	free(reply);
	expect_reply_ops(&net_ops, "{\"op\":\"net-policy\",\"path\":\"bad.json\"}", "\"ok\":false");
	expect_reply_ops(&net_ops, "{\"op\":\"net-policy\",\"path\":\"bad.json\"}", "needs mode allowlist");
	expect_reply_ops(&net_ops, "{\"op\":\"net-policy\"}", "needs \\\"path\\\"");
	/* Applied but not reported: not a confirmation. */
	expect_reply_ops(&no_net_ops, "{\"op\":\"net-policy\",\"path\":\"p.json\"}", "\"ok\":false");
	expect_reply_ops(&ops, "{\"op\":\"net-policy\",\"path\":\"p.json\"}", "unknown op");
}

static void gdt_and_cpuid(void **state)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 5 * sizeof(c->entries[0]));
	uint64_t gdt[5];

	(void)state;
	x86_gdt_fill(gdt, X86_BOOT_LINUX64);
	assert_int_equal(gdt[2], 0x00af9b000000ffffull); /* __BOOT_CS: 64-bit code */
	assert_int_equal(gdt[3], 0x00cf93000000ffffull); /* __BOOT_DS */
	x86_gdt_fill(gdt, X86_BOOT_PVH);
	assert_int_equal(gdt[2], 0x00cf9b000000ffffull); /* 32-bit code for PVH */

	c->nent = 5;
	c->entries[0] = (struct kvm_cpuid_entry2){ .function = 1, .ebx = 0xffff0800,
						   .ecx = 1u << 5 | 1u << 0 };
	c->entries[1] = (struct kvm_cpuid_entry2){ .function = 0xb, .index = 1, .edx = 99 };
	c->entries[2] = (struct kvm_cpuid_entry2){ .function = 0xa, .eax = 0x07300403 };
	c->entries[3] = (struct kvm_cpuid_entry2){ .function = 0x80000001, .ecx = 0x7 };
	c->entries[4] = (struct kvm_cpuid_entry2){ .function = 0x8000000a, .eax = 1, .ebx = 0x8000,
						   .edx = 0x1ebfbcff };
	x86_cpuid_patch(c, &(struct x86_cpuid_opts){ .apic_id = 3, .ncpus = 4 });
	assert_int_equal(c->entries[0].ebx >> 24, 3);
	assert_int_equal((c->entries[0].ebx >> 16) & 0xff, 4);
	assert_int_equal(c->entries[0].ebx & 0xffff, 0x0800);
	assert_true(c->entries[0].ecx & (1u << 31));
	assert_true(c->entries[0].edx & (1u << 28));
	assert_int_equal(c->entries[1].edx, 3);
	assert_int_equal(c->entries[2].eax, 0);
	assert_false(c->entries[0].ecx & (1u << 24));
	/* No nested virtualization: VMX and SVM hidden, other bits kept. */
	assert_false(c->entries[0].ecx & (1u << 5));
	assert_true(c->entries[0].ecx & 1u);
	assert_int_equal(c->entries[3].ecx, 0x3);
	assert_int_equal(c->entries[4].eax | c->entries[4].ebx | c->entries[4].edx, 0);
	x86_cpuid_patch(c, &(struct x86_cpuid_opts){ .apic_id = 0, .ncpus = 1,
						    .tsc_deadline = 1 });
	assert_true(c->entries[0].ecx & (1u << 24));
	assert_int_equal(c->entries[0].ebx >> 24, 0);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(serial_transmits_to_fd),
		cmocka_unit_test(serial_registers_as_linux_probes_them),
		cmocka_unit_test(serial_thre_interrupt),
		cmocka_unit_test(serial_detects_panic_banner),
		cmocka_unit_test(i8042_reset_and_timer),
		cmocka_unit_test(control_requests),
		cmocka_unit_test(control_net_policy),
		cmocka_unit_test(control_pause_snapshot),
		cmocka_unit_test(gdt_and_cpuid),
	};

	return cmocka_run_group_tests_name("devices", tests, NULL, NULL);
}
