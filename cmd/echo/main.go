// Command echo is an echo server on libevent, through evlistener: it sends
// every byte each client sends back to that client, in order.
//
//	echo [flags] [port]
//
// The port (default 9876, 0 picks a free one) is the only argument. On start
// it prints "echo: listening on HOST:PORT" to stderr; SIGINT or SIGTERM stop
// it with status 0. Flags:
//
//	-addr HOST        address to listen on (default 127.0.0.1; 0.0.0.0 or ::
//	                  to serve the network)
//	-engine NAME      event (default): one libevent event per connection,
//	                  read() and write() in its callback; bufferevent: the
//	                  libevent book's buffer event per connection
//	-max-conns N      connections served at once; more wait in the kernel's
//	                  backlog (default: RLIMIT_NOFILE minus headroom)
//	-max-pending B    echo bytes held per connection; a client that sends
//	                  without reading is not read from until its echo drains
//	                  (default 1 MiB)
//	-idle D           close connections idle that long (default 5m; 0: never)
//	-loops N          event loops, each on its own OS thread with its own
//	                  listener on the port (SO_REUSEPORT) (default 1)
//	-busy-poll D, -busy-poll-budget F
//	                  after a burst, a loop polls for up to D before it sleeps
//	                  (default 50µs; 0: never), spending at most the share F
//	                  of its working time on it (default 0.1; inf: no limit)
//	-drain D          after an upgrade, serve this process's connections for
//	                  at most that long, then close them (default 30s)
//	-upgrade-timeout D
//	                  an upgrade fails unless the new process is ready within
//	                  that long (default 10s)
//
// Restarts. On SIGHUP the server starts the executable at the path it was
// started from (os.Args[0], resolved against the directory it started in,
// so that a replaced file is picked up) with the same arguments, and hands it
// every listening socket. Once the new process serves, the old one prints
// "echo: upgraded to pid N", stops accepting (connections waiting in the
// backlog go to the new process: none is refused or reset), serves its
// connections until they close or -drain passes, and exits 0. If the new
// process exits or is not ready within -upgrade-timeout, the old one prints
// "echo: upgrade failed: ..." and serves on. SIGINT or SIGTERM while an
// upgrade is under way also stop the new process, which is not serving yet.
//
// Socket activation. When systemd's LISTEN_FDS and LISTEN_PID name sockets
// for this process (or an upgrade handed them over), the server serves
// those and binds nothing: the port argument and -addr are ignored. It runs
// as many loops as sockets, or -loops if that is more.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"syscall"
	"time"

	"github.com/evlistener/evlistener"
	"github.com/evlistener/evlistener/internal/cmdline"
)

const (
	defaultPort = 9876
	// fdHeadroom is kept free of connections for the descriptors that are
	// not connections: stdio, and per loop a listening socket, an epoll fd
	// and libevent's wake-up fd, and the Go runtime's own.
	fdHeadroom     = 32
	fdHeadroomLoop = 4
	// oldUpgradeEnv is how an echo from before evlistener.Server handed its
	// sockets over; the protocol is the same.
	oldUpgradeEnv = "ECHO_UPGRADE"

	defaultUpgradeTimeout = 10 * time.Second
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// config is the command line, checked.
type config struct {
	addr, engine                     string
	maxConns, maxPending, loops      int
	idle, busyPoll, drain, upgradeIn time.Duration
	pollBudget                       float64
}

// run is the program; it returns the exit status.
func run(args []string, stderr io.Writer) int {
	cmd, cfg, err := parseArgs(args, stderr)
	if err != nil {
		return cmdline.Status(err)
	}
	sigc, stopSignals := cmdline.Notify(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stopSignals()
	if v, ok := os.LookupEnv(oldUpgradeEnv); ok {
		os.Unsetenv(oldUpgradeEnv)
		os.Setenv(evlistener.UpgradeEnv, v)
	}
	srv := &evlistener.Server{
		Addr:     cmd.Addr(cfg.addr),
		Loops:    cfg.loops,
		MaxConns: cfg.maxConns,
		Backlog:  1024, // clients past -max-conns wait in it
		// No C code shares the loops: libevent's locks would only cost.
		BaseFlags:      evlistener.BaseNoLock,
		UpgradeTimeout: cfg.upgradeIn,
		ErrorLog:       log.New(stderr, "echo: ", 0),
	}
	(&echo{cfg: cfg}).serveOn(srv)
	served, err := cmd.Serve(srv)
	if err != nil {
		return 1
	}

	var (
		upgraded  = make(chan error, 1)
		upgrading bool
		drainT    <-chan time.Time // set once the sockets are handed over
		drainAt   time.Time
	)
	// closeAll closes every connection at once and says how many there were.
	closeAll := func() uint64 {
		n := srv.Stats().Open
		srv.Close()
		<-served
		return n
	}
	handedOver := func() {
		fmt.Fprintf(stderr, "echo: upgraded to pid %d\n", srv.Successor())
		drainAt = time.Now()
		drainT = time.After(cfg.drain)
	}
	for {
		select {
		case sig := <-sigc:
			if sig != syscall.SIGHUP {
				start := time.Now()
				n := closeAll() // a pending upgrade's new process too
				fmt.Fprintf(stderr, "echo: %v: closed %d connections and stopped in %v\n", sig, n, time.Since(start).Round(time.Microsecond))
				return 0
			}
			switch {
			case drainT != nil:
				fmt.Fprintf(stderr, "echo: SIGHUP ignored: the sockets are handed over already\n")
			case upgrading:
				fmt.Fprintf(stderr, "echo: SIGHUP ignored: an upgrade to pid %d is under way\n", srv.Upgrading())
			default:
				upgrading = true
				go func() { upgraded <- srv.Upgrade() }()
			}
		case err := <-upgraded:
			upgrading = false
			if err != nil {
				// What failed, without the Server's prefix.
				if inner := errors.Unwrap(err); inner != nil {
					err = inner
				}
				fmt.Fprintf(stderr, "echo: upgrade failed: %v\n", err)
			} else if drainT == nil {
				handedOver()
			}
		case err := <-served:
			if drainT == nil && srv.Successor() != 0 {
				handedOver() // and drained already, before Upgrade returned
			}
			if drainT != nil && errors.Is(err, evlistener.ErrServerClosed) {
				fmt.Fprintf(stderr, "echo: drained: the last connection closed after %v\n", time.Since(drainAt).Round(time.Millisecond))
				return 0
			}
			fmt.Fprintf(stderr, "echo: %v\n", err)
			return 1
		case <-drainT:
			n := closeAll()
			fmt.Fprintf(stderr, "echo: drained: -drain %v passed, closed %d connections\n", cfg.drain, n)
			return 0
		}
	}
}

// parseArgs reads the command line. On an error it has already told the
// user on stderr.
func parseArgs(args []string, stderr io.Writer) (*cmdline.Command, config, error) {
	var cfg config
	cmd := cmdline.New("echo", defaultPort, "Under systemd socket activation (LISTEN_FDS and LISTEN_PID name sockets for this\n"+
		"process), and in the new process of an upgrade, echo serves the sockets it was\n"+
		"given and binds nothing: the port argument and -addr are then ignored.\n\n"+
		"SIGHUP upgrades: echo starts the executable at the path it was started from, with\n"+
		"the same arguments, hands it the sockets it listens on, and once it is ready stops\n"+
		"accepting, serves its own connections for at most -drain, and exits 0.", stderr)
	cmd.UsageLine = true
	cmd.StringVar(&cfg.addr, "addr", "127.0.0.1", "address to listen on (0.0.0.0 or :: to serve the network)")
	cmd.StringVar(&cfg.engine, "engine", defaultEngine, "per-connection design: event or bufferevent")
	cmd.IntVar(&cfg.maxConns, "max-conns", 0, fmt.Sprintf("connections served at once; more wait in the backlog (default: RLIMIT_NOFILE minus headroom, %d here)", defaultMaxConns(1)))
	cmd.IntVar(&cfg.maxPending, "max-pending", 1<<20, "echo bytes held per connection before it is no longer read")
	cmd.DurationVar(&cfg.idle, "idle", 5*time.Minute, "close connections idle this long; 0: never")
	cmd.IntVar(&cfg.loops, "loops", 1, "event loops on their own threads, sharing the port (SO_REUSEPORT)")
	cmd.DurationVar(&cfg.busyPoll, "busy-poll", defaultBusyPoll, "after a burst of work, poll this long before sleeping; 0: never")
	cmd.Float64Var(&cfg.pollBudget, "busy-poll-budget", evlistener.DefaultBusyPollBudget, "share of its working time a loop may spend polling; inf: no limit")
	cmd.DurationVar(&cfg.drain, "drain", 30*time.Second, "after an upgrade, serve this process's connections at most this long, then close them")
	cmd.DurationVar(&cfg.upgradeIn, "upgrade-timeout", defaultUpgradeTimeout, "an upgrade fails unless the new process is ready within this long")
	usageErr := func(format string, a ...any) (*cmdline.Command, config, error) {
		return cmd, cfg, cmd.Fail(format, a...)
	}
	if err := cmd.Parse(args); err != nil {
		return cmd, cfg, err
	}
	maxConnsSet := false
	cmd.Visit(func(f *flag.Flag) { maxConnsSet = maxConnsSet || f.Name == "max-conns" })
	if !maxConnsSet && cfg.loops >= 1 {
		cfg.maxConns = defaultMaxConns(cfg.loops)
	}
	switch {
	case cfg.engine != "event" && cfg.engine != "bufferevent":
		return usageErr("unknown -engine %q: want event or bufferevent", cfg.engine)
	case cfg.loops < 1:
		return usageErr("-loops %d: want at least 1", cfg.loops)
	case cfg.maxConns < 1:
		return usageErr("-max-conns %d: want at least 1", cfg.maxConns)
	case cfg.loops > cfg.maxConns:
		return usageErr("-loops %d is more than -max-conns %d: each loop serves at least one connection", cfg.loops, cfg.maxConns)
	case cfg.maxPending < 1:
		return usageErr("-max-pending %d: want at least 1", cfg.maxPending)
	case cfg.busyPoll < 0 || cfg.busyPoll > time.Second:
		return usageErr("-busy-poll %v: want 0 to 1s", cfg.busyPoll)
	case !(cfg.pollBudget >= 0): // NaN too
		return usageErr("-busy-poll-budget %v: want 0 or more (inf: no limit)", cfg.pollBudget)
	case cfg.idle < 0:
		return usageErr("-idle %v: want 0 (never) or more", cfg.idle)
	case cfg.drain < 0:
		return usageErr("-drain %v: want 0 or more", cfg.drain)
	case cfg.upgradeIn <= 0:
		return usageErr("-upgrade-timeout %v: want more than 0", cfg.upgradeIn)
	}
	return cmd, cfg, nil
}

// defaultMaxConns leaves room below the descriptor limit (which the Go
// runtime has already raised to the hard limit) for what is not a
// connection.
func defaultMaxConns(loops int) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 20
	}
	return max(int(rl.Cur)-fdHeadroom-fdHeadroomLoop*loops, loops)
}
