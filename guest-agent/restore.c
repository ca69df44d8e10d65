/*
 * RESTORED: the VM was restored from a snapshot, so every clone of one
 * template starts with the template's RNG state, clock, hostname,
 * machine-id and network. Before any user code runs the host sends a fresh
 * identity and the agent applies it, in this order:
 *
 *   entropy      RNDADDENTROPY (credited), then RNDRESEEDCRNG, so the next
 *                read of the CRNG does not repeat what a sibling clone reads
 *   clock        clock_settime(CLOCK_REALTIME)
 *   hostname     sethostname, and /etc/hostname where it is writable
 *   machine-id   /etc/machine-id, replaced atomically
 *   network      eth0 down, new MAC, addresses and routes flushed, new ones,
 *                up; /etc/resolv.conf
 *
 * The whole request is validated before the first step. The first step that
 * fails ends the request with an ERROR naming it; the steps before it stay
 * done (the host discards such a sandbox). Outside a VM (not PID 1, the
 * --unix test mode) nothing is changed: these are the host's settings.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/random.h>

#include "agent.h"
#include "log.h"

/* Linux 4.17; older headers lack the name, older kernels the ioctl (ENOTTY, EINVAL). */
#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07)
#endif

static int add_entropy(const uint8_t *bytes, uint32_t len, const char **step)
{
	struct {
		struct rand_pool_info info;
		uint8_t buf[AGENT_PROTO_RESTORED_ENTROPY];
	} pool;
	int fd, r = 0;

	if (len != sizeof(pool.buf))
		return -EINVAL;
	pool.info.entropy_count = (int)(len * 8);
	pool.info.buf_size = (int)len;
	memcpy(pool.buf, bytes, len);
	*step = "entropy: opening /dev/urandom";
	fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*step = "entropy: RNDADDENTROPY";
	if (ioctl(fd, RNDADDENTROPY, &pool) < 0)
		r = -errno;
	if (!r && ioctl(fd, RNDRESEEDCRNG) < 0) {
		r = -errno;
		*step = r == -ENOTTY || r == -EINVAL
				? "entropy: RNDRESEEDCRNG is missing (kernel older than 4.17): the CRNG keeps the snapshot's state"
				: "entropy: RNDRESEEDCRNG";
		if (r == -ENOTTY)
			r = -ENOSYS;
	}
	explicit_bzero(&pool, sizeof(pool));
	close(fd);
	return r;
}

static int set_clock(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u) };

	return clock_settime(CLOCK_REALTIME, &ts) < 0 ? -errno : 0;
}

static int set_hostname(const char *name)
{
	char line[AGENT_PROTO_HOSTNAME_MAX + 2];
	int n, r;

	if (sethostname(name, strlen(name)) < 0)
		return -errno;
	n = snprintf(line, sizeof(line), "%s\n", name);
	/* A read-only /etc keeps the image's file; the kernel's name is what counts. */
	r = agent_write_file_atomic("/etc/hostname", line, (size_t)n, 0644);
	if (r)
		sv_warn("restored: /etc/hostname not updated: %s", strerror(-r));
	return 0;
}

static int set_machine_id(const char *id)
{
	char line[AGENT_PROTO_MACHINE_ID_LEN + 2];
	int n = snprintf(line, sizeof(line), "%s\n", id);

	return agent_write_file_atomic("/etc/machine-id", line, (size_t)n, 0444);
}

/* The network part of m as a config; -EINVAL with *bad naming the field (the decoder checked them all). */
static int net_config(const struct agent_proto_restored *m, struct agent_net_config *cfg, const char **bad)
{
	const struct {
		const char *v, *name;
		enum agent_net_field field;
	} parts[] = {
		{ m->net, "net", AGENT_NET_V4 },
		{ m->net6, "net6", AGENT_NET_V6 },
		{ m->mac, "mac", AGENT_NET_MAC },
		{ m->dns, "dns", AGENT_NET_DNS },
	};

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		if (parts[i].v && agent_net_parse(cfg, parts[i].field, parts[i].v, strlen(parts[i].v))) {
			*bad = parts[i].name;
			return -EINVAL;
		}
	}
	return 0;
}

void agent_restored(struct agent_conn *c, const struct agent_proto_frame *f)
{
	uint32_t stream = f->hdr.stream;
	struct agent_proto_restored m;
	struct agent_net_config net;
	const char *step = "", *bad = "";
	uint64_t t0 = agent_now_ms(), t_net = 0, took; /* monotonic: the clock step below does not move it */
	int r = agent_proto_decode_restored(f, &m);

	if (r) {
		agent_conn_send_error(c, stream, EINVAL, "bad RESTORED: %s", strerror(-r));
		return;
	}
	if (net_config(&m, &net, &bad)) {
		agent_conn_send_error(c, stream, EINVAL, "bad RESTORED: %s", bad);
		return;
	}
	if (!c->agent->pid1) {
		agent_conn_send_error(c, stream, EPERM,
				      "entropy: not PID 1: outside a VM the agent changes no entropy, clock, "
				      "hostname, machine-id or network");
		return;
	}
	r = add_entropy(m.entropy, m.entropy_len, &step);
	if (!r) {
		step = "clock: clock_settime(CLOCK_REALTIME)";
		r = set_clock(m.realtime_ns);
	}
	if (!r && m.hostname) {
		step = "hostname: sethostname";
		r = set_hostname(m.hostname);
	}
	if (!r && m.machine_id) {
		step = "machine-id: /etc/machine-id";
		r = set_machine_id(m.machine_id);
	}
	if (!r && (net.has_v4 || net.has_v6 || net.has_mac || net.has_dns)) {
		t_net = agent_now_ms();
		r = agent_net_apply(&net, true, &step);
		t_net = agent_now_ms() - t_net;
	}
	if (r) {
		sv_warn("restored: %s: %s", step, strerror(-r));
		agent_conn_send_error(c, stream, -r, "%s: %s", step, strerror(-r));
		return;
	}
	took = agent_now_ms() - t0;
	agent_conn_send_empty(c, AGENT_PROTO_OK, stream);
	/*
	 * Where a warm start's time goes, for whoever reads the console; after
	 * the answer, since a console write is a trap per byte and the host
	 * waits for nothing it says.
	 */
	sv_info("restored: new identity applied%s%s in %llu ms (network %llu ms)", m.hostname ? " for " : "",
		m.hostname ? m.hostname : "", (unsigned long long)took, (unsigned long long)t_net);
}
