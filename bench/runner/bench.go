package main

// The benchmark, the runner's default mode: every server on every workload,
// rounds times, interleaved (see the command's doc), noisy rounds replaced
// while the budget lasts, and the report of medians and ratios (report.go).

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/evlistener/evlistener/bench/internal/loadresult"
)

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

// benchmark runs every server on every workload, cfg.rounds times, then
// replaces noisy rounds while a round fits in budget, and summarises.
func benchmark(cfg config, servers []server, notes []string, budget time.Duration) *report {
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
		for _, s := range inRound(order, r) {
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
		if time.Since(start)+perRound > budget {
			fmt.Fprintf(os.Stderr, "runner: noisy rounds remain (%s has %d quiet of %d); no time left in the %v budget\n",
				next, fewest, cfg.rounds, budget)
			break
		}
		fmt.Fprintf(os.Stderr, "runner: %s: %d quiet round(s) of %d; extra round %d\n", next, fewest, cfg.rounds, done[next]+1)
		round(next)
	}

	rep := summarise(cfg, servers, runs)
	rep.Meta.Notes = append(notes, rep.Meta.Notes...)
	rep.Meta.Seconds = time.Since(start).Seconds()
	return rep
}

// runOne starts s, loads it with workload w, and stops it.
func runOne(cfg config, s server, w string, round int) (rec runRecord) {
	rec = runRecord{Server: s.Name, Workload: w, Round: round + 1}
	err := serve(cfg, s, func(p *serverProc) error {
		res, m, err := measuredLoad(cfg, p, w)
		rec.Result = res
		if m.wall > 0 {
			rec.LoadBusy = m.load.Seconds() / m.wall.Seconds()
			rec.OtherCores = max(0, (m.machine-m.server-m.load-m.spinner).Seconds()/m.wall.Seconds())
		}
		if res.OpsAll > 0 {
			rec.ServerCPUus = m.server.Seconds() * 1e6 / float64(res.OpsAll)
		}
		return err
	})
	if err != nil {
		rec.Error = err.Error()
	}
	return rec
}

// measured is what a run's held window cost: the CPU time of the server,
// of the load generator and of the whole machine, and how long it lasted.
type measured struct {
	server, load, machine, wall time.Duration
	spinner                     time.Duration // with -spin
}

// measuredLoad runs bin/loadgen -hold against p with workload w and reads
// the CPU clocks just before the load goes and just after the window's ops
// are done: the connections' setup and teardown, and the processes'
// start, are outside the figures, as they are outside ops_all.
func measuredLoad(cfg config, p *serverProc, w string) (loadresult.Result, measured, error) {
	var m measured
	res, err := heldLoad(cfg, p.addr, w, func(loadPID int, window func() error) error {
		type reading struct {
			server, load, machine, spinner time.Duration
			at                             time.Time
		}
		read := func() (r reading, err error) {
			r.at = time.Now()
			var errs [4]error
			r.server, errs[0] = processCPU(p.cmd.Process.Pid)
			r.load, errs[1] = processCPU(loadPID)
			r.machine, errs[2] = machineCPU()
			if p.spinner != nil {
				r.spinner, errs[3] = processCPU(p.spinner.Process.Pid)
			}
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
		m = measured{server: r1.server - r0.server, load: r1.load - r0.load, machine: r1.machine - r0.machine,
			spinner: r1.spinner - r0.spinner, wall: r1.at.Sub(r0.at)}
		return nil
	})
	return res, m, err
}
