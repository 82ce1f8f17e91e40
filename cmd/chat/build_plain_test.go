//go:build !race && !asan

package main

import "time"

// The server under test is built as this test binary is (GOEXPERIMENT, such
// as cgocheck2, comes through the environment).
var chatBuildFlags []string

// exitCheckTime is what checks at exit add to the server's shutdown.
const exitCheckTime time.Duration = 0
