//go:build race

package evlistener

// The race detector keeps shadow memory and history of its own that grows to
// a plateau of some 10 MiB over a soak while the Go heap stays flat, so the
// soak bounds resident memory only in builds without it.
const raceEnabled = true
