//go:build asan

package servertest

import (
	"os"
	"time"
)

// The server under test is built as the test binary is, so that
// AddressSanitizer watches the binding's C side inside it too; an error it
// finds, or a leak its check at exit finds, makes the server exit non-zero,
// which the tests check.
var BuildFlags = []string{"-asan"}

// ExitCheckTime is what checks at exit add to the server's shutdown:
// LeakSanitizer stops the process and scans its memory, 0.4 to 0.9 s here.
const ExitCheckTime = 2 * time.Second

func init() {
	// ASan holds freed memory back (256 MiB by default) to catch late
	// use; the tests that bound the server's memory would count it.
	opts := "quarantine_size_mb=8"
	if old := os.Getenv("ASAN_OPTIONS"); old != "" {
		opts = old + ":" + opts
	}
	os.Setenv("ASAN_OPTIONS", opts)
}
