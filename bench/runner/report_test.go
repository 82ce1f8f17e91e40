package main

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testConfig(rounds int) config {
	return config{rounds: rounds, dur: time.Second, workloads: []string{"1x64B", "accept"}, quiet: 0.25}
}

func rec(server, w string, round int, ops, other float64) runRecord {
	r := runRecord{Server: server, Workload: w, Round: round, OtherCores: other}
	r.OpsPerSec = ops
	return r
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestRatiosAreMediansOfPerRoundRatios(t *testing.T) {
	// Round 2 is slow for both servers; per-round ratios are 1.0, 1.0, 0.5,
	// whose median is 1.0, whereas the ratio of medians would be 150/100.
	runs := []runRecord{
		rec("echo", "1x64B", 1, 100, 0), rec("goecho", "1x64B", 1, 100, 0),
		rec("echo", "1x64B", 2, 10, 0), rec("goecho", "1x64B", 2, 10, 0),
		rec("echo", "1x64B", 3, 150, 0), rec("goecho", "1x64B", 3, 300, 0),
		rec("echo", "accept", 1, 50, 0), rec("goecho", "accept", 1, 100, 0),
	}
	rep := summarise(testConfig(3), names([]string{"goecho", "echo"}), runs)
	var row *ratioRow
	for i := range rep.Ratios {
		if rep.Ratios[i].Pair == "echo/goecho" {
			row = &rep.Ratios[i]
		}
	}
	if row == nil {
		t.Fatalf("no echo/goecho row in %+v", rep.Ratios)
	}
	c := row.Cells["1x64B"]
	if c == nil || !near(c.Median, 1.0) || !near(c.Min, 0.5) || !near(c.Max, 1.0) {
		t.Fatalf("1x64B ratio = %+v, want median 1.0 over 0.5..1.0", c)
	}
	if c.Pass == nil || !*c.Pass {
		t.Errorf("1x64B: ratio 1.0 against target 1.0 should pass")
	}
	if a := row.Cells["accept"]; a == nil || a.Pass != nil {
		t.Errorf("accept: echo/goecho has no target on the accept workload, got %+v", a)
	}
	if got := rep.Summary["goecho"]["1x64B"].OpsPerSec; got != 100 {
		t.Errorf("goecho 1x64B median ops/s = %v, want 100", got)
	}
	if _, ok := rep.Relative["echo"]["1x64B"]; !ok || rep.Baseline != "goecho" {
		t.Errorf("chart baseline = %q, want goecho with a bar for echo", rep.Baseline)
	}
}

func TestBelowTargetFails(t *testing.T) {
	runs := []runRecord{
		rec("echo-event", "1x64B", 1, 90, 0), rec("crawecho", "1x64B", 1, 100, 0),
	}
	rep := summarise(testConfig(1), names([]string{"crawecho", "echo-event"}), runs)
	c := rep.Ratios[0].Cells["1x64B"]
	if rep.Ratios[0].Pair != "echo-event/crawecho" || c.Pass == nil || *c.Pass {
		t.Fatalf("0.90 against target 0.95: got %s %+v, want FAIL", rep.Ratios[0].Pair, c)
	}
	if md := rep.markdown(); !strings.Contains(md, "0.90 **FAIL**") {
		t.Errorf("markdown does not mark the failure:\n%s", md)
	}
}

func TestNoisyRoundsDroppedOnlyWhenReplaced(t *testing.T) {
	cfg := testConfig(2)
	cfg.workloads = []string{"1x64B"}
	quietEnough := []runRecord{
		rec("cecho", "1x64B", 1, 100, 0), rec("goecho", "1x64B", 1, 100, 0.9), // noisy
		rec("cecho", "1x64B", 2, 200, 0), rec("goecho", "1x64B", 2, 100, 0),
		rec("cecho", "1x64B", 3, 200, 0), rec("goecho", "1x64B", 3, 100, 0.1),
	}
	rep := summarise(cfg, names([]string{"cecho", "goecho"}), quietEnough)
	if c := rep.Ratios[0].Cells["1x64B"]; c == nil || len(c.PerRound) != 2 || !near(c.Median, 2) {
		t.Errorf("with two quiet rounds the noisy one should be dropped: %+v", c)
	}
	if !rep.Runs[0].Dropped || rep.Runs[2].Dropped {
		t.Errorf("dropped flags: %v %v, want round 1 only", rep.Runs[0].Dropped, rep.Runs[2].Dropped)
	}

	tooNoisy := []runRecord{
		rec("cecho", "1x64B", 1, 100, 0.9), rec("goecho", "1x64B", 1, 100, 0),
		rec("cecho", "1x64B", 2, 200, 0), rec("goecho", "1x64B", 2, 100, 0),
	}
	rep = summarise(cfg, names([]string{"cecho", "goecho"}), tooNoisy)
	if c := rep.Ratios[0].Cells["1x64B"]; c == nil || len(c.PerRound) != 2 {
		t.Errorf("with one quiet round of two every round should count: %+v", c)
	}
}

func TestFailedRunIsLeftOutAndReported(t *testing.T) {
	failed := rec("goecho", "1x64B", 1, 0, 0)
	failed.Error = "loadgen: 1 errors"
	runs := []runRecord{rec("cecho", "1x64B", 1, 100, 0), failed}
	rep := summarise(testConfig(1), names([]string{"cecho", "goecho"}), runs)
	if n, _ := rep.failed(); n != 1 {
		t.Errorf("failed = %d, want 1", n)
	}
	if rep.Summary["goecho"]["1x64B"] != nil || rep.Ratios[0].Cells["1x64B"] != nil {
		t.Errorf("a failed run must not count in medians or ratios")
	}
	if md := rep.markdown(); !strings.Contains(md, "Failed runs (1)") {
		t.Errorf("markdown does not list the failed run:\n%s", md)
	}
}

func TestSVGIsWellFormed(t *testing.T) {
	runs := []runRecord{
		rec("cecho", "1x64B", 1, 100, 0), rec("goecho", "1x64B", 1, 80, 0),
		rec("cecho", "accept", 1, 10, 0), // goecho's accept run missing: n/a bar
	}
	rep := summarise(testConfig(1), names([]string{"cecho", "goecho"}), runs)
	d := xml.NewDecoder(strings.NewReader(rep.svg()))
	rects := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("svg does not parse: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	// background + 2 legend swatches + 2 bars for 1x64B
	if rects != 5 {
		t.Errorf("svg has %d rects, want 5", rects)
	}
}

func TestCPURatioFavoursTheCheaperServer(t *testing.T) {
	a, b := rec("crawecho", "1x64B", 1, 100, 0), rec("goecho", "1x64B", 1, 100, 0)
	a.ServerCPUus, b.ServerCPUus = 10, 15
	rep := summarise(testConfig(1), names([]string{"crawecho", "goecho"}), []runRecord{a, b})
	if c := rep.CPURatios[0].Cells["1x64B"]; rep.CPURatios[0].Pair != "crawecho/goecho" || c == nil || !near(c.Median, 1.5) {
		t.Fatalf("%s = %+v, want 1.5 (goecho's 15 µs/op over crawecho's 10)", rep.CPURatios[0].Pair, c)
	}
}

func TestStallsAloneAreTimingFailures(t *testing.T) {
	for _, tc := range []struct {
		name           string
		errors, stalls int
		want           bool
	}{
		{"stalls only", 0, 1, true},
		{"a wrong echo", 1, 0, false},
		{"both", 1, 1, false},
	} {
		r := rec("echo", "1x64B", 1, 0, 1)
		r.Errors, r.Stalls, r.Error = tc.errors, tc.stalls, "loadgen: failed"
		if got := r.timingOnly(); got != tc.want {
			t.Errorf("%s: timingOnly = %v, want %v", tc.name, got, tc.want)
		}
	}
	retried := rec("echo", "1x64B", 1, 100, 0)
	retried.Retried = "loadgen: 0 errors, 1 stalls, first: no op completed in the window: stalled"
	rep := summarise(testConfig(1), names([]string{"echo"}), []runRecord{retried})
	if md := rep.markdown(); !strings.Contains(md, "retried after stalling") || !strings.Contains(md, "no op completed") {
		t.Errorf("markdown does not list the retried run:\n%s", md)
	}
	if n, _ := rep.failed(); n != 0 {
		t.Errorf("a successful retry is not a failed run")
	}
}

func TestRunOrderPutsComparedServersSideBySide(t *testing.T) {
	var servers []server
	for _, n := range []string{"cecho", "crawecho", "goecho", "gnetecho", "echo-bufferevent", "echo-bufferevent-nopoll", "echo-event", "echo", "echo-nopoll", "other"} {
		servers = append(servers, server{Name: n})
	}
	var got []string
	for _, s := range runOrder(servers) {
		got = append(got, s.Name)
	}
	want := "echo-bufferevent-nopoll cecho echo-bufferevent crawecho echo-event echo-nopoll goecho echo gnetecho other"
	if strings.Join(got, " ") != want {
		t.Fatalf("run order %v, want %s", got, want)
	}
}

// busyRuns are crawecho and echo-event over three rounds of 1x64B and
// accept, with the load core busy as given per round and server.
func busyRuns(busy map[string][3]float64) []runRecord {
	var runs []runRecord
	for _, w := range []string{"1x64B", "accept"} {
		for round := 1; round <= 3; round++ {
			for _, s := range []string{"crawecho", "echo-event"} {
				r := rec(s, w, round, 100, 0)
				r.ServerCPUus = 10
				r.LoadBusy = busy[s+" "+w][round-1]
				runs = append(runs, r)
			}
		}
	}
	return runs
}

func TestLoadBoundRatios(t *testing.T) {
	cfg := testConfig(3)
	cfg.saturated = defaultSaturated
	for _, tc := range []struct {
		name string
		busy map[string][3]float64
		want bool // 1x64B load-bound; accept never is here
	}{
		{"neither side near the threshold", map[string][3]float64{
			"crawecho 1x64B": {0.5, 0.6, 0.5}, "echo-event 1x64B": {0.6, 0.5, 0.6}}, false},
		{"one side at the threshold", map[string][3]float64{
			"crawecho 1x64B": {0.5, 0.5, 0.5}, "echo-event 1x64B": {0.9, 0.95, 0.3}}, true},
		{"one saturated round of three is not the median", map[string][3]float64{
			"crawecho 1x64B": {0.97, 0.5, 0.5}, "echo-event 1x64B": {0.5, 0.5, 0.97}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := summarise(cfg, names([]string{"crawecho", "echo-event"}), busyRuns(tc.busy))
			for _, rows := range [][]ratioRow{rep.Ratios, rep.CPURatios} {
				if got := rows[0].Cells["1x64B"].LoadSaturated; got != tc.want {
					t.Errorf("%s 1x64B load-bound = %v, want %v (busy %+v)", rows[0].Pair, got, tc.want, rows[0].Cells["1x64B"])
				}
				if rows[0].Cells["accept"].LoadSaturated {
					t.Errorf("%s accept load-bound with an idle load core", rows[0].Pair)
				}
			}
			md := rep.markdown()
			cpuAt, opsAt := strings.Index(md, "### CPU-efficiency ratios"), strings.Index(md, "### Ratios: median of per-round ops/s")
			if cpuAt < 0 || opsAt < 0 {
				t.Fatalf("markdown lacks a ratio table:\n%s", md)
			}
			if tc.want {
				if cpuAt > opsAt || !strings.Contains(md, "saturated on 1x64B**") {
					t.Errorf("load-bound 1x64B: want the CPU-efficiency ratios first, after a line naming 1x64B:\n%s", md)
				}
				if !strings.Contains(md, "| echo-event/crawecho | ≥ 0.95 | 1.00 pass † | 1.00 pass |") ||
					!strings.Contains(md, "| echo-event/crawecho | reference | 1.00 † | 1.00 |") {
					t.Errorf("the load-bound cells (and only they) should carry †:\n%s", md)
				}
			} else if opsAt > cpuAt || strings.Contains(md, "†") {
				t.Errorf("nothing load-bound: want the ops/s ratios first and no mark:\n%s", md)
			}
		})
	}
}

func TestCPUTargets(t *testing.T) {
	// CPU per op: crawecho 9.5 µs, echo-nopoll 10, echo 10.5 and 11.5,
	// cecho and echo-bufferevent-nopoll 10 each: the binding 5 % over C
	// fails ≥ 0.97; busy polling 5 % over passes ≥ 0.91, 15 % over fails;
	// the targets hold on accept too.
	cpu := map[string]map[string]float64{
		"crawecho":                {"1x64B": 9.5, "accept": 9.5},
		"echo-nopoll":             {"1x64B": 10, "accept": 10},
		"echo":                    {"1x64B": 10.5, "accept": 11.5},
		"cecho":                   {"1x64B": 10, "accept": 10},
		"echo-bufferevent-nopoll": {"1x64B": 10, "accept": 10},
	}
	var runs []runRecord
	var servers []string
	for s := range cpu {
		servers = append(servers, s)
	}
	for _, w := range []string{"1x64B", "accept"} {
		for round := 1; round <= 3; round++ {
			for s, c := range cpu {
				r := rec(s, w, round, 100, 0)
				r.ServerCPUus = c[w]
				runs = append(runs, r)
			}
		}
	}
	md := summarise(testConfig(3), names(servers), runs).markdown()
	for _, want := range []string{
		"| echo-nopoll/crawecho | ≥ 0.97 | 0.95 **FAIL** | 0.95 **FAIL** |",
		"| echo/echo-nopoll | ≥ 0.91 | 0.95 pass | 0.87 **FAIL** |",
		"| echo-bufferevent-nopoll/cecho | ≥ 0.97 | 1.00 pass | 1.00 pass |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("no line %q in:\n%s", want, md)
		}
	}
}

func TestFromAnEarlierResultsFileMarksLoadBoundRatios(t *testing.T) {
	// An earlier results.json has no saturated_load_busy: -from uses the
	// default threshold and adds the marks.
	cfg := testConfig(3)
	old := summarise(cfg, names([]string{"crawecho", "echo-event"}), busyRuns(map[string][3]float64{
		"crawecho 1x64B": {0.96, 0.97, 0.95}, "echo-event 1x64B": {0.96, 0.97, 0.95}}))
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(strings.Replace(string(b), `,"saturated_load_busy":0`, "", 1))
	if strings.Contains(string(b), "saturated_load_busy") {
		t.Fatalf("test file still names the threshold: %s", b)
	}
	path := filepath.Join(t.TempDir(), "results.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := reread(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Meta.Saturated != defaultSaturated || !rep.Ratios[0].Cells["1x64B"].LoadSaturated {
		t.Errorf("threshold %v, 1x64B load-bound %v: want %v and true", rep.Meta.Saturated, rep.Ratios[0].Cells["1x64B"].LoadSaturated, defaultSaturated)
	}
	// -from -saturated 0.99 asks again with another threshold.
	if rep, err = reread(path, 0.99); err != nil || rep.Meta.Saturated != 0.99 || rep.Ratios[0].Cells["1x64B"].LoadSaturated {
		t.Errorf("-saturated 0.99: threshold %v, 1x64B load-bound %v (%v): want 0.99 and false", rep.Meta.Saturated, rep.Ratios[0].Cells["1x64B"].LoadSaturated, err)
	}
}

func TestControlPairTellsTheNoise(t *testing.T) {
	// echo-event and echo are the same server: 10 and 10 µs per op on
	// 1x64B, 10 and 11 on accept. The report says a ratio moves by up
	// to 10 % by chance; without the pair it says nothing of it.
	var runs []runRecord
	for round := 1; round <= 3; round++ {
		for s, cpu := range map[string][2]float64{"echo-event": {10, 10}, "echo": {10, 11}} {
			for i, w := range []string{"1x64B", "accept"} {
				r := rec(s, w, round, 100, 0)
				r.ServerCPUus = cpu[i]
				runs = append(runs, r)
			}
		}
	}
	md := summarise(testConfig(3), names([]string{"echo-event", "echo"}), runs).markdown()
	for _, want := range []string{
		"| echo-event/echo | reference | 1.00 | 1.10 |",
		"echo-event/echo is one server under two names: its ratios are off 1.00 by up to 10 %",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("no line %q in:\n%s", want, md)
		}
	}
	md = summarise(testConfig(3), names([]string{"echo"}), runs).markdown()
	if strings.Contains(md, "one server under two names") {
		t.Errorf("a run without echo-event speaks of the control pair:\n%s", md)
	}
}

func TestCPUIdleSaysWhetherAnIdleCPUHalts(t *testing.T) {
	sys := func(files map[string]string) func(string) string {
		return func(p string) string { return files[p] }
	}
	const driver, poll = "/sys/devices/system/cpu/cpuidle/current_driver", "/sys/module/haltpoll/parameters/guest_halt_poll_ns"
	for _, c := range []struct {
		files map[string]string
		want  string
	}{
		{map[string]string{driver: "haltpoll", poll: "0"}, "cpuidle haltpoll, guest_halt_poll_ns=0: an idle CPU halts at once"},
		{map[string]string{driver: "haltpoll", poll: "200000"}, "cpuidle haltpoll, guest_halt_poll_ns=200000: an idle CPU polls that long before it halts"},
		{map[string]string{driver: "haltpoll"}, "cpuidle haltpoll"},
		{map[string]string{driver: "intel_idle", poll: "0"}, "cpuidle intel_idle"},
		{map[string]string{driver: "none"}, ""},
		{nil, ""},
	} {
		if got := cpuIdle(sys(c.files)); got != c.want {
			t.Errorf("cpuIdle(%v) = %q, want %q", c.files, got, c.want)
		}
	}
}

func TestMarkdownSaysHowIdleCPUsWait(t *testing.T) {
	rep := summarise(testConfig(1), names([]string{"crawecho", "echo-nopoll"}), nil)
	rep.Meta.Idle = "cpuidle haltpoll, guest_halt_poll_ns=0: an idle CPU halts at once"
	if md := rep.markdown(); !strings.Contains(md, "- CPUs when idle: "+rep.Meta.Idle+".") {
		t.Errorf("markdown lacks the idle line:\n%s", md)
	}
	rep.Meta.Idle = ""
	if md := rep.markdown(); strings.Contains(md, "CPUs when idle") {
		t.Errorf("markdown has an idle line with nothing to say:\n%s", md)
	}
}
