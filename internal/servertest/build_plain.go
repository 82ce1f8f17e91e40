//go:build !race && !asan

package servertest

import "time"

// The server under test is built as the test binary is (GOEXPERIMENT, such
// as cgocheck2, comes through the environment).
var BuildFlags []string

// ExitCheckTime is what checks at exit add to the server's shutdown.
const ExitCheckTime time.Duration = 0
