// Package echocli holds the command line shared by the Go reference echo
// servers, so that they take exactly what cmd/echo takes: [-addr HOST] [port],
// print one "echo: listening on HOST:PORT" line to stderr, and exit 0 on
// SIGINT or SIGTERM.
package echocli

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// DefaultPort is cmd/echo's default port.
const DefaultPort = 9876

// Parse parses os.Args and returns the address to listen on as host:port.
// A usage error prints a message naming the valid range and exits with
// status 2, before anything is bound.
func Parse(prog string) string { return ParseWith(prog, nil) }

// ParseWith is Parse for a server with flags of its own, which more
// defines before the command line is parsed.
func ParseWith(prog string, more func(fs *flag.FlagSet)) string {
	fs := flag.NewFlagSet(prog, flag.ExitOnError)
	host := fs.String("addr", "127.0.0.1", "host to listen on")
	if more != nil {
		more(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s [-addr HOST] [port]  (port 0-65535, 0 picks a free port)\n", prog)
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:]) // ExitOnError
	port := DefaultPort
	switch fs.NArg() {
	case 0:
	case 1:
		p, err := strconv.Atoi(fs.Arg(0))
		if err != nil || p < 0 || p > 65535 {
			fmt.Fprintf(os.Stderr, "%s: invalid port %q: want a number in the range 0-65535\n", prog, fs.Arg(0))
			os.Exit(2)
		}
		port = p
	default:
		fmt.Fprintf(os.Stderr, "%s: too many arguments: want at most one port\n", prog)
		fs.Usage()
		os.Exit(2)
	}
	return net.JoinHostPort(*host, strconv.Itoa(port))
}

// Listening prints the line the benchmark runner waits for.
func Listening(addr net.Addr) {
	fmt.Fprintf(os.Stderr, "echo: listening on %s\n", addr)
}

// OnSignal calls stop once SIGINT or SIGTERM arrives.
func OnSignal(stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ch
		stop()
	}()
}

// Fatal prints err and exits with status 1.
func Fatal(prog string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
	os.Exit(1)
}
