/* C side of the binding. Most of it adapts: handles cross as uintptr_t and
 * are cast to void * here, never in Go; errno is captured before any Go code
 * runs; the callbacks libevent calls are static shims that call the exported
 * Go functions of trampolines.go.
 *
 * Three pieces are logic, kept in C on purpose, each because it saves a cgo
 * crossing per message (TestCgoCallsPerMessage pins the counts):
 * - the buffer event callback filter (struct evl_bev, cbs): a callback Go has
 *   not set costs no C->Go call;
 * - the echo step (evl_bev_echo): the input written straight through when no
 *   output waits, one Go->C call where Go would make three or four;
 * - the choice of a common timeout (timeout_tv): one call instead of two.
 * Later pieces say why where they stand: the acceptors (a connection's
 * object made and armed in C), Write's step (evl_bev_write), and the loop's
 * turns (evl_base_loop: a connection event noted in a batch for Go to run
 * after the turn, where it would cost a C->Go call each).
 * Every other decision (the loop hand-off, back-off, pauses, panics) is
 * Go's, where the tests and the race detector see it. */
#ifndef EVLISTENER_CGO_BRIDGE_H
#define EVLISTENER_CGO_BRIDGE_H

#include <stdint.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h> /* ev_write, for evl_bev_free */
#include <event2/event.h>
#include <event2/event_struct.h> /* EVLIST_INTERNAL, as libevent marks its own */
#include <event2/listener.h>
#include <event2/thread.h>
#include <event2/util.h>

#if !defined(LIBEVENT_VERSION_NUMBER) || LIBEVENT_VERSION_NUMBER < 0x02010000
#error "evlistener needs libevent 2.1 or newer (pkg-config libevent_core)"
#endif

/* Base: event_base_new_with_config with these EVENT_BASE_FLAG_* flags. */
struct event_base *evl_base_new(int flags);

/* Base: the internal read event on the wake-up descriptor fd, which runs
 * queued Go work on the loop thread (goBaseWake). */
struct event *evl_wake_event_new(struct event_base *base, int fd, uintptr_t h);

/* A timer that calls goTimer(h). */
struct event *evl_timer_new(struct event_base *base, uintptr_t h);
int evl_timer_add(struct event *ev, int64_t usec);

/* Listener: with_cb selects the accept trampoline or NULL (paused). */
struct evconnlistener *evl_listener_new(struct event_base *base, uintptr_t h,
	int with_cb, unsigned flags, int backlog, int fd);
void evl_listener_set_cb(struct evconnlistener *lev, uintptr_t h, int with_cb);

/* Event: an event whose callback calls goEvent(h). */
struct event *evl_event_new(struct event_base *base, int fd, short what,
	uintptr_t h);
/* event_add with a timeout of usec (< 0: none), as a common timeout of the
 * base while libevent has room for one: re-arming a persistent event's
 * timeout on every callback is then O(1) instead of a heap update. */
int evl_event_add(struct event_base *base, struct event *ev, int64_t usec);

/* Buffer event: the context libevent passes to the callbacks. Go owns the
 * fields and writes them on the loop thread, where the callbacks read them,
 * so setting a callback needs no cgo call. */
#define EVL_BEV_READ  1
#define EVL_BEV_WRITE 2
#define EVL_BEV_EVENT 4
#define EVL_BEV_DISCARD 8 /* drop the input in C: CloseAfterFlush's linger */
struct evl_bev {
	struct bufferevent *bev;
	struct evbuffer *in, *out; /* its input and output buffers */
	uintptr_t h;
	int cbs;     /* the EVL_BEV_* callbacks Go has set */
	uint64_t discarded; /* bytes dropped by EVL_BEV_DISCARD */
};
struct evl_bev *evl_bev_new(struct event_base *base, int fd, int options,
	uintptr_t h);
void evl_bev_free(struct evl_bev *c);
int evl_bev_linger(struct evl_bev *c);
size_t evl_bev_echo(struct evl_bev *c);
int evl_bev_set_timeouts(struct event_base *base, struct bufferevent *bev,
	int64_t read_usec, int64_t write_usec);

/* Buffer: removes n bytes into p and drains eol_len more: one line and its end. */
int evl_buffer_take(struct evbuffer *buf, void *p, size_t n, size_t eol_len);
/* evbuffer_add, returning the length afterwards (or -1). */
ssize_t evl_buffer_add(struct evbuffer *buf, const void *p, size_t n);


/* Connections accepted with their event or buffer event made in C
 * (acceptconn.go): libevent's accept callback makes and arms the
 * connection's object, as a C server does in the same frame, and then makes
 * one call into Go. A base's table holds one slot per descriptor number and
 * kind, in chunks that never move, made the first time a connection gets
 * that number and reused by every later one, so that a connection costs no
 * allocation of ours: an event is assigned again in its slot's storage, a
 * buffer event's context is the slot. Go writes the handles into the slot
 * when it makes the slot's object, before any callback can read them. */
#define EVL_CONN_CHUNK 64
struct evl_conn_ev {
	struct event ev;        /* assigned for each connection */
	uintptr_t h;            /* the Go Event's handle; 0 until Go made it */
	uint32_t gen;           /* connections the slot has had */
	unsigned char open;     /* a connection is on the slot */
	unsigned char assigned; /* ev was assigned once: unassign before free */
};
struct evl_conn_bev {
	struct evl_bev bev; /* bev.bev only while a connection is open */
};
struct evl_conns {
	struct evl_conn_ev **ev;   /* chunks, by descriptor / EVL_CONN_CHUNK */
	struct evl_conn_bev **bev;
	int nev, nbev;             /* chunks */
};
#define EVL_ACCEPT_EVENT 1
#define EVL_ACCEPT_BEV   2
/* A listener's way of accepting: written by Go, read by the accept shim. */
struct evl_acceptor {
	uintptr_t h; /* the listener's handle */
	struct evl_conns *conns;
	int kind;    /* EVL_ACCEPT_* */
	short what;  /* event: its conditions */
	int bev_opts; /* buffer event: BEV_OPT_* but CLOSE_ON_FREE */
	short enable; /* buffer event: bufferevent_enable's */
	size_t read_low, read_high, write_low;
	int nodelay; /* TCP_NODELAY on each connection */
	/* The timeouts, event's add's and buffer event's read and write, as
	 * the base's common timeouts, or NULL for none: set once by
	 * evl_acceptor_timeouts, so that no accept looks them up again. */
	const struct timeval *tv, *read_tv, *write_tv;
	struct timeval tv_, read_tv_, write_tv_;
};
/* Sets a's timeouts on base from microseconds (< 0: none). */
void evl_acceptor_timeouts(struct evl_acceptor *a, struct event_base *base,
	int64_t usec, int64_t read_usec, int64_t write_usec);
struct evl_conns *evl_conns_new(void);

/* The loop turns of Dispatch (evl_base_loop). While one runs, the callbacks
 * of connection events made by an acceptor are not called one by one from
 * C: each is noted in the turn's batch, and Go runs them once the turn is
 * over, without a call from C into Go each. A fired event is its slot and
 * the slot's generation then: a slot closed or reused since is skipped. */
#define EVL_CLOSING 64
struct evl_fired {
	struct evl_conn_ev *slot;
	uint32_t gen;
	short what;
};
struct evl_batch {
	struct event_base *base;
	struct evl_fired *e; /* cap of them, n noted */
	int n, cap;
	int stop;            /* the loop was broken or exited */
	int keep;            /* EVLOOP_NO_EXIT_ON_EMPTY: only a break or an
	                      * exit ends the loop */
	/* Connections that the batch's callbacks closed: their events leave
	 * the loop and their sockets close as the next turn starts, in the
	 * same call into C (evl_batch_close), before libevent waits again.
	 * Go notes at most EVL_CLOSING of them a turn and closes the rest
	 * at once. */
	struct evl_closing {
		struct evl_conn_ev *slot;
		int fd;
	} closing[EVL_CLOSING];
	int nclosing;
};
/* A batch with room for a turn of 64 events; it grows as turns need. */
struct evl_batch *evl_batch_new(void);
void evl_batch_free(struct evl_batch *b);
/* Closes the connections noted in b->closing: each event deleted and its
 * socket closed, as evl_conn_close_event does for a slot still open (these
 * are marked closed already); evl_base_loop does so as it starts. */
void evl_batch_close(struct evl_batch *b);
/* Runs turns of base's loop (event_base_loop with EVLOOP_ONCE, and
 * EVLOOP_NONBLOCK if nonblock) until a turn noted fired events in b,
 * or, with once, for one turn. Returns as event_base_loop does: 1, nothing
 * pending; -1, an error; 0 otherwise, with b->stop set when the loop was
 * broken or exited. A turn is never cut short for the batch: libevent's
 * next turn would report again every socket still readable, so the batch
 * grows to hold a whole turn (or, out of memory, the event's callback is
 * called from C as it would be without a batch). */
int evl_base_loop(struct event_base *base, struct evl_batch *b, int nonblock, int once);

/* The calls Go makes for each turn of the loop and each connection take
 * their C pointers as integers: cgo checks every pointer argument of a call
 * for Go pointers (cgocheck), tens of nanoseconds a call, and these never
 * are. */
static inline int evl_base_loop_u(uintptr_t base, uintptr_t b, int nonblock, int once)
{
	return evl_base_loop((struct event_base *)base, (struct evl_batch *)b, nonblock, once);
}
/* Closes what is open on the table, then frees it. */
void evl_conns_free(struct evl_conns *t);
/* The accept callback of a listener with an acceptor (arg); extern so that
 * the benchmarks can call it as libevent does. */
void evl_accept_conn_cb(struct evconnlistener *lev, evutil_socket_t fd,
	struct sockaddr *sa, int socklen, void *arg);
/* Makes the listener accept through a. */
void evl_listener_set_acceptor(struct evconnlistener *lev, struct evl_acceptor *a);
/* Close a connection in one call: its event out of the loop, or its buffer
 * event freed, then its socket fd closed. */
void evl_conn_close_event(struct evl_conn_ev *c, int fd);
static inline void evl_conn_close_event_u(uintptr_t c, int fd)
{
	evl_conn_close_event((struct evl_conn_ev *)c, fd);
}
void evl_conn_close_bev(struct evl_conn_bev *c, int fd);

/* A fourth piece of logic kept in C, for the reason this file's opening
 * comment gives for the other three: Write's step (evl_bev_write), the bytes written at once where libevent's
 * write event would write them a turn later, the rest queued; one Go->C
 * call where Go would make three or four. The buffer reads below each do
 * in one call what Go would do in two (search or measure, then copy). */
ssize_t evl_bev_write(struct evl_bev *c, const void *p, size_t n,
	int want_write_cb);
/* The message path's calls with the buffer event's context as an integer,
 * as evl_base_loop_u says why: cgo checks a pointer to struct evl_bev,
 * which holds pointers, on every call. */
static inline ssize_t evl_bev_write_u(uintptr_t c, const void *p, size_t n,
	int want_write_cb)
{
	return evl_bev_write((struct evl_bev *)c, p, n, want_write_cb);
}
static inline size_t evl_bev_echo_u(uintptr_t c)
{
	return evl_bev_echo((struct evl_bev *)c);
}

/* Buffer reads into Go's memory at one crossing (see cgo_bridge.c). */
ssize_t evl_buffer_remove_into(struct evbuffer *buf, void *p, size_t room,
	size_t want, size_t *len);
ssize_t evl_buffer_line_into(struct evbuffer *buf, int style, void *p,
	size_t room, size_t *eol_len, int *taken);
ssize_t evl_buffer_index_from(struct evbuffer *buf, const void *sep, size_t n,
	size_t from);
ssize_t evl_buffer_copy_at(struct evbuffer *buf, void *p, size_t n, size_t off);

#endif
