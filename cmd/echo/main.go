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
//	                  read() and write() in its callback; bufferevent: a
//	                  libevent buffer event per connection that moves its
//	                  input to its output, as the libevent book's echo does
//	-max-conns N      connections served at once; more wait in the kernel's
//	                  backlog (default: RLIMIT_NOFILE minus headroom)
//	-max-pending B    echo bytes held per connection; a client that sends
//	                  without reading is not read from until its echo drains
//	                  (default 1 MiB)
//	-idle D           close connections idle that long (default 5m; 0: never)
//	-loops N          event loops, each on its own OS thread with its own
//	                  listener on the port (SO_REUSEPORT) (default 1)
//	-busy-poll D      after serving a burst, a loop polls for up to that
//	                  long before it sleeps: the next request is often that
//	                  close (default 50µs; 0: sleep at once)
//	-busy-poll-budget F
//	                  the share of its working time a loop may spend
//	                  polling (default 0.1: polling adds at most a tenth to
//	                  the CPU time; inf: poll the whole -busy-poll window
//	                  after every burst, the lowest latency for the most CPU)
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
	"os"
	"os/signal"
	"runtime"
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
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// config is the command line, checked.
type config struct {
	addr       string
	port       int
	engine     string
	maxConns   int
	maxPending int
	idle       time.Duration
	loops      int
	busyPoll   time.Duration
	pollBudget float64
	drain      time.Duration
	upgradeIn  time.Duration
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
	// Signals are caught from before the first bind, so that one arriving
	// as the server starts still shuts it down cleanly. They belong to
	// os/signal: libevent's evsignal would replace the Go runtime's
	// handlers.
	// Room for a SIGTERM behind an unread SIGHUP: Notify drops what does
	// not fit.
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigc)
	// Before anything could change the working directory.
	self, selfErr := startPath()

	inherited, ready, err := inheritedSockets(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "echo: %v\n", err)
		return 1
	}
	if len(inherited) > cfg.loops {
		cfg.loops = len(inherited)
		cfg.maxConns = max(cfg.maxConns, cfg.loops)
	}

	// Each loop waits for events inside a cgo call and keeps its P. With
	// no idle P the runtime takes that P away within 20 µs and wakes a
	// thread to hold it, and the loop must win a P back for every callback:
	// on a one-CPU run, a context switch or two per message. One P per loop
	// and one more for the rest keeps a P idle.
	if runtime.GOMAXPROCS(0) < cfg.loops+1 {
		runtime.GOMAXPROCS(cfg.loops + 1)
	}
	srv, err := listen(cfg, stderr, inherited)
	if err != nil {
		fmt.Fprintf(stderr, "echo: %v\n", err)
		return 1
	}
	for _, a := range srv.addrs {
		fmt.Fprintf(stderr, "echo: listening on %v\n", a)
	}
	srv.start()
	signalReady(ready)

	var (
		pending *upgrade        // a new process, not ready yet
		drained <-chan struct{} // set once the sockets are handed over
		drainT  <-chan time.Time
		drainAt time.Time
	)
	for {
		select {
		case sig := <-sigc:
			if sig == syscall.SIGHUP {
				switch {
				case drained != nil:
					fmt.Fprintf(stderr, "echo: SIGHUP ignored: the sockets are handed over already\n")
				case pending != nil:
					fmt.Fprintf(stderr, "echo: SIGHUP ignored: an upgrade to pid %d is under way\n", pending.cmd.Process.Pid)
				case selfErr != nil:
					fmt.Fprintf(stderr, "echo: upgrade failed: %v\n", selfErr)
				default:
					if pending, err = srv.startUpgrade(self, args, cfg.upgradeIn); err != nil {
						fmt.Fprintf(stderr, "echo: upgrade failed: %v\n", err)
					}
				}
				continue
			}
			if pending != nil {
				pending.cancel()
			}
			start := time.Now()
			n := srv.shutdown()
			fmt.Fprintf(stderr, "echo: %v: closed %d connections and stopped in %v\n", sig, n, time.Since(start).Round(time.Microsecond))
			return 0
		case err := <-srv.fatal:
			fmt.Fprintf(stderr, "echo: %v\n", err)
			if pending != nil {
				pending.cancel()
			}
			srv.shutdown()
			return 1
		case err := <-pendingDone(pending):
			if err != nil {
				fmt.Fprintf(stderr, "echo: upgrade failed: %v\n", err)
				pending = nil
				continue
			}
			fmt.Fprintf(stderr, "echo: upgraded to pid %d\n", pending.cmd.Process.Pid)
			pending = nil
			drainAt = time.Now()
			drained = srv.stopAccepting()
			drainT = time.After(cfg.drain)
		case <-drained:
			srv.shutdown()
			fmt.Fprintf(stderr, "echo: drained: the last connection closed after %v\n", time.Since(drainAt).Round(time.Millisecond))
			return 0
		case <-drainT:
			n := srv.shutdown()
			fmt.Fprintf(stderr, "echo: drained: -drain %v passed, closed %d connections\n", cfg.drain, n)
			return 0
		}
	}
}

// pendingDone is the channel on which u tells how it went, or nil (never
// ready) without an upgrade under way.
func pendingDone(u *upgrade) <-chan error {
	if u == nil {
		return nil
	}
	return u.done
}

// parseArgs reads the command line. On an error it has already told the
// user on stderr.
func parseArgs(args []string, stderr io.Writer) (config, error) {
	cfg := config{port: defaultPort}
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1", "address to listen on (0.0.0.0 or :: to serve the network)")
	fs.StringVar(&cfg.engine, "engine", defaultEngine, "per-connection design: event or bufferevent")
	fs.IntVar(&cfg.maxConns, "max-conns", 0, fmt.Sprintf("connections served at once; more wait in the backlog (default: RLIMIT_NOFILE minus headroom, %d here)", defaultMaxConns(1)))
	fs.IntVar(&cfg.maxPending, "max-pending", 1<<20, "echo bytes held per connection before it is no longer read")
	fs.DurationVar(&cfg.idle, "idle", 5*time.Minute, "close connections idle this long; 0: never")
	fs.IntVar(&cfg.loops, "loops", 1, "event loops on their own threads, sharing the port (SO_REUSEPORT)")
	fs.DurationVar(&cfg.busyPoll, "busy-poll", defaultBusyPoll, "after a burst of work, poll this long before sleeping; 0: never")
	fs.Float64Var(&cfg.pollBudget, "busy-poll-budget", evlistener.DefaultBusyPollBudget, "share of its working time a loop may spend polling; inf: no limit")
	fs.DurationVar(&cfg.drain, "drain", 30*time.Second, "after an upgrade, serve this process's connections at most this long, then close them")
	fs.DurationVar(&cfg.upgradeIn, "upgrade-timeout", defaultUpgradeTimeout, "an upgrade fails unless the new process is ready within this long")
	usage := func() {
		fs.SetOutput(stderr)
		fmt.Fprintf(stderr, "usage: echo [flags] [port]\n\nport is 0 to 65535 (default %d; 0 picks a free port).\n\n"+
			"Under systemd socket activation (LISTEN_FDS and LISTEN_PID name sockets for this\n"+
			"process), and in the new process of an upgrade, echo serves the sockets it was\n"+
			"given and binds nothing: the port argument and -addr are then ignored.\n\n"+
			"SIGHUP upgrades: echo starts the executable at the path it was started from, with\n"+
			"the same arguments, hands it the sockets it listens on, and once it is ready stops\n"+
			"accepting, serves its own connections for at most -drain, and exits 0.\n\nflags:\n", defaultPort)
		fs.PrintDefaults()
	}
	usageErr := func(format string, a ...any) (config, error) {
		err := fmt.Errorf(format, a...)
		fmt.Fprintf(stderr, "echo: %v\nusage: echo [flags] [port]; echo -h tells more\n", err)
		return cfg, err
	}
	fail := func(format string, a ...any) error { _, err := usageErr(format, a...); return err }
	if err := cmdline.Parse(fs, args, &cfg.port, usage, fail); err != nil {
		return cfg, err
	}
	maxConnsSet := false
	fs.Visit(func(f *flag.Flag) { maxConnsSet = maxConnsSet || f.Name == "max-conns" })
	if cfg.engine != "event" && cfg.engine != "bufferevent" {
		return usageErr("unknown -engine %q: want event or bufferevent", cfg.engine)
	}
	if cfg.loops < 1 {
		return usageErr("-loops %d: want at least 1", cfg.loops)
	}
	if !maxConnsSet {
		cfg.maxConns = defaultMaxConns(cfg.loops)
	}
	if cfg.maxConns < 1 {
		return usageErr("-max-conns %d: want at least 1", cfg.maxConns)
	}
	if cfg.loops > cfg.maxConns {
		return usageErr("-loops %d is more than -max-conns %d: each loop serves at least one connection", cfg.loops, cfg.maxConns)
	}
	if cfg.maxPending < 1 {
		return usageErr("-max-pending %d: want at least 1", cfg.maxPending)
	}
	if cfg.busyPoll < 0 || cfg.busyPoll > time.Second {
		return usageErr("-busy-poll %v: want 0 to 1s", cfg.busyPoll)
	}
	if !(cfg.pollBudget >= 0) { // NaN too
		return usageErr("-busy-poll-budget %v: want 0 or more (inf: no limit)", cfg.pollBudget)
	}
	if cfg.idle < 0 {
		return usageErr("-idle %v: want 0 (never) or more", cfg.idle)
	}
	if cfg.drain < 0 {
		return usageErr("-drain %v: want 0 or more", cfg.drain)
	}
	if cfg.upgradeIn <= 0 {
		return usageErr("-upgrade-timeout %v: want more than 0", cfg.upgradeIn)
	}
	return cfg, nil
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
