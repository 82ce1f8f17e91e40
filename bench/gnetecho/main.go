// Command gnetecho is the gnet v2 reference echo server: gnet's event-loop
// design, the most used Go alternative to goroutine-per-connection. One
// event loop (gnet's default without multicore; -loops N for gnet's
// multicore mode with N), TCP_NODELAY on (gnet's default).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/evlistener/evlistener/bench/internal/echocli"
)

const prog = "gnetecho"

type echoServer struct {
	gnet.BuiltinEventEngine
}

// OnBoot reports the bound address (port 0 resolved) from a dup of the
// listening socket, as gnet does not expose it otherwise.
func (s *echoServer) OnBoot(eng gnet.Engine) gnet.Action {
	fd, err := eng.Dup()
	if err != nil {
		echocli.Fatal(prog, fmt.Errorf("dup listener: %w", err))
	}
	sa, err := syscall.Getsockname(fd)
	syscall.Close(fd)
	if err != nil {
		echocli.Fatal(prog, fmt.Errorf("getsockname: %w", err))
	}
	echocli.Listening(sockaddrToTCP(sa))
	echocli.OnSignal(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = eng.Stop(ctx)
		os.Exit(0)
	})
	return gnet.None
}

func (s *echoServer) OnTraffic(c gnet.Conn) gnet.Action {
	buf, _ := c.Next(-1)
	if _, err := c.Write(buf); err != nil {
		return gnet.Close
	}
	return gnet.None
}

func sockaddrToTCP(sa syscall.Sockaddr) *net.TCPAddr {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
	}
	return &net.TCPAddr{}
}

// quietLogger drops gnet's start-up chatter, so that the listening line is the
// only line on stderr, and keeps warnings and errors.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any) {}
func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Warnf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, prog+": warning: "+format+"\n", args...)
}
func (quietLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, prog+": "+format+"\n", args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, prog+": "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	loops := 1
	addr := echocli.ParseWith(prog, func(fs *flag.FlagSet) {
		fs.IntVar(&loops, "loops", 1, "event loops: more than 1 is gnet's multicore mode with that many")
	})
	err := gnet.Run(&echoServer{}, "tcp://"+addr,
		gnet.WithMulticore(loops > 1),
		gnet.WithNumEventLoop(loops),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(quietLogger{}),
	)
	if err != nil {
		echocli.Fatal(prog, err)
	}
}
