// Command loadgen is the benchmark's load generator. It drives an echo server
// on a loopback address with one workload for a bounded time and prints one
// JSON line: ops/s, p50/p99 latency and errors. Any error makes it exit 1.
//
// Workloads:
//
//	NxSIZE  N connections, each sends a SIZE-byte message and waits for its
//	        full echo before sending the next (ping-pong); every echo is
//	        compared with what was sent. E.g. 1x64B, 50x64B, 50x16KiB, 1000x64B.
//	accept  -c connectors, each in a loop: connect, send 1 byte, read its
//	        echo, close with SO_LINGER 0 (an RST, so no TIME_WAIT eats the
//	        ephemeral ports).
//	kvNxP   N connections to a key-value server (cmd/kv's protocol), each
//	        sending P commands at once (pipelined) and waiting for all P
//	        replies before sending more. Each connection alternates SET and
//	        GET on a key of its own, every GET reading the value its SET just
//	        wrote, so that every reply is known and compared. E.g. kv1x1,
//	        kv50x1, kv50x16.
//
// One op is one echoed message (ping-pong), one connection (accept) or one
// command (kv); a latency runs from the first byte written (or connect) to
// the last byte read (or close), for kv of the P commands sent together.
// Only ops that complete inside the measuring window, after the warm-up,
// count.
//
// The generator runs on one core: a single epoll loop drives all
// connections with non-blocking sockets and edge-triggered events, and
// reuses every buffer, so the steady state makes no allocation and about
// two syscalls per op beyond epoll_wait.
//
// -hold is for counting the server's system calls (bin/runner -syscalls):
// the generator prints "loadgen: connected" on stderr once every connection
// is open and waits for a line on stdin before it starts the clock; after the
// window it lets the ops in flight finish (counted in ops_all, so that
// ops_all is every message the server echoed after the go-ahead), prints
// "loadgen: finished" and waits for stdin to close before it closes the
// connections. Whoever counts then sees neither the setup nor the teardown.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/evlistener/evlistener/bench/internal/loadresult"
)

// epollET is EPOLLET as an unsigned mask (package syscall declares it negative).
const epollET = 1 << 31

// Bounds on what one run may ask for.
const (
	maxConns    = 10000
	maxSize     = 16 << 20
	maxDuration = 10 * time.Minute
)

func main() {
	addr := flag.String("addr", "", "server address HOST:PORT (loopback only)")
	workload := flag.String("w", "1x64B", "workload: NxSIZE ping-pong (1x64B, 50x64B, 50x16KiB, 1000x64B), accept, or kvNxP (kv1x1, kv50x1, kv50x16)")
	dur := flag.Duration("d", 2*time.Second, "measuring window")
	warmup := flag.Duration("warmup", 200*time.Millisecond, "load before the window, not counted")
	connectors := flag.Int("c", 4, "concurrent connectors in the accept workload")
	stall := flag.Duration("stall", time.Second, "an op still unanswered this long at the end is a stall")
	hold := flag.Bool("hold", false, "wait on stdin after connecting and after the window (for bin/runner -syscalls)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: loadgen -addr HOST:PORT [-w WORKLOAD] [-d DUR] [-warmup DUR] [-c N]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 || *addr == "" {
		flag.Usage()
		os.Exit(2)
	}

	cfg, err := parseWorkload(*workload)
	if err == nil && cfg.accept {
		cfg.conns = *connectors
	}
	if err == nil {
		err = checkBounds(cfg.conns, *dur, *warmup)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(2)
	}
	sa, family, err := loopbackSockaddr(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(2)
	}

	l, err := newLoader(cfg, sa, family)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
	if *hold {
		l.hold = holdOn(os.Stdin)
	}
	res := l.run(*warmup, *dur, *stall)
	res.Workload = *workload
	res.Addr = *addr
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
	if res.Errors > 0 || res.Stalls > 0 {
		fmt.Fprintf(os.Stderr, "loadgen: %d errors, %d stalls, first: %s\n", res.Errors, res.Stalls, res.FirstError)
		os.Exit(1)
	}
}

// holdOn announces each stage on stderr and waits for a line, or the end,
// of in.
func holdOn(in io.Reader) func(stage string) {
	r := bufio.NewReader(in)
	return func(stage string) {
		fmt.Fprintf(os.Stderr, "loadgen: %s\n", stage)
		_, _ = r.ReadString('\n')
	}
}

type workload struct {
	accept bool
	conns  int
	size   int
	// pipeline is the number of commands sent at once on a kv workload;
	// 0 on the others.
	pipeline int
}

// maxPipeline bounds P in kvNxP.
const maxPipeline = 1024

// parseWorkload reads "accept", "NxSIZE" where SIZE is a number followed
// by B, KiB or MiB ("×" is taken for "x"), or "kvNxP".
func parseWorkload(s string) (workload, error) {
	if s == "accept" {
		return workload{accept: true, size: 1}, nil
	}
	if spec, ok := strings.CutPrefix(s, "kv"); ok {
		n, p, ok := strings.Cut(strings.ReplaceAll(spec, "×", "x"), "x")
		conns, err1 := strconv.Atoi(n)
		pipe, err2 := strconv.Atoi(p)
		if !ok || err1 != nil || err2 != nil || conns < 1 || pipe < 1 || pipe > maxPipeline {
			return workload{}, fmt.Errorf("workload %q: want kvNxP, N connections of P commands at once (1 to %d)", s, maxPipeline)
		}
		return workload{conns: conns, pipeline: pipe, size: pipe * kvSetLen}, nil
	}
	n, size, ok := strings.Cut(strings.ReplaceAll(s, "×", "x"), "x")
	if !ok {
		return workload{}, fmt.Errorf("workload %q: want accept or NxSIZE such as 50x64B", s)
	}
	conns, err := strconv.Atoi(n)
	if err != nil || conns < 1 {
		return workload{}, fmt.Errorf("workload %q: bad connection count %q", s, n)
	}
	mult := 1
	switch {
	case strings.HasSuffix(size, "KiB"):
		mult, size = 1<<10, strings.TrimSuffix(size, "KiB")
	case strings.HasSuffix(size, "MiB"):
		mult, size = 1<<20, strings.TrimSuffix(size, "MiB")
	case strings.HasSuffix(size, "B"):
		size = strings.TrimSuffix(size, "B")
	default:
		return workload{}, fmt.Errorf("workload %q: size needs a unit: B, KiB or MiB", s)
	}
	v, err := strconv.Atoi(size)
	if err != nil || v < 1 || v > maxSize/mult {
		return workload{}, fmt.Errorf("workload %q: size must be 1 B to %d MiB", s, maxSize>>20)
	}
	return workload{conns: conns, size: v * mult}, nil
}

func checkBounds(conns int, dur, warmup time.Duration) error {
	switch {
	case conns < 1 || conns > maxConns:
		return fmt.Errorf("connections: %d is outside 1-%d", conns, maxConns)
	case dur <= 0 || dur > maxDuration:
		return fmt.Errorf("duration %v is outside (0, %v]", dur, maxDuration)
	case warmup < 0 || warmup > maxDuration:
		return fmt.Errorf("warm-up %v is outside [0, %v]", warmup, maxDuration)
	}
	return nil
}

// loopbackSockaddr resolves addr and refuses anything but a loopback address:
// this generator never sends traffic off the machine.
func loopbackSockaddr(addr string) (syscall.Sockaddr, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		ips, err := net.LookupIP(host)
		if err != nil || len(ips) == 0 {
			return nil, 0, fmt.Errorf("address %s: cannot resolve %q", addr, host)
		}
		ip = ips[0]
	}
	if !ip.IsLoopback() {
		return nil, 0, fmt.Errorf("address %s: not a loopback address", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return nil, 0, fmt.Errorf("address %s: bad port", addr)
	}
	if ip4 := ip.To4(); ip4 != nil {
		sa := &syscall.SockaddrInet4{Port: p}
		copy(sa.Addr[:], ip4)
		return sa, syscall.AF_INET, nil
	}
	sa := &syscall.SockaddrInet6{Port: p}
	copy(sa.Addr[:], ip.To16())
	return sa, syscall.AF_INET6, nil
}

// conn is one ping-pong connection or one accept connector slot.
type conn struct {
	slot       int // index in loader.conns, the epoll user data
	fd         int // -1 when closed
	out, in    []byte
	want       []byte // what in must be once read: out for an echo
	outBuf     []byte // kv: where out and want are built, for every op
	wantBuf    []byte
	woff, roff int
	seq        uint64
	t0         time.Duration // when the op in flight started, since loader.base
	connecting bool          // accept: waiting for connect to finish
	idle       bool          // ping-pong: no message in flight
}

type loader struct {
	cfg        workload
	sa         syscall.Sockaddr
	family     int
	epfd       int
	conns      []conn
	base       time.Time
	from       time.Duration // measuring window, since base
	to         time.Duration
	ops        uint64 // in the window
	opsAll     uint64 // since the start, warm-up included
	hist       histogram
	errs       int
	stalls     int
	first      error
	live       int           // ping-pong connections still open
	setupLimit time.Duration // for connecting and priming every connection
	// priming: during setup, a completed echo only counts in primed.
	priming bool
	primed  int
	// hold, when set, is called with "connected" before the clock starts
	// and with "finished" after the window and its ops in flight, before
	// any connection closes (-hold).
	hold func(stage string)
}

func newLoader(cfg workload, sa syscall.Sockaddr, family int) (*loader, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	l := &loader{cfg: cfg, sa: sa, family: family, epfd: epfd, conns: make([]conn, cfg.conns),
		setupLimit: 10 * time.Second}
	for i := range l.conns {
		c := &l.conns[i]
		c.slot, c.fd = i, -1
		if cfg.pipeline > 0 {
			c.outBuf = make([]byte, 0, cfg.pipeline*kvSetLen)
			c.wantBuf = make([]byte, 0, cfg.pipeline*kvGetReplyLen)
			c.in = make([]byte, 0, cfg.pipeline*kvGetReplyLen)
			continue
		}
		c.out = make([]byte, cfg.size)
		c.in = make([]byte, cfg.size)
		for j := range c.out {
			c.out[j] = byte('a' + (i+j)%26)
		}
		c.want = c.out
	}
	return l, nil
}

func (l *loader) now() time.Duration { return time.Since(l.base) }

// errStall marks a timing failure: the server answered too late or not at
// all. On a busy machine that can be the machine; a wrong answer never is.
var errStall = errors.New("stalled")

// stalled counts a stall and keeps it as the first failure if it is.
func (l *loader) stalled(err error) {
	l.stalls++
	if l.first == nil {
		l.first = err
	}
}

// fail counts an error, keeps the first, and closes c.
func (l *loader) fail(c *conn, err error) {
	l.errs++
	if l.first == nil {
		l.first = err
	}
	l.closeConn(c)
	if !l.cfg.accept {
		l.live--
	}
}

func (l *loader) closeConn(c *conn) {
	if c.fd >= 0 {
		syscall.Close(c.fd) // SO_LINGER 0: an RST, no TIME_WAIT
		c.fd = -1
	}
}

// socket makes a non-blocking TCP socket that closes with an RST.
func (l *loader) socket() (int, error) {
	fd, err := syscall.Socket(l.family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0}); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("SO_LINGER: %w", err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("TCP_NODELAY: %w", err)
	}
	return fd, nil
}

func (l *loader) register(fd, slot int) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | epollET, Fd: int32(slot)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// dialAll opens the ping-pong connections in waves of dialWave, few enough
// that no server's backlog (libevent's default is 128) overflows, and primes
// each wave before the next, all within a bounded wait.
func (l *loader) dialAll(limit time.Duration) error {
	const dialWave = 64
	deadline := time.Now().Add(limit)
	events := make([]syscall.EpollEvent, dialWave)
	connected := make([]bool, len(l.conns))
	for lo := 0; lo < len(l.conns); lo += dialWave {
		hi := min(lo+dialWave, len(l.conns))
		for i := lo; i < hi; i++ {
			fd, err := l.socket()
			if err != nil {
				return err
			}
			l.conns[i].fd = fd
			if err := syscall.Connect(fd, l.sa); err != nil && err != syscall.EINPROGRESS {
				return fmt.Errorf("connect %d: %w", i, err)
			}
			if err := l.register(fd, i); err != nil {
				return err
			}
		}
		pending := hi - lo
		err := l.pollUntil(deadline, events, func() bool { return pending == 0 }, func(ev syscall.EpollEvent) error {
			i := int(ev.Fd)
			if i < lo || i >= hi || connected[i] { // an earlier wave's late event
				return nil
			}
			if ev.Events&(syscall.EPOLLERR|syscall.EPOLLHUP) != 0 || ev.Events&syscall.EPOLLOUT != 0 {
				if err := sockError(l.conns[i].fd); err != nil {
					return fmt.Errorf("connect %d: %w", i, err)
				}
				if ev.Events&syscall.EPOLLHUP != 0 {
					return fmt.Errorf("connect %d: hang-up", i)
				}
				connected[i] = true
				pending--
			}
			return nil
		})
		if err == errStall {
			return fmt.Errorf("connect: %d connections unanswered after %v: %w", pending, limit, errStall)
		}
		if err != nil {
			return err
		}
		if err := l.prime(lo, hi, deadline); err != nil {
			return err
		}
	}
	l.live = len(l.conns)
	return nil
}

// prime echoes one message on each of the connections lo..hi-1 and waits
// for all of them. It proves that the server accepted them before the next
// wave is dialled: a client's connect finishes before the server accepts,
// so waves alone could still fill a slow server's accept queue and cost a
// SYN retransmit (a second or more) per dropped connection.
func (l *loader) prime(lo, hi int, deadline time.Time) error {
	events := make([]syscall.EpollEvent, hi-lo)
	l.priming, l.primed = true, 0
	defer func() { l.priming = false }()
	for i := lo; i < hi; i++ {
		l.start(&l.conns[i], 0)
	}
	err := l.pollUntil(deadline, events, func() bool { return l.primed >= hi-lo || l.errs > 0 }, func(ev syscall.EpollEvent) error {
		if i := int(ev.Fd); i >= lo && i < hi && l.conns[i].fd >= 0 {
			l.pingPong(&l.conns[i])
		}
		return nil
	})
	if err == errStall {
		return fmt.Errorf("setup: %d of %d echoes unanswered: %w", hi-lo-l.primed, hi-lo, errStall)
	}
	if err != nil {
		return err
	}
	if l.errs > 0 {
		return fmt.Errorf("setup: %w", l.first)
	}
	return nil
}

// pollUntil hands each epoll event to handle until done, handle fails, or
// deadline passes, when it returns errStall. It is setup's loop; the window
// has its own (poll), which never blocks past 5 ms.
func (l *loader) pollUntil(deadline time.Time, events []syscall.EpollEvent, done func() bool, handle func(syscall.EpollEvent) error) error {
	for !done() {
		wait := time.Until(deadline)
		if wait <= 0 {
			return errStall
		}
		n, err := syscall.EpollWait(l.epfd, events, int(wait/time.Millisecond)+1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			if err := handle(ev); err != nil {
				return err
			}
		}
	}
	return nil
}

func sockError(fd int) error {
	v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
	if err != nil {
		return err
	}
	if v != 0 {
		return syscall.Errno(v)
	}
	return nil
}

func (l *loader) run(warmup, dur, stall time.Duration) loadresult.Result {
	res := loadresult.Result{Conns: l.cfg.conns, Size: l.cfg.size, Seconds: dur.Seconds()}
	setup := time.Now()
	if !l.cfg.accept {
		if err := l.dialAll(l.setupLimit); err != nil {
			if errors.Is(err, errStall) {
				l.stalls++
			} else {
				l.errs = max(l.errs, 1) // a failed echo while priming counted already
			}
			l.first = err
		}
	}
	res.SetupMs = float64(time.Since(setup).Microseconds()) / 1e3

	if l.errs == 0 && l.stalls == 0 {
		if l.hold != nil {
			l.hold("connected")
		}
		l.base = time.Now()
		l.from, l.to = warmup, warmup+dur
		for i := range l.conns {
			l.start(&l.conns[i], 0)
		}
		l.loop()
		if l.hold != nil {
			l.drain(stall)
		}
		now := l.now()
		for i := range l.conns {
			c := &l.conns[i]
			if c.fd >= 0 && !c.idle && now-c.t0 > stall {
				l.stalled(fmt.Errorf("connection %d: op unanswered for %v: %w", i, (now - c.t0).Round(time.Millisecond), errStall))
			}
		}
		if l.ops == 0 && l.errs == 0 && l.stalls == 0 {
			l.stalled(fmt.Errorf("no op completed in the window: %w", errStall))
		}
		if l.hold != nil {
			l.hold("finished")
		}
	}
	for i := range l.conns {
		l.closeConn(&l.conns[i])
	}
	syscall.Close(l.epfd)

	res.Ops = l.ops
	res.OpsAll = l.opsAll
	res.OpsPerSec = float64(l.ops) / dur.Seconds()
	res.P50us = float64(l.hist.quantile(0.50)) / 1e3
	res.P99us = float64(l.hist.quantile(0.99)) / 1e3
	res.MaxUs = float64(l.hist.max) / 1e3
	res.Errors = l.errs
	res.Stalls = l.stalls
	if l.first != nil {
		res.FirstError = l.first.Error()
	}
	return res
}

// loop dispatches events until the window ends (or every connection failed).
func (l *loader) loop() {
	events := make([]syscall.EpollEvent, 512)
	for l.now() < l.to && (l.cfg.accept || l.live > 0) {
		if !l.poll(events) {
			return
		}
	}
}

// drain dispatches events, at most for limit, until no op that began in the
// window is still in flight; none starts after the window.
func (l *loader) drain(limit time.Duration) {
	events := make([]syscall.EpollEvent, 512)
	end := l.now() + limit
	for l.inFlight() > 0 && l.now() < end {
		if !l.poll(events) {
			return
		}
	}
}

// inFlight counts the ops begun and not yet done.
func (l *loader) inFlight() int {
	n := 0
	for i := range l.conns {
		if c := &l.conns[i]; c.fd >= 0 && (l.cfg.accept || !c.idle) {
			n++
		}
	}
	return n
}

// poll waits for events at most 5 ms and dispatches them; false after an
// epoll error, which it counts.
func (l *loader) poll(events []syscall.EpollEvent) bool {
	n, err := syscall.EpollWait(l.epfd, events, 5)
	if err == syscall.EINTR {
		return true
	}
	if err != nil {
		l.errs++
		if l.first == nil {
			l.first = fmt.Errorf("epoll_wait: %w", err)
		}
		return false
	}
	for _, ev := range events[:n] {
		c := &l.conns[ev.Fd]
		if c.fd < 0 {
			continue
		}
		if l.cfg.accept {
			l.acceptEvent(c, ev.Events)
		} else {
			l.pingPong(c)
		}
	}
	return true
}

// done records an op that ran from c.t0 to now, if it lies in the window:
// on kv, its P commands.
func (l *loader) done(c *conn, now time.Duration) {
	ops := uint64(max(l.cfg.pipeline, 1))
	l.opsAll += ops
	if c.t0 >= l.from && now <= l.to {
		l.ops += ops
		l.hist.add(int64(now - c.t0))
	}
}

// start begins the next op on c at time now.
func (l *loader) start(c *conn, now time.Duration) {
	c.t0 = now
	c.seq++
	if l.cfg.accept {
		l.dial(c)
		return
	}
	c.woff, c.roff, c.idle = 0, 0, false
	switch {
	case l.cfg.pipeline > 0:
		l.kvCommands(c)
	case len(c.out) >= 8:
		binary.LittleEndian.PutUint64(c.out, c.seq) // a stale or reordered echo cannot match
	default:
		c.out[0] = byte(c.seq)
	}
	// Nothing can be read before the message is out, so a fully written
	// message waits for its EPOLLIN edge instead of trying a read that would
	// fail with EAGAIN.
	n, err := syscall.Write(c.fd, c.out)
	switch {
	case n == len(c.out):
		c.woff = n
		return
	case n > 0:
		c.woff = n
	case err != syscall.EAGAIN && err != syscall.EINTR:
		l.fail(c, fmt.Errorf("write: %w", err))
		return
	}
	l.pingPong(c)
}

// pingPong moves c's message forward until the socket would block. With
// edge-triggered events it must read until EAGAIN, or until every byte sent
// has come back: an echo server sends nothing more.
func (l *loader) pingPong(c *conn) {
	if c.idle {
		return
	}
	for {
		progressed := false
		if c.woff < len(c.out) {
			n, err := syscall.Write(c.fd, c.out[c.woff:])
			switch {
			case n > 0:
				c.woff += n
				progressed = true
			case err != syscall.EAGAIN && err != syscall.EINTR:
				l.fail(c, fmt.Errorf("write: %w", err))
				return
			}
		}
		// An echo cannot come back before it went out; kv replies can be
		// longer than their commands.
		if c.roff < c.woff || (l.cfg.pipeline > 0 && c.roff < len(c.in)) {
			n, err := syscall.Read(c.fd, c.in[c.roff:])
			switch {
			case n > 0:
				c.roff += n
				progressed = true
			case n == 0 && err == nil:
				l.fail(c, errors.New("read: server closed the connection"))
				return
			case err != syscall.EAGAIN && err != syscall.EINTR:
				l.fail(c, fmt.Errorf("read: %w", err))
				return
			}
		}
		if c.roff == len(c.in) {
			if !bytes.Equal(c.in, c.want) {
				l.fail(c, fmt.Errorf("answer to message %d differs from the one expected: %.60q", c.seq, c.in))
				return
			}
			c.idle = true
			if l.priming {
				l.primed++
				return
			}
			now := l.now()
			l.done(c, now)
			if now < l.to {
				l.start(c, now)
			}
			return
		}
		if !progressed {
			return
		}
	}
}

// dial begins an accept-workload op: a non-blocking connect.
func (l *loader) dial(c *conn) {
	fd, err := l.socket()
	if err != nil {
		l.fail(c, err)
		return
	}
	c.fd = fd
	c.connecting = true
	if err := syscall.Connect(fd, l.sa); err != nil && err != syscall.EINPROGRESS {
		l.fail(c, fmt.Errorf("connect: %w", err))
		return
	}
	if err := l.register(fd, c.slot); err != nil {
		l.fail(c, err)
	}
	// A failed dial leaves the slot idle rather than retrying at once: a
	// server that refuses connections must not spin this loop.
}

// acceptEvent moves an accept-workload op forward: connected, then 1 byte
// out, then its echo back, then close and start the next.
func (l *loader) acceptEvent(c *conn, events uint32) {
	if c.connecting {
		if events&(syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
			err := sockError(c.fd)
			if err == nil {
				err = errors.New("hang-up")
			}
			l.fail(c, fmt.Errorf("connect: %w", err))
			l.restart(c)
			return
		}
		if events&syscall.EPOLLOUT == 0 {
			return
		}
		c.connecting = false
		c.out[0] = byte(c.seq)
		if n, err := syscall.Write(c.fd, c.out[:1]); n != 1 {
			l.fail(c, fmt.Errorf("write: %v", err))
			l.restart(c)
			return
		}
		return // its echo raises another event
	}
	n, err := syscall.Read(c.fd, c.in[:1])
	switch {
	case n == 1 && c.in[0] == c.out[0]:
		l.closeConn(c)
		now := l.now()
		l.done(c, now)
		if now < l.to {
			l.start(c, now)
		}
	case n == 1:
		l.fail(c, errors.New("echo differs from the byte sent"))
		l.restart(c)
	case n == 0 && err == nil:
		l.fail(c, errors.New("read: server closed the connection before echoing"))
		l.restart(c)
	case err != syscall.EAGAIN && err != syscall.EINTR:
		l.fail(c, fmt.Errorf("read: %w", err))
		l.restart(c)
	}
}

// restart begins a new accept op after a failed one, within the window.
func (l *loader) restart(c *conn) {
	if now := l.now(); now < l.to {
		l.start(c, now)
	}
}

// The kv workload's commands and replies, each of a fixed length: a key of
// kvKeyLen bytes per connection and values of 16 hex digits.
const (
	kvKeyLen      = len("key:000000")
	kvSetLen      = len("SET  \r\n") + kvKeyLen + 16
	kvGetReplyLen = len("$16\r\n\r\n") + 16
)

// kvCommands builds c's next P commands in c.out and the replies they must
// get in c.want. Command number r of the connection (from 0) is a SET of
// the value r when r is even, else a GET, which must read the value r-1
// that the SET before it wrote.
func (l *loader) kvCommands(c *conn) {
	p := l.cfg.pipeline
	out, want := c.outBuf[:0], c.wantBuf[:0]
	for i := range p {
		r := (c.seq-1)*uint64(p) + uint64(i)
		if r%2 == 0 {
			out = appendKey(append(out, "SET "...), c.slot)
			out = append(appendHex16(append(out, ' '), r), "\r\n"...)
			want = append(want, "+OK\r\n"...)
		} else {
			out = append(appendKey(append(out, "GET "...), c.slot), "\r\n"...)
			want = append(appendHex16(append(want, "$16\r\n"...), r-1), "\r\n"...)
		}
	}
	c.out, c.want, c.in = out, want, c.in[:len(want)]
}

func appendKey(b []byte, slot int) []byte {
	b = append(b, "key:"...)
	for d := 100000; d > 0; d /= 10 {
		b = append(b, byte('0'+slot/d%10))
	}
	return b
}

func appendHex16(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[v>>uint(shift)&0xf])
	}
	return b
}
