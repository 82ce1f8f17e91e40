package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// preferredBaseline is the server the chart normalises to when it ran.
const preferredBaseline = "goecho"

// defaultSaturated is the median load core busy from which a ratio counts as
// load-bound. At 90 % the load generator is idle less than a tenth of its
// time, so a faster server could get at most about 10 % more ops/s from it;
// on our 2-core machine 4 of the 5 workloads ran at 95–97 % and 1x64B, which
// waits on each echo, well below.
const defaultSaturated = 0.90

// saturated tells whether the load core of either side of a ratio was busy
// at least threshold of the time.
func saturated(busyNum, busyDen, threshold float64) bool {
	return threshold > 0 && max(busyNum, busyDen) >= threshold
}

// loadBoundMark follows a ratio whose load core was saturated.
const loadBoundMark = " †"

// pairSpec is a ratio the report tracks. Target is the ops/s ratio's,
// CPUTarget the CPU-efficiency ratio's (on every workload); 0 means a
// reference ratio with no target. EchoOnly ops/s targets skip the accept
// workload ("every echo workload" in DESIGN.md). A Control pair is one
// server run twice under two names: how far its ratios are from 1 is how
// far any ratio of the run moves by chance.
type pairSpec struct {
	Num, Den  string
	Target    float64
	CPUTarget float64
	EchoOnly  bool
	Control   bool
}

var pairSpecs = []pairSpec{
	{Num: "echo-bufferevent", Den: "cecho", Target: 0.95},
	// The engines without busy polling, whose loops sleep as the C
	// servers' do: the binding costs at most 3 % CPU per op.
	{Num: "echo-bufferevent-nopoll", Den: "cecho", CPUTarget: 0.97},
	{Num: "echo-event", Den: "crawecho", Target: 0.95},
	{Num: "echo", Den: "goecho", Target: 1.0, EchoOnly: true},
	{Num: "echo", Den: "gnetecho", Target: 1.0, EchoOnly: true},
	// Busy polling costs at most 10 % more CPU per op: 1/1.1 rounded up.
	{Num: "echo", Den: "echo-nopoll", CPUTarget: 0.91},
	{Num: "echo-nopoll", Den: "crawecho", CPUTarget: 0.97},
	// crawecho's own C in a Go process: what being one costs, apart
	// from the binding.
	{Num: "crawecho-go", Den: "crawecho"},
	{Num: "echo-nopoll", Den: "crawecho-go"},
	{Num: "echo-nopoll", Den: "goecho"},
	{Num: "echo-nopoll", Den: "gnetecho"},
	{Num: "crawecho", Den: "goecho"},
	{Num: "cecho", Den: "goecho"},
	{Num: "gnetecho", Den: "goecho"},
	// cmd/echo's default engine is event: the same server twice.
	{Num: "echo-event", Den: "echo", Control: true},
	// A request/response protocol on the documented API costs no more CPU
	// per command than the same server in C.
	{Num: "kv", Den: "ckv", CPUTarget: 1.0},
	// ckv run twice: the kv run's own noise, as echo-event/echo is the
	// echo run's.
	{Num: "ckv-again", Den: "ckv", Control: true},
}

// machine is when and where a report was made.
type machine struct {
	Date   string `json:"date"`
	Go     string `json:"go"`
	Kernel string `json:"kernel"`
	// Idle is how the CPUs wait when idle (cpuIdle): on workloads where
	// every op wakes the server (1x64B, accept), it moves the ratios
	// between servers by several percent (bench/README.md, "Where the
	// accept gap lies").
	Idle string `json:"cpu_idle,omitempty"`
}

func thisMachine() machine {
	return machine{Date: time.Now().UTC().Format(time.RFC3339), Go: runtime.Version(), Kernel: kernel(),
		Idle: cpuIdle(readSys)}
}

// readSys returns a file of /sys, trimmed, or "" when it cannot be read.
func readSys(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// cpuIdle describes how this machine's idle CPUs wait, from the cpuidle
// driver and, for a guest's haltpoll driver, how long it polls before it
// halts: a CPU that halts at once makes every wake-up of a sleeping server
// cost more. "" when the kernel does not say.
func cpuIdle(read func(string) string) string {
	driver := read("/sys/devices/system/cpu/cpuidle/current_driver")
	if driver == "" || driver == "none" {
		return ""
	}
	if driver != "haltpoll" {
		return "cpuidle " + driver
	}
	switch ns := read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"); ns {
	case "":
		return "cpuidle haltpoll"
	case "0":
		return "cpuidle haltpoll, guest_halt_poll_ns=0: an idle CPU halts at once"
	default:
		return "cpuidle haltpoll, guest_halt_poll_ns=" + ns + ": an idle CPU polls that long before it halts"
	}
}

type meta struct {
	machine
	CPUs      int     `json:"cpus"`
	Pinning   string  `json:"pinning"`
	Rounds    int     `json:"rounds"`
	DurationS float64 `json:"duration_s"`
	WarmupS   float64 `json:"warmup_s"`
	Conns     int     `json:"accept_connectors"`
	Seconds   float64 `json:"wall_seconds"`
	// OtherCores is the median over runs of the CPUs that other processes
	// kept busy; OtherCoresMax the worst run.
	OtherCores    float64 `json:"other_cores_median"`
	OtherCoresMax float64 `json:"other_cores_max"`
	Quiet         float64 `json:"quiet_cpus"` // the noisy-round threshold
	// Saturated is the median load core busy from which a ratio is marked
	// load-bound (ratioCell.LoadSaturated).
	Saturated float64 `json:"saturated_load_busy"`
	// Spin: each server ran beside a spinner (-spin).
	Spin  bool     `json:"spin,omitempty"`
	Notes []string `json:"notes,omitempty"`
}

// cell summarises one server × workload over its successful rounds.
type cell struct {
	OpsPerSec float64 `json:"ops_per_sec"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	CPUusOp   float64 `json:"server_cpu_us_per_op"`
	Rounds    int     `json:"rounds_ok"`
	SpreadPct float64 `json:"spread_pct"` // (max-min)/median of ops/s
	LoadBusy  float64 `json:"load_busy"`  // median load core busy
}

// ratioCell is one pair × workload: the median of the per-round ratios.
type ratioCell struct {
	Median   float64   `json:"median"`
	Min      float64   `json:"min"`
	Max      float64   `json:"max"`
	PerRound []float64 `json:"per_round"`
	Pass     *bool     `json:"pass,omitempty"`
	// LoadBusyNum and LoadBusyDen are the median load core busy of each
	// server over the rounds behind the ratio; LoadSaturated says that
	// either reached meta.saturated_load_busy, so that the load generator
	// may have capped ops/s and the CPU-efficiency ratio is the one to read.
	LoadBusyNum   float64 `json:"load_busy_num"`
	LoadBusyDen   float64 `json:"load_busy_den"`
	LoadSaturated bool    `json:"load_saturated"`
}

type ratioRow struct {
	Pair   string                `json:"pair"`
	Target float64               `json:"target,omitempty"`
	Cells  map[string]*ratioCell `json:"workloads"`
}

type report struct {
	Meta      meta                        `json:"meta"`
	Servers   []string                    `json:"servers"`
	Workloads []string                    `json:"workloads"`
	Summary   map[string]map[string]*cell `json:"summary"` // server → workload
	Ratios    []ratioRow                  `json:"ratios"`
	// CPURatios are per-round ratios of CPU time per op, den over num: they
	// move much less than ops/s on a busy machine.
	CPURatios []ratioRow `json:"cpu_efficiency_ratios"`
	// Relative is every server's ratio to Baseline, for the chart.
	Baseline string                           `json:"baseline"`
	Relative map[string]map[string]*ratioCell `json:"relative"`
	Runs     []runRecord                      `json:"runs"`
}

func summarise(cfg config, servers []server, runs []runRecord) *report {
	rep := &report{
		Meta: meta{
			machine:   thisMachine(),
			CPUs:      runtime.NumCPU(),
			Pinning:   pinDescription(cfg),
			Rounds:    cfg.rounds,
			DurationS: cfg.dur.Seconds(),
			WarmupS:   cfg.warmup.Seconds(),
			Conns:     cfg.connectors,
			Quiet:     cfg.quiet,
			Saturated: cfg.saturated,
			Spin:      cfg.spin,
		},
		Workloads: cfg.workloads,
		Summary:   map[string]map[string]*cell{},
		Relative:  map[string]map[string]*ratioCell{},
		Runs:      runs,
	}
	for _, s := range servers {
		rep.Servers = append(rep.Servers, s.Name)
	}
	var other []float64
	for _, r := range runs {
		if r.ok() {
			other = append(other, r.OtherCores)
		}
	}
	rep.Meta.OtherCores = median(other) // sorts other
	if len(other) > 0 {
		rep.Meta.OtherCoresMax = other[len(other)-1]
	}
	if rep.has("echo") {
		rep.Meta.Notes = append(rep.Meta.Notes, "echo (default engine) runs as a server of its own, not a copy of either engine's numbers")
	}

	// Drop noisy rounds where enough quiet ones replace them.
	maxRound := map[string]int{}
	for _, w := range rep.Workloads {
		noisy := noisyRounds(runs, w, cfg.quiet)
		for _, r := range runs {
			if r.Workload == w {
				maxRound[w] = max(maxRound[w], r.Round)
			}
		}
		switch quiet := maxRound[w] - len(noisy); {
		case len(noisy) == 0:
		case quiet >= cfg.rounds:
			for i := range runs {
				if runs[i].Workload == w && noisy[runs[i].Round] {
					runs[i].Dropped = true
				}
			}
			rep.Meta.Notes = append(rep.Meta.Notes, fmt.Sprintf(
				"%s: %d round(s) in which other processes kept more than %.2f CPUs busy were replaced by quiet ones", w, len(noisy), cfg.quiet))
		default:
			rep.Meta.Notes = append(rep.Meta.Notes, fmt.Sprintf(
				"%s: %d of %d rounds are noisy (other processes kept more than %.2f CPUs busy) and count anyway: no quiet replacement fit in the time budget and the limit of twice the rounds", w, len(noisy), maxRound[w], cfg.quiet))
		}
	}

	// byRound[server][workload][round] is a successful run.
	type sample struct{ ops, cpu, busy float64 }
	byRound := map[string]map[string]map[int]sample{}
	for _, s := range rep.Servers {
		rep.Summary[s] = map[string]*cell{}
		byRound[s] = map[string]map[int]sample{}
		for _, w := range rep.Workloads {
			byRound[s][w] = map[int]sample{}
			var ops, p50, p99, cpu, busy []float64
			for _, r := range runs {
				if r.Server == s && r.Workload == w && r.ok() && !r.Dropped {
					ops = append(ops, r.OpsPerSec)
					p50 = append(p50, r.P50us)
					p99 = append(p99, r.P99us)
					cpu = append(cpu, r.ServerCPUus)
					busy = append(busy, r.LoadBusy)
					byRound[s][w][r.Round] = sample{r.OpsPerSec, r.ServerCPUus, r.LoadBusy}
				}
			}
			if len(ops) == 0 {
				continue
			}
			c := &cell{Rounds: len(ops), P50us: median(p50), P99us: median(p99), CPUusOp: median(cpu), LoadBusy: median(busy)}
			c.OpsPerSec = median(ops) // sorts ops
			if c.OpsPerSec > 0 {
				c.SpreadPct = 100 * (ops[len(ops)-1] - ops[0]) / c.OpsPerSec
			}
			rep.Summary[s][w] = c
		}
	}

	// ratio is the median over rounds of num's ops/s over den's, or with
	// cpu, of den's CPU per op over num's: above 1, num does better.
	// The load core busy of both sides, over the rounds that gave a
	// ratio, tells whether the load generator may have been the limit.
	ratio := func(num, den, w string, cpu bool) *ratioCell {
		var per, busyA, busyB []float64
		for round := 1; round <= maxRound[w]; round++ {
			a, okA := byRound[num][w][round]
			b, okB := byRound[den][w][round]
			switch {
			case !okA || !okB:
				continue
			case !cpu && b.ops > 0:
				per = append(per, a.ops/b.ops)
			case cpu && a.cpu > 0 && b.cpu > 0:
				per = append(per, b.cpu/a.cpu)
			default:
				continue
			}
			busyA, busyB = append(busyA, a.busy), append(busyB, b.busy)
		}
		if len(per) == 0 {
			return nil
		}
		rc := &ratioCell{PerRound: append([]float64(nil), per...)}
		rc.Median = median(per)
		rc.Min, rc.Max = per[0], per[len(per)-1]
		rc.LoadBusyNum, rc.LoadBusyDen = median(busyA), median(busyB)
		rc.LoadSaturated = saturated(rc.LoadBusyNum, rc.LoadBusyDen, cfg.saturated)
		return rc
	}
	for _, p := range pairSpecs {
		if !rep.has(p.Num) || !rep.has(p.Den) {
			continue
		}
		row := ratioRow{Pair: p.Num + "/" + p.Den, Target: p.Target, Cells: map[string]*ratioCell{}}
		cpuRow := ratioRow{Pair: p.Num + "/" + p.Den, Target: p.CPUTarget, Cells: map[string]*ratioCell{}}
		for _, w := range rep.Workloads {
			rc := ratio(p.Num, p.Den, w, false)
			if rc != nil && p.Target > 0 && !(p.EchoOnly && w == "accept") {
				rc.judge(p.Target)
			}
			row.Cells[w] = rc
			crc := ratio(p.Num, p.Den, w, true)
			if crc != nil && p.CPUTarget > 0 {
				crc.judge(p.CPUTarget)
			}
			cpuRow.Cells[w] = crc
		}
		rep.Ratios = append(rep.Ratios, row)
		rep.CPURatios = append(rep.CPURatios, cpuRow)
	}
	rep.Baseline = rep.Servers[0]
	if rep.has(preferredBaseline) {
		rep.Baseline = preferredBaseline
	}
	for _, s := range rep.Servers {
		rep.Relative[s] = map[string]*ratioCell{}
		for _, w := range rep.Workloads {
			rep.Relative[s][w] = ratio(s, rep.Baseline, w, false)
		}
	}
	return rep
}

// roundsUsed tells how many rounds the medians rest on: "3", or "3–6" when
// workloads differ (replacement rounds, failed runs).
func (rep *report) roundsUsed() string {
	lo, hi := 0, 0
	for _, byW := range rep.Summary {
		for _, c := range byW {
			if lo == 0 || c.Rounds < lo {
				lo = c.Rounds
			}
			hi = max(hi, c.Rounds)
		}
	}
	if lo == hi {
		return fmt.Sprint(hi)
	}
	return fmt.Sprintf("%d–%d", lo, hi)
}

func (rep *report) has(name string) bool {
	for _, s := range rep.Servers {
		if s == name {
			return true
		}
	}
	return false
}

func (rep *report) failed() (int, int) {
	return failedOf(rep.Runs, func(r *runRecord) string { return r.Error })
}

func pinDescription(cfg config) string {
	if cfg.pinServer == nil {
		return "none"
	}
	return fmt.Sprintf("server: %s, load: %s", strings.Join(cfg.pinServer, " "), strings.Join(cfg.pinLoad, " "))
}

func kernel() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return ""
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

// markdown renders the report as the tables `make bench` prints.
func (rep *report) markdown() string {
	var b strings.Builder
	m := rep.Meta
	title := "Echo benchmark"
	if len(rep.Workloads) > 0 && !slices.ContainsFunc(rep.Workloads, func(w string) bool { return !strings.HasPrefix(w, "kv") }) {
		title = "Key-value benchmark" // make -C bench kv
	}
	fmt.Fprintf(&b, "\n## %s\n\n", title)
	fmt.Fprintf(&b, "%d rounds planned, medians over %s, × %.1f s (+%.1f s warm-up) per server and workload, interleaved; %s; %d CPUs, Linux %s, %s, %s.\n",
		m.Rounds, rep.roundsUsed(), m.DurationS, m.WarmupS, m.Pinning, m.CPUs, m.Kernel, m.Go, m.Date)
	if m.Idle != "" {
		fmt.Fprintf(&b, "- CPUs when idle: %s.\n", m.Idle)
	}
	if m.Spin {
		b.WriteString("- **-spin:** each server ran beside a spinner at idle priority on its CPU, which never halted: these ratios leave out what waking a halted CPU costs each server.\n")
	}
	for _, n := range m.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}

	rep.serverTable(&b, "Throughput: median ops/s (median p99 latency)", "failed", func(c *cell) string {
		return fmt.Sprintf("%s (%s)", fmtOps(c.OpsPerSec), fmtMicros(c.P99us))
	})

	// Where the load core was saturated, ops/s ratios may measure the load
	// generator: the CPU-efficiency ratios come first there.
	if bound := rep.loadBoundWorkloads(); len(bound) > 0 && len(rep.CPURatios) > 0 {
		fmt.Fprintf(&b, "\n**The load generator's core was saturated on %s** (median load core busy ≥ %.0f%% for a server of the pair, marked †): "+
			"there ops/s ratios may measure the load generator, so the CPU-efficiency ratios come first and are the headline.\n",
			strings.Join(bound, ", "), 100*rep.Meta.Saturated)
		b.WriteString(rep.cpuRatiosMarkdown())
		b.WriteString(rep.ratiosMarkdown())
		b.WriteString(rep.cpuPerOpMarkdown())
	} else {
		b.WriteString(rep.ratiosMarkdown())
		b.WriteString(rep.cpuPerOpMarkdown())
		b.WriteString(rep.cpuRatiosMarkdown())
	}

	rep.serverTable(&b, "Noise: spread of ops/s across rounds, (max − min) / median", "–", func(c *cell) string {
		return fmt.Sprintf("%.0f%%", c.SpreadPct)
	})

	fmt.Fprintf(&b, "\n### Load generator and machine, median over runs\n\n")
	b.WriteString(tableHead("", "", rep.Workloads))
	b.WriteString(rep.workloadRow("load core busy", func(r *runRecord) float64 { return r.LoadBusy }))
	b.WriteString(rep.workloadRow("other processes, CPUs", func(r *runRecord) float64 { return r.OtherCores }))
	b.WriteString("\nNear 100% load core busy means the load generator may cap ops/s; server CPU per op then tells the servers apart. " +
		"Other processes: CPU time used by everything but the server and the load during the runs, in CPUs; near 0 on a quiet machine.\n")
	if m.OtherCores > m.Quiet {
		fmt.Fprintf(&b, "\n**Warning:** other processes kept %.2f CPUs busy (median over runs, max %.2f): the machine was not quiet, so expect noisy ratios.\n",
			m.OtherCores, m.OtherCoresMax)
	}

	var retried []string
	for _, r := range rep.Runs {
		if r.Retried != "" {
			retried = append(retried, fmt.Sprintf("- %s %s round %d: %s", r.Server, r.Workload, r.Round, r.Retried))
		}
	}
	if len(retried) > 0 {
		fmt.Fprintf(&b, "\n### Runs retried after stalling on a busy machine (%d)\n\n%s\n", len(retried), strings.Join(retried, "\n"))
	}

	if n, _ := rep.failed(); n > 0 {
		fmt.Fprintf(&b, "\n### Failed runs (%d)\n\n", n)
		for _, r := range rep.Runs {
			if !r.ok() {
				fmt.Fprintf(&b, "- %s %s round %d: %s\n", r.Server, r.Workload, r.Round, r.Error)
			}
		}
	}
	return b.String()
}

// workloadRow is a table row of the median of f over each workload's
// successful runs, as a percentage when pct.
func (rep *report) workloadRow(label string, f func(*runRecord) float64) string {
	pct := strings.Contains(label, "busy")
	var b strings.Builder
	b.WriteString("| " + label + " |")
	for _, w := range rep.Workloads {
		m, _ := medianOf(rep.Runs, func(r *runRecord) (float64, bool) { return f(r), r.Workload == w && r.ok() })
		if pct {
			fmt.Fprintf(&b, " %.0f%% |", 100*m)
		} else {
			fmt.Fprintf(&b, " %.2f |", m)
		}
	}
	return b.String() + "\n"
}

func tableHead(first, second string, workloads []string) string {
	var b strings.Builder
	b.WriteString("| " + first + " |")
	align := "|---|"
	if second != "" {
		b.WriteString(" " + second + " |")
		align += "---|"
	}
	for _, w := range workloads {
		b.WriteString(" " + w + " |")
		align += "---:|"
	}
	return b.String() + "\n" + align + "\n"
}

func fmtOps(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtMicros(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("p99 %.1f ms", us/1000)
	}
	return fmt.Sprintf("p99 %.0f µs", us)
}

// ratiosMarkdown is the ops/s ratio table with its targets.
func (rep *report) ratiosMarkdown() string {
	if len(rep.Ratios) == 0 {
		return ""
	}
	var b strings.Builder
	marked := rep.ratioTable(&b, "Ratios: median of per-round ops/s ratios", rep.Ratios)
	if rep.has("echo") {
		b.WriteString("\nThe echo/goecho and echo/gnetecho targets apply to the echo workloads; accept is shown for reference.\n")
	}
	if marked {
		b.WriteString("\n† The load core was saturated in the rounds behind this ratio: it may measure the load generator; read the CPU-efficiency ratio of the pair.\n")
	}
	return b.String()
}

// serverTable writes a table titled title with a row per server and a
// column per workload: cell's text of the summary, or missing without one.
func (rep *report) serverTable(b *strings.Builder, title, missing string, text func(*cell) string) {
	fmt.Fprintf(b, "\n### %s\n\n", title)
	b.WriteString(tableHead("server", "", rep.Workloads))
	for _, s := range rep.Servers {
		fmt.Fprintf(b, "| %s |", s)
		for _, w := range rep.Workloads {
			if c := rep.Summary[s][w]; c != nil {
				b.WriteString(" " + text(c) + " |")
			} else {
				b.WriteString(" " + missing + " |")
			}
		}
		b.WriteString("\n")
	}
}

// cpuPerOpMarkdown is the table of each server's CPU time per op.
func (rep *report) cpuPerOpMarkdown() string {
	var b strings.Builder
	rep.serverTable(&b, "Server CPU time per op, µs (median; lower is better)", "–", func(c *cell) string {
		return fmt.Sprintf("%.1f", c.CPUusOp)
	})
	b.WriteString("\nCPU time of the server process (all threads) from the load's go-ahead to the end of its ops (warm-up included; connection setup and teardown not), per op.\n")
	return b.String()
}

// judge marks the cell pass or fail against target.
func (rc *ratioCell) judge(target float64) {
	pass := rc.Median >= target
	rc.Pass = &pass
}

// markdown writes the row as a table line over workloads, and reports
// whether a cell had the load-bound mark.
func (row ratioRow) markdown(b *strings.Builder, workloads []string) (marked bool) {
	target := "reference"
	if row.Target > 0 {
		target = fmt.Sprintf("≥ %.2f", row.Target)
	}
	fmt.Fprintf(b, "| %s | %s |", row.Pair, target)
	for _, w := range workloads {
		rc := row.Cells[w]
		var cell string
		switch {
		case rc == nil:
			b.WriteString(" n/a |")
			continue
		case rc.Pass == nil:
			cell = fmt.Sprintf("%.2f", rc.Median)
		case *rc.Pass:
			cell = fmt.Sprintf("%.2f pass", rc.Median)
		default:
			cell = fmt.Sprintf("%.2f **FAIL**", rc.Median)
		}
		if rc.LoadSaturated {
			cell += loadBoundMark
			marked = true
		}
		b.WriteString(" " + cell + " |")
	}
	b.WriteString("\n")
	return marked
}

// ratioTable writes a ratio table under its heading and tells whether a
// cell is marked load-bound.
func (rep *report) ratioTable(b *strings.Builder, title string, rows []ratioRow) (marked bool) {
	fmt.Fprintf(b, "\n### %s\n\n", title)
	b.WriteString(tableHead("pair", "target", rep.Workloads))
	for _, row := range rows {
		marked = row.markdown(b, rep.Workloads) || marked
	}
	return marked
}

// cpuRatiosMarkdown is the CPU-efficiency ratio table.
func (rep *report) cpuRatiosMarkdown() string {
	if len(rep.CPURatios) == 0 {
		return ""
	}
	var b strings.Builder
	marked := rep.ratioTable(&b, "CPU-efficiency ratios: median of per-round (CPU per op of the second ÷ of the first)", rep.CPURatios)
	b.WriteString("\nAbove 1 the first server spends less CPU per op. These move far less than ops/s when other processes compete for the CPUs. " +
		"Targets: the engines without busy polling within 3 % of their C reference (≥ 0.97); echo/echo-nopoll ≥ 0.91, busy polling costing at most 10 % more CPU per op.\n")
	if pair, off := rep.controlSpread(); pair != "" {
		fmt.Fprintf(&b, "\n%s is one server under two names: its ratios are off 1.00 by up to %.0f %% in this run, which is how far a ratio here moves by chance; a target nearer 1 than that is not told apart from noise by one run.\n", pair, 100*off)
	}
	if marked {
		b.WriteString("\n† The load core was saturated in these rounds: this ratio, not the ops/s one, tells the pair apart.\n")
	}
	return b.String()
}

// controlSpread names the control pair and tells how far its
// CPU-efficiency medians are from 1 at most; "" when the run has none.
func (rep *report) controlSpread() (pair string, off float64) {
	for _, p := range pairSpecs {
		if !p.Control {
			continue
		}
		name := p.Num + "/" + p.Den
		for _, row := range rep.CPURatios {
			if row.Pair != name {
				continue
			}
			for _, rc := range row.Cells {
				if rc != nil {
					pair, off = name, max(off, math.Abs(rc.Median-1))
				}
			}
		}
	}
	return pair, off
}

// loadBoundWorkloads are the workloads on which some ops/s ratio was
// load-bound.
func (rep *report) loadBoundWorkloads() []string {
	var out []string
	for _, w := range rep.Workloads {
		for _, row := range rep.Ratios {
			if rc := row.Cells[w]; rc != nil && rc.LoadSaturated {
				out = append(out, w)
				break
			}
		}
	}
	return out
}
