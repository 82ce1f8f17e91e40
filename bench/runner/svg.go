package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// colours per server: references in blues, green and grey, the library's
// servers in warm colours (Okabe-Ito, readable with colour blindness). Each
// library engine sits next to its C reference in hue order.
var colours = map[string]string{
	"cecho":                   "#56B4E9",
	"crawecho":                "#0072B2",
	"goecho":                  "#999999",
	"gnetecho":                "#009E73",
	"echo-bufferevent":        "#E69F00",
	"echo-event":              "#D55E00",
	"echo":                    "#CC79A7",
	"echo-nopoll":             "#F0E442",
	"echo-bufferevent-nopoll": "#882255",
}

func colour(i int, name string) string {
	if c, ok := colours[name]; ok {
		return c
	}
	spare := []string{"#F0E442", "#000000", "#882255", "#44AA99"}
	return spare[i%len(spare)]
}

// svg draws grouped bars: one group per workload, one bar per server, its
// height the median of per-round ops/s ratios to the baseline server, with a
// whisker from the lowest to the highest round.
func (rep *report) svg() string {
	const (
		width, height          = 1000, 540
		left, right, top, foot = 72, 24, 120, 84
	)
	plotW := float64(width - left - right)
	plotH := float64(height - top - foot)
	bottom := float64(height - foot)

	ymax := 1.0
	for _, s := range rep.Servers {
		for _, w := range rep.Workloads {
			if rc := rep.Relative[s][w]; rc != nil {
				ymax = math.Max(ymax, rc.Median)
			}
		}
	}
	step := 0.25
	switch {
	case ymax*1.25 > 4:
		step = 1
	case ymax*1.25 > 2:
		step = 0.5
	}
	// The scale follows the bars; a whisker that runs off the top is cut.
	ymax = math.Ceil(ymax*1.25/step) * step
	y := func(v float64) float64 { return bottom - v/ymax*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="30" font-size="19" font-weight="bold" fill="#222">Echo throughput relative to %s (= 1.0)</text>`+"\n",
		left, esc(rep.Baseline))
	fmt.Fprintf(&b, `<text x="%d" y="50" font-size="12" fill="#555">bar: median of per-round ops/s ratios to %s; whisker: lowest to highest round; %s rounds × %.1f s; %s</text>`+"\n",
		left, esc(rep.Baseline), rep.roundsUsed(), rep.Meta.DurationS, esc(rep.Meta.Date))
	spin := ""
	if rep.Meta.Spin {
		spin = "; -spin: each server beside a spinner at idle priority"
	}
	fmt.Fprintf(&b, `<text x="%d" y="66" font-size="12" fill="#555">pinning: %s; %d CPUs, Linux %s, %s%s</text>`+"\n",
		left, esc(rep.Meta.Pinning), rep.Meta.CPUs, esc(rep.Meta.Kernel), esc(rep.Meta.Go), spin)
	if rep.Meta.OtherCores > rep.Meta.Quiet {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" font-weight="bold" fill="#b00000" text-anchor="end">noisy machine: other processes used %.2f CPUs (median)</text>`+"\n",
			width-right, 30, rep.Meta.OtherCores)
	}

	// Legend, one row.
	lx := float64(left)
	for i, s := range rep.Servers {
		fmt.Fprintf(&b, `<rect x="%.1f" y="80" width="14" height="14" fill="%s"/>`, lx, colour(i, s))
		fmt.Fprintf(&b, `<text x="%.1f" y="92" font-size="13" fill="#222">%s</text>`+"\n", lx+19, esc(s))
		lx += 19 + 7.6*float64(len(s)) + 22
	}

	// Grid and y axis.
	for v := 0.0; v <= ymax+1e-9; v += step {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e4e4e4"/>`, left, width-right, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="12" fill="#444" text-anchor="end">%.2f</text>`+"\n", left-8, y(v)+4, v)
	}
	fmt.Fprintf(&b, `<text transform="translate(20 %.1f) rotate(-90)" font-size="13" fill="#222" text-anchor="middle">ops/s ÷ %s ops/s (higher is better)</text>`+"\n",
		float64(top)+plotH/2, esc(rep.Baseline))

	// Bars.
	groupW := plotW / float64(len(rep.Workloads))
	barW := groupW * 0.78 / float64(len(rep.Servers))
	for wi, w := range rep.Workloads {
		gx := float64(left) + float64(wi)*groupW + groupW*0.11
		for si, s := range rep.Servers {
			x := gx + float64(si)*barW
			rc := rep.Relative[s][w]
			if rc == nil {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="#b00" text-anchor="middle">n/a</text>`+"\n", x+barW/2, bottom-4)
				continue
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.2f × %s (rounds %s)</title></rect>`+"\n",
				x+1, y(rc.Median), barW-2, bottom-y(rc.Median), colour(si, s), esc(s), esc(w), rc.Median, esc(rep.Baseline), roundList(rc.PerRound))
			if rc.Max > rc.Min {
				cx := x + barW/2
				top := math.Min(rc.Max, ymax)
				fmt.Fprintf(&b, `<path d="M%.1f %.1fV%.1fM%.1f %.1fh%.1f" stroke="#333" stroke-width="1"/>`+"\n",
					cx, y(rc.Min), y(top), cx-3, y(rc.Min), 6.0)
				if rc.Max <= ymax {
					fmt.Fprintf(&b, `<path d="M%.1f %.1fh%.1f" stroke="#333" stroke-width="1"/>`+"\n", cx-3, y(top), 6.0)
				}
			}
			ty := y(rc.Median) - 5
			fmt.Fprintf(&b, `<text transform="translate(%.1f %.1f) rotate(-90)" font-size="10" fill="#222" stroke="#fff" stroke-width="3" paint-order="stroke">%.2f</text>`+"\n",
				x+barW/2-2.5, ty, rc.Median) // left of the whisker
		}
		cx := float64(left) + (float64(wi)+0.5)*groupW
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="14" font-weight="bold" fill="#222" text-anchor="middle">%s</text>`+"\n",
			cx, bottom+22, esc(strings.ReplaceAll(w, "x", "×")))
		if c := rep.Summary[rep.Baseline][w]; c != nil {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" fill="#666" text-anchor="middle">%s: %s ops/s</text>`+"\n",
				cx, bottom+39, esc(rep.Baseline), fmtOps(c.OpsPerSec))
		}
	}
	// 1.0 reference and axes on top of the bars.
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#222" stroke-dasharray="6 4" stroke-width="1.2"/>`+"\n",
		left, width-right, y(1), y(1))
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#222"/>`+"\n", left, width-right, bottom, bottom)
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%.1f" stroke="#222"/>`+"\n", left, left, top, bottom)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="12" fill="#444" text-anchor="middle">workload: connections × message size, ping-pong; accept: connect, 1-byte echo, close (%d connectors)</text>`+"\n",
		float64(left)+plotW/2, height-14, rep.Meta.Conns)
	b.WriteString("</svg>\n")
	return b.String()
}

func esc(s string) string { return html.EscapeString(s) }

func roundList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, ", ")
}
