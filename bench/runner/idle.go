package main

// The -idle mode: bytes of a server's resident memory per idle connection.
// For each server, rounds times: start it as a benchmark run does
// (startServer), read its resident set (VmRSS), let bin/loadgen -hold open
// N connections with one 1-byte echo each and hold them, read the resident
// set again, and divide the growth by N. The kernel's socket buffers are
// not in a process's resident set: this is the server's own memory per
// connection (its objects, libevent's, the Go heap and its slack).

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// idleServers are the servers -idle measures by default, each design next
// to its C reference.
var idleServers = []string{"crawecho", "echo-nopoll", "cecho", "echo-bufferevent-nopoll", "goecho", "gnetecho"}

// idlePairs are the ratios -idle reports: a server's bytes per connection
// over its C reference's (the target: at most 1.3).
var idlePairs = []struct{ Num, Den string }{
	{"echo-nopoll", "crawecho"},
	{"echo", "crawecho"},
	{"echo-bufferevent-nopoll", "cecho"},
	{"echo-bufferevent", "cecho"},
}

const idleTarget = 1.3

type idleRun struct {
	Server  string  `json:"server"`
	Round   int     `json:"round"`
	Conns   int     `json:"conns"`
	RSSKiB0 int64   `json:"rss_kib_before"`
	RSSKiB1 int64   `json:"rss_kib_held"`
	PerConn float64 `json:"bytes_per_conn"`
	Error   string  `json:"error,omitempty"`
}

type idleReport struct {
	machine
	Pinning string    `json:"pinning"`
	Conns   int       `json:"conns"`
	Notes   []string  `json:"notes,omitempty"`
	Servers []string  `json:"servers"`
	Runs    []idleRun `json:"runs"`
}

// measureIdle runs every server rounds times, interleaved.
func measureIdle(cfg config, servers []server, conns int, notes []string) *idleReport {
	rep := &idleReport{machine: thisMachine(), Pinning: pinDescription(cfg), Conns: conns, Notes: notes}
	for _, s := range servers {
		rep.Servers = append(rep.Servers, s.Name)
	}
	for r := range cfg.rounds {
		for _, s := range servers {
			run := idleOne(cfg, s, conns)
			run.Round = r + 1
			if run.Error != "" {
				fmt.Fprintf(os.Stderr, "runner: %s idle round %d: %s\n", s.Name, r+1, run.Error)
			}
			rep.Runs = append(rep.Runs, run)
		}
	}
	return rep
}

func idleOne(cfg config, s server, conns int) (r idleRun) {
	r = idleRun{Server: s.Name, Conns: conns}
	err := serve(cfg, s, func(p *serverProc) (err error) {
		pid := p.cmd.Process.Pid
		if r.RSSKiB0, err = rssKiB(pid); err != nil {
			return err
		}
		_, err = heldLoad(cfg, p.addr, fmt.Sprintf("%dx1B", conns), func(_ int, window func() error) error {
			var rerr error
			r.RSSKiB1, rerr = rssKiB(pid)
			return firstErr(rerr, window())
		})
		return err
	})
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.PerConn = float64(r.RSSKiB1-r.RSSKiB0) * 1024 / float64(conns)
	return r
}

// rssKiB reads VmRSS from /proc/PID/status.
func rssKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// median returns the median bytes per connection of s's good runs, and
// how many there were.
func (rep *idleReport) median(s string) (float64, int) {
	return medianOf(rep.Runs, func(r *idleRun) (float64, bool) { return r.PerConn, r.Server == s && r.Error == "" })
}

func (rep *idleReport) failed() (int, int) {
	return failedOf(rep.Runs, func(r *idleRun) string { return r.Error })
}

func (rep *idleReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Bytes of server RSS per idle connection: %d connections opened by `loadgen -hold`, one 1-byte echo each, held; (VmRSS held − VmRSS before) ÷ %d, median of the rounds. %s; %s, %s, %s.\n\n",
		rep.Conns, rep.Conns, rep.Pinning, kernel(), rep.Go, rep.Date)
	b.WriteString("| server | bytes per idle connection | rounds |\n|---|---:|---:|\n")
	for _, s := range rep.Servers {
		m, n := rep.median(s)
		fmt.Fprintf(&b, "| %s | %.0f | %d |\n", s, m, n)
	}
	b.WriteString("\n| ratio | target | bytes per idle connection |\n|---|---|---:|\n")
	for _, p := range idlePairs {
		num, nn := rep.median(p.Num)
		den, dn := rep.median(p.Den)
		if nn == 0 || dn == 0 || den <= 0 {
			continue
		}
		ratio := num / den
		cell := fmt.Sprintf("%.2f", ratio)
		if ratio > idleTarget {
			cell = "**" + cell + "**"
		}
		fmt.Fprintf(&b, "| `%s` / `%s` | ≤ %.1f | %s |\n", p.Num, p.Den, idleTarget, cell)
	}
	return b.String()
}
