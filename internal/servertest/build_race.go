//go:build race

package servertest

import (
	"os"
	"time"
)

// The server under test is built as the test binary is, so that the race
// detector watches the binding inside it too. A race it reports makes the
// server exit with status 66, which the tests check.
var BuildFlags = []string{"-race"}

// ExitCheckTime is what checks at exit add to the server's shutdown: none,
// with the race runtime's wait at exit turned off below.
const ExitCheckTime time.Duration = 0

func init() {
	// The race runtime waits a second at exit for late reports; the
	// tests hold the server to exiting within one.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
}
