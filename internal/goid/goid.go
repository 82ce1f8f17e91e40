// Package goid identifies the running goroutine cheaply. It lives apart
// from the cgo package because a package using cgo may not contain Go
// assembly.
package goid

// Get identifies the running goroutine: the address of its runtime g on
// amd64 and arm64, its id elsewhere. A g is reused only after its goroutine
// exits, so the value is unique among live goroutines.
func Get() uintptr { return getg() }
