package verify

// Remote: trust material that lives outside the cluster (KMS public keys, TUF trusted
// roots), fetched by the manager in the background and kept in memory, so that compiling a
// policy never waits on a network and admission never calls one.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"sync"
	"time"
)

// Remote is the manager's cache of trust material fetched from outside the cluster. An item
// is fetched in the background the first time a policy names it (the policy is not Ready
// until then), fetched again every Refresh and, at most once a minute, when a policy naming
// it is compiled again; a failed refresh keeps what it had, so that an outage of a KMS or a
// TUF repository never stops admissions. An item no compiled policy has asked for since the
// last refresh round is dropped.
type Remote struct {
	// FetchKMS fetches a KMS public key; nil: FetchKMSKey.
	FetchKMS func(ctx context.Context, ref string) (crypto.PublicKey, error)
	// TUF configures TUF clients: the cache directory, and (for tests) the fetcher.
	TUF TUFOptions
	// Refresh is how often items are fetched again (default 10 minutes); Retry how often an
	// item that could not be fetched is tried again (default 30 seconds); Timeout bounds a
	// fetch (default 30 seconds).
	Refresh, Retry, Timeout time.Duration
	// OnChange is called when an item was fetched, changed or failed differently: the
	// policies must be compiled again.
	OnChange func()
	// Log reports fetches that failed; nil: none.
	Log func(what string, err error, cached bool)

	// now is the clock (tests); nil: time.Now.
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*remoteEntry
	round   time.Time // when the last refresh round began
}

type remoteEntry struct {
	what, from string
	fetch      func(context.Context) ([]byte, error)
	value      []byte
	err        error
	attempted  time.Time
	requested  time.Time
	fetching   bool
}

const recompileRefresh = time.Minute

func (r *Remote) refresh() time.Duration { return durationOr(r.Refresh, 10*time.Minute) }
func (r *Remote) retry() time.Duration   { return durationOr(r.Retry, 30*time.Second) }
func (r *Remote) timeout() time.Duration { return durationOr(r.Timeout, 30*time.Second) }

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (r *Remote) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// get returns the bytes cached under key, or why there are none: being fetched (what from
// where), or the last failure. fetch fetches them, returning when its context ends; what
// names them in messages.
func (r *Remote) get(key, what, from string, fetch func(context.Context) ([]byte, error)) ([]byte, error) {
	now := r.clock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.entries == nil {
		r.entries = map[string]*remoteEntry{}
	}
	e := r.entries[key]
	if e == nil {
		e = &remoteEntry{what: what, from: from, fetch: fetch}
		r.entries[key] = e
	}
	e.requested = now
	switch {
	case e.value != nil:
		if !e.fetching && now.Sub(e.attempted) >= recompileRefresh {
			r.start(e)
		}
		return e.value, nil
	case e.fetching || e.attempted.IsZero():
		if !e.fetching {
			r.start(e)
		}
		return nil, fmt.Errorf("%s is being fetched %s", what, from)
	default:
		return nil, fmt.Errorf("%s could not be fetched %s (tried again every %s): %w", what, from, r.retry(), e.err)
	}
}

// start fetches e in the background; r.mu is held.
func (r *Remote) start(e *remoteEntry) {
	e.fetching = true
	go r.fetch(e)
}

func (r *Remote) fetch(e *remoteEntry) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout())
	defer cancel()
	value, err := e.fetch(ctx)
	r.mu.Lock()
	e.fetching, e.attempted = false, r.clock()
	var changed bool
	if err == nil {
		changed = e.value == nil || !bytes.Equal(value, e.value)
		e.value, e.err = value, nil
	} else {
		// What was fetched stays in use; an item never fetched reports the new failure.
		changed = e.value == nil && (e.err == nil || e.err.Error() != err.Error())
		e.err = err
	}
	cached := e.value != nil
	r.mu.Unlock()
	if err != nil && r.Log != nil {
		r.Log(e.what, err, cached)
	}
	if changed && r.OnChange != nil {
		r.OnChange()
	}
}

// Start refreshes the items until ctx ends: a manager.Runnable.
func (r *Remote) Start(ctx context.Context) error {
	r.mu.Lock()
	r.round = r.clock()
	r.mu.Unlock()
	t := time.NewTicker(r.retry())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			r.tick(now)
		}
	}
}

// NeedLeaderElection is false: every replica compiles the policies, so every replica needs
// the material.
func (r *Remote) NeedLeaderElection() bool { return false }

// tick tries again the items that could not be fetched and, every Refresh, begins a round:
// items no compilation asked for since the last round are dropped, the others fetched again,
// and the policies compiled again (which asks for the items still named).
func (r *Remote) tick(now time.Time) {
	r.mu.Lock()
	newRound := now.Sub(r.round) >= r.refresh()
	for key, e := range r.entries {
		switch {
		case e.fetching:
		case newRound && !r.round.IsZero() && e.requested.Before(r.round):
			delete(r.entries, key)
		case newRound, e.value == nil && now.Sub(e.attempted) >= r.retry():
			r.start(e)
		}
	}
	if newRound {
		r.round = now
	}
	r.mu.Unlock()
	if newRound && r.OnChange != nil {
		r.OnChange()
	}
}

// Len is the number of items cached or being fetched.
func (r *Remote) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}

// KMSKey implements KMSSource from the cache.
func (r *Remote) KMSKey(ref string) (crypto.PublicKey, error) {
	if err := ValidateKMSReference(ref); err != nil {
		return nil, err
	}
	fetch := r.FetchKMS
	if fetch == nil {
		fetch = FetchKMSKey
	}
	der, err := r.get("kms\x00"+ref, "the public key of "+ref, "from the KMS", func(ctx context.Context) ([]byte, error) {
		key, err := fetch(ctx, ref)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKIXPublicKey(key)
		if err != nil {
			return nil, fmt.Errorf("the KMS returned a public key imagegate cannot use: %w", err)
		}
		return der, nil
	})
	if err != nil {
		return nil, err
	}
	return x509.ParsePKIXPublicKey(der)
}

// withinContext runs f, a client call that may take no context (Vault's, TUF's), and returns
// when ctx ends whether or not f has; f then finishes alone, bounded by its client's own
// timeouts.
func withinContext[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("no answer before the deadline: %w", ctx.Err())
	}
}
