#!/bin/bash
# profile.sh WORKLOAD SERVER [ARGS...]: where one op's server CPU time goes.
#
# Runs SERVER (a path and its flags, e.g. bin/crawecho, or bin/echo
# -busy-poll 0) pinned to CPU 0 with GOMAXPROCS=1, as bin/runner does, and
# bin/loadgen -hold pinned to CPU 1. Once the load generator has connected,
# perf record samples every thread of the server over the measuring window
# (DURATION, default 3s) and the ops in flight after it, and the server's
# CPU time is read before and after from /proc/PID/task/*/schedstat.
# Prints, per category, the share of the server's samples and that share of
# its CPU time per op, in µs. Kernel samples go to the system call they ran
# in (the frame below do_syscall_64), or to "interrupts, scheduler, faults"
# without one; user samples go by their own function (bench/README.md,
# "Where the CPU time goes", says which is which).
#
# Needs perf (Debian: linux-perf) allowed to record the user's own processes
# (perf_event_paranoid <= 2). Run from bench/ after make build.
set -euo pipefail
w=${1:?usage: profile.sh WORKLOAD SERVER [ARGS...]}
shift
dur=${DURATION:-3s}
dir=$(mktemp -d)
spid= lpid=
cleanup() {
	[ -n "$lpid" ] && kill "$lpid" 2>/dev/null || true
	[ -n "$spid" ] && kill "$spid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

# wait_for FILE TEXT: until FILE holds TEXT, at most 10 s.
wait_for() {
	for _ in $(seq 200); do grep -q "$2" "$1" && return 0; sleep 0.05; done
	echo "profile.sh: no \"$2\" in $1:" >&2
	cat "$1" >&2
	exit 1
}
# cpu_ns: the server's CPU time so far, every thread, in ns.
cpu_ns() { cat /proc/"$spid"/task/*/schedstat | awk '{t += $1} END {printf "%d", t}'; }

port=$((20000 + RANDOM % 20000))
GOMAXPROCS=1 taskset -c 0 "$@" "$port" 2>"$dir/server.err" &
spid=$!
wait_for "$dir/server.err" listening
mkfifo "$dir/in"
taskset -c 1 ./bin/loadgen -addr "127.0.0.1:$port" -w "$w" -d "$dur" -warmup 0 -hold \
	<"$dir/in" >"$dir/load.json" 2>"$dir/load.err" &
lpid=$!
exec 3>"$dir/in"
wait_for "$dir/load.err" "loadgen: connected"
perf record -q -F 4999 -g -p "$spid" -o "$dir/perf.data" 2>"$dir/perf.err" &
ppid=$!
sleep 0.2 # perf attaches in the background; start the clock once it has
c0=$(cpu_ns)
echo go >&3
wait_for "$dir/load.err" "loadgen: finished"
c1=$(cpu_ns)
kill -INT "$ppid"
wait "$ppid" || true
exec 3>&- # the load generator closes its connections and exits
wait "$lpid"
lpid=
ops=$(grep -o '"ops_all":[0-9]*' "$dir/load.json" | cut -d: -f2)
[ "${ops:-0}" -gt 0 ] || { echo "profile.sh: no ops: $(cat "$dir/load.json")" >&2; exit 1; }

perf script -i "$dir/perf.data" -F period,ip,sym,dso 2>/dev/null | awk -v cpu_ns=$((c1 - c0)) -v ops="$ops" -v what="$* on $w" '
function category(   i, s, d, sys) {
	s = sym[1]; d = dso[1]
	if (d ~ /kernel/) {
		for (i = 1; i <= n; i++)
			if (sym[i] ~ /^do_syscall_64$/) {
				if (i == 1) return "kernel: system call entry and exit"
				# The frame it called is the call: __x64_sys_sendto,
				# ksys_read, __do_sys_..., or inlined further down.
				sys = sym[i - 1]; sub(/^(__x64_sys_|__do_sys_|__se_sys_|ksys_|__sys_|do_)/, "", sys)
				if (sys ~ /^(x64_sys_call|syscall_exit_to_user_mode|exit_to_user_mode|syscall_trace_enter)/) return "kernel: system call entry and exit"
				if (sys ~ /^(read|readv|recvfrom)$/) return "kernel: read"
				if (sys ~ /^(write|writev|sendto|sendmsg)$/) return "kernel: write/send"
				if (sys ~ /^epoll_(p)?wait/) return "kernel: epoll_wait, sleeping and waking"
				if (sys ~ /^(futex|nanosleep|sched_yield|madvise|mmap|munmap|rt_sigreturn|tgkill|getpid)$/) return "kernel: Go runtime calls (futex, nanosleep, ...)"
				return "kernel: " sys
			}
		return "kernel: interrupts, scheduler, faults"
	}
	if (d ~ /libevent/) return "libevent"
	if (d ~ /libc/) return "libc"
	if (d ~ /vdso/) return "vdso (clock reads)"
	if (s ~ /^runtime\.(cgocall|asmcgocall|cgoCheck|cgoIsGoPointer|inHeapOrStack|cgoUse)|^_C2func_|^_Cfunc_/) return "cgo: Go→C calls"
	if (s ~ /^runtime\.(cgocallback|exitsyscall|reentersyscall|entersyscall|casgstatus|lockOSThread|unlockOSThread|dropm|needm|save_g|load_g|setg)|^crosscall2$|^_cgoexp_|^_cgo_|^(goEvent|goListenerAccept|goListenerError|goBufferRead|goBufferWrite|goBufferEvent|goBufferEventCB)$/) {
		for (i = 2; i <= n; i++) {
			if (sym[i] ~ /^runtime\.cgocall$/) return "cgo: Go→C calls"
			if (sym[i] ~ /^(runtime\.cgocallback|crosscall2)/) return "cgo: C→Go callbacks"
		}
		return "cgo: C→Go callbacks"
	}
	if (s ~ /^(syscall\.|internal\/runtime\/syscall|runtime\/internal\/syscall)/) return "Go: system call stubs"
	if (s ~ /^runtime\.(mallocgc|newobject|memclr|gc|scan|mark|heap|greyobject|findObject|sweep|mspan|mcache|mcentral|nextFree|deductAssist|(.*)[Ss]pan|tryDefer|wbBuf|bulkBarrier|typePointers|writeHeapBits)|^runtime\.\(\*m(span|cache|central|heap)\)/) return "Go runtime: allocation, GC"
	if (s ~ /evlistener\.\(\*Base\)\.(callback|yieldIfDue)|^runtime\.(nanotime|deferreturn|gorecover)|^time\.(Since|Now|runtimeNano)/) return "binding: callback prologue (clock, yield check, recover)"
	if (s ~ /evlistener\.(.*[Hh]andle|\(\*Base\)\.(register|unregister|lookup))/) return "binding: handle registry"
	if (s ~ /evlistener/) return "binding: other Go"
	if (s ~ /^runtime\./) return "Go runtime: scheduler, other"
	return "the server'"'"'s own code"
}
function flush() {
	if (n > 0) { c = category(); samples[c] += period; total += period }
	n = 0
}
/^ *[0-9]+ *$/ { flush(); period = $1; next }
/^\t/ {
	line = $0; sub(/^\t */, "", line)
	# "ADDR SYMBOL (DSO)": the symbol may hold spaces and parentheses.
	d = line; sub(/.*\(/, "", d); sub(/\)$/, "", d)
	s = line; sub(/^[0-9a-f]+ /, "", s); sub(/ \([^()]*\)$/, "", s); sub(/\+0x[0-9a-f]+$/, "", s)
	n++; sym[n] = s; dso[n] = d
	next
}
END {
	flush()
	per = cpu_ns / ops / 1000
	printf "%s: %d ops, %.2f µs of server CPU per op, %d samples\n\n", what, ops, per, total / 200040
	printf "| where | share | µs per op |\n|---|---:|---:|\n"
	for (c in samples) printf "%s\t%.1f\t%.2f\n", c, 100 * samples[c] / total, per * samples[c] / total | "sort -t \"\t\" -k3 -rn | awk -F \"\t\" \x27{printf \"| %s | %s %% | %s |\\n\", $1, $2, $3}\x27"
}'
