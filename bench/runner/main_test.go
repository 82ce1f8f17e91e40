package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// A run as results.json held it before the load generator's line had one
// type: -from must still read such a file.
const earlierRun = `{"server":"goecho","workload":"50x64B","round":3,"ops_per_sec":41000,"p50_us":1200.5,"p99_us":2400.25,"ops":24600,"ops_all":33000,"errors":0,"stalls":0,"setup_ms":3.5,"server_cpu_us_per_op":14.5,"load_busy":0.9,"other_cores":0.05}`

func TestRunRecordJSON(t *testing.T) {
	t.Run("reads a run of an earlier results.json", func(t *testing.T) {
		var r runRecord
		if err := json.Unmarshal([]byte(earlierRun), &r); err != nil {
			t.Fatal(err)
		}
		if r.Server != "goecho" || r.Workload != "50x64B" || r.Round != 3 ||
			r.OpsPerSec != 41000 || r.P50us != 1200.5 || r.P99us != 2400.25 ||
			r.Ops != 24600 || r.OpsAll != 33000 || r.SetupMs != 3.5 ||
			r.ServerCPUus != 14.5 || r.LoadBusy != 0.9 || r.OtherCores != 0.05 {
			t.Errorf("read %+v from %s", r, earlierRun)
		}
	})
	t.Run("the workload is the record's when the load generator never ran", func(t *testing.T) {
		r := runRecord{Server: "echo", Workload: "accept", Round: 1, Error: "no listening line within 5s"}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"workload":"accept"`) {
			t.Errorf("%s: want the record's workload", b)
		}
		var back runRecord
		if err := json.Unmarshal(b, &back); err != nil || back.Workload != "accept" {
			t.Errorf("read back workload %q (%v), want accept", back.Workload, err)
		}
	})
}
