//go:build !linux

package evlistener

// taskDone tells a goroutine waiting for work handed to the loop thread that
// the work is done.
type taskDone struct{ ch chan struct{} }

func (d *taskDone) init()   { d.ch = make(chan struct{}, 1) }
func (d *taskDone) wait()   { <-d.ch }
func (d *taskDone) signal() { d.ch <- struct{}{} }
