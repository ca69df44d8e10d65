#include "output.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* WORKER (the fleet gateway's "worker", docs/fleet.md) only when a sandbox has one. */
#define TABLE_COLUMNS_MAX 10

static const char *const table_header[TABLE_COLUMNS_MAX] = {
	"ID", "NAME", "STATE", "IMAGE", "CPU", "MEM", "AGE", "RETURNCODE/REASON", "WORKER", "TAGS",
};

/* A growing string; on allocation failure it stays NULL and the caller reports it. */
struct out_str {
	char *s;
	size_t len;
	int err;
};

static void str_add(struct out_str *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void str_add(struct out_str *o, const char *fmt, ...)
{
	va_list ap;
	char *piece, *p;
	int n;

	if (o->err)
		return;
	va_start(ap, fmt);
	n = vasprintf(&piece, fmt, ap);
	va_end(ap);
	if (n < 0) {
		o->err = -ENOMEM;
		return;
	}
	/* Control characters of server strings would reach the terminal as is. */
	for (p = piece; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	p = realloc(o->s, o->len + (size_t)n + 1);
	if (!p) {
		free(piece);
		o->err = -ENOMEM;
		return;
	}
	memcpy(p + o->len, piece, (size_t)n + 1);
	o->s = p;
	o->len += (size_t)n;
	free(piece);
}

static double out_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void str_age(struct out_str *o, double seconds)
{
	long s = seconds > 0 ? (long)seconds : 0;

	if (s < 60)
		str_add(o, "%lds", s);
	else if (s < 3600)
		str_add(o, "%ldm", s / 60);
	else if (s < 86400)
		str_add(o, "%ldh", s / 3600);
	else
		str_add(o, "%ldd", s / 86400);
}

static void str_time(struct out_str *o, double t)
{
	time_t secs = (time_t)t;
	struct tm tm;
	char buf[64];

	if (!localtime_r(&secs, &tm) || !strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %Z", &tm)) {
		str_add(o, "%.3f", t);
		return;
	}
	str_add(o, "%s (", buf);
	str_age(o, out_now() - t);
	str_add(o, " ago)");
}

static void str_number(struct out_str *o, double v)
{
	if (v > -9007199254740992.0 && v < 9007199254740992.0 && v == (double)(long long)v)
		str_add(o, "%.0f", v);
	else
		str_add(o, "%g", v);
}

/* A word as a shell would need it, so a printed command can be pasted back. */
static void str_shell_word(struct out_str *o, const char *w)
{
	if (*w && strspn(w, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./=:,+@%") ==
			  strlen(w)) {
		str_add(o, "%s", w);
		return;
	}
	str_add(o, "'");
	for (; *w; w++) {
		if (*w == '\'')
			str_add(o, "'\\''");
		else
			str_add(o, "%c", *w);
	}
	str_add(o, "'");
}

static void str_value(struct out_str *o, const char *key, const cJSON *v)
{
	const cJSON *e;
	bool first = true;
	size_t klen = key ? strlen(key) : 0;

	if (!v || cJSON_IsNull(v)) {
		str_add(o, "-");
	} else if (cJSON_IsBool(v)) {
		str_add(o, "%s", cJSON_IsTrue(v) ? "true" : "false");
	} else if (cJSON_IsNumber(v)) {
		if (klen > 3 && !strcmp(key + klen - 3, "_at"))
			str_time(o, v->valuedouble);
		else
			str_number(o, v->valuedouble);
	} else if (cJSON_IsString(v)) {
		str_add(o, "%s", v->valuestring);
	} else if (cJSON_IsObject(v)) {
		cJSON_ArrayForEach(e, v) {
			str_add(o, "%s%s=", first ? "" : ",", e->string);
			if (cJSON_IsString(e))
				str_add(o, "%s", e->valuestring);
			else
				str_value(o, NULL, e);
			first = false;
		}
		if (first)
			str_add(o, "-");
	} else if (cJSON_IsArray(v)) {
		cJSON_ArrayForEach(e, v) {
			str_add(o, "%s", first ? "" : " ");
			if (cJSON_IsString(e))
				str_shell_word(o, e->valuestring);
			else
				str_value(o, NULL, e);
			first = false;
		}
		if (first)
			str_add(o, "-");
	} else {
		str_add(o, "?");
	}
}

int vmctl_print_json(const cJSON *j)
{
	char *s = cJSON_Print(j);

	if (!s)
		return -ENOMEM;
	puts(s);
	free(s);
	return 0;
}

int vmctl_print_fields(const cJSON *obj)
{
	const cJSON *f;
	struct out_str v;
	int width = 0, r = 0;

	cJSON_ArrayForEach(f, obj)
		if (f->string && (int)strlen(f->string) > width)
			width = (int)strlen(f->string);
	cJSON_ArrayForEach(f, obj) {
		if (!f->string)
			continue;
		memset(&v, 0, sizeof(v));
		str_value(&v, f->string, f);
		if (v.err)
			r = v.err;
		else
			printf("%s:%*s %s\n", f->string, width - (int)strlen(f->string), "", v.s);
		free(v.s);
	}
	return r;
}

/* Prints line (unless it failed) and empties it; *r keeps the first error. */
static void line_flush(struct out_str *line, int *r)
{
	if (!line->err)
		printf("%s\n", line->s ? line->s : "");
	else if (!*r)
		*r = line->err;
	free(line->s);
	memset(line, 0, sizeof(*line));
}

int vmctl_print_network(const cJSON *net)
{
	const cJSON *mode = cJSON_GetObjectItemCaseSensitive(net, "mode");
	const cJSON *allow = cJSON_GetObjectItemCaseSensitive(net, "allow");
	const cJSON *ip = cJSON_GetObjectItemCaseSensitive(net, "ip");
	const cJSON *ip6 = cJSON_GetObjectItemCaseSensitive(net, "ip6");
	const cJSON *gw = cJSON_GetObjectItemCaseSensitive(net, "gateway");
	const cJSON *tap = cJSON_GetObjectItemCaseSensitive(net, "tap");
	const cJSON *counters = cJSON_GetObjectItemCaseSensitive(net, "counters");
	static const char *const dirs[2][4] = {
		{ "sent", "tx_frames", "tx_bytes", "tx_dropped" },
		{ "received", "rx_frames", "rx_bytes", "rx_dropped" },
	};
	struct out_str line = { 0 };
	const cJSON *f;
	int width = 0, r = 0, shown = 0;

	str_add(&line, "mode: ");
	str_value(&line, NULL, mode);
	if (cJSON_IsString(mode) && !strcmp(mode->valuestring, "allowlist") && cJSON_IsNumber(allow)) {
		str_add(&line, " (");
		str_number(&line, allow->valuedouble);
		str_add(&line, " CIDR%s)", allow->valuedouble == 1 ? "" : "s");
	} else if (cJSON_IsString(mode) && !strcmp(mode->valuestring, "none")) {
		str_add(&line, " (no network device)");
	}
	line_flush(&line, &r);

	if (cJSON_IsString(ip) || cJSON_IsString(ip6)) {
		str_add(&line, "address: ");
		if (cJSON_IsString(ip))
			str_add(&line, "%s%s", ip->valuestring, cJSON_IsString(ip6) ? ", " : "");
		if (cJSON_IsString(ip6))
			str_add(&line, "%s", ip6->valuestring);
		if (cJSON_IsString(gw) || cJSON_IsString(tap)) {
			str_add(&line, " (");
			if (cJSON_IsString(gw))
				str_add(&line, "gateway %s%s", gw->valuestring, cJSON_IsString(tap) ? ", " : "");
			if (cJSON_IsString(tap))
				str_add(&line, "tap %s", tap->valuestring);
			str_add(&line, ")");
		}
		line_flush(&line, &r);
	}

	if (cJSON_GetObjectItemCaseSensitive(net, "tx_frames") ||
	    cJSON_GetObjectItemCaseSensitive(net, "rx_frames")) {
		str_add(&line, "frames:");
		for (int d = 0; d < 2; d++) {
			str_add(&line, "%s %s ", d ? "," : "", dirs[d][0]);
			str_value(&line, NULL, cJSON_GetObjectItemCaseSensitive(net, dirs[d][1]));
			str_add(&line, " (");
			str_value(&line, NULL, cJSON_GetObjectItemCaseSensitive(net, dirs[d][2]));
			str_add(&line, " bytes, ");
			str_value(&line, NULL, cJSON_GetObjectItemCaseSensitive(net, dirs[d][3]));
			str_add(&line, " dropped)");
		}
		line_flush(&line, &r);
	}

	if (!cJSON_IsObject(counters))
		return r;
	cJSON_ArrayForEach(f, counters) {
		if (!f->string || (cJSON_IsNumber(f) && f->valuedouble == 0))
			continue;
		if ((int)strlen(f->string) > width)
			width = (int)strlen(f->string);
		shown++;
	}
	str_add(&line, "verdicts:%s", shown ? "" : " none");
	line_flush(&line, &r);
	cJSON_ArrayForEach(f, counters) {
		if (!f->string || (cJSON_IsNumber(f) && f->valuedouble == 0))
			continue;
		str_add(&line, "  %-*s  ", width, f->string);
		str_value(&line, NULL, f);
		line_flush(&line, &r);
	}
	return r;
}

static void table_row(const cJSON *sb, struct out_str *cells, double now, bool workers)
{
	const cJSON *rc = cJSON_GetObjectItemCaseSensitive(sb, "returncode");
	const cJSON *reason = cJSON_GetObjectItemCaseSensitive(sb, "reason");
	const cJSON *mem = cJSON_GetObjectItemCaseSensitive(sb, "memory_mib");
	const cJSON *created = cJSON_GetObjectItemCaseSensitive(sb, "created_at");
	static const char *const direct[] = { "id", "name", "state", "image", "cpu" };

	for (int i = 0; i < 5; i++)
		str_value(&cells[i], NULL, cJSON_GetObjectItemCaseSensitive(sb, direct[i]));
	if (cJSON_IsNumber(mem)) {
		str_number(&cells[5], mem->valuedouble);
		str_add(&cells[5], "MiB");
	} else {
		str_add(&cells[5], "-");
	}
	if (cJSON_IsNumber(created))
		str_age(&cells[6], now - created->valuedouble);
	else
		str_add(&cells[6], "-");
	if (cJSON_IsNull(rc) || !rc) {
		str_add(&cells[7], "-");
	} else {
		str_value(&cells[7], NULL, rc);
		str_add(&cells[7], "/");
		str_value(&cells[7], NULL, reason);
	}
	if (workers)
		str_value(&cells[8], NULL, cJSON_GetObjectItemCaseSensitive(sb, "worker"));
	str_value(&cells[workers ? 9 : 8], NULL, cJSON_GetObjectItemCaseSensitive(sb, "tags"));
}

int vmctl_print_table(const cJSON *sandboxes)
{
	int rows = cJSON_GetArraySize(sandboxes) + 1, width[TABLE_COLUMNS_MAX] = { 0 }, cols;
	struct out_str *cells;
	double now = out_now();
	const cJSON *sb;
	bool workers = false;
	int i = 1, r = 0, n;

	cJSON_ArrayForEach(sb, sandboxes)
		workers = workers || cJSON_IsString(cJSON_GetObjectItemCaseSensitive(sb, "worker"));
	cols = workers ? TABLE_COLUMNS_MAX : TABLE_COLUMNS_MAX - 1;
	cells = calloc((size_t)rows * (size_t)cols, sizeof(*cells));
	if (!cells)
		return -ENOMEM;
	for (int c = 0; c < cols; c++)
		str_add(&cells[c], "%s", table_header[!workers && c == cols - 1 ? c + 1 : c]);
	cJSON_ArrayForEach(sb, sandboxes) {
		if (i >= rows)
			break;
		table_row(sb, cells + (size_t)i * (size_t)cols, now, workers);
		i++;
	}
	for (i = 0; i < rows * cols; i++) {
		if (cells[i].err) {
			r = cells[i].err;
			goto out;
		}
		n = (int)strlen(cells[i].s);
		if (n > width[i % cols])
			width[i % cols] = n;
	}
	for (i = 0; i < rows; i++) {
		for (int c = 0; c < cols; c++) {
			const char *s = cells[i * cols + c].s;

			if (c == cols - 1)
				printf("%s\n", s);
			else
				printf("%-*s  ", width[c], s);
		}
	}
out:
	for (i = 0; i < rows * cols; i++)
		free(cells[i].s);
	free(cells);
	return r;
}
