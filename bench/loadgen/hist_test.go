package main

import (
	"math"
	"testing"
)

func TestHistogramBucketsCoverValues(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 12345, 1e6, 1e9, 1 << 39} {
		b := bucketOf(v)
		mid := bucketMid(b)
		if rel := math.Abs(float64(mid)-float64(v)) / math.Max(float64(v), 1); rel > 0.016 {
			t.Errorf("value %d: bucket %d reports %d (%.1f%% off)", v, b, mid, rel*100)
		}
	}
	if b := bucketOf(math.MaxUint64); b != histBuckets-1 {
		t.Errorf("huge value in bucket %d, want the last one %d", b, histBuckets-1)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(int64(i) * 1000) // 1 µs .. 1 ms
	}
	for _, tc := range []struct {
		q    float64
		want float64
	}{{0.5, 500e3}, {0.99, 990e3}, {1, 1000e3}} {
		got := float64(h.quantile(tc.q))
		if math.Abs(got-tc.want)/tc.want > 0.016 {
			t.Errorf("quantile(%v) = %v, want %v within 1.6%%", tc.q, got, tc.want)
		}
	}
	var empty histogram
	if got := empty.quantile(0.5); got != 0 {
		t.Errorf("empty quantile = %d, want 0", got)
	}
}
