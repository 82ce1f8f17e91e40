//go:build !race && !asan

package evlistener

// rssBounded says whether the soak can bound resident memory: see
// soak_rss_instrumented_test.go for the builds where it cannot.
const rssBounded = true
