package main

import "math/bits"

// histogram counts latencies in nanoseconds in log-linear buckets: exact
// below 64 ns, then 64 buckets per power of two (under 1.6% error), up to
// about 2^40 ns. It never allocates after creation.
type histogram struct {
	counts [histBuckets]uint64
	total  uint64
	max    int64
}

const (
	histSubBits = 6
	histSub     = 1 << histSubBits // buckets per power of two
	histShifts  = 35               // powers of two above histSub
	histBuckets = histSub + histShifts*histSub
)

func bucketOf(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1 // v>>shift is in [histSub, 2*histSub)
	if shift >= histShifts {
		return histBuckets - 1
	}
	return histSub + shift*histSub + int(v>>uint(shift)) - histSub
}

// bucketMid is the middle of bucket b's range, the value a percentile reports.
func bucketMid(b int) uint64 {
	if b < histSub {
		return uint64(b)
	}
	shift := uint((b - histSub) / histSub)
	lower := uint64((b-histSub)%histSub+histSub) << shift
	return lower + (uint64(1)<<shift)/2
}

func (h *histogram) add(ns int64) {
	if ns < 0 {
		ns = 0
	}
	h.counts[bucketOf(uint64(ns))]++
	h.total++
	h.max = max(h.max, ns)
}

// quantile returns the latency in nanoseconds below which a fraction q of
// the samples lie, 0 when there are none.
func (h *histogram) quantile(q float64) uint64 {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for b, n := range h.counts {
		seen += n
		if seen >= rank {
			return bucketMid(b)
		}
	}
	return bucketMid(histBuckets - 1)
}
