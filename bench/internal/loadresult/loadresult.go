// Package loadresult holds the one JSON line that bin/loadgen prints on
// stdout and bin/runner reads back, so that the two cannot drift apart.
//
// The JSON field names are a format: the runner copies them into every run
// of results.json, and `bin/runner -from` reads older files by them.
package loadresult

// Result is what one load generator run measured.
type Result struct {
	Workload   string  `json:"workload"`
	Addr       string  `json:"addr"`
	Conns      int     `json:"conns"`
	Size       int     `json:"size"`
	Seconds    float64 `json:"seconds"`
	Ops        uint64  `json:"ops"`
	OpsAll     uint64  `json:"ops_all"` // with the warm-up's, for CPU per op
	OpsPerSec  float64 `json:"ops_per_sec"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	MaxUs      float64 `json:"max_us"`
	Errors     int     `json:"errors"` // wrong echoes, resets, refused connections
	Stalls     int     `json:"stalls"` // answers that came too late or not at all
	FirstError string  `json:"first_error,omitempty"`
	SetupMs    float64 `json:"setup_ms"`
}
