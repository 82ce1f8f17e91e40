#include "ctest.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/socket.h>
#include <event2/bufferevent.h>

/* A base as C code creates it once threading is set up (the Go side's
 * UsePthreads, or evthread_use_pthreads before any base): with locks. */
struct event_base *ctest_base_new(void)
{
	return event_base_new();
}

/* A base without locks, as one made before evthread_use_pthreads is. */
struct event_base *ctest_base_new_nolock(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *base;
	if (!cfg)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}

void ctest_base_free(struct event_base *base)
{
	event_base_free(base);
}

int ctest_base_num_events(struct event_base *base)
{
	return event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);
}

uint64_t ctest_thread_self(void)
{
	return (uint64_t)pthread_self();
}

/* A C event of the tests, a timer or a reader: count is how often a timer
 * fired or how many bytes a reader read, thread where its last callback
 * ran; limit is a timer's times, a reader's want. A reader owns a
 * socketpair; a timer's fds are -1. */
struct ctest_event {
	struct event *ev;
	struct timeval tv;
	int fds[2];
	int limit;
	int count;
	uint64_t thread;
};

static struct ctest_event *event_alloc(int limit)
{
	struct ctest_event *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	e->fds[0] = e->fds[1] = -1;
	e->limit = limit;
	return e;
}

int ctest_event_count(struct ctest_event *e)
{
	return __atomic_load_n(&e->count, __ATOMIC_SEQ_CST);
}

uint64_t ctest_event_thread(struct ctest_event *e)
{
	return __atomic_load_n(&e->thread, __ATOMIC_SEQ_CST);
}

/* Also undoes a constructor that failed half-way. */
void ctest_event_free(struct ctest_event *e)
{
	if (e->ev)
		event_free(e->ev);
	if (e->fds[0] >= 0) {
		close(e->fds[0]);
		close(e->fds[1]);
	}
	free(e);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ctest_event *t = arg;
	(void)fd; (void)what;
	__atomic_store_n(&t->thread, ctest_thread_self(), __ATOMIC_SEQ_CST);
	if (__atomic_add_fetch(&t->count, 1, __ATOMIC_SEQ_CST) < t->limit)
		event_add(t->ev, &t->tv);
}

/* A timer that fires times times, usec apart, then leaves the base. */
struct ctest_event *ctest_timer_new(struct event_base *base, long usec, int times)
{
	struct ctest_event *t = event_alloc(times);
	if (!t)
		return NULL;
	t->tv.tv_sec = usec / 1000000;
	t->tv.tv_usec = usec % 1000000;
	t->ev = event_new(base, -1, 0, timer_cb, t);
	if (!t->ev || event_add(t->ev, &t->tv) != 0) {
		ctest_event_free(t);
		return NULL;
	}
	return t;
}

/* Ran on a base without any Go object: proves the base still works. */
int ctest_run_timer(struct event_base *base)
{
	struct ctest_event *t = ctest_timer_new(base, 1000, 3);
	int fired;
	if (!t)
		return -1;
	if (event_base_dispatch(base) < 0) {
		ctest_event_free(t);
		return -1;
	}
	fired = ctest_event_count(t);
	ctest_event_free(t);
	return fired;
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ctest_event *r = arg;
	char buf[256];
	ssize_t n;
	(void)what;
	__atomic_store_n(&r->thread, ctest_thread_self(), __ATOMIC_SEQ_CST);
	n = read(fd, buf, sizeof buf);
	if (n > 0 && __atomic_add_fetch(&r->count, (int)n, __ATOMIC_SEQ_CST) >= r->limit)
		event_del(r->ev);
	if (n == 0)
		event_del(r->ev);
}

/* A persistent read event on one end of a socketpair; it leaves the base
 * once want bytes have arrived on the other end (ctest_reader_peer). */
struct ctest_event *ctest_reader_new(struct event_base *base, int want)
{
	struct ctest_event *r = event_alloc(want);
	if (!r)
		return NULL;
	if (evutil_socketpair(AF_UNIX, SOCK_STREAM, 0, r->fds) != 0) {
		r->fds[0] = r->fds[1] = -1;
		ctest_event_free(r);
		return NULL;
	}
	evutil_make_socket_nonblocking(r->fds[0]);
	r->ev = event_new(base, r->fds[0], EV_READ | EV_PERSIST, read_cb, r);
	if (!r->ev || event_add(r->ev, NULL) != 0) {
		ctest_event_free(r);
		return NULL;
	}
	return r;
}

int ctest_reader_peer(struct ctest_event *r)
{
	return r->fds[1];
}

static void setup_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* A connection's event as a C server makes it: a persistent read event on
 * fd, added with a timeout, then freed. */
static int event_setup(struct event_base *base, int fd)
{
	struct timeval minute = {60, 0};
	struct event *ev = event_new(base, fd, EV_READ | EV_PERSIST, setup_cb, NULL);
	if (ev == NULL)
		return -1;
	if (event_add(ev, &minute) != 0) {
		event_free(ev);
		return -1;
	}
	event_free(ev);
	return 0;
}

/* What a C server does for each connection besides accept(2), n times:
 * event_setup on fd. The C baseline of the binding's
 * BenchmarkConnSetupOnLoop. */
int ctest_conn_setup(struct event_base *base, int fd, int n)
{
	for (int i = 0; i < n; i++)
		if (event_setup(base, fd) != 0)
			return -1;
	return 0;
}

/* libevent's log, counted: a test asserts that libevent warned of nothing
 * (an epoll_ctl on a closed descriptor is logged, not returned). */
static int log_warnings;
static char log_last[256];

static void log_cb(int severity, const char *msg)
{
	if (severity < EVENT_LOG_WARN)
		return;
	__atomic_add_fetch(&log_warnings, 1, __ATOMIC_SEQ_CST);
	snprintf(log_last, sizeof(log_last), "%s", msg);
}

void ctest_log_capture(int on)
{
	event_set_log_callback(on ? log_cb : NULL);
}

int ctest_log_warnings(const char **last)
{
	*last = log_last;
	return __atomic_load_n(&log_warnings, __ATOMIC_SEQ_CST);
}

static void cycle_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev; (void)arg;
}

/* What a C server does per connection besides accept(2) itself, n times, on
 * a dup of fd standing in for the accepted socket: the event design's
 * event_new, event_add (with a timeout) and event_free, or the libevent
 * book's bufferevent_socket_new, setcb and enable, then bufferevent_free;
 * and close. */
int ctest_conn_cycle(struct event_base *base, int fd, int n, int bev)
{
	for (int i = 0; i < n; i++) {
		int s = dup(fd);
		if (s < 0)
			return -1;
		if (bev) {
			struct bufferevent *b = bufferevent_socket_new(base, s, 0);
			if (b == NULL)
				return -1;
			bufferevent_setcb(b, cycle_read_cb, NULL, NULL, NULL);
			if (bufferevent_enable(b, EV_READ) != 0)
				return -1;
			bufferevent_free(b);
		} else if (event_setup(base, s) != 0) {
			return -1;
		}
		close(s);
	}
	return 0;
}

/* Whether an evconnlistener has a lock of its own: libevent 2.1's struct
 * evconnlistener (listener.c, not in its headers) starts with its ops
 * table and then its lock, NULL when the listener was made without
 * LEV_OPT_THREADSAFE or before libevent's threading was set up. */
int ctest_listener_has_lock(void *lev)
{
	return ((void **)lev)[1] != NULL;
}
