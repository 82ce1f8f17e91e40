package evlistener

import (
	"errors"
	"net"
)

// ErrClosed is returned by methods of a base, listener, buffer event or
// event that was closed. It wraps net.ErrClosed, as the errors of Go's net
// do after Close: errors.Is(err, net.ErrClosed) holds for both.
var ErrClosed error = closedError{}

type closedError struct{}

func (closedError) Error() string { return "evlistener: use of closed object" }
func (closedError) Unwrap() error { return net.ErrClosed }

var (
	errNilBase     = errors.New("evlistener: nil base")
	errNilCallback = errors.New("evlistener: nil callback")
	errEventNew    = errors.New("evlistener: event_new failed")
	errNilFunc     = errors.New("evlistener: nil function")
)

// opError wraps err, the failure of op on a buffer event or an event, as
// Go's net wraps its errors (*net.OpError, around an *os.SyscallError where
// there is an errno). nil and ErrClosed are returned as they are, as a
// Listener's methods do.
func opError(op string, err error) error {
	if err == nil || err == ErrClosed {
		return err
	}
	return &net.OpError{Op: op, Err: err}
}
