package main

// The -loops mode: servers on N cores against N load generators. cmd/echo
// runs -loops N (N event loops sharing the port), gnetecho -loops N (gnet's
// multicore mode), goecho as it is (Go's net, GOMAXPROCS from the cores it
// is pinned to). With at least 2N CPUs the server is pinned to CPUs 0..N-1
// and load generator i to CPU N+i; with fewer nothing is pinned and the
// report says so: the mode runs on any machine, and says how many cores it
// had. Each load generator opens its connections and holds (-hold); the
// server's CPU clock is read once all are connected, all are let go
// together, and read again once all have finished their window.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/evlistener/evlistener/bench/internal/loadresult"
)

// multiServers are the servers of -loops N, by name, with their arguments.
func multiServers(binDir string, n int) []server {
	loops := strconv.Itoa(n)
	return []server{
		{Name: "echo -loops " + loops, Bin: binDir + "/echo", Args: []string{"-loops", loops}},
		{Name: "echo -loops " + loops + " -busy-poll 0", Bin: binDir + "/echo", Args: []string{"-loops", loops, "-busy-poll", "0"}},
		{Name: "gnetecho -loops " + loops, Bin: binDir + "/gnetecho", Args: []string{"-loops", loops}},
		{Name: "goecho", Bin: binDir + "/goecho"},
	}
}

type multiRun struct {
	Server    string  `json:"server"`
	Workload  string  `json:"workload"`
	Round     int     `json:"round"`
	OpsPerSec float64 `json:"ops_per_sec"` // summed over the load generators
	CPUus     float64 `json:"server_cpu_us_per_op"`
	Error     string  `json:"error,omitempty"`
}

type multiReport struct {
	machine
	CPUs    int        `json:"cpus"`
	Loops   int        `json:"loops"`
	Pinning string     `json:"pinning"`
	Runs    []multiRun `json:"runs"`
	servers []string
	works   []string
}

// multiPinning pins the server to CPUs 0..n-1 and load generator i to CPU
// n+i when there are 2n CPUs and taskset.
func multiPinning(n int) (srv []string, load func(i int) []string, note string) {
	cpus := runtime.NumCPU()
	if cpus < 2*n {
		return nil, func(int) []string { return nil },
			fmt.Sprintf("%d CPUs, fewer than the %d that %d loops and %d load generators need: nothing pinned, server and load share the CPUs", cpus, 2*n, n, n)
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return nil, func(int) []string { return nil }, fmt.Sprintf("%d CPUs; taskset not found: nothing pinned", cpus)
	}
	return []string{"taskset", "-c", fmt.Sprintf("0-%d", n-1)},
		func(i int) []string { return []string{"taskset", "-c", strconv.Itoa(n + i)} },
		fmt.Sprintf("%d CPUs: server on CPUs 0-%d, load generator i on CPU %d+i", cpus, n-1, n)
}

// measureMulti runs each server on each workload, rounds times, interleaved.
func measureMulti(cfg config, n int, notes []string) *multiReport {
	srvPin, loadPin, note := multiPinning(n)
	rep := &multiReport{machine: thisMachine(),
		CPUs: runtime.NumCPU(), Loops: n, Pinning: strings.Join(append(notes, note), "; "), works: cfg.workloads}
	servers := multiServers(cfg.binDir, n)
	for _, s := range servers {
		rep.servers = append(rep.servers, s.Name)
	}
	cfg.pinServer = srvPin
	for _, w := range cfg.workloads {
		for r := range cfg.rounds {
			for _, s := range inRound(servers, r) {
				run := multiOne(cfg, s, w, n, loadPin)
				run.Round = r + 1
				if run.Error != "" {
					fmt.Fprintf(os.Stderr, "runner: %s %s round %d: %s\n", s.Name, w, r+1, run.Error)
				}
				rep.Runs = append(rep.Runs, run)
			}
		}
	}
	return rep
}

// multiOne starts s and n held load generators of workload w against it.
func multiOne(cfg config, s server, w string, n int, loadPin func(int) []string) (r multiRun) {
	r = multiRun{Server: s.Name, Workload: w}
	var (
		results []loadresult.Result
		cpu     time.Duration
	)
	err := serve(cfg, s, func(p *serverProc) (err error) {
		results, cpu, err = multiLoad(cfg, p, w, n, loadPin)
		return err
	})
	if err != nil {
		r.Error = err.Error()
		return r
	}
	var ops uint64
	for _, res := range results {
		r.OpsPerSec += res.OpsPerSec
		ops += res.OpsAll
	}
	if ops > 0 {
		r.CPUus = cpu.Seconds() * 1e6 / float64(ops)
	}
	return r
}

// multiLoad runs n held load generators of workload w against p, lets
// them go together once all are connected, and returns their results and
// p's CPU time from the go-ahead until all have finished their window.
func multiLoad(cfg config, p *serverProc, w string, n int, loadPin func(int) []string) ([]loadresult.Result, time.Duration, error) {
	pid := p.cmd.Process.Pid
	var (
		wg        sync.WaitGroup
		connected = make(chan struct{}, n)
		finished  = make(chan struct{}, n)
		goAhead   = make(chan struct{})
		results   = make([]loadresult.Result, n)
		errs      = make([]error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cfg
			c.pinLoad = loadPin(i)
			results[i], errs[i] = heldLoad(c, p.addr, w, func(_ int, window func() error) error {
				connected <- struct{}{}
				<-goAhead
				err := window()
				finished <- struct{}{}
				return err
			})
		}()
	}
	// Every generator either connects or fails; a failed one never sends.
	var cpu0, cpu1 time.Duration
	ok := true
	for range n {
		select {
		case <-connected:
		case <-time.After(loadLimit(cfg)):
			ok = false
		}
		if !ok {
			break
		}
	}
	if ok {
		cpu0, _ = processCPU(pid)
	}
	close(goAhead)
	if ok {
		for range n {
			<-finished
		}
		cpu1, _ = processCPU(pid)
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err == nil && !ok {
		err = errors.New("a load generator did not connect in time")
	}
	return results, cpu1 - cpu0, err
}

func (rep *multiReport) median(s, w string, f func(*multiRun) float64) (float64, int) {
	return medianOf(rep.Runs, func(r *multiRun) (float64, bool) {
		return f(r), r.Server == s && r.Workload == w && r.Error == ""
	})
}

func (rep *multiReport) failed() (int, int) {
	return failedOf(rep.Runs, func(r *multiRun) string { return r.Error })
}

func (rep *multiReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Multi-core: %d loops\n\n%s. %s, %s, %s. Ops/s summed over %d load generators; server CPU per op over the held window; medians of the rounds.\n\n",
		rep.Loops, rep.Pinning, rep.Kernel, rep.Go, rep.Date, rep.Loops)
	for _, t := range []struct {
		title string
		f     func(*multiRun) float64
		fmt   func(float64) string
	}{
		{"ops/s", func(r *multiRun) float64 { return r.OpsPerSec }, fmtOps},
		{"server CPU per op, µs", func(r *multiRun) float64 { return r.CPUus }, func(v float64) string { return fmt.Sprintf("%.1f", v) }},
	} {
		fmt.Fprintf(&b, "| %s | %s |\n|---|%s\n", t.title, strings.Join(rep.works, " | "), strings.Repeat("---:|", len(rep.works)))
		for _, s := range rep.servers {
			fmt.Fprintf(&b, "| %s |", s)
			for _, w := range rep.works {
				v, n := rep.median(s, w, t.f)
				if n == 0 {
					b.WriteString(" – |")
					continue
				}
				fmt.Fprintf(&b, " %s |", t.fmt(v))
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	if rep.CPUs < 2*rep.Loops {
		fmt.Fprintf(&b, "With %d CPUs for %d loops and %d load generators these figures say nothing about scaling: run it on a machine with at least %d.\n",
			rep.CPUs, rep.Loops, rep.Loops, 2*rep.Loops)
	}
	return b.String()
}
