package evlistener

import (
	"syscall"
	"unsafe"
)

// The options libevent 2.1 sets for ReuseablePort and DeferredAccept on
// Linux.
const (
	soReusePort    = 0xf // SO_REUSEPORT: the syscall package does not name it
	tcpDeferAccept = syscall.TCP_DEFER_ACCEPT
)

// socketQueues returns how many bytes wait unread in the socket's receive
// queue (FIONREAD, also named TIOCINQ) and how many it sent that the peer has not acknowledged
// (SIOCOUTQ: for TCP, write_seq - snd_una, a FIN included); ok is false
// where either cannot be told.
func socketQueues(fd int) (unread, unacked int, ok bool) {
	var in, out int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCINQ, uintptr(unsafe.Pointer(&in))); e != 0 {
		return 0, 0, false
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&out))); e != 0 {
		return 0, 0, false
	}
	return int(in), int(out), true
}
