//go:build !linux

package evlistener

// libevent 2.1 sets SO_REUSEPORT and TCP_DEFER_ACCEPT on Linux only, and
// ignores ReuseablePort and DeferredAccept elsewhere.
const (
	soReusePort    = -1
	tcpDeferAccept = -1
)

// socketQueues cannot tell the queues here: CloseAfterFlush lingers until
// the peer's EOF or the deadline.
func socketQueues(fd int) (unread, unacked int, ok bool) { return 0, 0, false }
