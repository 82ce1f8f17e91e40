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
)
