package loadresult

import (
	"encoding/json"
	"testing"
)

// line is what bin/loadgen printed before Result moved here (a 1x64B run
// against goecho), with first_error added.
const line = `{"workload":"1x64B","addr":"127.0.0.1:46713","conns":1,"size":64,"seconds":0.2,"ops":1732,"ops_all":4187,"ops_per_sec":8660,"p50_us":54.016,"p99_us":724.992,"max_us":10511.658,"errors":1,"stalls":2,"first_error":"read: connection reset by peer","setup_ms":12.795}`

var want = Result{
	Workload: "1x64B", Addr: "127.0.0.1:46713", Conns: 1, Size: 64, Seconds: 0.2,
	Ops: 1732, OpsAll: 4187, OpsPerSec: 8660, P50us: 54.016, P99us: 724.992, MaxUs: 10511.658,
	Errors: 1, Stalls: 2, FirstError: "read: connection reset by peer", SetupMs: 12.795,
}

func TestJSONLineKeepsItsFieldNames(t *testing.T) {
	t.Run("encode", func(t *testing.T) {
		got, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != line {
			t.Errorf("Marshal =\n%s\nwant\n%s", got, line)
		}
	})
	t.Run("decode", func(t *testing.T) {
		var got Result
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("Unmarshal = %+v\nwant %+v", got, want)
		}
	})
	t.Run("no first_error when there is none", func(t *testing.T) {
		ok := want
		ok.Errors, ok.Stalls, ok.FirstError = 0, 0, ""
		b, _ := json.Marshal(ok)
		var keys map[string]any
		if err := json.Unmarshal(b, &keys); err != nil {
			t.Fatal(err)
		}
		if _, has := keys["first_error"]; has {
			t.Errorf("%s: first_error present without an error", b)
		}
	})
}
