/* crawecho: evconnlistener plus one EV_READ|EV_PERSIST event per connection,
 * with read()/write() straight from the callback: what libevent can do with
 * no buffer layer in between. It is the C reference for
 * `cmd/echo -engine event`.
 *
 * The read callback reads until EAGAIN and writes each chunk back at once.
 * When the socket would block, the unsent rest (at most one chunk) waits in
 * a per-connection buffer, reading stops, and an EV_WRITE event drains it;
 * then reading resumes. Memory per connection stays bounded. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "echocli.h"

#define CHUNK 16384

struct conn {
	evutil_socket_t fd;
	struct event *rev; /* EV_READ|EV_PERSIST, added while nothing is pending */
	struct event *wev; /* EV_WRITE|EV_PERSIST, made the first time a write blocks */
	char *pend;	   /* CHUNK bytes, allocated with wev */
	size_t poff, plen;
};

static void conn_free(struct conn *c)
{
	event_free(c->rev);
	if (c->wev != NULL)
		event_free(c->wev);
	evutil_closesocket(c->fd);
	free(c->pend);
	free(c);
}

static void write_cb(evutil_socket_t fd, short what, void *arg);

/* Writes p[:n]. Returns 0 when all of it went out, 1 when the rest was queued
 * because the socket would block, -1 on error. */
static int write_or_queue(struct conn *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(c->fd, p, n);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (c->wev == NULL) {
				c->pend = malloc(CHUNK);
				c->wev = event_new(event_get_base(c->rev), c->fd, EV_WRITE | EV_PERSIST,
						   write_cb, c);
				if (c->pend == NULL || c->wev == NULL)
					return -1;
			}
			memcpy(c->pend, p, n);
			c->poff = 0;
			c->plen = n;
			event_del(c->rev);
			event_add(c->wev, NULL);
			return 1;
		}
		return -1;
	}
	return 0;
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	char buf[CHUNK];

	(void)what;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n > 0) {
			int rc = write_or_queue(c, buf, (size_t)n);
			if (rc < 0)
				break;
			if (rc > 0)
				return;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		break; /* EOF or error */
	}
	conn_free(c);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)what;
	while (c->poff < c->plen) {
		ssize_t w = write(fd, c->pend + c->poff, c->plen - c->poff);
		if (w > 0) {
			c->poff += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		conn_free(c);
		return;
	}
	c->poff = c->plen = 0;
	event_del(c->wev);
	event_add(c->rev, NULL);
}

static void accept_conn_cb(struct evconnlistener *listener, evutil_socket_t fd,
			   struct sockaddr *address, int socklen, void *ctx)
{
	struct conn *c;

	(void)address;
	(void)socklen;
	(void)ctx;
	echo_set_nodelay(fd);
	c = calloc(1, sizeof *c);
	if (c == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->fd = fd;
	c->rev = event_new(evconnlistener_get_base(listener), fd, EV_READ | EV_PERSIST, read_cb, c);
	if (c->rev == NULL || event_add(c->rev, NULL) != 0) {
		if (c->rev != NULL)
			event_free(c->rev);
		evutil_closesocket(fd);
		free(c);
	}
}

int main(int argc, char **argv)
{
	struct echo_server s;

	echo_server_start(&s, "crawecho", argc, argv, accept_conn_cb, NULL);
	return echo_server_run(&s);
}
