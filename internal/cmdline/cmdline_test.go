package cmdline

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

// parseCases are command lines of a server "srv" whose default port is 7
// and whose one flag is -x, an int.
var parseCases = []struct {
	name      string
	args      []string
	usageLine bool
	port      int    // after Parse
	stderr    string // all of it; "" when nothing is said
	help      bool   // Parse returns flag.ErrHelp
}{
	{name: "no port keeps the default", port: 7},
	{name: "a port", args: []string{"-x", "1", "0"}, port: 0},
	{name: "port out of range", args: []string{"65536"}, port: 7,
		stderr: "srv: invalid port \"65536\": want a number from 0 to 65535 (srv -h tells more)\n"},
	{name: "negative port reads as a flag", args: []string{"-1"}, port: 7,
		stderr: "srv: invalid port \"-1\": want a number from 0 to 65535 (srv -h tells more)\n"},
	{name: "more arguments", args: []string{"1", "2"}, port: 7,
		stderr: "srv: too many arguments [\"1\" \"2\"]: want at most one, the port (0 to 65535) (srv -h tells more)\n"},
	{name: "unknown flag", args: []string{"-y"}, port: 7,
		stderr: "srv: flag provided but not defined: -y (srv -h tells more)\n"},
	{name: "with the usage line", args: []string{"-x", "many"}, usageLine: true, port: 7,
		stderr: "srv: invalid value \"many\" for flag -x: parse error\nusage: srv [flags] [port]; srv -h tells more\n"},
	{name: "help", args: []string{"-h"}, port: 7, help: true,
		stderr: "usage: srv [flags] [port]\n\nport is 0 to 65535 (default 7; 0 picks a free port).\n\nabout srv\n\nflags:\n  -x int\n    \tan int\n"},
}

func TestParse(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			c := New("srv", 7, "about srv", &stderr)
			c.UsageLine = tc.usageLine
			c.Int("x", 0, "an int")
			err := c.Parse(tc.args)
			if got := errors.Is(err, flag.ErrHelp); got != tc.help {
				t.Errorf("Parse = %v, want ErrHelp: %v", err, tc.help)
			}
			if (err != nil) != (tc.stderr != "") {
				t.Errorf("Parse = %v with stderr %q", err, stderr.String())
			}
			if c.Port != tc.port {
				t.Errorf("Port = %d, want %d", c.Port, tc.port)
			}
			if stderr.String() != tc.stderr {
				t.Errorf("stderr:\n%q\nwant:\n%q", stderr.String(), tc.stderr)
			}
			if want := map[bool]int{true: 0, false: 2}[tc.help]; err != nil && Status(err) != want {
				t.Errorf("Status = %d, want %d", Status(err), want)
			}
		})
	}
}
