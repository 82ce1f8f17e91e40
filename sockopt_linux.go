package evlistener

import "syscall"

// The options libevent 2.1 sets for ReuseablePort and DeferredAccept on
// Linux.
const (
	soReusePort    = 0xf // SO_REUSEPORT: the syscall package does not name it
	tcpDeferAccept = syscall.TCP_DEFER_ACCEPT
)
