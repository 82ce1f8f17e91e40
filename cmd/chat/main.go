// Command chat is a line-based chat server on libevent, through evlistener:
// every whole line a client sends goes to every other client.
//
//	chat [flags] [port]
//
// The port (default 9877, 0 picks a free one) is the only argument. On start
// it prints "chat: listening on HOST:PORT" to stderr. Flags:
//
//	-addr HOST        address to listen on (default 127.0.0.1; 0.0.0.0 or ::
//	                  to serve the network)
//	-max-line B       longest line, in bytes without its terminator
//	                  (default 64 KiB); a client whose line grows past it is
//	                  disconnected
//	-max-pending B    bytes queued for one client (default 1 MiB); a client
//	                  that reads so slowly that more wait for it is
//	                  disconnected
//
// Lines end in LF or CRLF and go out ending in LF, to every client but the
// sender, in the order the server read them. Bytes after the last line
// terminator wait for the rest of their line; when the client leaves first
// they are dropped. A client that ends its side of the connection leaves the
// chat: it gets no more lines, and what was queued for it is still sent, for
// up to a second.
//
// SIGINT or SIGTERM stop accepting, send each client what is queued for it,
// for up to a second, close every connection and exit 0. An accept error
// other than a resource shortage stops the server with status 1; a bad
// argument or flag value exits 2 before anything is bound.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/evlistener/evlistener"
	"github.com/evlistener/evlistener/internal/cmdline"
)

const (
	defaultPort       = 9877
	defaultMaxLine    = 64 << 10
	defaultMaxPending = 1 << 20
	// flushTimeout bounds how long a leaving client, or every client at
	// shutdown, is given to take what is queued for it.
	flushTimeout = time.Second
	// shutdownGrace is how much longer than flushTimeout shutdown waits
	// for the flushes to end on their own before it closes what is left.
	shutdownGrace = 500 * time.Millisecond
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// config is the command line, checked.
type config struct {
	addr       string
	port       int
	maxLine    int
	maxPending int
}

// run is the program; it returns the exit status.
func run(args []string, stderr io.Writer) int {
	cfg, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	// Caught from before the bind, so that a signal arriving as the server
	// starts still shuts it down cleanly.
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)
	// One P for the loop and one for the rest (see evlistener's Dispatch).
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
	room := &room{cfg: cfg, stderr: stderr}
	srv := &evlistener.Server{
		Addr: net.JoinHostPort(cfg.addr, strconv.Itoa(cfg.port)),
		// One loop: a line goes to every client, so all are on it. No C
		// code shares it: libevent's locks would only cost.
		BaseFlags:  evlistener.BaseNoLock,
		Handler:    room.join,
		OnShutdown: room.shutdown,
		ErrorLog:   log.New(stderr, "chat: ", 0),
	}
	if err := srv.Listen(); err != nil {
		fmt.Fprintf(stderr, "chat: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "chat: listening on %v\n", srv.Addrs()[0])
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	select {
	case sig := <-sigc:
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), flushTimeout+shutdownGrace)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
		fmt.Fprintf(stderr, "chat: %v: flushed and closed %d connections in %v\n", sig, room.atShutdown, time.Since(start).Round(time.Microsecond))
		return 0
	case err := <-served:
		fmt.Fprintf(stderr, "chat: %v\n", err)
		return 1
	}
}

// parseArgs reads the command line. On an error it has already told the
// user on stderr, in one line.
func parseArgs(args []string, stderr io.Writer) (config, error) {
	cfg := config{port: defaultPort}
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1", "address to listen on (0.0.0.0 or :: to serve the network)")
	fs.IntVar(&cfg.maxLine, "max-line", defaultMaxLine, "longest line in bytes, without its terminator; a client whose line grows past it is disconnected")
	fs.IntVar(&cfg.maxPending, "max-pending", defaultMaxPending, "bytes queued for one client; a client with more waiting is disconnected")
	usage := func() {
		fs.SetOutput(stderr)
		fmt.Fprintf(stderr, "usage: chat [flags] [port]\n\nport is 0 to 65535 (default %d; 0 picks a free port).\n\n"+
			"Every whole line a client sends (ending in LF or CRLF) goes to every other\n"+
			"client, ending in LF. SIGINT or SIGTERM send what is queued, for up to a\n"+
			"second, and exit 0.\n\nflags:\n", defaultPort)
		fs.PrintDefaults()
	}
	usageErr := func(format string, a ...any) (config, error) {
		err := fmt.Errorf(format, a...)
		fmt.Fprintf(stderr, "chat: %v (chat -h tells more)\n", err)
		return cfg, err
	}
	fail := func(format string, a ...any) error { _, err := usageErr(format, a...); return err }
	if err := cmdline.Parse(fs, args, &cfg.port, usage, fail); err != nil {
		return cfg, err
	}
	if !validHost(cfg.addr) {
		return usageErr("-addr %q: want an IP address or a host name, without a port", cfg.addr)
	}
	if cfg.maxLine < 1 {
		return usageErr("-max-line %d: want at least 1", cfg.maxLine)
	}
	if cfg.maxPending < 1 {
		return usageErr("-max-pending %d: want at least 1", cfg.maxPending)
	}
	// A longest line and its LF must fit in an empty queue, or every such
	// line would disconnect every client it goes to.
	if cfg.maxPending <= cfg.maxLine {
		return usageErr("-max-pending %d: want more than -max-line %d, so that a longest line fits", cfg.maxPending, cfg.maxLine)
	}
	return cfg, nil
}

// validHost reports whether h can be a host to listen on: empty (every
// address), an IP address, or a name made of what DNS names are made of,
// whose last label is not a number (which would be a mistyped address, or
// the port given to -addr).
// Whether a name resolves is learnt when binding, as cmd/echo does.
func validHost(h string) bool {
	ip, _, _ := strings.Cut(h, "%") // an IPv6 zone: fe80::1%eth0
	if h == "" || net.ParseIP(ip) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	numeric := false
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		numeric = true
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
			numeric = numeric && r >= '0' && r <= '9'
		}
	}
	return !numeric
}
