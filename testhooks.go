package evlistener

/*
#include <string.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include "cgo_bridge.h"

extern void goListenerAccept(uintptr_t h, evutil_socket_t fd, struct sockaddr *sa, int socklen);

// The peer address the hooks below pass: 127.0.0.1:4242.
static void evl_bench_peer(struct sockaddr_in *sin)
{
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(4242);
	sin->sin_addr.s_addr = htonl(0x7f000001);
}

// n calls of the accept trampoline, as listener_read_cb makes them, with a
// loopback peer address.
static void evl_bench_accept(uintptr_t h, int fd, int n)
{
	struct sockaddr_in sin;
	int i;
	evl_bench_peer(&sin);
	for (i = 0; i < n; i++)
		goListenerAccept(h, fd, (struct sockaddr *)&sin, (int)sizeof(sin));
}

// n connections as libevent's accept loop hands them on, each a dup of fd
// standing in for an accept(2): to the listener's acceptor (a, not NULL),
// or else to the AcceptFunc's trampoline.
static size_t evl_conn_slot_size(int bev) { return bev ? sizeof(struct evl_conn_bev) : sizeof(struct evl_conn_ev); }

static int evl_bench_accept_dup(struct evconnlistener *lev, uintptr_t h,
	void *a, int fd, int n)
{
	struct sockaddr_in sin;
	int i;
	evl_bench_peer(&sin);
	for (i = 0; i < n; i++) {
		int s = dup(fd);
		if (s < 0)
			return -1;
		if (a)
			evl_accept_conn_cb(lev, s, (struct sockaddr *)&sin, (int)sizeof(sin), a);
		else
			goListenerAccept(h, s, (struct sockaddr *)&sin, (int)sizeof(sin));
	}
	return 0;
}
*/
import "C"

import (
	"errors"
	"unsafe"
)

// The one hook that tests need inside the package's cgo: it calls an
// exported trampoline from C, which a package of its own (internal/ctest,
// where the rest of the tests' C lives) cannot link against.

// benchAccept calls l's accept trampoline n times from C with fd, as
// libevent's accept loop would: the cost of one C→Go accept callback.
func benchAccept(l *Listener, fd, n int) {
	C.evl_bench_accept(C.uintptr_t(l.h), C.int(fd), C.int(n))
}

// benchAcceptDup hands l n connections, each a dup of fd, as libevent's
// accept loop would: through the acceptor of AcceptEvents or
// AcceptBufferEvents if l has one, which makes the connection's object in
// C first, else to the AcceptFunc. Run it on the loop.
func benchAcceptDup(l *Listener, fd, n int) error {
	var a unsafe.Pointer
	if l.conns != nil {
		a = unsafe.Pointer(l.conns.c)
	}
	if C.evl_bench_accept_dup(l.ptr, C.uintptr_t(l.h), a, C.int(fd), C.int(n)) != 0 {
		return errors.New("dup failed")
	}
	return nil
}

// connSlotBytes tells the C side's bytes per descriptor number that a
// connection of the table used: an event's slot (its storage included) and
// a buffer event's.
func connSlotBytes() (event, bev int) {
	return int(C.evl_conn_slot_size(0)), int(C.evl_conn_slot_size(1))
}

// The C types of the loop's batch (turns.go), for turns_test.go.
type (
	cConnEv = C.struct_evl_conn_ev
	cFired  = C.struct_evl_fired
	cShort  = C.short
)
