// Package cmdline parses the command line that the project's servers
// share, "NAME [flags] [port]", with one rule for every bad argument.
package cmdline

import (
	"errors"
	"flag"
	"io"
	"net"
	"strconv"
	"strings"
)

// Parse parses args with fs and the one positional argument, the port (0
// to 65535), into *port, which is left as it is when there is none. -h calls
// usage and returns flag.ErrHelp. Every other bad argument (an unknown
// flag, a bad flag value, a bad port, more arguments) is reported once,
// through fail, which prints its message and returns it as an error: never
// the flag package's whole usage.
func Parse(fs *flag.FlagSet, args []string, port *int, usage func(), fail func(format string, a ...any) error) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return err
		}
		// "-1" reads as a flag to the flag package; to a user it is a
		// port out of range.
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			if _, nerr := strconv.Atoi(name); nerr == nil {
				return fail("invalid port %q: want a number from 0 to 65535", "-"+name)
			}
		}
		return fail("%v", err)
	}
	switch fs.NArg() {
	case 0:
	case 1:
		p, err := strconv.Atoi(fs.Arg(0))
		if err != nil || p < 0 || p > 65535 {
			return fail("invalid port %q: want a number from 0 to 65535", fs.Arg(0))
		}
		*port = p
	default:
		return fail("too many arguments %q: want at most one, the port (0 to 65535)", fs.Args())
	}
	return nil
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
