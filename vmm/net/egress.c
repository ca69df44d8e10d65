#include "net/egress.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cidr.h"
#include "log.h"
#include "parse.h"
#include "net/frame.h"

/* Drops logged per second at most: enough to see what a sandbox tries, not enough to flood. */
#define DROP_LOG_PER_SECOND 5u

static int get_addr(const cJSON *o, const char *field, int af, void *out, bool required, bool *present,
		    char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);

	if (present)
		*present = v != NULL;
	if (!v) {
		if (required)
			return sv_errf(-EINVAL, err, errlen, "net policy: \"%s\" is required", field);
		return 0;
	}
	if (!cJSON_IsString(v) || inet_pton(af, v->valuestring, out) != 1)
		return sv_errf(-EINVAL, err, errlen, "net policy: \"%s\" must be an IPv%d address", field, af == AF_INET ? 4 : 6);
	return 0;
}

static int get_mac(const cJSON *o, const char *field, uint8_t mac[6], char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
	unsigned b[6];
	char tail;

	if (!cJSON_IsString(v) || strlen(v->valuestring) != 17 ||
	    sscanf(v->valuestring, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
		   &tail) != 6)
		return sv_errf(-EINVAL, err, errlen, "net policy: \"%s\" must be a MAC aa:bb:cc:dd:ee:ff", field);
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return 0;
}

/* Appends field's CIDRs with value to items/values. */
static int add_cidrs(const cJSON *o, const char *field, uint8_t value, struct cidr **items, uint8_t **values,
		     size_t *n, size_t *cap, char *err, size_t errlen)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, field), *it;

	if (!arr)
		return 0;
	if (!cJSON_IsArray(arr))
		return sv_errf(-EINVAL, err, errlen, "net policy: \"%s\" must be an array of CIDRs", field);
	cJSON_ArrayForEach(it, arr) {
		if (*n == NET_POLICY_MAX_CIDRS)
			return sv_errf(-EINVAL, err, errlen, "net policy: more than %u CIDRs", NET_POLICY_MAX_CIDRS);
		if (*n == *cap) {
			size_t nc = *cap ? *cap * 2 : 64;
			struct cidr *ni = realloc(*items, nc * sizeof(**items));
			uint8_t *nv;

			if (!ni)
				return -ENOMEM;
			*items = ni;
			nv = realloc(*values, nc);
			if (!nv)
				return -ENOMEM;
			*values = nv;
			*cap = nc;
		}
		if (!cJSON_IsString(it))
			return sv_errf(-EINVAL, err, errlen, "net policy: \"%s\" must be an array of CIDR strings", field);
		if (cidr_parse(it->valuestring, &(*items)[*n]) < 0) {
			char why[96];

			return sv_errf(-EINVAL, err, errlen, "net policy: \"%s\": \"%.64s\" %s", field, it->valuestring,
				    cidr_parse_why(it->valuestring, why, sizeof(why)));
		}
		(*values)[(*n)++] = value;
	}
	return 0;
}

int net_egress_load(struct net_egress *e, const char *json, size_t len, char *err, size_t errlen)
{
	static const char *const fields[] = {"ip", "gateway", "gateway_mac", "ip6", "gateway6", "mode",
					     "allow", "deny_host", "deny_sandboxes", "allow_private", NULL};
	struct fw_policy_config cfg = {0};
	struct cidr *allow = NULL, *deny = NULL, *priv = NULL;
	uint8_t *allow_v = NULL, *deny_v = NULL, *priv_v = NULL;
	size_t nallow = 0, ndeny = 0, npriv = 0, cap_a = 0, cap_d = 0, cap_p = 0;
	struct cidr_set *allow_set = NULL, *deny_set = NULL, *priv_set = NULL;
	struct fw_policy *policy = NULL;
	const cJSON *mode, *it;
	bool has6 = false, hasgw6 = false;
	char why[256];
	cJSON *o = cJSON_ParseWithLength(json, len);
	int r;

	if (!cJSON_IsObject(o)) {
		r = sv_errf(-EINVAL, err, errlen, "net policy: not a JSON object");
		goto out;
	}
	cJSON_ArrayForEach(it, o) {
		bool known = false;

		for (const char *const *f = fields; *f; f++)
			known |= it->string && !strcmp(it->string, *f);
		if (!known) {
			r = sv_errf(-EINVAL, err, errlen, "net policy: unknown field \"%.64s\"", it->string ? it->string : "");
			goto out;
		}
	}
	memcpy(cfg.mac, e->mac, 6);
	mode = cJSON_GetObjectItemCaseSensitive(o, "mode");
	if (!mode || (cJSON_IsString(mode) && !strcmp(mode->valuestring, "open"))) {
		cfg.mode = FW_OPEN;
	} else if (cJSON_IsString(mode) && !strcmp(mode->valuestring, "block")) {
		cfg.mode = FW_BLOCK;
	} else if (cJSON_IsString(mode) && !strcmp(mode->valuestring, "allowlist")) {
		cfg.mode = FW_ALLOWLIST;
	} else {
		r = sv_errf(-EINVAL, err, errlen, "net policy: \"mode\" must be open, block or allowlist");
		goto out;
	}
	if ((r = get_addr(o, "ip", AF_INET, cfg.ipv4, true, NULL, err, errlen)) ||
	    (r = get_addr(o, "gateway", AF_INET, cfg.gateway_ipv4, true, NULL, err, errlen)) ||
	    (r = get_mac(o, "gateway_mac", cfg.gateway_mac, err, errlen)) ||
	    (r = get_addr(o, "ip6", AF_INET6, cfg.ipv6, false, &has6, err, errlen)) ||
	    (r = get_addr(o, "gateway6", AF_INET6, cfg.gateway_ipv6, false, &hasgw6, err, errlen)))
		goto out;
	if (has6 != hasgw6) {
		r = sv_errf(-EINVAL, err, errlen, "net policy: \"ip6\" and \"gateway6\" go together");
		goto out;
	}
	cfg.has_ipv6 = has6;
	cfg.has_gateway_ipv6 = hasgw6;
	if (cJSON_GetObjectItemCaseSensitive(o, "allow") && cfg.mode != FW_ALLOWLIST) {
		r = sv_errf(-EINVAL, err, errlen, "net policy: \"allow\" needs mode allowlist (%s would ignore it)",
			 cfg.mode == FW_BLOCK ? "block" : "open");
		goto out;
	}
	if ((r = add_cidrs(o, "allow", FW_ALLOW, &allow, &allow_v, &nallow, &cap_a, err, errlen)) ||
	    (r = add_cidrs(o, "deny_host", FW_DENY_HOST, &deny, &deny_v, &ndeny, &cap_d, err, errlen)) ||
	    (r = add_cidrs(o, "deny_sandboxes", FW_DENY_OTHER_SANDBOX, &deny, &deny_v, &ndeny, &cap_d, err,
			   errlen)) ||
	    (r = add_cidrs(o, "allow_private", FW_ALLOW, &priv, &priv_v, &npriv, &cap_p, err, errlen)))
		goto out;
	if ((r = cidr_set_build(allow, allow_v, nallow, &allow_set)) ||
	    (r = cidr_set_build(deny, deny_v, ndeny, &deny_set))) {
		sv_errf(-EINVAL, err, errlen, "net policy: %s", strerror(-r));
		goto out;
	}
	r = fw_private_open_build(priv, npriv, allow, nallow, &priv_set, why, sizeof(why));
	if (r < 0) {
		sv_errf(r, err, errlen, "net policy: \"allow_private\": %s", why);
		goto out;
	}
	cfg.allow = allow_set;
	cfg.deny = deny_set;
	cfg.private_open = priv_set;
	r = fw_policy_build(&cfg, &policy, err, errlen);
	if (r < 0)
		goto out;
	/* Swap: the old policy and the sets it borrows go together. */
	fw_policy_free(e->policy);
	cidr_set_free(e->allow);
	cidr_set_free(e->deny);
	cidr_set_free(e->private_open);
	e->policy = policy;
	e->allow = allow_set;
	e->deny = deny_set;
	e->private_open = priv_set;
	e->mode = cfg.mode;
	e->nallow = nallow;
	e->ndeny = ndeny;
	e->nprivate = npriv;
	allow_set = deny_set = priv_set = NULL;
out:
	cidr_set_free(allow_set);
	cidr_set_free(deny_set);
	cidr_set_free(priv_set);
	free(allow);
	free(allow_v);
	free(deny);
	free(deny_v);
	free(priv);
	free(priv_v);
	cJSON_Delete(o);
	return r;
}

int net_egress_load_file(struct net_egress *e, const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0)
		return sv_errf(-errno, err, errlen, "net policy %s: %s", path, strerror(errno));
	r = net_egress_load_fd(e, fd, path, err, errlen);
	close(fd);
	return r;
}

int net_egress_load_fd(struct net_egress *e, int fd, const char *label, char *err, size_t errlen)
{
	struct stat st;
	char *buf;
	ssize_t n;
	int r;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > NET_POLICY_MAX_BYTES)
		return sv_errf(-EINVAL, err, errlen, "net policy %s: not a regular file of at most %u bytes", label,
			    NET_POLICY_MAX_BYTES);
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	n = pread(fd, buf, (size_t)st.st_size, 0);
	if (n != st.st_size) {
		free(buf);
		return sv_errf(-EINVAL, err, errlen, "net policy %s: short read", label);
	}
	r = net_egress_load(e, buf, (size_t)n, err, errlen);
	free(buf);
	return r;
}

static void log_drop(struct net_egress *e, enum fw_verdict_reason why, enum net_vnet_status vnet,
		     const uint8_t *frame, size_t len)
{
	struct timespec ts;
	struct net_frame f;
	char src[INET6_ADDRSTRLEN] = "-", dst[INET6_ADDRSTRLEN] = "-";

	clock_gettime(CLOCK_MONOTONIC, &ts);
	if ((uint64_t)ts.tv_sec != e->log_second) {
		if (e->logged_this_second > DROP_LOG_PER_SECOND)
			sv_warn("net: %u more drops in the last second not logged",
				e->logged_this_second - DROP_LOG_PER_SECOND);
		e->log_second = (uint64_t)ts.tv_sec;
		e->logged_this_second = 0;
	}
	if (e->logged_this_second++ >= DROP_LOG_PER_SECOND)
		return;
	if (net_frame_parse(frame, len, &f) == NET_FRAME_OK && (f.flags & (NET_FRAME_IPV4 | NET_FRAME_IPV6))) {
		int af = (f.flags & NET_FRAME_IPV4) ? AF_INET : AF_INET6;

		inet_ntop(af, f.ip.src, src, sizeof(src));
		inet_ntop(af, f.ip.dst, dst, sizeof(dst));
		if (why == FW_DROP_OFFLOAD)
			sv_warn("net: dropped egress reason=%s header=%s src=%s dst=%s proto=%u dport=%u",
				fw_reason_name(why), net_vnet_status_name(vnet), src, dst, f.ip.proto, f.dst_port);
		else
			sv_warn("net: dropped egress reason=%s src=%s dst=%s proto=%u dport=%u", fw_reason_name(why),
				src, dst, f.ip.proto, f.dst_port);
	} else {
		sv_warn("net: dropped egress reason=%s ethertype=0x%04x len=%zu", fw_reason_name(why), f.ethertype,
			len);
	}
}

static bool judged(struct net_egress *e, enum fw_verdict_reason why, enum net_vnet_status vnet,
		   const uint8_t *frame, size_t len)
{
	fw_counters_add(&e->counters, why);
	if (fw_reason_is_pass(why))
		return true;
	/* ARP/ND noise and malformed frames are counted, not logged; addresses are what an operator wants. */
	if (why != FW_DROP_ARP && why != FW_DROP_ND && why != FW_DROP_MALFORMED)
		log_drop(e, why, vnet, frame, len);
	return false;
}

bool net_egress_check(void *ctx, const uint8_t *frame, size_t len)
{
	struct net_egress *e = ctx;

	if (!e->policy)
		return false; /* no policy, no traffic */
	return judged(e, fw_check(e->policy, frame, len), NET_VNET_OK, frame, len);
}

bool net_egress_check_tx(void *ctx, const uint8_t *frame, size_t len, const struct net_vnet_hdr *in,
			 unsigned offloads, struct net_vnet_hdr *out)
{
	struct net_egress *e = ctx;
	enum net_vnet_status vnet;
	enum fw_verdict_reason why;

	memset(out, 0, sizeof(*out));
	if (!e->policy)
		return false;
	why = fw_check_tx(e->policy, frame, len, in, offloads, out, &vnet);
	return judged(e, why, vnet, frame, len);
}

void net_egress_status(const struct net_egress *e, cJSON *out)
{
	cJSON *c = cJSON_CreateObject();

	cJSON_AddStringToObject(out, "mode", e->mode == FW_BLOCK ? "block" : e->mode == FW_ALLOWLIST ? "allowlist" : "open");
	cJSON_AddNumberToObject(out, "allow", (double)e->nallow);
	cJSON_AddNumberToObject(out, "deny", (double)e->ndeny);
	cJSON_AddNumberToObject(out, "allow_private", (double)e->nprivate);
	for (int r = 0; r < FW_REASON_COUNT; r++)
		cJSON_AddNumberToObject(c, fw_reason_name((enum fw_verdict_reason)r), (double)e->counters.count[r]);
	cJSON_AddItemToObject(out, "counters", c);
}

void net_egress_destroy(struct net_egress *e)
{
	fw_policy_free(e->policy);
	cidr_set_free(e->allow);
	cidr_set_free(e->deny);
	cidr_set_free(e->private_open);
	e->policy = NULL;
	e->allow = e->deny = e->private_open = NULL;
}
