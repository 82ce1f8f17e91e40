//go:build !linux

package evlistener

// libevent 2.1 sets SO_REUSEPORT and TCP_DEFER_ACCEPT on Linux only, and
// ignores ReuseablePort and DeferredAccept elsewhere.
const (
	soReusePort    = -1
	tcpDeferAccept = -1
)
