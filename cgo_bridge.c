#include "cgo_bridge.h"
#include "_cgo_export.h"
#include <string.h>
#include <netinet/in.h>
#include <arpa/inet.h>

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	goBaseWake((uintptr_t)arg);
}

struct event *evl_wake_new(struct event_base *base, uintptr_t h)
{
	return event_new(base, -1, 0, wake_cb, (void *)h);
}

void evl_wake(struct event *ev)
{
	event_active(ev, EV_READ, 0);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	goTimer((uintptr_t)arg);
}

struct event *evl_timer_new(struct event_base *base, uintptr_t h)
{
	return event_new(base, -1, 0, timer_cb, (void *)h);
}

int evl_timer_add(struct event *ev, int64_t usec)
{
	struct timeval tv;
	tv.tv_sec = usec / 1000000;
	tv.tv_usec = usec % 1000000;
	return event_add(ev, &tv);
}

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
	struct sockaddr *sa, int socklen, void *arg)
{
	(void)lev;
	goListenerAccept((uintptr_t)arg, fd, sa, socklen);
}

static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR(); /* before anything can change errno */
	(void)lev;
	goListenerError((uintptr_t)arg, err);
}

struct evconnlistener *evl_listener_new(struct event_base *base, uintptr_t h,
	int with_cb, unsigned flags, int backlog, int fd)
{
	struct evconnlistener *lev = evconnlistener_new(base,
		with_cb ? accept_cb : NULL, (void *)h, flags, backlog, fd);
	if (lev)
		evconnlistener_set_error_cb(lev, accept_error_cb);
	return lev;
}

struct evconnlistener *evl_listener_new_bind(struct event_base *base,
	uintptr_t h, int with_cb, unsigned flags, int backlog,
	const struct sockaddr *sa, int socklen)
{
	struct evconnlistener *lev = evconnlistener_new_bind(base,
		with_cb ? accept_cb : NULL, (void *)h, flags, backlog, sa, socklen);
	if (lev)
		evconnlistener_set_error_cb(lev, accept_error_cb);
	return lev;
}

void evl_listener_set_cb(struct evconnlistener *lev, uintptr_t h, int with_cb)
{
	evconnlistener_set_cb(lev, with_cb ? accept_cb : NULL, (void *)h);
}

/* For the benchmark of one accept callback: calls the accept trampoline n
 * times, as listener_read_cb would, with a loopback peer address. */
void evl_bench_accept(uintptr_t h, int fd, int n)
{
	struct sockaddr_in sin;
	int i;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(4242);
	sin.sin_addr.s_addr = htonl(0x7f000001);
	for (i = 0; i < n; i++)
		accept_cb(NULL, fd, (struct sockaddr *)&sin, (int)sizeof(sin), (void *)h);
}
