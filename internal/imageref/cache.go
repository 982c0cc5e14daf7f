package imageref

import "sync"

// maxCachedLen bounds the references a Cache keeps: real references are at most a few
// hundred bytes, and a hostile megabyte-long image string must not be kept.
const maxCachedLen = 512

// Cache memoizes Parse for the image strings a cluster uses again and again, so that the
// admission path parses each distinct image once instead of on every request. It holds at
// most max entries and starts over when full: a flood of distinct images only costs misses.
type Cache struct {
	mu  sync.RWMutex
	max int
	m   map[string]cached
}

type cached struct {
	ref Reference
	err error
}

// NewCache returns a cache of at most max references.
func NewCache(max int) *Cache {
	return &Cache{max: max, m: make(map[string]cached)}
}

// Parse is Parse, memoized.
func (c *Cache) Parse(s string) (Reference, error) {
	c.mu.RLock()
	e, ok := c.m[s]
	c.mu.RUnlock()
	if ok {
		return e.ref, e.err
	}
	ref, err := Parse(s)
	if len(s) <= maxCachedLen {
		c.mu.Lock()
		if len(c.m) >= c.max {
			clear(c.m)
		}
		c.m[s] = cached{ref, err}
		c.mu.Unlock()
	}
	return ref, err
}
