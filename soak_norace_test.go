//go:build !race

package evlistener

const raceEnabled = false
