package evlistener

import (
	"os"
	"syscall"
)

// An eventfd: one descriptor, reset by one read of its 8-byte counter.
var wakeToken = [8]byte{1}

func wakeFDs() (rfd, wfd int, err error) {
	fd, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		return -1, -1, os.NewSyscallError("eventfd", errno)
	}
	return int(fd), int(fd), nil
}
