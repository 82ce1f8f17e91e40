//go:build race

package main

import "os"

// The server under test is built as this test binary is, so that the race
// detector watches the binding inside it too. A race it reports makes the
// server exit with status 66, which the tests check.
var echoBuildFlags = []string{"-race"}

func init() {
	// The race runtime waits a second at exit for late reports; the
	// tests hold the server to exiting within one.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
}
