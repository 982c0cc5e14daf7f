package policy

import (
	"sync"
	"sync/atomic"
)

// Source gives the snapshot in force; nil until the policies are first loaded. The webhooks,
// the ImageReview endpoint and the audit read snapshots through it.
type Source interface {
	Snapshot() *Snapshot
}

// Store holds the snapshot in force and signals each new one. The policy reconciler
// publishes; everything else reads. It is safe for concurrent use.
type Store struct {
	current    atomic.Pointer[Snapshot]
	generation atomic.Int64
	changed    chan struct{}

	mu          sync.Mutex
	subscribers []chan struct{}
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{changed: make(chan struct{}, 1)}
}

// Snapshot returns the snapshot in force, or nil before the first is published.
func (s *Store) Snapshot() *Snapshot { return s.current.Load() }

// Changed is signalled (at most one pending signal) each time a snapshot is published.
func (s *Store) Changed() <-chan struct{} { return s.changed }

// Subscribe returns a channel of its own that is signalled (at most one pending signal)
// each time a snapshot is published, for a reader other than the one of Changed.
func (s *Store) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subscribers = append(s.subscribers, ch)
	return ch
}

// Publish puts snap in force and returns its generation (1 for the first).
func (s *Store) Publish(snap *Snapshot) int64 {
	s.current.Store(snap)
	gen := s.generation.Add(1)
	signal(s.changed)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.subscribers {
		signal(ch)
	}
	return gen
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
