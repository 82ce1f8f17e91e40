// Command runner is the benchmark runner behind `make bench`. It builds
// nothing: bench/Makefile puts every binary in bench/bin first.
//
// For each workload and round it starts every server in turn (pinned to CPU
// 0), waits for its "echo: listening on HOST:PORT" line, runs bin/loadgen
// -hold against it (pinned to CPU 1), reads the server's CPU clock once the
// connections are open and again once the window's ops are done, and stops
// it with SIGTERM. Each server runs
// right next to the one it is compared with (echo-bufferevent-nopoll, cecho and echo-bufferevent,
// crawecho and echo-event, echo-nopoll, goecho, echo and gnetecho), and every other round
// runs the list backwards (A B C, C B A, …): a machine whose speed drifts
// then hits both sides of a ratio alike, first one way, then the other. It reports per server and workload the median
// over rounds, and for each pair of servers the median of the per-round
// ratios: only ratios from one run mean anything.
//
// Outputs: a markdown report on stdout, -json (all runs and summaries;
// out/results.json) and -svg (bars per workload, normalised to goecho;
// out/results.svg). It exits 1 if any run failed: a server that did not
// start or stop cleanly, or a load error.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/evlistener/evlistener/bench/internal/loadresult"
)

// server is one echo server under test.
type server struct {
	Name string   `json:"name"`
	Bin  string   `json:"bin"`
	Args []string `json:"args,omitempty"` // before the port
}

// runRecord is one server × workload × round.
type runRecord struct {
	Server   string `json:"server"`
	Workload string `json:"workload"`
	Round    int    `json:"round"`
	// Result is the load generator's line, inline. Its workload repeats
	// Workload, which JSON writes and reads instead (the shallower field
	// wins) and which is set even when the load generator never ran.
	loadresult.Result
	// ServerCPUus is the server's CPU time (all threads, ns clock) per op
	// from the load's go-ahead to the end of the window's ops (warm-up
	// included, as in ops_all; the connections' setup and teardown not).
	ServerCPUus float64 `json:"server_cpu_us_per_op"`
	// LoadBusy is the load generator's CPU time over the wall time of the
	// same span: near 1 means the load, not the server, may be what
	// limits ops/s.
	LoadBusy float64 `json:"load_busy"`
	// Dropped: a noisy round that a quiet one replaced; not in any median.
	Dropped bool `json:"dropped,omitempty"`
	// Retried holds the failure of a first attempt that only stalled while
	// other processes kept the machine busy; this record is the retry.
	Retried string `json:"retried,omitempty"`
	// OtherCores is how many CPUs' worth of time everything else on the
	// machine used over that span: near 0 on a quiet machine.
	OtherCores float64 `json:"other_cores"`
	Error      string  `json:"error,omitempty"` // why this run does not count
}

func (r *runRecord) ok() bool { return r.Error == "" }

// timingOnly tells a run that failed only because answers came late (which a
// busy machine can cause) from one that saw a wrong answer or a broken
// connection (which it cannot).
func (r *runRecord) timingOnly() bool { return !r.ok() && r.Stalls > 0 && r.Errors == 0 }

// noisyRounds is the set of w's rounds in which other processes kept more
// than quiet CPUs busy during some run.
func noisyRounds(runs []runRecord, w string, quiet float64) map[int]bool {
	noisy := map[int]bool{}
	for _, r := range runs {
		if r.Workload == w && r.OtherCores > quiet {
			noisy[r.Round] = true
		}
	}
	return noisy
}

type config struct {
	binDir     string
	rounds     int
	dur        time.Duration
	warmup     time.Duration
	connectors int
	workloads  []string
	quiet      float64  // most CPUs other processes may use in a quiet round
	saturated  float64  // median load core busy from which a ratio is load-bound
	pinServer  []string // command prefix, e.g. taskset -c 0
	pinLoad    []string
}

func main() {
	binDir := flag.String("bin", "bin", "directory holding the servers and loadgen")
	rounds := flag.Int("rounds", 6, "interleaved rounds per workload (even: as many forward as backward)")
	dur := flag.Duration("d", 600*time.Millisecond, "measuring window per run")
	warmup := flag.Duration("warmup", 200*time.Millisecond, "warm-up per run, not measured")
	connectors := flag.Int("c", 4, "concurrent connectors in the accept workload")
	workloads := flag.String("workloads", "1x64B,50x64B,50x16KiB,1000x64B,accept", "comma-separated workloads")
	only := flag.String("servers", "", "comma-separated subset of servers (default: all available)")
	cmdEcho := flag.String("cmd-echo", "../cmd/echo", "source directory of the library's echo server")
	// Out of git's sight: the committed results.svg changes only when asked
	// (make bench REFRESH=1).
	jsonPath := flag.String("json", "out/results.json", "where to write all results ('' to skip)")
	svgPath := flag.String("svg", "out/results.svg", "where to write the chart ('' to skip)")
	quiet := flag.Float64("quiet", 0.25, "a round in which other processes kept more CPUs than this busy is noisy, and is replaced while the budget allows")
	saturated := flag.Float64("saturated", defaultSaturated, "mark a ratio load-bound where either server's median load core busy in its rounds is at least this (0 to 1)")
	budget := flag.Duration("budget", 180*time.Second, "wall-clock time for measuring; replacement rounds must fit in it")
	from := flag.String("from", "", "run nothing: redo the report from the runs in this results.json")
	mdPath := flag.String("md", "", "also write the markdown report here (with -syscalls: out/syscalls.md)")
	syscalls := flag.Bool("syscalls", false, "count each server's system calls per op under strace -c, once per server and workload, instead of benchmarking; -json defaults to out/syscalls.json")
	loops := flag.Int("loops", 0, "instead of the benchmark, the multi-core mode: cmd/echo and gnetecho with this many loops and goecho, against as many load generators, -rounds times per workload; -json defaults to out/multicore.json")
	idle := flag.Int("idle", 0, "instead of benchmarking, measure each server's resident memory per idle connection with this many connections open, -rounds times; -json defaults to out/idle.json")
	flag.Parse()
	if flag.NArg() != 0 || *rounds < 1 || *rounds > 50 || *dur <= 0 || *dur > time.Minute ||
		*warmup < 0 || *warmup > time.Minute || *connectors < 1 || *connectors > 256 ||
		*saturated < 0 || *saturated > 1 {
		fmt.Fprintln(os.Stderr, "runner: bad flags: want 1-50 rounds, a duration up to 1m, 1-256 connectors, -saturated 0 to 1")
		flag.Usage()
		os.Exit(2)
	}

	set := map[string]bool{} // flags given on the command line
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *from != "" {
		threshold := 0.0 // the file's
		if set["saturated"] {
			threshold = *saturated
		}
		rep, err := reread(*from, threshold)
		if err != nil {
			fatal(err)
		}
		write(rep, *jsonPath, *svgPath, *mdPath)
		return
	}

	cfg := config{binDir: *binDir, rounds: *rounds, dur: *dur, warmup: *warmup,
		connectors: *connectors, workloads: splitList(*workloads), quiet: *quiet, saturated: *saturated}
	defaults := benchServers
	if *idle > 0 {
		defaults = idleServers
		cfg.warmup = 0
		if !set["json"] {
			*jsonPath = "out/idle.json"
		}
		if !set["md"] {
			*mdPath = "out/idle.md"
		}
	}
	if *syscalls {
		defaults = syscallServers
		cfg.warmup = 0 // loadgen -hold: strace attaches after setup instead
		if !set["json"] {
			*jsonPath = "out/syscalls.json"
		}
		if !set["md"] {
			*mdPath = "out/syscalls.md"
		}
	}
	servers, notes, err := chooseServers(*binDir, *cmdEcho, defaults, splitList(*only))
	if err != nil {
		fatal(err)
	}
	if len(servers) == 0 || len(cfg.workloads) == 0 {
		fatal(errors.New("nothing to run"))
	}
	var pinNotes []string
	cfg.pinServer, cfg.pinLoad, pinNotes = pinning()
	notes = append(notes, pinNotes...)
	for _, n := range notes {
		fmt.Println(n)
	}

	stopOnSignal()
	if *loops > 0 {
		if !set["workloads"] {
			cfg.workloads = []string{"50x64B", "1000x64B", "accept"}
		}
		if !set["json"] {
			*jsonPath = "out/multicore.json"
		}
		if !set["md"] {
			*mdPath = "out/multicore.md"
		}
		rep := measureMulti(cfg, *loops, notes)
		writeMulti(rep, *jsonPath, *mdPath)
		if n := rep.failed(); n > 0 {
			fmt.Fprintf(os.Stderr, "runner: %d of %d multi-core runs failed\n", n, len(rep.Runs))
			os.Exit(1)
		}
		return
	}
	if *idle > 0 {
		rep := measureIdle(cfg, servers, *idle, notes)
		writeIdle(rep, *jsonPath, *mdPath)
		if n := rep.failed(); n > 0 {
			fmt.Fprintf(os.Stderr, "runner: %d of %d idle runs failed\n", n, len(rep.Runs))
			os.Exit(1)
		}
		return
	}
	if *syscalls {
		rep := countSyscalls(cfg, servers, notes)
		writeSyscalls(rep, *jsonPath, *mdPath)
		if n := rep.failed(); n > 0 {
			fmt.Fprintf(os.Stderr, "runner: %d of %d counts failed\n", n, len(rep.Runs))
			os.Exit(1)
		}
		return
	}
	start := time.Now()
	perRun := cfg.warmup + cfg.dur + 250*time.Millisecond
	fmt.Fprintf(os.Stderr, "runner: %d servers × %d workloads × %d rounds × ~%.1fs ≈ %.0fs\n",
		len(servers), len(cfg.workloads), cfg.rounds, perRun.Seconds(),
		(time.Duration(len(servers)*len(cfg.workloads)*cfg.rounds) * perRun).Seconds())

	order := runOrder(servers)
	var runs []runRecord
	done := map[string]int{} // rounds run per workload
	round := func(w string) {
		r := done[w]
		for i := range order {
			s := order[i]
			if r%2 == 1 {
				s = order[len(order)-1-i]
			}
			rec := runOne(cfg, s, w, r)
			if rec.timingOnly() && rec.OtherCores > cfg.quiet {
				fmt.Fprintf(os.Stderr, "runner: %s %s round %d stalled on a busy machine (%s); retrying once\n", s.Name, w, r+1, rec.Error)
				retry := runOne(cfg, s, w, r)
				retry.Retried = rec.Error
				rec = retry
			}
			if !rec.ok() {
				fmt.Fprintf(os.Stderr, "runner: %s %s round %d: %s\n", s.Name, w, r+1, rec.Error)
			}
			runs = append(runs, rec)
		}
		done[w]++
	}
	for _, w := range cfg.workloads {
		for done[w] < cfg.rounds {
			round(w)
		}
		fmt.Fprintf(os.Stderr, "runner: %s done (%.0fs)\n", w, time.Since(start).Seconds())
	}
	// Replace noisy rounds, the workload with the fewest quiet rounds (then
	// the fewest rounds) first, up to twice the planned rounds each, while a
	// round fits in the budget.
	for {
		next, fewest := "", cfg.rounds
		for _, w := range cfg.workloads {
			quiet := done[w] - len(noisyRounds(runs, w, cfg.quiet))
			if done[w] >= 2*cfg.rounds || quiet >= cfg.rounds {
				continue
			}
			if next == "" || quiet < fewest || (quiet == fewest && done[w] < done[next]) {
				next, fewest = w, quiet
			}
		}
		if next == "" {
			break
		}
		perRound := time.Since(start) / time.Duration(len(runs)) * time.Duration(len(servers))
		if time.Since(start)+perRound > *budget {
			fmt.Fprintf(os.Stderr, "runner: noisy rounds remain (%s has %d quiet of %d); no time left in the %v budget\n",
				next, fewest, cfg.rounds, *budget)
			break
		}
		fmt.Fprintf(os.Stderr, "runner: %s: %d quiet round(s) of %d; extra round %d\n", next, fewest, cfg.rounds, done[next]+1)
		round(next)
	}

	rep := summarise(cfg, servers, runs)
	rep.Meta.Notes = append(notes, rep.Meta.Notes...)
	rep.Meta.Seconds = time.Since(start).Seconds()
	write(rep, *jsonPath, *svgPath, *mdPath)
	if n := rep.failedRuns(); n > 0 {
		fmt.Fprintf(os.Stderr, "runner: %d of %d runs failed\n", n, len(runs))
		os.Exit(1)
	}
}

// write prints the markdown report and writes the JSON, SVG and markdown files,
// making their directories (out/ by default) as needed.
func write(rep *report, jsonPath, svgPath, mdPath string) {
	md := rep.markdown()
	fmt.Print(md)
	if mdPath != "" {
		writeFile(mdPath, []byte(md))
	}
	if jsonPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		writeFile(jsonPath, append(b, '\n'))
	}
	if svgPath != "" {
		writeFile(svgPath, []byte(rep.svg()))
	}
}

func writeFile(path string, b []byte) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		fatal(err)
	}
}

// reread summarises again the runs of an earlier results.json, with the
// settings it was made with, except a load-bound threshold other than 0.
func reread(path string, saturated float64) (*report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var old report
	if err := json.Unmarshal(b, &old); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m := old.Meta
	cfg := config{rounds: m.Rounds, dur: time.Duration(m.DurationS * float64(time.Second)),
		warmup: time.Duration(m.WarmupS * float64(time.Second)), connectors: m.Conns,
		workloads: old.Workloads, quiet: m.Quiet, saturated: m.Saturated}
	switch {
	case saturated > 0:
		cfg.saturated = saturated
	case cfg.saturated == 0: // a file from before the load-bound marks
		cfg.saturated = defaultSaturated
	}
	for i := range old.Runs {
		old.Runs[i].Dropped = false // summarise decides again
	}
	rep := summarise(cfg, names(old.Servers), old.Runs)
	notes := rep.Meta.Notes
	rep.Meta = m
	rep.Meta.Saturated = cfg.saturated
	rep.Meta.Notes = nil
	for _, n := range m.Notes { // keep the notes summarise does not make
		if strings.HasPrefix(n, "skip:") || strings.HasPrefix(n, "note:") {
			rep.Meta.Notes = append(rep.Meta.Notes, n)
		}
	}
	rep.Meta.Notes = append(rep.Meta.Notes, notes...)
	return rep, nil
}

func names(ss []string) []server {
	out := make([]server, len(ss))
	for i, s := range ss {
		out[i] = server{Name: s}
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "runner: %v\n", err)
	os.Exit(1)
}

// runOrder puts each server next to the one its ratio is taken against;
// servers it does not know keep their place at the end.
func runOrder(servers []server) []server {
	rank := map[string]int{}
	for i, name := range []string{"echo-bufferevent-nopoll", "cecho", "echo-bufferevent", "crawecho", "echo-event", "echo-nopoll", "goecho", "echo", "gnetecho", "ckv-again", "ckv", "kv"} {
		rank[name] = i + 1
	}
	order := slices.Clone(servers)
	slices.SortStableFunc(order, func(a, b server) int {
		ra, rb := rank[a.Name], rank[b.Name]
		if ra == 0 {
			ra = len(rank) + 1
		}
		if rb == 0 {
			rb = len(rank) + 1
		}
		return ra - rb
	})
	return order
}

// benchServers are the servers `make bench` runs by default.
var benchServers = []string{"cecho", "crawecho", "goecho", "gnetecho", "echo-bufferevent", "echo-bufferevent-nopoll", "echo-event", "echo", "echo-nopoll"}

// catalog is every server the runner knows; the echo ones are the
// library's cmd/echo, kv is its cmd/kv.
var catalog = []server{
	{Name: "cecho", Bin: "cecho"},
	{Name: "crawecho", Bin: "crawecho"},
	{Name: "goecho", Bin: "goecho"},
	{Name: "gnetecho", Bin: "gnetecho"},
	{Name: "echo-bufferevent", Bin: "echo", Args: []string{"-engine", "bufferevent"}},
	{Name: "echo-bufferevent-nopoll", Bin: "echo", Args: []string{"-engine", "bufferevent", "-busy-poll", "0"}},
	{Name: "echo-event", Bin: "echo", Args: []string{"-engine", "event"}},
	{Name: "echo", Bin: "echo"},
	{Name: "echo-nopoll", Bin: "echo", Args: []string{"-busy-poll", "0"}},
	{Name: "ckv", Bin: "ckv"},
	{Name: "ckv-again", Bin: "ckv"},
	{Name: "kv", Bin: "kv"},
}

// chooseServers lists the servers to run: only, or else defaults. The
// library's echo servers count only once its source exists; then its binary
// must be there too.
func chooseServers(binDir, cmdEcho string, defaults, only []string) ([]server, []string, error) {
	st, err := os.Stat(cmdEcho)
	haveEcho := err == nil && st.IsDir()
	var servers, skipped []server
	names := defaults
	if len(only) > 0 {
		names = only
	}
	for _, name := range names {
		i := slices.IndexFunc(catalog, func(s server) bool { return s.Name == name })
		switch {
		case i < 0 || (!haveEcho && catalog[i].Bin == "echo" && len(only) > 0):
			return nil, nil, fmt.Errorf("-servers: unknown or unavailable server %q", name)
		case !haveEcho && catalog[i].Bin == "echo":
			skipped = append(skipped, catalog[i])
		default:
			s := catalog[i]
			s.Bin = filepath.Join(binDir, s.Bin)
			if _, err := os.Stat(s.Bin); err != nil {
				return nil, nil, fmt.Errorf("%s: %w (run make -C bench build)", s.Name, err)
			}
			servers = append(servers, s)
		}
	}
	var notes []string
	if len(skipped) > 0 {
		var list []string
		for _, s := range skipped {
			list = append(list, s.Name)
		}
		notes = append(notes, fmt.Sprintf("skip: %s does not exist yet; %s are not benchmarked", cmdEcho, strings.Join(list, ", ")))
	}
	return servers, notes, nil
}

// pinning puts servers on CPU 0 and the load on CPU 1 when there are two
// CPUs and taskset; otherwise it says why it does not.
func pinning() (srv, load []string, notes []string) {
	if _, err := exec.LookPath("taskset"); err != nil {
		return nil, nil, []string{"note: taskset not found; nothing is pinned"}
	}
	if runtime.NumCPU() < 2 {
		return []string{"taskset", "-c", "0"}, []string{"taskset", "-c", "0"},
			[]string{"note: one CPU only; server and load share CPU 0"}
	}
	return []string{"taskset", "-c", "0"}, []string{"taskset", "-c", "1"}, nil
}

// current is the server process running now, for the signal handler.
var current struct {
	sync.Mutex
	cmd *exec.Cmd
}

func stopOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-ch
		current.Lock()
		if current.cmd != nil && current.cmd.Process != nil {
			current.cmd.Process.Kill()
		}
		current.Unlock()
		fmt.Fprintf(os.Stderr, "runner: %v: stopped\n", sig)
		os.Exit(130)
	}()
}

// listening ends a server's first line before its address: "echo:
// listening on HOST:PORT" from the echo servers, "kv: listening on …" from
// cmd/kv.
const listening = ": listening on "

// listeningAddr returns the address of a listening line.
func listeningAddr(line string) (string, bool) {
	name, addr, ok := strings.Cut(line, listening)
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return "", false
	}
	return strings.TrimSpace(addr), true
}

// runOne starts s, loads it with workload w, and stops it.
func runOne(cfg config, s server, w string, round int) (rec runRecord) {
	rec = runRecord{Server: s.Name, Workload: w, Round: round + 1}
	p, err := startServer(cfg, s)
	if err != nil {
		rec.Error = err.Error()
		return rec
	}
	res, m, err := measuredLoad(cfg, p, w)
	rec.Result = res
	if m.wall > 0 {
		rec.LoadBusy = m.load.Seconds() / m.wall.Seconds()
		rec.OtherCores = max(0, (m.machine-m.server-m.load).Seconds()/m.wall.Seconds())
	}
	if res.OpsAll > 0 {
		rec.ServerCPUus = m.server.Seconds() * 1e6 / float64(res.OpsAll)
	}
	if err := p.stop(err); err != nil {
		rec.Error = err.Error()
	}
	return rec
}

// serverProc is a server that printed its listening line.
type serverProc struct {
	cmd        *exec.Cmd
	addr       string
	extra      bytes.Buffer // stderr after the listening line, for errors
	stderrDone chan struct{}
}

// startServer starts s pinned as cfg says, with port 0, and waits for its
// listening line. The caller stops it.
func startServer(cfg config, s server) (*serverProc, error) {
	argv := append(append(append([]string{}, cfg.pinServer...), s.Bin), s.Args...)
	argv = append(argv, "0")
	cmd := exec.Command(argv[0], argv[1:]...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	current.Lock()
	err = cmd.Start()
	current.cmd = cmd
	current.Unlock()
	if err != nil {
		return nil, fmt.Errorf("start: %v", err)
	}

	// Read stderr to its end: the listening line first, the rest kept for
	// the report if the server misbehaves.
	p := &serverProc{cmd: cmd, stderrDone: make(chan struct{})}
	addrCh := make(chan string, 1)
	go func() {
		defer close(p.stderrDone)
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if addr, ok := listeningAddr(line); ok && !sent {
				addrCh <- addr
				sent = true
				continue
			}
			if p.extra.Len() < 4096 {
				p.extra.WriteString(line + "\n")
			}
		}
		if !sent {
			close(addrCh)
		}
	}()
	select {
	case a, ok := <-addrCh:
		if !ok {
			return nil, p.stop(errors.New("server exited without a listening line"))
		}
		p.addr = a
	case <-time.After(5 * time.Second):
		return nil, p.stop(errors.New("no listening line within 5s"))
	}
	return p, nil
}

// stop stops the server (stopServer) and tells why the run failed: runErr,
// else a failure to stop, followed by the server's stderr; nil if neither.
func (p *serverProc) stop(runErr error) error {
	err := runErr
	if stopErr := stopServer(p.cmd, p.stderrDone); stopErr != nil && err == nil {
		err = stopErr
	}
	// stopServer has drained stderr: extra is no longer written.
	if err != nil && p.extra.Len() > 0 {
		err = fmt.Errorf("%v; server stderr: %s", err, strings.TrimSpace(p.extra.String()))
	}
	return err
}

// ticks is Linux's USER_HZ, the unit of /proc CPU times.
const ticks = time.Second / 100

// machineCPU is the time all CPUs spent in user, nice and system mode so far.
// Interrupt time is left out, as it is from a process's times.
func machineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: unexpected format")
	}
	var sum int64
	for _, field := range f[1:4] { // user nice system
		var v int64
		if _, err := fmt.Sscan(field, &v); err != nil {
			return 0, err
		}
		sum += v
	}
	return time.Duration(sum) * ticks, nil
}

// processCPU is the CPU time of every thread of pid so far, exited ones
// included, in ns: the kernel's process CPU-time clock (clock_gettime with
// the clock id clock_getcpuclockid gives, CPUCLOCK_SCHED), which /proc's
// 10 ms ticks would round.
func processCPU(pid int) (time.Duration, error) {
	if pid <= 0 || pid > 1<<22 { // PID_MAX_LIMIT; a clockid_t is 32 bits
		return 0, fmt.Errorf("CPU clock of process %d: no such pid", pid)
	}
	clock := uintptr(^pid<<3 | 2) // MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clock, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, fmt.Errorf("CPU clock of process %d: %w", pid, errno)
	}
	return time.Duration(ts.Nano()), nil
}

// measured is what a run's held window cost: the CPU time of the server,
// of the load generator and of the whole machine, and how long it lasted.
type measured struct {
	server, load, machine, wall time.Duration
}

// measuredLoad runs bin/loadgen -hold against p with workload w and reads
// the CPU clocks just before the load goes and just after the window's ops
// are done: the connections' setup and teardown, and the processes'
// start, are outside the figures, as they are outside ops_all.
func measuredLoad(cfg config, p *serverProc, w string) (loadresult.Result, measured, error) {
	var m measured
	res, err := heldLoad(cfg, p.addr, w, func(loadPID int, window func() error) error {
		type reading struct {
			server, load, machine time.Duration
			at                    time.Time
		}
		read := func() (r reading, err error) {
			r.at = time.Now()
			var errs [3]error
			r.server, errs[0] = processCPU(p.cmd.Process.Pid)
			r.load, errs[1] = processCPU(loadPID)
			r.machine, errs[2] = machineCPU()
			return r, errors.Join(errs[:]...)
		}
		r0, err := read()
		if err != nil {
			return err
		}
		if err := window(); err != nil {
			return err
		}
		r1, err := read()
		if err != nil {
			return err
		}
		m = measured{server: r1.server - r0.server, load: r1.load - r0.load, machine: r1.machine - r0.machine, wall: r1.at.Sub(r0.at)}
		return nil
	})
	return res, m, err
}

// loadLimit bounds one load generator run: 1000 connects plus slack.
func loadLimit(cfg config) time.Duration { return cfg.warmup + cfg.dur + 20*time.Second }

// loadArgv is the pinned load generator's command line for workload w.
func loadArgv(cfg config, addr, w string, more ...string) []string {
	argv := append(append([]string{}, cfg.pinLoad...), filepath.Join(cfg.binDir, "loadgen"),
		"-addr", addr, "-w", w, "-d", cfg.dur.String(), "-warmup", cfg.warmup.String(),
		"-c", fmt.Sprint(cfg.connectors))
	return append(argv, more...)
}

// loadOutcome reads the load generator's JSON line from its stdout and says
// whether the run failed.
func loadOutcome(stdout, stderr string, runErr error) (res loadresult.Result, err error) {
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &res); jerr != nil {
		return res, fmt.Errorf("loadgen: %v; stderr: %s", firstErr(runErr, jerr), strings.TrimSpace(stderr))
	}
	if runErr != nil || res.Errors > 0 || res.Stalls > 0 {
		if res.FirstError != "" {
			return res, fmt.Errorf("loadgen: %d errors, %d stalls, first: %s", res.Errors, res.Stalls, res.FirstError)
		}
		return res, fmt.Errorf("loadgen: %v; stderr: %s", runErr, strings.TrimSpace(stderr))
	}
	return res, nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// stopServer sends SIGTERM and expects exit status 0 within 2 s, as
// cmd/echo promises; otherwise it kills the server and says so.
func stopServer(cmd *exec.Cmd, stderrDone <-chan struct{}) error {
	defer func() {
		current.Lock()
		current.cmd = nil
		current.Unlock()
	}()
	if cmd.ProcessState != nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() {
		<-stderrDone // Wait closes the pipe; drain it first
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("server on SIGTERM: %v (want exit status 0)", err)
		}
		return nil
	case <-time.After(2 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return errors.New("server did not exit within 2s of SIGTERM; killed")
	}
}

// median of xs (which it sorts); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}
