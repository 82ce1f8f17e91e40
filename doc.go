// Package evlistener binds libevent's connection listener (evconnlistener)
// and the event loop it runs on, through cgo, with Go closures as
// callbacks.
//
// A Base is an event_base; Dispatch runs its loop on the calling goroutine,
// and every callback of the objects on the base runs there, one at a time:
//
//   - Listener accepts connections (New, NewBind) and hands each accepted
//     socket to an AcceptFunc; accept errors go to an ErrorFunc, and the
//     listener backs off instead of spinning on EMFILE. AcceptEvents and
//     AcceptBufferEvents instead make each connection's Event or BufferEvent
//     in C as it is accepted, at C's cost: one call into Go to accept, one
//     into C to close, no allocation.
//   - BufferEvent reads a socket into its input Buffer and writes its output
//     Buffer, calling a DataFunc for each and a BufferEventFunc on EOF,
//     errors and timeouts.
//   - Event watches a file descriptor or a timeout (NewEvent, NewTimer) and
//     calls an EventFunc.
//   - NetListener turns a Listener into a net.Listener, and FileConn an
//     accepted socket into a net.Conn, for code written for Go's net.
//   - Listener.File and ListenFDs hand listening sockets to another process
//     and take them from a parent or systemd (ListenFD), for restarts that
//     refuse no connection.
//
// Base.Do runs a function on the loop goroutine and waits for it; Base.Post
// queues one. Either gives other goroutines the state that callbacks own,
// without a lock.
//
// Every method of every type may be called from any goroutine at any time,
// including from inside callbacks, unless its documentation says otherwise;
// the methods do not repeat it. What libevent 2.1 can only do safely on the
// loop thread is handed to it, and the caller waits for the callback that
// runs now, no longer. Errors are *net.OpError values, as Go's net returns
// them: Op names the method, Net and Addr the listener's or the connection's
// address where there is one, and Err wraps the errno (errors.Is(err,
// syscall.EADDRINUSE)). Methods of a closed object fail with ErrClosed,
// which wraps net.ErrClosed: test with errors.Is(err, ErrClosed) or
// errors.Is(err, net.ErrClosed), not ==. The callback setters, which return
// no error, do nothing once the object is closed. A panic in a callback
// stops the loop, and Dispatch panics with a *CallbackPanic.
//
// The option sets (Flag, BaseFlag, BEVOption) and condition sets (Events,
// BEVEvent) have libevent's own values. C code in the same program can share
// the loop: CPtr gives the C objects, FromCPtr adopts a base C created, and
// UsePthreads sets up libevent's locking for C's threads.
package evlistener
