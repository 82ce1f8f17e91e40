//go:build !race && !asan

package main

// The server under test is built as this test binary is (GOEXPERIMENT, such
// as cgocheck2, comes through the environment).
var echoBuildFlags []string
