//go:build asan

package evlistener

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The -asan run of the suite (make asan) is only worth its time if it
// reports memory errors on the C side of the binding. These tests commit
// each kind in a child process and check that AddressSanitizer, or
// LeakSanitizer at exit, names it.

const asanProbeEnv = "EVLISTENER_ASAN_PROBE"

func init() {
	// The child: commit the error and exit, before TestMain runs.
	if kind := os.Getenv(asanProbeEnv); kind != "" {
		if !asanProbe(kind) {
			fmt.Fprintf(os.Stderr, "unknown probe %q\n", kind)
			os.Exit(2)
		}
		os.Exit(0)
	}
}

func TestASanReportsCgoMemoryErrors(t *testing.T) {
	for _, kind := range []string{"heap-buffer-overflow", "heap-use-after-free", "detected memory leaks"} {
		t.Run(kind, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), asanProbeEnv+"="+kind)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("child exited 0; AddressSanitizer did not stop it\n%s", out)
			}
			if !strings.Contains(string(out), "ERROR: AddressSanitizer: "+kind) &&
				!strings.Contains(string(out), "ERROR: LeakSanitizer: "+kind) {
				t.Fatalf("child failed (%v) without an AddressSanitizer report of %s:\n%s", err, kind, out)
			}
		})
	}
}
