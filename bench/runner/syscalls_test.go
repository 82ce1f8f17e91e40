package main

import (
	"strings"
	"testing"
)

// straceOutput is strace 6.1's -c summary as -o writes it.
const straceOutput = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 54.42    0.413439         778       531         2 futex
 13.65    0.103693          11      9139        19 sendto
  4.42    0.033566           3      9139           read
  0.27    0.002024          10       189           epoll_wait
  0.09    0.000687           9        69           epoll_ctl
  0.02    0.000118         118         1           restart_syscall
------ ----------- ----------- --------- --------- ----------------
100.00    0.759726          39     19343        22 total
`

func TestParseStraceC(t *testing.T) {
	got, err := parseStraceC(straceOutput)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]syscallCount{
		"futex": {531, 2}, "sendto": {9139, 19}, "read": {9139, 0},
		"epoll_wait": {189, 0}, "epoll_ctl": {69, 0}, "restart_syscall": {1, 0},
	}
	if len(got) != len(want) {
		t.Errorf("got %d syscalls %v, want %d (no total row)", len(got), got, len(want))
	}
	for name, c := range want {
		if got[name] != c {
			t.Errorf("%s = %+v, want %+v", name, got[name], c)
		}
	}
	if _, err := parseStraceC("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n"); err == nil {
		t.Errorf("a file without the summary table parsed")
	}
}

func TestSyscallTableIsPerOpByColumn(t *testing.T) {
	rep := &syscallReport{
		Servers:   []string{"cecho", "goecho"},
		Workloads: []string{"1x64B"},
		Runs: []syscallRun{
			{Server: "cecho", Workload: "1x64B", Ops: 100, Calls: map[string]syscallCount{
				"readv": {100, 0}, "writev": {100, 0}, "epoll_wait": {200, 0}, "epoll_ctl": {200, 0},
				"ioctl": {100, 0}, "close": {1, 0}, "getpid": {1, 0}, "mmap": {2, 0}, "brk": {3, 0},
			}},
			{Server: "goecho", Workload: "1x64B", Error: "loadgen: exited before \"loadgen: connected\""},
		},
	}
	md := rep.markdown()
	// 100+100+200+200+100+1+1+2+3 = 707 calls over 100 ops; others are
	// ioctl, close, getpid, mmap, brk: 1.07, the largest three named.
	want := "| cecho | 100 | 7.07 | 1.00 | 1.00 | 2.00 | 2.00 | 0 | 0 | 1.07: ioctl 1.00, brk 0.03, mmap 0.02 |"
	if !strings.Contains(md, want) {
		t.Errorf("markdown lacks the row\n%s\nin\n%s", want, md)
	}
	if !strings.Contains(md, "| goecho | failed |") {
		t.Errorf("markdown does not show goecho's failed count:\n%s", md)
	}
	rep.Runs[0].Calls["read"] = syscallCount{50, 50}
	if md := rep.markdown(); !strings.Contains(md, "| 1.50 (0.50 failed) |") {
		t.Errorf("reads that failed are not shown in the read column:\n%s", md)
	}
	if n, _ := rep.failed(); n != 1 {
		t.Errorf("failed() = %d, want 1", n)
	}
}
