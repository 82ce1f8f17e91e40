#include "cgo_bridge.h"
#include "_cgo_export.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* The wake-up event (wake.go): Go drains the descriptor in goBaseWake. The
 * event is internal, as libevent's own notification event is: it does not
 * keep event_base_dispatch from returning when nothing else is pending. */
static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what;
	goBaseWake((uintptr_t)arg);
}

struct event *evl_wake_event_new(struct event_base *base, int fd, uintptr_t h)
{
	struct event *ev = event_new(base, fd, EV_READ | EV_PERSIST, wake_cb, (void *)h);
	if (!ev)
		return NULL;
	ev->ev_evcallback.evcb_flags |= EVLIST_INTERNAL;
	if (event_add(ev, NULL) != 0) {
		event_free(ev);
		return NULL;
	}
	return ev;
}

struct event_base *evl_base_new(int flags)
{
	struct event_base *base;
	struct event_config *cfg = event_config_new();
	if (!cfg)
		return NULL;
	if (event_config_set_flag(cfg, flags) != 0) {
		event_config_free(cfg);
		return NULL;
	}
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
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

void evl_listener_set_cb(struct evconnlistener *lev, uintptr_t h, int with_cb)
{
	evconnlistener_set_cb(lev, with_cb ? accept_cb : NULL, (void *)h);
	evconnlistener_set_error_cb(lev, accept_error_cb); /* after an acceptor's */
}

static void event_cb(evutil_socket_t fd, short what, void *arg)
{
	goEvent((uintptr_t)arg, fd, what);
}

struct event *evl_event_new(struct event_base *base, int fd, short what,
	uintptr_t h)
{
	return event_new(base, fd, what, event_cb, (void *)h);
}

/* usec < 0 means no timeout. A common timeout keeps the base's timeouts of
 * one duration in a queue instead of the heap (libevent allows 256 of them
 * per base; past that, a plain timeout). */
static const struct timeval *timeout_tv(struct event_base *base, int64_t usec,
	struct timeval *tv)
{
	const struct timeval *common;
	if (usec < 0)
		return NULL;
	tv->tv_sec = usec / 1000000;
	tv->tv_usec = usec % 1000000;
	common = event_base_init_common_timeout(base, tv);
	return common ? common : tv;
}

int evl_event_add(struct event_base *base, struct event *ev, int64_t usec)
{
	struct timeval tv;
	return event_add(ev, timeout_tv(base, usec, &tv));
}

static void bev_read_cb(struct bufferevent *bev, void *arg)
{
	struct evl_bev *c = arg;
	(void)bev;
	if (c->cbs & EVL_BEV_DISCARD) {
		/* CloseAfterFlush reads what the peer still sends and drops it:
		 * unread input would make close send a reset. */
		size_t n = evbuffer_get_length(c->in);
		c->discarded += n;
		evbuffer_drain(c->in, n);
		return;
	}
	if (c->cbs & EVL_BEV_READ)
		goBufferEventRead(c->h);
}

static void bev_write_cb(struct bufferevent *bev, void *arg)
{
	struct evl_bev *c = arg;
	(void)bev;
	if (c->cbs & EVL_BEV_WRITE)
		goBufferEventWrite(c->h);
}

static void bev_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct evl_bev *c = arg;
	int err = EVUTIL_SOCKET_ERROR(); /* before anything can change errno */
	(void)bev;
	if (c->cbs & EVL_BEV_EVENT)
		goBufferEventEvent(c->h, what, err);
}

struct evl_bev *evl_bev_new(struct event_base *base, int fd, int options,
	uintptr_t h)
{
	struct evl_bev *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->h = h;
	c->bev = bufferevent_socket_new(base, fd, options);
	if (!c->bev) {
		free(c);
		return NULL;
	}
	c->in = bufferevent_get_input(c->bev);
	c->out = bufferevent_get_output(c->bev);
	bufferevent_setcb(c->bev, bev_read_cb, bev_write_cb, bev_event_cb, c);
	return c;
}

/* Frees c and its buffer event and leaves nothing of libevent's watching
 * the socket, so that the caller may close it at once. bufferevent_free
 * alone is not enough inside one of the buffer event's callbacks, where
 * libevent holds a reference until its handler returns: its events stay
 * in epoll until then, and after the connected callback the write handler
 * goes on to write the output (bufferevent_writecb). Disabling both
 * directions first deletes the events (epoll_ctl now, while the socket is
 * open) and makes the handler stop; the write event of a pending connect,
 * which bufferevent_disable leaves, is deleted by hand. libevent cleared
 * the callbacks, so nothing reads c after this. */
void evl_bev_free(struct evl_bev *c)
{
	struct bufferevent *bev = c->bev;
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	event_del(&bev->ev_write);
	bufferevent_free(bev);
	free(c);
}

/* CloseAfterFlush's lingering close, once the output is in the kernel: the
 * peer gets EOF after the last byte, and what it still sends is read and
 * dropped (EVL_BEV_DISCARD) until its EOF, so that the close that follows
 * sends no reset, which would discard what the peer has not yet read. */
int evl_bev_linger(struct evl_bev *c)
{
	int fd = bufferevent_getfd(c->bev);
	bufferevent_disable(c->bev, EV_WRITE);
	if (shutdown(fd, SHUT_WR) != 0)
		return -1;
	return bufferevent_enable(c->bev, EV_READ);
}

/* The echo step: the input goes back to the peer. When nothing is already
 * waiting in the output buffer and writing is enabled, the input is written
 * to the socket at once (evbuffer_write), as libevent's write callback would
 * on the next turn of the loop, but without adding and removing the write
 * event; what the socket does not take, or anything when output is waiting,
 * is appended to the output buffer (no copy), in order. A write error leaves
 * the data queued: libevent's own write then reports it to the event
 * callback. Returns the bytes waiting in the output buffer. */
size_t evl_bev_echo(struct evl_bev *c)
{
	struct evbuffer *in = c->in, *out = c->out;
	if (evbuffer_get_length(out) == 0 &&
	    (bufferevent_get_enabled(c->bev) & EV_WRITE))
		(void)evbuffer_write(in, bufferevent_getfd(c->bev));
	if (evbuffer_get_length(in) > 0)
		evbuffer_add_buffer(out, in);
	return evbuffer_get_length(out);
}

int evl_bev_set_timeouts(struct event_base *base, struct bufferevent *bev,
	int64_t read_usec, int64_t write_usec)
{
	struct timeval rtv, wtv;
	return bufferevent_set_timeouts(bev, timeout_tv(base, read_usec, &rtv),
		timeout_tv(base, write_usec, &wtv));
}

int evl_buffer_take(struct evbuffer *buf, void *p, size_t n, size_t eol_len)
{
	if (n > 0 && evbuffer_remove(buf, p, n) != (int)n)
		return -1;
	return evbuffer_drain(buf, eol_len);
}

ssize_t evl_buffer_add(struct evbuffer *buf, const void *p, size_t n)
{
	if (evbuffer_add(buf, p, n) != 0)
		return -1;
	return (ssize_t)evbuffer_get_length(buf);
}

/* Connections accepted with their object made in C (acceptconn.go). */

struct evl_conns *evl_conns_new(void)
{
	return calloc(1, sizeof(struct evl_conns));
}

/* The slot of fd in a table of chunks (*chunks, *n of them, size bytes a
 * slot), made on first use; NULL when out of memory. */
static void *conn_slot(void ***chunks, int *n, size_t size, int fd)
{
	int i = fd / EVL_CONN_CHUNK;
	if (i >= *n) {
		int m = *n ? *n : 1;
		void **c;
		while (m <= i)
			m *= 2;
		c = realloc(*chunks, (size_t)m * sizeof(*c));
		if (!c)
			return NULL;
		memset(c + *n, 0, (size_t)(m - *n) * sizeof(*c));
		*chunks = c;
		*n = m;
	}
	if (!(*chunks)[i] && !((*chunks)[i] = calloc(EVL_CONN_CHUNK, size)))
		return NULL;
	return (char *)(*chunks)[i] + (size_t)(fd % EVL_CONN_CHUNK) * size;
}

static struct evl_conn_ev *ev_slot(struct evl_conns *t, int fd)
{
	return conn_slot((void ***)&t->ev, &t->nev, sizeof(struct evl_conn_ev), fd);
}

static struct evl_conn_bev *bev_slot(struct evl_conns *t, int fd)
{
	return conn_slot((void ***)&t->bev, &t->nbev, sizeof(struct evl_conn_bev), fd);
}

/* The batch of the loop turn that runs on this thread, if evl_base_loop
 * runs it. */
static __thread struct evl_batch *evl_batch_now;

static int batch_grow(struct evl_batch *b)
{
	struct evl_fired *e = realloc(b->e, (size_t)b->cap * 2 * sizeof(*e));
	if (!e)
		return -1;
	b->e = e;
	b->cap *= 2;
	return 0;
}

static void conn_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct evl_conn_ev *e = arg;
	struct evl_batch *b = evl_batch_now;
	/* ev_base, not event_get_base: no call per event. Another base's
	 * event (a loop C runs inside a callback) is not ours to note. */
	if (b && e->ev.ev_base == b->base &&
	    (b->n < b->cap || batch_grow(b) == 0)) {
		struct evl_fired *f = &b->e[b->n++];
		f->slot = e;
		f->gen = e->gen;
		f->what = what;
		return;
	}
	goEvent(e->h, fd, what);
}

struct evl_batch *evl_batch_new(void)
{
	struct evl_batch *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->cap = 64;
	if (!(b->e = calloc((size_t)b->cap, sizeof(*b->e)))) {
		free(b);
		return NULL;
	}
	return b;
}

void evl_batch_free(struct evl_batch *b)
{
	free(b->e);
	free(b);
}

void evl_batch_close(struct evl_batch *b)
{
	int i;
	for (i = 0; i < b->nclosing; i++) {
		/* Go took the connection off its slot (open = 0) as it closed
		 * it; the event is still in the loop, and the socket open, so
		 * that no accept can have reused the slot since. */
		event_del(&b->closing[i].slot->ev);
		evutil_closesocket(b->closing[i].fd);
	}
	b->nclosing = 0;
}

int evl_base_loop(struct event_base *base, struct evl_batch *b, int nonblock, int once)
{
	struct evl_batch *outer = evl_batch_now;
	int rc, flags = EVLOOP_ONCE | (nonblock ? EVLOOP_NONBLOCK : 0) |
		(b->keep ? EVLOOP_NO_EXIT_ON_EMPTY : 0);
	if (b->nclosing > 0)
		evl_batch_close(b);
	b->base = base;
	evl_batch_now = b;
	b->stop = 0;
	for (;;) {
		rc = event_base_loop(base, flags);
		if (rc != 0)
			break;
		/* event_base_loop clears these as it starts: look now. */
		if (event_base_got_exit(base) || event_base_got_break(base)) {
			b->stop = 1;
			break;
		}
		if (b->n > 0 || once)
			break;
	}
	evl_batch_now = outer;
	return rc;
}

void evl_conn_close_event(struct evl_conn_ev *c, int fd)
{
	if (c->open)
		event_del(&c->ev);
	c->open = 0;
	if (fd >= 0)
		evutil_closesocket(fd);
}

void evl_conn_close_bev(struct evl_conn_bev *c, int fd)
{
	struct bufferevent *bev = c->bev.bev;
	if (bev) {
		/* As evl_bev_free: nothing of libevent's watches the socket
		 * once this returns, also inside one of the buffer event's
		 * callbacks, so that the socket may close at once and its
		 * number serve the next connection. */
		bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
		bufferevent_disable(bev, EV_READ | EV_WRITE);
		event_del(&bev->ev_write);
		bufferevent_free(bev);
		c->bev.bev = NULL;
		c->bev.in = c->bev.out = NULL;
		c->bev.cbs = 0;
	}
	if (fd >= 0)
		evutil_closesocket(fd);
}

/* Takes out whatever the last connection on fd left open: its socket was
 * closed without the object's Close, and accept gave the number again. */
static void conn_forget(struct evl_conns *t, int fd)
{
	int i = fd / EVL_CONN_CHUNK, j = fd % EVL_CONN_CHUNK;
	if (i < t->nev && t->ev[i] && t->ev[i][j].open)
		evl_conn_close_event(&t->ev[i][j], -1);
	if (i < t->nbev && t->bev[i] && t->bev[i][j].bev.bev)
		evl_conn_close_bev(&t->bev[i][j], -1);
}

void evl_acceptor_timeouts(struct evl_acceptor *a, struct event_base *base,
	int64_t usec, int64_t read_usec, int64_t write_usec)
{
	a->tv = timeout_tv(base, usec, &a->tv_);
	a->read_tv = timeout_tv(base, read_usec, &a->read_tv_);
	a->write_tv = timeout_tv(base, write_usec, &a->write_tv_);
}

/* What a C server does in its accept callback: the connection's event
 * assigned and added, or its buffer event made, its callbacks set, its
 * watermarks and timeouts set and enabled. Returns the slot, or NULL with
 * an errno in *err. */
static void *conn_open(struct evl_acceptor *a, struct event_base *base,
	int fd, int *err)
{
	struct bufferevent *bev;
	struct evl_conn_ev *e;
	struct evl_conn_bev *c;
	conn_forget(a->conns, fd);
	if (a->nodelay) {
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (a->kind == EVL_ACCEPT_EVENT) {
		if (!(e = ev_slot(a->conns, fd))) {
			*err = ENOMEM;
			return NULL;
		}
		if (event_assign(&e->ev, base, fd, a->what, conn_event_cb, e) != 0) {
			*err = EINVAL;
			return NULL;
		}
		e->assigned = 1;
		e->gen++;
		if (event_add(&e->ev, a->tv) != 0) {
			*err = errno ? errno : EINVAL;
			/* libevent's debug mode notes the event as added even
			 * when adding failed; a del clears it, or the next
			 * assign of the slot would abort. */
			event_del(&e->ev);
			return NULL;
		}
		e->open = 1;
		return e;
	}
	if (!(c = bev_slot(a->conns, fd)) ||
	    !(bev = bufferevent_socket_new(base, fd, a->bev_opts))) {
		*err = ENOMEM;
		return NULL;
	}
	c->bev.bev = bev;
	c->bev.in = bufferevent_get_input(bev);
	c->bev.out = bufferevent_get_output(bev);
	c->bev.cbs = 0; /* Go sets them as it takes the connection */
	c->bev.discarded = 0;
	bufferevent_setcb(bev, bev_read_cb, bev_write_cb, bev_event_cb, &c->bev);
	if (a->read_low || a->read_high)
		bufferevent_setwatermark(bev, EV_READ, a->read_low, a->read_high);
	if (a->write_low)
		bufferevent_setwatermark(bev, EV_WRITE, a->write_low, 0);
	if (((a->read_tv || a->write_tv) &&
	     bufferevent_set_timeouts(bev, a->read_tv, a->write_tv) != 0) ||
	    (a->enable && bufferevent_enable(bev, a->enable) != 0)) {
		*err = errno ? errno : EINVAL;
		evl_conn_close_bev(c, -1);
		return NULL;
	}
	return c;
}

void evl_accept_conn_cb(struct evconnlistener *lev, evutil_socket_t fd,
	struct sockaddr *sa, int socklen, void *arg)
{
	struct evl_acceptor *a = arg;
	int err = 0;
	void *slot = conn_open(a, evconnlistener_get_base(lev), fd, &err);
	(void)sa; (void)socklen; /* Go asks getpeername if it wants the peer */
	/* The last use of a: Go may free it (Close, SetCallback). */
	goListenerAcceptConn(a->h, fd, slot, err);
}

static void accept_conn_error_cb(struct evconnlistener *lev, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR(); /* before anything can change errno */
	(void)lev;
	goListenerError(((struct evl_acceptor *)arg)->h, err);
}

void evl_listener_set_acceptor(struct evconnlistener *lev, struct evl_acceptor *a)
{
	evconnlistener_set_cb(lev, evl_accept_conn_cb, a);
	evconnlistener_set_error_cb(lev, accept_conn_error_cb);
}

void evl_conns_free(struct evl_conns *t)
{
	int i, j;
	for (i = 0; i < t->nev; i++) {
		struct evl_conn_ev *c = t->ev[i];
		for (j = 0; c && j < EVL_CONN_CHUNK; j++) {
			if (c[j].open)
				evl_conn_close_event(&c[j], i * EVL_CONN_CHUNK + j);
			if (c[j].assigned)
				event_debug_unassign(&c[j].ev);
		}
		free(c);
	}
	for (i = 0; i < t->nbev; i++) {
		struct evl_conn_bev *c = t->bev[i];
		for (j = 0; c && j < EVL_CONN_CHUNK; j++)
			if (c[j].bev.bev)
				evl_conn_close_bev(&c[j], i * EVL_CONN_CHUNK + j);
		free(c);
	}
	free(t->ev);
	free(t->bev);
	free(t);
}

/* A write that goes out at once: when nothing waits in the output buffer and
 * writing is enabled, p goes to the socket with one write(), as libevent's
 * write event would send it on the next turn of the loop but without adding
 * and removing that event; only what the socket does not take is appended to
 * the output buffer (evbuffer_add), so the bytes go out in order either way
 * and libevent's write event, timeout and watermarks see the rest as they
 * would any queued data. A write error (EPIPE, ECONNRESET) queues everything:
 * libevent's own write then reports it to the event callback. With
 * want_write_cb, a write that left nothing queued schedules the write
 * callback as a drain would (bufferevent_trigger, deferred: it runs after
 * the callback that runs now). Returns the bytes waiting in the output
 * buffer, or -1 when evbuffer_add failed. */
ssize_t evl_bev_write(struct evl_bev *c, const void *p, size_t n,
	int want_write_cb)
{
	const char *s = p;
	if (evbuffer_get_length(c->out) == 0 &&
	    (bufferevent_get_enabled(c->bev) & EV_WRITE)) {
		evutil_socket_t fd = bufferevent_getfd(c->bev);
		ssize_t w = fd >= 0 ? write(fd, s, n) : -1;
		if (w > 0) {
			s += w;
			n -= (size_t)w;
		}
		if (n == 0) {
			if (want_write_cb)
				bufferevent_trigger(c->bev, EV_WRITE,
					BEV_TRIG_DEFER_CALLBACKS);
			return 0;
		}
	}
	if (evbuffer_add(c->out, s, n) != 0)
		return -1;
	return (ssize_t)evbuffer_get_length(c->out);
}

/* Buffer reads into a caller's memory, each one crossing from Go. */

/* Removes min(want, room, length) bytes from the front of buf into p and
 * stores the length it had in *len. Returns the bytes removed, or -1. */
ssize_t evl_buffer_remove_into(struct evbuffer *buf, void *p, size_t room,
	size_t want, size_t *len)
{
	size_t n = evbuffer_get_length(buf);
	*len = n;
	if (want < n)
		n = want;
	if (room < n)
		n = room;
	if (n == 0)
		return 0;
	return evbuffer_remove(buf, p, n);
}

/* Finds the first line in the style's terminator. When it fits in room
 * bytes, removes it into p and drains its terminator (*taken = 1); otherwise
 * removes nothing (*taken = 0), so that the caller can make room and call
 * evl_buffer_take. Returns the line's length without terminator, its
 * terminator's length in *eol_len, or -1 while no whole line is buffered. */
ssize_t evl_buffer_line_into(struct evbuffer *buf, int style, void *p,
	size_t room, size_t *eol_len, int *taken)
{
	struct evbuffer_ptr at = evbuffer_search_eol(buf, NULL, eol_len,
		(enum evbuffer_eol_style)style);
	*taken = 0;
	if (at.pos < 0 || (size_t)at.pos > room)
		return at.pos;
	if (evl_buffer_take(buf, p, (size_t)at.pos, *eol_len) != 0)
		return -2;
	*taken = 1;
	return at.pos;
}

/* The offset of the first sep at or after from, or -1 (evbuffer_ptr_set and
 * evbuffer_search); -1 also when from lies past the end. */
ssize_t evl_buffer_index_from(struct evbuffer *buf, const void *sep, size_t n,
	size_t from)
{
	struct evbuffer_ptr start;
	if (evbuffer_ptr_set(buf, &start, from, EVBUFFER_PTR_SET) != 0)
		return -1;
	start = evbuffer_search(buf, sep, n, &start);
	return start.pos;
}

/* Copies up to n bytes from offset off into p without removing them
 * (evbuffer_peek: evbuffer_copyout refuses a buffer whose front is frozen,
 * as a buffer event's output is). Returns the bytes copied, 0 when off is at or past the
 * end. */
ssize_t evl_buffer_copy_at(struct evbuffer *buf, void *p, size_t n, size_t off)
{
	struct evbuffer_iovec v[8];
	struct evbuffer_ptr pos;
	size_t done = 0;
	while (done < n) {
		int i, nv;
		if (evbuffer_ptr_set(buf, &pos, off + done, EVBUFFER_PTR_SET) != 0)
			break;
		nv = evbuffer_peek(buf, (ev_ssize_t)(n - done), &pos, v, 8);
		if (nv <= 0)
			break;
		for (i = 0; i < nv && i < 8 && done < n; i++) {
			size_t k = v[i].iov_len < n - done ? v[i].iov_len : n - done;
			memcpy((char *)p + done, v[i].iov_base, k);
			done += k;
		}
	}
	return (ssize_t)done;
}
