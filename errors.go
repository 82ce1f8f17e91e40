package evlistener

import (
	"errors"
	"net"
)

// ErrClosed is what the methods of a base, listener, buffer event, event
// or buffer that was closed fail with, inside the *net.OpError they return:
// errors.Is(err, ErrClosed) holds. It wraps net.ErrClosed, as the errors of
// Go's net do after Close: errors.Is(err, net.ErrClosed) holds too.
var ErrClosed error = errClosed{}

type errClosed struct{}

func (errClosed) Error() string { return "use of closed object" }
func (errClosed) Unwrap() error { return net.ErrClosed }

// Errors are worded as Go's net words them: those inside a *net.OpError,
// which says what failed, carry no prefix (the libevent function that
// failed, or what was wrong); those returned alone start "evlistener: ".
var (
	errNilBase     = errors.New("nil base")
	errNilCallback = errors.New("nil callback")
	errEventNew    = errors.New("event_new failed")
	errNilFunc     = errors.New("nil function")
)

// endpoints are what an object's errors say of it besides the operation,
// as the fields of Go's net.OpError: the network, and the local (Source)
// and remote (Addr) address; a listener's own address is Addr, as in net.
type endpoints struct {
	net          string
	source, addr net.Addr
}

// opError is the one place where the errors of this package's methods are
// made: a *net.OpError for op, what the user called, around err, the
// errno (as an *os.SyscallError where there is one) or ErrClosed.
func (e endpoints) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: e.net, Source: e.source, Addr: e.addr, Err: err}
}
