package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// What one registry lookup may cost, and how many run at once. A lookup runs on a budget the
// verifier owns, never on a requester's: a request's own deadline (or a forged ?timeout=)
// bounds how long that request waits, not the work it shares with others.
const (
	// lookupTimeout bounds one lookup (signatures, bundles, attestations of one digest).
	lookupTimeout = 10 * time.Second
	// lookupBytes bounds the bytes one lookup reads from registries, all responses together:
	// signatures, referrer lists and bundles are kilobytes, a scan or SBOM attestation a few
	// megabytes.
	lookupBytes = 16 << 20
	// maxLookups bounds the lookups running at once in the process; with lookupBytes it
	// bounds what registries can make imagegate hold (16 x 16 MiB read, at most).
	maxLookups = 16
	// namespaceLookups bounds the lookups started for one namespace's requests that run at
	// once: one namespace's slow or silent registry cannot take every slot.
	namespaceLookups = 8
	// failureEntries bounds the cache of failures, apart from passes: failures are cheap for
	// anyone to cause and must not evict the passes of others.
	failureEntries = 1024
	// Circuit breaker per registry host: after breakerFailures transient failures in a row,
	// the host is not contacted for breakerOpen, and lookups for it fail at once.
	breakerFailures = 5
	breakerOpen     = 30 * time.Second
)

// isTransient reports whether err is a failure of the registry or the network rather than a
// definitive answer about the image (4xx other than 408 and 429, malformed content).
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusTooManyRequests, terr.StatusCode == http.StatusRequestTimeout:
			return true
		case terr.StatusCode >= 400 && terr.StatusCode < 500:
			return false
		}
		return true
	}
	var budget *budgetError
	if errors.As(err, &budget) || errors.Is(err, errTooLarge) || errors.Is(err, errRefusedDestination) {
		return false // what the registry served or named: its answer
	}
	return true // network errors, deadlines, 5xx without a body
}

// budget counts what one lookup reads from registries (see lookupBytes). It travels in the
// lookup's context to the transport, which charges every response body to it.
type budget struct{ left atomic.Int64 }

type budgetKey struct{}

func withBudget(ctx context.Context, n int64) context.Context {
	b := &budget{}
	b.left.Store(n)
	return context.WithValue(ctx, budgetKey{}, b)
}

func budgetOf(ctx context.Context) *budget {
	b, _ := ctx.Value(budgetKey{}).(*budget)
	return b
}

// budgetError ends a response that would take a lookup past its byte budget.
type budgetError struct{ limit int64 }

func (e *budgetError) Error() string {
	return fmt.Sprintf("the registry's answers for this image exceed the %d MiB imagegate reads to verify one image", e.limit>>20)
}

// charge takes n bytes from the budget: an error once it is spent.
func (b *budget) charge(n int) error {
	if b == nil || n == 0 {
		return nil
	}
	if b.left.Add(-int64(n)) < 0 {
		return &budgetError{limit: lookupBytes}
	}
	return nil
}

// namespaceKey carries the namespace whose request started a lookup (its quota).
type namespaceKey struct{}

// WithNamespace returns ctx saying that verifications made with it are for a request of
// namespace: the lookups it starts count against that namespace's quota.
func WithNamespace(ctx context.Context, namespace string) context.Context {
	return context.WithValue(ctx, namespaceKey{}, namespace)
}

// AuditQuota is the quota the audit's lookups count against, apart from every namespace's,
// so that an audit pass never takes the slots of a namespace's admissions (no namespace can
// have this name). The audit is fair across namespaces by the order it verifies in.
const AuditQuota = "(audit)"

func namespaceOf(ctx context.Context) string {
	ns, _ := ctx.Value(namespaceKey{}).(string)
	return ns
}

// limiter bounds the lookups running at once: maxLookups in all, namespaceLookups per
// namespace.
type limiter struct {
	all     chan struct{}
	mu      sync.Mutex
	perNS   map[string]chan struct{}
	nsLimit int
}

func newLimiter(all, perNamespace int) *limiter {
	return &limiter{all: make(chan struct{}, all), perNS: map[string]chan struct{}{}, nsLimit: perNamespace}
}

// acquire waits for a slot for namespace and for the process, or until ctx ends. The
// returned func releases both.
func (l *limiter) acquire(ctx context.Context, namespace string) (func(), error) {
	l.mu.Lock()
	ns := l.perNS[namespace]
	if ns == nil {
		ns = make(chan struct{}, l.nsLimit)
		l.perNS[namespace] = ns
	}
	l.mu.Unlock()
	select {
	case ns <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("the registry lookups of namespace %q are at their limit of %d at once, and none ended before the request's deadline; retry", namespace, l.nsLimit)
	}
	select {
	case l.all <- struct{}{}:
	case <-ctx.Done():
		<-ns
		l.forget(namespace, ns)
		return nil, fmt.Errorf("imagegate's registry lookups are at their limit of %d at once, and none ended before the request's deadline; retry", cap(l.all))
	}
	return func() {
		<-l.all
		<-ns
		l.forget(namespace, ns)
	}, nil
}

// forget drops a namespace's semaphore once nothing holds it, so that the map stays as small
// as the namespaces with lookups in flight.
func (l *limiter) forget(namespace string, ns chan struct{}) {
	l.mu.Lock()
	if len(ns) == 0 && l.perNS[namespace] == ns {
		delete(l.perNS, namespace)
	}
	l.mu.Unlock()
}

// breaker is a circuit breaker per registry host.
type breaker struct {
	mu    sync.Mutex
	hosts map[string]*breakerState
	now   func() time.Time
}

type breakerState struct {
	failures  int
	openUntil time.Time
}

func newBreaker(now func() time.Time) *breaker {
	return &breaker{hosts: map[string]*breakerState{}, now: now}
}

// allow returns an error while host's circuit is open.
func (b *breaker) allow(host string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.hosts[host]
	if s == nil || s.openUntil.IsZero() {
		return nil
	}
	if now := b.now(); now.Before(s.openUntil) {
		return fmt.Errorf("the registry %s failed %d times in a row, so imagegate does not contact it until %s; retry then",
			host, breakerFailures, s.openUntil.UTC().Format(time.RFC3339))
	}
	// Half open: one lookup goes through; another failure opens it again at once.
	s.openUntil = time.Time{}
	s.failures = breakerFailures - 1
	return nil
}

// record counts a lookup's result for host: a transient failure, or anything else.
func (b *breaker) record(host string, transient bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.hosts[host]
	if !transient {
		if s != nil {
			delete(b.hosts, host)
		}
		return
	}
	if s == nil {
		if len(b.hosts) >= 4096 {
			clear(b.hosts) // bounded: a host is remembered only while it fails
		}
		s = &breakerState{}
		b.hosts[host] = s
	}
	s.failures++
	if s.failures >= breakerFailures {
		s.openUntil = b.now().Add(breakerOpen)
	}
}

// flight runs one lookup per key for all concurrent callers (singleflight, which tells the
// caller whether it leads: only the leader's quota pays for the work).
type flight struct {
	mu    sync.Mutex
	calls map[string]*call
}

type call struct {
	done chan struct{}
	val  any
	// err says why the lookup did not run (no slot, an open circuit); quota, that it was
	// for lack of a slot of its leader's namespace, so another namespace's caller runs its
	// own.
	err   error
	quota bool
}

// join returns the call in flight under key, or a new one the caller must run and finish.
func (f *flight) join(key string) (c *call, leader bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]*call{}
	}
	if c := f.calls[key]; c != nil {
		return c, false
	}
	c = &call{done: make(chan struct{})}
	f.calls[key] = c
	return c, true
}

func (f *flight) finish(key string, c *call) {
	f.mu.Lock()
	delete(f.calls, key)
	f.mu.Unlock()
	close(c.done)
}

// deadlineReason is why a request got no answer: its own deadline came first.
func deadlineReason(ctx context.Context) string {
	return fmt.Sprintf("the registry did not answer before the request's deadline (%v); retry", context.Cause(ctx))
}

// lookupOnce runs work once for all concurrent callers with the same key, as a lookup of the
// registry of repo: on the verifier's own budget (LookupTimeout and lookupBytes), never a
// caller's deadline, in one of the slots of the process and of the namespace of the caller
// that started it, and not while the registry's circuit is open. work says whether what it
// found is a failure of the registry or the network (for the circuit breaker). A caller
// whose deadline has passed starts nothing, and each caller waits no longer than its own
// deadline. The error says why a caller got no value: its deadline, no slot, an open circuit;
// such a failure is never cached.
func lookupOnce[T any](v *Verifier, ctx context.Context, key, repo string, publicOnly bool, work func(context.Context) (T, bool)) (T, error) {
	var zero T
	host, _, _ := strings.Cut(repo, "/")
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return zero, errors.New(deadlineReason(ctx))
		}
		c, leader := v.flight.join(key)
		if leader {
			release, err := v.limits.acquire(ctx, namespaceOf(ctx))
			if err != nil {
				c.err, c.quota = err, true
				v.flight.finish(key, c)
				return zero, err
			}
			go func() {
				defer v.flight.finish(key, c)
				defer release()
				if c.err = v.breaker.allow(host); c.err != nil {
					return
				}
				lctx, cancel := context.WithTimeout(withBudget(withOrigin(context.WithoutCancel(ctx), host, publicOnly), lookupBytes), v.timeout)
				defer cancel()
				val, transient := work(lctx)
				v.breaker.record(host, transient)
				c.val = val
			}()
		}
		select {
		case <-c.done:
			if c.quota && attempt == 0 {
				continue // the lookup never ran for its leader's namespace: run one for this one
			}
			if c.err != nil {
				return zero, c.err
			}
			return c.val.(T), nil
		case <-ctx.Done():
			return zero, errors.New(deadlineReason(ctx))
		}
	}
}
