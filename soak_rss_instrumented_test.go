//go:build race || asan

package evlistener

// The race detector keeps shadow memory and history of its own that grows to
// a plateau of some 10 MiB over a soak while the Go heap stays flat, and
// AddressSanitizer holds freed C memory back (up to 256 MiB) to catch late
// use: in these builds the soak reports resident memory but bounds it only
// in the others.
const rssBounded = false
