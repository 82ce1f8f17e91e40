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
	spin       bool // each server beside a spinner (spin.go)
}

// options is the command line.
type options struct {
	config
	only, cmdEcho             string
	jsonPath, svgPath, mdPath string
	from                      string
	budget                    time.Duration
	syscalls                  bool
	loops, idle               int
	set                       map[string]bool // the flags given
}

func parseFlags() *options {
	o := &options{set: map[string]bool{}}
	flag.StringVar(&o.binDir, "bin", "bin", "directory holding the servers and loadgen")
	flag.IntVar(&o.rounds, "rounds", 6, "interleaved rounds per workload (even: as many forward as backward)")
	flag.DurationVar(&o.dur, "d", 600*time.Millisecond, "measuring window per run")
	flag.DurationVar(&o.warmup, "warmup", 200*time.Millisecond, "warm-up per run, not measured")
	flag.IntVar(&o.connectors, "c", 4, "concurrent connectors in the accept workload")
	workloads := flag.String("workloads", "1x64B,50x64B,50x16KiB,1000x64B,accept", "comma-separated workloads")
	flag.StringVar(&o.only, "servers", "", "comma-separated subset of servers (default: all available)")
	flag.StringVar(&o.cmdEcho, "cmd-echo", "../cmd/echo", "source directory of the library's echo server")
	// Out of git's sight: the committed results.svg changes only when asked
	// (make bench REFRESH=1).
	flag.StringVar(&o.jsonPath, "json", "out/results.json", "where to write all results ('' to skip)")
	flag.StringVar(&o.svgPath, "svg", "out/results.svg", "where to write the chart ('' to skip)")
	flag.Float64Var(&o.quiet, "quiet", 0.25, "a round in which other processes kept more CPUs than this busy is noisy, and is replaced while the budget allows")
	flag.Float64Var(&o.saturated, "saturated", defaultSaturated, "mark a ratio load-bound where either server's median load core busy in its rounds is at least this (0 to 1)")
	flag.DurationVar(&o.budget, "budget", 180*time.Second, "wall-clock time for measuring; replacement rounds must fit in it")
	flag.StringVar(&o.from, "from", "", "run nothing: redo the report from the runs in this results.json")
	flag.StringVar(&o.mdPath, "md", "", "also write the markdown report here (with -syscalls: out/syscalls.md)")
	flag.BoolVar(&o.syscalls, "syscalls", false, "count each server's system calls per op under strace -c, once per server and workload, instead of benchmarking; -json defaults to out/syscalls.json")
	flag.IntVar(&o.loops, "loops", 0, "instead of the benchmark, the multi-core mode: cmd/echo and gnetecho with this many loops and goecho, against as many load generators, -rounds times per workload; -json defaults to out/multicore.json")
	flag.BoolVar(&o.spin, "spin", false, "run each server beside a spinner at idle priority on its CPU, so that the CPU never halts while the server sleeps: the ratios then leave out what waking a halted CPU costs each server (benchmark only)")
	flag.IntVar(&o.idle, "idle", 0, "instead of benchmarking, measure each server's resident memory per idle connection with this many connections open, -rounds times; -json defaults to out/idle.json")
	flag.Parse()
	if flag.NArg() != 0 || o.rounds < 1 || o.rounds > 50 || o.dur <= 0 || o.dur > time.Minute ||
		o.warmup < 0 || o.warmup > time.Minute || o.connectors < 1 || o.connectors > 256 ||
		o.saturated < 0 || o.saturated > 1 {
		fmt.Fprintln(os.Stderr, "runner: bad flags: want 1-50 rounds, a duration up to 1m, 1-256 connectors, -saturated 0 to 1")
		flag.Usage()
		os.Exit(2)
	}
	o.workloads = splitList(*workloads)
	flag.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if o.spin && (o.loops > 0 || o.idle > 0 || o.syscalls || o.from != "") {
		fmt.Fprintln(os.Stderr, "runner: -spin is for the benchmark, not with -loops, -idle, -syscalls or -from")
		os.Exit(2)
	}
	return o
}

// mode is what the runner measures: the benchmark, or instead the -loops,
// -idle or -syscalls mode.
type mode struct {
	servers   []string // run unless -servers names others
	json, md  string   // -json's and -md's defaults; "" keeps the flag's
	workloads []string // run unless -workloads names others; nil: the flag's
	// noWarmup: the load generator holds (-hold), and what is measured
	// starts after its setup instead.
	noWarmup bool
	runs     string // what its runs are called in "N of M runs failed"
	measure  func(cfg config, servers []server, notes []string) result
}

// mode is the mode the flags ask for: -loops, else -idle, else -syscalls,
// else the benchmark.
func (o *options) mode() mode {
	switch {
	case o.loops > 0:
		return mode{servers: benchServers, json: "out/multicore.json", md: "out/multicore.md",
			workloads: []string{"50x64B", "1000x64B", "accept"}, runs: "multi-core runs",
			measure: func(cfg config, _ []server, notes []string) result { return measureMulti(cfg, o.loops, notes) }}
	case o.idle > 0:
		return mode{servers: idleServers, json: "out/idle.json", md: "out/idle.md", noWarmup: true, runs: "idle runs",
			measure: func(cfg config, servers []server, notes []string) result {
				return measureIdle(cfg, servers, o.idle, notes)
			}}
	case o.syscalls:
		return mode{servers: syscallServers, json: "out/syscalls.json", md: "out/syscalls.md", noWarmup: true, runs: "counts",
			measure: func(cfg config, servers []server, notes []string) result { return countSyscalls(cfg, servers, notes) }}
	}
	return mode{servers: benchServers, runs: "runs",
		measure: func(cfg config, servers []server, notes []string) result {
			return benchmark(cfg, servers, notes, o.budget)
		}}
}

func main() {
	spinIfAsked()
	o := parseFlags()
	if o.from != "" {
		threshold := 0.0 // the file's
		if o.set["saturated"] {
			threshold = o.saturated
		}
		rep, err := reread(o.from, threshold)
		if err != nil {
			fatal(err)
		}
		write(rep, o.jsonPath, o.svgPath, o.mdPath)
		return
	}

	m, cfg := o.mode(), o.config
	if m.workloads != nil && !o.set["workloads"] {
		cfg.workloads = m.workloads
	}
	if m.json != "" && !o.set["json"] {
		o.jsonPath = m.json
	}
	if m.md != "" && !o.set["md"] {
		o.mdPath = m.md
	}
	if m.noWarmup {
		cfg.warmup = 0
	}
	servers, notes, err := chooseServers(cfg.binDir, o.cmdEcho, m.servers, splitList(o.only))
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
	rep := m.measure(cfg, servers, notes)
	write(rep, o.jsonPath, o.svgPath, o.mdPath)
	if n, of := rep.failed(); n > 0 {
		fmt.Fprintf(os.Stderr, "runner: %d of %d %s failed\n", n, of, m.runs)
		os.Exit(1)
	}
}

// result is what a mode measured.
type result interface {
	markdown() string
	failed() (n, of int) // the runs that failed, of all
}

// write prints rep's markdown report and writes it as markdown, as JSON
// and, the benchmark's, as the SVG chart, to the paths that are not "",
// making their directories (out/ by default) as needed.
func write(rep result, jsonPath, svgPath, mdPath string) {
	md := rep.markdown()
	fmt.Print(md)
	if mdPath != "" {
		writeFile(mdPath, []byte(md))
	}
	if jsonPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		writeFile(jsonPath, append(b, '\n'))
	}
	if chart, ok := rep.(interface{ svg() string }); ok && svgPath != "" {
		writeFile(svgPath, []byte(chart.svg()))
	}
}

// failedOf counts the runs for which errOf is not "", and all runs.
func failedOf[R any](runs []R, errOf func(*R) string) (n, of int) {
	for i := range runs {
		if errOf(&runs[i]) != "" {
			n++
		}
	}
	return n, len(runs)
}

// medianOf is the median of f's values over the runs f keeps, and how many
// it kept.
func medianOf[R any](runs []R, f func(*R) (v float64, keep bool)) (float64, int) {
	var xs []float64
	for i := range runs {
		if v, ok := f(&runs[i]); ok {
			xs = append(xs, v)
		}
	}
	return median(xs), len(xs)
}

// inRound is the order servers run in round r (from 0): as given, and
// backwards every other round, so that a machine whose speed drifts hits
// both sides of a ratio alike, first one way, then the other.
func inRound(servers []server, r int) []server {
	if r%2 == 0 {
		return servers
	}
	back := slices.Clone(servers)
	slices.Reverse(back)
	return back
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
	for i, name := range []string{"echo-bufferevent-nopoll", "cecho", "echo-bufferevent", "crawecho", "crawecho-go", "echo-event", "echo-nopoll", "goecho", "echo", "gnetecho", "ckv-again", "ckv", "kv"} {
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
var benchServers = []string{"cecho", "crawecho", "crawecho-go", "goecho", "gnetecho", "echo-bufferevent", "echo-bufferevent-nopoll", "echo-event", "echo", "echo-nopoll"}

// catalog is every server the runner knows; the echo ones are the
// library's cmd/echo, kv is its cmd/kv.
var catalog = []server{
	{Name: "cecho", Bin: "cecho"},
	{Name: "crawecho", Bin: "crawecho"},
	// crawecho's C in a Go process (crawechogo): what being a Go
	// process costs a C server, apart from the binding.
	{Name: "crawecho-go", Bin: "crawechogo"},
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

// serve starts s, runs f on it and stops it, and tells why the run failed,
// if it did (serverProc.stop): f's error or the server's.
func serve(cfg config, s server, f func(p *serverProc) error) error {
	p, err := startServer(cfg, s)
	if err != nil {
		return err
	}
	return p.stop(f(p))
}

// serverProc is a server that printed its listening line.
type serverProc struct {
	cmd        *exec.Cmd
	spinner    *exec.Cmd // with -spin
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
	var spinner *exec.Cmd
	if cfg.spin {
		if spinner, err = startSpinner(cfg.pinServer); err != nil {
			return nil, err
		}
	}
	current.Lock()
	err = cmd.Start()
	current.cmd = cmd
	current.Unlock()
	if err != nil {
		stopSpinner(spinner)
		return nil, fmt.Errorf("start: %v", err)
	}

	// Read stderr to its end: the listening line first, the rest kept for
	// the report if the server misbehaves.
	p := &serverProc{cmd: cmd, spinner: spinner, stderrDone: make(chan struct{})}
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
	stopSpinner(p.spinner)
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
