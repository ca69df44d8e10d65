/*
 * The relay port (docs/agent-protocol.md, "Relay port"): a host connection
 * names a TCP port in one line, the agent connects to 127.0.0.1 on it inside
 * the guest and carries bytes both ways unchanged. This is how the ingress
 * proxy reaches a server in the sandbox without the guest network, so it
 * works with block_network and reaches servers bound to 127.0.0.1. Only the
 * guest's loopback can be named: the host cannot make the agent dial out.
 *
 * Each direction has a fixed buffer; a side is read only while the buffer
 * towards the other has room, so a slow reader stalls its writer, never the
 * agent's memory. An end of stream is passed on as a half-close.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"
#include "parse.h"

#define RELAY_BUF (64u * 1024u)
#define RELAY_LINE_MAX 32u
#define RELAY_HEADER_MS 10000u
#define RELAY_LINGER_MS 2000u

enum relay_state { RELAY_HEADER, RELAY_CONNECTING, RELAY_OPEN, RELAY_CLOSING };

/* Bytes on their way from one side to the other. */
struct relay_pipe {
	uint8_t buf[RELAY_BUF];
	size_t start, end;
	bool eof;  /* the source ended */
	bool shut; /* and the destination was told (SHUT_WR) */
};

struct agent_relay {
	struct agent_watch host, guest; /* guest.fd -1 until the connect */
	struct agent *agent;
	struct agent_relay *next;
	enum relay_state state;
	char line[RELAY_LINE_MAX];
	size_t line_len;
	uint64_t deadline_ms; /* of the header line */
	struct relay_pipe to_guest, to_host;
};

static struct agent_relay *of_host(struct agent_watch *w)
{
	return (struct agent_relay *)((char *)w - offsetof(struct agent_relay, host));
}

static struct agent_relay *of_guest(struct agent_watch *w)
{
	return (struct agent_relay *)((char *)w - offsetof(struct agent_relay, guest));
}

static size_t pending(const struct relay_pipe *p)
{
	return p->end - p->start;
}

static size_t room(struct relay_pipe *p)
{
	if (p->start == p->end)
		p->start = p->end = 0;
	if (p->start && p->end == RELAY_BUF) {
		memmove(p->buf, p->buf + p->start, p->end - p->start);
		p->end -= p->start;
		p->start = 0;
	}
	return RELAY_BUF - p->end;
}

static void put(struct relay_pipe *p, const void *data, size_t len)
{
	if (len > room(p))
		len = room(p);
	memcpy(p->buf + p->end, data, len);
	p->end += len;
}

static void relay_close(struct agent_relay *r)
{
	struct agent *a = r->agent;

	for (struct agent_relay **p = &a->relays; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			break;
		}
	a->nrelays--;
	agent_watch_remove(a, &r->host);
	close(r->host.fd);
	r->host.fd = -1;
	if (r->guest.fd >= 0) {
		agent_watch_remove(a, &r->guest);
		close(r->guest.fd);
		r->guest.fd = -1;
	}
	agent_defer_free(a, r);
}

/* The host is told why, then the connection ends. */
static void fail(struct agent_relay *r, const char *why)
{
	char line[96];
	int n = snprintf(line, sizeof(line), "ERROR %s\n", why);

	r->state = RELAY_CLOSING;
	/* Read on (and discard) for a moment: closing with unread input would reset the answer away. */
	r->deadline_ms = agent_now_ms() + RELAY_LINGER_MS;
	r->to_host.start = r->to_host.end = 0;
	put(&r->to_host, line, (size_t)n);
	r->to_host.eof = true;
	r->to_guest.eof = r->to_guest.shut = true;
}

static void update(struct agent_relay *r)
{
	uint32_t host = 0, guest = 0;

	if (r->state == RELAY_HEADER || r->state == RELAY_CLOSING ||
	    (r->state == RELAY_OPEN && !r->to_guest.eof && room(&r->to_guest)))
		host |= EPOLLIN;
	if (pending(&r->to_host) || (r->to_host.eof && !r->to_host.shut))
		host |= EPOLLOUT;
	if (r->state == RELAY_CONNECTING || (r->state == RELAY_OPEN && pending(&r->to_guest)) ||
	    (r->state == RELAY_OPEN && r->to_guest.eof && !r->to_guest.shut))
		guest |= EPOLLOUT;
	if (r->state == RELAY_OPEN && !r->to_host.eof && room(&r->to_host))
		guest |= EPOLLIN;
	if ((agent_watch_set(r->agent, &r->host, host) < 0) ||
	    (r->guest.fd >= 0 && agent_watch_set(r->agent, &r->guest, guest) < 0))
		relay_close(r);
}

/*
 * Reads what fd has into p; false when the connection failed. A short read
 * took all there was: the (level-triggered) watch tells when more, or the
 * end, comes, without a recv that would only say EAGAIN.
 */
static bool fill(int fd, struct relay_pipe *p)
{
	while (!p->eof && room(p)) {
		size_t want = room(p);
		ssize_t n = recv(fd, p->buf + p->end, want, 0);

		if (n > 0) {
			p->end += (size_t)n;
			if ((size_t)n < want)
				break;
			continue;
		}
		if (n == 0) {
			p->eof = true;
			break;
		}
		if (errno == EINTR)
			continue;
		return errno == EAGAIN || errno == EWOULDBLOCK;
	}
	return true;
}

/* Writes what p holds to fd, then passes its end on; false when the connection failed. */
static bool drain(int fd, struct relay_pipe *p)
{
	while (pending(p)) {
		ssize_t n = send(fd, p->buf + p->start, pending(p), MSG_NOSIGNAL);

		if (n > 0) {
			p->start += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
	}
	if (p->eof && !p->shut) {
		shutdown(fd, SHUT_WR);
		p->shut = true;
	}
	return true;
}

static void on_guest(struct agent_watch *w, uint32_t events);

/* "RELAY PORT\n": connects to 127.0.0.1:PORT; the answer comes when the connect ends. */
static void start(struct agent_relay *r, const char *line)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	uint64_t port;
	int fd, one = 1;

	if (strncmp(line, "RELAY ", 6) || sv_parse_u64(line + 6, 1, 65535, &port) < 0) {
		fail(r, "bad-request expected RELAY PORT");
		return;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fail(r, "unreachable no socket");
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	addr.sin_port = htons((uint16_t)port);
	r->guest = (struct agent_watch){.fd = fd, .fn = on_guest};
	r->state = RELAY_CONNECTING;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 && errno != EINPROGRESS) {
		fail(r, errno == ECONNREFUSED ? "refused nothing listens on that port" : "unreachable connect failed");
		return;
	}
}

static void read_header(struct agent_relay *r)
{
	uint8_t buf[RELAY_LINE_MAX];
	ssize_t n = recv(r->host.fd, buf, sizeof(buf) - r->line_len, 0);
	uint8_t *lf;

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		relay_close(r);
		return;
	}
	if (n < 0)
		return;
	lf = memchr(buf, '\n', (size_t)n);
	if (!lf) {
		memcpy(r->line + r->line_len, buf, (size_t)n);
		r->line_len += (size_t)n;
		if (r->line_len >= RELAY_LINE_MAX - 1)
			fail(r, "bad-request line too long");
		return;
	}
	memcpy(r->line + r->line_len, buf, (size_t)(lf - buf));
	r->line[r->line_len + (size_t)(lf - buf)] = '\0';
	/* What followed the line is the first of the bytes for the server. */
	put(&r->to_guest, lf + 1, (size_t)(buf + n - lf - 1));
	start(r, r->line);
}

static void on_host(struct agent_watch *w, uint32_t events)
{
	struct agent_relay *r = of_host(w);

	if (r->state == RELAY_HEADER && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		read_header(r);
		if (r->host.fd < 0)
			return;
	} else if (r->state == RELAY_OPEN && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		if (!fill(r->host.fd, &r->to_guest)) {
			relay_close(r);
			return;
		}
	} else if (r->state == RELAY_CLOSING && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		uint8_t sink[4096];
		ssize_t n = recv(r->host.fd, sink, sizeof(sink), 0);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			relay_close(r); /* the host has read the answer and left */
			return;
		}
	}
	if ((events & EPOLLOUT) && !drain(r->host.fd, &r->to_host)) {
		relay_close(r);
		return;
	}
	if (r->state == RELAY_OPEN && r->guest.fd >= 0 && pending(&r->to_guest) &&
	    !drain(r->guest.fd, &r->to_guest)) {
		relay_close(r);
		return;
	}
	if (r->state != RELAY_CLOSING && r->to_host.shut && r->to_guest.shut) {
		relay_close(r);
		return;
	}
	update(r);
}

static void on_guest(struct agent_watch *w, uint32_t events)
{
	struct agent_relay *r = of_guest(w);

	if (r->state == RELAY_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(r->guest.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			fail(r, err == ECONNREFUSED ? "refused nothing listens on that port" : "unreachable connect failed");
		} else {
			r->state = RELAY_OPEN;
			/* The answer goes before any byte of the server's. */
			put(&r->to_host, "OK\n", 3);
			events = EPOLLOUT; /* what the host sent after its line goes now */
		}
	}
	if (r->state == RELAY_OPEN) {
		if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !fill(r->guest.fd, &r->to_host)) {
			relay_close(r);
			return;
		}
		if ((events & EPOLLOUT) && !drain(r->guest.fd, &r->to_guest)) {
			relay_close(r);
			return;
		}
	}
	if (!drain(r->host.fd, &r->to_host)) {
		relay_close(r);
		return;
	}
	if (r->state != RELAY_CLOSING && r->to_host.shut && r->to_guest.shut) {
		relay_close(r);
		return;
	}
	update(r);
}

void agent_relay_accept(struct agent *a)
{
	for (;;) {
		int fd = accept4(a->relay_listen.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct agent_relay *r;

		if (fd < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				sv_warn("relay accept: %s", strerror(errno));
			return;
		}
		if (a->nrelays >= AGENT_MAX_RELAYS) {
			sv_warn("refusing a relay: %u open already", a->nrelays);
			close(fd);
			continue;
		}
		r = calloc(1, sizeof(*r));
		if (!r) {
			close(fd);
			continue;
		}
		r->agent = a;
		r->host = (struct agent_watch){.fd = fd, .fn = on_host};
		r->guest.fd = -1;
		r->deadline_ms = agent_now_ms() + RELAY_HEADER_MS;
		r->next = a->relays;
		a->relays = r;
		a->nrelays++;
		update(r);
	}
}

int64_t agent_relay_tick(struct agent *a)
{
	uint64_t now = agent_now_ms();
	int64_t next = -1;

	for (struct agent_relay *r = a->relays, *n; r; r = n) {
		n = r->next;
		/* A header line that never came, or a refused client that does not leave. */
		if (r->state != RELAY_HEADER && r->state != RELAY_CLOSING)
			continue;
		if (now >= r->deadline_ms) {
			relay_close(r);
			continue;
		}
		if (next < 0 || (int64_t)(r->deadline_ms - now) < next)
			next = (int64_t)(r->deadline_ms - now);
	}
	return next;
}
