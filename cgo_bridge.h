/* C side of the binding: it only adapts. Handles cross as uintptr_t and are
 * cast to void * here, never in Go; errno is captured before any Go code
 * runs; every decision is taken in Go. */
#ifndef EVLISTENER_CGO_BRIDGE_H
#define EVLISTENER_CGO_BRIDGE_H

#include <stdint.h>
#include <errno.h>
#include <sys/socket.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <event2/util.h>

#if !defined(LIBEVENT_VERSION_NUMBER) || LIBEVENT_VERSION_NUMBER < 0x02010000
#error "evlistener needs libevent 2.1 or newer (pkg-config libevent_core)"
#endif

/* Base: an internal event that runs queued Go work on the loop thread. */
struct event *evl_wake_new(struct event_base *base, uintptr_t h);
void evl_wake(struct event *ev);

/* A timer that calls goTimer(h). */
struct event *evl_timer_new(struct event_base *base, uintptr_t h);
int evl_timer_add(struct event *ev, int64_t usec);

/* Listener: with_cb selects the accept trampoline or NULL (paused). */
struct evconnlistener *evl_listener_new(struct event_base *base, uintptr_t h,
	int with_cb, unsigned flags, int backlog, int fd);
struct evconnlistener *evl_listener_new_bind(struct event_base *base,
	uintptr_t h, int with_cb, unsigned flags, int backlog,
	const struct sockaddr *sa, int socklen);
void evl_listener_set_cb(struct evconnlistener *lev, uintptr_t h, int with_cb);

/* Benchmarks only: n calls of the accept trampoline. */
void evl_bench_accept(uintptr_t h, int fd, int n);

#endif
