// Package cmdline holds what the project's servers share: their command
// line, "NAME [flags] [port]", with one rule for every bad argument, and
// their start.
package cmdline

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"

	"github.com/evlistener/evlistener"
)

// Command is a server's command line: its flags, on the embedded FlagSet,
// and its port.
type Command struct {
	*flag.FlagSet
	// Port is the default port until Parse reads the one given.
	Port int
	// UsageLine: a bad argument is told as "NAME: ERROR" and the line
	// "usage: NAME [flags] [port]; NAME -h tells more", not as the one line
	// "NAME: ERROR (NAME -h tells more)".
	UsageLine bool

	name, about string
	stderr      io.Writer
}

// New returns the command line of the server name, whose port is port
// unless one is given. -h prints the usage line, the port's range and
// default, about (when not empty) and the flags.
func New(name string, port int, about string, stderr io.Writer) *Command {
	return &Command{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), Port: port,
		name: name, about: about, stderr: stderr}
}

// Parse parses args: the flags, then the one positional argument, the port
// (0 to 65535). -h prints the usage and returns flag.ErrHelp. Every other
// bad argument (an unknown flag, a bad flag value, a bad port, more
// arguments) is told once, through Fail: never the flag package's whole
// usage.
func (c *Command) Parse(args []string) error {
	c.SetOutput(io.Discard)
	c.Usage = func() {}
	if err := c.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.SetOutput(c.stderr)
			// Port is still the default: the positional port comes
			// after the flags.
			fmt.Fprintf(c.stderr, "usage: %s [flags] [port]\n\nport is 0 to 65535 (default %d; 0 picks a free port).\n\n", c.name, c.Port)
			if c.about != "" {
				fmt.Fprintf(c.stderr, "%s\n\n", c.about)
			}
			fmt.Fprintf(c.stderr, "flags:\n")
			c.PrintDefaults()
			return err
		}
		// "-1" reads as a flag to the flag package; to a user it is a
		// port out of range.
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			if _, nerr := strconv.Atoi(name); nerr == nil {
				return c.Fail("invalid port %q: want a number from 0 to 65535", "-"+name)
			}
		}
		return c.Fail("%v", err)
	}
	switch c.NArg() {
	case 0:
	case 1:
		p, err := strconv.Atoi(c.Arg(0))
		if err != nil || p < 0 || p > 65535 {
			return c.Fail("invalid port %q: want a number from 0 to 65535", c.Arg(0))
		}
		c.Port = p
	default:
		return c.Fail("too many arguments %q: want at most one, the port (0 to 65535)", c.Args())
	}
	return nil
}

// Fail tells the user about a bad argument, on stderr, and returns it as
// an error.
func (c *Command) Fail(format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	if c.UsageLine {
		fmt.Fprintf(c.stderr, "%s: %v\nusage: %s [flags] [port]; %s -h tells more\n", c.name, err, c.name, c.name)
	} else {
		fmt.Fprintf(c.stderr, "%s: %v (%s -h tells more)\n", c.name, err, c.name)
	}
	return err
}

// Status is the exit status after Parse (or a check of what it read)
// returned err: 0 after -h, 2 for a bad argument.
func Status(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// Addr is the address to listen on: host and the port.
func (c *Command) Addr(host string) string { return net.JoinHostPort(host, strconv.Itoa(c.Port)) }

// Notify relays sigs to the channel it returns, from before the bind, so
// that a signal as the server starts still stops it cleanly; stop ends
// the relay. The channel has room for two of each.
func Notify(sigs ...os.Signal) (c <-chan os.Signal, stop func()) {
	ch := make(chan os.Signal, 2*len(sigs))
	signal.Notify(ch, sigs...)
	return ch, func() { signal.Stop(ch) }
}

// GOMAXPROCSAbove raises GOMAXPROCS above loops, the event loops the
// program runs: each waits in a cgo call and keeps its P, and with none
// idle the runtime would take it away, so that the loop had to win one
// back for every callback (see evlistener's Base.Dispatch).
func GOMAXPROCSAbove(loops int) {
	if runtime.GOMAXPROCS(0) < loops+1 {
		runtime.GOMAXPROCS(loops + 1)
	}
}

// Serve listens as srv says, prints "NAME: listening on ADDR" on stderr
// for each address it listens on, and serves in a goroutine: served gets
// what srv.Serve returns. A failed Listen is printed and returned.
func (c *Command) Serve(srv *evlistener.Server) (served <-chan error, err error) {
	if err := srv.Listen(); err != nil {
		fmt.Fprintf(c.stderr, "%s: %v\n", c.name, err)
		return nil, err
	}
	for _, a := range srv.Addrs() {
		fmt.Fprintf(c.stderr, "%s: listening on %v\n", c.name, a)
	}
	ch := make(chan error, 1)
	go func() { ch <- srv.Serve() }()
	return ch, nil
}

// ValidHost reports whether h can be a host to listen on: empty (every
// address), an IP address, or a name made of what DNS names are made of,
// whose last label is not a number (which would be a mistyped address, or
// the port given to -addr). Whether a name resolves is learnt when binding.
func ValidHost(h string) bool {
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
