package goid

import "testing"

func TestGetDiffersBetweenGoroutines(t *testing.T) {
	here := Get()
	if here == 0 || Get() != here {
		t.Fatalf("Get() = %#x, then %#x: want the same non-zero value", here, Get())
	}
	other := make(chan uintptr)
	go func() { other <- Get() }()
	if o := <-other; o == here {
		t.Fatalf("another goroutine got the same value %#x", o)
	}
}
