package main

// The -syscalls mode: how many system calls each server makes per op. For
// each server and workload it starts the server as a benchmark run does
// (startServer), lets bin/loadgen -hold open its connections, attaches
// `strace -c -f -p PID`, tells the load generator to go, and detaches once
// the window's ops (and those in flight when it closed) are done, before any
// connection closes. Each count over the load generator's ops_all is that
// syscall's calls per op. strace slows the server down many times over,
// which changes ops/s and anything that depends on time (how many events
// one epoll_wait returns, the Go runtime's timers), but not what a server
// does for one message.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/evlistener/evlistener/bench/internal/loadresult"
)

// syscallServers are the servers -syscalls counts by default, each design
// next to its C reference.
var syscallServers = []string{"crawecho", "echo-nopoll", "echo", "cecho", "echo-bufferevent-nopoll", "echo-bufferevent", "goecho", "gnetecho"}

// syscallCount is what strace -c counted for one syscall.
type syscallCount struct {
	Calls  int64 `json:"calls"`
	Errors int64 `json:"errors,omitempty"` // calls that returned an error (EAGAIN, ECONNRESET, …)
}

// syscallRun is one server × workload counted under strace.
type syscallRun struct {
	Server   string `json:"server"`
	Workload string `json:"workload"`
	// Ops is the load generator's ops_all: every message (or connection)
	// the server served while strace counted.
	Ops   uint64                  `json:"ops"`
	Calls map[string]syscallCount `json:"calls"`
	// Load is the load generator's line; its ops/s are strace's, not the
	// server's.
	Load  loadresult.Result `json:"load"`
	Error string            `json:"error,omitempty"`
}

type syscallReport struct {
	machine
	Strace    string       `json:"strace"`
	Pinning   string       `json:"pinning"`
	DurationS float64      `json:"duration_s"`
	Conns     int          `json:"accept_connectors"`
	Notes     []string     `json:"notes,omitempty"`
	Servers   []string     `json:"servers"`
	Workloads []string     `json:"workloads"`
	Runs      []syscallRun `json:"runs"`
}

// countSyscalls counts every server on every workload once.
func countSyscalls(cfg config, servers []server, notes []string) *syscallReport {
	rep := &syscallReport{
		machine:   thisMachine(),
		Strace:    straceVersion(),
		Pinning:   pinDescription(cfg) + ", strace unpinned",
		DurationS: cfg.dur.Seconds(),
		Conns:     cfg.connectors,
		Notes:     notes,
		Workloads: cfg.workloads,
	}
	for _, s := range servers {
		rep.Servers = append(rep.Servers, s.Name)
	}
	start := time.Now()
	for _, w := range cfg.workloads {
		for _, s := range servers {
			r := countOne(cfg, s, w)
			if r.Error != "" {
				fmt.Fprintf(os.Stderr, "runner: %s %s: %s\n", s.Name, w, r.Error)
			}
			rep.Runs = append(rep.Runs, r)
		}
		fmt.Fprintf(os.Stderr, "runner: %s counted (%.0fs)\n", w, time.Since(start).Seconds())
	}
	return rep
}

func straceVersion() string {
	out, err := exec.Command("strace", "-V").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// countOne counts s's syscalls over one held load generator run.
func countOne(cfg config, s server, w string) (r syscallRun) {
	r = syscallRun{Server: s.Name, Workload: w}
	err := serve(cfg, s, func(p *serverProc) (err error) {
		r.Calls, r.Load, err = heldRun(cfg, p, w)
		r.Ops = r.Load.OpsAll
		return err
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// heldRun runs bin/loadgen -hold against p and strace on p for the held
// part. Every wait is bounded.
func heldRun(cfg config, p *serverProc, w string) (map[string]syscallCount, loadresult.Result, error) {
	f, err := os.CreateTemp("", "strace-c-*.txt")
	if err != nil {
		return nil, loadresult.Result{}, err
	}
	f.Close()
	defer os.Remove(f.Name())
	res, err := heldLoad(cfg, p.addr, w, func(_ int, window func() error) error {
		return traced(p.cmd.Process.Pid, f.Name(), window)
	})
	if err != nil {
		return nil, res, err
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return nil, res, err
	}
	calls, err := parseStraceC(string(b))
	return calls, res, err
}

// traced runs window with `strace -c -f` attached to pid, its summary
// written to out.
func traced(pid int, out string, window func() error) error {
	tracer := exec.Command("strace", "-c", "-f", "-o", out, "-p", fmt.Sprint(pid))
	tracerOut, err := tracer.StderrPipe()
	if err != nil {
		return err
	}
	if err := tracer.Start(); err != nil {
		return fmt.Errorf("strace: %v", err)
	}
	var traceErr bytes.Buffer
	traceLines := lines(tracerOut, &traceErr)
	stopTracer := func() error {
		_ = tracer.Process.Signal(syscall.SIGINT) // detach, write the summary
		done := make(chan error, 1)
		go func() {
			for range traceLines {
			}
			done <- tracer.Wait()
		}()
		select {
		case err := <-done:
			// strace ends on SIGINT by raising it again, summary written.
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGINT {
					return nil
				}
			}
			return err
		case <-time.After(5 * time.Second):
			_ = tracer.Process.Kill()
			<-done
			return errors.New("strace did not exit within 5s of SIGINT; killed")
		}
	}
	// strace says "Process PID attached" once it holds every thread.
	if err := waitFor(traceLines, fmt.Sprintf("strace: Process %d attached", pid), 5*time.Second); err != nil {
		_ = stopTracer()
		return fmt.Errorf("strace: %v: %s", err, strings.TrimSpace(traceErr.String()))
	}
	waitErr := window()
	if err := stopTracer(); err != nil && waitErr == nil {
		waitErr = fmt.Errorf("strace: %v: %s", err, strings.TrimSpace(traceErr.String()))
	}
	return waitErr
}

// parseStraceC reads strace -c's table: "% time seconds usecs/call calls
// errors syscall" rows, errors blank when there were none, and a total row.
func parseStraceC(text string) (map[string]syscallCount, error) {
	calls := map[string]syscallCount{}
	header := false
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "%":
			header = true
			continue
		case !header || len(f) < 5 || len(f) > 6 || strings.HasPrefix(f[0], "---"):
			continue
		}
		name := f[len(f)-1]
		if name == "total" {
			continue
		}
		n, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("strace -c: %q: calls: %v", line, err)
		}
		c := syscallCount{Calls: n}
		if len(f) == 6 {
			if c.Errors, err = strconv.ParseInt(f[4], 10, 64); err != nil {
				return nil, fmt.Errorf("strace -c: %q: errors: %v", line, err)
			}
		}
		calls[name] = c
	}
	if !header {
		return nil, errors.New("strace -c: no summary table")
	}
	return calls, nil
}

// syscallColumns are the report's columns: the syscalls an echo server makes
// per message, each with the names that do the same job. The rest are
// "others".
var syscallColumns = []struct {
	head  string
	names []string
}{
	{"read/readv/recvfrom", []string{"read", "readv", "recvfrom", "recvmsg", "recvmmsg"}},
	{"write/writev/sendto", []string{"write", "writev", "sendto", "sendmsg", "sendmmsg"}},
	{"epoll_wait", []string{"epoll_wait", "epoll_pwait", "epoll_pwait2"}},
	{"epoll_ctl", []string{"epoll_ctl"}},
	{"accept4", []string{"accept4", "accept"}},
	{"futex", []string{"futex"}},
}

// perOp is one run's calls per op by syscall name; nil if it failed.
func (r *syscallRun) perOp() map[string]struct{ calls, errors float64 } {
	if r.Error != "" || r.Ops == 0 {
		return nil
	}
	out := map[string]struct{ calls, errors float64 }{}
	for name, c := range r.Calls {
		out[name] = struct{ calls, errors float64 }{float64(c.Calls) / float64(r.Ops), float64(c.Errors) / float64(r.Ops)}
	}
	return out
}

func (rep *syscallReport) run(s, w string) *syscallRun {
	for i := range rep.Runs {
		if rep.Runs[i].Server == s && rep.Runs[i].Workload == w {
			return &rep.Runs[i]
		}
	}
	return nil
}

// markdown is one table per workload: calls per op, in total and by column.
func (rep *syscallReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## System calls per op\n\n")
	fmt.Fprintf(&b, "`strace -c -f -p PID` on each server over one `loadgen -hold` run of %.1f s (connections opened before strace attaches, closed after it detaches); "+
		"calls ÷ the ops done while it counted (an op: one echoed message; for accept, one connection; for kv, one command). %s; Linux %s, %s, %s, %s.\n",
		rep.DurationS, rep.Pinning, rep.Kernel, rep.Strace, rep.Go, rep.Date)
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	for _, w := range rep.Workloads {
		fmt.Fprintf(&b, "\n### %s\n\n| server | ops counted | total |", w)
		align := "|---|---:|---:|"
		for _, c := range syscallColumns {
			b.WriteString(" " + c.head + " |")
			align += "---:|"
		}
		b.WriteString(" others |\n" + align + "---|\n")
		for _, s := range rep.Servers {
			r := rep.run(s, w)
			per := r.perOp()
			if per == nil {
				fmt.Fprintf(&b, "| %s | failed |%s\n", s, strings.Repeat(" – |", len(syscallColumns)+2))
				continue
			}
			total := 0.0
			for _, c := range per {
				total += c.calls
			}
			fmt.Fprintf(&b, "| %s | %d | %s |", s, r.Ops, fmtPerOp(total))
			seen := map[string]bool{}
			for _, col := range syscallColumns {
				var calls, errs float64
				for _, name := range col.names {
					calls += per[name].calls
					errs += per[name].errors
					seen[name] = true
				}
				cell := fmtPerOp(calls)
				if errs >= 0.005 {
					cell += fmt.Sprintf(" (%s failed)", fmtPerOp(errs))
				}
				b.WriteString(" " + cell + " |")
			}
			b.WriteString(" " + others(per, seen) + " |\n")
		}
	}
	b.WriteString("\nA failed call is one that returned an error: for a read on a non-blocking socket, EAGAIN (or, in accept, ECONNRESET from the load generator's RST). " +
		"Counts that depend on time rather than on the protocol (futex, nanosleep, and how many events one epoll_wait returns) shift with strace's slowdown.\n\n")
	return b.String()
}

// others sums the syscalls not in a column and names the largest three.
func others(per map[string]struct{ calls, errors float64 }, seen map[string]bool) string {
	var names []string
	total := 0.0
	for name, c := range per {
		if !seen[name] {
			names = append(names, name)
			total += c.calls
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if per[names[i]].calls != per[names[j]].calls {
			return per[names[i]].calls > per[names[j]].calls
		}
		return names[i] < names[j]
	})
	var top []string
	for _, name := range names[:min(3, len(names))] {
		if per[name].calls >= 0.005 {
			top = append(top, name+" "+fmtPerOp(per[name].calls))
		}
	}
	if len(top) == 0 {
		return fmtPerOp(total)
	}
	return fmtPerOp(total) + ": " + strings.Join(top, ", ")
}

// fmtPerOp shows two decimals, three below 0.01 so that rare calls do not
// read as none.
func fmtPerOp(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 0.01:
		return fmt.Sprintf("%.3f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// failed counts the runs that did not count.
func (rep *syscallReport) failed() (int, int) {
	return failedOf(rep.Runs, func(r *syscallRun) string { return r.Error })
}
