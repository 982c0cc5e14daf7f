package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// stats summarizes one bounded run of requests.
type stats struct {
	Requests, Errors int
	Elapsed          time.Duration
	P50, P90, P99    time.Duration
	Max              time.Duration
	FirstError       string
	lat              []time.Duration // sorted
}

// merge combines runs of the same measurement (their requests, time and latencies).
func merge(runs ...stats) stats {
	var m stats
	for _, r := range runs {
		m.Requests += r.Requests
		m.Errors += r.Errors
		m.Elapsed += r.Elapsed
		m.lat = append(m.lat, r.lat...)
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
	}
	slices.Sort(m.lat)
	m.percentiles()
	return m
}

func (s *stats) percentiles() {
	l := s.lat
	if len(l) == 0 {
		return
	}
	at := func(q float64) time.Duration { return l[min(len(l)-1, int(q*float64(len(l))))] }
	s.P50, s.P90, s.P99, s.Max = at(0.50), at(0.90), at(0.99), l[len(l)-1]
}

// PerSecond is the throughput of the successful requests.
func (s stats) PerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Requests-s.Errors) / s.Elapsed.Seconds()
}

// run sends total requests with concurrency workers, each calling do in a loop, and stops
// early at limit. do returns an error for a failed or wrong answer.
func run(ctx context.Context, total, concurrency int, limit time.Duration, do func(ctx context.Context, i int) error) stats {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	lat := make([]time.Duration, total)
	var next, errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total || ctx.Err() != nil {
					return
				}
				t := time.Now()
				err := do(ctx, i)
				lat[i] = time.Since(t)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	s := stats{Elapsed: time.Since(start), Errors: int(errs.Load())}
	// Requests not sent before the time limit are not counted: the report shows Requests.
	done := min(int(next.Load()), total)
	s.Requests = done
	if v, ok := firstErr.Load().(string); ok {
		s.FirstError = v
	}
	s.lat = slices.Clone(lat[:done])
	slices.Sort(s.lat)
	s.percentiles()
	return s
}

// procUsage is a process's CPU time and memory, read from /proc.
type procUsage struct {
	CPU      time.Duration // user + system
	RSS, HWM int64         // bytes: resident now, and its peak
}

func readUsage(pid int) (procUsage, error) {
	var u procUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// Fields after the command name (which may hold spaces, in parentheses).
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	u.CPU = time.Duration(utime+stime) * time.Second / ticks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if k == "VmRSS" {
			u.RSS = kb * 1024
		} else {
			u.HWM = kb * 1024
		}
	}
	return u, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
