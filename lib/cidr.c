#include "cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A set is, per family, a step function over the address space: start[i] is
 * where interval i begins (start[0] == 0, strictly increasing), val[i] the
 * value of the longest prefix covering all of it, or NONE. A lookup is then a
 * binary search for the last start <= addr, which costs the same whatever the
 * nesting of the prefixes, and needs no allocation or locking.
 *
 * The search is latency-bound (one dependent load per step), so a directory
 * shortens it: below the leading bits all starts share ("skip"), the next
 * "bits" bits of an address pick one of 2^bits buckets, and dir[b] is the
 * interval holding the first address of bucket b. An address in bucket b
 * then lies in intervals dir[b]..dir[b + 1]: one or two steps when prefixes
 * spread out, and never worse than the whole search when they bunch up.
 */

/* An address as a number: IPv6 in two big-endian halves, IPv4 in lo alone. */
struct u128 {
	uint64_t hi, lo;
};

/* Outside uint8_t, so that 0 stays a value a caller can store. */
#define NONE 0x100

/*
 * About four buckets an interval: most then hold one or two, so the search
 * has a fixed, predictable length. At most 2^16 + 1 entries (256 KiB) a family.
 */
#define DIR_MAX_BITS 16

struct table {
	size_t n;            /* intervals, at least 1 */
	uint32_t *start4;    /* IPv4 tables */
	struct u128 *start6; /* IPv6 tables */
	uint16_t *val;
	uint32_t *dir;       /* 2^bits + 1 entries */
	uint64_t top;        /* start[1]'s high 64 bits (IPv4 left-aligned) */
	uint64_t top_mask;   /* the leading skip bits */
	unsigned skip, bits;
};

struct cidr_set {
	size_t count;
	struct table t4, t6;
};

/* One prefix while building. */
struct entry {
	struct u128 start, end;
	size_t order; /* its index in the items: among duplicates the last wins */
	uint8_t len;
	uint8_t value;
};

struct step {
	struct u128 start;
	uint16_t val;
};

static unsigned width(int family)
{
	return family == 4 ? 32 : 128;
}

static bool valid(const struct cidr *c)
{
	return (c->family == 4 && c->len <= 32) || (c->family == 6 && c->len <= 128);
}

static bool u128_eq(struct u128 a, struct u128 b)
{
	return a.hi == b.hi && a.lo == b.lo;
}

static bool u128_lt(struct u128 a, struct u128 b)
{
	return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo);
}

#ifdef __SIZEOF_INT128__
/* One compare with borrow instead of branches on the halves: random addresses mispredict those. */
static inline bool u128_le(struct u128 a, struct u128 b)
{
	return ((unsigned __int128)a.hi << 64 | a.lo) <= ((unsigned __int128)b.hi << 64 | b.lo);
}
#else
static inline bool u128_le(struct u128 a, struct u128 b)
{
	return !u128_lt(b, a);
}
#endif

static struct u128 u128_inc(struct u128 a)
{
	a.lo++;
	if (!a.lo)
		a.hi++;
	return a;
}

static inline uint32_t load32(const uint8_t *a)
{
	return (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
}

static inline uint64_t load64(const uint8_t *a)
{
	return (uint64_t)load32(a) << 32 | load32(a + 4);
}

static inline struct u128 load(int family, const uint8_t *a)
{
	if (family == 4)
		return (struct u128){ 0, load32(a) };
	return (struct u128){ load64(a), load64(a + 8) };
}

/* The host part of a prefix of len bits out of the family's width, as a mask. */
static struct u128 host_mask(int family, unsigned len)
{
	unsigned h = width(family) - len;
	struct u128 m;

	/* Shifts by 64 are undefined, hence the cases. */
	m.lo = h >= 64 ? ~0ull : (1ull << h) - 1;
	m.hi = h <= 64 ? 0 : h >= 128 ? ~0ull : (1ull << (h - 64)) - 1;
	return m;
}

/* One spelling per length: no sign, no spaces, no leading zeros. */
static int parse_len(const char *s, unsigned max, unsigned *out)
{
	unsigned v = 0;

	if (!*s || (s[0] == '0' && s[1]))
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(*s - '0');
		if (v > max)
			return -EINVAL;
	}
	*out = v;
	return 0;
}

/*
 * glibc's inet_pton happens to refuse "010.0.0.1", but other libcs accept it
 * and inet_aton reads it as octal (8.0.0.1): refuse it here whatever the libc.
 */
static bool octet_leading_zero(const char *dotted)
{
	for (const char *f = dotted; f; f = strchr(f, '.')) {
		if (*f == '.')
			f++;
		if (f[0] == '0' && f[1] >= '0' && f[1] <= '9')
			return true;
	}
	return false;
}

static bool host_bits_set(const struct cidr *c)
{
	unsigned bytes = width(c->family) / 8;

	for (unsigned i = c->len / 8; i < bytes; i++) {
		uint8_t host = i == c->len / 8 ? (uint8_t)(0xff >> (c->len % 8)) : 0xff;

		if (c->addr[i] & host)
			return true;
	}
	return false;
}

static void clear_host_bits(struct cidr *c)
{
	unsigned bytes = width(c->family) / 8;

	for (unsigned i = c->len / 8; i < bytes; i++)
		c->addr[i] &= i == c->len / 8 ? (uint8_t)~(0xff >> (c->len % 8)) : 0;
}

static int parse(const char *s, struct cidr *out, bool mask)
{
	char text[INET6_ADDRSTRLEN];
	struct cidr c = { 0 };
	const char *slash, *dotted;
	unsigned len;
	size_t alen;

	if (!s || !out)
		return -EINVAL;
	slash = strchr(s, '/');
	alen = slash ? (size_t)(slash - s) : strlen(s);
	/* Anything longer than the longest IPv6 text is junk. */
	if (alen == 0 || alen >= sizeof(text))
		return -EINVAL;
	memcpy(text, s, alen);
	text[alen] = '\0';
	if (strchr(text, ':')) {
		c.family = 6;
		if (inet_pton(AF_INET6, text, c.addr) != 1)
			return -EINVAL;
		dotted = strrchr(text, ':') + 1;
		if (!strchr(dotted, '.'))
			dotted = NULL;
	} else {
		c.family = 4;
		if (inet_pton(AF_INET, text, c.addr) != 1)
			return -EINVAL;
		dotted = text;
	}
	if (dotted && octet_leading_zero(dotted))
		return -EINVAL;
	len = width(c.family);
	if (slash && parse_len(slash + 1, width(c.family), &len))
		return -EINVAL;
	c.len = (uint8_t)len;
	/* "10.0.0.1/8" is more likely a typo than a wish for 10.0.0.0/8. */
	if (mask)
		clear_host_bits(&c);
	else if (host_bits_set(&c))
		return -EDOM;
	*out = c;
	return 0;
}

int cidr_parse(const char *s, struct cidr *out)
{
	return parse(s, out, false);
}

int cidr_parse_masked(const char *s, struct cidr *out)
{
	return parse(s, out, true);
}

const char *cidr_parse_why(const char *s, char *buf, size_t len)
{
	struct cidr c;
	char text[CIDR_STR_MAX];

	if (cidr_parse_masked(s, &c) == 0 && cidr_format(&c, text, sizeof(text)) == 0) {
		snprintf(buf, len, "has host bits set (the prefix would be %s)", text);
		return buf;
	}
	return "is not an IPv4 or IPv6 prefix such as 198.51.100.0/24 or 2001:db8::/32";
}

int cidr_format(const struct cidr *c, char *buf, size_t len)
{
	char text[INET6_ADDRSTRLEN];
	int n;

	if (!c || !valid(c) || (!buf && len))
		return -EINVAL;
	if (!inet_ntop(c->family == 4 ? AF_INET : AF_INET6, c->addr, text, sizeof(text)))
		return -EINVAL;
	n = snprintf(buf, len, "%s/%u", text, (unsigned)c->len);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= len) {
		/* Half a prefix would read as a different, wider one. */
		if (len)
			buf[0] = '\0';
		return -ENOSPC;
	}
	return 0;
}

bool cidr_contains(const struct cidr *c, int family, const uint8_t *addr)
{
	unsigned full, rem;

	if (!c || !addr || !valid(c) || c->family != family)
		return false;
	full = c->len / 8;
	rem = c->len % 8;
	if (memcmp(c->addr, addr, full))
		return false;
	return !rem || !((c->addr[full] ^ addr[full]) & (uint8_t)(0xff << (8 - rem)));
}

const struct cidr cidr_private_ranges[CIDR_PRIVATE_COUNT] = {
	{ .family = 4, .len = 8, .addr = { 10 } },
	{ .family = 4, .len = 12, .addr = { 172, 16 } },
	{ .family = 4, .len = 16, .addr = { 192, 168 } },
	{ .family = 4, .len = 10, .addr = { 100, 64 } },
	{ .family = 6, .len = 7, .addr = { 0xfc } },
};

bool cidr_is_private(const struct cidr *c)
{
	if (!c || !valid(c))
		return false;
	for (size_t i = 0; i < CIDR_PRIVATE_COUNT; i++) {
		const struct cidr *r = &cidr_private_ranges[i];

		if (c->len >= r->len && cidr_contains(r, c->family, c->addr))
			return true;
	}
	return false;
}

/* By start, then shorter (enclosing) first, then in the order given. */
static int entry_cmp(const void *pa, const void *pb)
{
	const struct entry *a = pa, *b = pb;

	if (!u128_eq(a->start, b->start))
		return u128_lt(a->start, b->start) ? -1 : 1;
	if (a->len != b->len)
		return a->len < b->len ? -1 : 1;
	return a->order < b->order ? -1 : a->order > b->order;
}

/* Adds a step; one at the same address as the last replaces it (that interval was empty). */
static void emit(struct step *steps, size_t *k, struct u128 at, uint16_t val)
{
	if (u128_eq(steps[*k - 1].start, at))
		steps[*k - 1].val = val;
	else
		steps[(*k)++] = (struct step){ at, val };
}

/*
 * Paints n sorted, distinct prefixes into steps (room for 2n + 1). Two
 * prefixes are either nested or disjoint, so a sweep with a stack of the open
 * ones does it: a prefix starts its own value, and where it ends the value of
 * the one enclosing it (or NONE) resumes. The stack holds prefixes of strictly
 * increasing length, so 129 entries suffice.
 */
static size_t paint(const struct entry *e, size_t n, struct u128 max, struct step *steps)
{
	size_t stack[129];
	size_t depth = 0, k = 1, m = 1;

	steps[0] = (struct step){ { 0, 0 }, NONE };
	for (size_t i = 0; i <= n; i++) {
		while (depth && (i == n || u128_lt(e[stack[depth - 1]].end, e[i].start))) {
			const struct entry *top = &e[stack[--depth]];

			if (!u128_eq(top->end, max))
				emit(steps, &k, u128_inc(top->end),
				     depth ? e[stack[depth - 1]].value : NONE);
		}
		if (i == n)
			break;
		stack[depth++] = i;
		emit(steps, &k, e[i].start, e[i].value);
	}
	/* Neighbours with one value are one interval: fewer steps to search. */
	for (size_t i = 1; i < k; i++)
		if (steps[i].val != steps[m - 1].val)
			steps[m++] = steps[i];
	return m;
}

/* The high 64 bits of an address as a number, IPv4 left-aligned, which the directory indexes. */
static uint64_t high(int family, struct u128 a)
{
	return family == 4 ? a.lo << 32 : a.hi;
}

static int make_dir(struct table *t, int family, const struct step *steps)
{
	unsigned w = family == 4 ? 32 : 64, bits = 1;
	size_t nb, j = 0;

	while (bits < DIR_MAX_BITS && ((size_t)1 << bits) < t->n * 4)
		bits++;
	t->bits = bits;
	t->skip = 0;
	if (t->n >= 2) {
		uint64_t diff = high(family, steps[1].start) ^ high(family, steps[t->n - 1].start);

		t->top = high(family, steps[1].start);
		t->skip = diff ? (unsigned)__builtin_clzll(diff) : 64;
		/* Skipping fewer bits than are common is still right, and keeps the shifts in range. */
		if (t->skip > w - bits)
			t->skip = w - bits;
	}
	t->top_mask = t->skip ? ~0ull << (64 - t->skip) : 0;
	nb = (size_t)1 << bits;
	t->dir = malloc((nb + 1) * sizeof(*t->dir));
	if (!t->dir)
		return -ENOMEM;
	for (size_t b = 0; b < nb; b++) {
		uint64_t h = (t->top & t->top_mask) | (uint64_t)b << (64 - t->skip - bits);
		struct u128 first = family == 4 ? (struct u128){ 0, h >> 32 } : (struct u128){ h, 0 };

		while (j + 1 < t->n && u128_le(steps[j + 1].start, first))
			j++;
		t->dir[b] = (uint32_t)j;
	}
	t->dir[nb] = (uint32_t)(t->n - 1);
	return 0;
}

/* Fills one family's table of s; e and steps are scratch with room for all items. */
static int build_family(struct cidr_set *s, int family, const struct cidr *items,
			const uint8_t *values, size_t n, struct entry *e, struct step *steps)
{
	struct table *t = family == 4 ? &s->t4 : &s->t6;
	struct u128 max = host_mask(family, 0);
	size_t m = 0, d = 0;

	for (size_t i = 0; i < n; i++) {
		struct u128 key, hm;

		if (items[i].family != family)
			continue;
		key = load(family, items[i].addr);
		hm = host_mask(family, items[i].len);
		key.hi &= ~hm.hi;
		key.lo &= ~hm.lo;
		e[m++] = (struct entry){ .start = key,
					 .end = { key.hi | hm.hi, key.lo | hm.lo },
					 .order = i,
					 .len = items[i].len,
					 .value = values[i] };
	}
	if (m)
		qsort(e, m, sizeof(*e), entry_cmp);
	for (size_t i = 0; i < m; i++) {
		if (i + 1 < m && e[i].len == e[i + 1].len && u128_eq(e[i].start, e[i + 1].start))
			continue;
		e[d++] = e[i];
	}
	s->count += d;
	t->n = paint(e, d, max, steps);
	t->val = malloc(t->n * sizeof(*t->val));
	if (family == 4)
		t->start4 = malloc(t->n * sizeof(*t->start4));
	else
		t->start6 = malloc(t->n * sizeof(*t->start6));
	if (!t->val || (family == 4 ? !t->start4 : !t->start6))
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++) {
		t->val[i] = steps[i].val;
		if (family == 4)
			t->start4[i] = (uint32_t)steps[i].start.lo;
		else
			t->start6[i] = steps[i].start;
	}
	return make_dir(t, family, steps);
}

int cidr_set_build(const struct cidr *items, const uint8_t *values, size_t n,
		   struct cidr_set **out)
{
	struct cidr_set *s = NULL;
	struct step *steps = NULL;
	struct entry *e = NULL;
	int err = -ENOMEM;

	if (!out || (n && (!items || !values)))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!valid(&items[i]))
			return -EINVAL;
	/* The directory holds interval numbers (2n + 1 at most) in 32 bits. */
	if (n > (UINT32_MAX - 1) / 2 || n > (SIZE_MAX / sizeof(*steps) - 1) / 2)
		return -ENOMEM;
	s = calloc(1, sizeof(*s));
	e = malloc((n ? n : 1) * sizeof(*e));
	steps = malloc((2 * n + 1) * sizeof(*steps));
	if (!s || !e || !steps)
		goto fail;
	err = build_family(s, 4, items, values, n, e, steps);
	if (err)
		goto fail;
	err = build_family(s, 6, items, values, n, e, steps);
	if (err)
		goto fail;
	free(steps);
	free(e);
	*out = s;
	return 0;
fail:
	free(steps);
	free(e);
	cidr_set_free(s);
	return err;
}

/*
 * The last i with a[i] <= x, given a[0] <= x. Branch-free: the comparison
 * picks the next base by a conditional move, so random addresses cost no
 * mispredictions.
 */
static inline size_t search4(const uint32_t *a, size_t n, uint32_t x)
{
	const uint32_t *base = a;

	while (n > 1) {
		size_t half = n / 2;

		base = base[half] <= x ? base + half : base;
		n -= half;
	}
	return (size_t)(base - a);
}

static inline size_t search6(const struct u128 *a, size_t n, struct u128 x)
{
	const struct u128 *base = a;

	while (n > 1) {
		size_t half = n / 2;

		base = u128_le(base[half], x) ? base + half : base;
		n -= half;
	}
	return (size_t)(base - a);
}

/* The intervals that may hold an address whose high 64 bits are h: [*first, *first + return). */
static inline size_t locate(const struct table *t, uint64_t h, size_t *first)
{
	size_t b;

	/* Outside the common leading bits: before every start but 0, or after all. */
	if ((h ^ t->top) & t->top_mask) {
		*first = h < t->top ? 0 : t->n - 1;
		return 1;
	}
	b = (size_t)((h << t->skip) >> (64 - t->bits));
	*first = t->dir[b];
	return t->dir[b + 1] - t->dir[b] + 1;
}

int cidr_set_lookup(const struct cidr_set *s, int family, const uint8_t *addr, uint8_t *value)
{
	size_t first, n;
	uint16_t v;

	if (!s || !addr)
		return 0;
	if (family == 4) {
		uint32_t x = load32(addr);

		n = locate(&s->t4, (uint64_t)x << 32, &first);
		v = s->t4.val[first + search4(s->t4.start4 + first, n, x)];
	} else if (family == 6) {
		struct u128 x = load(6, addr);

		n = locate(&s->t6, x.hi, &first);
		v = s->t6.val[first + search6(s->t6.start6 + first, n, x)];
	} else {
		return 0;
	}
	if (v == NONE)
		return 0;
	if (value)
		*value = (uint8_t)v;
	return 1;
}

size_t cidr_set_count(const struct cidr_set *s)
{
	return s ? s->count : 0;
}

void cidr_set_free(struct cidr_set *s)
{
	if (!s)
		return;
	for (int f = 0; f < 2; f++) {
		struct table *t = f ? &s->t6 : &s->t4;

		free(t->start4);
		free(t->start6);
		free(t->val);
		free(t->dir);
	}
	free(s);
}
