package evlistener

import (
	"sync/atomic"
	"syscall"
	"unsafe"
)

// taskDone tells a goroutine waiting for work handed to the loop thread that
// the work is done. The waiter sleeps in futex(2), so the loop thread's
// wake-up goes straight to the waiting thread: a Go channel would put the
// woken goroutine on the run queue of the loop thread's P, which sits in a
// cgo call (epoll_wait) until sysmon takes it back, adding tens of
// microseconds to every hand-off.
type taskDone struct{ state atomic.Uint32 }

const (
	futexWaitPrivate = 0 | 128
	futexWakePrivate = 1 | 128
)

func (d *taskDone) init() {}

func (d *taskDone) wait() {
	for d.state.Load() == 0 {
		syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(&d.state)), futexWaitPrivate, 0, 0, 0, 0)
	}
	d.state.Store(0) // ready for reuse
}

func (d *taskDone) signal() {
	d.state.Store(1)
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(&d.state)), futexWakePrivate, 1, 0, 0, 0)
}
